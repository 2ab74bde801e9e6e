"""The ``vae`` family: decoders, the ELBO and the proposal interface against exact references,
training on digits and on dSprites, and the bundled checkpoint through ``geneval run``.

References never go through the code under test: the decoders' probabilities are checked
against torch.distributions and a float64 CDF difference (and sum to one over the levels), and
log p(x) of a model with a one-dimensional latent is integrated by quadrature over z.
"""

from __future__ import annotations

import json
import math

import mpmath
import numpy as np
import pytest
import torch

from geneval.capabilities import (
    SupportsDecode,
    SupportsELBO,
    SupportsEncode,
    SupportsLatentProposal,
    capabilities_of,
)
from geneval.checkpoint import Checkpoint, load_checkpoint
from geneval.plugins import get_registry
from geneval_plugins.metrics.likelihood.is_ll import importance_sampled_log_likelihood
from geneval_plugins.models.latent.decoders import (
    bernoulli_log_likelihood,
    decoder_draw,
    discretized_logistic_log_likelihood,
)
from geneval_plugins.models.latent.networks import halvings
from geneval_plugins.models.latent.vae import VAEFamily
from geneval_plugins.models.latent.vae_model import VAEModel

CPU = torch.device("cpu")


def _model(decoder: str, *, shape=(1, 2, 2), latent_dim=1, seed=0) -> VAEModel:
    """A VAE with seeded random weights (no training)."""
    family = VAEFamily()
    arch = {"latent_dim": latent_dim, "channels": 3, "hidden": 8, "decoder": decoder}
    torch.manual_seed(seed)
    net = family.build_network(arch, shape)
    sampling = family.sampling({"sampler": "decoder-mean"}, arch, torch.empty(0))
    checkpoint = Checkpoint("vae", arch, shape, sampling, {}, {})
    return family.make_model(net, checkpoint, CPU)


def test_discretized_logistic_is_a_distribution_over_the_levels():
    """Σ_k P(c_k) = 1 for any mean and scale; interior bins equal the float64 CDF difference."""
    mean = torch.tensor([-0.3, 0.0, 0.42, 1.0, 1.7], dtype=torch.float64).reshape(5, 1, 1, 1)
    log_scale = torch.tensor([-6.0, -2.0, -4.0, 0.5, -3.0], dtype=torch.float64)
    log_scale = log_scale.reshape(5, 1, 1, 1)
    levels = torch.arange(256, dtype=torch.float64) / 255
    total = torch.zeros(5, dtype=torch.float64)
    for level in levels:
        x = torch.full((5, 1, 1, 1), float(level), dtype=torch.float64)
        total += discretized_logistic_log_likelihood(mean, log_scale, x).exp()
    np.testing.assert_allclose(total.numpy(), 1.0, rtol=0, atol=1e-9)

    m, s = 0.42, math.exp(-4.0)
    mpmath.mp.dps = 50  # the reference CDF difference, without cancellation

    def cdf(v: float):
        return 1 / (1 + mpmath.exp(-(mpmath.mpf(v) - m) / mpmath.mpf(s)))

    for k in (1, 100, 107, 254):
        x = torch.full((1, 1, 1, 1), k / 255, dtype=torch.float64)
        got = discretized_logistic_log_likelihood(
            torch.full_like(x, m), torch.full_like(x, -4.0), x
        )
        expected = float(cdf(k / 255 + 0.5 / 255) - cdf(k / 255 - 0.5 / 255))
        np.testing.assert_allclose(float(got.exp()), expected, rtol=1e-9)
    # far in either tail the log-probability stays finite (no cancellation)
    far = discretized_logistic_log_likelihood(
        torch.full((1, 1, 1, 1), 0.9, dtype=torch.float64),
        torch.full((1, 1, 1, 1), -7.0, dtype=torch.float64),
        torch.full((1, 1, 1, 1), 0.2, dtype=torch.float64),
    )
    assert math.isfinite(float(far)) and float(far) < -300


def test_bernoulli_decoder_equals_torch_distributions_on_binarised_images():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 1, 3, 3, generator=generator, dtype=torch.float64)
    images = torch.rand(4, 1, 3, 3, generator=generator, dtype=torch.float64)
    reference = torch.distributions.Bernoulli(logits=logits).log_prob((images > 0.5).double())
    np.testing.assert_allclose(
        bernoulli_log_likelihood(logits, images).numpy(),
        reference.flatten(1).sum(1).numpy(),
        rtol=1e-12,
    )
    draws = decoder_draw("bernoulli", torch.zeros(20000, 1, 1, 1), generator)
    assert set(draws.unique().tolist()) <= {0.0, 1.0} and abs(float(draws.mean()) - 0.5) < 0.02


@pytest.mark.parametrize("decoder", ["logistic", "bernoulli"])
def test_importance_sampling_and_the_elbo_bracket_the_quadrature_log_likelihood(decoder):
    """With one latent dimension, log p(x) = log ∫ p(z) p(x|z) dz by quadrature on a fine grid
    (float64); ``is_ll``'s estimator converges to it, and the ELBO stays below it."""
    model = _model(decoder)
    generator = torch.Generator().manual_seed(3)
    images = torch.round(torch.rand(6, 1, 2, 2, generator=generator) * 255) / 255
    grid = torch.linspace(-12, 12, 24001, dtype=torch.float64)
    latents = grid.reshape(-1, 1, 1).expand(-1, images.shape[0], 1)
    log_joint = model.log_joint(images, latents)  # (G, N)
    exact = torch.logsumexp(log_joint, 0) + math.log(float(grid[1] - grid[0]))

    estimate = importance_sampled_log_likelihood(
        model, images, k=20000, generator=torch.Generator().manual_seed(1), k_batch=4096
    )
    np.testing.assert_allclose(estimate.log_likelihood.numpy(), exact.numpy(), atol=0.02)

    repeated = images.repeat(4000, 1, 1, 1)
    elbo = model.elbo(repeated, generator=torch.Generator().manual_seed(2)).reshape(4000, -1)
    mean, sem = elbo.mean(0), elbo.std(0) / math.sqrt(4000)
    assert bool((mean <= exact + 3 * sem).all()), (mean, exact)
    # the IWAE bound at k = 1 is the ELBO in expectation
    k1 = importance_sampled_log_likelihood(
        model, repeated, k=1, generator=torch.Generator().manual_seed(4)
    ).log_likelihood.reshape(4000, -1)
    k1_sem = k1.std(0) / math.sqrt(4000)
    assert bool(((k1.mean(0) - mean).abs() <= 4 * torch.sqrt(sem**2 + k1_sem**2)).all())


def test_posterior_draws_and_their_log_density():
    """sample_posterior's log q equals the Gaussian log-density of the drawn latents."""
    model = _model("logistic", latent_dim=3)
    images = torch.rand(5, 1, 2, 2, generator=torch.Generator().manual_seed(0))
    latents, log_q = model.sample_posterior(images, 7, generator=torch.Generator().manual_seed(1))
    assert latents.shape == (7, 5, 3) and log_q.shape == (7, 5) and log_q.dtype == torch.float64
    with torch.no_grad():
        mean, log_var = model.net.encoder(images)
    reference = torch.distributions.Normal(mean.double(), torch.exp(0.5 * log_var.double()))
    np.testing.assert_allclose(
        log_q.numpy(), reference.log_prob(latents.double()).sum(-1).numpy(), rtol=1e-6
    )
    prior, log_p = model.sample_prior(5, 7, generator=torch.Generator().manual_seed(2))
    expected = torch.distributions.Normal(0.0, 1.0).log_prob(prior.double()).sum(-1)
    np.testing.assert_allclose(log_p.numpy(), expected.numpy(), rtol=1e-12)


def test_capabilities_and_shapes():
    model = _model("logistic", shape=(3, 16, 12), latent_dim=4)
    for protocol in (SupportsELBO, SupportsEncode, SupportsDecode, SupportsLatentProposal):
        assert isinstance(model, protocol)
    assert set(capabilities_of(model)) >= {"elbo", "encode", "decode", "latent_proposal"}
    assert model.likelihood_space == "discrete-8bit" and model.binarization is None
    images = torch.rand(2, 3, 16, 12)
    assert model.encode(images).shape == (2, 4)
    decoded = model.decode(model.encode(images))
    assert decoded.shape == (2, 3, 16, 12) and decoded.min() >= 0 and decoded.max() <= 1
    samples = model.sample(5, batch_size=2, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (5, 3, 16, 12)
    assert _model("bernoulli").likelihood_space == "binary"
    assert [halvings((s, s)) for s in (2, 8, 9, 16, 28, 64)] == [1, 1, 1, 2, 3, 4]


def test_sampling_is_seeded_and_one_step(run_cli, tmp_path):
    model = get_registry().model("vae").load(None, device=CPU)
    a = model.sample(6, batch_size=4, generator=torch.Generator().manual_seed(5))
    b = model.sample(6, batch_size=4, generator=torch.Generator().manual_seed(5))
    c = model.sample(6, batch_size=4, generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)
    drawn = model.sample(
        6, batch_size=6, generator=torch.Generator().manual_seed(5), sampler="decoder-sample"
    )
    assert torch.equal(torch.round(drawn * 255), drawn * 255)  # 8-bit levels
    result = run_cli("sample", "--model", "vae", "-n", 4, "-o", tmp_path / "s.npz", "--steps", 3)
    assert result.code == 2 and len(result.err_lines) == 1 and "steps=1" in result.err


def test_trains_on_dsprites_with_a_bernoulli_decoder(run_cli, tmp_path):
    out = tmp_path / "vae.safetensors"
    result = run_cli(
        "train", "--model", "vae", "--dataset", "dsprites:train,x/8,y/8", "-o", out,
        "--steps", 3, "--quiet", "--opt", "beta=4", "--opt", "channels=4", "--opt", "hidden=16",
    )  # fmt: skip
    assert result.code == 0, result.err
    checkpoint = load_checkpoint(out, family="vae")
    assert checkpoint.arch["decoder"] == "bernoulli"
    assert checkpoint.image_shape == (1, 64, 64)
    assert checkpoint.train["options"]["beta"] == 4.0
    model = VAEFamily().load(out, device=CPU)
    assert model.likelihood_space == "binary" and "0.5" in model.binarization
    assert model.sample(2, batch_size=2, generator=torch.Generator()).shape == (2, 1, 64, 64)


def test_bundled_checkpoint_through_geneval_run(run_cli, tmp_path):
    """FID/KID of the bundled VAE's samples, and its likelihoods and representation metrics of
    ``digits:test`` (latents by ``encode``, reconstructions by ``decode(encode(x))``)."""
    family = get_registry().model("vae")
    path = family.bundled_checkpoint
    assert path.stat().st_size <= 1_500_000
    assert {key.split(".")[0] for key in load_checkpoint(path, family="vae").tensors} == {"net"}
    report = tmp_path / "r.json"
    result = run_cli(
        "run", "--model", "vae", "--metrics", "fid,kid", "--num-samples", 300, "--quiet",
        "--json", report,
    )  # fmt: skip
    assert result.code == 0, result.err
    fid = json.loads(report.read_text())["metrics"]["fid"]["value"]
    assert 0 < fid < 60

    report = tmp_path / "l.json"
    result = run_cli(
        "run", "--model", "vae", "--reference", "digits:test", "--metrics",
        "nll,is_ll,clustering,psnr", "--opt", "is_ll.k=200", "--quiet", "--json", report,
    )  # fmt: skip
    assert result.code == 0, result.err
    metrics = json.loads(report.read_text())["metrics"]
    assert metrics["nll"]["space"] == "discrete-8bit" and metrics["nll"]["n"] == 270
    elbo_nats = metrics["nll"]["log_likelihood"]
    # the IWAE estimate is a tighter bound than the ELBO, beyond their standard errors
    assert metrics["is_ll"]["value"] > elbo_nats
    assert metrics["is_ll"]["bits_per_dim"] < metrics["nll"]["value"]
    # digits' latents cluster by class far above chance (V-measure of random labels ≈ 0.02)
    assert metrics["clustering"]["value"] > 0.3
    assert 10 < metrics["psnr"]["value"] < 60
