"""``ode_ll``: the probability-flow ODE log-likelihood (Song et al. 2021, §4.3, App. D.2).

* Closed form: for Gaussian data N(μ, Σ) (D = 16, anisotropic Σ) the perturbed marginal of
  every SDE is Gaussian, p_t = N(α(t)μ, α(t)²Σ + v(t)I) with α = 1 (ve) and v = σ(t)² (ve),
  1 − α² (vp), (1 − α²)² (subvp); its score −(α²Σ + vI)⁻¹(x − αμ) is exact, so the ODE
  log-likelihood of a point is log N(x; μ, Σ) up to the solver's tolerance, the ε of the
  time range and the prior's mismatch with p_T (made negligible here by the SDE's range).
* The metric's wiring (dequantisation, the [0, 1] → model-space Jacobian, −D·ln 256, bits/dim)
  against the same draws computed here.
* The bundled DDPM: exact and Hutchinson divergences agree, and a transcription of
  score_sde's ``get_likelihood_fn`` (scipy ``solve_ivp`` RK45) gives the same bits/dim.
* Bad input: exit 2 with one line.
"""

from __future__ import annotations

import math

import pytest
import torch

from geneval.capabilities import ProbabilityFlowSDE, SupportsProbabilityFlow
from geneval.errors import InputError
from geneval.sources import sample_block_seed
from geneval_plugins.metrics.likelihood.ode_ll import ProbabilityFlowLogLikelihood, dequantize
from geneval_plugins.metrics.likelihood.pf_ode import (
    draw_probes,
    prior_log_prob,
    solve_probability_flow,
)
from tests.stub_inputs import StubInputs, compute, metric_options

pytestmark = pytest.mark.numerics

D = 16
SHAPE = (1, 4, 4)


def _gaussian(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """μ (D,) and an anisotropic Σ (D, D) with eigenvalues from 0.05 to 2, float64."""
    gen = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(D, D, generator=gen, dtype=torch.float64))
    lam = torch.logspace(math.log10(0.05), math.log10(2.0), D, dtype=torch.float64)
    mu = 0.02 * torch.randn(D, generator=gen, dtype=torch.float64)
    return mu, q @ torch.diag(lam) @ q.T


def _perturbed(sde: ProbabilityFlowSDE, mu, sigma, t: torch.Tensor):
    """α(t) (N,) and the covariance α²Σ + v(t)I (N, D, D) of p_t for Gaussian data."""
    t = t.to(torch.float64)
    # Song et al. 2021, App. B, written out here independently of the code under test
    if sde.kind == "ve":
        alpha = torch.ones_like(t)
        var = (sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t) ** 2
    else:
        alpha = torch.exp(-0.25 * t**2 * (sde.beta_max - sde.beta_min) - 0.5 * t * sde.beta_min)
        var = 1 - alpha**2 if sde.kind == "vp" else (1 - alpha**2) ** 2
    eye = torch.eye(mu.numel(), dtype=torch.float64)
    return alpha, alpha[:, None, None] ** 2 * sigma + var[:, None, None] * eye


def _gaussian_score(sde: ProbabilityFlowSDE, mu, sigma):
    """The exact score of p_t: −(α²Σ + vI)⁻¹(x − αμ)."""

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1).to(torch.float64)
        alpha, cov = _perturbed(sde, mu, sigma, t)
        r = (flat - alpha[:, None] * mu).unsqueeze(-1)
        return (-torch.linalg.solve(cov, r).squeeze(-1)).to(x.dtype).reshape(x.shape)

    return score


def _log_normal(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    """log N(x; mean, cov) per row, by a Cholesky factor (float64)."""
    chol = torch.linalg.cholesky(cov)
    r = torch.linalg.solve_triangular(chol, (x - mean).unsqueeze(-1), upper=False).squeeze(-1)
    logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
    return -0.5 * (x.shape[-1] * math.log(2 * math.pi) + logdet + (r**2).sum(-1))


#: SDEs whose range makes the prior mismatch and the start ε negligible (< 1e-5 nats).
SDES = {
    "vp": ProbabilityFlowSDE("vp", beta_min=0.1, beta_max=40.0, eps=1e-7),
    "subvp": ProbabilityFlowSDE("subvp", beta_min=0.1, beta_max=40.0, eps=1e-7),
    "ve": ProbabilityFlowSDE("ve", sigma_min=1e-4, sigma_max=1e4, eps=0.0),
}


@pytest.mark.parametrize("kind", sorted(SDES))
def test_closed_form_gaussian_exact_divergence(kind: str):
    sde = SDES[kind]
    mu, sigma = _gaussian()
    gen = torch.Generator().manual_seed(1)
    x = mu + torch.randn(6, D, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    sol = solve_probability_flow(
        sde, _gaussian_score(sde, mu, sigma), x.reshape(6, *SHAPE), rtol=1e-6, atol=1e-6
    )
    want = _log_normal(x, mu, sigma)
    assert (sol.log_likelihood - want).abs().max() < 1e-4
    # The solver alone: the true log p_T(x_T) plus the integral is log p_ε(x).
    alpha_t, cov_t = _perturbed(sde, mu, sigma, torch.tensor([sde.t_end]))
    alpha_0, cov_0 = _perturbed(sde, mu, sigma, torch.tensor([sde.eps]))
    solver = _log_normal(sol.z, alpha_t * mu, cov_t[0]) + sol.delta_logp
    assert (solver - _log_normal(x, alpha_0 * mu, cov_0[0])).abs().max() < 1e-4
    prior_error = prior_log_prob(sde, sol.z) - _log_normal(sol.z, alpha_t * mu, cov_t[0])
    assert prior_error.abs().max() < 1e-4
    assert bool((sol.nfe > 20).all()) and bool((sol.nfe % 6 == 2).all())  # 2 start + 6/step


@pytest.mark.parametrize(("kind", "noise"), [("vp", "rademacher"), ("ve", "gaussian")])
def test_closed_form_gaussian_hutchinson_within_three_standard_errors(kind: str, noise: str):
    sde = SDES[kind]
    mu, sigma = _gaussian(2)
    n = 24
    gen = torch.Generator().manual_seed(3)
    x = mu + torch.randn(n, D, generator=gen, dtype=torch.float64) @ torch.linalg.cholesky(sigma).T
    probes = draw_probes((2, n, *SHAPE), noise, gen, "cpu").to(torch.float64)
    sol = solve_probability_flow(
        sde,
        _gaussian_score(sde, mu, sigma),
        x.reshape(n, *SHAPE),
        probes=probes,
        rtol=1e-6,
        atol=1e-6,
    )
    diff = sol.log_likelihood - _log_normal(x, mu, sigma)
    std_err = float(diff.std() / math.sqrt(n))
    assert std_err > 0.05  # the probes do add noise
    assert abs(float(diff.mean())) < 3 * std_err


class GaussianFlowModel:
    """A model with the ``probability_flow`` capability whose score is exact for data
    N(μ, Σ) in its space x = 2y − 1 (an analytic stand-in for a score network)."""

    family = "gaussian-flow"
    image_shape = SHAPE
    device = torch.device("cpu")

    def __init__(self, sde: ProbabilityFlowSDE, mu: torch.Tensor, sigma: torch.Tensor):
        self.probability_flow = sde
        self.score = _gaussian_score(sde, mu, sigma)

    def flow_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact perturbed score."""
        return self.score(x, t)


def test_metric_dequantises_maps_to_the_model_space_and_reports_bits_per_dim():
    sde = ProbabilityFlowSDE(
        "vp", beta_min=0.1, beta_max=40.0, eps=1e-7, data_scale=2.0, data_shift=-1.0
    )
    mu, sigma = _gaussian(4)
    sigma = sigma * 0.1
    model = GaussianFlowModel(sde, mu, sigma)
    assert isinstance(model, SupportsProbabilityFlow)
    gen = torch.Generator().manual_seed(5)
    images = torch.randint(0, 256, (5, *SHAPE), generator=gen).to(torch.float32) / 255
    result = compute(
        ProbabilityFlowLogLikelihood(),
        StubInputs({("images", "reference"): images}, model=model, seed=7),
        batch_size=3,
        dequantization_draws=2,
        rtol=1e-6,
        atol=1e-6,
    )
    # The same draws: per block of batch_size images, a generator seeded from (seed, first index).
    per_image = []
    for lo in (0, 3):
        block = images[lo : lo + 3]
        g = torch.Generator().manual_seed(sample_block_seed(7, lo))
        draws = []
        for _ in range(2):
            y = (torch.round(block * 255) + torch.rand(block.shape, generator=g)) / 256
            x = (2 * y - 1).reshape(-1, D).to(torch.float64)
            draws.append(_log_normal(x, mu, sigma) + D * math.log(2) - D * math.log(256))
        per_image.append(torch.stack(draws).mean(0))
    want = torch.cat(per_image)
    # float32 states far in the tails (about −220 nats): the solver is good to ~1e-6 relative
    assert result["value"] == pytest.approx(float(want.mean()), abs=1e-3)
    assert result["std_err"] == pytest.approx(float(want.std() / math.sqrt(5)), rel=1e-3)
    assert result["bits_per_dim"] == pytest.approx(-result["value"] / (D * math.log(2)), rel=1e-12)
    assert result["space"] == "discrete-8bit" and result["n"] == 5
    assert result["divergence_used"] == "exact" and result["sde"] == "vp"
    assert result["nfe"] > 20 and result["nfe_max"] >= result["nfe"]
    assert result["warnings"] == []  # std(ε) = √(1 − α(ε)²) ≈ 3e-4 < 1/256


def test_a_start_noise_above_an_8bit_bin_is_warned():
    """σ(ε) = σ_min = 0.01 > 1/256: the value is that of smoothed data, and the report says so."""
    sde = ProbabilityFlowSDE("ve", sigma_min=0.01, sigma_max=100.0, eps=0.0)
    model = GaussianFlowModel(sde, *_gaussian())
    images = torch.full((1, *SHAPE), 0.5)
    inputs = StubInputs({("images", "reference"): images}, model=model)
    result = compute(ProbabilityFlowLogLikelihood(), inputs, rtol=1e-3, atol=1e-3)
    assert len(result["warnings"]) == 1 and "σ = 0.01" in result["warnings"][0]


def test_dequantize_fills_each_8bit_bin():
    images = torch.tensor([0.0, 1 / 255, 1.0]).reshape(3, 1, 1, 1).expand(3, 1, 1, 1000)
    y = dequantize(images, torch.Generator().manual_seed(0))
    k = torch.tensor([0.0, 1.0, 255.0]).reshape(3, 1, 1, 1)
    assert bool(((y >= k / 256) & (y < (k + 1) / 256)).all())
    assert float((y * 256 - k).mean()) == pytest.approx(0.5, abs=0.03)


# -- bad input ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "culprit"),
    [({"rtol": 0.0}, "rtol"), ({"atol": -1e-5}, "atol"), ({"probes": 0}, "probes")],
)
def test_non_positive_tolerances_and_zero_probes_are_input_errors(given, culprit):
    with pytest.raises(InputError, match=culprit):
        metric_options(ProbabilityFlowLogLikelihood(), **given)


def test_model_without_a_flow_sde_names_the_model_and_the_capability():
    class NoFlow(GaussianFlowModel):
        family = "ddpm"

    model = NoFlow(SDES["vp"], *_gaussian())
    model.probability_flow = None
    images = torch.zeros(2, *SHAPE)
    with pytest.raises(InputError, match="'ddpm'.*'probability_flow'"):
        compute(
            ProbabilityFlowLogLikelihood(),
            StubInputs({("images", "reference"): images}, model=model),
        )


@pytest.mark.parametrize(
    ("args", "culprit"),
    [
        (["--model", "vae"], "probability_flow"),
        (["--model", "ddpm", "--opt", "ode_ll.rtol=0"], "rtol"),
        (["--model", "ddpm", "--opt", "ode_ll.atol=-1"], "atol"),
        (["--model", "ddpm", "--opt", "ode_ll.probes=0"], "probes"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(run_cli, tmp_path, args, culprit):
    res = run_cli("run", *args, "--metrics", "ode_ll", "--json", tmp_path / "r.json")
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1 and culprit in res.err_lines[0], res.err
    assert not (tmp_path / "r.json").exists()


# -- the bundled DDPM -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled_ddpm():
    from geneval_plugins.datasets.digits import DigitsDataset
    from geneval_plugins.models.diffusion.ddpm import DDPMFamily

    model = DDPMFamily().load(None, device=torch.device("cpu"))
    return model, DigitsDataset().load("test").images


def test_bundled_ddpm_is_the_vp_sde_of_its_linear_schedule(bundled_ddpm):
    model, _ = bundled_ddpm
    sde = model.probability_flow
    assert isinstance(model, SupportsProbabilityFlow)
    assert (sde.kind, sde.eps, sde.t_end) == ("vp", 1e-5, 1.0)
    assert sde.beta_min == pytest.approx(0.1) and sde.beta_max == pytest.approx(20.0)
    assert (sde.data_scale, sde.data_shift) == (2.0, -1.0)
    # s(x, t) = −ε(x, T·t)/std(t), std² = 1 − exp(−½t²(β_max − β_min) − tβ_min)
    x = torch.linspace(-1, 1, 2 * 64).reshape(2, 1, 8, 8)
    t = torch.tensor([0.3, 0.7])
    std = torch.sqrt(1 - torch.exp(-0.5 * t**2 * 19.9 - t * 0.1)).reshape(2, 1, 1, 1)
    want = -model.eps_model(x, t * 1000) / std
    assert torch.allclose(model.flow_score(x, t), want, rtol=1e-5, atol=1e-6)


def test_bundled_ddpm_agrees_with_score_sde_likelihood_fn(bundled_ddpm):
    """score_sde's ``get_likelihood_fn`` (transcribed in ``tests/score_sde_reference.py``), on
    the same dequantised images and the same Rademacher probe: bits/dim to 1e-3 relative."""
    from geneval_plugins.metrics.likelihood.ode_ll import image_log_likelihoods
    from tests.score_sde_reference import vp_likelihood_bpd

    model, images = bundled_ddpm
    images = images[:2]
    dims = 64
    ll, nfe = image_log_likelihoods(
        model,
        model.probability_flow,
        images,
        generator=torch.Generator().manual_seed(0),
        draws=1,
        exact=False,
        probes=1,
        noise="rademacher",
        rtol=1e-5,
        atol=1e-5,
    )
    ours = -ll / (dims * math.log(2))
    gen = torch.Generator().manual_seed(0)  # the same draws, in the same order
    y = dequantize(images, gen)
    probe = draw_probes((1, *images.shape), "rademacher", gen, "cpu")[0]
    theirs, _, their_nfe = vp_likelihood_bpd(model.eps_model, 2 * y - 1, probe)
    assert torch.allclose(ours, theirs.to(torch.float64), rtol=1e-3, atol=0)
    assert 2.0 < float(ours.mean()) < 8.0
    assert float(nfe.max()) <= 2 * their_nfe


@pytest.mark.slow
def test_bundled_ddpm_hutchinson_agrees_with_the_exact_divergence(bundled_ddpm):
    """Three dequantised images, the exact divergence once and 16 independent single-probe
    Hutchinson solves each: the mean difference is within 3 standard errors of zero."""
    model, images = bundled_ddpm
    sde = model.probability_flow
    y = dequantize(images[:3], torch.Generator().manual_seed(1))
    x = 2 * y - 1
    exact = solve_probability_flow(sde, model.flow_score, x).log_likelihood
    k = 16
    probes = draw_probes((1, 3 * k, 1, 8, 8), "rademacher", torch.Generator().manual_seed(2), "cpu")
    hutch = solve_probability_flow(sde, model.flow_score, x.repeat(k, 1, 1, 1), probes=probes)
    diff = hutch.log_likelihood - exact.repeat(k)
    std_err = float(diff.std() / math.sqrt(diff.numel()))
    assert 0.01 < std_err < 5.0
    assert abs(float(diff.mean())) < 3 * std_err


# -- ncsn and ebm (VE) ------------------------------------------------------------------------


def test_bundled_ncsn_is_the_ve_sde_of_its_noise_levels():
    from geneval_plugins.models.diffusion.ncsn import NCSNFamily

    model = NCSNFamily().load(None, device=torch.device("cpu"))
    sde = model.probability_flow
    assert isinstance(model, SupportsProbabilityFlow)
    assert sde.kind == "ve" and (sde.data_scale, sde.data_shift) == (1.0, 0.0)
    assert sde.sigma_max == float(model.sigmas[0]) and sde.sigma_min == float(model.sigmas[-1])
    x = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 0.5, 1.0])
    sigma = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    assert torch.allclose(sigma[[0, 2]], torch.tensor([sde.sigma_min, sde.sigma_max]))
    assert torch.allclose(model.flow_score(x, t), model.score(x, sigma), rtol=1e-6, atol=1e-6)


def _finite_difference_divergence(drift, x: torch.Tensor, t: torch.Tensor, h: float = 1e-4):
    """Σ_j (f̃_j(x + h e_j) − f̃_j(x − h e_j)) / 2h, in float64."""
    n, dims = x.shape
    total = torch.zeros(n, dtype=torch.float64)
    for j in range(dims):
        step = torch.zeros_like(x)
        step[:, j] = h
        total += (drift(x + step, t)[:, j] - drift(x - step, t)[:, j]) / (2 * h)
    return total


def test_bundled_ebm_score_is_minus_the_energy_gradient_and_its_divergence_is_exact():
    from geneval_plugins.metrics.likelihood.pf_ode import (
        drift_and_exact_divergence,
        drift_and_hutchinson_divergence,
        probability_flow_drift,
    )
    from geneval_plugins.models.energy.ebm import EBMFamily

    model = EBMFamily().load(None, device=torch.device("cpu"))
    sde = model.probability_flow
    assert isinstance(model, SupportsProbabilityFlow) and sde.kind == "ve"
    assert sde.sigma_min == pytest.approx(float(model.net.sigmas[-1]))
    x = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.2, 0.8])
    sigma = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
    y = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(model.net(y, sigma).sum(), y)
    assert torch.allclose(model.flow_score(x, t), -grad, rtol=1e-6, atol=1e-7)
    # The exact divergence (second derivatives of E) against central differences, in float64.
    model.net.to(torch.float64)
    try:
        drift = probability_flow_drift(sde, model.flow_score, (1, 8, 8))
        flat = x.reshape(2, 64).to(torch.float64)
        t64 = t.to(torch.float64)
        value, div = drift_and_exact_divergence(drift, flat, t64, max_rows=40)
        assert torch.allclose(value, drift(flat, t64), rtol=1e-12, atol=1e-12)
        want = _finite_difference_divergence(drift, flat, t64)
        assert torch.allclose(div, want, rtol=1e-6, atol=1e-6)
        # Hutchinson with the 64 unit vectors (scaled by √64) as probes is the exact trace.
        eye = torch.eye(64, dtype=torch.float64)
        probes = eye[:, None, :].expand(64, 2, 64) * 8.0
        _, hutch = drift_and_hutchinson_divergence(drift, flat, t64, probes)
        assert torch.allclose(hutch, div, rtol=1e-10, atol=1e-9)
    finally:
        model.net.to(torch.float32)


@pytest.mark.slow
def test_two_ranks_give_the_one_process_result(geneval_exe, tmp_path):
    """Each rank solves its own whole blocks with the noise of (seed, block): ``--nproc 2``
    reports exactly what one process does."""
    import json
    import os
    import subprocess

    # one thread per process on both sides: float32 kernels reduce in an order that depends on
    # the thread count, and the adaptive steps follow the last bits
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GENEVAL_CACHE": str(tmp_path)}
    values = []
    for nproc in ("1", "2"):
        out = tmp_path / f"r{nproc}.json"
        args = [
            "run", "--model", "ddpm", "--reference", "digits:test", "--metrics", "ode_ll",
            "--opt", "ode_ll.max_images=4", "--opt", "ode_ll.batch_size=2",
            "--opt", "ode_ll.divergence=hutchinson", "--num-samples", "4",
            "--nproc", nproc, "--json", str(out), "--quiet",
        ]  # fmt: skip
        done = subprocess.run(
            [*geneval_exe, *args], capture_output=True, text=True, timeout=600, env=env
        )
        assert done.returncode == 0, done.stderr
        values.append(json.loads(out.read_text())["metrics"]["ode_ll"])
    one, two = values
    for key in ("value", "std_err", "bits_per_dim", "nfe", "n"):
        assert one[key] == two[key], key
