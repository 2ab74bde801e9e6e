"""The ``ncsn`` family: DSM training reaches its floor, seeding, checkpoints, bundled quality."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from geneval.capabilities import SupportsScore
from geneval.checkpoint import load_checkpoint
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval.training import ExponentialMovingAverage, minibatches
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.models.diffusion.ncsn import NCSNFamily
from geneval_plugins.models.diffusion.ncsn_model import NoiseConditionalScore
from geneval_plugins.models.noise_levels import geometric_sigmas, max_pairwise_distance
from geneval_plugins.models.score_matching import denoising_score_matching_loss
from geneval_plugins.models.unet import sinusoidal_embedding
from tests.test_ncsn_exact import GaussianMixture

CPU = torch.device("cpu")
#: A network small enough to train a few steps in a test.
TINY = {"base_channels": 8, "channel_mults": "1,2", "embedding_dim": 16}


class ToyScoreNet(nn.Module):
    """f(x, c): an MLP on [x, sinusoidal embedding of c] for 2-D toy data."""

    def __init__(self, dim: int = 2, hidden: int = 128, emb: int = 32) -> None:
        super().__init__()
        self.emb = emb
        self.mlp = nn.Sequential(
            nn.Linear(dim + emb, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, hidden),
            nn.SiLU(),
            nn.Linear(hidden, dim),
        )

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([x, sinusoidal_embedding(cond, self.emb)], dim=1))


def test_trained_toy_network_reaches_the_dsm_floor() -> None:
    """On a 2-D mixture the trained score's DSM loss is within 20 % of the exact score's.

    The exact score of q_σ minimises the DSM loss, so its loss (same data, levels and noise:
    common random numbers) is the floor; a network can only approach it from above.
    """
    mixture = GaussianMixture([0.3, 0.7], [[-2.0, 0.0], [2.0, 1.0]], [0.5, 0.8])
    sigmas = geometric_sigmas(6.0, 0.1, 8)
    data_gen = torch.Generator().manual_seed(0)
    data = mixture.sample(20_000, data_gen).float()
    torch.manual_seed(0)
    model = NoiseConditionalScore(ToyScoreNet(), sigma_max=6.0, sigma_min=0.1)
    # the loss and EMA of the ncsn family's training, in a plain loop (the core loop is for images)
    average = ExponentialMovingAverage(model, decay=0.99)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)
    noise_gen = torch.Generator().manual_seed(1)
    batches = minibatches(data, 256, data_gen)
    for step in range(1, 2001):
        for group in optimiser.param_groups:
            group["lr"] = 2e-3 * min(1.0, step / 100)
        loss = denoising_score_matching_loss(model, next(batches), sigmas.float(), noise_gen)
        optimiser.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimiser.step()
        average.update(model)

    test = mixture.sample(100_000, torch.Generator().manual_seed(9))
    ema = average.shadow
    with torch.no_grad():
        floor = denoising_score_matching_loss(
            mixture.score, test, sigmas, torch.Generator().manual_seed(3), reduce=False
        )
        trained = denoising_score_matching_loss(
            lambda x, s: ema(x.float(), s.float()).double(),
            test,
            sigmas,
            torch.Generator().manual_seed(3),
            reduce=False,
        )
    gap = trained - floor
    se = float(gap.std()) / math.sqrt(gap.numel())
    assert float(trained.mean()) <= 1.2 * float(floor.mean())
    assert float(gap.mean()) > -4 * se  # nothing beats the exact score


def _tiny_checkpoint(path: Path, *, steps: int = 2, **options: object) -> Path:
    data = DigitsDataset().load("train")
    return NCSNFamily().train(
        data,
        output=path,
        steps=steps,
        device=CPU,
        seed=0,
        resume=False,
        force=False,
        options={**TINY, **options},
    )


def test_same_seed_same_samples(tmp_path: Path) -> None:
    model = NCSNFamily().load(_tiny_checkpoint(tmp_path / "n.safetensors"), device=CPU)
    for sampler in ("annealed-langevin", "pc"):

        def draw(seed: int, sampler: str = sampler) -> torch.Tensor:
            g = torch.Generator().manual_seed(seed)
            return model.sample(6, batch_size=4, generator=g, sampler=sampler, steps=1)

        a, b, c = draw(0), draw(0), draw(1)
        assert a.shape == (6, 1, 8, 8) and a.dtype == torch.float32
        assert 0.0 <= float(a.min()) and float(a.max()) <= 1.0
        assert torch.equal(a, b)
        assert not torch.equal(a, c)


def test_checkpoint_config_and_guards(tmp_path: Path) -> None:
    data = DigitsDataset().load("train")
    family = NCSNFamily()

    def train(path: Path, steps: int, **options: object) -> Path:
        return family.train(
            data,
            output=path,
            steps=steps,
            device=CPU,
            seed=3,
            resume=False,
            force=False,
            options={**TINY, **options},
        )

    whole = train(tmp_path / "whole.safetensors", 4)
    model = family.load(whole, device=CPU)
    ckpt = load_checkpoint(whole, family="ncsn")
    assert ckpt.train["steps_done"] == 4 and ckpt.train["seed"] == 3
    sigmas = torch.tensor(ckpt.arch["sigmas"])
    assert sigmas[0] == pytest.approx(max_pairwise_distance(data.images))
    assert sigmas[-1] == pytest.approx(0.01)
    assert (sigmas[:-1] > sigmas[1:]).all()
    assert ckpt.sampling["annealed-langevin"]["eps"] > 0
    assert isinstance(model, SupportsScore)
    x = torch.rand(5, 1, 8, 8)
    s = model.score(x, 0.5)
    assert s.shape == x.shape
    torch.testing.assert_close(model.score(x, torch.full((5,), 0.5)), s)

    ema_only = train(tmp_path / "ema.safetensors", 2, save_training_state=False)
    with safe_open(str(ema_only), "pt") as f:
        assert all(k.startswith("ema.") for k in f.keys())
    with pytest.raises(InputError, match="sampling weights only"):
        family.train(
            data,
            output=ema_only,
            steps=4,
            device=CPU,
            seed=3,
            resume=True,
            force=False,
            options={},
        )
    with pytest.raises(InputError, match="sigma_min"):
        train(tmp_path / "x.safetensors", 2, sigma_min=10.0)
    with pytest.raises(InputError, match="sampler"):
        model.sample(2, batch_size=2, generator=torch.Generator(), sampler="ddim")


def test_family_is_registered_with_bundled_checkpoint() -> None:
    family = get_registry().model("ncsn")
    assert isinstance(family, NCSNFamily)
    assert family.samplers == ("annealed-langevin", "pc")
    assert family.dataset == "digits"
    model = family.load(None, device=CPU)
    assert model.image_shape == (1, 8, 8)
    assert model.config["sampling"]["sampler"] == "annealed-langevin"


def test_bundled_score_matches_the_training_set_score_at_large_noise() -> None:
    """At the largest levels s_θ(x, σ) matches the closed-form score of the perturbed data.

    For the empirical distribution of ``digits:train`` (points x_j) the perturbed density is
    q_σ = (1/n) Σ_j N(x_j, σ² I), whose score is Σ_j r_j(x)(x_j − x)/σ² with r = softmax_j of
    −‖x − x_j‖²/(2σ²). Queried at noisy held-out (``digits:test``) images, the network must be
    within 10 % of it (relative L2 over the batch) at the six largest levels, where the
    smoothed training set stands in for the population; the bare prior −(x − μ)/σ² is not,
    at the sixth.
    """
    model = NCSNFamily().load(None, device=CPU)
    digits = DigitsDataset()
    train = digits.load("train").images.flatten(1).double()
    test = digits.load("test").images.flatten(1).double()
    g = torch.Generator().manual_seed(0)
    for sigma in model.sigmas[:6].tolist():
        x = test + sigma * torch.randn(test.shape, generator=g, dtype=torch.float64)
        resp = torch.softmax(-torch.cdist(x, train).pow(2) / (2 * sigma**2), dim=1)
        exact = (resp @ train - x) / sigma**2
        learned = model.score(x.float().reshape(-1, 1, 8, 8), sigma).flatten(1).double()
        assert (learned - exact).norm() / exact.norm() < 0.1, sigma
    prior = -(x - train.mean(0)) / sigma**2
    assert (prior - exact).norm() / exact.norm() > 0.1


@pytest.mark.parametrize(
    "sampler", ["annealed-langevin", pytest.param("pc", marks=pytest.mark.slow)]
)
def test_bundled_checkpoint_sample_quality(sampler: str) -> None:
    """1000 samples: FID(digits-cnn) vs digits:train ≤ 5× the test-vs-train floor; classes ≥ 4 %."""
    from geneval_plugins.metrics.sample_quality.fid import frechet_distance

    model = NCSNFamily().load(None, device=CPU)
    g = torch.Generator().manual_seed(0)
    samples = model.sample(1000, batch_size=500, generator=g, sampler=sampler)
    samples = torch.round(samples * 255) / 255  # the runner's 8-bit quantisation
    extractor = get_registry().extractor("digits-cnn").load(device=CPU)
    digits = DigitsDataset()

    def moments(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = extractor(images)["features"].double()
        return f.mean(0), torch.cov(f.T)

    train = moments(digits.load("train").images)
    floor = frechet_distance(*moments(digits.load("test").images), *train)
    fid = frechet_distance(*moments(samples), *train)
    assert fid <= 5 * floor, (fid, floor)
    classes = extractor(samples)["logits"].argmax(dim=1)
    shares = torch.bincount(classes, minlength=10).double() / classes.numel()
    assert float(shares.min()) >= 0.04, shares
