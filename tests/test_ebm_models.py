"""The ``rbm``, ``grbm`` and ``ebm`` families: checkpoints, seeding, samplers, capabilities.

Tiny models trained for a few steps check the plumbing (determinism, round trips, samplers,
errors); the training loop itself and resume are in ``test_training.py``, the quality of the
bundled checkpoints in ``test_model_quality.py``.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from geneval.api import GenerativeModel, ModelFamily
from geneval.capabilities import (
    SupportsAnnealing,
    SupportsEnergy,
    SupportsLogProb,
    SupportsLogZ,
    SupportsProbabilityFlow,
)
from geneval.checkpoint import load_checkpoint
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval.sampling import draw
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.models.energy.ebm import EBMFamily
from geneval_plugins.models.energy.ebm_model import AnnealedEnergyLangevin
from geneval_plugins.models.energy.ebm_network import ConvEnergy, downsamplings
from geneval_plugins.models.energy.grbm import GRBMFamily
from geneval_plugins.models.energy.mcmc import LangevinSampler, ReplayBufferSampler
from geneval_plugins.models.energy.rbm import RBMFamily
from geneval_plugins.models.score_matching import denoising_score_matching_loss

CPU = torch.device("cpu")
TINY = {
    "rbm": {"hidden": 8, "sample_steps": 5},
    "grbm": {"hidden": 8, "sample_steps": 5},
    "ebm": {"channels": 4, "batch_size": 16, "langevin_steps": 3},
}
FAMILIES = {"rbm": RBMFamily(), "grbm": GRBMFamily(), "ebm": EBMFamily()}


@pytest.fixture(scope="module")
def digits():
    return DigitsDataset().load("train")


def train_tiny(name: str, data, path: Path, *, seed: int = 0, steps: int = 4, **extra) -> Path:
    return FAMILIES[name].train(
        data,
        output=path,
        steps=steps,
        device=CPU,
        seed=seed,
        resume=False,
        force=False,
        options={**TINY[name], **extra},
    )


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_registered_and_protocols(name):
    family = get_registry().model(name)
    assert isinstance(family, type(FAMILIES[name]))
    assert isinstance(family, ModelFamily)
    assert family.dataset == "digits"
    flow = (SupportsProbabilityFlow,) if name == "ebm" else ()
    assert family.capabilities == (SupportsEnergy, SupportsAnnealing, *flow)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_train_is_deterministic_and_round_trips(name, digits, tmp_path):
    a = train_tiny(name, digits, tmp_path / "a.safetensors")
    b = train_tiny(name, digits, tmp_path / "b.safetensors")
    c = train_tiny(name, digits, tmp_path / "c.safetensors", seed=1)
    ta, tb, tc = (load_file(str(p)) for p in (a, b, c))
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta if k.startswith("net."))

    model = FAMILIES[name].load(a, device=CPU)
    assert isinstance(model, GenerativeModel) and isinstance(model, SupportsEnergy)
    assert not hasattr(model, "capabilities")
    # the loaded network holds exactly the stored weights
    state = model.net.state_dict()
    weights = "ema." if any(k.startswith("ema.") for k in ta) else "net."  # sampling weights
    assert all(torch.equal(state[k[4:]], v) for k, v in ta.items() if k.startswith(weights))
    assert model.config["train"]["seed"] == 0 and model.config["train"]["steps_done"] == 4


def test_rbm_parameters_keep_their_names_and_the_likelihood_spaces(digits, tmp_path):
    rbm = load_checkpoint(train_tiny("rbm", digits, tmp_path / "r.safetensors"), family="rbm")
    assert {"weight", "visible_bias", "hidden_bias"} <= set(rbm.group("net"))
    assert rbm.group("net")["weight"].shape == (64, 8)
    model = RBMFamily().load(tmp_path / "r.safetensors", device=CPU)
    assert model.likelihood_space == "binary" and "> 0.5" in model.binarization
    assert isinstance(model, SupportsLogZ) and isinstance(model, SupportsLogProb)
    grbm = GRBMFamily().load(train_tiny("grbm", digits, tmp_path / "g.safetensors"), device=CPU)
    assert grbm.likelihood_space == "density" and isinstance(grbm, SupportsLogZ)
    # a learned σ moves away from its start; a fixed one stays
    learned = grbm.net.sigma
    fixed = (
        GRBMFamily()
        .load(train_tiny("grbm", digits, tmp_path / "f.safetensors", learn_sigma=False), device=CPU)
        .net.sigma
    )
    assert not torch.allclose(learned, torch.full_like(learned, 0.3))
    torch.testing.assert_close(fixed, torch.full_like(fixed, 0.3))
    ebm = EBMFamily().load(train_tiny("ebm", digits, tmp_path / "e.safetensors"), device=CPU)
    assert ebm.likelihood_space == "density"
    assert not isinstance(ebm, SupportsLogZ) and not isinstance(ebm, SupportsLogProb)


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_same_seed_same_samples(name, digits, tmp_path):
    model = FAMILIES[name].load(train_tiny(name, digits, tmp_path / "m.safetensors"), device=CPU)

    def sample(seed: int) -> torch.Tensor:
        return model.sample(7, batch_size=3, generator=torch.Generator().manual_seed(seed))

    first, again, other = sample(0), sample(0), sample(1)
    with torch.inference_mode():  # the runner samples under inference mode
        assert torch.equal(sample(0), first)
    assert first.shape == (7, 1, 8, 8) and first.dtype == torch.float32
    assert first.min() >= 0 and first.max() <= 1
    assert torch.equal(first, again)
    assert not torch.equal(first, other)
    assert model.energy(DigitsDataset().load("test").images[:5]).shape == (5,)


@pytest.mark.parametrize("name", ["rbm", "grbm"])
def test_gibbs_samplers_and_steps(name, digits, tmp_path):
    model = FAMILIES[name].load(train_tiny(name, digits, tmp_path / "m.safetensors"), device=CPU)
    g = torch.Generator().manual_seed(0)
    states = model.sample(20, batch_size=20, generator=g, sampler="gibbs-state", steps=2)
    if name == "rbm":  # binary states, but means in (0, 1)
        assert set(states.unique().tolist()) <= {0.0, 1.0}
        means = model.sample(20, batch_size=20, generator=g, sampler="gibbs", steps=2)
        assert ((means > 0) & (means < 1)).all()
    with pytest.raises(InputError, match="langevin"):
        model.sample(2, batch_size=2, generator=g, sampler="langevin")
    with pytest.raises(InputError, match="steps"):
        model.sample(2, batch_size=2, generator=g, steps=0)


def test_ebm_replay_sampler_needs_a_kept_buffer(digits, tmp_path):
    plain = EBMFamily().load(train_tiny("ebm", digits, tmp_path / "p.safetensors"), device=CPU)
    with pytest.raises(InputError, match="replay buffer"):
        plain.sample(2, batch_size=2, generator=torch.Generator(), sampler="replay")
    kept = train_tiny("ebm", digits, tmp_path / "b.safetensors", objective="cd", buffer_size=32)
    buffer = load_checkpoint(kept, family="ebm").group("state")["buffer"]
    assert buffer.shape == (32, 1, 8, 8)
    model = EBMFamily().load(kept, device=CPU)
    a = model.sample(5, batch_size=5, generator=torch.Generator().manual_seed(0), sampler="replay")
    b = model.sample(5, batch_size=5, generator=torch.Generator().manual_seed(0), sampler="replay")
    assert torch.equal(a, b)  # sampling does not change the model's buffer


def test_replay_buffer_sampler_writes_chains_back():
    """Starts come from the buffer (or noise with probability reinit) and return to their slots."""
    buffer = torch.full((10, 2), 0.5)
    langevin = LangevinSampler(steps=2, step_size=0.1, noise_scale=0.0, clamp=(0.0, 1.0))
    sampler = ReplayBufferSampler(langevin, buffer, reinit=0.0)

    def energy(x: torch.Tensor) -> torch.Tensor:
        return ((x - 1.0) ** 2).sum(-1)  # pulls towards 1

    out = draw(sampler, energy, (4, 2), torch.Generator().manual_seed(0), device=CPU)
    torch.testing.assert_close(out, torch.full((4, 2), 0.5 + 0.1 + 0.08))  # two exact steps
    assert (buffer > 0.5).any(dim=1).sum() <= 4 and (buffer > 0.5).any()
    with pytest.raises(ValueError):
        ReplayBufferSampler(langevin, buffer, reinit=1.5)


def test_ebm_convolution_stack_follows_the_image_size():
    assert [downsamplings((s, s)) for s in (4, 8, 16, 32)] == [1, 2, 3, 4]
    for side in (8, 16, 12):
        net = ConvEnergy(3, 4, (side, side), spectral_norm=True)
        assert net(torch.rand(2, 3, side, side)).shape == (2,)


class _SmoothedGaussianEnergy(torch.nn.Module):
    """The exact noise-conditional energy of N(μ, τ² I) data smoothed by N(0, σ² I):
    E(x, σ) = ‖x − μ‖² / 2(τ² + σ²) (up to a constant)."""

    def __init__(self, mean: torch.Tensor, tau: float) -> None:
        super().__init__()
        self.mean, self.tau = mean, tau

    def forward(self, x: torch.Tensor, sigma) -> torch.Tensor:
        sigma = torch.as_tensor(sigma, dtype=x.dtype).reshape(-1, *([1] * (x.ndim - 1)))
        return ((x - self.mean) ** 2 / (2 * (self.tau**2 + sigma**2))).flatten(1).sum(1)


def test_annealed_langevin_on_an_exact_noise_conditional_energy():
    """Annealed Langevin on −∇ₓE(x, σ) of the exact smoothed Gaussian, ending with the Tweedie
    step, recovers the data's mean and variance (τ²·τ²/(τ² + σ_L²) after denoising)."""
    mean, tau, sigma_min = torch.tensor([0.3, -0.2, 0.7]), 0.25, 0.05
    energy = _SmoothedGaussianEnergy(mean, tau)
    sigmas = torch.logspace(math.log10(3.0), math.log10(sigma_min), 10).tolist()
    sampler = AnnealedEnergyLangevin(sigmas, eps=2e-3, steps_per_level=100)
    out = draw(sampler, energy, (8000, 3), torch.Generator().manual_seed(0), device=CPU)
    expected_var = tau**2 * tau**2 / (tau**2 + sigma_min**2)
    se_mean = math.sqrt(expected_var / 8000)
    assert (out.mean(0) - mean).abs().max() < 4 * se_mean
    np.testing.assert_allclose(out.var(0).numpy(), expected_var, rtol=0.06)


def test_noise_conditional_energy_network():
    sigmas = [2.0, 1.0, 0.5, 0.1]
    net = ConvEnergy(1, 4, (8, 8), sigmas=sigmas)
    x = torch.rand(3, 1, 8, 8)
    assert net.conditional and net(x).shape == (3,)
    torch.testing.assert_close(net(x), net(x, 0.1))  # default: the smallest level
    per_image = net(x, torch.tensor([2.0, 1.0, 0.1]))
    torch.testing.assert_close(per_image[2], net(x[2:], 0.1)[0])
    assert not torch.allclose(net(x, 2.0) * 2.0, net(x, 0.1) * 0.1)  # conditioned, not rescaled
    with pytest.raises(ValueError, match="decrease"):
        ConvEnergy(1, 4, (8, 8), sigmas=[0.1, 1.0])


def test_annealed_sampler_needs_a_noise_conditional_energy(digits, tmp_path):
    plain = train_tiny("ebm", digits, tmp_path / "plain.safetensors", objective="dsm")
    model = EBMFamily().load(plain, device=CPU)
    with pytest.raises(InputError, match="noise-conditional"):
        model.sample(2, batch_size=2, generator=torch.Generator(), sampler="annealed-langevin")
    annealed = train_tiny(
        "ebm", digits, tmp_path / "annealed.safetensors", objective="dsm", noise_levels=3
    )
    model = EBMFamily().load(annealed, device=CPU)
    assert model.config["sampling"]["sampler"] == "annealed-langevin"
    assert len(model.config["arch"]["sigmas"]) == 3
    out = model.sample(4, batch_size=4, generator=torch.Generator().manual_seed(0))
    assert out.shape == (4, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    with pytest.raises(InputError, match="objective=dsm"):
        train_tiny("ebm", digits, tmp_path / "cd.safetensors", objective="cd", noise_levels=3)


def test_training_errors_name_the_culprit(digits, tmp_path):
    path = train_tiny("rbm", digits, tmp_path / "m.safetensors")
    with pytest.raises(InputError, match="already exists"):
        train_tiny("rbm", digits, path)
    with pytest.raises(InputError, match="nonsense"):
        train_tiny("rbm", digits, tmp_path / "x.safetensors", nonsense=1)
    with pytest.raises(InputError, match="method"):
        train_tiny("rbm", digits, tmp_path / "y.safetensors", method="sgd")
    with pytest.raises(InputError, match="objective"):
        train_tiny("ebm", digits, tmp_path / "z.safetensors", objective="nce")
    with pytest.raises(InputError, match="not 'grbm'"):
        GRBMFamily().load(path, device=CPU)


def test_ebm_denoising_score_matching_objective_lowers_its_loss(digits, tmp_path):
    """DSM training (no sampling) reduces the DSM loss of the energy's score on the data."""
    sigma = 0.1
    extra = {"objective": "dsm", "dsm_sigma": sigma, "lr": 3e-3, "batch_size": 64}
    untrained = train_tiny("ebm", digits, tmp_path / "a.safetensors", steps=1, **extra)
    trained = train_tiny("ebm", digits, tmp_path / "b.safetensors", steps=300, **extra)

    def loss(path: Path) -> float:
        net = EBMFamily().load(path, device=CPU).net

        def score(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
            x = x.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(net(x).sum(), x)
            return -grad

        g = torch.Generator().manual_seed(5)
        return float(denoising_score_matching_loss(score, digits.images, torch.tensor([sigma]), g))

    # the untrained energy is nearly flat: its loss is ≈ ½·64 = 32 (the ‖z‖² term alone)
    assert loss(untrained) == pytest.approx(32.0, rel=0.1)
    assert loss(trained) < 0.8 * loss(untrained)


# -- bundled checkpoints --------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bundled_checkpoint_is_small_and_loads(name):
    family = FAMILIES[name]
    assert family.bundled_checkpoint.stat().st_size <= 600_000
    keys = load_checkpoint(family.bundled_checkpoint, family=name).tensors
    assert {k.split(".")[0] for k in keys} <= {"net", "ema", "opt", "rng", "state"}
    model = family.load(None, device=CPU)
    for protocol in family.capabilities:
        assert isinstance(model, protocol)
    if name in ("rbm", "grbm"):  # small enough for exact log Z: the references for AIS
        assert model.net.n_hidden <= 24 and isinstance(model, SupportsLogZ)
    if name == "ebm":  # noise-conditional, sampled by annealed Langevin
        assert model.net.conditional and model.config["sampling"]["sampler"] == "annealed-langevin"
    test = DigitsDataset().load("test").images
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0))
    # the model prefers digits to noise
    assert model.energy(test).mean() < model.energy(noise).mean()


@pytest.mark.slow  # exact log Z enumerates 2^24 hidden states: about 25–50 s on 1 thread
def test_bundled_rbm_exact_likelihood_beats_base_rate():
    model = RBMFamily().load(None, device=CPU)
    dataset = DigitsDataset()
    train = model.net.to_visible(dataset.load("train").images)
    test = dataset.load("test").images
    p = (train.sum(0) + 1) / (len(train) + 2)
    x = model.net.to_visible(test).double()
    base = (x * p.double().log() + (1 - x) * (1 - p.double()).log()).sum(1).mean()
    assert model.log_prob(test).mean() > base + 4
