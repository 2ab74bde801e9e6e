"""The state of one run: resolved sources, model, loaded extractors, passes and their results.

:class:`RunState` is what the input producers of :mod:`geneval.run.inputs` see of a run (its
``Run`` protocol); :class:`Plan` holds the typed inputs of every metric. Both are driven by
:class:`geneval.run.pipeline.Run`, whose doors are the only way callers reach them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from geneval.api import FeatureExtractor, GenerativeModel, ImageSet, LoadedExtractor
from geneval.distributed import context, gather_pass_result, sum_ints
from geneval.errors import InputError, setting, warn
from geneval.feature_cache import FeatureCache
from geneval.feature_stats import StatsFile, check_provenance, load_stats
from geneval.plugins import Registry
from geneval.precision import PrecisionExtractor, check_precision, with_precision
from geneval.run.collect import agree_on_sources, collect_pass
from geneval.run.config import RunConfig
from geneval.run.inputs import InputKey
from geneval.run.passes import PassPlan, PassResult, run_pass
from geneval.run.resolve import ResolvedSource, resolve_spec
from geneval.sources import SampleSource, StreamSource
from geneval.text import quote
from geneval.weights import explicit_weights

#: The roles of a run's sources.
SOURCES = ("samples", "reference")


@dataclass
class Plan:
    """The typed inputs of every metric of a run."""

    keys: dict[str, dict[tuple[str, ...], InputKey]] = field(default_factory=dict)
    #: metric → extractor (``None``: every extracted input of the metric comes from a file)
    extractors: dict[str, str | None] = field(default_factory=dict)


def _read_by(resolved: ResolvedSource | None) -> SampleSource | StatsFile | None:
    """What the ranks read of a resolved source: its sample source, else its statistics
    file (``None`` when neither is read from a file or memory, e.g. published statistics,
    or when the samples arrive through ``update()``)."""
    if resolved is None or isinstance(resolved.source, StreamSource):
        return None
    return resolved.source if resolved.source is not None else resolved.stats_file


class RunState:
    """The state of one run: resolved sources, model, extractors, passes and produced inputs.

    It implements what producers see of a run (:class:`geneval.run.inputs.RunView`).
    """

    def __init__(
        self,
        config: RunConfig,
        registry: Registry,
        device: torch.device,
        *,
        loaded: dict[str, LoadedExtractor] | None = None,
        extract_only: bool = False,
    ) -> None:
        """``loaded``: extractors already loaded by another run of the same settings (the
        baseline's held-out run shares the main run's). ``extract_only``: every extracted
        input comes from a pass over the images, never from a statistics file or a source's
        own ``features`` array (``geneval stats``)."""
        self.extract_only = extract_only
        self.config = config
        self.registry = registry
        self.device = device
        self.batch_size = config.batch_size
        self.sources: dict[str, ResolvedSource] = {}
        self.model: GenerativeModel | None = None
        self.model_name: str | None = None
        self.loaded: dict[str, LoadedExtractor] = {} if loaded is None else loaded
        self.plans: dict[str, PassPlan] = {}
        self.results: dict[str, PassResult] = {}
        self.ctx = context()  # this rank of a sharded run, or the only process
        check_precision(config.precision, device)
        self.cache = FeatureCache.open() if config.cache else None
        self.cache_status: dict[str, dict[str, str]] = {}  # role → extractor → hit/miss
        self.precision_report: dict[str, Any] | None = None

    # -- what producers use ------------------------------------------------------------------
    def source(self, role: str) -> ResolvedSource:
        if role not in self.sources:
            raise InputError(f"the requested metrics need a reference: use {setting('reference')}")
        return self.sources[role]

    def plan_for(self, role: str) -> PassPlan:
        self.source(role)
        return self.plans.setdefault(role, PassPlan())

    def result(self, role: str) -> PassResult:
        return self.results[role]

    def extractor_plugin(self, name: str) -> FeatureExtractor:
        return self.registry.extractor(name)

    def extractor(self, name: str) -> LoadedExtractor:
        """The loaded extractor ``name`` (loaded once per run)."""
        if name not in self.loaded:
            plugin = self.registry.extractor(name)
            resize = self.config.resize
            if resize is not None and resize not in plugin.resize_options:
                allowed = ", ".join(plugin.resize_options) or "none (fixed preprocessing)"
                raise InputError(f"--resize {resize}: extractor {name} accepts {allowed}")
            self.loaded[name] = with_precision(
                plugin.load(
                    device=self.device,
                    weights=explicit_weights(self.config.extractor_weights, name),
                    resize=resize,
                ),
                self.config.precision,
                self.device,
                compile=self.config.compile,
            )
        return self.loaded[name]

    def provenance(self, name: str) -> dict[str, Any]:
        loaded = self.extractor(name)
        return {
            "extractor": name,
            "weights_sha256": loaded.weights_sha256,
            "resize": loaded.convention,
        }

    def stats_file(self, role: str, extractor: str) -> StatsFile | None:
        """The statistics file that serves ``role`` for ``extractor``, if any.

        A file the user gave must match the extractor's provenance (else exit 2); published
        statistics are looked up through the extractor plugin; a dataset's shipped file is used
        only when its provenance matches exactly (else the images are used).
        """
        resolved = self.source(role)
        if self.extract_only:
            return None
        if extractor in resolved.stats_by_extractor:
            return resolved.stats_by_extractor[extractor]
        found: StatsFile | None = None
        plugin = self.registry.extractor(extractor)
        dim = plugin.outputs[plugin.feature_output]
        if resolved.stats_file is not None or resolved.published is not None:
            if resolved.stats_file is None:
                resolved.stats_file = self._published(resolved, extractor)
            check_provenance(resolved.stats_file, self.provenance(extractor), dim=dim)
            found = resolved.stats_file
        elif resolved.dataset is not None:
            path = resolved.dataset.reference_stats(resolved.split, extractor)
            if path is not None:
                shipped = load_stats(path)
                expected = self.provenance(extractor)
                meta = shipped.meta or {}
                if shipped.dim == dim and all(meta.get(k) == v for k, v in expected.items()):
                    found = shipped
        if found is not None:
            resolved.stats_by_extractor[extractor] = found
        return found

    def _published(self, resolved: ResolvedSource, extractor: str) -> StatsFile:
        name, split = resolved.published
        plugin = self.registry.extractor(extractor)
        path = plugin.published_stats(name, split, self.extractor(extractor).convention)
        if path is None:
            datasets = ", ".join(sorted(self.registry.items("dataset"))) or "none"
            raise InputError(
                f"--reference {resolved.description}: no such path, dataset (available: "
                f"{datasets}) or published statistics for extractor {extractor}"
            )
        return load_stats(path)

    def other_images(self, spec: str, *, default_split: str, option: str = "") -> ImageSet:
        """Images of a further source named by a metric option (see ``MetricInputs``)."""
        how = f"--opt {option}=PATH|DATASET:SPLIT" if option else "the metric's option"
        if not spec:
            reference = self.sources.get("reference")
            if reference is None or reference.dataset is None:
                raise InputError(
                    f"no validation images: the reference is not a dataset, so name them with {how}"
                )
            if default_split not in reference.dataset.splits:
                raise InputError(
                    f"dataset {reference.dataset.name} has no {default_split!r} split for "
                    f"validation: name the images with {how}"
                )
            return reference.dataset.load(default_split)
        resolved = resolve_spec(spec, "validation", self.registry, layout=self.config.layout)
        if not resolved.has_images:
            raise InputError(f"validation images {quote(spec)}: holds no images")
        result = run_pass(
            resolved.source,
            PassPlan(keep_images=True),
            {},
            self.device,
            batch_size=self.batch_size,
            workers=self.config.workers,
            desc="validation",
        )
        carried = resolved.source.carried
        return ImageSet(
            images=result.images,
            labels=carried.get("labels"),
            factors=carried.get("factors"),
            latents=carried.get("latents"),
        )

    # -- collection --------------------------------------------------------------------------
    def run_passes(self, roles: Sequence[str] = SOURCES) -> None:
        """One pass over each of ``roles`` whose plan is not empty (in a sharded run, after
        the ranks agreed on the content of every source: nothing is computed or cached from
        ranks that read different content)."""
        agree_on_sources(
            [(role, _read_by(self.sources.get(role))) for role in roles],
            self.ctx,
            self.cache,
            batch_size=self.batch_size,
        )
        for role in roles:
            plan = self.plans.get(role)
            if role not in self.sources or plan is None or plan.empty:
                continue
            source = self.sources[role].source
            if isinstance(source, StreamSource):
                self.results[role] = self._gathered(source, plan)
                continue
            collected = collect_pass(
                source,
                plan,
                {name: self.extractor(name) for name in plan.extractors},
                self.device,
                batch_size=self.batch_size,
                workers=self.config.workers,
                desc=role,
                cache=self.cache,
                ctx=self.ctx,
            )
            self.results[role] = collected.result
            if collected.cache:
                self.cache_status[role] = collected.cache
            for note in source.notes():
                warn(note)
        self._note_resized_inputs()
        self._note_precision()

    def _gathered(self, stream: StreamSource, plan: PassPlan) -> PassResult:
        """What the ``update()`` batches of every rank gathered (in rank order)."""
        count = stream.received
        if self.ctx.distributed:
            count = sum_ints(self.ctx, [count])[0]
        if count == 0:
            raise InputError("compute: no samples yet (call update() first)")
        dims = {
            (name, output): int(self.extractor(name).outputs[output])
            for name in plan.extractors
            for output in self.extractor(name).outputs
        }
        return gather_pass_result(
            self.ctx,
            stream.result(),
            plan,
            dims,
            description=stream.description,
            device=self.device,
        )

    def open_streams(self) -> None:
        """Ready each source fed by ``update()`` for the batches of its planned pass."""
        for role, resolved in self.sources.items():
            if isinstance(resolved.source, StreamSource):
                plan = self.plan_for(role)
                extractors = {name: self.extractor(name) for name in plan.extractors}
                resolved.source.open(plan, extractors, self.device, self.batch_size)

    def _note_precision(self) -> None:
        """Under a reduced precision, measure and report each extractor's deviation from
        float32 on the images it has seen (:mod:`geneval.precision`)."""
        if self.config.precision == "fp32":
            return
        deviations = {
            name: loaded.deviation(self.ctx)
            for name, loaded in sorted(self.loaded.items())
            if isinstance(loaded, PrecisionExtractor)
        }
        self.precision_report = {"mode": self.config.precision, "extractors": deviations}
        for name, found in deviations.items():
            if not found["probe_images"]:
                warn(
                    f"--precision {self.config.precision}: the deviation of extractor {name} "
                    "from float32 was not measured in this run (no image went through it: its "
                    "features came from statistics files or the feature cache)"
                )
            elif found["outputs"]:
                output, worst = max(found["outputs"].items(), key=lambda kv: kv[1]["max_rel"])
                warn(
                    f"--precision {self.config.precision}: extractor {name} deviates from "
                    f"float32 by up to {worst['max_rel']:.2e} of its largest value "
                    f"({output}, rms {worst['rms_rel']:.2e}; measured on "
                    f"{found['probe_images']} images of this run)"
                )

    def _note_resized_inputs(self) -> None:
        """Say so when samples and reference images differ in size and an extractor ran on
        both: it brought them to its input size, and the comparison depends on that."""
        if len(self.results) < 2:
            return
        shared = set(self.plans["samples"].extractors) & set(self.plans["reference"].extractors)
        a, b = self.results["samples"].sizes, self.results["reference"].sizes
        if shared and a and b and a != b:

            def sizes(found: set[tuple[int, int]]) -> str:
                return ", ".join(f"{h}×{w}" for h, w in sorted(found))

            for name in sorted(shared):
                warn(
                    f"samples are {sizes(a)} and reference images {sizes(b)} pixels: extractor "
                    f"{name} brought both to its input size ({self.loaded[name].convention})"
                )
