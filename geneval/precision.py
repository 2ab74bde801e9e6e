"""How extractors run: float32 by default, bf16 or TF32 on request, compiled where exact.

``fp32`` (default)
    IEEE float32. On CUDA, TF32 is switched *off* for convolutions and matrix products
    while an extractor runs (PyTorch allows TF32 convolutions by default on Ampere and later
    GPUs, which would put a ~1e-3 relative error into every feature).
``tf32`` (CUDA only)
    TF32 tensor cores for float32 convolutions and matrix products: 10-bit mantissas in the
    products, float32 accumulation.
``bf16``
    ``torch.autocast`` to bfloat16 (8-bit mantissas) around the extractor; outputs come back
    as float32.
``fp16`` (CUDA only)
    ``torch.autocast`` to float16 (11-bit mantissas, range ±65504) around the extractor. A
    model that declares a ``dtype`` sample option (a diffusers pipeline) also samples in the
    run's ``fp16`` or ``bf16``.

A reduced mode reports what it costs **on the run's own data**: the first
:data:`PROBE_IMAGES` images each extractor sees are also extracted in float32, and the report
gives, per extractor output, the largest deviation relative to the largest float32 value
(``max_rel = max |y − y₃₂| / max |y₃₂|``) and the relative root-mean-square deviation
(``rms_rel = ‖y − y₃₂‖ / ‖y₃₂‖``). Do not publish numbers of a reduced mode as float32 numbers:
FID sums thousands of such deviations.

``--compile`` runs each extractor through ``torch.compile`` (CUDA graphs on a GPU, mode
``reduce-overhead``). The compiled graph is used for a batch shape only after its outputs on the
first batch of that shape agreed with the eager extractor within :data:`COMPILE_TOLERANCE` of
the largest eager value; otherwise — or if compiling fails — the extractor runs eagerly, with
a warning saying why. Compiling costs seconds to minutes once per shape: it pays on large runs.

References
----------
.. [1] NVIDIA, "TensorFloat-32 in the A100 GPU Accelerates AI Training, HPC up to 20x" (2020).
.. [2] D. Kalamkar et al., "A Study of BFLOAT16 for Deep Learning Training", arXiv:1905.12322
   (2019).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import torch

from geneval.distributed import DistContext, max_floats, sum_ints, sum_tensor
from geneval.errors import InputError, warn
from geneval.run.config import PRECISIONS

#: Images per extractor extracted twice (reduced and float32) to measure the deviation.
PROBE_IMAGES = 256
#: Largest deviation of a compiled extractor from the eager one, relative to the largest
#: eager value, for the compiled graph to be used.
COMPILE_TOLERANCE = 1e-5


def check_precision(mode: str, device: torch.device) -> str:
    """``mode`` if it is known and possible on ``device``, else an :class:`InputError`."""
    if mode not in PRECISIONS:
        raise InputError(f"--precision {mode}: choose from {', '.join(PRECISIONS)}")
    if mode in ("tf32", "fp16") and torch.device(device).type != "cuda":
        raise InputError(
            f"--precision {mode} needs a CUDA device (a GPU tensor-core format); use bf16 or "
            "the default fp32"
        )
    return mode


def _tf32_switches() -> list[tuple[Any, str, Any]]:
    """(object, attribute, value allowing TF32) for convolutions and matrix products, in the
    API this torch offers."""
    cudnn_conv = getattr(torch.backends.cudnn, "conv", None)
    matmul = torch.backends.cuda.matmul
    if cudnn_conv is not None and hasattr(cudnn_conv, "fp32_precision"):
        return [(cudnn_conv, "fp32_precision", "tf32"), (matmul, "fp32_precision", "tf32")]
    return [(torch.backends.cudnn, "allow_tf32", True), (matmul, "allow_tf32", True)]


@contextlib.contextmanager
def precision_mode(mode: str, device: torch.device) -> Iterator[None]:
    """Run the block in ``mode`` on ``device`` (see the module docstring); the global TF32
    switches are restored afterwards, so a training loop around the evaluation keeps its own."""
    saved = []
    if torch.device(device).type == "cuda":
        for obj, attr, allow in _tf32_switches():
            saved.append((obj, attr, getattr(obj, attr)))
            deny = "ieee" if isinstance(allow, str) else False
            setattr(obj, attr, allow if mode == "tf32" else deny)
    try:
        if mode in ("bf16", "fp16"):
            dtype = torch.bfloat16 if mode == "bf16" else torch.float16
            with torch.autocast(torch.device(device).type, dtype=dtype):
                yield
        else:
            yield
    finally:
        for obj, attr, value in saved:
            setattr(obj, attr, value)


class _Deviation:
    """Running deviation of one output: max |Δ|, max |y₃₂|, Σ Δ², Σ y₃₂²."""

    def __init__(self) -> None:
        self.max_abs = 0.0
        self.max_ref = 0.0
        self.sq_diff = 0.0
        self.sq_ref = 0.0

    def update(self, reduced: torch.Tensor, reference: torch.Tensor) -> None:
        diff = reduced.double() - reference.double()
        self.max_abs = max(self.max_abs, float(diff.abs().max()) if diff.numel() else 0.0)
        self.max_ref = max(self.max_ref, float(reference.abs().max()) if diff.numel() else 0.0)
        self.sq_diff += float(diff.square().sum())
        self.sq_ref += float(reference.double().square().sum())


def _relative_deviation(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> float:
    """max over outputs of max |a − b| / max |b|."""
    worst = 0.0
    for key, ref in b.items():
        ref64, got = ref.double(), a[key].double()
        scale = float(ref64.abs().max()) if ref64.numel() else 0.0
        diff = float((got - ref64).abs().max()) if ref64.numel() else 0.0
        worst = max(worst, diff / scale if scale > 0 else diff)
    return worst


class CompiledExtractor:
    """``torch.compile`` of a loaded extractor's call, trusted per input shape only after it
    matched the eager call within :data:`COMPILE_TOLERANCE` (see the module docstring)."""

    def __init__(self, inner: Any, device: torch.device) -> None:
        self.inner = inner
        self.device = torch.device(device)
        self.trusted: dict[tuple[int, ...], bool] = {}
        self.failure: str | None = None
        mode = "reduce-overhead" if self.device.type == "cuda" else None
        self._compiled = torch.compile(inner.__call__, mode=mode, dynamic=False)

    def _give_up(self, why: str) -> None:
        self.failure = why
        warn(f"--compile: extractor {self.inner.name} runs eagerly: {why}")

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.failure is not None:
            return self.inner(images)
        shape = tuple(images.shape)
        trusted = self.trusted.get(shape)
        if trusted is None:
            eager = self.inner(images)
            try:
                compiled = self._compiled(images)
            except Exception as exc:  # noqa: BLE001 - any compiler failure means eager
                self._give_up(f"compiling failed ({type(exc).__name__}: {exc})".splitlines()[0])
                return eager
            deviation = _relative_deviation(compiled, eager)
            self.trusted[shape] = deviation <= COMPILE_TOLERANCE
            if not self.trusted[shape]:
                warn(
                    f"--compile: extractor {self.inner.name} compiled for images {shape} "
                    f"deviates from eager float32 by {deviation:.2e} of its largest value "
                    f"(over {COMPILE_TOLERANCE:g}): that shape runs eagerly"
                )
            return eager
        if not trusted:
            return self.inner(images)
        out = self._compiled(images)
        # CUDA graphs reuse their output buffers on the next call: hand out copies
        return {k: v.clone() for k, v in out.items()} if self.device.type == "cuda" else out


class PrecisionExtractor:
    """A loaded extractor run in a precision mode (and compiled, if asked), measuring its
    deviation from float32 on the first :data:`PROBE_IMAGES` images. Attributes are those of
    the wrapped extractor."""

    def __init__(
        self, inner: Any, mode: str, device: torch.device, *, compile: bool = False
    ) -> None:
        self.inner = inner
        self.precision = mode
        self.mode_device = torch.device(getattr(inner, "device", device))
        self.probed = 0
        self._deviation: dict[str, _Deviation] = {}
        self._run = CompiledExtractor(inner, self.mode_device) if compile else inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def outputs(self) -> Mapping[str, int]:
        return self.inner.outputs

    @property
    def convention(self) -> str:
        return self.inner.convention

    @property
    def weights_sha256(self) -> str:
        return self.inner.weights_sha256

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        with precision_mode(self.precision, self.mode_device):
            out = self._run(images)
        out = {k: v.float() for k, v in out.items()}
        if self.precision != "fp32" and self.probed < PROBE_IMAGES:
            take = min(int(images.shape[0]), PROBE_IMAGES - self.probed)
            with precision_mode("fp32", self.mode_device):
                reference = self.inner(images[:take])
            for output, value in reference.items():
                self._deviation.setdefault(output, _Deviation()).update(
                    out[output][:take], value.float()
                )
            self.probed += take
        return out

    def deviation(self, ctx: DistContext) -> dict[str, Any]:
        """``{"probe_images": n, "outputs": {output: {"max_rel", "rms_rel"}}}`` over every
        rank's probe (collective when ``ctx`` is distributed)."""
        names = sorted(self.inner.outputs)  # the same list on every rank, probed or not
        devs = [self._deviation.get(n, _Deviation()) for n in names]
        maxima = max_floats(ctx, [v for d in devs for v in (d.max_abs, d.max_ref)])
        sums = sum_tensor(
            ctx,
            torch.tensor([v for d in devs for v in (d.sq_diff, d.sq_ref)], dtype=torch.float64),
        ).tolist()
        probed = sum_ints(ctx, [self.probed])[0]
        outputs = {}
        for i, name in enumerate(names):
            max_abs, max_ref = maxima[2 * i], maxima[2 * i + 1]
            sq_diff, sq_ref = sums[2 * i], sums[2 * i + 1]
            outputs[name] = {
                "max_rel": max_abs / max_ref if max_ref > 0 else 0.0,
                "rms_rel": (sq_diff / sq_ref) ** 0.5 if sq_ref > 0 else 0.0,
            }
        return {"probe_images": probed, "outputs": outputs}


def with_precision(
    loaded: Any, mode: str, device: torch.device, *, compile: bool = False
) -> PrecisionExtractor:
    """``loaded`` run in ``mode``, compiled if ``compile`` (see :class:`PrecisionExtractor`)."""
    return PrecisionExtractor(loaded, check_precision(mode, device), device, compile=compile)
