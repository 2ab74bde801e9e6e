"""The run as one typed object: :class:`Run` and its five doors.

1. ``resolve(role)``: the samples (a model, a folder, an array, a dataset, an in-memory tensor,
   ``update()`` batches) or, if a metric needs it, the reference (:mod:`geneval.run.resolve`);
2. ``plan(metrics)``: each metric's needs become typed input keys, with the extractor of the
   one rule of :func:`geneval.run.resolve.metric_extractor`; the producer of each kind
   (:data:`geneval.run.inputs.PRODUCERS`) says what the single pass over each source must gather;
3. ``collect(roles)``: one pass over each source (:mod:`geneval.run.passes`) runs every extractor
   the run needs once per batch;
4. ``produce(keys)``: every input key is produced once;
5. ``dispatch(metrics)``: every metric gets the inputs it declared and its validated options;
   a metric that raises (or returns a non-finite value) is reported and the others still run.

Callers drive these doors and nothing else of the run's state (:class:`geneval.run.state.RunState`).
"""

from __future__ import annotations

import math
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from geneval.api import GenerativeModel, ImageSet, Metric, Need
from geneval.capabilities import capabilities_of, capability_name
from geneval.device import resolve_device
from geneval.errors import InputError, setting, warn
from geneval.generators import (
    MODEL_OPTION_PREFIX,
    ModelSpec,
    adopt,
    is_generator,
    load_model,
    model_source,
    parse_model,
    split_model_options,
)
from geneval.options import parse_metric_options
from geneval.plugins import Registry, get_registry
from geneval.run.config import RunConfig, validate_config
from geneval.run.inputs import (
    EXTRACTED_KINDS,
    PRODUCERS,
    InputKey,
    RunInputs,
    check_feature_widths,
    file_array,
    input_key,
    needs_of,
    refuse_file_features,
    served_by_files,
)
from geneval.run.resolve import (
    ResolvedSource,
    load_required_extractor,
    metric_extractor,
    required_extractor,
    resolve_dataset,
    resolve_spec,
    split_name,
)
from geneval.run.state import SOURCES, Plan, RunState
from geneval.sources import TensorSource
from geneval.weights import explicit_weights, preflight, weights_for


def resolve_metrics(registry: Registry, names: Sequence[str]) -> dict[str, Metric]:
    """Look the metric names up; duplicates are dropped, order is kept."""
    out: dict[str, Metric] = {}
    for name in names:
        name = name.strip().lower()
        if name and name not in out:
            out[name] = registry.metric(name)
    if not out:
        raise InputError("--metrics: no metric requested")
    return out


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


class MetricValueError(Exception):
    """A metric returned a result that is not a number (reported as that metric's error)."""


def checked_result(name: str, metric: Metric, result: Mapping[str, Any]) -> dict[str, Any]:
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
    if math.isnan(value) or (math.isinf(value) and not metric.allows_infinite_value):
        raise MetricValueError(f"metric {name} returned a non-finite value ({value})")
    out["value"] = value
    return out


class Run:
    """One run: its metrics resolved and their options validated at construction; the work
    is done through the doors :meth:`resolve`, :meth:`plan`, :meth:`collect`, :meth:`produce`
    and :meth:`dispatch` (see the module docstring).

    ``needs`` replaces the metrics by named needs (``geneval stats`` plans the features of
    one source without a metric); such a run plans, collects and produces, and dispatches
    nothing.
    """

    def __init__(
        self,
        config: RunConfig,
        registry: Registry | None = None,
        *,
        debug: bool = False,
        needs: Mapping[str, Sequence[Need]] | None = None,
        parent: Run | None = None,
    ) -> None:
        """``parent``: the run whose resolved reference and loaded extractors this one
        shares (see :meth:`held_out`)."""
        validate_config(config)
        self.config = config
        self.debug = debug
        self.registry = registry or get_registry()
        metric_options, self.model_options = split_model_options(config.options)
        if needs is None:
            self.metrics = resolve_metrics(self.registry, config.metrics)
            self.options = parse_metric_options(metric_options, self.metrics)
            #: each metric's needs under its validated options
            self.needs = {n: needs_of(m, self.options[n]) for n, m in self.metrics.items()}
        else:
            self.metrics, self.options = {}, {}
            self.needs = {name: tuple(found) for name, found in needs.items()}
        #: what ``--model`` names (None for samples given as images or as an object)
        self.model_spec: ModelSpec | None = None
        if config.model is not None:
            self.model_spec = parse_model(config.model, config.checkpoint, self.registry)
            if self.model_spec.family is not None:
                family = self.registry.model(self.model_spec.family)
                if config.sampler is not None and config.sampler not in family.samplers:
                    raise InputError(
                        f"--sampler {config.sampler}: model {family.name} offers "
                        f"{', '.join(family.samplers)}"
                    )
        given_to_no_model = config.model is None and not is_generator(config.samples)
        if self.model_options and given_to_no_model and parent is None:
            raise InputError(
                f"--opt {MODEL_OPTION_PREFIX}.{next(iter(self.model_options))}: sample options "
                "are for --model"
            )
        if parent is None:
            device = resolve_device(config.device)  # a torch.device from the CLI passes through
            self.state = RunState(config, self.registry, device, extract_only=needs is not None)
        else:
            device, loaded = parent.state.device, parent.state.loaded
            self.state = RunState(config, self.registry, device, loaded=loaded)
        self._parent = parent
        self._weights_checked = False
        self._plan = Plan()
        self._values: dict[InputKey, Any] = {}

    def held_out(self, images: ImageSet, description: str) -> Run:
        """A run of the same metrics and settings whose samples are ``images`` and whose
        reference is this run's, resolved and extracted already (``--baseline``)."""
        config = replace(
            self.config,
            model=None,
            checkpoint=None,
            samples=TensorSource(description, images),
            grid=0,
            neighbours=0,
            baseline=False,
        )
        return Run(config, self.registry, debug=self.debug, parent=self)

    # -- 1. resolve --------------------------------------------------------------------------
    def resolve(self, role: str) -> None:
        """Resolve the source of ``role``: ``samples`` or ``reference`` (the latter only when
        a metric needs it)."""
        if role == "samples":
            self._resolve_samples()
        elif role == "reference":
            self._resolve_reference()
        else:
            raise ValueError(f"no source role {role!r}: choose from {', '.join(SOURCES)}")

    def _load_model(self) -> GenerativeModel:
        """The model of ``--model`` (a family's checkpoint or the user's generator), or the
        generator object given as the samples, adopted (:mod:`geneval.generators`)."""
        spec, device = self.model_spec, self.state.device
        if spec is None:
            self.state.model_name = "object"
            return adopt(self.config.samples, self.registry, device, what="samples")
        if spec.family is not None:  # the published files its models load, before loading
            preflight([(file, None) for file in weights_for(self.registry.model(spec.family))])
        model = load_model(spec, self.registry, device)
        if spec.family is not None:
            family = self.registry.model(spec.family)
            for protocol in family.capabilities:
                if not isinstance(model, protocol):
                    raise InputError(
                        f"model plugin {family.name} declares capability "
                        f"{capability_name(protocol)!r}, which its loaded model does not offer"
                    )
        self.state.model_name = spec.name
        return model

    def _check_capabilities(self) -> None:
        model = self.state.model
        for name, needs in self.needs.items():
            for need in needs:
                for protocol in need.capabilities:
                    if model is not None and not isinstance(model, protocol):
                        offered = ", ".join(capabilities_of(model)) or "none"
                        raise InputError(
                            f"metric {name} needs capability "
                            f"{capability_name(protocol)!r}, which model "
                            f"{self.state.model_name or 'object'} does not have (it offers: "
                            f"{offered})"
                        )

    def _resolve_samples(self) -> None:
        config, state = self.config, self.state
        if config.model is not None or is_generator(config.samples):
            state.model = self._load_model()
            name = str(state.model_name)
            source = model_source(
                state.model,
                name,
                config.num_samples,
                seed=config.seed,
                sampler=config.sampler,
                steps=config.steps,
                batch_size=config.sample_batch_size,
                labels=config.labels,
                prompts=config.prompts,
                options=self.model_options,
                precision=config.precision,
            )
            state.sources["samples"] = ResolvedSource(
                "samples", source.description, source=source, model=state.model
            )
        else:
            state.sources["samples"] = resolve_spec(
                config.samples, "samples", self.registry, layout=config.layout
            )
        self._check_capabilities()

    def _resolve_reference(self) -> None:
        config, state = self.config, self.state
        if self._parent is not None:
            reference = self._parent.state.sources.get("reference")
            if reference is not None:
                state.sources["reference"] = reference
            return
        if any(_needs_reference(needs, state.model is not None) for needs in self.needs.values()):
            if config.reference is not None:
                state.sources["reference"] = resolve_spec(
                    config.reference, "reference", self.registry, layout=config.layout
                )
            elif self.model_spec is not None and self.model_spec.family is not None:
                trained_on = self.registry.model(self.model_spec.family).dataset
                if not trained_on:
                    raise InputError(
                        f"model {self.model_spec.name} names no training set: "
                        f"use {setting('reference')}"
                    )
                dataset, split = split_name(trained_on)
                state.sources["reference"] = resolve_dataset(
                    dataset, split, self.registry, "reference"
                )
            else:
                raise InputError(
                    f"the requested metrics need a reference: use {setting('reference')}"
                )
        self._check_weights()

    def _check_weights(self) -> None:
        """Pre-flight, once the extractors the run uses are known and before any loads: the
        weights files they declare (``published_weights``) are found or fetched, and all the
        missing ones are named in one error with the ``geneval weights fetch`` command
        (:func:`geneval.weights.preflight`). ``--extractor-weights`` is checked here too: one
        PATH needs a run with one extractor; each NAME of NAME=PATH an extractor of the run."""
        if self._weights_checked or self._parent is not None:
            return
        given = self.config.extractor_weights
        used = sorted(
            {
                self._extractor(name)
                for name, needs in self.needs.items()
                if _uses_extractor(needs) and not self._from_files(name, needs)
            }
        )
        option = setting("extractor_weights")
        if isinstance(given, Mapping):
            installed = self.registry.items("extractor")
            for name in given:
                if name not in installed:
                    choices = ", ".join(sorted(installed)) or "none installed"
                    raise InputError(
                        f"{option} {name}=...: unknown extractor (installed: {choices})"
                    )
                if name not in used:
                    warn(
                        f"{option} {name}=...: extractor {name} is not used by this run "
                        f"(it uses {', '.join(used) or 'none'})"
                    )
        elif given is not None and len(used) > 1:
            raise InputError(
                f"{option} PATH is ambiguous: this run uses the extractors {', '.join(used)} "
                f"(give NAME=PATH for each, e.g. {used[0]}=PATH, or choose one with "
                f"{setting('extractor')})"
            )
        extracting = {
            self._extractor(name)
            for name, needs in self.needs.items()
            if _uses_extractor(needs) and self._extracts(name, needs)
        }
        needed = [
            (file, explicit_weights(given, name))
            for name in sorted(extracting)
            for file in weights_for(self.registry.extractor(name))
        ]
        if needed:
            preflight(needed)
        self._weights_checked = True

    def _from_files(self, metric: str, needs: Sequence[Need]) -> bool:
        """Whether ``metric`` runs with no extractor at all: none is requested or required,
        and every extracted input it needs comes from a file, a source's own ``features`` or
        ``logits`` array or a statistics file that names no extractor
        (:func:`geneval.run.inputs.served_by_files`)."""
        if required_extractor(needs) is not None:
            return False
        return served_by_files([input_key(need, None) for need in needs], self.state)

    def _extracts(self, metric: str, needs: Sequence[Need]) -> bool:
        """Whether ``metric``'s extractor will run: not when the metric runs with no extractor
        (:meth:`_from_files`), nor when every extracted input it needs comes from a source's
        own ``features`` or ``logits`` array."""
        if required_extractor(needs) is not None:
            return True
        if self._from_files(metric, needs):
            return False
        extractor = self._extractor(metric)
        for need in needs:
            key = input_key(need, extractor)
            if key.kind not in EXTRACTED_KINDS:
                continue
            if key.source not in self.state.sources or file_array(key, self.state) is None:
                return True
        return False

    def _extractor(self, metric: str) -> str:
        if "samples" not in self.state.sources:
            raise RuntimeError("resolve the samples before planning")
        return metric_extractor(
            metric,
            self.needs[metric],
            explicit=self.config.extractor,
            samples=self.state.sources["samples"],
            reference=self.state.sources.get("reference"),
            registry=self.registry,
        )

    # -- 2. plan -----------------------------------------------------------------------------
    def plan(self, metrics: Iterable[str] | None = None) -> Plan:
        """Plan the typed inputs of ``metrics`` (default: all of the run's); returns the plan
        of every metric planned so far. The report's grids, neighbours and baseline are
        planned with all the metrics."""
        from geneval.baseline import plan_baseline
        from geneval.report.visuals import plan_visuals

        self._check_weights()
        names = list(self.needs) if metrics is None else list(metrics)
        planned: dict[str, dict[tuple[str, ...], InputKey]] = {}
        for name in names:
            needs = self.needs[name]
            extractor = None
            if _uses_extractor(needs) and self._from_files(name, needs):
                self._plan.extractors[name] = None  # its inputs all come from files
            elif _uses_extractor(needs):
                extractor = self._extractor(name)
                self._plan.extractors[name] = extractor
                if required_extractor(needs) is not None:
                    load_required_extractor(name, extractor, self.state.extractor)
            keys = {}
            for need in needs:
                key = input_key(need, extractor)
                keys[key.slot] = key
            planned[name] = self._plan.keys[name] = keys
        state = self.state
        for name, keys in planned.items():
            if required_extractor(self.needs[name]) is not None:
                refuse_file_features(name, self._plan.extractors[name], keys.values(), state)
        for key in dict.fromkeys(k for keys in planned.values() for k in keys.values()):
            PRODUCERS[key.kind].plan(key, state)
        for name, keys in planned.items():
            check_feature_widths(name, keys, state)
        config = self.config
        if metrics is None and (config.grid or config.neighbours):
            plan_visuals(state, self._plan, grid=config.grid, neighbours=config.neighbours)
        if metrics is None and config.baseline:
            plan_baseline(state, self._plan)
        state.open_streams()
        return self._plan

    # -- 3. collect --------------------------------------------------------------------------
    def collect(self, roles: Sequence[str] = SOURCES) -> None:
        """One pass over each source of ``roles`` that a planned input reads (for ``update()``
        batches: gather what they gave). Inputs produced before are produced again."""
        self.state.run_passes(roles)
        self._values = {}

    # -- 4. produce --------------------------------------------------------------------------
    def produce(self, keys: Iterable[InputKey] | None = None) -> dict[InputKey, Any]:
        """Produce each of ``keys`` (default: every planned key) once; returns them."""
        if keys is None:
            keys = [key for found in self._plan.keys.values() for key in found.values()]
        out: dict[InputKey, Any] = {}
        for key in keys:
            if key not in self._values:
                self._values[key] = PRODUCERS[key.kind].produce(key, self.state)
            out[key] = self._values[key]
        return out

    # -- 5. dispatch -------------------------------------------------------------------------
    def dispatch(
        self,
        metrics: Iterable[str] | None = None,
        values: Mapping[InputKey, Any] | None = None,
    ) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        """Compute ``metrics`` (default: every planned metric) on ``values`` (default: the
        inputs :meth:`produce` made); returns ``(results, errors)``, each by metric name. A metric's
        result carries the options it ran with."""
        values = self._values if values is None else values
        chosen = set(self._plan.keys if metrics is None else metrics)
        names = [name for name in self.metrics if name in chosen and name in self._plan.keys]
        results: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        memo: dict[Any, Any] = {}
        for name in names:
            metric = self.metrics[name]
            inputs = RunInputs(
                self._plan.keys[name],
                values,
                run=self.state,
                device=self.state.device,
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
