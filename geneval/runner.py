"""The runner: resolve, plan, collect, dispatch — then the report.

1. **Resolve** the samples (a model, a folder, an array, a dataset, an in-memory tensor) and,
   if a metric needs it, the reference (:mod:`geneval.resolve`), and choose each metric's
   extractor by the one rule of :func:`geneval.resolve.extractor_for`.
2. **Plan**: each metric's needs become typed input keys; the producer of each kind
   (:data:`geneval.inputs.PRODUCERS`) says what the single pass over each source must gather.
3. **Collect**: one pass over each source (:class:`geneval.passes.SourcePass`) runs every
   extractor the run needs once per batch; then every key is produced once.
4. **Dispatch** to every metric the inputs it declared, with its validated options; a metric
   that raises (or returns a non-finite value) is reported and the others still run.

The report is the dictionary of ``docs/contracts.md`` (report JSON).
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from geneval import __version__
from geneval.api import GenerativeModel, ImageSet, LoadedExtractor, Need
from geneval.baseline import compute_baseline, plan_baseline
from geneval.capabilities import capabilities_of, capability_name
from geneval.collect import agree_on_sources, collect_pass
from geneval.device import resolve_device
from geneval.distributed import context
from geneval.errors import InputError, warn
from geneval.explain import metric_info, minimum_samples, sample_count_warnings, versions
from geneval.feature_cache import FeatureCache
from geneval.inputs import (
    EXTRACTED_KINDS,
    PRODUCERS,
    InputKey,
    RunInputs,
    check_feature_widths,
    features_from_files,
    input_key,
    needs_of,
    uses_extractor,
)
from geneval.options import parse_metric_options
from geneval.passes import PassPlan, PassResult, run_pass
from geneval.plugins import Registry, get_registry
from geneval.precision import PRECISIONS, PrecisionExtractor, check_precision, with_precision
from geneval.resolve import (
    ResolvedSource,
    extractor_for,
    resolve_dataset,
    resolve_spec,
    split_name,
)
from geneval.sources import LAYOUTS, ModelSource
from geneval.stats import StatsFile, check_provenance, load_stats
from geneval.text import quote
from geneval.visuals import Visuals, collect_visuals, plan_visuals

DEFAULT_BATCH_SIZE = 64  # images per extractor call
SOURCES = ("samples", "reference")


@dataclass
class RunConfig:
    """Everything ``geneval run`` was asked to do (the Python API mirrors the CLI).

    ``samples`` and ``reference`` are paths, ``DATASET[:SPLIT]``, statistics files, in-memory
    image tensors or arrays, or (samples only) a loaded model; ``model`` names a model family
    instead. ``options`` are ``METRIC.KEY=VALUE`` strings or ``{metric: {key: value}}``.
    """

    metrics: Sequence[str]
    model: str | None = None
    checkpoint: Path | None = None
    num_samples: int = 1000
    samples: Any = None
    reference: Any = None
    extractor: str | None = None
    extractor_weights: Path | None = None
    resize: str | None = None
    options: Sequence[str] | Mapping[str, Mapping[str, Any]] = ()
    device: str | torch.device = "auto"
    batch_size: int | None = None  # None: DEFAULT_BATCH_SIZE to extract, the model's to sample
    workers: int | None = None  # None: chosen by the folder's size
    seed: int = 0
    sampler: str | None = None
    steps: int | None = None
    # -- what a report shows besides the numbers (geneval/visuals.py, geneval/baseline.py) --
    grid: int = 0  # the first images of each source kept for grids
    neighbours: int = 0  # samples whose nearest reference images are shown
    baseline: bool = False  # score a held-out split of the reference dataset at the same n
    cache: bool = True  # the feature cache of $GENEVAL_CACHE (docs/contracts.md §12)
    precision: str = "fp32"  # fp32, bf16 or tf32 (geneval.precision)
    compile: bool = False  # torch.compile the extractors where they stay exact
    layout: str = "auto"  # how image arrays' axes are read: auto, nchw or nhwc (--layout)


def _is_model(obj: Any) -> bool:
    return isinstance(obj, GenerativeModel)


def validate_config(config: RunConfig) -> None:
    """Cheap checks on the combination of options, before anything heavy runs."""
    if (config.model is None) == (config.samples is None):
        raise InputError("give exactly one of --model NAME or --samples PATH")
    if config.checkpoint is not None and config.model is None:
        raise InputError("--checkpoint needs --model")
    for name, value, low in (
        ("--batch-size", config.batch_size, 1),
        ("--workers", config.workers, 0),
        ("--num-samples", config.num_samples, 1),
        ("--steps", config.steps, 1),
        ("--grid", config.grid, 0),
        ("--neighbours", config.neighbours, 0),
    ):
        if value is not None and (not isinstance(value, int) or value < low):
            raise InputError(f"{name} must be an integer ≥ {low}, got {value}")
    if not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        raise InputError(f"--seed must be an integer in [0, 2^63), got {config.seed}")
    if config.precision not in PRECISIONS:
        raise InputError(f"--precision {config.precision}: choose from {', '.join(PRECISIONS)}")
    if config.layout not in LAYOUTS:
        raise InputError(f"--layout {quote(config.layout)}: choose from {', '.join(LAYOUTS)}")


def resolve_metrics(registry: Registry, names: Sequence[str]) -> dict[str, Any]:
    """Look the metric names up; duplicates are dropped, order is kept."""
    out: dict[str, Any] = {}
    for name in names:
        name = name.strip().lower()
        if name and name not in out:
            out[name] = registry.metric(name)
    if not out:
        raise InputError("--metrics: no metric requested")
    return out


def _preferred_extractor(needs: Sequence[Need]) -> str | None:
    for need in needs:
        if need.extractor:
            return need.extractor
    return None


def _uses_extractor(needs: Sequence[Need]) -> bool:
    return any(input_key(need, "").kind in EXTRACTED_KINDS for need in needs)


#: Kinds that a model run produces from the reference (its images, labels or factors).
_FROM_REFERENCE_WITH_A_MODEL = ("latents", "labels", "factors", "reconstructions")


def _needs_reference(needs: Sequence[Need], with_model: bool) -> bool:
    return any(
        need.source == "reference"
        or need.kind == "reconstructions"
        or (with_model and need.kind in _FROM_REFERENCE_WITH_A_MODEL)
        for need in needs
    )


def _read_by(resolved: ResolvedSource | None) -> Any:
    """What the ranks read of a resolved source: its sample source, else its statistics
    file (``None`` when neither is read from a file or memory, e.g. published statistics)."""
    if resolved is None:
        return None
    return resolved.source if resolved.source is not None else resolved.stats_file


class Collection:
    """The state of one run: resolved sources, model, extractors, passes and produced inputs.

    It implements what producers see of a run (:class:`geneval.inputs.Run`).
    """

    def __init__(self, config: RunConfig, registry: Registry, device: torch.device) -> None:
        self.config = config
        self.registry = registry
        self.device = device
        self.batch_size = config.batch_size or DEFAULT_BATCH_SIZE
        self.sources: dict[str, ResolvedSource] = {}
        self.model: GenerativeModel | None = None
        self.model_name: str | None = None
        self.loaded: dict[str, LoadedExtractor] = {}
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
            raise InputError("the requested metrics need a reference: use --reference")
        return self.sources[role]

    def plan_for(self, role: str) -> PassPlan:
        self.source(role)
        return self.plans.setdefault(role, PassPlan())

    def result(self, role: str) -> PassResult:
        return self.results[role]

    def extractor_plugin(self, name: str) -> Any:
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
                    device=self.device, weights=self.config.extractor_weights, resize=resize
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
        elif resolved.dataset is not None and hasattr(resolved.dataset, "reference_stats"):
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
        finder = getattr(plugin, "published_stats", None)
        path = None
        if finder is not None:
            path = finder(name, split, self.extractor(extractor).convention)
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


class MetricValueError(Exception):
    """A metric returned a result that is not a number (reported as that metric's error)."""


def checked_result(name: str, metric: Any, result: Any) -> dict[str, Any]:
    """A metric's result as a dict with a float ``value``; a missing or non-finite value is a
    :class:`MetricValueError` (a NaN is never a pass). A metric that declares
    ``allows_infinite_value = True`` (e.g. PSNR of identical images) may return ±inf."""
    out = dict(result)
    if "value" not in out:
        raise MetricValueError(f"metric {name} returned no 'value'")
    try:
        value = float(out["value"])
    except (TypeError, ValueError):
        raise MetricValueError(f"metric {name} returned a value that is not a number") from None
    if math.isnan(value) or (
        math.isinf(value) and not getattr(metric, "allows_infinite_value", False)
    ):
        raise MetricValueError(f"metric {name} returned a non-finite value ({value})")
    out["value"] = value
    return out


@dataclass
class Plan:
    """The typed inputs of every metric of a run."""

    keys: dict[str, dict[tuple[str, str], InputKey]] = field(default_factory=dict)
    extractors: dict[str, str] = field(default_factory=dict)  # metric → extractor


class Evaluation:
    """A prepared run: metrics resolved and options validated; :meth:`execute` does the work."""

    def __init__(
        self, config: RunConfig, registry: Registry | None = None, *, debug: bool = False
    ) -> None:
        validate_config(config)
        self.config = config
        self.debug = debug
        self.registry = registry or get_registry()
        self.metrics = resolve_metrics(self.registry, config.metrics)
        self.options = parse_metric_options(config.options, self.metrics)
        #: each metric's needs under its validated options
        self.needs = {name: needs_of(m, self.options[name]) for name, m in self.metrics.items()}
        self.visuals: Visuals | None = None  # set by execute() when the config asks for them
        if config.model is not None:
            family = self.registry.model(config.model)
            if config.sampler is not None and config.sampler not in family.samplers:
                raise InputError(
                    f"--sampler {config.sampler}: model {family.name} offers "
                    f"{', '.join(family.samplers)}"
                )

    # -- 1. resolve --------------------------------------------------------------------------
    def _load_model(self, run: Collection) -> GenerativeModel:
        family = self.registry.model(self.config.model)
        model = family.load(self.config.checkpoint, device=run.device)
        for protocol in getattr(family, "capabilities", ()):
            if not isinstance(model, protocol):
                raise InputError(
                    f"model plugin {family.name} declares capability "
                    f"{capability_name(protocol)!r}, which its loaded model does not offer"
                )
        run.model_name = family.name
        return model

    def _check_capabilities(self, run: Collection) -> None:
        for name, metric in self.metrics.items():
            for need in self.needs[name]:
                for protocol in need.capabilities:
                    if run.model is not None and not isinstance(run.model, protocol):
                        offered = ", ".join(capabilities_of(run.model)) or "none"
                        raise InputError(
                            f"metric {metric.name} needs capability "
                            f"{capability_name(protocol)!r}, which model "
                            f"{run.model_name or 'object'} does not have (it offers: {offered})"
                        )

    def resolve(self, run: Collection) -> None:
        """Resolve the samples, then the reference if any metric needs it."""
        self.resolve_samples(run)
        self.resolve_reference(run)

    def resolve_samples(self, run: Collection) -> None:
        config = self.config
        if config.model is not None or _is_model(config.samples):
            run.model = self._load_model(run) if config.model is not None else config.samples
            name = config.model or "object"
            run.sources["samples"] = ResolvedSource(
                "samples",
                f"model:{name}",
                source=ModelSource(
                    f"model:{name}",
                    run.model,
                    config.num_samples,
                    seed=config.seed,
                    sampler=config.sampler,
                    steps=config.steps,
                    batch_size=config.batch_size,
                ),
                model=run.model,
            )
        else:
            run.sources["samples"] = resolve_spec(
                config.samples, "samples", self.registry, layout=config.layout
            )
        self._check_capabilities(run)

    def resolve_reference(self, run: Collection) -> None:
        config = self.config
        if any(_needs_reference(needs, run.model is not None) for needs in self.needs.values()):
            if config.reference is not None:
                run.sources["reference"] = resolve_spec(
                    config.reference, "reference", self.registry, layout=config.layout
                )
            elif config.model is not None:
                dataset, split = split_name(self.registry.model(config.model).dataset)
                run.sources["reference"] = resolve_dataset(
                    dataset, split, self.registry, "reference"
                )
            else:
                raise InputError("the requested metrics need a reference: use --reference")
        if config.extractor_weights is not None:
            used = {
                self._extractor(needs, run)
                for needs in self.needs.values()
                if _uses_extractor(needs)
            }
            if len(used) > 1:
                raise InputError(
                    f"--extractor-weights is ambiguous: this run uses the extractors "
                    f"{', '.join(sorted(used))} (choose one with --extractor)"
                )

    def _extractor(self, needs: Sequence[Need], run: Collection) -> str:
        return extractor_for(
            _preferred_extractor(needs),
            explicit=self.config.extractor,
            samples=run.sources["samples"],
            reference=run.sources.get("reference"),
            registry=self.registry,
        )

    # -- 2. plan -----------------------------------------------------------------------------
    def plan(self, run: Collection) -> Plan:
        plan = Plan()
        for name, needs in self.needs.items():
            extractor = self._extractor(needs, run) if _uses_extractor(needs) else None
            if extractor is not None:
                plan.extractors[name] = extractor
            keys = {}
            for need in needs:
                key = input_key(need, extractor)
                keys[(key.kind, key.source)] = key
            plan.keys[name] = keys
        for key in dict.fromkeys(k for keys in plan.keys.values() for k in keys.values()):
            PRODUCERS[key.kind].plan(key, run)
        for name, keys in plan.keys.items():
            check_feature_widths(name, keys, run)
        if self.config.grid or self.config.neighbours:
            plan_visuals(run, plan, grid=self.config.grid, neighbours=self.config.neighbours)
        if self.config.baseline:
            plan_baseline(run, plan)
        return plan

    # -- 3. collect --------------------------------------------------------------------------
    def collect(self, run: Collection, plan: Plan) -> dict[InputKey, Any]:
        run.run_passes()
        values: dict[InputKey, Any] = {}
        for keys in plan.keys.values():
            for key in keys.values():
                if key not in values:
                    values[key] = PRODUCERS[key.kind].produce(key, run)
        return values

    # -- 4. dispatch -------------------------------------------------------------------------
    def dispatch(
        self, run: Collection, plan: Plan, values: dict[InputKey, Any]
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        results: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        memo: dict[Any, Any] = {}
        for name, metric in self.metrics.items():
            if name not in plan.keys:  # a plan for some of the metrics (the baseline's)
                continue
            inputs = RunInputs(
                plan.keys[name],
                values,
                run=run,
                device=run.device,
                seed=self.config.seed,
                run_options=self.options,
                memo=memo,
            )
            try:
                results[name] = checked_result(
                    name, metric, metric.compute(inputs, **self.options[name])
                )
            except InputError:
                raise
            except Exception as exc:  # noqa: BLE001 - one metric's failure must not hide the rest
                errors[name] = f"{type(exc).__name__}: {exc}".splitlines()[0]
                if self.debug:
                    traceback.print_exc()
        for name, opts in self.options.items():
            if name in results:
                for key, val in opts.items():
                    results[name].setdefault(key, val)
        return results, errors

    def execute(self) -> dict[str, Any]:
        """Resolve, plan, collect and dispatch; return the report dictionary."""
        run = Collection(self.config, self.registry, resolve_device(self.config.device))
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        self.resolve(run)
        plan = self.plan(run)
        timings["setup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        values = self.collect(run, plan)
        timings["features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        results, errors = self.dispatch(run, plan, values)
        timings["metrics"] = time.perf_counter() - t0
        extra: dict[str, Any] = {}
        config = self.config
        if config.baseline or config.grid or config.neighbours:
            t0 = time.perf_counter()
            if config.baseline:
                extra["baseline"] = compute_baseline(self, run, plan, values, results)
            if config.grid or config.neighbours:
                self.visuals = collect_visuals(
                    run, plan, values, grid=config.grid, neighbours=config.neighbours
                )
            timings["report"] = time.perf_counter() - t0
        return {**self._report(run, plan, results, errors, timings), **extra}

    # -- report ------------------------------------------------------------------------------
    def _report(
        self,
        run: Collection,
        plan: Plan,
        results: dict[str, dict[str, Any]],
        errors: dict[str, str],
        timings: dict[str, float],
    ) -> dict[str, Any]:
        config = self.config
        extractors = {}
        for metric, name in plan.extractors.items():
            # a source's own features array is credited as such, never to the extractor
            if not uses_extractor(plan.keys.get(metric, {}), run):
                name = None
            extractors[metric] = {
                "name": name,
                "resize": run.loaded[name].convention if name in run.loaded else None,
                "weights_sha256": (run.loaded[name].weights_sha256 if name in run.loaded else None),
            }
            from_files = features_from_files(plan.keys.get(metric, {}), run)
            if from_files:
                extractors[metric]["features_from"] = {
                    role: f"the features array of {description}"
                    for role, description in from_files.items()
                }
        primary = next(iter(extractors.values()), None)
        reference = run.sources.get("reference")
        report_config: dict[str, Any] = {
            "samples": run.sources["samples"].description,
            "reference": reference.description if reference is not None else None,
            "extractor": primary["name"] if primary else None,
            "resize": primary["resize"] if primary else None,
            "extractors": extractors,
            "seed": config.seed,
            "device": str(run.device),
            "batch_size": run.batch_size,
            "precision": config.precision,
            "compile": config.compile,
            "world_size": run.ctx.world_size,
        }
        if run.model is not None:
            report_config.update(
                model=run.model_name or "object",
                checkpoint=str(config.checkpoint) if config.checkpoint else "bundled",
                num_samples=config.num_samples,
                sampler=config.sampler or run.model.config.get("default_sampler"),
                steps=config.steps,
            )
        inputs = {}
        for role, resolved in run.sources.items():
            if role in run.results:
                count = run.results[role].count
            elif resolved.model is not None:
                count = 0  # no metric looked at the samples: none were drawn
            elif resolved.stats_file is not None:
                count = resolved.stats_file.n
            elif resolved.source is not None:
                count = resolved.source.count
            else:
                count = None
            inputs[role] = {"count": count, "description": resolved.description}
            if role in run.cache_status:
                inputs[role]["cache"] = dict(run.cache_status[role])
        minimums = self._minimum_samples(run, plan)
        counts = {role: entry["count"] for role, entry in inputs.items()}
        for name, result in results.items():  # a warning where too few images stand behind it
            notes = sample_count_warnings(self.metrics[name], counts, *minimums[name])
            if notes:
                result["warnings"] = [*result.get("warnings", []), *notes]
        extra = {"precision": run.precision_report} if run.precision_report else {}
        return {
            "geneval_version": __version__,
            "versions": versions(),
            "config": report_config,
            "inputs": inputs,
            "metrics": results,
            "metric_info": metric_info(self.metrics, minimums),
            "errors": errors,
            "timings": {k: round(v, 4) for k, v in timings.items()},
            **extra,
        }

    def _minimum_samples(self, run: Collection, plan: Plan) -> dict[str, tuple[int | None, str]]:
        """Each metric's minimum sample count in this run, and who declares it."""
        datasets = [
            run.sources[role].dataset
            for role in ("reference", "samples")
            if role in run.sources and run.sources[role].dataset is not None
        ]
        minimums = {}
        for name, metric in self.metrics.items():
            extractor = plan.extractors.get(name)
            if not uses_extractor(plan.keys.get(name, {}), run):
                extractor = None  # its features came from the sources' own files
            plugin = self.registry.extractor(extractor) if extractor else None
            minimums[name] = minimum_samples(metric, plugin, datasets)
        return minimums


def evaluate(config: RunConfig, registry: Registry | None = None) -> dict[str, Any]:
    """Run an evaluation from a :class:`RunConfig`; returns the report dictionary (no gates)."""
    return Evaluation(config, registry).execute()
