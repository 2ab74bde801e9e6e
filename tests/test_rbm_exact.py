"""Exactness of the RBM/GRBM formulas against brute-force enumeration and numerical integration.

The references here are computed independently in numpy/scipy from the energy definitions
E(x, h) = −aᵀx − bᵀh − xᵀWh (RBM) and E(v, h) = ½‖(v−μ)/σ‖² − (v/σ²)ᵀWh − bᵀh (GRBM),
never through the model's own conditionals or free energies.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from scipy import integrate
from scipy.special import logsumexp

from geneval.capabilities import SupportsEnergy, SupportsLogProb, SupportsLogZ
from geneval.sampling import run_chain
from geneval_plugins.models.energy.grbm_network import GaussianRBM
from geneval_plugins.models.energy.mcmc import GibbsSampler
from geneval_plugins.models.energy.rbm import RBMFamily
from geneval_plugins.models.energy.rbm_network import BernoulliRBM, ExactRBMModel, RBMModel

TOL = 1e-10


def all_binary(n: int) -> np.ndarray:
    """Every vector of {0,1}^n (rows in lexicographic order), float64."""
    return np.array(list(itertools.product([0.0, 1.0], repeat=n)))


def random_rbm(n_visible: int, n_hidden: int, seed: int, scale: float = 1.0) -> BernoulliRBM:
    rng = np.random.default_rng(seed)
    rbm = BernoulliRBM(n_visible, n_hidden).to(torch.float64)
    with torch.no_grad():
        rbm.weight.copy_(torch.from_numpy(scale * rng.normal(size=(n_visible, n_hidden))))
        rbm.visible_bias.copy_(torch.from_numpy(rng.normal(size=n_visible)))
        rbm.hidden_bias.copy_(torch.from_numpy(rng.normal(size=n_hidden)))
    return rbm


class BruteForceRBM:
    """p(x, h) of a Bernoulli RBM as a full table over {0,1}^D × {0,1}^H (numpy, float64)."""

    def __init__(self, rbm: BernoulliRBM) -> None:
        self.W = rbm.weight.detach().numpy()
        self.a = rbm.visible_bias.detach().numpy()
        self.b = rbm.hidden_bias.detach().numpy()
        self.xs = all_binary(len(self.a))
        self.hs = all_binary(len(self.b))
        # energy[i, j] = E(x_i, h_j)
        self.energy = (
            -(self.xs @ self.a)[:, None]
            - (self.hs @ self.b)[None, :]
            - np.einsum("id,de,je->ij", self.xs, self.W, self.hs)
        )
        self.log_z = logsumexp(-self.energy)
        self.joint = np.exp(-self.energy - self.log_z)
        self.p_x = self.joint.sum(1)
        self.p_h = self.joint.sum(0)


@pytest.fixture(scope="module")
def rbm_6x4() -> tuple[BernoulliRBM, BruteForceRBM]:
    rbm = random_rbm(6, 4, seed=0)
    return rbm, BruteForceRBM(rbm)


def test_joint_energy_matches_definition(rbm_6x4):
    rbm, ref = rbm_6x4
    x = torch.from_numpy(np.repeat(ref.xs, len(ref.hs), axis=0))
    h = torch.from_numpy(np.tile(ref.hs, (len(ref.xs), 1)))
    got = rbm.joint_energy(x, h).detach().numpy().reshape(ref.energy.shape)
    np.testing.assert_allclose(got, ref.energy, rtol=0, atol=TOL)


def test_free_energy_matches_enumeration(rbm_6x4):
    rbm, ref = rbm_6x4
    expected = -logsumexp(-ref.energy, axis=1)
    got = rbm.free_energy(torch.from_numpy(ref.xs)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_hidden_conditional_matches_enumeration(rbm_6x4):
    rbm, ref = rbm_6x4
    # p(h_j = 1 | x) = Σ_h h_j p(x, h) / p(x)
    expected = (ref.joint @ ref.hs) / ref.p_x[:, None]
    got = rbm.hidden_probs(torch.from_numpy(ref.xs)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_visible_conditional_matches_enumeration(rbm_6x4):
    rbm, ref = rbm_6x4
    expected = (ref.joint.T @ ref.xs) / ref.p_h[:, None]
    got = rbm.visible_mean(torch.from_numpy(ref.hs)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=0, atol=TOL)


def test_conditionals_factorise(rbm_6x4):
    """p(h | x) equals the product of the per-unit probabilities (the bipartite property)."""
    rbm, ref = rbm_6x4
    probs = rbm.hidden_probs(torch.from_numpy(ref.xs)).detach().numpy()
    product = np.prod(np.where(ref.hs[None] == 1, probs[:, None], 1 - probs[:, None]), axis=2)
    np.testing.assert_allclose(product, ref.joint / ref.p_x[:, None], rtol=0, atol=TOL)


@pytest.mark.parametrize("chunk_size", [1 << 16, 3])
def test_log_z_matches_enumeration_hidden_layer(rbm_6x4, chunk_size):
    rbm, ref = rbm_6x4
    assert rbm.log_partition(chunk_size=chunk_size) == pytest.approx(ref.log_z, abs=TOL)


@pytest.mark.parametrize("chunk_size", [1 << 16, 5])
def test_log_z_matches_enumeration_visible_layer(chunk_size):
    """With fewer visible than hidden units the visible layer is enumerated instead."""
    rbm = random_rbm(4, 7, seed=1)
    ref = BruteForceRBM(rbm)
    assert rbm.log_partition(chunk_size=chunk_size) == pytest.approx(ref.log_z, abs=TOL)


def test_log_z_of_float32_model_is_computed_in_float64():
    """Large energies: float32 arithmetic would be off by ~1e-5; the enumeration runs in float64."""
    rbm32 = random_rbm(6, 4, seed=2, scale=8.0).float()
    ref = BruteForceRBM(copy.deepcopy(rbm32).double())  # the float32-rounded parameters, exactly
    assert abs(ref.log_z) > 20
    assert rbm32.log_partition() == pytest.approx(ref.log_z, abs=TOL)


CONFIG = {"family": "rbm", "sampling": {"sampler": "gibbs", "gibbs": {"steps": 5}}}


def _loaded(rbm: BernoulliRBM, shape: tuple[int, int, int]) -> RBMModel:
    """The model the rbm family's loader builds around ``rbm``."""
    family = RBMFamily()
    cls = family.exact_model_class if rbm.has_exact_log_z else family.model_class
    return cls(rbm, CONFIG, image_shape=shape, device=torch.device("cpu"))


def test_exact_log_prob_and_capabilities(rbm_6x4):
    rbm, ref = rbm_6x4
    model = _loaded(rbm, (1, 1, 6))
    assert isinstance(model, ExactRBMModel)
    for protocol in (SupportsEnergy, SupportsLogZ, SupportsLogProb):
        assert isinstance(model, protocol)
    assert model.likelihood_space == "binary" and "0.5" in model.binarization
    images = torch.from_numpy(ref.xs).reshape(-1, 1, 1, 6)
    log_p = model.log_prob(images).numpy()
    np.testing.assert_allclose(log_p, np.log(ref.p_x), rtol=0, atol=TOL)
    assert model.log_z() == pytest.approx(ref.log_z, abs=TOL)
    assert logsumexp(log_p) == pytest.approx(0.0, abs=TOL)


def test_large_model_has_no_exact_log_z():
    rbm = BernoulliRBM(64, 30)
    model = _loaded(rbm, (1, 8, 8))
    assert isinstance(model, SupportsEnergy)
    assert not isinstance(model, SupportsLogZ) and not isinstance(model, SupportsLogProb)
    with pytest.raises(ValueError):
        rbm.log_partition()


def test_gibbs_chain_matches_exact_marginal():
    """Empirical p(x) of parallel Gibbs chains is within total variation 0.02 of the exact p(x)."""
    rbm = random_rbm(6, 4, seed=3)
    ref = BruteForceRBM(rbm)
    generator = torch.Generator().manual_seed(0)
    chains = 20000
    v = torch.bernoulli(torch.full((chains, 6), 0.5, dtype=torch.float64), generator=generator)
    state = run_chain(GibbsSampler(steps=100), rbm, GibbsSampler.start(v), generator)  # burn-in
    weights = 2 ** torch.arange(5, -1, -1)  # row index of x in all_binary (lexicographic)
    counts = torch.zeros(64, dtype=torch.float64)
    step = GibbsSampler(steps=2)
    for _ in range(50):
        state = run_chain(step, rbm, state, generator)
        counts += torch.bincount((state.visible.long() * weights).sum(1), minlength=64).double()
    empirical = (counts / counts.sum()).numpy()
    tv = 0.5 * np.abs(empirical - ref.p_x).sum()
    assert tv <= 0.02, tv
    # and the chain is not trivially at its start: a uniform p(x) would be far off
    assert 0.5 * np.abs(1 / 64 - ref.p_x).sum() > 0.1


# -- Gaussian–Bernoulli RBM ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def grbm_2x3() -> GaussianRBM:
    rng = np.random.default_rng(4)
    grbm = GaussianRBM(2, 3, sigma=0.7).to(torch.float64)
    with torch.no_grad():
        grbm.weight.copy_(torch.from_numpy(0.8 * rng.normal(size=(2, 3))))
        grbm.visible_bias.copy_(torch.from_numpy(rng.normal(size=2)))
        grbm.hidden_bias.copy_(torch.from_numpy(rng.normal(size=3)))
        grbm.log_sigma.copy_(torch.tensor([0.7, 1.3], dtype=torch.float64).log())
    return grbm


def grbm_energy(grbm: GaussianRBM, v: np.ndarray, h: np.ndarray) -> np.ndarray:
    """E(v, h) from the definition, numpy; v (N, D), h (N, H)."""
    W = grbm.weight.detach().numpy()
    mu = grbm.visible_bias.detach().numpy()
    b = grbm.hidden_bias.detach().numpy()
    s = grbm.sigma.detach().numpy()
    return 0.5 * (((v - mu) / s) ** 2).sum(1) - np.einsum("nd,de,ne->n", v / s**2, W, h) - h @ b


def test_grbm_conditionals_and_free_energy(grbm_2x3):
    grbm = grbm_2x3
    rng = np.random.default_rng(5)
    v = rng.normal(size=(7, 2)) * 2
    hs = all_binary(3)
    energy = np.stack([grbm_energy(grbm, v, np.tile(h, (7, 1))) for h in hs], axis=1)  # (7, 8)
    p_h_given_v = np.exp(-energy - logsumexp(-energy, axis=1, keepdims=True))
    expected_probs = p_h_given_v @ hs
    got = grbm.hidden_probs(torch.from_numpy(v)).detach().numpy()
    np.testing.assert_allclose(got, expected_probs, rtol=0, atol=TOL)
    got_f = grbm.free_energy(torch.from_numpy(v)).detach().numpy()
    np.testing.assert_allclose(got_f, -logsumexp(-energy, axis=1), rtol=0, atol=TOL)
    vt, ht = torch.from_numpy(v), torch.from_numpy(np.tile(hs[5], (7, 1)))
    np.testing.assert_allclose(
        grbm.joint_energy(vt, ht).detach().numpy(), grbm_energy(grbm, v, ht.numpy()), atol=TOL
    )


def test_grbm_visible_conditional_is_the_stated_gaussian(grbm_2x3):
    """For fixed h, −E(v, h) − log N(v; μ + Wh, σ²) does not depend on v."""
    grbm = grbm_2x3
    rng = np.random.default_rng(6)
    s = grbm.sigma.detach().numpy()
    for h in all_binary(3):
        v = rng.normal(size=(9, 2)) * 3
        mean = grbm.visible_mean(torch.from_numpy(h[None])).detach().numpy()
        log_normal = (-0.5 * ((v - mean) / s) ** 2 - np.log(np.sqrt(2 * np.pi) * s)).sum(1)
        diff = -grbm_energy(grbm, v, np.tile(h, (9, 1))) - log_normal
        np.testing.assert_allclose(diff, diff[0], rtol=0, atol=TOL)


def test_grbm_log_z_matches_numerical_integration(grbm_2x3):
    grbm = grbm_2x3

    def unnormalised(y: float, x: float) -> float:
        v = torch.tensor([[x, y]], dtype=torch.float64)
        with torch.no_grad():
            return float(torch.exp(-grbm.free_energy(v)))

    # the mass lies within a few σ of the component means μ + Wh, all inside ±12
    value, error = integrate.dblquad(unnormalised, -12, 12, -12, 12, epsabs=1e-13, epsrel=1e-11)
    assert error < 1e-9 * value
    assert grbm.log_partition() == pytest.approx(np.log(value), abs=1e-8)
    assert grbm.log_partition(chunk_size=3) == pytest.approx(np.log(value), abs=1e-8)
