"""LangevinSampler on energies with known moments: a 2-D Gaussian and a two-component mixture.

Many chains run in one batch; the final states are independent draws, so the sampling error of
each moment is known and the tolerances are a few standard errors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.linalg import solve_discrete_lyapunov
from scipy.stats import norm

from geneval.sampling import run_chain
from geneval_plugins.models.energy.mcmc import LangevinSampler

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)


def gaussian_energy(x: torch.Tensor) -> torch.Tensor:
    """E(x) = ½ (x − μ)ᵀ Σ⁻¹ (x − μ)."""
    d = x - MEAN
    return 0.5 * (d @ torch.linalg.inv(COV) * d).sum(-1)


def test_gaussian_moments():
    chains, step = 10000, 0.01
    sampler = LangevinSampler(steps=1500, step_size=step)
    generator = torch.Generator().manual_seed(0)
    x0 = torch.randn((chains, 2), generator=generator, dtype=torch.float64)
    x = run_chain(sampler, gaussian_energy, x0, generator).numpy()
    mean, cov = x.mean(0), np.cov(x.T)
    sigma = COV.numpy()
    # discretisation: x' = (I − ηΣ⁻¹)x + … + √(2η)z has stationary covariance S = BSBᵀ + 2ηI
    b = np.eye(2) - step * np.linalg.inv(sigma)
    s_ula = solve_discrete_lyapunov(b, 2 * step * np.eye(2))
    assert np.abs(s_ula - sigma).max() < 0.01  # the O(η) bias is below the sampling error
    se_mean = np.sqrt(np.diag(sigma) / chains)
    np.testing.assert_array_less(np.abs(mean - MEAN.numpy()), 5 * se_mean)
    se_cov = np.sqrt((sigma**2 + np.outer(np.diag(sigma), np.diag(sigma))) / chains)
    np.testing.assert_array_less(np.abs(cov - s_ula), 5 * se_cov)
    np.testing.assert_array_less(np.abs(cov - sigma), 5 * se_cov + np.abs(s_ula - sigma))


WEIGHTS = (0.3, 0.7)
CENTRES = ((-1.0, 0.0), (1.0, 0.0))
STD = 0.5


def mixture_energy(x: torch.Tensor) -> torch.Tensor:
    """E(x) = −log Σ_k w_k N(x; m_k, s²I) (up to a constant)."""
    centres = torch.tensor(CENTRES, dtype=x.dtype)
    logw = torch.log(torch.tensor(WEIGHTS, dtype=x.dtype))
    sq = ((x[:, None, :] - centres[None]) ** 2).sum(-1)
    return -torch.logsumexp(logw - sq / (2 * STD**2), dim=1)


def test_two_component_mixture_long_chains():
    """Long chains cross between the modes and recover the weights and moments."""
    chains = 10000
    sampler = LangevinSampler(steps=3000, step_size=0.005)
    generator = torch.Generator().manual_seed(1)
    x0 = 2 * torch.randn((chains, 2), generator=generator, dtype=torch.float64)
    x = run_chain(sampler, mixture_energy, x0, generator).numpy()
    w = np.array(WEIGHTS)
    m = np.array(CENTRES)
    exact_mean = w @ m
    exact_var = STD**2 + w @ m**2 - exact_mean**2
    exact_right = w[0] * norm.sf(-m[0, 0] / STD) + w[1] * norm.sf(-m[1, 0] / STD)
    right = (x[:, 0] > 0).mean()
    assert abs(right - exact_right) < 5 * math.sqrt(exact_right * (1 - exact_right) / chains)
    np.testing.assert_array_less(np.abs(x.mean(0) - exact_mean), 5 * np.sqrt(exact_var / chains))
    se_var = np.sqrt(2 * exact_var**2 / chains) * 1.5  # excess kurtosis of the mixture
    np.testing.assert_array_less(np.abs(x.var(0) - exact_var), 5 * se_var + 0.01)


def test_knobs_gradient_clip_clamp_and_zero_noise():
    """noise_scale=0: one step is exactly x − α·clip(∇E); clamping bounds the result."""
    generator = torch.Generator().manual_seed(2)
    x = torch.tensor([[3.0, -2.0], [0.1, 0.2]], dtype=torch.float64)

    def energy(y: torch.Tensor) -> torch.Tensor:
        return 5.0 * (y**2).sum(-1)  # ∇E = 10·y

    step = LangevinSampler(steps=1, step_size=0.1, noise_scale=0.0, grad_clip=1.5)
    expected = x - 0.1 * (10 * x).clamp(-1.5, 1.5)
    torch.testing.assert_close(step.step(energy, x, 0, generator), expected, rtol=0, atol=1e-15)
    clamped = LangevinSampler(steps=5, step_size=0.5, noise_scale=3.0, clamp=(0.0, 1.0))
    out = run_chain(clamped, energy, x, generator)
    assert out.min() >= 0 and out.max() <= 1


def test_same_seed_same_chain():
    sampler = LangevinSampler(steps=20, step_size=0.05, noise_scale=0.5, grad_clip=1.0)
    x0 = torch.zeros((50, 2), dtype=torch.float64)
    a = run_chain(sampler, mixture_energy, x0, torch.Generator().manual_seed(3))
    b = run_chain(sampler, mixture_energy, x0, torch.Generator().manual_seed(3))
    c = run_chain(sampler, mixture_energy, x0, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"steps": 0, "step_size": 0.1},
        {"steps": 1, "step_size": 0.0},
        {"steps": 1, "step_size": 0.1, "grad_clip": 0.0},
        {"steps": 1, "step_size": 0.1, "clamp": (1.0, 0.0)},
    ],
)
def test_invalid_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        LangevinSampler(**kwargs)
