"""Metric ``ssim``: structural similarity (Wang et al. 2004) of reconstructions and originals.

The functional pieces (:func:`ssim_and_contrast`, :func:`window_1d`) are shared with
``ms_ssim``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from geneval.api import MetricInputs, Need
from geneval.errors import InputError
from geneval.hookspecs import hookimpl
from geneval.options import Option
from geneval_plugins.metrics.representation.paired import (
    DATA_RANGE,
    SUMMARY_FIELDS,
    per_image_values,
    range_warnings,
    read_pairs,
    summary,
)

#: Radius of the Gaussian window in σ, as scikit-image (11 taps for σ = 1.5).
TRUNCATE = 3.5


def default_win_size(gaussian_weights: bool, sigma: float) -> int:
    """scikit-image's window size: ``2·⌊3.5σ + 0.5⌋ + 1`` (11 for σ = 1.5), or 7 when uniform."""
    return 2 * int(TRUNCATE * sigma + 0.5) + 1 if gaussian_weights else 7


def window_1d(
    win_size: int, *, gaussian_weights: bool, sigma: float, device: torch.device
) -> torch.Tensor:
    """The normalised 1-D window (``win_size``,) float64: a sampled Gaussian or a box.

    The 2-D window is its outer product with itself (both are separable).
    """
    if not gaussian_weights:
        return torch.full((win_size,), 1.0 / win_size, dtype=torch.float64, device=device)
    coords = torch.arange(win_size, dtype=torch.float64, device=device) - (win_size // 2)
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def _correlate(x: torch.Tensor, taps: list[float], dim: int) -> torch.Tensor:
    """``Σ_j taps[j]·x[i + j]`` along ``dim`` for every full window: one multiply-add per tap."""
    size = x.shape[dim] - len(taps) + 1
    out = x.narrow(dim, 0, size) * taps[0]
    for j in range(1, len(taps)):
        out.add_(x.narrow(dim, j, size), alpha=taps[j])
    return out


def filter_valid(planes: torch.Tensor, window: torch.Tensor) -> torch.Tensor:
    """Separable filtering of (..., H, W) by the 2-D window ``window ⊗ window``, keeping only the
    positions where the window lies wholly inside (output (..., H − k + 1, W − k + 1)).

    Shifted multiply-adds (a loop over the k taps, vectorised over pixels and images) run
    several times faster than a float64 ``conv2d`` on a CPU.
    """
    taps = window.tolist()
    return _correlate(_correlate(planes, taps, -1), taps, -2)


def ssim_and_contrast(
    x: torch.Tensor,
    y: torch.Tensor,
    window: torch.Tensor,
    *,
    data_range: float,
    k1: float = 0.01,
    k2: float = 0.03,
    cov_norm: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean SSIM and mean contrast–structure term per image and channel, each (n, C) float64.

    With local weighted means μ, variances σ² and covariance σ_xy (times ``cov_norm``),
    ``SSIM = (2μxμy + C1)(2σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))`` and
    ``cs = (2σxy + C2) / (σx² + σy² + C2)``, with ``C1 = (K1·R)²``, ``C2 = (K2·R)²``, averaged
    over the positions where the window lies wholly inside the image (Wang et al. 2004, eq. 13
    with α = β = γ = 1; scikit-image's crop of the window radius).
    """
    n, c, h, w = x.shape
    planes = torch.stack([x, y, x * x, y * y, x * y])
    mu_x, mu_y, xx, yy, xy = filter_valid(planes, window).reshape(5, n, c, -1).unbind(0)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    mu_xy = mu_x * mu_y
    mu_xx, mu_yy = mu_x * mu_x, mu_y * mu_y
    var_x = cov_norm * (xx - mu_xx)
    var_y = cov_norm * (yy - mu_yy)
    cov_xy = cov_norm * (xy - mu_xy)
    cs = (2.0 * cov_xy + c2) / (var_x + var_y + c2)
    luminance = (2.0 * mu_xy + c1) / (mu_xx + mu_yy + c1)
    return (luminance * cs).mean(dim=2), cs.mean(dim=2)


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    gaussian_weights: bool = True,
    sigma: float = 1.5,
    win_size: int | None = None,
    k1: float = 0.01,
    k2: float = 0.03,
    sample_covariance: bool = False,
) -> torch.Tensor:
    """Per-image SSIM of image batches ``x``, ``y`` (n, C, H, W), averaged over channels.

    Defaults follow Wang et al. (2004): an 11×11 Gaussian window with σ = 1.5, K1 = 0.01,
    K2 = 0.03 and population (co)variances; this equals
    ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=R, channel_axis=-1)``. scikit-image's own defaults
    are ``gaussian_weights=False, sample_covariance=True`` (7×7 box, covariances × N/(N−1)).
    The computation is float64 on the device of ``x``.

    ``win_size=None`` takes scikit-image's size (:func:`default_win_size`). A ``win_size`` given
    with Gaussian weights truncates the Gaussian to that many taps (pytorch-msssim's
    convention); scikit-image instead keeps its 3.5σ filter and only changes the crop.

    SSIM compares local luminance, contrast and structure; it is insensitive to small uniform
    shifts of brightness and is not defined for images smaller than the window.

    References
    ----------
    .. [1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment:
       from error visibility to structural similarity", IEEE Trans. Image Processing 13(4),
       2004.
    """
    size = default_win_size(gaussian_weights, sigma) if win_size is None else win_size
    window = window_1d(size, gaussian_weights=gaussian_weights, sigma=sigma, device=x.device)
    cov_norm = size * size / (size * size - 1.0) if sample_covariance else 1.0
    mean_ssim, _ = ssim_and_contrast(
        x.double(), y.double(), window, data_range=data_range, k1=k1, k2=k2, cov_norm=cov_norm
    )
    return mean_ssim.mean(dim=1)


def check_window(metric: str, shape: torch.Size, win_size: int) -> None:
    """An :class:`InputError` when ``win_size`` is even or exceeds the images' smaller side."""
    if win_size % 2 == 0:
        raise InputError(f"--opt {metric}.win_size={win_size}: the window size must be odd")
    h, w = shape[-2:]
    if min(h, w) < win_size:
        largest = min(h, w) if min(h, w) % 2 else min(h, w) - 1
        raise InputError(
            f"{metric}: images are {h}×{w}, smaller than the {win_size}×{win_size} window; "
            f"set --opt {metric}.win_size to an odd size ≤ {largest}"
        )


class StructuralSimilarity:
    """``ssim``: mean SSIM over the pairs (Wang et al. 2004 settings by default)."""

    name = "ssim"
    higher_is_better = True
    interpretation = (
        "structural similarity of reconstructions to originals, 1 when identical "
        "(local luminance, contrast and structure; Wang et al. 2004)"
    )
    needs = (Need("reconstructions", "samples"),)
    options: Mapping[str, Option] = {
        "data_range": DATA_RANGE,
        "gaussian_weights": Option(
            True, "Gaussian window (Wang et al. 2004); false: a uniform box (scikit-image default)"
        ),
        "sigma": Option(1.5, "σ of the Gaussian window in pixels", low=0.0, low_exclusive=True),
        "win_size": Option(
            0, "window size in pixels, odd (0: 2·⌊3.5σ+0.5⌋+1 = 11 if Gaussian, else 7)", low=0
        ),
        "sample_covariance": Option(
            False, "sample (co)variances N/(N−1) (scikit-image default); false: population"
        ),
        "k1": Option(0.01, "K1 of C1 = (K1·R)²", low=0.0, low_exclusive=True),
        "k2": Option(0.03, "K2 of C2 = (K2·R)²", low=0.0, low_exclusive=True),
    }
    fields: Mapping[str, str] = {**SUMMARY_FIELDS, "win_size": "window size used in pixels"}
    uncertainty = "std"

    def compute(
        self,
        inputs: MetricInputs,
        *,
        data_range: float,
        gaussian_weights: bool,
        sigma: float,
        win_size: int,
        sample_covariance: bool,
        k1: float,
        k2: float,
    ) -> Mapping[str, Any]:
        """Mean, std and per-image SSIM; an :class:`InputError` for images below the window."""
        pairs = read_pairs(inputs, self.name)
        size = win_size or default_win_size(gaussian_weights, sigma)
        check_window(self.name, pairs.originals.shape, size)
        values = per_image_values(
            pairs,
            lambda x, y: ssim(
                x,
                y,
                data_range=data_range,
                gaussian_weights=gaussian_weights,
                sigma=sigma,
                win_size=size,
                k1=k1,
                k2=k2,
                sample_covariance=sample_covariance,
            ),
            device=inputs.device,
            desc=self.name,
        )
        result: dict[str, Any] = {**summary(values, pairs, data_range), "win_size": size}
        warnings = range_warnings(pairs, data_range)
        if warnings:
            result["warnings"] = warnings
        return result


@hookimpl
def geneval_register_metrics(register) -> None:
    register(StructuralSimilarity())
