"""Samplers for noise-conditional score models, separate from the network.

Each sampler has the shape of :mod:`geneval.sampling`: it holds the noise levels
σ_1 > … > σ_L it anneals through, starts chains from the prior N(0, σ_1² I) of the
variance-exploding SDE (``init``) and drives any score callable ``score(x, sigma) -> Tensor``
(``sigma`` of shape (N,)) one update at a time (``step``). A trained network and the
closed-form score of a Gaussian mixture plug in alike.

* :class:`AnnealedLangevinSampler` — Song & Ermon (2019), Algorithm 1, with the final Tweedie
  denoising step of Song & Ermon (2020), technique "denoising" (Jolicoeur-Martineau et al. 2021).
* :class:`ReverseDiffusionPCSampler` — predictor–corrector sampling of the reverse-time
  variance-exploding SDE, Song et al. (2021), Algorithm 2 (reverse-diffusion predictor,
  Eq. 46/47) with the Langevin corrector of Algorithm 5 (step from a signal-to-noise ratio).

References
----------
Song & Ermon, "Generative modeling by estimating gradients of the data distribution",
NeurIPS 2019. Song & Ermon, "Improved techniques for training score-based generative models",
NeurIPS 2020. Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-based generative
modeling through stochastic differential equations", ICLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from geneval.plugin import MAX_SAMPLER_STEPS
from geneval_plugins.models.langevin import langevin_step
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _per_sample(sigma: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)


def _levels(sigmas: Sequence[float] | torch.Tensor) -> list[float]:
    levels = [float(s) for s in (sigmas.tolist() if isinstance(sigmas, torch.Tensor) else sigmas)]
    if len(levels) < 1 or any(not s > 0 for s in levels):
        raise ValueError("noise levels must be a non-empty sequence of positive numbers")
    if any(a <= b for a, b in zip(levels, levels[1:], strict=False)):
        raise ValueError("noise levels must be strictly descending")
    return levels


class _FromPrior:
    """Chains start from the VE prior N(0, σ_1² I)."""

    levels: list[float]
    dtype: torch.dtype

    def init(
        self, score: ScoreFn, shape: tuple[int, ...], generator: torch.Generator, device
    ) -> torch.Tensor:
        """x ~ N(0, σ_1² I) of ``shape``."""
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=self.dtype)
        return (self.levels[0] * noise).to(device)


@dataclass
class AnnealedLangevinSampler(_FromPrior):
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level i = 1 … L, ``steps_per_level`` (T) Langevin updates
    x ← x + α_i s(x, σ_i) + √(2α_i) z with α_i = ε σ_i²/σ_L²; then, with ``denoise``, the
    Tweedie step x ← x + σ_L² s(x, σ_L), the posterior mean E[x₀ | x] under q_{σ_L}
    (Efron 2011; Song & Ermon 2020; Jolicoeur-Martineau et al. 2021). ``set_steps(n)`` sets T;
    the schedule holds the L·T (σ_i, α_i) of the updates.

    Parameters
    ----------
    sigmas
        The noise levels σ_1 > … > σ_L.
    eps
        ε, the step size at the smallest level σ_L.
    steps_per_level
        T, Langevin steps per noise level.
    denoise
        Apply the final Tweedie denoising step.
    dtype
        Floating type of the chains.
    """

    sigmas: Sequence[float]
    eps: float = 2e-5
    steps_per_level: int = 100
    denoise: bool = True
    dtype: torch.dtype = torch.float32
    schedule: list[tuple[float, float]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.levels = _levels(self.sigmas)
        if not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps}")
        self.set_steps(self.steps_per_level)

    def set_steps(self, steps: int) -> None:
        """T = ``steps`` Langevin updates per noise level (at least 1)."""
        if steps < 1:
            raise ValueError(f"steps per noise level must be >= 1, got {steps}")
        if steps * len(self.levels) > MAX_SAMPLER_STEPS:
            raise ValueError(
                f"{steps} steps per level × {len(self.levels)} levels is above "
                f"{MAX_SAMPLER_STEPS} updates"
            )
        self.steps_per_level = steps
        sigma_min = self.levels[-1]
        self.schedule = [
            (sigma, self.eps * (sigma / sigma_min) ** 2)
            for sigma in self.levels
            for _ in range(steps)
        ]

    def num_score_evaluations(self) -> int:
        """Score calls per sample: L·T, plus one for the denoising step."""
        return len(self.schedule) + int(self.denoise)

    def step(
        self,
        score: ScoreFn,
        x: torch.Tensor,
        point: tuple[float, float],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """One Langevin update at (σ_i, α_i)."""
        sigma, alpha = point
        return langevin_step(x, score(x, _per_sample(sigma, x)), alpha, generator)

    def output(self, score: ScoreFn, x: torch.Tensor) -> torch.Tensor:
        """The Tweedie-denoised chain (with ``denoise``), else the chain itself."""
        if not self.denoise:
            return x
        sigma_min = self.levels[-1]
        return x + sigma_min**2 * score(x, _per_sample(sigma_min, x))


@dataclass
class ReverseDiffusionPCSampler(_FromPrior):
    """Predictor–corrector sampler for the variance-exploding SDE (Song et al. 2021, Alg. 2).

    The VE SDE dx = √(dσ²/dt) dw discretised on the levels σ_1 > … > σ_L > σ_{L+1} = 0.
    At each level i, ``corrector_steps`` (M) Langevin corrector updates
    x ← x + ε s(x, σ_i) + √(2ε) z with ε = 2 (r ‖z‖ / ‖s‖)² (Algorithm 5, r = ``snr``, norms
    averaged over the batch as in the authors' code), then the reverse-diffusion predictor
    x ← x + (σ_i² − σ_{i+1}²) s(x, σ_i) + √(σ_i² − σ_{i+1}²) z (Eq. 47). The last predictor
    step, to σ = 0, is the Tweedie denoising step; with ``denoise`` its noise is left out.
    One step of the schedule is one level; ``set_steps(n)`` sets M.

    Parameters
    ----------
    sigmas
        The noise levels σ_1 > … > σ_L.
    snr
        r, the corrector's signal-to-noise ratio.
    corrector_steps
        M, Langevin corrector steps per level (0: predictor only).
    denoise
        Return the noise-free mean of the last predictor step.
    dtype
        Floating type of the chains.
    """

    sigmas: Sequence[float]
    snr: float = 0.16
    corrector_steps: int = 1
    denoise: bool = True
    dtype: torch.dtype = torch.float32
    schedule: list[tuple[float, float]] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        self.levels = _levels(self.sigmas)
        if not self.snr > 0:
            raise ValueError(f"snr must be positive, got {self.snr}")
        self.set_steps(self.corrector_steps)
        self.schedule = list(zip(self.levels, [*self.levels[1:], 0.0], strict=True))

    def set_steps(self, steps: int) -> None:
        """M = ``steps`` corrector updates per level (0: predictor only)."""
        if steps < 0:
            raise ValueError(f"corrector steps must be >= 0, got {steps}")
        self.corrector_steps = steps

    def num_score_evaluations(self) -> int:
        """Score calls per sample: L·(M + 1)."""
        return len(self.levels) * (self.corrector_steps + 1)

    def _corrector_step_size(self, grad: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        grad_norm = grad.flatten(1).norm(dim=1).mean()
        noise_norm = noise.flatten(1).norm(dim=1).mean()
        return 2 * (self.snr * noise_norm / grad_norm.clamp_min(1e-30)) ** 2

    def step(
        self,
        score: ScoreFn,
        x: torch.Tensor,
        point: tuple[float, float],
        generator: torch.Generator,
    ) -> torch.Tensor:
        """The correctors, then the predictor, at level σ_i (``point`` = (σ_i, σ_{i+1}))."""
        sigma, next_sigma = point
        sig = _per_sample(sigma, x)
        for _ in range(self.corrector_steps):
            grad = score(x, sig)
            noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
            size = self._corrector_step_size(grad, noise)
            x = x + size * grad + torch.sqrt(2 * size) * noise
        variance = sigma**2 - next_sigma**2
        mean = x + variance * score(x, sig)
        if next_sigma == 0.0 and self.denoise:
            return mean
        noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
        return mean + math.sqrt(variance) * noise

    def output(self, score: ScoreFn, x: torch.Tensor) -> torch.Tensor:
        """The chain after the last level."""
        return x


#: Sampler names a score model accepts, each with its class; the first is the default. The
#: names, in this order, are the ``ncsn`` entry of
#: :data:`~geneval_plugins.models.sampler_names.SAMPLER_NAMES` (checked when this module loads).
SAMPLERS = {"annealed-langevin": AnnealedLangevinSampler, "pc": ReverseDiffusionPCSampler}
if tuple(SAMPLERS) != SAMPLER_NAMES["ncsn"]:
    raise RuntimeError(
        f"score sampler classes {tuple(SAMPLERS)} differ from "
        f"SAMPLER_NAMES['ncsn'] {SAMPLER_NAMES['ncsn']}"
    )
