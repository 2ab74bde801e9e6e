"""Metric ``ms_ssim``: multi-scale structural similarity (Wang et al. 2003)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.representation.paired import (
    DATA_RANGE,
    SUMMARY_FIELDS,
    per_image_values,
    read_pairs,
    summary,
)
from geneval_plugins.metrics.representation.ssim import ssim_and_contrast, window_taps

if TYPE_CHECKING:
    import torch

#: The 5-scale exponents of Wang et al. (2003), Section 3.2.
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def min_side(win_size: int, levels: int = len(MS_SSIM_WEIGHTS)) -> int:
    """The smaller image side must exceed this: ``(win_size − 1)·2^(levels − 1)`` (160)."""
    return (win_size - 1) * 2 ** (levels - 1)


def ms_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    sigma: float = 1.5,
    win_size: int = 11,
    k1: float = 0.01,
    k2: float = 0.03,
    weights: tuple[float, ...] = MS_SSIM_WEIGHTS,
) -> torch.Tensor:
    """Per-image MS-SSIM of image batches ``x``, ``y`` (n, C, H, W), float64.

    ``MS-SSIM = Π_{j<M} max(cs_j, 0)^{w_j} · max(SSIM_M, 0)^{w_M}`` per channel, averaged over
    channels: ``cs_j`` is the mean contrast–structure term at scale j (Gaussian window,
    population covariance), ``SSIM_M`` the mean SSIM at the coarsest scale M = 5, and each
    scale halves the image by 2×2 average pooling (zero-padded on odd sides) (Wang et al.
    2003, eq. 7). This is ``pytorch_msssim.ms_ssim(x, y, data_range=R, size_average=False)``.

    Needs a smaller side above :func:`min_side` (160 px for the 11×11 window) so that the
    window fits at the coarsest scale. Like SSIM it is insensitive to small brightness shifts.

    References
    ----------
    .. [1] Z. Wang, E. P. Simoncelli, A. C. Bovik, "Multiscale structural similarity for image
       quality assessment", 37th Asilomar Conference on Signals, Systems and Computers, 2003.
    """
    import torch
    import torch.nn.functional as F

    taps = window_taps(win_size, gaussian_weights=True, sigma=sigma)
    x, y = x.double(), y.double()
    terms = []
    for level in range(len(weights)):
        last = level == len(weights) - 1
        mean_ssim, mean_cs = ssim_and_contrast(
            x, y, taps, data_range=data_range, k1=k1, k2=k2, contrast=not last
        )
        if not last:
            assert mean_cs is not None
            terms.append(mean_cs.clamp_min(0.0))
            padding = [side % 2 for side in x.shape[2:]]
            x = F.avg_pool2d(x, kernel_size=2, padding=padding)
            y = F.avg_pool2d(y, kernel_size=2, padding=padding)
    terms.append(mean_ssim.clamp_min(0.0))
    exponents = torch.tensor(weights, dtype=torch.float64, device=x.device).view(-1, 1, 1)
    return torch.prod(torch.stack(terms) ** exponents, dim=0).mean(dim=1)


class MultiScaleStructuralSimilarity:
    """``ms_ssim``: mean MS-SSIM over the pairs (5 scales, Wang et al. 2003)."""

    name = "ms_ssim"
    higher_is_better = True
    interpretation = (
        "structural similarity of reconstructions to originals over 5 scales, 1 when identical "
        "(Wang et al. 2003)"
    )
    needs = (Need("reconstructions", "samples"),)
    options: Mapping[str, Option] = {
        "data_range": DATA_RANGE,
        "sigma": Option(1.5, "σ of the Gaussian window in pixels", low=0.0, low_exclusive=True),
        "win_size": Option(11, "Gaussian window size in pixels, odd", low=3),
        "k1": Option(0.01, "K1 of C1 = (K1·R)²", low=0.0, low_exclusive=True),
        "k2": Option(0.03, "K2 of C2 = (K2·R)²", low=0.0, low_exclusive=True),
    }
    fields: Mapping[str, str] = dict(SUMMARY_FIELDS)
    uncertainty = "std"

    def compute(
        self,
        inputs: MetricInputs,
        *,
        data_range: float,
        sigma: float,
        win_size: int,
        k1: float,
        k2: float,
    ) -> Mapping[str, Any]:
        """Mean, std and per-image MS-SSIM; an :class:`InputError` for too small images."""
        pairs = read_pairs(inputs, self.name)
        if win_size % 2 == 0:
            raise InputError(f"--opt ms_ssim.win_size={win_size}: the window size must be odd")
        h, w = pairs.originals.shape[-2:]
        minimum = min_side(win_size)
        if min(h, w) <= minimum:
            raise InputError(
                f"ms_ssim: images are {h}×{w}; MS-SSIM needs a smaller side above {minimum} px "
                f"(a {win_size}×{win_size} window at {len(MS_SSIM_WEIGHTS)} scales)"
            )
        values = per_image_values(
            pairs,
            lambda x, y: ms_ssim(
                x, y, data_range=data_range, sigma=sigma, win_size=win_size, k1=k1, k2=k2
            ),
            device=inputs.device,
            metric=self.name,
        )
        return summary(values, pairs, data_range)


@hookimpl
def geneval_register_metrics(register) -> None:
    register(MultiScaleStructuralSimilarity())
