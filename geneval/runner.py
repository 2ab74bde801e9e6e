"""The runner: turn sample sources into shared inputs and dispatch to metric plugins.

1. Gather the needs of the requested metrics.
2. Resolve the samples (folder, array, model) and, if any metric needs it, the reference
   (dataset split, folder, array, or a statistics/features file).
3. Run the extractor **once** over each input, in batches on the chosen device, collecting the
   union of the outputs the metrics asked for; reuse a statistics file instead of recomputing.
4. Call every metric with the inputs it declared; a metric that raises is reported and the
   others still run.
"""

from __future__ import annotations

import math
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval import __version__
from geneval.api import GenerativeModel, LoadedExtractor, Need
from geneval.capabilities import capabilities_of, capability_name
from geneval.device import resolve_device
from geneval.errors import InputError, warn
from geneval.options import parse_metric_options
from geneval.plugins import Registry, get_registry
from geneval.progress import progress_bar
from geneval.sources import ModelSource, SampleSource, TensorSource, source_from_path
from geneval.stats import FeatureStatistics, StatsFile, check_provenance, load_stats

DEFAULT_EXTRACTOR = "inception-v3-fid"
DEFAULT_BATCH_SIZE = 64  # images per extractor call
SOURCES = ("samples", "reference")


@dataclass
class RunConfig:
    """Everything ``geneval run`` was asked to do (the Python API mirrors the CLI)."""

    metrics: Sequence[str]
    model: str | None = None
    checkpoint: Path | None = None
    num_samples: int = 1000
    samples: str | None = None
    reference: str | None = None
    extractor: str | None = None
    inception_weights: Path | None = None
    resize: str | None = None
    options: Sequence[str] = ()
    device: str = "auto"
    batch_size: int | None = (
        None  # None: DEFAULT_BATCH_SIZE to extract, DEFAULT_SAMPLE_BATCH to sample
    )
    workers: int | None = None  # None: chosen by the folder's size
    seed: int = 0
    sampler: str | None = None
    steps: int | None = None


@dataclass
class InputData:
    """The shared inputs computed for one source (samples or reference)."""

    description: str
    count: int | None  # None: a statistics file that records no count
    outputs: dict[str, torch.Tensor] = field(default_factory=dict)  # extractor output → (n, d)
    stats: FeatureStatistics | None = None
    images: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    sizes: set[tuple[int, int]] = field(default_factory=set)  # (H, W) of the images seen


class RunInputs:
    """:class:`geneval.api.MetricInputs` for one metric: only what it declared is available."""

    def __init__(self, run: _Run, needs: Sequence[Need]) -> None:
        self._run = run
        self._needs = set(needs)
        self.device = run.device
        self.seed = run.config.seed

    def _check(self, kind: str, source: str) -> InputData:
        if not any(n.kind == kind and n.source == source for n in self._needs):
            raise KeyError(f"{kind} of {source} were not declared in the metric's needs")
        return self._run.data[source]

    def features(self, source: str) -> torch.Tensor:
        data = self._check("features", source)
        name = self._run.feature_output
        if name not in data.outputs:
            raise InputError(
                f"the {source} ({data.description}) provide statistics only, no per-sample features"
            )
        return data.outputs[name]

    def stats(self, source: str) -> FeatureStatistics:
        data = self._check("features", source)
        if data.stats is None:
            data.stats = FeatureStatistics.from_features(
                data.outputs[self._run.feature_output].to(self.device)
            )
        return data.stats

    def logits(self, source: str) -> torch.Tensor:
        return self._check("logits", source).outputs[self._run.logits_output]

    def images(self, source: str) -> torch.Tensor:
        data = self._check("images", source)
        assert data.images is not None
        return data.images

    def labels(self, source: str) -> torch.Tensor:
        data = self._check("labels", source)
        if data.labels is None:
            raise InputError(f"the {source} ({data.description}) have no labels")
        return data.labels

    @property
    def model(self) -> GenerativeModel:
        if not any(n.kind == "model" for n in self._needs):
            raise KeyError("the model was not declared in the metric's needs")
        if self._run.model is None:
            raise InputError("this metric needs a model: use --model")
        return self._run.model


class _Run:
    """State of one evaluation."""

    def __init__(self, config: RunConfig, registry: Registry) -> None:
        self.config = config
        self.registry = registry
        self.device = resolve_device(config.device)
        self.model: GenerativeModel | None = None
        self.extractor: LoadedExtractor | None = None
        self.feature_output = ""
        self.logits_output = ""
        self.data: dict[str, InputData] = {}
        self.timings: dict[str, float] = {}
        self.used: dict[str, Any] = {}


def _needs_of(metrics: Mapping[str, Any]) -> list[Need]:
    seen: list[Need] = []
    for metric in metrics.values():
        for need in metric.needs:
            if need not in seen:
                seen.append(need)
    return seen


def _parse_reference(spec: str) -> tuple[str, str | None]:
    name, _, split = spec.partition(":")
    return name, (split or None)


def _is_stats_file(path: Path) -> bool:
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with np.load(path, allow_pickle=False) as data:
            return {"mu", "sigma"} <= set(data.files)
    except (OSError, ValueError):
        return False


def resolve_source(spec: str, registry: Registry) -> tuple[SampleSource, Any]:
    """A folder, an array file, or ``DATASET[:SPLIT]``; returns the source and the dataset
    plugin (``None`` for paths)."""
    path = Path(spec)
    if path.exists():
        return source_from_path(path), None
    name, split = _parse_reference(spec)
    if name in registry.items("dataset"):
        dataset = registry.dataset(name)
        split = split or dataset.default_split
        return TensorSource(f"{name}:{split}", dataset.load(split)), dataset
    raise InputError(f"path {spec} does not exist (nor is it a dataset name)")


def validate_config(config: RunConfig) -> None:
    """Cheap checks on the combination of options, before anything heavy runs."""
    if not config.metrics:
        raise InputError("--metrics: no metric requested")
    if (config.model is None) == (config.samples is None):
        raise InputError("give exactly one of --model NAME or --samples PATH")
    if config.checkpoint is not None and config.model is None:
        raise InputError("--checkpoint needs --model")
    if config.batch_size is not None and config.batch_size < 1:
        raise InputError(f"--batch-size must be positive, got {config.batch_size}")
    if config.workers is not None and config.workers < 0:
        raise InputError(f"--workers must be >= 0, got {config.workers}")
    if config.num_samples < 1:
        raise InputError(f"--num-samples must be positive, got {config.num_samples}")


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


class Evaluation:
    """A prepared run: metrics resolved and options typed; :meth:`execute` does the work."""

    def __init__(
        self, config: RunConfig, registry: Registry | None = None, *, debug: bool = False
    ) -> None:
        validate_config(config)
        self.config = config
        self.debug = debug
        self.registry = registry or get_registry()
        self.metrics = resolve_metrics(self.registry, config.metrics)
        self.options = parse_metric_options(config.options, self.metrics)
        self.needs = _needs_of(self.metrics)

    # -- resolution --------------------------------------------------------------------------
    def _load_model(self, run: _Run) -> GenerativeModel:
        family = self.registry.model(self.config.model)
        if self.config.sampler is not None and self.config.sampler not in family.samplers:
            raise InputError(
                f"--sampler {self.config.sampler}: model {family.name} offers "
                f"{', '.join(family.samplers)}"
            )
        model = family.load(self.config.checkpoint, device=run.device)
        for need in self.needs:
            for protocol in need.capabilities:
                if not isinstance(model, protocol):
                    offered = ", ".join(capabilities_of(model)) or "none"
                    raise InputError(
                        f"a requested metric needs capability {capability_name(protocol)!r}, "
                        f"which model {family.name} does not have (it offers: {offered})"
                    )
        run.used["model"] = family.name
        run.used["checkpoint"] = (
            str(self.config.checkpoint) if self.config.checkpoint else "bundled"
        )
        return model

    def _reference_spec(self) -> str | None:
        if self.config.reference is not None:
            return self.config.reference
        if self.config.model is not None:
            family = self.registry.model(self.config.model)
            return family.dataset
        return None

    def _choose_extractor(self, reference: str | None, stats_file: StatsFile | None) -> str:
        if self.config.extractor:
            return self.config.extractor
        if stats_file is not None and stats_file.meta and stats_file.meta.get("extractor"):
            return str(stats_file.meta["extractor"])
        model = self.registry.model(self.config.model) if self.config.model else None
        model_dataset = model.dataset if model is not None else None
        for spec in (reference, model_dataset, self.config.samples):
            if spec is None:
                continue
            name, _ = _parse_reference(spec)
            if name in self.registry.items("dataset"):
                return self.registry.dataset(name).default_extractor
        return DEFAULT_EXTRACTOR

    # -- execution ---------------------------------------------------------------------------
    def execute(self) -> dict[str, Any]:
        """Compute everything and return the report dictionary (DESIGN §5)."""
        config = self.config
        run = _Run(config, self.registry)
        kinds_by_source = {s: {n.kind for n in self.needs if n.source == s} for s in SOURCES}
        needs_reference = bool(kinds_by_source["reference"])

        # Samples.
        t0 = time.perf_counter()
        if config.model is not None:
            run.model = self._load_model(run)
            samples: SampleSource = ModelSource(
                f"model:{config.model}",
                run.model,
                config.num_samples,
                seed=config.seed,
                sampler=config.sampler,
                steps=config.steps,
                batch_size=config.batch_size,
            )
        else:
            samples, _ = resolve_source(config.samples, self.registry)

        # Reference.
        reference_spec = self._reference_spec() if needs_reference else None
        if needs_reference and reference_spec is None:
            raise InputError("the requested metrics need a reference: use --reference")
        stats_file: StatsFile | None = None
        reference: SampleSource | None = None
        ref_dataset = None
        if reference_spec is not None:
            path = Path(reference_spec)
            if _is_stats_file(path):
                stats_file = load_stats(path)
            elif path.exists():
                reference = source_from_path(path)
            else:
                name, split = _parse_reference(reference_spec)
                if name in self.registry.items("dataset"):
                    dataset = self.registry.dataset(name)
                    ref_dataset = (name, split or dataset.default_split)
                else:
                    stats_file = self._remote_stats(name, split)
        extractor_name = self._choose_extractor(reference_spec, stats_file)

        # Extractor: loaded once if any metric needs features or logits.
        extract_kinds = {"features", "logits"}
        if any(n.kind in extract_kinds for n in self.needs):
            family = self.registry.extractor(extractor_name)
            resize = config.resize
            if resize is not None and resize not in family.resize_options:
                allowed = ", ".join(family.resize_options) or "none (fixed preprocessing)"
                raise InputError(f"--resize {resize}: extractor {extractor_name} accepts {allowed}")
            run.extractor = family.load(
                device=run.device, weights=config.inception_weights, resize=resize
            )
            run.feature_output = family.feature_output
            if any(n.kind == "logits" for n in self.needs):
                if family.logits_output is None:
                    raise InputError(f"extractor {extractor_name} has no classifier logits")
                run.logits_output = family.logits_output
            run.used.update(extractor=extractor_name, resize=run.extractor.convention)
            provenance = {
                "extractor": extractor_name,
                "weights_sha256": run.extractor.weights_sha256,
                "resize": run.extractor.convention,
            }
            if stats_file is not None:
                check_provenance(stats_file, provenance, dim=family.outputs[family.feature_output])
            if ref_dataset is not None:
                stats_file = self._shipped_stats(ref_dataset, extractor_name, provenance)

        # Whatever a statistics file cannot provide (images, labels, logits) comes from images.
        ref_kinds = kinds_by_source["reference"]
        from_images = ref_kinds - ({"features"} if stats_file is not None else set())
        if from_images and reference is None:
            if ref_dataset is None:
                raise InputError(
                    f"--reference {reference_spec} is a statistics file, but the requested "
                    f"metrics need the reference's {', '.join(sorted(from_images))}"
                )
            reference, _ = resolve_source(f"{ref_dataset[0]}:{ref_dataset[1]}", self.registry)
        run.used["reference"] = (
            f"{ref_dataset[0]}:{ref_dataset[1]}" if ref_dataset is not None else reference_spec
        )
        run.timings["setup"] = time.perf_counter() - t0

        # Shared inputs: the extractor runs once over each source.
        t0 = time.perf_counter()
        run.data["samples"] = self._collect(run, samples, kinds_by_source["samples"], "samples")
        if needs_reference:
            if stats_file is not None:
                data = self._from_stats_file(run, stats_file)
                if reference is not None:
                    extra = self._collect(run, reference, from_images, "reference")
                    data.outputs.update(extra.outputs)
                    data.images, data.labels = extra.images, extra.labels
            else:
                assert reference is not None
                data = self._collect(run, reference, ref_kinds, "reference")
            run.data["reference"] = data
        run.timings["features"] = time.perf_counter() - t0
        self._note_resized_inputs(run)

        # Metrics.
        t0 = time.perf_counter()
        results: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        for name, metric in self.metrics.items():
            inputs = RunInputs(run, metric.needs)
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
        run.timings["metrics"] = time.perf_counter() - t0
        return self._report(run, results, errors)

    @staticmethod
    def _note_resized_inputs(run: _Run) -> None:
        """Say so when samples and reference images differ in size: the extractor resized at
        least one of them, and the comparison depends on that."""
        if run.extractor is None or len(run.data) < 2:
            return
        a, b = run.data["samples"].sizes, run.data["reference"].sizes
        if a and b and a != b:

            def sizes(found: set[tuple[int, int]]) -> str:
                return ", ".join(f"{h}×{w}" for h, w in sorted(found))

            warn(
                f"samples are {sizes(a)} and reference images {sizes(b)} pixels: extractor "
                f"{run.extractor.name} brought both to its input size "
                f"({run.extractor.convention})"
            )

    def _remote_stats(self, name: str, split: str | None) -> StatsFile:
        try:
            from geneval.remote_stats import fetch_reference_stats
        except ImportError:  # pragma: no cover - named statistics not available
            fetch_reference_stats = None
        path = None
        if fetch_reference_stats is not None:
            extractor = self.config.extractor or DEFAULT_EXTRACTOR
            path = fetch_reference_stats(
                name, split or "train", extractor, self.config.resize or "tf1"
            )
        if path is None:
            datasets = ", ".join(sorted(self.registry.items("dataset"))) or "none"
            raise InputError(
                f"--reference {name}: no such path, dataset (available: {datasets}) "
                "or published statistics"
            )
        return load_stats(path)

    def _shipped_stats(
        self, ref_dataset: tuple[str, str], extractor: str, provenance: dict[str, Any]
    ) -> StatsFile | None:
        from geneval_reference_stats import shipped_stats_path

        path = shipped_stats_path(ref_dataset[0], ref_dataset[1], extractor)
        if path is None:
            return None
        stats_file = load_stats(path)
        meta = stats_file.meta or {}
        if any(meta.get(k) != v for k, v in provenance.items()):
            return None  # stale or for another convention: recompute from the images
        needs_features = any(
            n.kind == "features" and n.source == "reference" and not n.stats_ok for n in self.needs
        )
        if needs_features and stats_file.features is None:
            return None
        return stats_file

    def _from_stats_file(self, run: _Run, stats_file: StatsFile) -> InputData:
        data = InputData(description=str(stats_file.path), count=stats_file.n)
        data.stats = stats_file.statistics().to(run.device)
        if stats_file.features is not None:
            data.outputs[run.feature_output] = torch.from_numpy(stats_file.features)
            data.count = int(stats_file.features.shape[0])
        else:
            for need in self.needs:
                if need.source == "reference" and need.kind == "features" and not need.stats_ok:
                    raise InputError(
                        f"statistics file {stats_file.path} holds no per-sample features, which "
                        "a requested metric needs (write it with `geneval stats --features`)"
                    )
        return data

    def _collect(self, run: _Run, source: SampleSource, kinds: set[str], which: str) -> InputData:
        data = InputData(description=source.description, count=source.count, labels=source.labels)
        wanted: list[str] = []
        if "features" in kinds:
            wanted.append(run.feature_output)
        if "logits" in kinds and run.logits_output not in wanted:
            wanted.append(run.logits_output)
        keep_images = "images" in kinds
        if not wanted and not keep_images and isinstance(source, ModelSource):
            data.count = 0  # no metric looks at samples: none are drawn
        if wanted or keep_images:
            data.outputs, data.images = extract(
                source,
                run.extractor,
                wanted,
                keep_images=keep_images,
                batch_size=self.config.batch_size or DEFAULT_BATCH_SIZE,
                device=run.device,
                workers=self.config.workers,
                desc=which,
                sizes=data.sizes,
            )
            for note in source.notes():
                warn(note)
        return data

    def _report(
        self, run: _Run, results: dict[str, dict[str, Any]], errors: dict[str, str]
    ) -> dict[str, Any]:
        config = self.config
        report_config: dict[str, Any] = {
            "samples": config.samples if config.samples is not None else f"model:{config.model}",
            "reference": run.used.get("reference"),
            "extractor": run.used.get("extractor"),
            "resize": run.used.get("resize"),
            "seed": config.seed,
            "device": str(run.device),
            "batch_size": config.batch_size or DEFAULT_BATCH_SIZE,
        }
        if config.model is not None:
            report_config.update(
                model=config.model,
                checkpoint=run.used.get("checkpoint"),
                num_samples=config.num_samples,
                sampler=config.sampler
                or (run.model.config.get("default_sampler") if run.model else None),
                steps=config.steps,
            )
        inputs = {
            source: {"count": data.count, "description": data.description}
            for source, data in run.data.items()
        }
        for name, opts in self.options.items():
            if name in results:
                for key, val in opts.items():
                    results[name].setdefault(key, val)
        return {
            "geneval_version": __version__,
            "config": report_config,
            "inputs": inputs,
            "metrics": results,
            "errors": errors,
            "timings": {k: round(v, 4) for k, v in run.timings.items()},
        }


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


def extract(
    source: SampleSource,
    extractor: LoadedExtractor | None,
    wanted: Sequence[str],
    *,
    keep_images: bool = False,
    batch_size: int,
    device: torch.device,
    workers: int | None = None,
    desc: str = "features",
    sizes: set[tuple[int, int]] | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor | None]:
    """One pass over ``source``: the ``wanted`` extractor outputs (float32, CPU) and, optionally,
    the images themselves. The extractor is called once per batch (once per same-size group
    for folders of mixed sizes)."""
    chunks: dict[str, list[torch.Tensor]] = {name: [] for name in wanted}
    images: list[torch.Tensor] = []
    # Only the extractor runs under inference mode: model sources may need gradients to
    # sample (Langevin dynamics on an energy).
    with progress_bar(total=source.count, desc=desc, unit="img") as bar:
        for batch in source.batches(batch_size, device, workers):
            groups = _same_size_groups(batch)
            for group in groups:
                if sizes is not None:
                    sizes.add((int(group.shape[-2]), int(group.shape[-1])))
                if wanted:
                    assert extractor is not None
                    with torch.inference_mode():
                        out = extractor(group)
                    for name in wanted:
                        chunks[name].append(out[name].detach().float().cpu())
                if keep_images:
                    images.append(group.cpu())
            bar.update(sum(g.shape[0] for g in groups))
    outputs = {name: torch.cat(parts) for name, parts in chunks.items()}
    kept = None
    if keep_images:
        if not all(t.shape[1:] == images[0].shape[1:] for t in images):
            raise InputError(f"{source.description}: images of different sizes cannot be compared")
        kept = torch.cat(images)
    return outputs, kept


def _same_size_groups(batch: torch.Tensor | list[torch.Tensor]) -> list[torch.Tensor]:
    """Split a list of differently sized images into runs of equal size (stacked)."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    groups: list[list[torch.Tensor]] = []
    for image in batch:
        if groups and groups[-1][0].shape == image.shape:
            groups[-1].append(image)
        else:
            groups.append([image])
    return [torch.stack(g) for g in groups]


def evaluate(config: RunConfig, registry: Registry | None = None) -> dict[str, Any]:
    """Run an evaluation from Python; returns the report dictionary (without gates)."""
    return Evaluation(config, registry).execute()
