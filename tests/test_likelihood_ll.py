"""``ll`` against a brute-force table of p(x) and the shared bits/dim conversion."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from geneval.api import Need
from geneval.capabilities import SupportsLogProb
from geneval.errors import InputError
from geneval_plugins.metrics.likelihood.common import bits_per_dim, summarize_log_likelihoods
from geneval_plugins.metrics.likelihood.ll import ExactLogLikelihood
from tests.likelihood_models import TinyRBM, all_binary
from tests.stub_inputs import StubInputs, compute


def test_ll_is_the_mean_log_probability_of_a_brute_force_table():
    model = TinyRBM.random(8, 5, seed=0)
    xs, hs = all_binary(8), all_binary(5)
    neg_energy = (xs @ model.a)[:, None] + (hs @ model.b)[None, :] + xs @ model.W @ hs.T
    log_p = logsumexp(neg_energy, axis=1) - logsumexp(neg_energy)  # log p(x) for every x
    images = model.sample_images(300, seed=1)
    index = (images.reshape(300, -1).numpy() @ (2 ** np.arange(8)[::-1])).astype(int)
    want = log_p[index]
    metric = ExactLogLikelihood()
    assert Need("model", capabilities=(SupportsLogProb,)) in metric.needs
    out = compute(metric, StubInputs({("images", "reference"): images}, model=model), batch_size=64)
    assert out["value"] == pytest.approx(want.mean(), rel=1e-12)
    assert out["std_err"] == pytest.approx(want.std(ddof=1) / math.sqrt(300), rel=1e-10)
    assert out["n"] == 300 and out["space"] == "binary" and out["bits_per_dim"] is None
    assert set(out) - {"value", "warnings"} == {*metric.fields, *metric.options}
    half = compute(
        metric, StubInputs({("images", "reference"): images}, model=model), max_images=100
    )
    assert half["n"] == 100 and half["value"] == pytest.approx(want[:100].mean(), rel=1e-12)


def test_ll_refuses_images_of_another_shape():
    model = TinyRBM.random(8, 5, seed=0)
    images = torch.zeros(4, 1, 2, 4)
    with pytest.raises(InputError, match=r"ll: the reference images have shape \(1, 2, 4\)"):
        compute(ExactLogLikelihood(), StubInputs({("images", "reference"): images}, model=model))


def test_bits_per_dim_on_the_8bit_scale():
    dims = 784
    # uniform over 256 levels: log P = −D ln 256 → 8 bits/dim
    assert bits_per_dim(-dims * math.log(256), "discrete-8bit", dims) == pytest.approx(8.0)
    # the uniform density on [0, 1]^D has log p = 0 → 8 bits/dim after dequantisation
    assert bits_per_dim(0.0, "density", dims) == pytest.approx(8.0)
    assert bits_per_dim(dims * math.log(2), "density", dims) == pytest.approx(7.0)
    assert bits_per_dim(-1.0, "binary", dims) is None
    with pytest.raises(ValueError, match="space"):
        bits_per_dim(0.0, "continuous", dims)


def test_summary_is_float64_mean_and_standard_error():
    values = torch.tensor([1.0, 2.0, 4.0], dtype=torch.float32)
    out = summarize_log_likelihoods(values, space="discrete-8bit", dims=2)
    assert out["value"] == pytest.approx(7 / 3, rel=1e-15)
    assert out["std_err"] == pytest.approx(np.std([1, 2, 4], ddof=1) / math.sqrt(3), rel=1e-15)
    assert out["n"] == 3 and out["bits_per_dim"] == pytest.approx(-(7 / 3) / (2 * math.log(2)))
    with pytest.raises(ValueError, match="not finite"):
        summarize_log_likelihoods(torch.tensor([0.0, -math.inf]), space="density", dims=1)
