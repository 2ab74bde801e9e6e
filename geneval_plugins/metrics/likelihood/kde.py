"""Metric ``kde``: the Parzen-window (Gaussian kernel density) log-likelihood of the reference
images under a density fitted to the samples (Breuleux et al. 2011; Goodfellow et al. 2014).

log p̂(x) = logmeanexp_i(−‖x − s_i‖² / 2σ²) − (D/2)·log(2πσ²), over the n samples s_i, with
the bandwidth σ chosen on validation images from a grid (σ ∈ logspace(−1, 0, 10) by default,
the protocol's grid) unless it is given. Theis et al. (2016) show that such estimates are far
from the true log-likelihood in high dimensions, even with 10⁷ samples: use the number to rank
models of one family on small images, never as a log-likelihood.

References
----------
.. [1] O. Breuleux, Y. Bengio, P. Vincent, "Quickly generating representative samples from an
   RBM-derived process", Neural Computation 23(8), 2011.
.. [2] I. Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, §5 (the protocol).
.. [3] L. Theis, A. van den Oord, M. Bethge, "A note on the evaluation of generative models",
   ICLR 2016, §3.2.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl, progress_bar
from geneval_plugins.metrics.likelihood.common import (
    LIKELIHOOD_FIELDS,
    check_images,
    summarize_log_likelihoods,
)

if TYPE_CHECKING:
    import torch

#: Upper bound on float64 elements of one block of squared distances (64 MiB).
_BLOCK_ELEMENTS = 8 * 1024 * 1024
#: Samples per block (the test images per block follow from :data:`_BLOCK_ELEMENTS`).
_SAMPLES_PER_BLOCK = 4096

#: The one-line warning every ``kde`` result carries (Theis et al. 2016).
HIGH_DIMENSION_WARNING = (
    "Parzen-window estimates are unreliable in high dimensions (Theis et al. 2016): D = {dims}"
)


def bandwidth_grid(low: float, high: float, points: int) -> list[float]:
    """σ values ``logspace(log10 low, log10 high, points)``; the protocol's is (0.1, 1, 10)."""
    import numpy as np

    if not 0 < low <= high:
        raise InputError(f"kde: the bandwidth grid needs 0 < grid_low <= grid_high ({low}, {high})")
    return [float(s) for s in np.logspace(math.log10(low), math.log10(high), points)]


def parzen_log_likelihoods(
    samples: torch.Tensor,
    test: torch.Tensor,
    bandwidths: Sequence[float],
    *,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Per-image Parzen-window log-density of ``test`` for each bandwidth, in float64.

    log p̂_σ(x) = log Σ_i exp(−‖x − s_i‖² / 2σ²) − log n − (D/2)·log(2πσ²)   [1, 2]

    The squared distances ‖x‖² + ‖s‖² − 2xᵀs are computed once per block in float64 and shared
    by every σ; each block's log-sum-exp is merged into a running one, so memory stays bounded
    for any n and image size: a block of at most 4096 samples × 2048 test images (64 MiB of
    float64 distances, and as much again for the kernel exponents) plus those images in float64.

    Parameters
    ----------
    samples
        The n kernel centres (n, ...), e.g. a model's samples; flattened to D values each.
    test
        The images to score (m, ...), same trailing shape.
    bandwidths
        Kernel standard deviations σ > 0.
    device
        Where to compute (default: the device of ``samples``).

    Returns
    -------
    torch.Tensor
        (len(bandwidths), m) float64 on ``device``: equal to scikit-learn's
        ``KernelDensity(kernel="gaussian", bandwidth=σ).fit(S).score_samples(T)`` when that
        sums every kernel (``leaf_size`` ≥ n; its default tree pruning can be off by many nats
        at small σ in high dimensions, scikit-learn issues #7492 and #25799).

    Notes
    -----
    Unreliable in high dimensions (Theis et al. 2016): the estimate converges very slowly
    with n and depends mostly on σ and the nearest samples.
    """
    import torch

    device = torch.device(device) if device is not None else samples.device
    sigmas = torch.tensor([float(s) for s in bandwidths], dtype=torch.float64, device=device)
    if sigmas.numel() == 0 or bool((sigmas <= 0).any()):
        raise InputError(f"kde: bandwidths must be positive, got {list(bandwidths)}")
    n, dims = samples.shape[0], math.prod(samples.shape[1:])
    if n == 0:
        raise InputError("kde: no samples")
    samples, test = samples.reshape(n, -1), test.reshape(test.shape[0], -1)
    if test.shape[1] != dims:
        raise InputError(f"kde: test images have {test.shape[1]} values, samples {dims}")
    per_block = min(n, _SAMPLES_PER_BLOCK)
    test_block = max(1, _BLOCK_ELEMENTS // per_block)
    scale = -0.5 / sigmas.pow(2)
    out = torch.empty(len(sigmas), test.shape[0], dtype=torch.float64, device=device)
    with progress_bar(total=test.shape[0], desc="kde", unit="img") as bar:
        for t0 in range(0, test.shape[0], test_block):
            x = test[t0 : t0 + test_block].to(device, torch.float64)
            x_sq = x.pow(2).sum(1, keepdim=True)
            running = torch.full(
                (len(sigmas), x.shape[0]), -math.inf, dtype=torch.float64, device=device
            )
            for s0 in range(0, n, per_block):
                s = samples[s0 : s0 + per_block].to(device, torch.float64)
                d2 = torch.addmm(x_sq, x, s.T, beta=1.0, alpha=-2.0)
                d2.add_(s.pow(2).sum(1)).clamp_(min=0.0)
                for j in range(len(sigmas)):
                    block_lse = torch.logsumexp(d2 * scale[j], dim=1)
                    running[j] = torch.logaddexp(running[j], block_lse)
            out[:, t0 : t0 + x.shape[0]] = running
            bar.update(x.shape[0])
    norm = math.log(n) + 0.5 * dims * torch.log(2 * math.pi * sigmas.pow(2))
    return out - norm[:, None]


def choose_bandwidth(
    samples: torch.Tensor,
    validation: torch.Tensor,
    grid: Sequence[float],
    *,
    device: torch.device | str | None = None,
) -> tuple[float, list[float]]:
    """The σ of ``grid`` that maximises the mean validation log-likelihood, and every score.

    score(σ) = (1/m) Σ_j log p̂_σ(v_j) over the m validation images (Goodfellow et al. 2014);
    ties go to the first grid point. Returns ``(σ, [score(σ) for σ in grid])``.
    """
    import torch

    scores = parzen_log_likelihoods(samples, validation, grid, device=device).mean(dim=1)
    best = int(torch.argmax(scores))
    return float(grid[best]), [float(v) for v in scores.cpu()]


class ParzenWindow:
    """``kde``: Gaussian Parzen-window log-likelihood of the reference under the samples."""

    name = "kde"
    higher_is_better = True
    interpretation = (
        "mean log-density (nats) of the reference images under a Gaussian kernel density of the "
        "samples; unreliable in high dimensions (Theis et al. 2016)"
    )
    needs = (Need("images", "samples"), Need("images", "reference"))
    options: Mapping[str, Option] = {
        "bandwidth": Option(0.0, "kernel σ; 0 = choose it on the validation images", low=0.0),
        "validation": Option(
            "",
            "images σ is chosen on (folder, array or DATASET:SPLIT); empty = the reference "
            "dataset's val split",
        ),
        "grid_low": Option(0.1, "smallest σ of the bandwidth grid", low=0.0, low_exclusive=True),
        "grid_high": Option(1.0, "largest σ of the bandwidth grid", low=0.0, low_exclusive=True),
        "grid_points": Option(10, "σ values of the grid, log-spaced", low=1),
    }
    fields: Mapping[str, str] = {
        **LIKELIHOOD_FIELDS,
        "bandwidth": "the kernel σ used",
        "validation_scores": "mean validation log-likelihood of each grid σ, when σ was chosen",
        "num_samples": "number of samples (kernel centres)",
    }
    uncertainty = "std_err"
    unit = "nats/image"

    def compute(
        self,
        inputs: MetricInputs,
        *,
        bandwidth: float,
        validation: str,
        grid_low: float,
        grid_high: float,
        grid_points: int,
    ) -> Mapping[str, Any]:
        """Mean Parzen log-likelihood of the reference, σ given or chosen on validation images."""
        samples = inputs.images("samples")
        if samples.ndim < 2 or samples.shape[0] == 0:
            raise InputError("kde: no samples")
        shape = tuple(samples.shape[1:])
        reference = inputs.images("reference")
        check_images(reference, shape=shape, what="reference images", metric="kde")
        scores = None
        warnings = []
        if bandwidth == 0:
            grid = bandwidth_grid(grid_low, grid_high, grid_points)
            held_out = inputs.other_images(
                validation, default_split="val", option=f"{self.name}.validation"
            ).images
            check_images(held_out, shape=shape, what="validation images", metric="kde")
            bandwidth, values = choose_bandwidth(samples, held_out, grid, device=inputs.device)
            scores = [
                {"bandwidth": s, "log_likelihood": v} for s, v in zip(grid, values, strict=True)
            ]
            if len(grid) > 1 and bandwidth in (grid[0], grid[-1]):
                end = "grid_low" if bandwidth == grid[0] else "grid_high"
                warnings.append(f"the chosen σ = {bandwidth:g} is at the end of the grid ({end})")
        per_image = parzen_log_likelihoods(samples, reference, [bandwidth], device=inputs.device)
        dims = math.prod(shape)
        return {
            **summarize_log_likelihoods(per_image[0], space="density", dims=dims),
            "bandwidth": bandwidth,
            "validation_scores": scores,
            "num_samples": int(samples.shape[0]),
            "warnings": [HIGH_DIMENSION_WARNING.format(dims=dims), *warnings],
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(ParzenWindow())
