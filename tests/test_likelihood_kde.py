"""``kde`` against scikit-learn's KernelDensity and a brute-force scipy computation.

scikit-learn's tree-based ``KernelDensity`` prunes nodes with bounds kept in log space; with
small bandwidths in many dimensions those bounds lose all precision and ``score_samples`` is off
by up to hundreds of nats even with ``rtol = atol = 0`` (scikit-learn issues #7492, #25799; the
first test shows it on these digits). With ``leaf_size = n`` the tree is a single leaf and every
kernel is summed exactly in log space: that is the configuration compared with here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from scipy.special import logsumexp
from sklearn.datasets import load_digits
from sklearn.neighbors import KernelDensity

from geneval.api import ImageSet, Need
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.likelihood import kde as kde_module
from geneval_plugins.metrics.likelihood.kde import (
    ParzenWindow,
    bandwidth_grid,
    choose_bandwidth,
    parzen_log_likelihoods,
)
from tests.stub_inputs import StubInputs, compute

GRID = np.logspace(-1, 0, 10)


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    """Digits scaled to [0, 1]: 600 samples, 300 reference and 300 validation images."""
    x = torch.from_numpy(load_digits().data / 16.0).float().reshape(-1, 1, 8, 8)
    return {"samples": x[:600], "reference": x[600:900], "val": x[900:1200]}


def sklearn_scores(samples: torch.Tensor, test: torch.Tensor, sigma: float) -> np.ndarray:
    s = samples.reshape(samples.shape[0], -1).double().numpy()
    kde = KernelDensity(kernel="gaussian", bandwidth=sigma, leaf_size=len(s)).fit(s)
    return kde.score_samples(test.reshape(test.shape[0], -1).double().numpy())


def brute_force(samples: torch.Tensor, test: torch.Tensor, sigma: float) -> np.ndarray:
    s = samples.reshape(samples.shape[0], -1).double().numpy()
    t = test.reshape(test.shape[0], -1).double().numpy()
    d2 = cdist(t, s, "sqeuclidean")
    dims = s.shape[1]
    return (
        logsumexp(-d2 / (2 * sigma**2), axis=1)
        - math.log(len(s))
        - 0.5 * dims * math.log(2 * math.pi * sigma**2)
    )


def test_sklearn_default_tree_is_inexact_here_and_single_leaf_is_exact(digits):
    s, t = digits["samples"], digits["reference"]
    flat_s = s.reshape(600, -1).double().numpy()
    default = (
        KernelDensity(bandwidth=0.1).fit(flat_s).score_samples(t.reshape(300, -1).double().numpy())
    )
    exact = brute_force(s, t, 0.1)
    assert np.abs(default - exact).max() > 1.0  # the known pruning error
    np.testing.assert_allclose(sklearn_scores(s, t, 0.1), exact, rtol=0, atol=1e-9)


@pytest.mark.parametrize("sigma", list(GRID))
def test_parzen_equals_sklearn_kernel_density(digits, sigma):
    s, t = digits["samples"], digits["reference"]
    ours = parzen_log_likelihoods(s, t, [sigma])[0].numpy()
    want = sklearn_scores(s, t, sigma)
    assert ours.mean() == pytest.approx(want.mean(), rel=1e-8, abs=0)
    np.testing.assert_allclose(ours, want, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(ours, brute_force(s, t, sigma), rtol=1e-10, atol=1e-9)


def test_every_bandwidth_in_one_pass_and_blocks_merge_exactly(digits, monkeypatch):
    s, t = digits["samples"], digits["reference"]
    together = parzen_log_likelihoods(s, t, GRID)
    for j, sigma in enumerate(GRID):
        np.testing.assert_allclose(together[j].numpy(), brute_force(s, t, sigma), atol=1e-9)
    # small blocks, uneven at the ends: 70 samples × 41 test images, merged by running
    # log-sum-exps
    monkeypatch.setattr(kde_module, "_SAMPLES_PER_BLOCK", 70)
    monkeypatch.setattr(kde_module, "_BLOCK_ELEMENTS", 70 * 41)
    blocked = parzen_log_likelihoods(s, t, GRID)
    np.testing.assert_allclose(blocked.numpy(), together.numpy(), rtol=0, atol=1e-10)


def test_float32_and_float64_inputs_give_the_same_float64_result(digits):
    s, t = digits["samples"], digits["reference"]
    a = parzen_log_likelihoods(s, t, [0.3])
    b = parzen_log_likelihoods(s.double(), t.double(), [0.3])
    assert a.dtype == torch.float64
    np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=0, atol=1e-12)


def test_bandwidth_is_the_grid_point_sklearn_validation_scores_pick(digits):
    s, v = digits["samples"], digits["val"]
    sigma, scores = choose_bandwidth(s, v, list(GRID))
    want = [sklearn_scores(s, v, g).mean() for g in GRID]
    assert sigma == GRID[int(np.argmax(want))]
    np.testing.assert_allclose(scores, want, rtol=1e-10)
    assert 0.1 < sigma < 1.0  # an interior optimum on these digits


def test_protocol_grid_is_logspace_minus_one_to_zero():
    np.testing.assert_allclose(bandwidth_grid(0.1, 1.0, 10), GRID, rtol=1e-15)
    assert bandwidth_grid(0.5, 0.5, 1) == [0.5]
    with pytest.raises(InputError, match="grid_low"):
        bandwidth_grid(1.0, 0.1, 10)


def _inputs(digits, **other) -> StubInputs:
    return StubInputs(
        {("images", "samples"): digits["samples"], ("images", "reference"): digits["reference"]},
        other=other,
    )


def test_metric_chooses_sigma_on_validation_and_reports_like_sklearn(digits):
    metric = ParzenWindow()
    assert Need("images", "samples") in metric.needs
    assert Need("images", "reference") in metric.needs
    out = compute(metric, _inputs(digits, val=ImageSet(digits["val"])))
    s, t, v = digits["samples"], digits["reference"], digits["val"]
    want_sigma = GRID[int(np.argmax([sklearn_scores(s, v, g).mean() for g in GRID]))]
    assert out["bandwidth"] == want_sigma
    per_image = sklearn_scores(s, t, want_sigma)
    assert out["value"] == pytest.approx(per_image.mean(), rel=1e-8)
    assert out["std_err"] == pytest.approx(per_image.std(ddof=1) / math.sqrt(300), rel=1e-8)
    assert out["n"] == 300 and out["num_samples"] == 600 and out["space"] == "density"
    assert out["bits_per_dim"] == pytest.approx(8 - out["value"] / (64 * math.log(2)), rel=1e-12)
    assert [row["bandwidth"] for row in out["validation_scores"]] == list(GRID)
    assert out["grid_points"] == 10 and out["validation"] == ""
    assert any("Theis et al. 2016" in w and "D = 64" in w for w in out["warnings"])
    assert set(out) - {"value", "warnings"} == {*metric.fields, *metric.options}


def test_metric_with_a_given_bandwidth_needs_no_validation_set(digits):
    out = compute(ParzenWindow(), _inputs(digits), bandwidth=0.25)
    want = sklearn_scores(digits["samples"], digits["reference"], 0.25).mean()
    assert out["value"] == pytest.approx(want, rel=1e-8)
    assert out["bandwidth"] == 0.25 and out["validation_scores"] is None


def test_metric_reads_the_named_validation_source(digits):
    out = compute(
        ParzenWindow(),
        _inputs(digits, **{"digits:val2": ImageSet(digits["val"][:100])}),
        validation="digits:val2",
        grid_points=3,
    )
    assert out["validation"] == "digits:val2" and len(out["validation_scores"]) == 3


def test_edge_of_grid_choice_is_flagged(digits):
    out = compute(
        ParzenWindow(),
        _inputs(digits, val=ImageSet(digits["val"])),
        grid_low=0.5,
        grid_high=2.0,
        grid_points=3,
    )
    assert out["bandwidth"] == 0.5
    assert any("grid_low" in w for w in out["warnings"])


def test_bad_input_is_one_line(digits):
    metric = ParzenWindow()
    with pytest.raises(InputError, match="bandwidth"):
        compute(metric, _inputs(digits), bandwidth=-0.1)
    with pytest.raises(InputError, match="val"):  # σ must be chosen, no validation images
        compute(metric, _inputs(digits))
    with pytest.raises(InputError, match="grid_low"):
        compute(metric, _inputs(digits, val=ImageSet(digits["val"])), grid_low=2.0)
    small = StubInputs(
        {
            ("images", "samples"): digits["samples"],
            ("images", "reference"): digits["reference"][:, :, :4, :4],
        }
    )
    with pytest.raises(InputError, match=r"reference images have shape \(1, 4, 4\)"):
        compute(metric, small, bandwidth=0.2)
    with pytest.raises(InputError, match="validation images"):
        compute(metric, _inputs(digits, val=ImageSet(digits["val"][:, :, :4, :4])))
    with pytest.raises(InputError, match="16 values, samples 64"):
        parzen_log_likelihoods(digits["samples"], digits["reference"][:, :, :4, :4], [0.2])
    with pytest.raises(InputError, match="positive"):
        parzen_log_likelihoods(digits["samples"], digits["reference"], [0.2, 0.0])
    with pytest.raises(InputError) as info:
        compute(metric, _inputs(digits), bandwidth=-1.0)
    assert "\n" not in str(info.value)


def test_kde_is_registered():
    assert isinstance(get_registry().metric("kde"), ParzenWindow)
