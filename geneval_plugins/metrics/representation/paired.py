"""Shared by the paired reconstruction metrics (``psnr``, ``ssim``, ``ms_ssim``).

Reading the pairs the runner formed (:class:`geneval.api.PairedImages`), the memory-bounded
chunks they are processed in, and the summary every paired metric reports.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Option, PairedImages, progress_bar

if TYPE_CHECKING:
    import torch

#: Image elements per chunk: on a CPU small enough that a chunk and the few float64 maps
#: derived from it stay in cache (the filters are memory-bound), on a GPU large enough to keep
#: it busy.
CPU_CHUNK_ELEMENTS = 96 * 1024
GPU_CHUNK_ELEMENTS = 4 * 1024 * 1024

#: Fields every paired metric reports besides ``value`` and its options (``data_range`` …).
SUMMARY_FIELDS: dict[str, str] = {
    "std": "population standard deviation of the per-image values",
    "n": "number of pairs",
    "per_image": "the value of each pair, in pair order",
    "names": "relative paths of the pairs when paired by name (folders), else null",
}


def read_pairs(inputs: MetricInputs, metric: str) -> PairedImages:
    """The (reconstruction, original) pairs, checked: the same shape (n ≥ 1, C, H, W)."""
    pairs = inputs.reconstructions()
    recon, orig = pairs.reconstructions, pairs.originals
    if recon.shape != orig.shape:
        raise InputError(
            f"{metric}: reconstructions {tuple(recon.shape)} and originals {tuple(orig.shape)} "
            "differ in shape"
        )
    if recon.ndim != 4 or recon.shape[0] == 0:
        raise InputError(
            f"{metric}: expected pairs of (n ≥ 1, C, H, W) images, got {tuple(recon.shape)}"
        )
    return pairs


def range_warnings(low: float, high: float, data_range: float) -> list[str]:
    """A warning when the pixel values ``[low, high]`` exceed ``[0, data_range]``."""
    if low < 0.0 or high > data_range:
        return [
            f"pixel values span [{low:.4g}, {high:.4g}], outside [0, data_range={data_range:g}]: "
            "set data_range to the images' range"
        ]
    return []


def chunk_size(shape: torch.Size, device: torch.device) -> int:
    """Images of ``shape`` (n, C, H, W) per chunk on ``device`` (at least one)."""
    budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else GPU_CHUNK_ELEMENTS
    return max(1, budget // math.prod(shape[1:]))


@dataclass
class PerImage:
    """Per-image values (n,) float64 on the CPU and the range of every pixel of the pairs."""

    values: torch.Tensor
    low: float
    high: float


def per_image_values(
    pairs: PairedImages,
    fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    *,
    device: torch.device,
    metric: str,
) -> PerImage:
    """``fn(reconstructions, originals)`` over chunks moved to ``device`` as float64.

    Each chunk's minimum and maximum are tracked on the way (they also catch NaN and ±inf, an
    :class:`InputError`), so the images are read once.
    """
    import torch

    recon, orig = pairs.reconstructions, pairs.originals
    step = chunk_size(recon.shape, device)
    out, lows, highs = [], [], []
    with progress_bar(total=recon.shape[0], desc=metric, unit="img") as bar:
        for start in range(0, recon.shape[0], step):
            x = recon[start : start + step].to(device=device, dtype=torch.float64)
            y = orig[start : start + step].to(device=device, dtype=torch.float64)
            for images in (x, y):
                low, high = torch.aminmax(images)
                lows.append(low)
                highs.append(high)
            out.append(fn(x, y).cpu())
            bar.update(x.shape[0])
    low, high = float(torch.stack(lows).min()), float(torch.stack(highs).max())
    if not (math.isfinite(low) and math.isfinite(high)):
        raise InputError(f"{metric}: the images hold non-finite values (NaN or inf)")
    return PerImage(torch.cat(out), low, high)


def summary(per: PerImage, pairs: PairedImages, data_range: float) -> dict[str, Any]:
    """``value`` (mean), ``std`` (population), ``n``, ``per_image``, ``names``, ``data_range``,
    and ``warnings`` when the pixels exceed ``[0, data_range]``."""
    v = per.values.double()
    result: dict[str, Any] = {
        "value": float(v.mean()),
        "std": float(v.std(unbiased=False)) if v.numel() > 1 else 0.0,
        "n": int(v.numel()),
        "per_image": [float(x) for x in v],
        "names": list(pairs.names) if pairs.names is not None else None,
        "data_range": data_range,
    }
    warnings = range_warnings(per.low, per.high, data_range)
    if warnings:
        result["warnings"] = warnings
    return result


#: The ``data_range`` option every paired metric declares.
DATA_RANGE = Option(
    1.0, "value range of the images (1.0 for images in [0, 1])", low=0.0, low_exclusive=True
)
