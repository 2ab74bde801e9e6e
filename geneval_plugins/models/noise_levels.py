"""Choosing the noise levels σ_1 > … > σ_L of a noise-conditional model, and its Langevin step.

Shared by every family that anneals through Gaussian noise levels (score networks, and
noise-conditional energies). The NCSNv2 techniques of Song & Ermon (2020): σ_1 is the largest
pairwise distance of the training data (technique 1, :func:`max_pairwise_distance`), L follows
the data dimension (technique 2, :func:`num_levels_for`), the levels are geometric
(:func:`geometric_sigmas`, Song & Ermon 2019, §4.2), and the Langevin step ε at σ_L follows
the steps per level and the level ratio (technique 4, :func:`ncsnv2_step_size`).

References
----------
Song & Ermon, "Generative modeling by estimating gradients of the data distribution",
NeurIPS 2019. Song & Ermon, "Improved techniques for training score-based generative models",
NeurIPS 2020.
"""

from __future__ import annotations

import math

import torch


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """Noise levels σ_i = σ_1 (σ_L/σ_1)^((i−1)/(L−1)), i = 1 … L, descending, float64.

    Song & Ermon (2019), §4.2; the ratio between neighbours is constant.
    """
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if num_levels < 2:
        raise ValueError(f"need at least 2 noise levels, got {num_levels}")
    return torch.logspace(
        math.log10(sigma_max), math.log10(sigma_min), num_levels, dtype=torch.float64
    )


def max_pairwise_distance(x: torch.Tensor, chunk: int = 2048) -> float:
    """max_{i,j} ‖x_i − x_j‖₂ over the rows of ``x`` flattened (NCSNv2 technique 1), in float64."""
    flat = x.flatten(1).to(torch.float64)
    best = 0.0
    for start in range(0, flat.shape[0], chunk):
        best = max(best, float(torch.cdist(flat[start : start + chunk], flat).max()))
    return best


def level_ratio_for_dimension(dim: int) -> float:
    """γ = σ_{i−1}/σ_i solving Φ(√(2D)(γ−1) + 3γ) − Φ(√(2D)(γ−1) − 3γ) = ½ (NCSNv2 technique 2).

    Neighbouring perturbed distributions of D-dimensional data then overlap enough for
    annealed Langevin dynamics to pass from one to the next (Song & Ermon 2020, §3.2).
    """

    from scipy.optimize import brentq
    from scipy.special import ndtr

    def overlap(gamma: float) -> float:
        a = math.sqrt(2 * dim) * (gamma - 1)
        return float(ndtr(a + 3 * gamma) - ndtr(a - 3 * gamma)) - 0.5

    return float(brentq(overlap, 1.0 + 1e-9, 100.0))


def num_levels_for(sigma_max: float, sigma_min: float, dim: int) -> int:
    """L = ⌈1 + log(σ_1/σ_L)/log γ⌉ with γ of :func:`level_ratio_for_dimension` (technique 2)."""
    gamma = level_ratio_for_dimension(dim)
    return max(2, math.ceil(1 + math.log(sigma_max / sigma_min) / math.log(gamma)))


def ncsnv2_step_size(gamma: float, steps_per_level: int, sigma_min: float) -> float:
    """ε for annealed Langevin by NCSNv2 technique 4 (Song & Ermon 2020, Eq. 4).

    Chooses ε = x σ_L² minimising |f(x) − 1| with
    f(x) = (1 − x)^{2T} (γ² − 2x/(1 − (1 − x)²)) + 2x/(1 − (1 − x)²),
    the ratio of the sample variance reached after T steps at one level to σ_i² when the
    level's distribution is Gaussian; γ = σ_{i−1}/σ_i is the ratio of neighbouring levels.
    """
    if gamma <= 1 or steps_per_level < 1:
        raise ValueError(f"need gamma > 1 and steps_per_level >= 1, got {gamma}, {steps_per_level}")
    x = torch.linspace(1e-6, 0.999, 200_000, dtype=torch.float64)
    c = 2 * x / (1 - (1 - x) ** 2)
    f = (1 - x) ** (2 * steps_per_level) * (gamma**2 - c) + c
    best = int(torch.argmin((f - 1).abs()))
    return float(x[best]) * sigma_min**2
