"""``ais`` and its kernels against exact enumeration and closed forms.

* the schedules and the ±3σ summary of the weights, recomputed in numpy;
* each path's densities against the model's energy written out here, and each kernel's
  invariant distribution against the exact f_β (enumerated for binary units, Gaussian mixtures
  and truncated normals for continuous ones);
* log Ẑ against exact log Z: RBMs and GRBMs enumerated over their hidden units, Gaussian
  energies (correlated on ℝ^D, and diagonal on the box [0, 1]^D); short schedules in the default
  suite, the default 14 501-β schedule and the bundled models under ``-m slow``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, ndtr
from scipy.stats import truncnorm

from geneval.api import Need
from geneval.capabilities import SupportsAnnealing, SupportsEnergy, capabilities_of
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.likelihood.ais import (
    DEFAULT_NUM_BETAS,
    AnnealedImportanceSampling,
    ais_log_weights,
    annealing_schedule,
    partition_estimate,
    piecewise_schedule,
    sigmoid_schedule,
)
from geneval_plugins.metrics.likelihood.ll import ExactLogLikelihood
from geneval_plugins.models.energy.annealing import (
    BernoulliRBMPath,
    EnergyPath,
    GaussianRBMPath,
    TruncatedGaussianBase,
    UniformBoxBase,
)
from tests.likelihood_models import (
    GaussianEnergyModel,
    TinyGRBM,
    TinyRBM,
    all_binary,
    grbm_exact_log_z,
    grbm_free_energy,
    rbm_exact_log_z,
    rbm_free_energy,
)
from tests.stub_inputs import StubInputs, compute


def _log_z(path, betas, *, runs=100, seed=0):
    log_w = ais_log_weights(
        path, betas, num_runs=runs, generator=torch.Generator().manual_seed(seed)
    )
    return partition_estimate(log_w, path.log_z_base)


def _assert_brackets(estimate, exact, tolerance):
    assert estimate.log_z_low is not None and estimate.log_z_low <= exact <= estimate.log_z_high
    assert abs(estimate.log_z - exact) < tolerance, (estimate, exact)


# -- schedules and the summary of the weights -------------------------------------------------


def test_default_schedule_is_salakhutdinov_murray():
    betas = piecewise_schedule()
    assert len(betas) == DEFAULT_NUM_BETAS == 14501
    steps = np.diff(betas)
    np.testing.assert_allclose(steps[:500], 1e-3, rtol=1e-9)
    np.testing.assert_allclose(steps[500:4500], 1e-4, rtol=1e-9)
    np.testing.assert_allclose(steps[4500:], 1e-5, rtol=1e-6)
    assert betas[0] == 0.0 and betas[-1] == 1.0
    short = piecewise_schedule(1451)  # the same three segments, ten times coarser
    np.testing.assert_allclose(np.diff(short)[:50], 1e-2, rtol=1e-9)
    np.testing.assert_allclose(np.diff(short)[-1000:], 1e-4, rtol=1e-6)


def test_sigmoid_and_linear_schedules():
    betas = sigmoid_schedule(1001)
    assert betas[0] == 0.0 and betas[-1] == 1.0 and np.all(np.diff(betas) > 0)
    t = np.linspace(0, 1, 1001)
    s = 1 / (1 + np.exp(-4 * (2 * t - 1)))
    np.testing.assert_allclose(betas, (s - s[0]) / (s[-1] - s[0]), atol=1e-15)
    assert np.diff(betas)[0] < np.diff(betas)[500]  # dense at the ends
    np.testing.assert_allclose(annealing_schedule("linear", 5), [0, 0.25, 0.5, 0.75, 1])
    assert len(annealing_schedule("sigmoid")) == DEFAULT_NUM_BETAS
    with pytest.raises(InputError, match="schedule"):
        annealing_schedule("cosine")


def test_partition_estimate_is_log_mean_weight_with_three_sigma_interval():
    rng = np.random.default_rng(0)
    log_w = rng.normal(size=100) * 0.3 + 50.0
    est = partition_estimate(torch.from_numpy(log_w), log_z_base=2.0)
    w = np.exp(log_w)
    z_hat = np.exp(2.0) * w.mean()
    sigma = np.exp(2.0) * w.std(ddof=1) / math.sqrt(100)
    assert est.log_z == pytest.approx(math.log(z_hat), rel=1e-12)
    assert est.log_z_std == pytest.approx(sigma / z_hat, rel=1e-10)
    assert est.log_z_low == pytest.approx(math.log(z_hat - 3 * sigma), rel=1e-12)
    assert est.log_z_high == pytest.approx(math.log(z_hat + 3 * sigma), rel=1e-12)
    spread = partition_estimate(torch.tensor([0.0, 0.0, 40.0]), log_z_base=0.0)
    assert spread.log_z_low is None and math.isfinite(spread.log_z_high)
    with pytest.raises(InputError, match="2 runs"):
        partition_estimate(torch.zeros(1), 0.0)


# -- paths: densities and kernels ---------------------------------------------------------------


def test_bernoulli_rbm_path_ends_are_base_and_free_energy():
    model = TinyRBM.random(6, 4, seed=0)
    data = torch.from_numpy((np.random.default_rng(1).random((50, 6)) < 0.3).astype(float))
    path = model.annealing_path(data)
    xs = all_binary(6)
    a0 = np.log(((data.numpy().sum(0) + 0.5) / 51) / (1 - (data.numpy().sum(0) + 0.5) / 51))
    at_one = path.log_density(torch.from_numpy(xs), 1.0).numpy()
    np.testing.assert_allclose(at_one, -rbm_free_energy(model.W, model.a, model.b, xs), atol=1e-12)
    at_zero = path.log_density(torch.from_numpy(xs), 0.0).numpy()
    np.testing.assert_allclose(at_zero, xs @ a0 + 4 * math.log(2), atol=1e-12)
    assert path.log_z_base == pytest.approx(logsumexp(at_zero), rel=1e-12)


def _rbm_f_beta(model: TinyRBM, a0: np.ndarray, beta: float) -> np.ndarray:
    """log f_β(x) over all x by enumerating the joint: Σ_h exp((1−β)a₀ᵀx + β(−E(x, h)))."""
    xs, hs = all_binary(len(model.a)), all_binary(len(model.b))
    neg_e = (xs @ model.a)[:, None] + (hs @ model.b)[None, :] + xs @ model.W @ hs.T
    return logsumexp((1 - beta) * (xs @ a0)[:, None] + beta * neg_e, axis=1)


def test_bernoulli_rbm_gibbs_kernel_leaves_f_beta_invariant():
    model = TinyRBM.random(4, 3, seed=2)
    a0 = np.array([-1.0, 0.5, 0.0, 1.0])
    t = torch.from_numpy
    path = BernoulliRBMPath(t(model.W), t(model.a), t(model.b), t(a0))
    beta = 0.6
    exact = np.exp(_rbm_f_beta(model, a0, beta))
    exact /= exact.sum()
    gen = torch.Generator().manual_seed(0)
    states = path.sample_base(20000, gen)
    for _ in range(30):
        states = path.transition(states, beta, gen)
    index = (states.numpy() @ (2 ** np.arange(4)[::-1])).astype(int)
    empirical = np.bincount(index, minlength=16) / len(index)
    assert 0.5 * np.abs(empirical - exact).sum() < 0.02


def test_gaussian_rbm_path_ends_and_gibbs_kernel():
    model = TinyGRBM.random(2, 2, seed=3)
    t = torch.from_numpy
    m, s = np.array([0.4, 0.6]), np.array([0.5, 0.35])
    path = GaussianRBMPath(t(model.W), t(model.mu), t(model.b), t(model.sigma), t(m), t(s))
    v = np.random.default_rng(0).normal(size=(7, 2))
    at_one = path.log_density(t(v), 1.0).numpy()
    want = -grbm_free_energy(model.W, model.mu, model.b, model.sigma, v)
    np.testing.assert_allclose(at_one, want, atol=1e-12)
    at_zero = path.log_density(t(v), 0.0).numpy()
    np.testing.assert_allclose(at_zero, -0.5 * (((v - m) / s) ** 2).sum(1) + 2 * math.log(2))
    assert path.log_z_base == pytest.approx(
        math.log(2 * math.pi) + np.log(s).sum() + 2 * math.log(2), rel=1e-12
    )
    # f_β(v) = Σ_h exp(−½λᵀv² + ηᵀv + c_h), a mixture of Gaussians: per h, precision
    # λ = (1−β)/s² + β/σ², linear term η = (1−β)m/s² + β(μ + Wh)/σ², constant
    # c_h = βbᵀh − ½(1−β)‖m/s‖² − ½β‖μ/σ‖², mass exp(c_h + Σ η²/2λ)·Π √(2π/λ)
    beta = 0.7
    hs = all_binary(2)
    lam = (1 - beta) / s**2 + beta / model.sigma**2
    eta = (1 - beta) * m / s**2 + beta * (model.mu + hs @ model.W.T) / model.sigma**2
    const = (
        beta * (hs @ model.b)
        - 0.5 * (1 - beta) * (m**2 / s**2).sum()
        - 0.5 * beta * (model.mu**2 / model.sigma**2).sum()
    )
    log_mass = const + (eta**2 / (2 * lam)).sum(1) + 0.5 * np.log(2 * math.pi / lam).sum()
    weights = np.exp(log_mass - logsumexp(log_mass))
    means = eta / lam
    mix_mean = weights @ means
    mix_var = weights @ (means**2 + 1 / lam) - mix_mean**2
    gen = torch.Generator().manual_seed(1)
    states = path.sample_base(40000, gen)
    for _ in range(30):
        states = path.transition(states, beta, gen)
    np.testing.assert_allclose(states.mean(0).numpy(), mix_mean, atol=0.01)
    np.testing.assert_allclose(states.var(0).numpy(), mix_var, rtol=0.03)


def test_mala_kernel_restricted_to_the_box_samples_the_truncated_target():
    a = np.array([4.0, 50.0, 10.0])
    c = np.array([0.1, 0.5, 1.1])
    at, ct = torch.from_numpy(a), torch.from_numpy(c)
    path = EnergyPath(
        lambda x: 0.5 * (at * (x - ct) ** 2).sum(-1),
        UniformBoxBase((3,)),
        step_size=0.01,
        target_accept=None,
    )
    gen = torch.Generator().manual_seed(0)
    states = path.sample_base(4000, gen)
    for _ in range(400):
        states = path.transition(states, 1.0, gen)
    assert bool(((states >= 0) & (states <= 1)).all())
    sd = 1 / np.sqrt(a)
    target = truncnorm((0 - c) / sd, (1 - c) / sd, loc=c, scale=sd)
    np.testing.assert_allclose(states.mean(0).numpy(), target.mean(), atol=0.01)
    np.testing.assert_allclose(states.std(0).numpy(), target.std(), rtol=0.05)
    assert 0.3 < np.mean(path.accept_rates) < 0.99


def test_truncated_gaussian_base_normaliser_and_draws():
    mean = torch.tensor([0.2, 0.9], dtype=torch.float64)
    std = torch.tensor([0.3, 0.05], dtype=torch.float64)
    base = TruncatedGaussianBase(mean, std)
    a, b = (0 - mean.numpy()) / std.numpy(), (1 - mean.numpy()) / std.numpy()
    want = np.log(np.sqrt(2 * math.pi) * std.numpy() * (ndtr(b) - ndtr(a)))
    assert base.log_z == pytest.approx(want.sum(), rel=1e-10)
    draws = base.sample(50000, torch.Generator().manual_seed(0)).numpy()
    target = truncnorm(a, b, loc=mean.numpy(), scale=std.numpy())
    np.testing.assert_allclose(draws.mean(0), target.mean(), atol=3e-3)
    np.testing.assert_allclose(draws.std(0), target.std(), rtol=0.02)


# -- log Z: short schedules (default suite) -----------------------------------------------------


def test_rbm_log_z_short_schedule():
    model = TinyRBM.random(12, 8, seed=4)
    data = model.sample_images(300, seed=5)
    path = model.annealing_path(data)
    est = _log_z(path, annealing_schedule("piecewise", 1451))
    _assert_brackets(est, rbm_exact_log_z(model.W, model.a, model.b), 0.15)


def test_grbm_log_z_short_schedule():
    model = TinyGRBM.random(10, 6, seed=6)
    data = torch.rand(200, 10, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = _log_z(model.annealing_path(data), annealing_schedule("piecewise", 1451))
    _assert_brackets(est, grbm_exact_log_z(model.W, model.mu, model.b, model.sigma), 0.15)


def test_gaussian_energy_log_z_short_schedule():
    rng = np.random.default_rng(7)
    a = rng.normal(size=(4, 4))
    model = GaussianEnergyModel(a @ a.T / 4 + 0.5 * np.eye(4), rng.normal(size=4), box=False)
    data = torch.randn(300, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    est = _log_z(model.annealing_path(data), annealing_schedule("sigmoid", 1001))
    _assert_brackets(est, model.exact_log_z, 0.15)


# -- the metric ----------------------------------------------------------------------------------


def test_ais_metric_on_an_enumerable_rbm():
    model = TinyRBM.random(12, 8, seed=8)
    images = model.sample_images(400, seed=9)
    metric = AnnealedImportanceSampling()
    assert Need("model", capabilities=(SupportsEnergy, SupportsAnnealing)) in metric.needs
    assert {"energy", "annealing", "log_z", "log_prob"} <= set(capabilities_of(model))
    inputs = StubInputs({("images", "reference"): images}, model=model, seed=1)
    out = compute(metric, inputs, num_betas=1451, num_runs=50)
    exact = rbm_exact_log_z(model.W, model.a, model.b)
    assert out["log_z_exact"] == pytest.approx(exact, rel=1e-12)
    assert out["log_z_low"] <= exact <= out["log_z_high"]
    free = rbm_free_energy(model.W, model.a, model.b, images.reshape(400, -1).numpy())
    assert out["value"] == pytest.approx(np.mean(-free) - out["log_z"], rel=1e-12)
    assert out["std_err"] == pytest.approx(free.std(ddof=1) / math.sqrt(400), rel=1e-10)
    assert out["space"] == "binary" and out["bits_per_dim"] is None
    assert any("binarised" in w for w in out["warnings"])
    assert out["num_betas"] == 1451 and out["num_runs"] == 50 and out["n"] == 400
    assert set(out) - {"value", "warnings"} == {*metric.fields, *metric.options}
    # the exact test log-likelihood it is compared with
    ll = compute(ExactLogLikelihood(), inputs)
    assert ll["value"] == pytest.approx(np.mean(-free) - exact, rel=1e-12)
    assert abs(out["value"] - ll["value"]) < 0.15


def test_ais_metric_on_a_box_restricted_energy_converts_to_bits_per_dim():
    a = np.diag([20.0, 8.0, 40.0, 5.0])
    model = GaussianEnergyModel(a, np.array([0.3, 0.9, 0.5, 0.1]), box=True)
    images = torch.rand(200, 1, 1, 4, generator=torch.Generator().manual_seed(2))
    out = compute(
        AnnealedImportanceSampling(),
        StubInputs({("images", "reference"): images}, model=model),
        num_betas=1451,
        num_runs=50,
    )
    assert out["log_z_exact"] is None  # not SupportsLogZ
    assert abs(out["log_z"] - model.exact_log_z) < 0.15
    exact_ll = (-model.energy(images).numpy() - model.exact_log_z).mean()
    assert abs(out["value"] - exact_ll) < 0.15
    assert out["space"] == "density"
    assert out["bits_per_dim"] == pytest.approx(8 - out["value"] / (4 * math.log(2)), rel=1e-12)


def test_bad_input_is_one_line():
    model = TinyRBM.random(6, 3, seed=0)
    images = model.sample_images(10, seed=0)
    metric = AnnealedImportanceSampling()
    inputs = StubInputs({("images", "reference"): images}, model=model)
    with pytest.raises(InputError, match="num_runs"):
        compute(metric, inputs, num_runs=1)
    with pytest.raises(InputError, match="schedule"):
        compute(metric, inputs, schedule="cosine")
    with pytest.raises(InputError, match="at least 4 betas"):
        compute(metric, inputs, num_betas=3)
    wrong = StubInputs({("images", "reference"): images.reshape(10, 1, 2, 3)}, model=model)
    with pytest.raises(InputError, match=r"shape \(1, 2, 3\), expected \(1, 1, 6\)"):
        compute(metric, wrong, num_betas=10)


def test_ais_and_ll_are_registered():
    registry = get_registry()
    assert isinstance(registry.metric("ais"), AnnealedImportanceSampling)
    assert isinstance(registry.metric("ll"), ExactLogLikelihood)


# -- the default schedule (slow) ----------------------------------------------------------------


@pytest.mark.slow
def test_rbm_log_z_default_schedule():
    model = TinyRBM.random(20, 10, seed=10)
    path = model.annealing_path(model.sample_images(500, seed=11))
    est = _log_z(path, piecewise_schedule())
    _assert_brackets(est, rbm_exact_log_z(model.W, model.a, model.b), 0.1)


@pytest.mark.slow
def test_grbm_log_z_default_schedule():
    model = TinyGRBM.random(16, 8, seed=12)
    data = torch.rand(300, 16, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    est = _log_z(model.annealing_path(data), piecewise_schedule())
    _assert_brackets(est, grbm_exact_log_z(model.W, model.mu, model.b, model.sigma), 0.1)


@pytest.mark.slow
@pytest.mark.parametrize("box", [False, True])
def test_gaussian_energy_log_z_default_schedule(box):
    rng = np.random.default_rng(13)
    if box:
        precision = np.diag(rng.uniform(2, 30, size=10))
        data = torch.rand(500, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    else:
        a = rng.normal(size=(10, 10))
        precision = a @ a.T / 10 + 0.5 * np.eye(10)
        data = torch.randn(500, 10, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    model = GaussianEnergyModel(precision, rng.uniform(-0.2, 1.2, size=10), box=box)
    est = _log_z(model.annealing_path(data), piecewise_schedule())
    _assert_brackets(est, model.exact_log_z, 0.1)


def _hidden_enumeration(log_weight, n_hidden: int, chunk: int = 1 << 16) -> float:
    """log Σ_h exp(log_weight(h)) over {0,1}^n_hidden in float64, chunk by chunk (torch)."""
    bits = torch.arange(n_hidden)
    parts = []
    for start in range(0, 1 << n_hidden, chunk):
        index = torch.arange(start, min(start + chunk, 1 << n_hidden))
        h = ((index[:, None] >> bits) & 1).to(torch.float64)
        parts.append(torch.logsumexp(log_weight(h), 0))
    return float(torch.logsumexp(torch.stack(parts), 0))


@pytest.mark.slow
def test_bundled_rbm_log_z_default_schedule():
    from geneval_plugins.datasets.digits import DigitsDataset

    loaded = get_registry().model("rbm").load(None, device=torch.device("cpu"))
    net = loaded.net
    W, a, b = (p.detach().double() for p in (net.weight, net.visible_bias, net.hidden_bias))
    exact = _hidden_enumeration(
        lambda h: h @ b + torch.nn.functional.softplus(a + h @ W.T).sum(1), W.shape[1]
    )
    images = DigitsDataset().load("train").images
    binary = (images.flatten(1) > 0.5).double()
    path = BernoulliRBMPath.from_data(W, a, b, binary)
    est = _log_z(path, piecewise_schedule())
    _assert_brackets(est, exact, 0.1)


@pytest.mark.slow
def test_bundled_grbm_log_z_agrees_with_hidden_enumeration():
    from geneval_plugins.datasets.digits import DigitsDataset

    loaded = get_registry().model("grbm").load(None, device=torch.device("cpu"))
    net = loaded.net
    W, mu, b, sigma = (
        p.detach().double() for p in (net.weight, net.visible_bias, net.hidden_bias, net.sigma)
    )

    def log_weight(h):
        m = h @ W.T
        return h @ b + ((2 * mu * m + m**2) / (2 * sigma**2)).sum(1)

    exact = (
        _hidden_enumeration(log_weight, W.shape[1])
        + 0.5 * W.shape[0] * math.log(2 * math.pi)
        + float(torch.log(sigma).sum())
    )
    data = DigitsDataset().load("train").images.flatten(1).double()
    path = GaussianRBMPath.from_data(W, mu, b, sigma, data)
    est = _log_z(path, piecewise_schedule())
    _assert_brackets(est, exact, 0.1)
