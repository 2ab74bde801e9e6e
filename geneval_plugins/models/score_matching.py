"""Denoising score matching: a sampling-free objective for score and energy models.

Perturb data with Gaussian noise x̃ = x + σz, z ~ N(0, I). The score of the perturbation kernel is
∇ log q_σ(x̃ | x) = −z/σ, so matching it (Vincent 2011) trains s(x̃, σ) towards the score of the
perturbed density q_σ(x̃) = ∫ p(x) N(x̃; x, σ²I) dx. With the weighting λ(σ) = σ² of Song & Ermon
(2019, Eq. 6) the loss of one noise level is

    ℓ(σ) = ½ E_{x, z} ‖σ s(x + σz, σ) + z‖²,

which has the same scale at every level, and the multi-level loss averages ℓ(σ_i) over the
levels σ_1 > … > σ_L (one level drawn uniformly per sample, as in Song & Ermon, Algorithm 1's
training counterpart). The function is generic in ``score_fn`` so that the NCSN family and
energy-based models (``score_fn = −∇ₓE``) share it.

References
----------
Vincent, "A connection between score matching and denoising autoencoders", Neural Computation
23 (2011). Song & Ermon, "Generative modeling by estimating gradients of the data distribution",
NeurIPS 2019.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The range c(σ) of :func:`noise_condition` spans, as a timestep would.
CONDITION_RANGE = 999.0


def noise_condition(sigma: torch.Tensor, sigma_max: float, sigma_min: float) -> torch.Tensor:
    """c(σ) = 999 (log σ − log σ_L)/(log σ_1 − log σ_L): log σ mapped linearly so that the
    smallest level σ_L ↦ 0 and the largest σ_1 ↦ 999, the range of a diffusion timestep, for
    the sinusoidal embedding of noise-conditional networks (score or energy)."""
    span = math.log(sigma_max) - math.log(sigma_min)
    return (torch.log(sigma) - math.log(sigma_min)) * (CONDITION_RANGE / span)


def denoising_score_matching_loss(
    score_fn: ScoreFn,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    generator: torch.Generator,
    *,
    reduce: bool = True,
) -> torch.Tensor:
    """Multi-level denoising score matching loss with λ(σ) = σ².

    For each sample a level σ is drawn uniformly from ``sigmas`` and a noise z ~ N(0, I); the
    per-sample loss is ½ Σ_j (σ s(x + σz, σ) + z)_j², summed over every non-batch dimension.

    Parameters
    ----------
    score_fn
        ``score_fn(x_noisy, sigma)`` with ``sigma`` of shape (N,) returns the score estimate,
        shaped like ``x_noisy``.
    x
        Clean data, shape (N, ...).
    sigmas
        The noise levels, shape (L,).
    generator
        Source of every random draw (levels and noise), for reproducibility.
    reduce
        ``True``: the batch mean (a scalar); ``False``: the (N,) per-sample losses.

    Returns
    -------
    torch.Tensor
        The loss; its expectation is (1/L) Σ_i ℓ(σ_i).

    Notes
    -----
    For the exact score of Gaussian data N(μ, Σ), the expected loss of one level is
    ½ tr(Σ(Σ + σ²I)⁻¹) — the floor no estimator can go below (Song & Ermon 2019, Eq. 5–6).

    References
    ----------
    Song & Ermon (2019), Eq. 5–6; Vincent (2011).
    """
    if sigmas.ndim != 1 or sigmas.numel() == 0:
        raise ValueError(f"sigmas must be a non-empty 1-D tensor, got shape {tuple(sigmas.shape)}")
    n = x.shape[0]
    levels = torch.randint(sigmas.numel(), (n,), generator=generator, device=generator.device).to(
        sigmas.device
    )
    sigma = sigmas[levels].to(device=x.device, dtype=x.dtype)
    z = torch.randn(x.shape, generator=generator, device=generator.device, dtype=x.dtype).to(
        x.device
    )
    sigma_b = sigma.reshape(n, *([1] * (x.ndim - 1)))
    residual = sigma_b * score_fn(x + sigma_b * z, sigma) + z
    per_sample = 0.5 * residual.pow(2).flatten(1).sum(dim=1)
    return per_sample.mean() if reduce else per_sample
