"""The Python API: :func:`evaluate` for one call, :class:`Evaluator` inside a training loop.

Both take the command line's long options as keyword arguments (``extractor``,
``extractor_weights``, ``resize``, ``device``, ``seed``, ``batch_size``, ``num_samples`` ...)
and metric options as ``options={"kid": {"subset_size": 1000}}``. Bad input raises
:class:`geneval.InputError` with the command line's one-line message.

Inside a training loop::

    from geneval import Evaluator

    evaluator = Evaluator(metrics=["fid", "kid"], reference="digits:train")  # prepared once
    for step in range(steps):
        ...
        if step % 1000 == 0:
            evaluator.reset()
            for _ in range(10):
                evaluator.update(model.sample(100))  # NCHW, uint8 or float in [0, 1]
            print(step, evaluator.compute()["fid"]["value"])

The reference is resolved and its features extracted once, when the evaluator is made. Only
float64 moments are kept for the samples unless a requested metric needs per-sample
features (KID, IS, precision/recall ...).

Inside a DDP job (an initialised ``torch.distributed`` process group) every rank makes the
evaluator (each extracts its shard of the reference), updates it with its own samples, and
calls :meth:`Evaluator.compute` together: the moments are merged, per-sample
features gathered in rank order, and every rank gets the same result.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval.errors import InputError, captured_warnings
from geneval.report.gates import apply_gates, check_gate_metrics, parse_gate
from geneval.run.config import DEFAULTS, run_config
from geneval.run.pipeline import Run
from geneval.runner import Evaluation
from geneval.sources import (
    StreamSource,
    checked_tensor,
    host_tensor,
    image_layout,
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
    extractor_weights: str | Path | None = None,
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
    fail_if: Iterable[str] = (),
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
    ``fail_if`` takes gate expressions such as ``"fid>30"``; the report's ``passed`` is the
    verdict. Warnings are collected into the report's ``warnings``. ``baseline=True`` adds the
    held-out split's scores at the same n, as ``--baseline`` does. ``cache=False`` turns
    the feature cache off; ``precision`` is ``fp32`` (default), ``bf16`` or ``tf32``;
    ``compile=True`` compiles the extractors where they stay exact (:mod:`geneval.precision`).
    ``batch_size`` is the images per extractor call, ``sample_batch_size`` the samples per
    model call (default: ``batch_size`` when given); defaults are :data:`geneval.DEFAULTS`.
    """
    settings = dict(locals())
    gate_expressions = settings.pop("fail_if")
    config = run_config(**settings)
    with captured_warnings() as caught:
        evaluation = Evaluation(config)
        gates = [parse_gate(expr, origin="fail_if") for expr in gate_expressions]
        check_gate_metrics(gates, evaluation.metrics)
        report = evaluation.execute()
        apply_gates(report, gates)
        report["warnings"] = caught.drain()
    return report


class MetricError(RuntimeError):
    """A metric raised while :meth:`Evaluator.compute` ran (its message names the metric)."""


def _as_unit_float(images: Any, device: torch.device, layout: str | None) -> torch.Tensor:
    """Validate a uint8 or float ``[0, 1]`` batch, NCHW or NHWC by the one rule of
    :func:`geneval.sources.image_layout`, and bring it to float32 NCHW on ``device``."""
    what = "update: images"
    if isinstance(images, np.ndarray):
        if images.dtype != np.uint8 and images.dtype.kind != "f":
            raise InputError(f"update: expected uint8 or float images, got {images.dtype}")
        images = host_tensor(images)
    if not isinstance(images, torch.Tensor):
        raise InputError(f"update: expected an image tensor or array, got {type(images).__name__}")
    images = checked_tensor(images, what)
    chosen = image_layout(images.shape, layout, what)
    if 0 in images.shape:
        raise InputError(f"update: expected images, got shape {tuple(images.shape)}")
    if chosen == "nhwc":
        images = images.permute(0, 3, 1, 2)
    if images.dtype == torch.uint8:
        x = images.to(device, non_blocking=True).float().div_(255.0)
    elif not images.is_floating_point():
        raise InputError(f"update: expected uint8 or float images, got {images.dtype}")
    else:
        x = images.to(device, non_blocking=True).float()
        low, high = float(x.min()), float(x.max())
        if not (0.0 <= low and high <= 1.0):  # also refuses NaN
            raise InputError(f"update: float images must lie in [0, 1], found [{low}, {high}]")
    return standard_strides(x) if chosen == "nhwc" else x


class Evaluator:
    """Streaming evaluation: ``update(images)`` as often as needed, then ``compute()``.

    Parameters are those of :func:`evaluate` (without ``samples``). The reference is prepared
    once, at construction, and reused by every :meth:`compute`.
    """

    def __init__(
        self,
        metrics: str | Sequence[str] = (DEFAULTS["metrics"],),
        reference: Any = None,
        *,
        options: Mapping[str, Mapping[str, Any]] | None = None,
        extractor: str | None = None,
        extractor_weights: str | Path | None = None,
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
    ) -> None:
        settings = dict(locals())
        del settings["self"]
        self._stream = StreamSource()
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
            self._run.plan()
            self._run.collect(("reference",))
            self.warnings = caught.drain()
        self.reset()

    def reset(self) -> None:
        """Forget every image given to :meth:`update` (the reference is kept)."""
        self._stream.reset()

    def update(
        self, images: Any, *, layout: str | None = None, num_samples: int | None = None
    ) -> None:
        """Add a batch of samples: uint8 or float in ``[0, 1]``, on any device; NCHW or NHWC
        by the rule of :func:`geneval.sources.image_layout` (``layout``, default the
        evaluator's, states it: a shape that fits both, such as (N, 3, 3, 3), needs it).

        ``images`` may instead be a generator (a callable ``G(n, generator)``, an ``nn.Module``
        with ``sample``, a loaded model or a pipeline object; :mod:`geneval.generators`): it is
        drawn ``num_samples`` times, in blocks of the evaluator's ``sample_batch_size``, seeded
        by the evaluator's seed and the number of samples it already holds — so a sequence of
        updates is reproducible, and each draws new images.
        """
        from geneval.generators import adopt, is_generator, model_source
        from geneval.sources import sample_block_seed

        device = self._stream.pass_device
        if is_generator(images):
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
        self._stream.add(_as_unit_float(images, device, self._layout if layout is None else layout))

    @property
    def count(self) -> int:
        """The number of samples given since the last :meth:`reset`."""
        return self._stream.received

    def state_nbytes(self) -> int:
        """Bytes held for the samples (float64 moments, and per-sample features where needed)."""
        return self._stream.nbytes()

    def compute(self) -> dict[str, dict[str, Any]]:
        """The metrics of the samples given so far: ``{metric: {"value": ..., ...}}``.

        May be called again after more :meth:`update` calls. A metric that raises is a
        :class:`MetricError` naming it; bad input an :class:`InputError`. Inside a DDP job
        every rank calls it: the samples of all ranks are merged (in rank order) first.
        """
        with captured_warnings() as caught:
            self._run.collect(("samples",))
            self._run.produce()
            results, errors = self._run.dispatch()
            self.warnings = caught.drain()
        if errors:
            raise MetricError(
                "; ".join(f"metric {name} raised {message}" for name, message in errors.items())
            )
        return results


__all__ = ["Evaluator", "MetricError", "evaluate"]
