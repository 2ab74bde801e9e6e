"""The ``rbm``, ``grbm`` and ``ebm`` families: training entry point, checkpoints, seeding, samples.

Tiny models trained for a few steps check the plumbing (determinism, round trips, errors);
the bundled checkpoints are judged by the ``digits-cnn`` classifier.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from geneval.api import GenerativeModel, ModelFamily
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.models.ebm import EBMFamily
from geneval_plugins.models.grbm import GRBMFamily
from geneval_plugins.models.rbm import RBMFamily
from geneval_plugins.models.score_matching import denoising_score_matching_loss

CPU = torch.device("cpu")
TINY = {
    "rbm": {"hidden": 8, "sample_steps": 5},
    "grbm": {"hidden": 8, "sample_steps": 5},
    "ebm": {
        "channels": 4, "batch_size": 16, "buffer_size": 64, "langevin_steps": 3,
        "sample_steps": 3,
    },
}
FAMILIES = {"rbm": RBMFamily(), "grbm": GRBMFamily(), "ebm": EBMFamily()}


@pytest.fixture(scope="module")
def digits():
    return DigitsDataset().load("train")


def train_tiny(name: str, data, path: Path, *, seed: int = 0, steps: int = 4, **extra) -> Path:
    return FAMILIES[name].train(
        data, output=path, steps=steps, device=CPU, seed=seed, resume=False, force=False,
        options={**TINY[name], **extra},
    )


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_registered_and_protocols(name):
    family = get_registry().model(name)
    assert isinstance(family, type(FAMILIES[name]))
    assert isinstance(family, ModelFamily)
    assert family.dataset == "digits"


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_train_is_deterministic_and_round_trips(name, digits, tmp_path):
    a = train_tiny(name, digits, tmp_path / "a.safetensors")
    b = train_tiny(name, digits, tmp_path / "b.safetensors")
    c = train_tiny(name, digits, tmp_path / "c.safetensors", seed=1)
    ta, tb, tc = (load_file(str(p)) for p in (a, b, c))
    assert ta.keys() == tb.keys()
    assert all(torch.equal(ta[k], tb[k]) for k in ta)
    assert any(not torch.equal(ta[k], tc[k]) for k in ta)

    model = FAMILIES[name].load(a, device=CPU)
    assert isinstance(model, GenerativeModel)
    assert {"sample", "energy"} <= model.capabilities
    # the loaded network holds exactly the stored tensors
    state = model.net.state_dict()
    assert all(torch.equal(state[k], ta[k]) for k in ta)
    assert model.config["train"]["seed"] == 0 and model.config["train"]["steps_done"] == 4


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_same_seed_same_samples(name, digits, tmp_path):
    model = FAMILIES[name].load(train_tiny(name, digits, tmp_path / "m.safetensors"), device=CPU)

    def draw(seed: int) -> torch.Tensor:
        return model.sample(7, batch_size=3, generator=torch.Generator().manual_seed(seed))

    first, again, other = draw(0), draw(0), draw(1)
    with torch.inference_mode():  # the runner samples under inference mode
        assert torch.equal(draw(0), first)
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
    with pytest.raises(InputError):
        model.sample(2, batch_size=2, generator=g, sampler="langevin")
    with pytest.raises(InputError):
        model.sample(2, batch_size=2, generator=g, steps=0)


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


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_resume_continues_to_the_requested_steps(name, digits, tmp_path):
    path = train_tiny(name, digits, tmp_path / "m.safetensors", steps=3)
    before = load_file(str(path))
    FAMILIES[name].train(
        digits, output=path, steps=6, device=CPU, seed=0, resume=True, force=False, options={}
    )
    model = FAMILIES[name].load(path, device=CPU)
    assert model.config["train"]["steps_done"] == 6
    assert model.config["train"]["resumed_from"] == 3
    after = model.net.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)


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


def classify(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """digits-cnn class and confidence of 8-bit-quantised images (as the runner quantises)."""
    extractor = get_registry().extractor("digits-cnn").load(device=CPU)
    with torch.no_grad():
        probs = extractor((images * 255).round() / 255)["logits"].softmax(-1)
    confidence, label = probs.max(-1)
    return label, confidence


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_bundled_checkpoint_is_small_and_loads(name):
    family = FAMILIES[name]
    assert family.bundled_checkpoint.stat().st_size <= 2_000_000
    model = family.load(None, device=CPU)
    test = DigitsDataset().load("test").images
    noise = torch.rand(test.shape, generator=torch.Generator().manual_seed(0))
    # the model prefers digits to noise
    assert model.energy(test).mean() < model.energy(noise).mean()


@pytest.mark.parametrize("name", ["rbm", "grbm"])
def test_bundled_rbm_samples_are_recognisable_digits(name):
    model = FAMILIES[name].load(None, device=CPU)
    samples = model.sample(1000, batch_size=500, generator=torch.Generator().manual_seed(0))
    label, confidence = classify(samples)
    assert (confidence >= 0.8).float().mean() >= 0.7
    assert len(label.unique()) >= 8


@pytest.mark.slow  # exact log Z enumerates 2^24 hidden states: about 25–50 s on 1 thread
def test_bundled_rbm_exact_likelihood_beats_base_rate():
    model = RBMFamily().load(None, device=CPU)
    assert "log_z" in model.capabilities
    dataset = DigitsDataset()
    train = model.net.encode(dataset.load("train").images)
    test = dataset.load("test").images
    p = (train.sum(0) + 1) / (len(train) + 2)
    x = model.net.encode(test).double()
    base = (x * p.double().log() + (1 - x) * (1 - p.double()).log()).sum(1).mean()
    assert model.log_prob(test).mean() > base + 4


@pytest.mark.slow
def test_bundled_ebm_samples_cover_at_least_eight_classes():
    model = EBMFamily().load(None, device=CPU)
    samples = model.sample(1000, batch_size=500, generator=torch.Generator().manual_seed(0))
    label, confidence = classify(samples)
    assert len(label.unique()) >= 8
    counts = torch.bincount(label, minlength=10)
    assert (counts >= 10).sum() >= 8  # not just stray single samples
