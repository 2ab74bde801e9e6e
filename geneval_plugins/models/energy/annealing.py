"""Annealing paths and their transition kernels, for annealed importance sampling of log Z.

Each path is a family of unnormalised densities f_β, β ∈ [0, 1], from a tractable base f_0
(normaliser exp(``log_z_base``), exact samples) to a model's f_1 = exp(−E(x)), with a Markov
kernel at every β that leaves f_β / Z_β invariant. They follow
:class:`geneval.capabilities.AnnealingPath`; a model offers
:class:`geneval.capabilities.SupportsAnnealing` by wiring its parameters into one of them:

* :class:`BernoulliRBMPath` — binary RBM, E(x, h) = −aᵀx − bᵀh − xᵀWh, from a base-rate
  Bernoulli fitted to the data; block Gibbs at every β (Salakhutdinov & Murray 2008, §3.1):
  f_β(x) = exp((1−β)·a₀ᵀx + β·aᵀx) · Π_j (1 + exp(β(b_j + (Wᵀx)_j))).
* :class:`GaussianRBMPath` — Gaussian–Bernoulli RBM with fixed σ,
  E(v, h) = ½‖(v − μ)/σ‖² − (v/σ²)ᵀWh − bᵀh, from a diagonal Gaussian N(m, s²) fitted to the
  data; block Gibbs at every β:
  f_β(v) = exp(−(1−β)·½‖(v − m)/s‖² − β·½‖(v − μ)/σ‖²) · Π_j (1 + exp(β(b + Wᵀ(v/σ²))_j)).
* :class:`EnergyPath` — any differentiable energy E(x), f_β(x) = f_0(x)^{1−β} exp(−βE(x)), from
  a :class:`DiagonalGaussianBase` fitted to the data, or, for a model that lives on a box such
  as [0, 1]^D, a :class:`TruncatedGaussianBase` fitted to the data or the
  :class:`UniformBoxBase`; Metropolis-adjusted Langevin (MALA, Roberts & Tweedie 1996)
  transitions, with proposals outside the box rejected, so Z stays the integral over the box
  (an unconstrained kernel would let a deep energy's Z diverge outside the data range).

Everything is computed in float64 (the parameters are copied), on the parameters' device.

References
----------
.. [1] R. M. Neal, "Annealed importance sampling", Statistics and Computing 11, 2001.
.. [2] R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep belief networks",
   ICML 2008.
.. [3] G. O. Roberts, R. L. Tweedie, "Exponential convergence of Langevin distributions and
   their discrete approximations", Bernoulli 2(4), 1996.
.. [4] Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse, "On the quantitative analysis of
   decoder-based generative models", ICLR 2017 (step-size adaptation during AIS).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

_DTYPE = torch.float64


def _f64(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to(_DTYPE)


def bernoulli(probs: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Independent Bernoulli(probs) draws as 0/1 in the dtype of ``probs`` (u < p, u ~ U[0, 1))."""
    u = torch.rand(probs.shape, generator=generator, device=probs.device, dtype=torch.float32)
    return (u < probs).to(probs.dtype)


class _HiddenInputCache:
    """b + Wᵀs(x) of the last states seen, keyed by the state tensor itself: the two densities
    of an AIS weight increment and the next Gibbs step share one matrix product."""

    def __init__(self) -> None:
        self.states: torch.Tensor | None = None
        self.value: torch.Tensor | None = None

    def get(self, states: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]):
        if self.states is not states:
            self.states, self.value = states, compute(states)
        return self.value


def base_rate_logits(data: torch.Tensor) -> torch.Tensor:
    """Logits of the smoothed per-unit base rates p_i = (Σ_n x_ni + ½) / (N + 1) of binary data.

    The maximum-likelihood product of Bernoullis, with half a pseudo-count per outcome so that
    a unit that is always 0 (or 1) in the data keeps a finite logit.
    """
    data = data.reshape(data.shape[0], -1).to(_DTYPE)
    rate = (data.sum(0) + 0.5) / (data.shape[0] + 1.0)
    return torch.logit(rate)


class BernoulliRBMPath:
    """AIS path from a base-rate Bernoulli to a binary RBM (Salakhutdinov & Murray 2008).

    log f_β(x) = (1−β)·a₀ᵀx + β·aᵀx + Σ_j softplus(β(b_j + (Wᵀx)_j)); the base (β = 0) is
    Π_i Bernoulli(x_i; sigmoid(a₀_i)) times 2^H, so log Z_0 = Σ_i softplus(a₀_i) + H·log 2, and
    β = 1 is the RBM's unnormalised marginal exp(−F(x)). The kernel at β is block Gibbs:
    h ~ Bernoulli(sigmoid(β(b + Wᵀx))), then x ~ Bernoulli(sigmoid((1−β)a₀ + β(a + Wh))).

    Parameters
    ----------
    weight, visible_bias, hidden_bias
        W (D, H), a (D,), b (H,).
    base_logits
        a₀ (D,), e.g. :func:`base_rate_logits` of the binarised data.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        visible_bias: torch.Tensor,
        hidden_bias: torch.Tensor,
        base_logits: torch.Tensor,
    ) -> None:
        self.weight, self.visible_bias = _f64(weight), _f64(visible_bias)
        self.hidden_bias = _f64(hidden_bias)
        self.base_logits = _f64(base_logits).to(self.weight.device)
        n_hidden = self.weight.shape[1]
        self.log_z_base = float(F.softplus(self.base_logits).sum()) + n_hidden * math.log(2.0)
        self._hidden = _HiddenInputCache()

    def _hidden_input(self, states: torch.Tensor) -> torch.Tensor:
        return self._hidden.get(states, lambda x: self.hidden_bias + x @ self.weight)

    @classmethod
    def from_data(
        cls,
        weight: torch.Tensor,
        visible_bias: torch.Tensor,
        hidden_bias: torch.Tensor,
        data: torch.Tensor,
    ) -> BernoulliRBMPath:
        """The path whose base is the base-rate Bernoulli of binary ``data`` (N, D)."""
        return cls(weight, visible_bias, hidden_bias, base_rate_logits(data))

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """x ~ Π_i Bernoulli(sigmoid(a₀_i)), shape (n, D)."""
        return bernoulli(torch.sigmoid(self.base_logits).expand(n, -1), generator)

    def log_density(self, states: torch.Tensor, beta: float) -> torch.Tensor:
        """log f_β(x), shape (M,)."""
        linear = states @ ((1.0 - beta) * self.base_logits + beta * self.visible_bias)
        return linear + F.softplus(beta * self._hidden_input(states)).sum(-1)

    def transition(
        self, states: torch.Tensor, beta: float, generator: torch.Generator
    ) -> torch.Tensor:
        """One block Gibbs step x → h → x′ at inverse temperature β."""
        h = bernoulli(torch.sigmoid(beta * self._hidden_input(states)), generator)
        logits = (1.0 - beta) * self.base_logits + beta * (self.visible_bias + h @ self.weight.T)
        return bernoulli(torch.sigmoid(logits), generator)


class GaussianRBMPath:
    """AIS path from a diagonal Gaussian N(m, s²) to a Gaussian–Bernoulli RBM with fixed σ.

    log f_β(v) = −(1−β)·½‖(v − m)/s‖² − β·½‖(v − μ)/σ‖² + Σ_j softplus(β(b + Wᵀ(v/σ²))_j);
    log Z_0 = Σ_i log(√(2π) s_i) + H·log 2, and β = 1 is the GRBM's exp(−F(v)). The kernel at β
    is block Gibbs: h ~ Bernoulli(sigmoid(β(b + Wᵀ(v/σ²)))), then v ~ N(mean, 1/λ) per pixel
    with λ = (1−β)/s² + β/σ² and mean = ((1−β)m/s² + β(μ + Wh)/σ²) / λ.

    Parameters
    ----------
    weight, visible_offset, hidden_bias, sigma
        W (D, H), μ (D,), b (H,), σ (D,) of the GRBM.
    base_mean, base_std
        m (D,), s (D,) > 0 of the base; see :meth:`from_data`.
    """

    def __init__(
        self,
        weight: torch.Tensor,
        visible_offset: torch.Tensor,
        hidden_bias: torch.Tensor,
        sigma: torch.Tensor,
        base_mean: torch.Tensor,
        base_std: torch.Tensor,
    ) -> None:
        self.weight, self.visible_offset = _f64(weight), _f64(visible_offset)
        self.hidden_bias = _f64(hidden_bias)
        device = self.weight.device
        self.sigma = _f64(sigma).to(device).expand(self.weight.shape[0])
        self.base_mean = _f64(base_mean).to(device)
        self.base_std = _f64(base_std).to(device)
        n_visible, n_hidden = self.weight.shape
        self.log_z_base = (
            0.5 * n_visible * math.log(2 * math.pi)
            + float(torch.log(self.base_std).sum())
            + n_hidden * math.log(2.0)
        )
        self._hidden = _HiddenInputCache()

    @classmethod
    def from_data(
        cls,
        weight: torch.Tensor,
        visible_offset: torch.Tensor,
        hidden_bias: torch.Tensor,
        sigma: torch.Tensor,
        data: torch.Tensor,
    ) -> GaussianRBMPath:
        """The path whose base is the data's per-pixel mean and standard deviation.

        s_i = max(sd_i, σ_i): every p(v | h) of the GRBM has variance σ², so a base narrower
        than σ (a constant pixel) would only slow the annealing.
        """
        data = data.reshape(data.shape[0], -1).to(_DTYPE)
        sigma = _f64(sigma).to(data.device).expand(data.shape[1])
        spread = data.std(0) if data.shape[0] > 1 else torch.zeros_like(sigma)
        return cls(
            weight, visible_offset, hidden_bias, sigma, data.mean(0), torch.maximum(spread, sigma)
        )

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """v ~ N(m, diag s²), shape (n, D)."""
        noise = torch.randn(
            (n, self.base_mean.shape[0]),
            generator=generator,
            device=self.base_mean.device,
            dtype=_DTYPE,
        )
        return self.base_mean + self.base_std * noise

    def _hidden_logits(self, states: torch.Tensor) -> torch.Tensor:
        return self._hidden.get(
            states, lambda v: self.hidden_bias + (v / self.sigma.pow(2)) @ self.weight
        )

    def log_density(self, states: torch.Tensor, beta: float) -> torch.Tensor:
        """log f_β(v), shape (M,)."""
        base = 0.5 * ((states - self.base_mean) / self.base_std).pow(2).sum(-1)
        model = 0.5 * ((states - self.visible_offset) / self.sigma).pow(2).sum(-1)
        hidden = F.softplus(beta * self._hidden_logits(states)).sum(-1)
        return -(1.0 - beta) * base - beta * model + hidden

    def transition(
        self, states: torch.Tensor, beta: float, generator: torch.Generator
    ) -> torch.Tensor:
        """One block Gibbs step v → h → v′ at inverse temperature β."""
        h = bernoulli(torch.sigmoid(beta * self._hidden_logits(states)), generator)
        base_precision = (1.0 - beta) / self.base_std.pow(2)
        model_precision = beta / self.sigma.pow(2)
        precision = base_precision + model_precision
        mean = (
            base_precision * self.base_mean
            + model_precision * (self.visible_offset + h @ self.weight.T)
        ) / precision
        noise = torch.randn(
            states.shape, generator=generator, device=states.device, dtype=states.dtype
        )
        return mean + noise / precision.sqrt()


class DiagonalGaussianBase:
    """The base N(m, diag s²) on all of ℝ^D: log f_0(x) = −½‖(x − m)/s‖²,
    log Z_0 = Σ log(√(2π) s_i). ``scale`` (= s) is the preconditioner :class:`EnergyPath` uses.
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.mean = _f64(mean)
        self.std = _f64(std).to(self.mean.device).expand(self.mean.shape)
        self.scale = self.std
        self.log_z = 0.5 * self.mean.numel() * math.log(2 * math.pi) + float(self.std.log().sum())

    @classmethod
    def fitted(cls, data: torch.Tensor, *, min_std: float = 1e-2) -> DiagonalGaussianBase:
        """Per-coordinate mean and standard deviation of ``data`` (N, ...), sd ≥ ``min_std``."""
        mean, std = _moments(data)
        return cls(mean, std.clamp(min=min_std))

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws, (n, ...)."""
        noise = torch.randn(
            (n, *self.mean.shape), generator=generator, device=self.mean.device, dtype=_DTYPE
        )
        return self.mean + self.std * noise

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log f_0(x), shape (M,)."""
        return -0.5 * ((x - self.mean) / self.std).pow(2).flatten(1).sum(-1)

    def grad_log_density(self, x: torch.Tensor) -> torch.Tensor:
        """∇ log f_0(x) = −(x − m)/s²."""
        return -(x - self.mean) / self.std.pow(2)

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """Every state is in the support."""
        return torch.ones(x.shape[0], dtype=torch.bool, device=x.device)


class TruncatedGaussianBase:
    """The base N(m, diag s²) restricted to the box [low, high]^D, for models on a box.

    log f_0(x) = −½‖(x − m)/s‖² inside the box (0 outside), and
    log Z_0 = Σ_i log(√(2π) s_i (Φ(b_i) − Φ(a_i))), a_i = (low − m_i)/s_i, b_i = (high − m_i)/s_i;
    exact draws by the inverse CDF. ``scale`` (= s) is the preconditioner of :class:`EnergyPath`,
    and proposals outside the box are rejected there.
    """

    def __init__(
        self, mean: torch.Tensor, std: torch.Tensor, *, low: float = 0.0, high: float = 1.0
    ) -> None:
        if not high > low:
            raise ValueError(f"the box needs high > low, got [{low}, {high}]")
        self.mean = _f64(mean)
        self.std = _f64(std).to(self.mean.device).expand(self.mean.shape)
        self.scale = self.std
        self.low, self.high = float(low), float(high)
        self._cdf_low = torch.special.ndtr((self.low - self.mean) / self.std)
        self._cdf_high = torch.special.ndtr((self.high - self.mean) / self.std)
        mass = self._cdf_high - self._cdf_low
        if bool((mass <= 0).any()):
            raise ValueError("the truncated Gaussian has no mass inside the box")
        self.log_z = float((math.log(math.sqrt(2 * math.pi)) + self.std.log() + mass.log()).sum())

    @classmethod
    def fitted(
        cls, data: torch.Tensor, *, low: float = 0.0, high: float = 1.0, min_std: float = 0.05
    ) -> TruncatedGaussianBase:
        """Per-coordinate mean and sd of ``data`` (N, ...), sd ≥ ``min_std``·(high − low).

        (The moments of the data, not the truncated family's maximum-likelihood fit: any base
        with full support on the box gives an unbiased Ẑ.)
        """
        mean, std = _moments(data)
        return cls(mean, std.clamp(min=min_std * (high - low)), low=low, high=high)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws x = m + s·Φ⁻¹(Φ(a) + u (Φ(b) − Φ(a))), u ~ U(0, 1)."""
        u = torch.rand(
            (n, *self.mean.shape), generator=generator, device=self.mean.device, dtype=_DTYPE
        )
        p = self._cdf_low + u * (self._cdf_high - self._cdf_low)
        x = self.mean + self.std * torch.special.ndtri(p)
        return x.clamp(self.low, self.high)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log f_0(x) (inside the box), shape (M,)."""
        return -0.5 * ((x - self.mean) / self.std).pow(2).flatten(1).sum(-1)

    def grad_log_density(self, x: torch.Tensor) -> torch.Tensor:
        """∇ log f_0(x) = −(x − m)/s² (inside the box)."""
        return -(x - self.mean) / self.std.pow(2)

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """Whether each state lies in the box, shape (M,)."""
        flat = x.flatten(1)
        return ((flat >= self.low) & (flat <= self.high)).all(-1)


class UniformBoxBase:
    """The uniform base on the box [low, high]^shape: log f_0 = 0 inside,
    log Z_0 = D·log(high − low); proposals outside the box are rejected.

    ``scale`` is the per-coordinate preconditioner of :class:`EnergyPath`: (high − low) unless
    given (e.g. the data's spread, when the model's mass is far narrower than the box).
    """

    def __init__(
        self,
        shape: tuple[int, ...],
        *,
        low: float = 0.0,
        high: float = 1.0,
        scale: torch.Tensor | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        if not high > low:
            raise ValueError(f"the box needs high > low, got [{low}, {high}]")
        self.shape, self.low, self.high = tuple(shape), float(low), float(high)
        self.device = torch.device(device)
        width = torch.full(self.shape, self.high - self.low, dtype=_DTYPE, device=self.device)
        self.scale = width if scale is None else _f64(scale).to(self.device).expand(self.shape)
        self.log_z = math.prod(self.shape) * math.log(self.high - self.low)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` uniform draws in the box."""
        u = torch.rand((n, *self.shape), generator=generator, device=self.device, dtype=_DTYPE)
        return self.low + (self.high - self.low) * u

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """log f_0(x) = 0 (inside the box), shape (M,)."""
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)

    def grad_log_density(self, x: torch.Tensor) -> torch.Tensor:
        """∇ log f_0 = 0."""
        return torch.zeros_like(x)

    def contains(self, x: torch.Tensor) -> torch.Tensor:
        """Whether each state lies in the box, shape (M,)."""
        flat = x.flatten(1)
        return ((flat >= self.low) & (flat <= self.high)).all(-1)


def _moments(data: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-coordinate mean and standard deviation (n − 1) of ``data`` (N, ...), float64."""
    data = _f64(data)
    std = data.std(0) if data.shape[0] > 1 else torch.zeros_like(data[0])
    return data.mean(0), std


class EnergyPath:
    """AIS path f_β(x) = f_0(x)^{1−β}·exp(−β E(x)) with Metropolis-adjusted Langevin moves.

    The MALA proposal at β, preconditioned by the base's per-coordinate scale c, is
    x′ = x + ε c² ∇log f_β(x) + √(2ε) c ξ, accepted with probability
    min(1, f_β(x′) q(x | x′) / (f_β(x) q(x′ | x))); a proposal outside the base's support (the
    box of :class:`UniformBoxBase`) is rejected, which is exact Metropolis–Hastings for a
    target restricted to the box. ε is adapted after every move towards ``target_accept``
    (×1.02 or ÷1.02 on the acceptance rate of all runs, as Wu et al. 2017 do for HMC), which
    keeps the kernels efficient along the path at the price of a small, usually negligible,
    dependence between runs.

    The energy and its gradient at the current states are cached (keyed by the state tensor
    :meth:`transition` returned), so a move costs one energy and one gradient evaluation.

    Parameters
    ----------
    energy
        E: states (M, ...) float64 → (M,), differentiable in the states.
    base
        :class:`DiagonalGaussianBase`, :class:`TruncatedGaussianBase` or
        :class:`UniformBoxBase` (the last two restrict the path to their box).
    step_size
        The initial ε (relative to the base's scale).
    target_accept
        The acceptance rate ε is adapted to (0.574 is optimal for MALA, Roberts & Rosenthal
        1998); ``None`` keeps ε fixed.
    """

    def __init__(
        self,
        energy: Callable[[torch.Tensor], torch.Tensor],
        base: DiagonalGaussianBase | TruncatedGaussianBase | UniformBoxBase,
        *,
        step_size: float = 0.01,
        target_accept: float | None = 0.574,
    ) -> None:
        self.energy, self.base = energy, base
        self.log_z_base = float(base.log_z)
        self.step_size = float(step_size)
        self.target_accept = target_accept
        self.accept_rates: list[float] = []
        self._cache: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Exact draws from the base."""
        return self.base.sample(n, generator)

    def _energy_and_grads(
        self, states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """E(x), ∇E(x), log f_0(x), ∇log f_0(x) at ``states`` (cached for the last states)."""
        cache = self._cache
        if cache is not None and cache[0] is states:
            return cache[1], cache[2], cache[3], self.base.grad_log_density(states)
        with torch.enable_grad():
            x = states.detach().requires_grad_(True)
            energy = self.energy(x).to(_DTYPE)
            (grad,) = torch.autograd.grad(energy.sum(), x)
        energy = energy.detach()
        base = self.base.log_density(states)
        self._cache = (states, energy, grad, base)
        return energy, grad, base, self.base.grad_log_density(states)

    def log_density(self, states: torch.Tensor, beta: float) -> torch.Tensor:
        """log f_β(x) = (1−β) log f_0(x) − β E(x), shape (M,)."""
        energy, _, base, _ = self._energy_and_grads(states)
        return (1.0 - beta) * base - beta * energy

    def transition(
        self, states: torch.Tensor, beta: float, generator: torch.Generator
    ) -> torch.Tensor:
        """One MALA move at β (proposals outside the base's support are rejected)."""
        eps, c2 = self.step_size, self.base.scale.pow(2)
        energy, grad_e, base, grad_b = self._energy_and_grads(states)
        log_f = (1.0 - beta) * base - beta * energy
        drift = (1.0 - beta) * grad_b - beta * grad_e
        noise = torch.randn(
            states.shape, generator=generator, device=states.device, dtype=states.dtype
        )
        proposal = states + eps * c2 * drift + math.sqrt(2 * eps) * self.base.scale * noise
        inside = self.base.contains(proposal)
        # Outside the support f_β = 0: such proposals are rejected below, and the energy is
        # evaluated at the current state in their place, so the network never sees them.
        safe = torch.where(inside.view(-1, *[1] * (states.ndim - 1)), proposal, states)
        new_energy, new_grad_e, new_base, new_grad_b = self._energy_and_grads(safe)
        new_log_f = (1.0 - beta) * new_base - beta * new_energy
        new_drift = (1.0 - beta) * new_grad_b - beta * new_grad_e
        forward = -((proposal - states - eps * c2 * drift).pow(2) / c2).flatten(1).sum(-1)
        backward = -((states - safe - eps * c2 * new_drift).pow(2) / c2).flatten(1).sum(-1)
        log_accept = new_log_f - log_f + (backward - forward) / (4 * eps)
        u = torch.rand(states.shape[0], generator=generator, device=states.device, dtype=_DTYPE)
        accept = inside & (torch.log(u) < log_accept)
        mask = accept.view(-1, *[1] * (states.ndim - 1))
        out = torch.where(mask, safe, states)
        self._cache = (
            out,
            torch.where(accept, new_energy, energy),
            torch.where(mask, new_grad_e, grad_e),
            torch.where(accept, new_base, base),
        )
        rate = float(accept.to(_DTYPE).mean())
        self.accept_rates.append(rate)
        if self.target_accept is not None:
            self.step_size *= 1.02 if rate > self.target_accept else 1 / 1.02
        return out
