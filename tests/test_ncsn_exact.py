"""The NCSN samplers and the DSM loss driven by exact scores (closed forms, no network).

For a Gaussian mixture p = Σ_k w_k N(μ_k, s_k² I) the perturbed density is
q_σ = Σ_k w_k N(μ_k, (s_k² + σ²) I), so its score is known in closed form. Annealed Langevin
dynamics and the reverse-VE-SDE predictor–corrector sampler driven by that score must reproduce
the mixture's weights and moments within sampling error; plain Langevin at one small σ must
not (it cannot cross between distant modes). For Gaussian data N(μ, Σ) the DSM loss of the
exact score is ½ tr(Σ(Σ + σ²I)⁻¹) per level.
"""

from __future__ import annotations

import math

import pytest
import torch

from geneval.sampling import run_chain
from geneval_plugins.models.noise_levels import geometric_sigmas, ncsnv2_step_size
from geneval_plugins.models.score_matching import denoising_score_matching_loss
from geneval_plugins.models.score_samplers import (
    SAMPLERS,
    AnnealedLangevinSampler,
    ReverseDiffusionPCSampler,
)


class GaussianMixture:
    """p = Σ_k w_k N(μ_k, s_k² I) in float64, with the closed-form score of q_σ = p * N(0, σ²I)."""

    def __init__(self, weights: list[float], means: list[list[float]], stds: list[float]) -> None:
        self.weights = torch.tensor(weights, dtype=torch.float64)
        self.means = torch.tensor(means, dtype=torch.float64)
        self.stds = torch.tensor(stds, dtype=torch.float64)

    def log_components(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """log w_k + log N(x; μ_k, (s_k² + σ²) I), shape (N, K)."""
        var = self.stds[None, :] ** 2 + sigma.reshape(-1, 1) ** 2
        sq = (x[:, None, :] - self.means[None]).pow(2).sum(-1)
        dim = x.shape[1]
        return torch.log(self.weights) - 0.5 * sq / var - 0.5 * dim * torch.log(2 * math.pi * var)

    def log_prob(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(self.log_components(x, sigma), dim=1)

    def score(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """∇ log q_σ(x) = Σ_k r_k(x) (μ_k − x)/(s_k² + σ²), r the posterior responsibilities."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype).expand(x.shape[0])
        resp = torch.softmax(self.log_components(x, sigma), dim=1)
        var = self.stds[None, :] ** 2 + sigma.reshape(-1, 1) ** 2
        pull = (self.means[None] - x[:, None, :]) / var[:, :, None]
        return (resp[:, :, None] * pull).sum(1)

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.means.shape[1], generator=generator, dtype=torch.float64)
        return self.means[k] + self.stds[k, None] * z

    def nearest(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cdist(x, self.means).argmin(dim=1)


MIXTURE_2D = GaussianMixture(
    weights=[0.2, 0.3, 0.5],
    means=[[-4.0, 0.0], [4.0, 0.0], [0.0, 5.0]],
    stds=[0.5, 0.7, 0.6],
)
N_PARTICLES = 4000
SIGMAS = geometric_sigmas(12.0, 0.05, 30)


def _start(generator: torch.Generator) -> torch.Tensor:
    """Chains start from the VE prior N(0, σ_1² I)."""
    return float(SIGMAS[0]) * torch.randn(N_PARTICLES, 2, generator=generator, dtype=torch.float64)


def _run(sampler, score, start: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """The sampler's chains from ``start`` (the driver every model uses), then its output."""
    state = run_chain(sampler, score, start, generator, progress=False)
    return sampler.output(score, state)


def _check_mixture(x: torch.Tensor, mixture: GaussianMixture) -> None:
    """Weights within 4 binomial SE; per-component means and variances within 4 SE."""
    labels = mixture.nearest(x)
    n = x.shape[0]
    for k in range(len(mixture.weights)):
        w = float(mixture.weights[k])
        members = x[labels == k]
        share = members.shape[0] / n
        assert abs(share - w) <= 4 * math.sqrt(w * (1 - w) / n), (k, share, w)
        s2 = float(mixture.stds[k]) ** 2
        m = members.shape[0]
        mean_err = (members.mean(0) - mixture.means[k]).abs().max()
        assert mean_err < 4 * math.sqrt(s2 / m), (k, mean_err)
        var = members.var(dim=0)
        assert ((var - s2).abs() < 4 * s2 * math.sqrt(2 / m)).all(), (k, var, s2)


def test_mixture_score_is_gradient_of_log_density() -> None:
    """The closed-form score equals autograd's ∇ log q_σ, at several σ."""
    g = torch.Generator().manual_seed(0)
    x = 6 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    for s in (0.05, 1.0, 8.0):
        sigma = torch.full((64,), s, dtype=torch.float64)
        xr = x.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(MIXTURE_2D.log_prob(xr, sigma).sum(), xr)
        torch.testing.assert_close(MIXTURE_2D.score(x, sigma), grad, rtol=1e-10, atol=1e-12)


def test_annealed_langevin_with_exact_score_reproduces_mixture() -> None:
    g = torch.Generator().manual_seed(1)
    sampler = AnnealedLangevinSampler(SIGMAS, eps=2e-4, steps_per_level=100, denoise=True)
    x = _run(sampler, MIXTURE_2D.score, _start(g), g)
    _check_mixture(x, MIXTURE_2D)


def test_predictor_corrector_with_exact_score_reproduces_mixture() -> None:
    g = torch.Generator().manual_seed(2)
    levels = geometric_sigmas(12.0, 0.05, 300)
    sampler = ReverseDiffusionPCSampler(levels, snr=0.16, corrector_steps=1, denoise=True)
    x = _run(sampler, MIXTURE_2D.score, _start(g), g)
    _check_mixture(x, MIXTURE_2D)


def test_plain_langevin_at_small_sigma_fails_to_mix() -> None:
    """Same number of steps, all at σ_L: chains stay in the basin they start in.

    The basins' shares of the start distribution N(0, σ_1² I) are not the mixture weights, so
    the weights come out far off (> 10 SE), while annealing (previous tests) gets them right.
    """
    g = torch.Generator().manual_seed(1)
    start = _start(g)
    plain = AnnealedLangevinSampler(
        SIGMAS[-1:], eps=2e-4, steps_per_level=100 * len(SIGMAS), denoise=True
    )
    x = _run(plain, MIXTURE_2D.score, start, g)
    shares = torch.bincount(MIXTURE_2D.nearest(x), minlength=3).double() / N_PARTICLES
    se = torch.sqrt(MIXTURE_2D.weights * (1 - MIXTURE_2D.weights) / N_PARTICLES)
    assert ((shares - MIXTURE_2D.weights).abs() / se).max() > 10


def test_plain_langevin_samples_one_mode_correctly() -> None:
    """Started inside one well-separated component, Langevin with the exact score samples it."""
    one = GaussianMixture(weights=[1.0], means=[[1.0, -2.0]], stds=[0.6])
    g = torch.Generator().manual_seed(3)
    start = one.means[0] + 0.1 * torch.randn(N_PARTICLES, 2, generator=g, dtype=torch.float64)
    sampler = AnnealedLangevinSampler([1e-3], eps=2e-3, steps_per_level=2000, denoise=False)
    x = _run(sampler, one.score, start, g)
    _check_mixture(x, one)


def test_dsm_loss_of_exact_score_on_gaussian_matches_closed_form() -> None:
    """E ½‖σ s(x̃, σ) + z‖² = ½ tr(Σ(Σ + σ²I)⁻¹) = ½ Σ_j λ_j/(λ_j + σ²) for N(μ, Σ) data."""
    g = torch.Generator().manual_seed(4)
    mean = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    factor = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.3, 0.4, 1.5]], dtype=torch.float64)
    cov = factor @ factor.T

    def exact_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        eye = torch.eye(3, dtype=torch.float64)
        prec = torch.linalg.inv(cov[None] + sigma.reshape(-1, 1, 1) ** 2 * eye)
        return -(prec @ (x - mean)[:, :, None])[:, :, 0]

    n = 200_000
    x = mean + torch.randn(n, 3, generator=g, dtype=torch.float64) @ factor.T
    sigmas = torch.tensor([0.1, 0.7, 3.0], dtype=torch.float64)
    lam = torch.linalg.eigvalsh(cov)
    expected = torch.stack([0.5 * (lam / (lam + s**2)).sum() for s in sigmas]).mean()
    losses = denoising_score_matching_loss(exact_score, x, sigmas, g, reduce=False)
    se = losses.std() / math.sqrt(n)
    assert abs(losses.mean() - expected) < 4 * se
    # a single level, and a worse score (shrunk by 10 %) sits measurably above the floor
    single = denoising_score_matching_loss(exact_score, x, sigmas[1:2], g, reduce=False)
    one = 0.5 * (lam / (lam + sigmas[1] ** 2)).sum()
    assert abs(single.mean() - one) < 4 * single.std() / math.sqrt(n)
    # with common random numbers (same levels and noise) the gap is measured precisely
    exact = denoising_score_matching_loss(
        exact_score, x, sigmas, torch.Generator().manual_seed(5), reduce=False
    )
    worse = denoising_score_matching_loss(
        lambda x, s: 0.9 * exact_score(x, s),
        x,
        sigmas,
        torch.Generator().manual_seed(5),
        reduce=False,
    )
    gap = worse - exact
    assert gap.mean() > 10 * gap.std() / math.sqrt(n)


def test_geometric_sigmas_and_step_size() -> None:
    sigmas = geometric_sigmas(5.0, 0.01, 11)
    assert sigmas[0] == pytest.approx(5.0) and sigmas[-1] == pytest.approx(0.01)
    ratios = sigmas[:-1] / sigmas[1:]
    torch.testing.assert_close(ratios, torch.full_like(ratios, 500**0.1))
    # technique 4: the variance ratio after T steps is as close to 1 as ε can make it
    gamma, steps = 1.36, 5
    eps = ncsnv2_step_size(gamma, steps, 0.01)
    x = eps / 0.01**2
    c = 2 * x / (1 - (1 - x) ** 2)
    ratio = (1 - x) ** (2 * steps) * (gamma**2 - c) + c
    for other in (0.5 * x, 2 * x):
        co = 2 * other / (1 - (1 - other) ** 2)
        other_ratio = (1 - other) ** (2 * steps) * (gamma**2 - co) + co
        assert abs(ratio - 1) <= abs(other_ratio - 1)


def test_sampler_registry_shape_and_invalid_settings() -> None:
    assert list(SAMPLERS) == ["annealed-langevin", "pc"]
    ald = AnnealedLangevinSampler([2.0, 1.0, 0.5], eps=1e-3, steps_per_level=4)
    assert len(ald.schedule) == 12 and ald.num_score_evaluations() == 13
    assert ald.schedule[0] == (2.0, pytest.approx(1e-3 * 16)) and ald.schedule[-1][1] == 1e-3
    ald.set_steps(2)
    assert len(ald.schedule) == 6
    pc = ReverseDiffusionPCSampler([2.0, 1.0], snr=0.1)
    assert pc.schedule == [(2.0, 1.0), (1.0, 0.0)]
    pc.set_steps(0)  # predictor only
    assert pc.num_score_evaluations() == 2
    x = pc.init(None, (5, 3), torch.Generator().manual_seed(0), torch.device("cpu"))
    assert x.shape == (5, 3) and 1.0 < float(x.std()) < 3.5  # N(0, σ_1² I), σ_1 = 2
    for bad in (
        lambda: AnnealedLangevinSampler([1.0, 0.5], eps=0.0),
        lambda: AnnealedLangevinSampler([0.5, 1.0]),  # levels must descend
        lambda: ald.set_steps(0),
        lambda: ReverseDiffusionPCSampler([1.0, 0.5], snr=-1.0),
        lambda: pc.set_steps(-1),
    ):
        with pytest.raises(ValueError):
            bad()
