"""Samplers for noise-conditional score models, separate from the network.

Each sampler is a small configuration object whose ``sample(score, x, sigmas, generator)``
drives any score callable ``score(x, sigma) -> Tensor`` (``sigma`` of shape (N,)) from the
initial state ``x`` through the noise levels ``sigmas`` (descending, σ_1 > … > σ_L). A trained
network and the closed-form score of a Gaussian mixture plug in alike.

* :class:`AnnealedLangevinSampler` — Song & Ermon (2019), Algorithm 1, with the final Tweedie
  denoising step of Song & Ermon (2020), technique "denoising" (Jolicoeur-Martineau et al. 2021).
* :class:`ReverseDiffusionPCSampler` — predictor–corrector sampling of the reverse-time
  variance-exploding SDE, Song et al. (2021), Algorithm 2 (reverse-diffusion predictor,
  Eq. 46/47) with the Langevin corrector of Algorithm 5 (step from a signal-to-noise ratio).

The allowed sampler names and their options live in :data:`SAMPLERS` only.

References
----------
Song & Ermon, "Generative modeling by estimating gradients of the data distribution",
NeurIPS 2019. Song & Ermon, "Improved techniques for training score-based generative models",
NeurIPS 2020. Song, Sohl-Dickstein, Kingma, Kumar, Ermon & Poole, "Score-based generative
modeling through stochastic differential equations", ICLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch

from geneval.errors import InputError
from geneval_plugins.models.langevin import langevin_step

ScoreFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


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


def _per_sample(sigma: float, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(sigma), dtype=x.dtype, device=x.device)


@dataclass(frozen=True)
class AnnealedLangevinSampler:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1).

    For each level i = 1 … L, ``steps_per_level`` (T) Langevin updates
    x ← x + α_i s(x, σ_i) + √(2α_i) z with α_i = ε σ_i²/σ_L²; then, with ``denoise``, the
    Tweedie step x ← x + σ_L² s(x, σ_L), the posterior mean E[x₀ | x] under q_{σ_L}
    (Efron 2011; Song & Ermon 2020; Jolicoeur-Martineau et al. 2021).

    Parameters
    ----------
    eps
        ε, the step size at the smallest level σ_L.
    steps_per_level
        T, Langevin steps per noise level.
    denoise
        Apply the final Tweedie denoising step.
    """

    eps: float = 2e-5
    steps_per_level: int = 100
    denoise: bool = True

    def __post_init__(self) -> None:
        if not self.eps > 0:
            raise InputError(f"annealed-langevin: eps must be positive, got {self.eps}")
        if self.steps_per_level < 1:
            raise InputError(
                f"annealed-langevin: steps_per_level must be >= 1, got {self.steps_per_level}"
            )

    def num_score_evaluations(self, num_levels: int) -> int:
        """Score calls per sample: L·T, plus one for the denoising step."""
        return num_levels * self.steps_per_level + int(self.denoise)

    @torch.no_grad()
    def sample(
        self, score: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Run the dynamics from ``x`` through the descending levels ``sigmas``."""
        sigma_min = float(sigmas[-1])
        for sigma in sigmas.tolist():
            alpha = self.eps * (sigma / sigma_min) ** 2
            sig = _per_sample(sigma, x)
            for _ in range(self.steps_per_level):
                x = langevin_step(x, score(x, sig), alpha, generator)
        if self.denoise:
            x = x + sigma_min**2 * score(x, _per_sample(sigma_min, x))
        return x


@dataclass(frozen=True)
class ReverseDiffusionPCSampler:
    """Predictor–corrector sampler for the variance-exploding SDE (Song et al. 2021, Alg. 2).

    The VE SDE dx = √(dσ²/dt) dw discretised on the levels σ_1 > … > σ_L > σ_{L+1} = 0.
    At each level i, ``corrector_steps`` (M) Langevin corrector updates
    x ← x + ε s(x, σ_i) + √(2ε) z with ε = 2 (r ‖z‖ / ‖s‖)² (Algorithm 5, r = ``snr``, norms
    averaged over the batch as in the authors' code), then the reverse-diffusion predictor
    x ← x + (σ_i² − σ_{i+1}²) s(x, σ_i) + √(σ_i² − σ_{i+1}²) z (Eq. 47). The last predictor
    step, to σ = 0, is the Tweedie denoising step; with ``denoise`` its noise is left out.

    Parameters
    ----------
    snr
        r, the corrector's signal-to-noise ratio.
    corrector_steps
        M, Langevin corrector steps per level (0: predictor only).
    denoise
        Return the noise-free mean of the last predictor step.
    """

    snr: float = 0.16
    corrector_steps: int = 1
    denoise: bool = True

    def __post_init__(self) -> None:
        if not self.snr > 0:
            raise InputError(f"pc: snr must be positive, got {self.snr}")
        if self.corrector_steps < 0:
            raise InputError(f"pc: corrector_steps must be >= 0, got {self.corrector_steps}")

    def num_score_evaluations(self, num_levels: int) -> int:
        """Score calls per sample: L·(M + 1)."""
        return num_levels * (self.corrector_steps + 1)

    def _corrector_step_size(self, grad: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        grad_norm = grad.flatten(1).norm(dim=1).mean()
        noise_norm = noise.flatten(1).norm(dim=1).mean()
        return 2 * (self.snr * noise_norm / grad_norm.clamp_min(1e-30)) ** 2

    @torch.no_grad()
    def sample(
        self, score: ScoreFn, x: torch.Tensor, sigmas: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """Run corrector then predictor at each of the descending levels ``sigmas``."""
        levels = sigmas.tolist()
        for i, sigma in enumerate(levels):
            sig = _per_sample(sigma, x)
            for _ in range(self.corrector_steps):
                grad = score(x, sig)
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                step = self._corrector_step_size(grad, noise)
                x = x + step * grad + torch.sqrt(2 * step) * noise
            next_sigma = levels[i + 1] if i + 1 < len(levels) else 0.0
            variance = sigma**2 - next_sigma**2
            mean = x + variance * score(x, sig)
            if next_sigma == 0.0 and self.denoise:
                x = mean
            else:
                noise = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = mean + math.sqrt(variance) * noise
        return x


#: Sampler names accepted by ``sample(sampler=...)``, each with its class; the first is the
#: default. Options are the dataclass fields.
SAMPLERS: dict[str, type[AnnealedLangevinSampler] | type[ReverseDiffusionPCSampler]] = {
    "annealed-langevin": AnnealedLangevinSampler,
    "pc": ReverseDiffusionPCSampler,
}

#: The option of each sampler that ``sample(steps=...)`` sets: Langevin steps per level.
STEPS_OPTION = {"annealed-langevin": "steps_per_level", "pc": "corrector_steps"}


def build_sampler(
    name: str, options: Mapping[str, Any]
) -> AnnealedLangevinSampler | ReverseDiffusionPCSampler:
    """Instantiate sampler ``name`` with ``options``; unknown names or keys are an InputError."""
    if name not in SAMPLERS:
        raise InputError(f"ncsn: unknown sampler {name!r} (choose from {', '.join(SAMPLERS)})")
    cls = SAMPLERS[name]
    fields = set(asdict(cls()))
    unknown = set(options) - fields
    if unknown:
        raise InputError(
            f"ncsn: sampler {name!r} has no option(s) {', '.join(sorted(unknown))} "
            f"(options: {', '.join(sorted(fields))})"
        )
    return cls(**options)


def sampler_options(sampler: AnnealedLangevinSampler | ReverseDiffusionPCSampler) -> dict[str, Any]:
    """The options of ``sampler`` as a plain dict (for checkpoint configs and reports)."""
    return asdict(sampler)


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
