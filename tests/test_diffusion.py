"""Closed-form checks of the Gaussian diffusion and its samplers (Ho et al. 2020; Song et al. 2021).

For data x_0 ~ N(m, s²) (per dimension) everything is Gaussian and linear: x_t ~ N(√ᾱ_t·m,
ᾱ_t·s² + 1 − ᾱ_t), and the optimal ε-predictor is the posterior mean
E[ε|x_t] = √(1 − ᾱ_t)·(x_t − √ᾱ_t·m)/(ᾱ_t·s² + 1 − ᾱ_t). Plugged into the samplers it must give
back N(m, s²).
"""

from __future__ import annotations

import math

import pytest
import torch

from geneval.sampling import draw
from geneval_plugins.models.diffusion.ddpm_samplers import (
    SAMPLER_FACTORIES,
    AncestralSampler,
    DDIMSampler,
)
from geneval_plugins.models.gaussian_diffusion import GaussianDiffusion, make_betas

CPU = torch.device("cpu")
F64 = torch.float64

MEAN, STD = 0.2, 0.3


class GaussianOptimalEps:
    """E[ε | x_t] for x_0 ~ N(mean, std²): the minimiser of L_simple for Gaussian data."""

    def __init__(self, diffusion: GaussianDiffusion, mean: float, std: float) -> None:
        self.abar = diffusion.alphas_cumprod
        self.mean, self.var = mean, std**2

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t.long() - 1].to(xt.dtype).view(-1, *([1] * (xt.ndim - 1)))
        return (1 - abar).sqrt() * (xt - abar.sqrt() * self.mean) / (abar * self.var + 1 - abar)


def _moments_close(x: torch.Tensor, mean: float, std: float, z: float = 4.5) -> None:
    """Sample mean and variance agree with (mean, std²) within ``z`` standard errors."""
    x = x.double().flatten()
    n = x.numel()
    assert abs(x.mean().item() - mean) < z * std / math.sqrt(n), (x.mean().item(), mean)
    var_se = std**2 * math.sqrt(2.0 / (n - 1))
    assert abs(x.var().item() - std**2) < z * var_se, (x.var().item(), std**2)


def test_linear_schedule_matches_ho_et_al():
    betas = make_betas("linear", 1000)
    assert betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(1e-4) and betas[-1].item() == pytest.approx(0.02)
    step = torch.full((999,), (0.02 - 1e-4) / 999, dtype=torch.float64)
    assert torch.allclose(betas.diff(), step)


def test_cosine_schedule_alpha_bar_follows_squared_cosine():
    big_t, s = 1000, 0.008
    diffusion = GaussianDiffusion(make_betas("cosine", big_t))
    t = torch.arange(1, big_t + 1, dtype=torch.float64)
    f = torch.cos((t / big_t + s) / (1 + s) * math.pi / 2) ** 2
    f = f / math.cos(s / (1 + s) * math.pi / 2) ** 2
    # β is clipped at 0.999 only at the very end, where ᾱ_t is already ~0.
    assert torch.allclose(diffusion.alphas_cumprod[:-1], f[:-1], rtol=1e-10, atol=1e-12)
    assert diffusion.betas.max().item() <= 0.999


def test_unknown_schedule_is_rejected():
    with pytest.raises(ValueError, match="cosine"):
        make_betas("quadratic", 10)


@pytest.mark.parametrize("t", [1, 10, 250, 1000])
def test_q_sample_matches_the_markov_chain_and_closed_form_moments(t: int):
    """Eq. 4 (one jump) vs eq. 2 iterated t times, and both vs the closed-form moments."""
    diffusion = GaussianDiffusion.from_schedule("linear", 1000)
    gen = torch.Generator().manual_seed(t)
    n, x0_value = 40000, 0.7
    x0 = torch.full((n, 1), x0_value, dtype=torch.float64)
    tt = torch.full((n,), t)
    jump = diffusion.q_sample(x0, tt, torch.randn(n, 1, generator=gen, dtype=torch.float64))
    chain = x0.clone()
    for beta in diffusion.betas[:t]:
        chain = (1 - beta).sqrt() * chain + beta.sqrt() * torch.randn(
            n, 1, generator=gen, dtype=torch.float64
        )
    abar = torch.prod(1 - diffusion.betas[:t]).item()
    mean, var = diffusion.q_mean_variance(x0[:1], tt[:1])
    assert mean.item() == pytest.approx(math.sqrt(abar) * x0_value, rel=1e-12)
    assert var.item() == pytest.approx(1 - abar, rel=1e-12)
    for draws in (jump, chain):
        _moments_close(draws, math.sqrt(abar) * x0_value, math.sqrt(1 - abar))


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("t", [2, 37, 500, 1000])
def test_posterior_equals_gaussian_conditioning(schedule: str, t: int):
    """q(x_{t−1}|x_t, x_0) of eqs. 6–7 vs conditioning the joint Gaussian of (x_{t−1}, x_t)."""
    diffusion = GaussianDiffusion.from_schedule(schedule, 1000)
    abar_prev = diffusion.alphas_cumprod[t - 2].item()
    beta = diffusion.betas[t - 1].item()
    x0 = torch.tensor([[-0.9], [0.1], [0.8]], dtype=torch.float64)
    xt = torch.tensor([[0.3], [-1.2], [2.0]], dtype=torch.float64)
    # x_{t−1} ~ N(√ᾱ_{t−1} x0, 1 − ᾱ_{t−1}); x_t = √α_t x_{t−1} + √β_t z.
    mu_prev, var_prev = math.sqrt(abar_prev) * x0, 1 - abar_prev
    mu_t = math.sqrt(1 - beta) * mu_prev
    var_t = (1 - beta) * var_prev + beta
    cov = math.sqrt(1 - beta) * var_prev
    want_mean = mu_prev + cov / var_t * (xt - mu_t)
    want_var = var_prev - cov**2 / var_t
    mean, var = diffusion.posterior_mean_variance(x0, xt, torch.full((3,), t))
    assert torch.allclose(mean, want_mean, rtol=1e-10, atol=1e-12)
    assert torch.allclose(var, torch.full_like(var, want_var), rtol=1e-8)
    # μ_θ of eq. 11 is the posterior mean at x̂_0 = predict_x0(x_t, ε).
    eps = torch.tensor([[0.5], [-0.2], [1.3]], dtype=torch.float64)
    tt = torch.full((3,), t)
    x0_hat = diffusion.predict_x0(xt, tt, eps)
    assert torch.allclose(
        diffusion.model_mean(xt, tt, eps),
        diffusion.posterior_mean_variance(x0_hat, xt, tt)[0],
        rtol=1e-10,
        atol=1e-12,
    )


def test_simple_loss_of_the_optimal_predictor_is_its_closed_form():
    """L_simple at ε* equals E_t[1 − (1 − ᾱ_t)/(ᾱ_t s² + 1 − ᾱ_t)] (the posterior variance of ε)."""
    diffusion = GaussianDiffusion.from_schedule("linear", 1000)
    eps = GaussianOptimalEps(diffusion, MEAN, STD)
    gen = torch.Generator().manual_seed(3)
    x0 = MEAN + STD * torch.randn(200000, 1, generator=gen, dtype=torch.float64)
    loss = diffusion.simple_loss(eps, x0, gen).item()
    abar = diffusion.alphas_cumprod
    v = 1 - (1 - abar) / (abar * STD**2 + 1 - abar)  # Var(ε | x_t) for each t
    want = v.mean().item()
    # each squared error is v_t·χ²₁ with a uniform t: second moment E[3·v_t²]
    se = math.sqrt((3 * v**2).mean().item() - want**2) / math.sqrt(x0.shape[0])
    assert abs(loss - want) < 4.5 * se, (loss, want, se)


@pytest.mark.parametrize(
    "make",
    [
        lambda d: AncestralSampler(d, variance="fixedlarge", clip_denoised=False, dtype=F64),
        lambda d: AncestralSampler(d, variance="fixedsmall", clip_denoised=False, dtype=F64),
        lambda d: DDIMSampler(d, steps=1000, eta=0.0, clip_denoised=False, dtype=F64),
        lambda d: DDIMSampler(
            d, steps=250, eta=1.0, skip="quadratic", clip_denoised=False, dtype=F64
        ),
    ],
    ids=["ancestral-fixedlarge", "ancestral-fixedsmall", "ddim1000", "ddim250-quadratic-eta1"],
)
def test_samplers_with_the_optimal_predictor_recover_the_data_distribution(make):
    diffusion = GaussianDiffusion.from_schedule("linear", 1000)
    sampler = make(diffusion)
    gen = torch.Generator().manual_seed(11)
    x = draw(sampler, GaussianOptimalEps(diffusion, MEAN, STD), (20000, 1, 1, 1), gen, device=CPU)
    assert x.dtype == F64
    _moments_close(x, MEAN, STD)


@pytest.mark.parametrize("skip", ["uniform", "quadratic"])
def test_ddim50_matches_its_exact_gaussian_pushforward(skip: str):
    """With η = 0 and ε*, each DDIM step is linear: with u_t = x_t − √ᾱ_t·m,
    u_{t'} = k·u_t, k = (√(ᾱ_{t'}ᾱ_t)·s² + √((1 − ᾱ_{t'})(1 − ᾱ_t)))/(ᾱ_t s² + 1 − ᾱ_t)
    (eq. 12). From x_T ~ N(0, 1) the samples are N(m − K·√ᾱ_T·m, K²), K = ∏k; with only 50 steps
    K² is visibly below s² (coarse steps shrink the variance), so this checks the update itself.
    """
    diffusion = GaussianDiffusion.from_schedule("linear", 1000)
    sampler = DDIMSampler(diffusion, steps=50, skip=skip, clip_denoised=False, dtype=F64)
    abar = diffusion.alphas_cumprod.tolist() + [1.0]  # index −1 (t = 0) is ᾱ_0 = 1
    var = STD**2
    big_k = 1.0
    for t in sampler.schedule:
        t_prev = sampler.previous(t)
        a, ap = abar[t - 1], abar[t_prev - 1]
        big_k *= (math.sqrt(ap * a) * var + math.sqrt((1 - ap) * (1 - a))) / (a * var + 1 - a)
    want_mean = MEAN - big_k * math.sqrt(abar[sampler.schedule[0] - 1]) * MEAN
    eps = GaussianOptimalEps(diffusion, MEAN, STD)
    x = draw(sampler, eps, (20000, 1, 1, 1), torch.Generator().manual_seed(2), device=CPU)
    assert big_k**2 < 0.97 * var  # the test is not vacuous: 50 steps do shrink the variance
    _moments_close(x, want_mean, big_k)


def test_ddim_timesteps():
    diffusion = GaussianDiffusion.from_schedule("linear", 1000)
    uniform = DDIMSampler(diffusion, steps=50).schedule
    assert uniform == list(range(981, 0, -20))
    quad = DDIMSampler(diffusion, steps=20, skip="quadratic").schedule
    assert len(quad) == 20 and quad[-1] == 1 and quad == sorted(quad, reverse=True)
    assert all(1 <= t <= 1000 for t in quad)
    gaps = [a - b for a, b in zip(quad, quad[1:], strict=False)]
    assert gaps == sorted(gaps, reverse=True)  # denser near t = 0
    with pytest.raises(ValueError, match="skip"):
        DDIMSampler(diffusion, steps=10, skip="cubic")
    with pytest.raises(ValueError, match="ddim"):
        SAMPLER_FACTORIES["ancestral"](diffusion).set_steps(50)


def test_one_table_names_the_ddpm_samplers():
    """The family, its training option and a model's samplers all read SAMPLER_FACTORIES."""
    from geneval_plugins.models.diffusion.ddpm import TRAIN_OPTIONS, DDPMFamily
    from geneval_plugins.models.diffusion.ddpm_model import DDPMModel

    names = tuple(SAMPLER_FACTORIES)
    assert names == ("ddim", "ancestral", "ancestral-fixedsmall")
    assert DDPMFamily.samplers == names and TRAIN_OPTIONS["sampler"].choices == names
    assert TRAIN_OPTIONS["sampler"].default == names[0]
    diffusion = GaussianDiffusion.from_schedule("linear", 100)
    model = DDPMModel(GaussianOptimalEps(diffusion, MEAN, STD), diffusion, {})
    assert tuple(model.factories) == names
    assert tuple(k for k in model.config["sampling"] if k != "sampler") == names
    fixedsmall = model.make_sampler("ancestral-fixedsmall")
    assert isinstance(fixedsmall, AncestralSampler) and fixedsmall.variance == "fixedsmall"
    assert model.make_sampler("ancestral").variance == "fixedlarge"
    default = model.make_sampler()
    assert isinstance(default, DDIMSampler) and len(default.schedule) == 50


def test_ddim_eta_one_on_every_step_is_ancestral_fixedsmall():
    """Song et al. (2021), eq. 16: η = 1 on all T steps gives σ_t² = β̃_t, i.e. DDPM (fixedsmall)."""
    diffusion = GaussianDiffusion.from_schedule("linear", 100)
    eps = GaussianOptimalEps(diffusion, MEAN, STD)
    shape = (64, 1, 2, 2)
    ddim = draw(
        DDIMSampler(diffusion, steps=100, eta=1.0, clip_denoised=False, dtype=F64),
        eps,
        shape,
        torch.Generator().manual_seed(5),
        device=CPU,
    )
    ancestral = draw(
        AncestralSampler(diffusion, variance="fixedsmall", clip_denoised=False, dtype=F64),
        eps,
        shape,
        torch.Generator().manual_seed(5),
        device=CPU,
    )
    assert torch.allclose(ddim, ancestral, rtol=1e-9, atol=1e-9)
