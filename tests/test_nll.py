"""The DDPM variational bound (Ho et al. 2020, eq. 5) against its closed form for Gaussian data.

For x_0 ~ N(m, s²) per dimension and the optimal ε-predictor, μ_θ(x_t, t) is the posterior mean
μ̃_t evaluated at E[x_0|x_t], so (μ̃_t − μ_θ)² = c_t²·(x_0 − E[x_0|x_t])² with
c_t = √ᾱ_{t−1}·β_t/(1 − ᾱ_t) and E(x_0 − E[x_0|x_t])² = V_t = s²(1 − ᾱ_t)/(ᾱ_t s² + 1 − ᾱ_t). Hence

* L_T = ½[−log(1 − ᾱ_T) + (1 − ᾱ_T) + ᾱ_T(m² + s²) − 1],
* E L_{t−1} = ½[log(σ_t²/β̃_t) + β̃_t/σ_t² − 1 + c_t² V_t/σ_t²] for t ≥ 2,
* E L_0 = E_d[−log(Φ((d + δ)/σ_1) − Φ((d − δ)/σ_1))], d ~ N(0, V_1), δ = 1/255
  (away from ±1), a one-dimensional Gauss–Hermite quadrature,

per dimension in nats. The test recomputes every schedule quantity from β itself.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy.special import ndtr

from geneval.api import Need
from geneval.capabilities import SupportsELBO
from geneval.plugins import get_registry
from geneval_plugins.metrics.likelihood.nll import NegativeLogLikelihood
from geneval_plugins.models.diffusion.ddpm_model import DDPMModel
from geneval_plugins.models.gaussian_diffusion import GaussianDiffusion, make_betas
from tests.stub_inputs import compute

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics

MEAN, STD = 0.0, 0.2  # in the model's data space [−1, 1]; P(|x_0| > 0.99) ≈ 1e-6


class GaussianOptimalEps:
    """E[ε | x_t] for x_0 ~ N(mean, std²): the minimiser of L_simple for Gaussian data."""

    def __init__(self, diffusion: GaussianDiffusion, mean: float, std: float) -> None:
        self.abar = diffusion.alphas_cumprod
        self.mean, self.var = mean, std**2

    def __call__(self, xt: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        abar = self.abar[t.long() - 1].to(xt.dtype).view(-1, *([1] * (xt.ndim - 1)))
        return (1 - abar).sqrt() * (xt - abar.sqrt() * self.mean) / (abar * self.var + 1 - abar)


def closed_form_bits_per_dim(betas: np.ndarray, variance: str, mean: float, std: float) -> float:
    """Expected negative ELBO per dimension of N(mean, std²) data under the optimal model."""
    big_t = len(betas)
    abar = np.cumprod(1 - betas)
    abar_prev = np.concatenate([[1.0], abar[:-1]])
    tilde = (1 - abar_prev) / (1 - abar) * betas
    sigma2 = betas.copy() if variance == "fixedlarge" else tilde.copy()
    sigma2[0] = tilde[1]
    s2 = std**2
    post_var_x0 = s2 * (1 - abar) / (abar * s2 + 1 - abar)
    prior = 0.5 * (-np.log(1 - abar[-1]) + (1 - abar[-1]) + abar[-1] * (mean**2 + s2) - 1)
    t = np.arange(1, big_t)  # indices of t = 2..T
    c = np.sqrt(abar_prev[t]) * betas[t] / (1 - abar[t])
    kl = 0.5 * (
        np.log(sigma2[t] / tilde[t]) + tilde[t] / sigma2[t] - 1 + c**2 * post_var_x0[t] / sigma2[t]
    )
    nodes, weights = np.polynomial.hermite_e.hermegauss(100)
    d = np.abs(nodes) * math.sqrt(post_var_x0[0])  # the integrand is even in d; |d| avoids 1 − 1
    half, sd = 1 / 255, math.sqrt(sigma2[0])
    decoder = -(weights * np.log(ndtr((half - d) / sd) - ndtr((-half - d) / sd))).sum() / math.sqrt(
        2 * math.pi
    )
    return float((prior + kl.sum() + decoder) / math.log(2))


def _gaussian_model(big_t: int = 1000) -> DDPMModel:
    diffusion = GaussianDiffusion(make_betas("linear", big_t))
    return DDPMModel(GaussianOptimalEps(diffusion, MEAN, STD), diffusion, {}, image_shape=(1, 4, 4))


def _gaussian_images(n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    x0 = MEAN + STD * torch.randn(n, 1, 4, 4, generator=gen, dtype=torch.float64)
    return ((x0 + 1) / 2).float()  # the model maps [0, 1] → [−1, 1]


@pytest.mark.parametrize("variance", ["fixedsmall", "fixedlarge"])
@pytest.mark.parametrize("timesteps", [None, 25])
def test_gaussian_elbo_matches_closed_form(variance: str, timesteps: int | None):
    model = _gaussian_model()
    images = _gaussian_images(1000, seed=1)
    # the images pass through float32; the float64 closed form uses the same draws' law
    elbo = model.elbo(
        images,
        generator=torch.Generator().manual_seed(2),
        timesteps=timesteps or 0,
        variance=variance,
    )
    bpd = -elbo / (16 * math.log(2))  # D = 1·4·4
    want = closed_form_bits_per_dim(model.diffusion.betas.numpy(), variance, MEAN, STD)
    se = bpd.std().item() / math.sqrt(bpd.numel())
    assert bpd.dtype == torch.float64 and bpd.shape == (1000,)
    assert abs(bpd.mean().item() - want) < 4.5 * se, (bpd.mean().item(), want, se)
    # the bound is informative: bits/dim of a Gaussian of std 0.2 on a 2/255 grid is about
    # log2(0.2·√(2πe)/(2/255)) ≈ 6.7, and the ELBO sits a little above it
    continuous = math.log2(STD * 0.5 * math.sqrt(2 * math.pi * math.e) * 255)
    assert continuous < want < continuous + 1.0


def test_stratified_estimate_has_small_error_and_full_sum_is_deterministic_given_seed():
    model = _gaussian_model(big_t=200)
    images = _gaussian_images(64, seed=3)
    a = model.elbo(images, generator=torch.Generator().manual_seed(4), timesteps=10)
    b = model.elbo(images, generator=torch.Generator().manual_seed(4), timesteps=10)
    assert torch.equal(a, b)
    full = model.elbo(images, generator=torch.Generator().manual_seed(5), timesteps=0)
    # each estimate is unbiased for the same quantity; they differ only by Monte-Carlo noise
    diff = a - full
    assert abs(diff.mean().item()) < 4.5 * diff.std().item() / math.sqrt(64) + 1e-9


def test_nll_metric_is_registered_and_averages_model_elbo():
    metric = get_registry().metric("nll")
    assert isinstance(metric, NegativeLogLikelihood)
    assert metric.higher_is_better is False
    assert Need(kind="model", capabilities=(SupportsELBO,)) in metric.needs
    assert Need(kind="images", source="reference") in metric.needs
    model = _gaussian_model(big_t=100)
    images = _gaussian_images(300, seed=6)
    inputs = SimpleNamespace(
        model=model, images=lambda source: images, seed=7, device=torch.device("cpu")
    )
    out = compute(metric, inputs, timesteps=0, batch_size=128)
    gen = torch.Generator().manual_seed(7)
    direct = torch.cat(
        [model.elbo(images[i : i + 128], generator=gen, timesteps=0) for i in (0, 128, 256)]
    )
    bpd = -direct / (16 * math.log(2))
    assert out["value"] == pytest.approx(bpd.mean().item(), rel=1e-12)
    assert out["std_err"] == pytest.approx(bpd.std().item() / math.sqrt(300), rel=1e-9)
    assert out["std"] == out["std_err"]  # the alias existing gates use
    assert metric.uncertainty == "std_err" and {"std", "std_err"} <= set(metric.fields)
    assert out["log_likelihood"] == pytest.approx(direct.mean().item(), rel=1e-12)
    assert out["space"] == "discrete-8bit"
    assert out["n"] == 300 and out["unit"] == "bits/dim"
    want = closed_form_bits_per_dim(model.diffusion.betas.numpy(), "fixedsmall", MEAN, STD)
    assert abs(out["value"] - want) < 4.5 * out["std_err"]
    from geneval.errors import InputError

    with pytest.raises(InputError, match="variance"):
        compute(metric, inputs, variance="wide")
    with pytest.raises(InputError, match="no option 'subsets'"):
        compute(metric, inputs, subsets=3)


@pytest.mark.slow
def test_nll_of_bundled_ddpm_on_digits_is_finite_and_plausible():
    from geneval_plugins.datasets.digits import DigitsDataset
    from geneval_plugins.models.diffusion.ddpm import DDPMFamily

    model = DDPMFamily().load(None, device=torch.device("cpu"))
    test = DigitsDataset().load("test").images
    inputs = SimpleNamespace(model=model, images=lambda source: test, seed=0, device=model.device)
    out = compute(NegativeLogLikelihood(), inputs, timesteps=50)
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0))
    noise_out = compute(
        NegativeLogLikelihood(),
        SimpleNamespace(model=model, images=lambda source: noise, seed=0, device=model.device),
        timesteps=50,
    )
    # an 8-bit uniform distribution is exactly 8 bits/dim; 17-level digits under a good model
    # need far fewer, and uniform noise images far more than the digits
    assert math.isfinite(out["value"]) and 0.0 < out["value"] < 8.0
    assert out["std"] < 0.1 * out["value"]
    assert noise_out["value"] > out["value"] + 1.0
