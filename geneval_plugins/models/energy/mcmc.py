"""MCMC samplers of the energy-based families, kept separate from the networks.

Each has the shape of :mod:`geneval.sampling` (``set_steps``, ``init``, ``step``,
``output``), so sampling a model, the negative phase of training and the benchmarks run the
same objects through :func:`geneval.sampling.run_chain`:

* :class:`GibbsSampler` — block Gibbs sampling of a bipartite model (RBM, GRBM):
  h ~ p(h | v), then v ~ p(v | h), repeated (Geman & Geman 1984; Hinton 2002, §3);
* :class:`LangevinSampler` — unadjusted Langevin dynamics on an energy E(x):
  x ← x − α·∇E(x) + c·√(2α)·z with the practical knobs of deep EBMs (separate noise scale c,
  gradient clipping, clamping to the data range; Du & Mordatch 2019, §3.2 and App. A). The
  update itself is :func:`geneval_plugins.models.langevin.langevin_step`, shared with NCSN;
* :class:`ReplayBufferSampler` — Langevin chains started from a replay buffer of past chains,
  or with a small probability from fresh noise, and written back when they finish
  (Du & Mordatch 2019, §3.1).

Every random draw uses the ``torch.Generator`` passed in, so equal seeds give equal chains.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import torch

from geneval_plugins.models.langevin import langevin_step


class BipartiteModel(Protocol):
    """What :class:`GibbsSampler` needs: the two factorised conditionals and a chain start."""

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw h ~ p(h | v), shape (N, H)."""
        ...

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h], shape (N, D)."""
        ...

    def sample_visible(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw v ~ p(v | h) given its mean ``visible_mean(h)``, shape (N, D)."""
        ...

    def initial_visible(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Starting states of ``n`` chains, shape (N, D)."""
        ...


@dataclass(frozen=True)
class GibbsState:
    """A block Gibbs chain: the visible state, its conditional mean E[v | h] and h."""

    visible: torch.Tensor
    visible_mean: torch.Tensor
    hidden: torch.Tensor | None = None


#: What :class:`GibbsSampler` returns: the conditional mean of the last step or the state.
GIBBS_OUTPUTS = ("mean", "state")


@dataclass
class GibbsSampler:
    """Block Gibbs sampling for bipartite models (RBM, GRBM).

    One step draws every hidden unit in parallel from p(h | v), then every visible unit in
    parallel from p(v | h); the chain over v has the model marginal p(v) as its stationary
    distribution. ``set_steps(n)`` sets the number of steps.

    Parameters
    ----------
    steps
        Number of full (h then v) steps; at least 1.
    output
        ``mean``: E[v | h] of the last step (the pixel probabilities of a binary RBM, the
        Gaussian mean of a GRBM: a Rao–Blackwellised, less noisy view of the same chain);
        ``state``: the sampled v.

    References
    ----------
    Geman, S. & Geman, D. (1984). Stochastic relaxation, Gibbs distributions, and the Bayesian
    restoration of images. IEEE TPAMI 6(6).
    Hinton, G. E. (2002). Training products of experts by minimizing contrastive divergence.
    Neural Computation 14(8), §3.
    """

    steps: int = 1
    output_kind: str = "mean"
    schedule: range = field(default=range(0), init=False)

    def __post_init__(self) -> None:
        if self.output_kind not in GIBBS_OUTPUTS:
            raise ValueError(f"unknown output {self.output_kind!r} (one of mean, state)")
        self.set_steps(self.steps)

    def set_steps(self, steps: int) -> None:
        """``steps`` block Gibbs steps (at least 1)."""
        if steps < 1:
            raise ValueError(f"Gibbs steps must be at least 1, got {steps}")
        self.steps = steps
        self.schedule = range(steps)

    def init(
        self,
        model: BipartiteModel,
        shape: tuple[int, ...],
        generator: torch.Generator,
        device: torch.device,
    ) -> GibbsState:
        """``shape[0]`` chains from the model's chain start."""
        v = model.initial_visible(shape[0], generator)
        return GibbsState(visible=v, visible_mean=v)

    @staticmethod
    def start(visible: torch.Tensor) -> GibbsState:
        """Chains continuing from given visible states (persistent chains, CD from data)."""
        return GibbsState(visible=visible, visible_mean=visible)

    def step(
        self, model: BipartiteModel, state: GibbsState, point: int, generator: torch.Generator
    ) -> GibbsState:
        """h ~ p(h | v), then v ~ p(v | h)."""
        h = model.sample_hidden(state.visible, generator)
        mean = model.visible_mean(h)
        return GibbsState(
            visible=model.sample_visible(mean, generator), visible_mean=mean, hidden=h
        )

    def output(self, model: BipartiteModel, state: GibbsState) -> torch.Tensor:
        """E[v | h] of the last step (``mean``) or the sampled v (``state``)."""
        return state.visible_mean if self.output_kind == "mean" else state.visible


EnergyFn = Callable[[torch.Tensor], torch.Tensor]
#: Where :class:`LangevinSampler` starts its chains.
LANGEVIN_STARTS = ("uniform", "model")


def energy_gradient(energy: EnergyFn, x: torch.Tensor) -> torch.Tensor:
    """∇ₓE(x) for each sample (the gradient of the batch sum), detached.

    Works inside ``torch.no_grad()`` and ``torch.inference_mode()`` (as callers that only
    sample use): autograd is re-enabled locally and ``x`` is cloned into a normal tensor. The
    network's parameters receive no gradient.
    """
    with torch.inference_mode(False), torch.enable_grad():
        x = x.detach().clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(energy(x).sum(), x)
    return grad


@dataclass
class LangevinSampler:
    """Unadjusted Langevin dynamics on an energy E(x) with the practical knobs of deep EBMs.

    Each step computes g = ∇ₓE(x) (of the batch sum, so each sample gets its own gradient),
    optionally clips every element of g to ``[-grad_clip, grad_clip]``, applies
    x ← x − α·g + c·√(2α)·z (z ~ N(0, I)) and optionally clamps x to ``clamp``.
    With c = 1, no clipping and no clamping this is the Euler–Maruyama discretisation of the
    Langevin diffusion dx = −∇E(x) dt + √2 dB, whose stationary law is p(x) ∝ exp(−E(x)) as
    α → 0. Chains start from the uniform distribution on ``clamp`` (or at the given states).

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
    start
        Where :meth:`init` starts chains: ``uniform`` noise on ``clamp`` (standard normal
        without one), or ``model``: the energy's own ``initial_states(n, generator)`` (e.g.
        a Gaussian fitted to the data), clamped.
    jump
        s² > 0 makes :meth:`output` the empirical-Bayes "jump" x̂ = x − s²·∇E(x), the
        posterior mean E[x₀ | x] when exp(−E) is the density of x = x₀ + s·z (Tweedie's
        formula; the walk-jump sampler of Saremi & Hyvärinen 2019); 0 returns x.

    References
    ----------
    Welling, M. & Teh, Y. W. (2011). Bayesian learning via stochastic gradient Langevin
    dynamics. ICML.
    Du, Y. & Mordatch, I. (2019). Implicit generation and modeling with energy-based models.
    NeurIPS, §3.2.
    Nijkamp, E., Hill, M., Zhu, S.-C. & Wu, Y. N. (2019). Learning non-convergent
    non-persistent short-run MCMC toward energy-based model. NeurIPS.
    """

    steps: int = 1
    step_size: float = 1.0
    noise_scale: float = 1.0
    grad_clip: float | None = None
    clamp: tuple[float, float] | None = None
    start: str = "uniform"
    jump: float = 0.0
    schedule: range = field(default=range(0), init=False)

    def __post_init__(self) -> None:
        if self.jump < 0:
            raise ValueError(f"jump must be non-negative, got {self.jump}")
        if self.start not in LANGEVIN_STARTS:
            raise ValueError(f"unknown chain start {self.start!r} (one of uniform, model)")
        if not self.step_size > 0:
            raise ValueError(f"Langevin step size must be positive, got {self.step_size}")
        if self.noise_scale < 0:
            raise ValueError(f"Langevin noise scale must be non-negative, got {self.noise_scale}")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise ValueError(f"gradient clip must be positive, got {self.grad_clip}")
        if self.clamp is not None:
            self.clamp = (float(self.clamp[0]), float(self.clamp[1]))
            if not self.clamp[0] < self.clamp[1]:
                raise ValueError(
                    f"clamp range must be (low, high) with low < high, got {self.clamp}"
                )
        self.set_steps(self.steps)

    def set_steps(self, steps: int) -> None:
        """``steps`` Langevin updates (at least 1)."""
        if steps < 1:
            raise ValueError(f"Langevin steps must be at least 1, got {steps}")
        self.steps = steps
        self.schedule = range(steps)

    def init(
        self, energy: EnergyFn, shape: tuple[int, ...], generator: torch.Generator, device
    ) -> torch.Tensor:
        """Chain starts: uniform noise on the ``clamp`` range (standard normal without one), or
        the energy's ``initial_states`` (``start="model"``)."""
        if self.start == "model":
            x = energy.initial_states(shape[0], generator).reshape(shape).to(device)  # type: ignore[attr-defined]
            return x if self.clamp is None else x.clamp(self.clamp[0], self.clamp[1])
        if self.clamp is None:
            draw = torch.randn(shape, generator=generator, device=generator.device)
            return draw.to(device)
        low, high = self.clamp
        draw = torch.rand(shape, generator=generator, device=generator.device)
        return (low + (high - low) * draw).to(device)

    def energy_grad(self, energy: EnergyFn, x: torch.Tensor) -> torch.Tensor:
        """∇ₓE(x) for each sample (:func:`energy_gradient`), clipped when ``grad_clip`` is
        set."""
        grad = energy_gradient(energy, x)
        if self.grad_clip is not None:
            grad = grad.clamp(-self.grad_clip, self.grad_clip)
        return grad

    def step(
        self, energy: EnergyFn, x: torch.Tensor, point: int, generator: torch.Generator
    ) -> torch.Tensor:
        """One update x ← clamp(x − α·∇E(x) + c·√(2α)·z)."""
        grad = self.energy_grad(energy, x)
        x = langevin_step(x.detach(), -grad, self.step_size, generator, self.noise_scale)
        if self.clamp is not None:
            x = x.clamp(self.clamp[0], self.clamp[1])
        return x

    def output(self, energy: EnergyFn, x: torch.Tensor) -> torch.Tensor:
        """The final (detached) state, or with ``jump`` its denoised estimate x − s²·∇E(x)."""
        if self.jump > 0:
            x = x.detach() - self.jump * energy_gradient(energy, x)
        return x.detach()


@dataclass
class ReplayBufferSampler:
    """Langevin chains that start from a replay buffer and are written back to it.

    Each chain starts from a uniformly drawn buffer entry or, with probability ``reinit``,
    from the Langevin sampler's fresh noise; after ``langevin``'s steps the final states
    replace the entries they were drawn from (Du & Mordatch 2019, §3.1). ``buffer`` is
    updated in place, so a training loop that saves it resumes the same chains.

    Parameters
    ----------
    langevin
        The Langevin sampler the chains run (its ``set_steps`` is this sampler's).
    buffer
        Past chain states (M, ...) on the chains' device.
    reinit
        Probability in [0, 1] that a chain starts from fresh noise.
    """

    langevin: LangevinSampler
    buffer: torch.Tensor
    reinit: float = 0.05

    def __post_init__(self) -> None:
        if not 0.0 <= self.reinit <= 1.0:
            raise ValueError(f"reinit fraction must be in [0, 1], got {self.reinit}")
        if self.buffer.shape[0] < 1:
            raise ValueError("the replay buffer is empty")

    @property
    def schedule(self) -> range:
        return self.langevin.schedule

    def set_steps(self, steps: int) -> None:
        """``steps`` Langevin updates per chain."""
        self.langevin.set_steps(steps)

    def init(
        self, energy: EnergyFn, shape: tuple[int, ...], generator: torch.Generator, device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``shape[0]`` chain starts and the buffer slots they are written back to."""
        n = shape[0]
        index = torch.randint(
            self.buffer.shape[0], (n,), generator=generator, device=generator.device
        ).to(self.buffer.device)
        fresh = torch.rand(n, generator=generator, device=generator.device) < self.reinit
        noise = self.langevin.init(energy, (n, *self.buffer.shape[1:]), generator, device)
        start = self.buffer[index].to(device)
        fresh = fresh.to(device).reshape(n, *([1] * (start.ndim - 1)))
        return torch.where(fresh, noise, start), index

    def step(
        self,
        energy: EnergyFn,
        state: tuple[torch.Tensor, torch.Tensor],
        point: int,
        generator: torch.Generator,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One Langevin update of the chains."""
        x, index = state
        return self.langevin.step(energy, x, point, generator), index

    def output(self, energy: EnergyFn, state: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """Write the final states back to their buffer slots and return them.

        A slot drawn by several chains keeps the last of them (a deterministic write: an
        indexed assignment with repeated indices may keep any of them)."""
        x, index = state
        x = x.detach()
        positions = torch.arange(index.shape[0], device=index.device)
        last = torch.full((self.buffer.shape[0],), -1, dtype=torch.long, device=index.device)
        last.scatter_reduce_(0, index, positions, reduce="amax")
        slots = torch.nonzero(last >= 0).squeeze(1)
        self.buffer[slots] = x[last[slots].to(x.device)].to(self.buffer.device)
        return x
