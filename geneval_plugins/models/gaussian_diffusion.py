"""Gaussian diffusion in closed form: noise schedules, q(x_t|x_0), the posterior, the bound.

Notation of Ho et al. (2020): β_t for t = 1..T, α_t = 1 − β_t, ᾱ_t = ∏_{s≤t} α_s. Tensors
are indexed by ``t − 1`` (index 0 is t = 1). Everything here is in the model's data space
``[-1, 1]``; models map ``[0, 1]`` images there with x ↦ 2x − 1. The schedule is kept in
float64 and the per-timestep coefficients are cast to the data's dtype where they are used.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
.. [2] A. Nichol, P. Dhariwal, "Improved Denoising Diffusion Probabilistic Models", ICML 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from geneval_plugins.models.diffusion_schedules import SCHEDULES

if TYPE_CHECKING:
    from geneval.plugin import ProbabilityFlowSDE

#: An ε-predictor: ``eps(x_t, t)`` with integer timesteps ``t`` in 1..T, one per image.
EpsPredictor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_betas(
    schedule: str,
    num_timesteps: int,
    *,
    beta_start: float = 1e-4,
    beta_end: float = 0.02,
    cosine_offset: float = 0.008,
    max_beta: float = 0.999,
) -> torch.Tensor:
    """The variance schedule β_1..β_T in float64.

    ``linear``: β_t rises linearly from ``beta_start`` to ``beta_end`` (Ho et al. 2020, §4,
    with β_1 = 1e-4, β_T = 0.02 for T = 1000). ``cosine``: ᾱ_t = f(t)/f(0) with
    f(t) = cos²(((t/T) + s)/(1 + s) · π/2), s = ``cosine_offset``, and
    β_t = 1 − ᾱ_t/ᾱ_{t−1} clipped at ``max_beta`` (Nichol & Dhariwal 2021, eq. 17).

    References
    ----------
    Ho et al. (2020), §4; Nichol & Dhariwal (2021), §3.2, eq. 17.
    """
    if num_timesteps < 1:
        raise ValueError(f"number of timesteps must be positive, got {num_timesteps}")
    if schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_timesteps, dtype=torch.float64)
    if schedule == "cosine":
        steps = torch.arange(num_timesteps + 1, dtype=torch.float64) / num_timesteps
        f = torch.cos((steps + cosine_offset) / (1 + cosine_offset) * math.pi / 2) ** 2
        alpha_bar = f / f[0]
        return (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(max=max_beta)
    raise ValueError(f"unknown noise schedule {schedule!r} (choose from {', '.join(SCHEDULES)})")


def at_timesteps(values: torch.Tensor, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[t − 1]`` for integer timesteps ``t`` (N,), shaped to broadcast over ``like``."""
    out = values.to(like.device)[t.long() - 1].to(like.dtype)
    return out.reshape(-1, *([1] * (like.ndim - 1)))


@dataclass(frozen=True)
class GaussianDiffusion:
    """The forward process q(x_{1:T}|x_0) of a β schedule, with its closed forms.

    Parameters
    ----------
    betas
        β_1..β_T (float64), e.g. from :func:`make_betas`.
    """

    betas: torch.Tensor

    def __post_init__(self) -> None:
        betas = self.betas.to(torch.float64)
        if betas.ndim != 1 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-d tensor with values in (0, 1)")
        object.__setattr__(self, "betas", betas)

    @classmethod
    def from_schedule(cls, schedule: str, num_timesteps: int) -> GaussianDiffusion:
        """The diffusion of :func:`make_betas` ``(schedule, num_timesteps)``."""
        return cls(make_betas(schedule, num_timesteps))

    @property
    def num_timesteps(self) -> int:
        return self.betas.shape[0]

    @property
    def alphas(self) -> torch.Tensor:
        """α_t = 1 − β_t."""
        return 1.0 - self.betas

    @property
    def alphas_cumprod(self) -> torch.Tensor:
        """ᾱ_t = ∏_{s=1}^t α_s (float64)."""
        return torch.cumprod(self.alphas, dim=0)

    @property
    def alphas_cumprod_prev(self) -> torch.Tensor:
        """ᾱ_{t−1}, with ᾱ_0 = 1."""
        return torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])

    @property
    def posterior_variance(self) -> torch.Tensor:
        """β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t) · β_t (Ho et al. 2020, eq. 7); β̃_1 = 0."""
        return (1 - self.alphas_cumprod_prev) / (1 - self.alphas_cumprod) * self.betas

    def reverse_variance(self, kind: str) -> torch.Tensor:
        """σ_t² of p_θ(x_{t−1}|x_t) for ``fixedlarge`` (β_t) or ``fixedsmall`` (β̃_t).

        Ho et al. (2020, §3.2) note both extremes give similar samples. As in their code, σ_1²
        is β̃_2 for both choices, so that the decoder p_θ(x_0|x_1) has a usable variance
        (β̃_1 = 0).
        """
        small = self.posterior_variance
        if kind == "fixedsmall":
            var = small.clone()
        elif kind == "fixedlarge":
            var = self.betas.clone()
        else:
            raise ValueError(f"unknown variance {kind!r} (choose from fixedlarge, fixedsmall)")
        if self.num_timesteps > 1:
            var[0] = small[1]
        else:
            var[0] = self.betas[0]
        return var

    # -- q(x_t | x_0) -------------------------------------------------------------------------
    def q_mean_variance(
        self, x0: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean √ᾱ_t·x_0 and variance (1 − ᾱ_t) of q(x_t|x_0) (Ho et al. 2020, eq. 4)."""
        abar = at_timesteps(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0, (1 - abar).expand_as(x0)

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε, a draw from q(x_t|x_0) (Ho et al. 2020, eq. 4)."""
        abar = at_timesteps(self.alphas_cumprod, t, x0)
        return abar.sqrt() * x0 + (1 - abar).sqrt() * noise

    def predict_x0(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x̂_0 = (x_t − √(1 − ᾱ_t)·ε)/√ᾱ_t, eq. 4 solved for x_0 (Ho et al. 2020, §3.2)."""
        abar = at_timesteps(self.alphas_cumprod, t, xt)
        return (xt - (1 - abar).sqrt() * eps) / abar.sqrt()

    # -- q(x_{t-1} | x_t, x_0) ----------------------------------------------------------------
    def posterior_mean_variance(
        self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and variance of the posterior q(x_{t−1}|x_t, x_0) (Ho et al. 2020, eqs. 6–7).

        μ̃_t = √ᾱ_{t−1}·β_t/(1 − ᾱ_t)·x_0 + √α_t·(1 − ᾱ_{t−1})/(1 − ᾱ_t)·x_t and
        β̃_t = (1 − ᾱ_{t−1})/(1 − ᾱ_t)·β_t.
        """
        abar = at_timesteps(self.alphas_cumprod, t, xt)
        abar_prev = at_timesteps(self.alphas_cumprod_prev, t, xt)
        beta = at_timesteps(self.betas, t, xt)
        coef_x0 = abar_prev.sqrt() * beta / (1 - abar)
        coef_xt = (1 - beta).sqrt() * (1 - abar_prev) / (1 - abar)
        var = at_timesteps(self.posterior_variance, t, xt)
        return coef_x0 * x0 + coef_xt * xt, var.expand_as(xt)

    def model_mean(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """μ_θ(x_t, t) = (x_t − β_t/√(1 − ᾱ_t)·ε_θ)/√α_t (Ho et al. 2020, eq. 11).

        Equal to the posterior mean μ̃_t evaluated at x̂_0 of :meth:`predict_x0`.
        """
        abar = at_timesteps(self.alphas_cumprod, t, xt)
        beta = at_timesteps(self.betas, t, xt)
        return (xt - beta / (1 - abar).sqrt() * eps) / (1 - beta).sqrt()

    # -- training -----------------------------------------------------------------------------
    def simple_loss(
        self, eps_model: EpsPredictor, x0: torch.Tensor, generator: torch.Generator
    ) -> torch.Tensor:
        """L_simple = E_{t, x_0, ε} ‖ε − ε_θ(√ᾱ_t x_0 + √(1 − ᾱ_t) ε, t)‖² (Ho et al. 2020, eq. 14).

        t is uniform on 1..T; the squared error is averaged over pixels and the batch.
        """
        n = x0.shape[0]
        t = torch.randint(
            1, self.num_timesteps + 1, (n,), generator=generator, device=generator.device
        ).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
        xt = self.q_sample(x0, t, noise)
        return (eps_model(xt, t) - noise).pow(2).mean()


# -- the variational bound -------------------------------------------------------------------


def normal_kl(
    mean1: torch.Tensor, var1: torch.Tensor, mean2: torch.Tensor, var2: torch.Tensor
) -> torch.Tensor:
    """Elementwise KL(N(mean1, var1) ‖ N(mean2, var2)) in nats.

    ½·[log(var2/var1) + (var1 + (mean1 − mean2)²)/var2 − 1].
    """
    return 0.5 * (torch.log(var2 / var1) + (var1 + (mean1 - mean2) ** 2) / var2 - 1.0)


def _std_normal_cdf(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.special.erfc(-x / math.sqrt(2.0))


def discretized_gaussian_log_likelihood(
    x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor, *, bins: int = 256
) -> torch.Tensor:
    """Elementwise log p(x) of the discretised Gaussian decoder (Ho et al. 2020, eq. 13).

    The data ``x`` lie in [−1, 1]; the decoder gives each value the mass of N(mean, e^{2·log_scale})
    over [x − 1/(bins − 1), x + 1/(bins − 1)], with the lower edge at −∞ for x = −1 and the upper
    edge at +∞ for x = 1 (``bins = 256`` for 8-bit images, the paper's convention). Computed in
    float64 with the log-CDF terms floored at 1e−12, as in the authors' code.

    References
    ----------
    Ho et al. (2020), §3.3, eq. 13.
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    x64, mean64 = x.to(torch.float64), mean.to(torch.float64)
    inv_std = torch.exp(-log_scale.to(torch.float64))
    half_width = 1.0 / (bins - 1)
    cdf_plus = _std_normal_cdf(inv_std * (x64 - mean64 + half_width))
    cdf_min = _std_normal_cdf(inv_std * (x64 - mean64 - half_width))
    edge = 1.0 - 0.5 * half_width
    log_cdf_plus = torch.log(cdf_plus.clamp(min=1e-12))
    log_one_minus_cdf_min = torch.log((1.0 - cdf_min).clamp(min=1e-12))
    log_delta = torch.log((cdf_plus - cdf_min).clamp(min=1e-12))
    return torch.where(
        x64 < -edge, log_cdf_plus, torch.where(x64 > edge, log_one_minus_cdf_min, log_delta)
    )


def prior_kl(diffusion: GaussianDiffusion, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T|x_0) ‖ N(0, I)) per image in nats, summed over dimensions (eq. 5)."""
    t = torch.full((x0.shape[0],), diffusion.num_timesteps, device=x0.device, dtype=torch.long)
    mean, var = diffusion.q_mean_variance(x0.to(torch.float64), t)
    zero = torch.zeros_like(mean)
    return normal_kl(mean, var, zero, torch.ones_like(var)).flatten(1).sum(1)


def bound_term(
    diffusion: GaussianDiffusion,
    eps_model: EpsPredictor,
    x0: torch.Tensor,
    t: torch.Tensor,
    generator: torch.Generator,
    *,
    variance: str,
    bins: int = 256,
) -> torch.Tensor:
    """One term of the bound per image, in nats, for timesteps ``t`` (N,) in 1..T.

    With x_t drawn from q(x_t|x_0) using ``generator``: for t > 1,
    L_{t−1} = KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)) with p_θ = N(μ_θ(x_t, t), σ_t²)
    (eqs. 5, 11); for t = 1, L_0 = −log p_θ(x_0|x_1), the discretised Gaussian decoder with mean
    μ_θ(x_1, 1) and variance σ_1² (eq. 13). Summed over dimensions; the KL is in float64.

    References
    ----------
    Ho et al. (2020), eq. 5 and §3.3.
    """
    noise = torch.randn(x0.shape, generator=generator, device=generator.device).to(x0)
    # x_t in float64, rounded once to the network's dtype: in float32, 1 − ᾱ_t at small t
    # (≈ β_1 = 1e−4) would lose about four digits, and with them the noise scale of the draw
    x0_64 = x0.to(torch.float64)
    xt = diffusion.q_sample(x0_64, t, noise.to(torch.float64)).to(x0.dtype)
    eps = eps_model(xt, t)
    xt_64 = xt.to(torch.float64)
    mean_model = diffusion.model_mean(xt_64, t, eps.to(torch.float64))
    var_model = at_timesteps(diffusion.reverse_variance(variance), t, xt_64).expand_as(xt_64)
    mean_q, var_q = diffusion.posterior_mean_variance(x0_64, xt_64, t)
    first = t == 1
    # For t = 1 the posterior variance is 0; use 1 there so the (discarded) KL stays finite.
    kl = normal_kl(
        mean_q,
        torch.where(first.view(-1, *([1] * (x0.ndim - 1))), 1.0, var_q),
        mean_model,
        var_model,
    )
    nll = -discretized_gaussian_log_likelihood(
        x0_64, mean_model, 0.5 * torch.log(var_model), bins=bins
    )
    per_dim = torch.where(first.view(-1, *([1] * (x0.ndim - 1))), nll, kl)
    return per_dim.flatten(1).sum(1)


@dataclass(frozen=True)
class BoundEstimate:
    """A per-image estimate of the negative ELBO in nats (sum of its parts)."""

    prior: torch.Tensor  # L_T (N,)
    decoder: torch.Tensor  # L_0 (N,)
    diffusion: torch.Tensor  # Σ_{t=2}^T L_{t−1} (N,), exact or stratified Monte-Carlo

    @property
    def total(self) -> torch.Tensor:
        return self.prior + self.decoder + self.diffusion


def negative_elbo(
    diffusion: GaussianDiffusion,
    eps_model: EpsPredictor,
    x0: torch.Tensor,
    generator: torch.Generator,
    *,
    variance: str,
    timesteps: int | None = None,
    bins: int = 256,
) -> BoundEstimate:
    """−ELBO = L_T + Σ_{t=2}^T L_{t−1} + L_0 per image, in nats (Ho et al. 2020, eq. 5).

    L_T and L_0 are always evaluated. The T − 1 KL terms are summed exactly when ``timesteps``
    is ``None`` or ≥ T − 1 (T network passes per image); otherwise 2..T is cut into ``timesteps``
    contiguous strata of near-equal size n_k, one t_k is drawn uniformly in each (independently
    per image), and Σ_k n_k·L_{t_k − 1} is used: an unbiased stratified Monte-Carlo estimate of
    the sum. Every x_t ~ q(x_t|x_0) is drawn from ``generator``.

    References
    ----------
    Ho et al. (2020), eq. 5; Sohl-Dickstein et al. (2015), App. B.
    """
    n, big_t = x0.shape[0], diffusion.num_timesteps
    device = x0.device
    prior = prior_kl(diffusion, x0)
    ones = torch.ones(n, dtype=torch.long, device=device)
    decoder = bound_term(diffusion, eps_model, x0, ones, generator, variance=variance, bins=bins)
    total = torch.zeros(n, dtype=torch.float64, device=device)
    if big_t > 1:
        if timesteps is None or timesteps >= big_t - 1:
            for t in range(2, big_t + 1):
                total += bound_term(
                    diffusion, eps_model, x0, ones * t, generator, variance=variance, bins=bins
                )
        else:
            if timesteps < 1:
                raise ValueError(f"timesteps must be positive, got {timesteps}")
            edges = torch.linspace(2, big_t + 1, timesteps + 1, dtype=torch.float64).round().long()
            for lo, hi in zip(edges[:-1].tolist(), edges[1:].tolist(), strict=True):
                size = hi - lo
                u = torch.randint(0, size, (n,), generator=generator, device=generator.device)
                t = lo + u.to(device)
                total += size * bound_term(
                    diffusion, eps_model, x0, t, generator, variance=variance, bins=bins
                )
    return BoundEstimate(prior=prior, decoder=decoder, diffusion=total)


def image_elbo(
    diffusion: GaussianDiffusion,
    eps_model: EpsPredictor,
    images: torch.Tensor,
    generator: torch.Generator,
    *,
    device: torch.device,
    variance: str,
    timesteps: int,
    bins: int = 256,
) -> torch.Tensor:
    """ELBO in nats of each image in ``[0, 1]``: −:func:`negative_elbo` of x_0 = 2x − 1 on
    ``device`` (float32), with ``timesteps`` KL strata (0: all T − 1 terms). The one bound of
    every DDPM-type model (the bundled ``ddpm``, diffusers pipelines)."""
    x0 = images.to(device, torch.float32) * 2 - 1
    bound = negative_elbo(
        diffusion,
        eps_model,
        x0,
        generator,
        variance=variance,
        timesteps=timesteps or None,
        bins=bins,
    )
    return -bound.total


# -- the probability-flow SDE of a linear β schedule -------------------------------------------


def linear_vp_sde(betas: torch.Tensor) -> ProbabilityFlowSDE | None:
    """The VP SDE of a linear discrete schedule (capability ``probability_flow``), else None.

    The discrete β_i = β_1 + (β_T − β_1)(i − 1)/(T − 1) are a VP SDE with β(t) linear from
    T·β_1 to T·β_T over t ∈ [0, 1] (Song et al. 2021, App. B: β_min = 0.1, β_max = 20 for Ho et
    al.'s 1e-4, 0.02 and T = 1000); t runs from 1e-5 to 1 and images y ↦ 2y − 1. Other
    schedules (cosine) have no such form here.
    """
    from geneval.plugin import ProbabilityFlowSDE

    # linear to the rounding of the type the schedule was made in (diffusers: float32)
    rtol = 1e-9 if betas.dtype == torch.float64 else 8 * torch.finfo(betas.dtype).eps
    betas = betas.to(torch.float64).cpu()
    steps = betas.numel()
    if steps < 2:
        return None
    line = torch.linspace(float(betas[0]), float(betas[-1]), steps, dtype=torch.float64)
    if not torch.allclose(betas, line, rtol=rtol, atol=1e-12):
        return None
    return ProbabilityFlowSDE(
        "vp",
        beta_min=steps * float(betas[0]),
        beta_max=steps * float(betas[-1]),
        eps=1e-5,
        t_end=1.0,
        data_scale=2.0,
        data_shift=-1.0,
    )


def vp_score(eps: torch.Tensor, t: torch.Tensor, sde: ProbabilityFlowSDE) -> torch.Tensor:
    """The score of a VP SDE from an ε-prediction at continuous times t (N,):
    s = −ε/√(1 − α(t)²) (Song et al. 2021, App. B; :meth:`ProbabilityFlowSDE.marginal_std`)."""
    std = sde.marginal_std(t.to(eps.dtype))
    return -eps / std.reshape(-1, *([1] * (eps.ndim - 1)))
