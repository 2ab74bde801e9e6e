"""MCMC samplers for the energy-based families, kept separate from the networks.

Two small configuration objects, in the spirit of diffusers' schedulers:

* :class:`GibbsSampler` — block Gibbs sampling of a bipartite model (RBM, GRBM):
  h ~ p(h | v), then v ~ p(v | h), repeated ``steps`` times (Geman & Geman 1984;
  Hinton 2002, §3).
* :class:`LangevinSampler` — unadjusted Langevin dynamics on an energy E(x):
  x ← x − α·∇E(x) + c·√(2α)·z with the practical knobs of deep EBM training
  (separate noise scale c, gradient clipping, clamping to the data range;
  Du & Mordatch 2019, §3.2 and App. A). The update itself is
  :func:`geneval_plugins.models.langevin.langevin_step`, shared with NCSN.

Every random draw uses the ``torch.Generator`` passed in, so equal seeds give equal chains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from geneval_plugins.models.langevin import langevin_step


class BipartiteModel(Protocol):
    """What :class:`GibbsSampler` needs: the two factorised conditionals of a bipartite model."""

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw h ~ p(h | v), shape (N, H)."""
        ...

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h], shape (N, D)."""
        ...

    def sample_visible(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw v ~ p(v | h) given its mean ``visible_mean(h)``, shape (N, D)."""
        ...


@dataclass(frozen=True)
class GibbsState:
    """The end of a block Gibbs chain: the visible state, its conditional mean E[v | h], and h."""

    visible: torch.Tensor
    visible_mean: torch.Tensor
    hidden: torch.Tensor


@dataclass(frozen=True)
class GibbsSampler:
    """Block Gibbs sampling for bipartite models (RBM, GRBM).

    One step draws every hidden unit in parallel from p(h | v), then every visible unit in
    parallel from p(v | h); the chain over v has the model marginal p(v) as its stationary
    distribution.

    Parameters
    ----------
    steps
        Number of full (h then v) steps; at least 1.

    References
    ----------
    Geman, S. & Geman, D. (1984). Stochastic relaxation, Gibbs distributions, and the Bayesian
    restoration of images. IEEE TPAMI 6(6).
    Hinton, G. E. (2002). Training products of experts by minimizing contrastive divergence.
    Neural Computation 14(8), §3.
    """

    steps: int

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"Gibbs steps must be at least 1, got {self.steps}")

    @torch.no_grad()
    def run(
        self, model: BipartiteModel, visible: torch.Tensor, generator: torch.Generator
    ) -> GibbsState:
        """Run ``steps`` block Gibbs steps from ``visible`` (N, D); all chains in one batch."""
        v = visible
        for _ in range(self.steps):
            h = model.sample_hidden(v, generator)
            mean = model.visible_mean(h)
            v = model.sample_visible(mean, generator)
        return GibbsState(visible=v, visible_mean=mean, hidden=h)


EnergyFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class LangevinSampler:
    """Unadjusted Langevin dynamics on an energy E(x) with the practical knobs of deep EBMs.

    Each step computes g = ∇ₓE(x) (summed over the batch, so each sample gets its own
    gradient), optionally clips every element of g to ``[-grad_clip, grad_clip]``, applies
    x ← x − α·g + c·√(2α)·z (z ~ N(0, I)) and optionally clamps x to ``clamp``.
    With c = 1, no clipping and no clamping this is the Euler–Maruyama discretisation of the
    Langevin diffusion dx = −∇E(x) dt + √2 dB, whose stationary law is p(x) ∝ exp(−E(x)) as
    α → 0.

    Parameters
    ----------
    steps
        Number of updates; at least 1.
    step_size
        α, the step on the gradient.
    noise_scale
        c: the noise standard deviation is c·√(2α). c < 1 decouples noise from step size
        (Du & Mordatch 2019 use α = 10 with noise std 0.005, i.e. c ≈ 0.0011).
    grad_clip
        Elementwise clip of ∇E before the update; ``None`` for none.
    clamp
        ``(low, high)`` data range to clamp x to after every step; ``None`` for none.

    References
    ----------
    Welling, M. & Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
    dynamics. ICML.
    Du, Y. & Mordatch, I. (2019). Implicit generation and modeling with energy-based models.
    NeurIPS, §3.2.
    """

    steps: int
    step_size: float
    noise_scale: float = 1.0
    grad_clip: float | None = None
    clamp: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"Langevin steps must be at least 1, got {self.steps}")
        if not self.step_size > 0:
            raise ValueError(f"Langevin step size must be positive, got {self.step_size}")
        if self.noise_scale < 0:
            raise ValueError(f"Langevin noise scale must be non-negative, got {self.noise_scale}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"gradient clip must be positive, got {self.grad_clip}")
        if self.clamp is not None and not self.clamp[0] < self.clamp[1]:
            raise ValueError(f"clamp range must be (low, high) with low < high, got {self.clamp}")

    def energy_grad(self, energy: EnergyFn, x: torch.Tensor) -> torch.Tensor:
        """∇ₓE(x) for each sample (gradient of the batch sum), clipped when ``grad_clip`` is set.

        Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (as callers that only
        sample use): autograd is re-enabled locally and ``x`` is cloned into a normal tensor.
        """
        with torch.inference_mode(False), torch.enable_grad():
            x = x.detach().clone().requires_grad_(True)
            (grad,) = torch.autograd.grad(energy(x).sum(), x)
        if self.grad_clip is not None:
            grad = grad.clamp(-self.grad_clip, self.grad_clip)
        return grad

    def step(self, energy: EnergyFn, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One update x ← clamp(x − α·∇E(x) + c·√(2α)·z)."""
        grad = self.energy_grad(energy, x)
        x = langevin_step(x.detach(), -grad, self.step_size, generator, self.noise_scale)
        if self.clamp is not None:
            x = x.clamp(self.clamp[0], self.clamp[1])
        return x

    def run(self, energy: EnergyFn, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Run ``steps`` updates from ``x``; returns the final (detached) state."""
        for _ in range(self.steps):
            x = self.step(energy, x, generator)
        return x.detach()
