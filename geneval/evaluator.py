"""The Python API: :func:`evaluate` for one call, :class:`Evaluator` inside a training loop.

Both take the command line's long options as keyword arguments (``extractor``,
``extractor_weights``, ``resize``, ``device``, ``seed``, ``batch_size``, ``num_samples`` ...)
and metric options as ``options={"kid": {"subset_size": 1000}}``. Bad input raises
:class:`geneval.InputError` with a one-line message that names settings as Python does
(``reference=``, ``options['kid']['subset_size']``; :func:`geneval.errors.surface`).
``docs/python-api.md`` is the guide.

Inside a training loop, with the reference prepared once::

    from geneval import Evaluator

    evaluator = Evaluator(metrics=["fid", "kid"], reference="digits:train")
    for step in range(steps):
        ...
        if step % 1000 == 0:
            evaluator.reset()
            for _ in range(10):
                evaluator.update(model.sample(100))  # NCHW or NHWC, uint8 or float in [0, 1]
            print(step, evaluator.compute()["fid"]["value"])

or, as torchmetrics' ``FrechetInceptionDistance`` is used, with the reference streamed too::

    evaluator = Evaluator(["fid"], reference=None, extractor="digits-cnn",
                          reset_real_features=False)
    for real in loader:
        evaluator.update(real, real=True)
    ...
    evaluator.update(fake)  # real=False
    evaluator.compute()

Only float64 moments are kept per source unless a requested metric needs per-sample
features (KID, IS, precision/recall ...).

Inside a DDP job (an initialised ``torch.distributed`` process group) every rank makes the
evaluator (each extracts its shard of the reference), updates it with its own samples (and
its own real images, when the reference is streamed), and calls :meth:`Evaluator.compute`
together: the moments are merged, per-sample features gathered in rank order, and every
rank gets the same result.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval.errors import GenevalWarning, InputError, captured_warnings, surface
from geneval.report.gates import apply_gates, check_gate_metrics, parse_gates
from geneval.run.config import DEFAULTS, run_config
from geneval.run.pipeline import Run
from geneval.runner import Evaluation
from geneval.sources import (
    StreamSource,
    check_image_values,
    check_not_empty,
    checked_tensor,
    host_tensor,
    image_layout,
    pil_image_pixels,
    standard_strides,
)


def evaluate(
    samples: Any = None,
    reference: Any = None,
    metrics: str | Sequence[str] = (DEFAULTS["metrics"],),
    *,
    model: str | None = None,
    checkpoint: str | Path | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
    extractor: str | None = None,
    extractor_weights: str | Path | Mapping[str, str | Path] | None = None,
    resize: str | None = None,
    device: str | torch.device = DEFAULTS["device"],
    seed: int = DEFAULTS["seed"],
    batch_size: int | None = None,
    sample_batch_size: int | None = None,
    num_samples: int = DEFAULTS["num_samples"],
    workers: int | None = None,
    sampler: str | None = None,
    steps: int | None = None,
    labels: str | Path | Sequence[int] | None = None,
    prompts: str | Path | Sequence[str] | None = None,
    fail_if: str | Iterable[str] = (),
    baseline: bool = False,
    cache: bool = DEFAULTS["cache"],
    precision: str = DEFAULTS["precision"],
    compile: bool = DEFAULTS["compile"],
    layout: str = DEFAULTS["layout"],
) -> dict[str, Any]:
    """Evaluate ``samples`` against ``reference``; returns the report (as ``--json`` writes it).

    ``samples`` and ``reference`` accept a path (folder, ``.npy``/``.npz`` array, statistics
    file), ``DATASET[:SPLIT]``, a uint8 or float image tensor or array (NCHW or NHWC), or, for
    ``samples``, a generator drawn ``num_samples`` times: a loaded model, a callable
    ``G(n, generator) -> images``, an ``nn.Module`` with ``sample(n, generator=...)`` or a
    pipeline a model family adopts (:mod:`geneval.generators`). ``model`` names a model family
    instead (``"ddpm"``, ``"diffusers:google/ddpm-cifar10-32"``) or ``"module.path:attribute"``.
    ``labels`` and ``prompts`` condition a class-conditional or text-to-image model (a file,
    or the values); ``options={"model": {...}}`` holds its sample options.
    ``layout`` (``"auto"``, ``"nchw"`` or ``"nhwc"``, as ``--layout``) states how image
    arrays' axes are read; ``"auto"`` refuses a shape that fits both, such as (N, 3, 3, 3).
    ``fail_if`` takes one gate expression such as ``"fid>30"`` or a list of them; the
    report's ``passed`` is the verdict. Warnings are collected into the report's
    ``warnings`` (and a metric's own, such as the small-n warning, into its result's
    ``warnings``). ``baseline=True`` adds the held-out split's scores at the same n, as
    ``--baseline`` does. ``cache=False`` turns the feature cache off; ``precision`` is
    ``fp32`` (default), ``bf16`` or ``tf32``; ``compile=True`` compiles the extractors where
    they stay exact (:mod:`geneval.precision`). ``batch_size`` is the images per extractor
    call, ``sample_batch_size`` the samples per model call (default: ``batch_size`` when
    given); defaults are :data:`geneval.DEFAULTS`.
    """
    settings = dict(locals())
    gate_expressions = settings.pop("fail_if")
    with surface("python"):
        config = run_config(**settings)
        gates = parse_gates(gate_expressions, origin="fail_if")
        with captured_warnings() as caught:
            evaluation = Evaluation(config)
            check_gate_metrics(gates, evaluation.metrics)
            report = evaluation.execute()
            apply_gates(report, gates)
            report["warnings"] = caught.drain()
    return report


class MetricError(RuntimeError):
    """A metric raised while :meth:`Evaluator.compute` ran (its message names the metric)."""


#: What ``update()`` takes as a list: PIL images, or (C, H, W) / (H, W, C) tensors or arrays.
_LIST_TYPES = (list, tuple)


def _is_pil(obj: Any) -> bool:
    """Whether ``obj`` is a PIL image (PIL is imported only when one may be there)."""
    if type(obj).__module__.split(".")[0] != "PIL":
        return False
    from PIL import Image

    return isinstance(obj, Image.Image)


def _as_unit_float(
    images: Any,
    device: torch.device,
    layout: str | None,
    *,
    input_range: tuple[float, float] = (0.0, 1.0),
    floats: bool = True,
    what: str = "update: images",
) -> torch.Tensor | list[torch.Tensor]:
    """Validate a batch and bring it to float32 NCHW in ``[0, 1]`` on ``device``.

    ``images`` is a tensor or array (uint8, or float in ``input_range``), NCHW or NHWC by the
    one rule of :func:`geneval.sources.image_layout`; or a list of PIL images (read by the
    rule of image folders, :func:`geneval.sources.pil_image_pixels`) or of (C, H, W) /
    (H, W, C) tensors or arrays. Float values ``x`` in ``[a, b] = input_range`` become
    ``(x − a) / (b − a)``; uint8 values ``v`` become ``v / 255``. NaN, infinities, values out
    of range and empty batches are refused by the checks the command line applies to array
    files (:func:`geneval.sources.check_image_values`, :func:`geneval.sources.check_not_empty`).
    ``floats=False`` refuses float batches (torchmetrics' ``normalize=False``). A list of
    images of different sizes comes back as a list of tensors, one per run of consecutive
    images of one size."""
    if isinstance(images, _LIST_TYPES):
        if not images:
            raise InputError(f"{what} is empty (0 images)")
        parts: list[torch.Tensor] = []
        for i, item in enumerate(images):
            name = f"{what}[{i}]"
            if _is_pil(item):
                pixels = pil_image_pixels(item, name)[None]  # (1, 3, H, W): NCHW by construction
                parts.append(_as_unit_float(pixels, device, "nchw", what=name))
                continue
            if isinstance(item, np.ndarray | torch.Tensor) and item.ndim == 3:
                item = item[None]
            elif isinstance(item, np.ndarray | torch.Tensor):
                raise InputError(
                    f"{name} must be one image (C, H, W) or (H, W, C), found shape "
                    f"{tuple(item.shape)}"
                )
            else:
                raise InputError(
                    f"{name}: expected a PIL image, or an image tensor or array, got "
                    f"{type(item).__name__}"
                )
            converted = _as_unit_float(
                item, device, layout, input_range=input_range, floats=floats, what=name
            )
            assert isinstance(converted, torch.Tensor)
            parts.append(converted)
        groups: list[list[torch.Tensor]] = []
        for part in parts:  # consecutive images of one size, as a folder's batches are cut
            if groups and groups[-1][0].shape == part.shape:
                groups[-1].append(part)
            else:
                groups.append([part])
        merged = [torch.cat(group) for group in groups]
        return merged[0] if len(merged) == 1 else merged
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 and images.dtype.kind != "f":
            raise InputError(f"{what}: expected uint8 or float images, got {images.dtype}")
        images = host_tensor(images)
    if _is_pil(images):
        raise InputError(f"{what}: a single PIL image: give a list of them, [image]")
    if not isinstance(images, torch.Tensor):
        raise InputError(
            f"{what}: expected an image tensor or array, or a list of PIL images or (C, H, W) "
            f"tensors, got {type(images).__name__}"
        )
    images = checked_tensor(images, what)
    chosen = image_layout(images.shape, layout, what)
    check_not_empty(images.shape, what)
    if images.dtype == torch.uint8:
        x = images.to(device, non_blocking=True).float().div_(255.0)
    elif not images.is_floating_point():
        raise InputError(f"{what}: expected uint8 or float images, got {images.dtype}")
    elif not floats:
        raise InputError(
            f"{what}: normalize=False takes uint8 images in [0, 255], got {images.dtype} (give "
            "normalize=True, or leave it out, for float images in [0, 1])"
        )
    else:
        x = images.to(device, non_blocking=True).float()
        low, high = input_range
        check_image_values(x, what, low=low, high=high)
        if (low, high) != (0.0, 1.0):
            x = (x - low) / (high - low)  # out of place: x may be the caller's own tensor
    return standard_strides(x.permute(0, 3, 1, 2)) if chosen == "nhwc" else x


def _checked_range(input_range: Any, normalize: Any) -> tuple[tuple[float, float], bool]:
    """``(input_range, floats accepted)`` from the constructor's ``input_range`` and
    torchmetrics-style ``normalize``."""
    try:
        low, high = (float(v) for v in input_range)
    except (TypeError, ValueError):
        raise InputError(
            f"input_range={input_range!r}: expected two numbers (low, high), e.g. (-1, 1)"
        ) from None
    if not (np.isfinite(low) and np.isfinite(high) and low < high):
        raise InputError(f"input_range={input_range!r}: expected finite numbers low < high")
    if normalize is not None and not isinstance(normalize, bool):
        raise InputError(f"normalize={normalize!r}: expected True or False")
    if normalize is not None and (low, high) != (0.0, 1.0):
        raise InputError(
            "normalize= and input_range= both given: normalize=True means float images in "
            "[0, 1]; give input_range alone"
        )
    return (low, high), normalize is not False


class Evaluator:
    """Streaming evaluation: ``update(images)`` as often as needed, then ``compute()``.

    Parameters are those of :func:`evaluate` (without ``samples``, ``model`` and ``fail_if``),
    and:

    reference
        Prepared once, at construction, and kept by :meth:`reset`; or ``None``: the reference
        is streamed with ``update(images, real=True)`` (torchmetrics' ``update(x, real=True)``).
        Its extractor is then the metric's or the installed default (no dataset names one):
        give ``extractor=`` to choose it.
    reset_real_features
        For a streamed reference: whether :meth:`reset` forgets it too (``True``, the
        default, as torchmetrics' FID) or keeps it (``False``). A reference given at
        construction is always kept.
    input_range
        ``(low, high)``, the range of float images: ``(-1, 1)`` for a generator whose output
        is ``tanh``-bounded; a float value ``x`` is read as ``(x − low) / (high − low)``.
        uint8 images are always ``v / 255``. torchmetrics' ``normalize=True`` says that floats
        lie in ``[0, 1]`` (geneval's default) and does not describe ``[-1, 1]``; hence a range
        rather than a switch.
    normalize
        torchmetrics' spelling, accepted so that its code ports as is: ``True`` is the default
        (floats in ``[0, 1]``), ``False`` refuses float images (uint8 only).

    It is deliberately not a ``torch.nn.Module``: its state is float64 moment sums and
    per-sample features held by the run, not parameters or buffers, so a ``state_dict`` would
    be empty and a parent module's ``.to()``, ``.half()`` or ``.train()`` would reach none of
    it; its extractors are plugins' objects that load onto a device only through their
    plugin. Keep it as a plain attribute of a ``LightningModule`` (or outside it) and move it
    with :meth:`to`, which reloads the extractors on the new device. ``evaluator(images)`` is
    ``update(images)``.
    """

    def __init__(
        self,
        metrics: str | Sequence[str] = (DEFAULTS["metrics"],),
        reference: Any = None,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        extractor: str | None = None,
        extractor_weights: str | Path | Mapping[str, str | Path] | None = None,
        resize: str | None = None,
        device: str | torch.device = DEFAULTS["device"],
        seed: int = DEFAULTS["seed"],
        batch_size: int | None = None,
        sample_batch_size: int | None = None,
        workers: int | None = None,
        cache: bool = DEFAULTS["cache"],
        precision: str = DEFAULTS["precision"],
        compile: bool = DEFAULTS["compile"],
        layout: str = DEFAULTS["layout"],
        input_range: tuple[float, float] = (0.0, 1.0),
        normalize: bool | None = None,
        reset_real_features: bool = True,
    ) -> None:
        settings = dict(locals())
        del settings["self"]
        with surface("python"):
            self._input_range, self._floats = _checked_range(
                settings.pop("input_range"), settings.pop("normalize")
            )
            reset_real = settings.pop("reset_real_features")
            if not isinstance(reset_real, bool):
                raise InputError(f"reset_real_features={reset_real!r}: expected True or False")
            self._reset_real = reset_real
            self._settings = settings
            self._build()

    def _build(self) -> None:
        """Make the run: resolve, plan, and prepare a reference given at construction."""
        self._stream = StreamSource()
        self._real = StreamSource()
        self._real.description = "update(real=True) batches"
        settings = dict(self._settings)
        if settings["reference"] is None:
            settings["reference"] = self._real
        config = run_config(samples=self._stream, **settings)
        self._layout = config.layout
        with captured_warnings() as caught:
            self._run = Run(config)
            for name, needs in self._run.needs.items():
                if any(need.kind == "model" for need in needs):
                    raise InputError(
                        f"metric {name} needs a model: use geneval.evaluate(model=...)"
                    )
            self._run.resolve("samples")
            self._run.resolve("reference")
            resolved = self._run.state.sources.get("reference")
            #: whether the reference arrives through update(real=True)
            self.streams_reference = resolved is not None and resolved.source is self._real
            self._plan = self._run.plan()
            if not self.streams_reference:
                self._run.collect(("reference",))
            self.warnings: list[str] = caught.drain()

    def reset(self) -> None:
        """Forget every sample given to :meth:`update`; a streamed reference too unless the
        evaluator was made with ``reset_real_features=False`` (a reference given at
        construction is kept)."""
        self._stream.reset()
        if self.streams_reference and self._reset_real:
            self._real.reset()

    def update(
        self,
        images: Any,
        real: bool = False,
        *,
        layout: str | None = None,
        num_samples: int | None = None,
    ) -> None:
        """Add a batch of samples, or with ``real=True`` of reference images (when the
        evaluator was made with ``reference=None``).

        ``images``: uint8, or float in the evaluator's ``input_range`` (default ``[0, 1]``), on
        any device, NCHW or NHWC by the rule of :func:`geneval.sources.image_layout`
        (``layout``, default the evaluator's, states it: a shape that fits both, such as
        (N, 3, 3, 3), needs it); or a list of PIL images (read as image files are: 8-bit
        modes as RGB) or of (C, H, W) / (H, W, C) tensors or arrays.

        ``images`` may instead be a generator (a callable ``G(n, generator)``, an ``nn.Module``
        with ``sample``, a loaded model or a pipeline object; :mod:`geneval.generators`): it is
        drawn ``num_samples`` times, in blocks of the evaluator's ``sample_batch_size``, seeded
        by the evaluator's seed and the number of samples it already holds — so a sequence of
        updates is reproducible, and each draws new images.
        """
        from geneval.generators import adopt, is_generator, model_source
        from geneval.sources import sample_block_seed

        with surface("python"):
            if not isinstance(real, bool):
                raise InputError(f"update: real={real!r}: expected True or False")
            what = "update(real=True): images" if real else "update: images"
            if real and not self.streams_reference:
                raise InputError(
                    "update(real=True): this evaluator's reference was given at construction "
                    "(or no metric needs one); make it with reference=None to stream the "
                    "reference"
                )
            target = self._real if real else self._stream
            device = target.pass_device
            if is_generator(images):
                if real:
                    raise InputError("update(real=True) takes images, not a generator")
                if num_samples is None:
                    raise InputError("update: give num_samples= to draw from a generator")
                run = self._run
                model = adopt(images, run.registry, run.state.device, what="update")
                source = model_source(
                    model,
                    "object",
                    num_samples,
                    seed=sample_block_seed(run.config.seed, self.count),
                    batch_size=run.config.sample_batch_size,
                )
                for block in source.batches(0, device, 0):
                    self._stream.add(block)
                return
            if num_samples is not None:
                raise InputError("update: num_samples= is for a generator, not images")
            batch = _as_unit_float(
                images,
                device,
                self._layout if layout is None else layout,
                input_range=self._input_range,
                floats=self._floats,
                what=what,
            )
            for group in batch if isinstance(batch, list) else [batch]:
                target.add(group)

    def __call__(
        self,
        images: Any,
        real: bool = False,
        *,
        layout: str | None = None,
        num_samples: int | None = None,
    ) -> None:
        """``update(images, real, ...)``; returns ``None``. The value of one batch alone
        (torchmetrics' ``forward``) is not offered: FID and KID of a few hundred images are
        biased estimates, comparable with nothing else; call :meth:`compute` for the value
        of everything given so far."""
        self.update(images, real, layout=layout, num_samples=num_samples)

    @property
    def count(self) -> int:
        """The number of samples given since the last :meth:`reset`."""
        return self._stream.received

    @property
    def real_count(self) -> int:
        """The number of reference images streamed with ``update(..., real=True)``."""
        return self._real.received if self.streams_reference else 0

    @property
    def device(self) -> torch.device:
        """The device the extractors run and the moments accumulate on."""
        return self._run.state.device

    def to(self, device: str | torch.device) -> Evaluator:
        """Move the evaluator to ``device`` (``"cuda:1"``, a ``torch.device``); returns it.

        Its extractors are loaded again on that device through their plugins, and a reference
        given at construction is prepared again there (the feature cache usually serves it).
        Samples or streamed reference images already held are not moved: move the evaluator
        before its first :meth:`update`, or after :meth:`reset`.
        """
        from geneval.device import resolve_device

        with surface("python"):
            target = resolve_device(device)
            if target.type == "cpu":
                target = torch.device("cpu")  # one CPU device, whatever index is written
            if target == self.device:
                return self
            held = self.count + self.real_count
            if held:
                raise InputError(
                    f"to({str(target)!r}): the evaluator holds {held} images on {self.device}; "
                    "move it before the first update(), or after reset()"
                )
            self._settings["device"] = target
            self._build()
        return self

    def state_nbytes(self) -> int:
        """Bytes held for the samples (float64 moments, and per-sample features where needed)
        and for a streamed reference."""
        held = self._stream.nbytes()
        return held + self._real.nbytes() if self.streams_reference else held

    def _counts(self) -> tuple[int, int]:
        """The samples and streamed reference images held, summed over the ranks."""
        from geneval.distributed import sum_ints

        ctx = self._run.state.ctx
        samples, real = sum_ints(ctx, [self.count, self.real_count])
        return samples, real

    def compute(self) -> dict[str, dict[str, Any]]:
        """The metrics of the samples given so far: ``{metric: {"value": ..., ...}}``.

        May be called again after more :meth:`update` calls. A metric's result carries the
        same ``warnings`` as :func:`evaluate`'s report (a value from fewer samples than the
        metric's minimum says so); the run's warnings are in :attr:`warnings`. Each is also
        emitted with :func:`warnings.warn` (:class:`geneval.errors.GenevalWarning`), so that
        a training loop shows it. A metric that raises is a :class:`MetricError` naming it;
        bad input an :class:`InputError`. Inside a DDP job every rank calls it: the samples
        of all ranks are merged (in rank order) first.
        """
        with surface("python"):
            samples, real = self._counts()
            if samples == 0:
                raise InputError("compute: no samples yet (call update(images) first)")
            if self.streams_reference and real == 0:
                raise InputError(
                    "compute: no reference images yet (call update(images, real=True) first)"
                )
            roles = ("samples", "reference") if self.streams_reference else ("samples",)
            with captured_warnings() as caught:
                self._run.collect(roles)
                self._run.produce()
                results, errors = self._run.dispatch()
                self.warnings = caught.drain()
            self._add_sample_count_warnings(results)
        if errors:
            raise MetricError(
                "; ".join(f"metric {name} raised {message}" for name, message in errors.items())
            )
        shown = [*self.warnings]
        for result in results.values():
            shown += [text for text in result.get("warnings", []) if text not in shown]
        for text in shown:
            warnings.warn(text, GenevalWarning, stacklevel=2)
        return results

    def _add_sample_count_warnings(self, results: dict[str, dict[str, Any]]) -> None:
        """Add to each result the warnings of :func:`geneval.report.explain.sample_count_warnings`
        on the counts and minimums :func:`evaluate`'s report uses."""
        from geneval.report.explain import minimum_samples, sample_count_warnings
        from geneval.run.inputs import uses_extractor

        state = self._run.state
        counts: dict[str, int | None] = {}
        for role, resolved in state.sources.items():
            if role in state.results:
                counts[role] = state.results[role].count
            elif resolved.stats_file is not None:
                counts[role] = resolved.stats_file.n
            elif resolved.source is not None and not isinstance(resolved.source, StreamSource):
                counts[role] = resolved.source.count
            else:
                counts[role] = None
        datasets = [
            state.sources[role].dataset
            for role in ("reference", "samples")
            if role in state.sources and state.sources[role].dataset is not None
        ]
        plan = self._plan
        for name, result in results.items():
            metric = self._run.metrics[name]
            extractor = plan.extractors.get(name)
            if not uses_extractor(plan.keys.get(name, {}), state):
                extractor = None
            plugin = self._run.registry.extractor(extractor) if extractor else None
            minimum, who = minimum_samples(metric, plugin, datasets)
            notes = sample_count_warnings(metric, counts, minimum, who)
            if notes:
                result["warnings"] = [*result.get("warnings", []), *notes]


__all__ = ["Evaluator", "MetricError", "evaluate"]
