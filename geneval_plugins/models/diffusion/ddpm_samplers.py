"""Samplers of the reverse diffusion, separate from the network (as diffusers separates schedulers).

Each sampler has the shape of :mod:`geneval.sampling`: bound to a
:class:`GaussianDiffusion`, it lists the timesteps it visits (``schedule``, set by
``set_steps``), starts from x_T ~ N(0, I) (``init``) and maps x_t to the next, less noisy state
with one call of the ε-predictor it drives (``step``). Any ε-predictor callable ``eps(x_t, t)``
plugs in, so the same code samples a trained network or an analytic ε (as the closed-form tests
do). Allowed option values are declared once, without torch, so that the ``ddpm`` family
registers them without importing this module: the variances in
:data:`~geneval_plugins.models.elbo_options.VARIANCES`, the DDIM sub-sequences in
:data:`~geneval_plugins.models.diffusion_schedules.SKIPS` and the sampler names in
:data:`~geneval_plugins.models.sampler_names.SAMPLER_NAMES`, which :data:`SAMPLER_FACTORIES`
is checked against when this module loads.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import torch

from geneval_plugins.models.diffusion_schedules import SKIPS
from geneval_plugins.models.elbo_options import VARIANCES
from geneval_plugins.models.gaussian_diffusion import (
    EpsPredictor,
    GaussianDiffusion,
    at_timesteps,
)
from geneval_plugins.models.sampler_names import SAMPLER_NAMES


def _check(value: str, allowed: tuple[str, ...], what: str) -> str:
    if value not in allowed:
        raise ValueError(f"unknown {what} {value!r} (choose from {', '.join(allowed)})")
    return value


def _full(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), t, dtype=torch.long, device=x.device)


class _FromNoise:
    """Start of every reverse diffusion: x_T ~ N(0, I), drawn with the generator."""

    dtype: torch.dtype = torch.float32

    def init(
        self,
        eps_model: EpsPredictor,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device,
    ) -> torch.Tensor:
        """x_T ~ N(0, I) of ``shape`` (drawn on the generator's device, moved to ``device``)."""
        noise = torch.randn(shape, generator=generator, device=generator.device, dtype=self.dtype)
        return noise.to(device)

    def output(self, eps_model: EpsPredictor, x: torch.Tensor) -> torch.Tensor:
        """x_0 in the data space [−1, 1] (unclipped)."""
        return x


@dataclass
class AncestralSampler(_FromNoise):
    """Ancestral sampling of p_θ(x_{t−1}|x_t) = N(μ_θ(x_t, t), σ_t² I) for t = T..1 (Algorithm 2).

    Parameters
    ----------
    diffusion
        The forward process.
    variance
        ``fixedlarge`` (σ_t² = β_t) or ``fixedsmall`` (σ_t² = β̃_t), Ho et al. (2020), §3.2.
    clip_denoised
        Clip x̂_0 to [−1, 1] and take the posterior mean μ̃_t(x̂_0, x_t) (eq. 7), as the
        authors' code does; without clipping this equals μ_θ of eq. 11.
    dtype
        Floating type of the chains.

    References
    ----------
    Ho et al. (2020), Algorithm 2, eqs. 7 and 11.
    """

    diffusion: GaussianDiffusion
    variance: str = "fixedlarge"
    clip_denoised: bool = True
    dtype: torch.dtype = torch.float32
    schedule: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        _check(self.variance, VARIANCES, "variance")
        self._sigma2 = self.diffusion.reverse_variance(self.variance)
        self.set_steps(self.diffusion.num_timesteps)

    def set_steps(self, steps: int) -> None:
        """Visit every t = T..1; ``steps`` must be T (the ancestral sampler skips nothing)."""
        big_t = self.diffusion.num_timesteps
        if steps != big_t:
            raise ValueError(
                f"the ancestral sampler takes all T = {big_t} steps (got steps={steps}); "
                "use the ddim sampler for fewer steps"
            )
        self.schedule = list(range(big_t, 0, -1))

    def step(
        self, eps_model: EpsPredictor, x: torch.Tensor, t: int, generator: torch.Generator
    ) -> torch.Tensor:
        """x_{t−1} = μ + σ_t·z with z ~ N(0, I) drawn from ``generator`` (no noise at t = 1)."""
        tt = _full(t, x)
        eps = eps_model(x, tt)
        x0 = self.diffusion.predict_x0(x, tt, eps)
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
        mean, _ = self.diffusion.posterior_mean_variance(x0, x, tt)
        if t == 1:
            return mean
        noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
        return mean + at_timesteps(self._sigma2, tt, x).sqrt() * noise


@dataclass
class DDIMSampler(_FromNoise):
    """The generalised (DDIM) reverse process on a sub-sequence τ of 1..T (Song et al., eq. 12).

    x_{τ_{i−1}} = √ᾱ_{τ_{i−1}}·x̂_0 + √(1 − ᾱ_{τ_{i−1}} − σ²)·ε_θ + σ·z, with
    σ = η·√((1 − ᾱ_{τ_{i−1}})/(1 − ᾱ_{τ_i}))·√(1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}}) (eq. 16) and ᾱ_0 = 1.
    η = 0 is the deterministic DDIM; η = 1 with every step is DDPM with σ_t² = β̃_t.

    Parameters
    ----------
    diffusion
        The forward process.
    steps
        Length S of the sub-sequence τ.
    eta
        η ≥ 0, the stochasticity.
    skip
        ``uniform``: τ_i = ⌊i·T/S⌋ + 1; ``quadratic``: τ_i = ⌊(i·√(0.8·T)/(S−1))²⌋ + 1, i = 0..S−1
        (Song et al. 2021, App. D.2), each raised to at least τ_{i−1} + 1 so that the S steps
        are distinct (the authors' sequence repeats small t, which are no-op steps).
    clip_denoised
        Clip x̂_0 to [−1, 1] (and re-derive ε from it) before the update. Off by default, as in
        the authors' code: with few steps the clipped update leaves the DDIM path and gave a
        markedly worse FID on digits (about 4.0 vs 2.7 for 50 steps).
    dtype
        Floating type of the chains.

    References
    ----------
    Song, Meng & Ermon (2021), eqs. 12 and 16, App. D.2.
    """

    diffusion: GaussianDiffusion
    steps: int = 50
    eta: float = 0.0
    skip: str = "uniform"
    clip_denoised: bool = False
    dtype: torch.dtype = torch.float32
    schedule: list[int] = field(default_factory=list, init=False)

    def __post_init__(self) -> None:
        _check(self.skip, SKIPS, "skip")
        if self.eta < 0:
            raise ValueError(f"eta must be non-negative, got {self.eta}")
        self.set_steps(self.steps)

    def set_steps(self, steps: int) -> None:
        """Choose τ (descending) of length ``steps``, 1 ≤ steps ≤ T."""
        big_t = self.diffusion.num_timesteps
        if not 1 <= steps <= big_t:
            raise ValueError(f"DDIM steps must be in 1..{big_t}, got {steps}")
        if self.skip == "uniform":
            tau = [i * big_t // steps + 1 for i in range(steps)]
        else:
            top = (0.8 * big_t) ** 0.5
            scale = top / (steps - 1) if steps > 1 else 0.0
            tau = []
            for i in range(steps):
                # Song et al.'s sequence repeats small t (no-op steps); keep them distinct instead.
                tau.append(max(int((i * scale) ** 2) + 1, tau[-1] + 1 if tau else 1))
            if tau[-1] > big_t:
                raise ValueError(f"quadratic skipping cannot fit {steps} steps in T={big_t}")
        self.steps = steps
        self.schedule = sorted(tau, reverse=True)

    def previous(self, t: int) -> int:
        """The timestep after ``t`` in the sequence (0 after the last one, where ᾱ_0 = 1)."""
        i = self.schedule.index(t)
        return self.schedule[i + 1] if i + 1 < len(self.schedule) else 0

    def step(
        self, eps_model: EpsPredictor, x: torch.Tensor, t: int, generator: torch.Generator
    ) -> torch.Tensor:
        """One update of eq. 12 from τ_i = ``t`` to τ_{i−1}; z from ``generator`` when σ > 0."""
        abar_all = self.diffusion.alphas_cumprod
        t_prev = self.previous(t)
        abar = abar_all[t - 1].item()
        abar_prev = abar_all[t_prev - 1].item() if t_prev > 0 else 1.0
        eps = eps_model(x, _full(t, x))
        x0 = self.diffusion.predict_x0(x, _full(t, x), eps)
        if self.clip_denoised:
            x0 = x0.clamp(-1.0, 1.0)
            # Re-derive ε from the clipped x̂_0 so the update stays on the DDIM path.
            eps = (x - abar**0.5 * x0) / (1 - abar) ** 0.5
        sigma = self.eta * ((1 - abar_prev) / (1 - abar)) ** 0.5 * (1 - abar / abar_prev) ** 0.5
        direction = max(1 - abar_prev - sigma**2, 0.0) ** 0.5
        out = abar_prev**0.5 * x0 + direction * eps
        if sigma > 0 and t_prev > 0:
            noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x)
            out = out + sigma * noise
        return out


Sampler = AncestralSampler | DDIMSampler

#: Sampler names a DDPM accepts (``sample(sampler=...)``, ``geneval sample --sampler``), the
#: default first: the ``ddpm`` entry of the one table of sampler names.
SAMPLERS: tuple[str, ...] = SAMPLER_NAMES["ddpm"]

#: The factory of each sampler a DDPM offers, keyed by exactly the names of :data:`SAMPLERS`
#: and in their order: name → factory ``(diffusion, **settings) -> Sampler``, the settings
#: being those the checkpoint's ``sampling`` config stores under the name. ``ddim``
#: (Song et al. 2021), ``ancestral`` (σ_t² = β_t) and ``ancestral-fixedsmall`` (σ_t² = β̃_t)
#: (Ho et al. 2020).
SAMPLER_FACTORIES: dict[str, Callable[..., Sampler]] = {
    "ddim": DDIMSampler,
    "ancestral": partial(AncestralSampler, variance="fixedlarge"),
    "ancestral-fixedsmall": partial(AncestralSampler, variance="fixedsmall"),
}
if tuple(SAMPLER_FACTORIES) != SAMPLERS:
    raise RuntimeError(
        f"ddpm sampler factories {tuple(SAMPLER_FACTORIES)} differ from "
        f"SAMPLER_NAMES['ddpm'] {SAMPLERS}"
    )


def sampling_config(default: str, ddim: Mapping[str, Any]) -> dict[str, Any]:
    """A checkpoint's ``sampling`` config: the ``default`` sampler's name and every sampler's
    settings (``ddim``'s for DDIM; the ancestral samplers take none)."""
    return {"sampler": default, **{name: {} for name in SAMPLERS}, "ddim": dict(ddim)}
