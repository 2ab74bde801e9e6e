"""``is_ll`` on probabilistic PCA, whose log p(x), posterior and ELBO are exact in closed form.

The references (scipy's multivariate normal log-density, the closed-form ELBO of the Gaussian
proposal) never go through the estimator under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from geneval.api import Need
from geneval.capabilities import SupportsLatentProposal, capabilities_of
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.likelihood.is_ll import (
    ImportanceSampledLogLikelihood,
    importance_sampled_log_likelihood,
)
from tests.likelihood_models import PPCAModel
from tests.stub_inputs import StubInputs, compute

N_IMAGES = 200


def _estimate(model, images, k, *, seed=0, proposal="posterior", k_batch=1000):
    return importance_sampled_log_likelihood(
        model,
        images,
        k=k,
        generator=torch.Generator().manual_seed(seed),
        proposal=proposal,
        k_batch=k_batch,
    )


def test_ppca_offers_the_proposal_capability():
    model = PPCAModel()
    assert isinstance(model, SupportsLatentProposal)
    assert "latent_proposal" in capabilities_of(model)
    assert Need("model", capabilities=(SupportsLatentProposal,)) in (
        ImportanceSampledLogLikelihood().needs
    )


def test_true_posterior_proposal_is_exact_to_float_error():
    model = PPCAModel(seed=1)
    images = model.sample_images(N_IMAGES, seed=2)
    result = _estimate(model, images, 50, k_batch=7)  # uneven batches over k
    np.testing.assert_allclose(
        result.log_likelihood.numpy(), model.exact_log_prob(images), rtol=0, atol=1e-9
    )
    np.testing.assert_allclose(result.ess.numpy(), 1.0, rtol=1e-12)


def test_converges_to_the_exact_value_as_k_grows():
    model = PPCAModel(seed=3, proposal_shift=0.3, proposal_scale=1.6)
    images = model.sample_images(N_IMAGES, seed=4)
    exact = model.exact_log_prob(images)
    gaps = []
    for k in (1, 10, 100, 1000):
        diff = exact - _estimate(model, images, k, seed=k).log_likelihood.numpy()
        gaps.append(diff.mean())
        if k == 1000:
            sem = diff.std(ddof=1) / math.sqrt(len(diff))
            assert abs(diff.mean()) < 3 * sem
    assert gaps[0] > 0.1  # an imperfect proposal: the k = 1 estimate is visibly low
    assert all(a > b for a, b in zip(gaps, gaps[1:], strict=False)), gaps
    assert abs(gaps[-1]) < 0.05 * gaps[0]


def test_never_below_the_elbo_by_more_than_its_standard_error():
    model = PPCAModel(seed=5, proposal_shift=0.3, proposal_scale=1.6)
    images = model.sample_images(N_IMAGES, seed=6)
    per_image_elbo = model.exact_elbo(images)
    # k = 1 is the ELBO in expectation: the paired differences average to 0 within 3 SE
    d = _estimate(model, images, 1, seed=11).log_likelihood.numpy() - per_image_elbo
    assert abs(d.mean()) < 3 * d.std(ddof=1) / math.sqrt(len(d))
    # k > 1 is a tighter bound (Burda et al. 2016, Thm 1): never below the ELBO by more than
    # the standard error the metric reports, and above it on the paired differences
    for k in (2, 10, 100, 1000):
        inputs = StubInputs({("images", "reference"): images}, model=model, seed=k)
        out = compute(ImportanceSampledLogLikelihood(), inputs, k=k)
        assert out["value"] >= per_image_elbo.mean() - out["std_err"], k
        gen = torch.Generator().manual_seed(100 + k)
        paired = (
            importance_sampled_log_likelihood(
                model, images, k=k, generator=gen
            ).log_likelihood.numpy()
            - per_image_elbo
        )
        assert paired.mean() > -paired.std(ddof=1) / math.sqrt(len(paired)), k


class FixedDraws:
    """PPCA whose proposal hands out pre-drawn latents in order, to check the merging over k."""

    likelihood_space = "density"

    def __init__(self, model: PPCAModel, latents: torch.Tensor, log_q: torch.Tensor) -> None:
        self.model, self.latents, self.log_q, self.used = model, latents, log_q, 0

    def log_joint(self, images, latents):
        return self.model.log_joint(images, latents)

    def sample_posterior(self, images, k, *, generator):
        out = self.latents[self.used : self.used + k], self.log_q[self.used : self.used + k]
        self.used += k
        return out

    def sample_prior(self, n, k, *, generator):  # pragma: no cover - not used
        raise AssertionError


def test_log_sum_exps_and_ess_merge_across_batches_of_draws():
    model = PPCAModel(seed=7, proposal_shift=0.5, proposal_scale=2.0)
    images = model.sample_images(20, seed=8)
    latents, log_q = model.sample_posterior(images, 37, generator=torch.Generator().manual_seed(0))
    log_w = (model.log_joint(images, latents) - log_q).numpy()  # (K, N)
    want = logsumexp(log_w, axis=0) - math.log(37)
    want_ess = np.exp(2 * logsumexp(log_w, axis=0) - logsumexp(2 * log_w, axis=0)) / 37
    got = importance_sampled_log_likelihood(
        FixedDraws(model, latents, log_q), images, k=37, generator=torch.Generator(), k_batch=5
    )
    np.testing.assert_allclose(got.log_likelihood.numpy(), want, rtol=0, atol=1e-12)
    np.testing.assert_allclose(got.ess.numpy(), want_ess, rtol=1e-12)
    assert 0 < want_ess.min() and want_ess.max() < 1


def test_metric_reports_fields_and_bits_per_dim():
    model = PPCAModel(seed=9, proposal_shift=0.2, proposal_scale=1.3)
    images = model.sample_images(N_IMAGES, seed=10)
    metric = ImportanceSampledLogLikelihood()
    inputs = StubInputs({("images", "reference"): images}, model=model, seed=3)
    out = compute(metric, inputs, k=200, k_batch=64, batch_size=50, max_images=150)
    # the metric draws with one generator seeded by inputs.seed across its image batches
    gen = torch.Generator().manual_seed(3)
    direct = torch.cat(
        [
            importance_sampled_log_likelihood(
                model, images[s : s + 50], k=200, generator=gen, k_batch=64
            ).log_likelihood
            for s in range(0, 150, 50)
        ]
    ).numpy()
    assert out["value"] == pytest.approx(direct.mean(), rel=1e-12)
    assert out["std_err"] == pytest.approx(direct.std(ddof=1) / math.sqrt(150), rel=1e-10)
    assert out["n"] == 150 and out["k"] == 200 and out["proposal"] == "posterior"
    assert 0.05 < out["ess"] <= 1.0
    assert out["space"] == "density"
    assert out["bits_per_dim"] == pytest.approx(8 - out["value"] / (16 * math.log(2)), rel=1e-12)
    assert set(out) - {"value", "warnings"} == {*metric.fields, *metric.options}
    assert metric.uncertainty == "std_err" and metric.higher_is_better


def test_prior_proposal_is_likelihood_weighting_with_a_warning():
    model = PPCAModel(seed=12)
    images = model.sample_images(100, seed=13)
    out = compute(
        ImportanceSampledLogLikelihood(),
        StubInputs({("images", "reference"): images}, model=model),
        proposal="prior",
        k=2000,
    )
    exact = model.exact_log_prob(images).mean()
    assert out["value"] < exact + 3 * out["std_err"]
    assert out["ess"] < 0.5  # the prior is a poor proposal even here
    assert any("likelihood weighting" in w for w in out["warnings"])


def test_bad_input_is_one_line():
    model = PPCAModel()
    images = model.sample_images(10, seed=0)
    metric = ImportanceSampledLogLikelihood()
    inputs = StubInputs({("images", "reference"): images}, model=model)
    with pytest.raises(InputError, match="k=0"):
        compute(metric, inputs, k=0)
    with pytest.raises(InputError, match="proposal"):
        compute(metric, inputs, proposal="encoder")
    wrong = StubInputs({("images", "reference"): images.reshape(10, 1, 2, 8)}, model=model)
    with pytest.raises(InputError, match=r"shape \(1, 2, 8\), expected \(1, 4, 4\)"):
        compute(metric, wrong, k=5)


def test_is_ll_is_registered():
    assert isinstance(get_registry().metric("is_ll"), ImportanceSampledLogLikelihood)
