"""Resize conventions of the extractors: ``tf1``, ``pytorch-fid`` and ``clean``.

See ``docs/contracts.md`` §7.

FID numbers depend on how images are brought to the network's 299×299 input. Each
convention reproduces one reference tool, batched on the images' device:

``tf1`` (default)
    torch-fidelity's emulation of TensorFlow 1.x ``tf.image.resize_bilinear``
    (``align_corners=False``, no half-pixel centres) on 8-bit pixel values, followed by
    ``(x − 128) / 128`` as in the original TF graph. Float images are first quantised to
    8-bit levels, because torch-fidelity only accepts ``uint8`` images.
``pytorch-fid``
    pytorch-fid's ``F.interpolate(mode="bilinear", align_corners=False)`` without
    antialiasing on the ``[0, 1]`` images as given, followed by ``2x − 1``.
``clean``
    clean-fid's PIL bicubic resize of each channel as a float32 (``"F"`` mode) image of
    8-bit values, clipped to ``[0, 255]``, followed by ``(x − 128) / 128``.

The allowed names live in :data:`RESIZE_CONVENTIONS` only; :func:`check_convention` is the
one place that validates them.

References
----------
.. [1] A. Obukhov et al., torch-fidelity, ``interpolate_compat_tensorflow.py`` (2020).
.. [2] M. Seitzer, pytorch-fid, ``inception.py`` (2020).
.. [3] G. Parmar, R. Zhang, J.-Y. Zhu, "On Aliased Resizing and Surprising Subtleties in
   GAN Evaluation", CVPR 2022 (clean-fid).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from geneval.plugin import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

#: Every accepted ``--resize`` value; the first is the default.
RESIZE_CONVENTIONS: tuple[str, ...] = ("tf1", "pytorch-fid", "clean")
DEFAULT_RESIZE = RESIZE_CONVENTIONS[0]
#: The FID Inception network's input side.
INCEPTION_SIZE = 299


def check_convention(convention: str | None) -> str:
    """Return ``convention`` (``None`` → the default), or raise :class:`InputError`."""
    if convention is None:
        return DEFAULT_RESIZE
    if convention not in RESIZE_CONVENTIONS:
        raise InputError(
            f"--resize: unknown convention {convention!r} "
            f"(choose from {', '.join(RESIZE_CONVENTIONS)})"
        )
    return convention


def quantize_to_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """Map float images in ``[0, 1]`` to the nearest 8-bit level, ``round(255 x)``, as floats.

    Images already on the 8-bit grid (``k / 255``, as read from PNG files) come back as
    exactly ``k``. The result is float32 in ``[0, 255]``.
    """
    import torch

    return (images.to(torch.float32) * 255.0).round_().clamp_(0.0, 255.0)


def resize_bilinear_tf1(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """TensorFlow 1.x bilinear resize (``align_corners=False``), as torch-fidelity emulates it.

    Output pixel ``i`` samples the input at ``s = i · in/out`` (no half-pixel offset), with
    neighbours ``⌊s⌋`` and ``min(⌊s⌋ + 1, in − 1)`` and weight ``s − ⌊s⌋``; rows first
    interpolated along the width, then along the height. The arithmetic (float32 positions,
    lerp as ``a + (b − a) t``) follows torch-fidelity's ``resample_manually`` step by step,
    so results agree to the last bit on CPU.

    Parameters
    ----------
    images
        Float tensor (N, C, H, W) on any scale.
    size
        Output ``(height, width)``.

    Returns
    -------
    torch.Tensor
        (N, C, height, width) float32 with channels-last strides, as the network reads it.
    """
    import torch

    out_h, out_w = size
    in_h, in_w = images.shape[-2:]
    x = images.to(torch.float32)

    def axis(n_in: int, n_out: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scale = torch.tensor(n_in / n_out, dtype=torch.float32)
        pos = torch.arange(n_out, dtype=torch.float32, device=x.device) * scale.to(x.device)
        lo = pos.long()
        hi = (lo + 1).clamp_max(n_in - 1)
        return lo, hi, pos - lo.to(torch.float32)

    x_lo, x_hi, dx = axis(in_w, out_w)
    y_lo, y_hi, dy = axis(in_h, out_h)
    # Channels last (N, H, W, C): the output is then the layout the network convolves, and
    # the permuted view below costs no copy.
    nhwc = x.permute(0, 2, 3, 1)
    # Along the width on the input's rows only (H_in × W_out), then gather the two rows of
    # each output row: the same operations on the same values as interpolating every output
    # row from its four corner pixels, so bit for bit the same result.
    left, right = nhwc.index_select(2, x_lo), nhwc.index_select(2, x_hi)
    rows = left.add_(right.sub_(left).mul_(dx.view(1, 1, out_w, 1)))
    upper, lower = rows.index_select(1, y_lo), rows.index_select(1, y_hi)
    out = lower.sub_(upper).mul_(dy.view(1, out_h, 1, 1)).add_(upper)
    return out.permute(0, 3, 1, 2)


def resize_bilinear_torch(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``F.interpolate(bilinear, align_corners=False)`` without antialiasing (pytorch-fid)."""
    import torch
    import torch.nn.functional as F

    return F.interpolate(
        images.to(torch.float32), size=size, mode="bilinear", align_corners=False, antialias=False
    )


def _pil_bicubic(x: float) -> float:
    """PIL's bicubic kernel (Keys, a = −0.5)."""
    a = -0.5
    x = abs(x)
    if x < 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return (((x - 5.0) * x + 8.0) * x - 4.0) * a
    return 0.0


@lru_cache(maxsize=32)
def pil_bicubic_weights(n_in: int, n_out: int) -> np.ndarray:
    """The (n_out, n_in) float64 matrix of PIL's bicubic resampling along one axis.

    As Pillow's ``precompute_coeffs``: output ``i`` is centred at ``c = (i + ½)·s`` with
    ``s = n_in / n_out``; when downscaling the kernel is stretched by ``s`` (antialiasing);
    taps ``j`` in ``[⌊c − r + ½⌋, ⌊c + r + ½⌋)`` with ``r = 2·max(s, 1)`` get weight
    ``k((j − c + ½)/max(s, 1))``, normalised to sum to one, clipped at the borders.
    """
    import numpy as np

    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support = 2.0 * filterscale
    weights = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        lo = max(int(center - support + 0.5), 0)
        hi = min(int(center + support + 0.5), n_in)
        inv = 1.0 / filterscale
        taps = np.array([_pil_bicubic((j - center + 0.5) * inv) for j in range(lo, hi)])
        total = taps.sum()
        weights[i, lo:hi] = taps / total if total != 0.0 else taps
    return weights


def resize_bicubic_pil(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's bicubic resize of float (``"F"`` mode) images, batched as two matrix products.

    Pillow resamples horizontally first, stores the intermediate image as float32, then
    resamples vertically, accumulating each output in double precision. Here each pass is a
    float64 product with :func:`pil_bicubic_weights`, the intermediate rounded to float32,
    which reproduces Pillow to float32 rounding. No clipping is applied.

    Parameters
    ----------
    images
        Float tensor (N, C, H, W) on any scale.
    size
        Output ``(height, width)``.
    """
    import torch

    out_h, out_w = size
    in_h, in_w = images.shape[-2:]
    x = images.to(torch.float64)
    if out_w != in_w:
        w_x = torch.from_numpy(pil_bicubic_weights(in_w, out_w)).to(x.device)
        x = (x @ w_x.T).to(torch.float32).to(torch.float64)
    if out_h != in_h:
        w_y = torch.from_numpy(pil_bicubic_weights(in_h, out_h)).to(x.device)
        x = w_y @ x
    return x.to(torch.float32)


#: Fixed-point precision of Pillow's 8-bit resampling (``PRECISION_BITS = 32 − 8 − 2``).
PIL_PRECISION_BITS = 22


@lru_cache(maxsize=32)
def pil_bicubic_weights_8bit(n_in: int, n_out: int) -> np.ndarray:
    """:func:`pil_bicubic_weights` as Pillow's 8-bit path uses them: integers, scaled by 2²².

    Each weight ``w`` becomes ``(int)(w · 2²² ± 0.5)`` (rounded half away from zero), as
    Pillow's ``normalize_coeffs_8bpc``; returned as float64 holding those integers.
    """
    import numpy as np

    scaled = pil_bicubic_weights(n_in, n_out) * float(1 << PIL_PRECISION_BITS)
    return np.trunc(scaled + np.where(scaled < 0, -0.5, 0.5))


def _pil_8bit_pass(x: torch.Tensor, weights: np.ndarray) -> torch.Tensor:
    """One Pillow 8-bit resampling pass along the last axis of ``x`` (float64 8-bit levels).

    ``clip8((2²¹ + Σ v·k) >> 22)``: every product and partial sum is an integer below 2⁵³, so
    the float64 matrix product is exact whatever its summation order.
    """
    import torch

    k = torch.from_numpy(weights).to(x.device)
    total = x @ k.T + float(1 << (PIL_PRECISION_BITS - 1))
    return torch.floor(total / float(1 << PIL_PRECISION_BITS)).clamp_(0.0, 255.0)


def resize_bicubic_pil_uint8(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """PIL's bicubic resize of 8-bit images (``Image.resize(size, BICUBIC)`` on ``uint8``).

    Pillow resamples 8-bit images in fixed point: weights as in
    :func:`pil_bicubic_weights_8bit`, each pass rounded to an integer level and clipped to
    ``[0, 255]`` (so the intermediate image is 8-bit too), the horizontal pass first. Batched
    as two exact float64 matrix products, the result equals Pillow's bit for bit.

    Pillow up to 12 always starts horizontally (bar images over 100 times taller than wide);
    Pillow 13 starts vertically for some sizes where the height shrinks more than the width,
    which moves such non-square images by a level or so (square images are unaffected). The
    horizontal-first order kept here is the one published dgm-eval numbers were made with.

    Parameters
    ----------
    images
        Float tensor (N, C, H, W) of integer levels in ``[0, 255]`` (see
        :func:`quantize_to_uint8_levels`).
    size
        Output ``(height, width)``.

    Returns
    -------
    torch.Tensor
        Float32 (N, C, height, width) of integer levels in ``[0, 255]``.
    """
    import torch

    out_h, out_w = size
    in_h, in_w = images.shape[-2:]
    x = images.to(torch.float64)

    if out_w != in_w:
        x = _pil_8bit_pass(x, pil_bicubic_weights_8bit(in_w, out_w))
    if out_h != in_h:
        x = _pil_8bit_pass(x.transpose(-1, -2), pil_bicubic_weights_8bit(in_h, out_h))
        x = x.transpose(-1, -2)
    return x.to(torch.float32)


def resize_for_inception(
    images: torch.Tensor, convention: str, size: int = INCEPTION_SIZE
) -> torch.Tensor:
    """The FID Inception network's input under ``convention``: (N, C, size, size) in ``[-1, 1]``.

    Parameters
    ----------
    images
        Float images in ``[0, 1]``, (N, C, H, W), any H and W, on the device to work on.
    convention
        One of :data:`RESIZE_CONVENTIONS` (see the module docstring for each one's steps).
    size
        The output side, 299 for Inception.
    """
    convention = check_convention(convention)
    if images.ndim != 4:
        raise InputError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
    out = (size, size)
    if convention == "tf1":
        resized = resize_bilinear_tf1(quantize_to_uint8_levels(images), out)
        return resized.sub_(128.0).div_(128.0)
    if convention == "pytorch-fid":
        return 2.0 * resize_bilinear_torch(images, out) - 1.0
    resized = resize_bicubic_pil(quantize_to_uint8_levels(images), out).clamp_(0.0, 255.0)
    return (resized - 128.0) / 128.0


__all__ = [
    "DEFAULT_RESIZE",
    "INCEPTION_SIZE",
    "RESIZE_CONVENTIONS",
    "check_convention",
    "pil_bicubic_weights",
    "pil_bicubic_weights_8bit",
    "quantize_to_uint8_levels",
    "resize_bicubic_pil",
    "resize_bicubic_pil_uint8",
    "resize_bilinear_tf1",
    "resize_bilinear_torch",
    "resize_for_inception",
]
