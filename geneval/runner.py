"""``geneval run``: a whole run, from its configuration to the report dictionary.

:class:`Evaluation` drives the doors of :class:`geneval.run.Run` (resolve, plan, collect,
produce, dispatch), then the report's extras (``--baseline``: :mod:`geneval.baseline`; grids
and neighbours: :mod:`geneval.report.visuals`), and assembles the report of
``docs/contracts.md`` (report JSON).
"""

from __future__ import annotations

import time
from typing import Any

from geneval import __version__
from geneval.api import Metric, extractor_space
from geneval.baseline import compute_baseline
from geneval.generators import model_report
from geneval.plugins import Registry
from geneval.report.explain import metric_info, minimum_samples, sample_count_warnings, versions
from geneval.report.visuals import Visuals, collect_visuals
from geneval.run.config import RunConfig, validate_config
from geneval.run.inputs import features_from_files, uses_extractor
from geneval.run.pipeline import MetricValueError, Run, checked_result
from geneval.run.state import Plan, RunState

__all__ = [
    "Evaluation",
    "MetricValueError",
    "RunConfig",
    "checked_result",
    "run_report",
    "validate_config",
]


def _checkpoint_text(run: Run) -> str | None:
    """The report's ``checkpoint``: the one given, ``bundled`` for a family's own, or ``None``
    for a generator that is the user's code or object."""
    spec = run.model_spec
    if spec is None or spec.family is None:
        return None
    return spec.checkpoint if spec.checkpoint is not None else "bundled"


def _statistics_source(resolved: Any) -> str | None:
    """The source a statistics file given as ``resolved`` was computed from, as its provenance
    records it (``geneval stats digits:train`` records ``digits:train``); ``None`` for any
    other source or a file that records none."""
    stats = getattr(resolved, "stats_file", None)
    made_from = (stats.meta or {}).get("source") if stats is not None else None
    return made_from if isinstance(made_from, str) and made_from else None


def _feature_space(run: RunState, extractor: str | None) -> str | None:
    """The feature space of the extractor a metric ran with (``None``: no extractor, or one
    the registry does not know)."""
    if not extractor or extractor not in run.registry.items("extractor"):
        return None
    return extractor_space(run.registry.extractor(extractor))


class Evaluation:
    """A prepared run: metrics resolved and options validated; :meth:`execute` does the work."""

    def __init__(
        self, config: RunConfig, registry: Registry | None = None, *, debug: bool = False
    ) -> None:
        self.config = config
        self.run = Run(config, registry, debug=debug)
        self.metrics: dict[str, Metric] = self.run.metrics
        self.visuals: Visuals | None = None  # set by execute() when the config asks for them

    def execute(self) -> dict[str, Any]:
        """Resolve, plan, collect, produce and dispatch; return the report dictionary."""
        run = self.run
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        run.resolve("samples")
        run.resolve("reference")
        plan = run.plan()
        timings["setup"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        run.collect()
        values = run.produce()
        timings["features"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        results, errors = run.dispatch()
        timings["metrics"] = time.perf_counter() - t0
        extra: dict[str, Any] = {}
        config = self.config
        if config.baseline or config.grid or config.neighbours:
            t0 = time.perf_counter()
            if config.baseline:
                extra["baseline"] = compute_baseline(run, plan, values, results)
            if config.grid or config.neighbours:
                self.visuals = collect_visuals(
                    run.state, plan, values, grid=config.grid, neighbours=config.neighbours
                )
            timings["report"] = time.perf_counter() - t0
        return {**self._report(run.state, plan, results, errors, timings), **extra}

    # -- report ------------------------------------------------------------------------------
    def _report(
        self,
        run: RunState,
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
                # the space its features lie in (a metric's published numbers name theirs)
                "feature_space": _feature_space(run, name),
            }
            from_files = features_from_files(plan.keys.get(metric, {}), run)
            if from_files:
                extractors[metric]["features_from"] = from_files
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
                checkpoint=_checkpoint_text(self.run),
                num_samples=config.num_samples,
                sampler=config.sampler or run.model.config.get("default_sampler"),
                steps=config.steps,
            )
            report_config.update(model_report(run.sources["samples"].source, config))
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
            made_from = _statistics_source(resolved)
            if made_from is not None:  # a statistics file names what it was computed from
                inputs[role]["statistics_of"] = made_from
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
            "metric_info": metric_info(self.metrics, minimums, self.run.options),
            "errors": errors,
            "timings": {k: round(v, 4) for k, v in timings.items()},
            **extra,
        }

    def _minimum_samples(self, run: RunState, plan: Plan) -> dict[str, tuple[int | None, str]]:
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
            plugin = run.registry.extractor(extractor) if extractor else None
            minimums[name] = minimum_samples(metric, plugin, datasets)
        return minimums


def run_report(config: RunConfig, registry: Registry | None = None) -> dict[str, Any]:
    """Run an evaluation from a :class:`RunConfig`; returns the report dictionary (no gates).

    The Python API's :func:`geneval.evaluate` takes keyword arguments instead."""
    return Evaluation(config, registry).execute()
