"""``prd`` equals the transcribed reference (msmsajjadi/precision-recall-distributions) on
identical features, with the reference's k-means seeded as geneval seeds it
(``random_state = seed + run``), and its curve matches the closed form on known histograms."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.sample_quality.prd import (
    PrecisionRecallDistributions,
    compute_prd,
    max_f_beta_pair,
    prd_curve,
)
from tests import prd_reference as reference
from tests.stub_inputs import StubInputs, compute


def _blobs(n: int, d: int, *, seed: int, shift: float = 0.0) -> np.ndarray:
    """Points around a few centres (so that the clusters are real), float32 like features."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(0, 3, size=(6, d))
    weights = np.array([0.3, 0.25, 0.2, 0.1, 0.1, 0.05])
    picks = rng.choice(6, size=n, p=weights)
    return (centres[picks] + rng.normal(size=(n, d)) + shift).astype(np.float32)


@pytest.fixture(scope="module")
def pair() -> tuple[np.ndarray, np.ndarray]:
    return _blobs(400, 12, seed=1, shift=0.4), _blobs(400, 12, seed=2)


@pytest.mark.parametrize(
    ("options", "seed"),
    [
        ({}, 0),
        ({"num_clusters": 7, "num_angles": 33, "num_runs": 3}, 11),
        ({"num_clusters": 30, "num_angles": 501, "num_runs": 2, "beta": 3.0}, 4),
    ],
)
def test_equals_the_reference(pair, options, seed):
    x, y = pair
    beta = options.pop("beta", 8.0)
    runs = options.get("num_runs", 10)
    expected_p, expected_r = reference.compute_prd_from_embedding(x, y, seed=seed, **options)
    f_beta, f_beta_inv = reference.prd_to_max_f_beta_pair(expected_p, expected_r, beta=beta)
    got = compute_prd(x, y, seed=seed, beta=beta, **options)
    assert got.precision.shape == expected_p.shape == (options.get("num_angles", 1001),)
    np.testing.assert_allclose(got.precision, expected_p, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got.recall, expected_r, rtol=1e-9, atol=1e-15)
    assert got.f_beta == pytest.approx(float(f_beta), rel=1e-9)
    assert got.f_beta_inv == pytest.approx(float(f_beta_inv), rel=1e-9)
    # The seeds matter: another seed clusters differently (a test that could not fail would
    # pass with any seed).
    if runs <= 3:
        other_p, _ = reference.compute_prd_from_embedding(x, y, seed=seed + 100, **options)
        assert np.abs(other_p - got.precision).max() > 1e-6


def test_the_metric_reports_the_reference_numbers_and_curve(pair):
    x, y = pair
    metric = PrecisionRecallDistributions()
    inputs = StubInputs(
        {
            ("features", "samples"): torch.from_numpy(x),
            ("features", "reference"): torch.from_numpy(y),
        },
        seed=7,
    )
    result = compute(metric, inputs, num_runs=2, num_angles=101)
    p, r = reference.compute_prd_from_embedding(x, y, num_runs=2, num_angles=101, seed=7)
    f8, f18 = reference.prd_to_max_f_beta_pair(p, r)
    assert result["f_beta"] == pytest.approx(float(f8), rel=1e-9)
    assert result["f_beta_inv"] == pytest.approx(float(f18), rel=1e-9)
    assert result["value"] == min(result["f_beta"], result["f_beta_inv"])
    curve = result["curve"]
    assert (curve["x_label"], curve["y_label"]) == ("recall", "precision")
    np.testing.assert_allclose(curve["x"], r, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(curve["y"], p, rtol=1e-9, atol=1e-15)
    assert result["n_samples"] == result["n_reference"] == 400
    assert json.loads(json.dumps(result))["curve"]["y"] == curve["y"]  # JSON-ready


def test_curve_closed_form():
    """eval = (1, 0), ref = (½, ½): precision(λ) = min(λ/2, 1), recall = min(½, 1/λ)."""
    ev = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    ref = torch.tensor([[0.5, 0.5]], dtype=torch.float64)
    precision, recall = prd_curve(ev, ref, 1001)
    lam = np.tan(np.linspace(1e-10, np.pi / 2 - 1e-10, 1001))
    np.testing.assert_allclose(precision[0].numpy(), np.minimum(lam / 2, 1), rtol=1e-12)
    np.testing.assert_allclose(recall[0].numpy(), np.minimum(0.5, 1 / lam), rtol=1e-12)
    # F_β over the closed-form points; the grid's best point lies next to the corner
    # (p, r) = (1, ½) at λ = 2, where F_β = (1 + β²) · ½ / (β² + ½).
    p, r = np.minimum(lam / 2, 1), np.minimum(0.5, 1 / lam)
    f8, f18 = max_f_beta_pair(precision[0], recall[0], 8.0)
    for got, b in ((f8, 8.0), (f18, 1 / 8)):
        on_grid = ((1 + b * b) * p * r / (b * b * p + r + 1e-10)).max()
        assert got == pytest.approx(on_grid, rel=1e-12)
        assert got == pytest.approx((1 + b * b) * 0.5 / (b * b + 0.5), rel=1e-3)


def test_identical_sets_score_one():
    x = _blobs(300, 8, seed=3)
    got = compute_prd(x, x.copy(), num_runs=2)
    assert got.f_beta == pytest.approx(1.0, abs=1e-8)
    assert got.f_beta_inv == pytest.approx(1.0, abs=1e-8)


def test_a_missing_mode_lowers_recall_not_precision():
    """Samples from only the first modes: recall-like F₈ falls well below precision-like F₁/₈."""
    y = _blobs(600, 8, seed=4)
    centres = np.random.default_rng(99).normal(0, 3, size=(6, 8))
    x = (centres[np.arange(600) % 2] + np.random.default_rng(5).normal(size=(600, 8))).astype(
        np.float32
    )
    got = compute_prd(x, y, num_runs=2)
    assert got.f_beta < 0.75 < 0.95 < got.f_beta_inv


def test_unbalanced_counts_are_refused_unless_allowed(pair):
    x, y = pair
    with pytest.raises(InputError, match=r"300 samples against 400 reference.*enforce_balance"):
        compute_prd(x[:300], y)
    with pytest.raises(ValueError):
        reference.compute_prd_from_embedding(x[:300], y)
    p, r = reference.compute_prd_from_embedding(
        x[:300], y, num_runs=2, enforce_balance=False, seed=3
    )
    got = compute_prd(x[:300], y, num_runs=2, enforce_balance=False, seed=3)
    np.testing.assert_allclose(got.precision, p, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(got.recall, r, rtol=1e-9, atol=1e-15)


def test_bad_input():
    x = _blobs(10, 4, seed=6)
    with pytest.raises(InputError, match="num_clusters=30 exceeds the 20 points"):
        compute_prd(x, x, num_clusters=30)
    bad = x.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="samples features hold non-finite"):
        compute_prd(bad, x)
    with pytest.raises(InputError, match="4-d but reference features 3-d"):
        compute_prd(x, x[:, :3])
    metric = PrecisionRecallDistributions()
    with pytest.raises(InputError, match="beta"):
        compute(metric, StubInputs({}), beta=0.0)
    with pytest.raises(InputError, match="num_angles"):
        compute(metric, StubInputs({}), num_angles=2)


def test_registered():
    metric = get_registry().metric("prd")
    assert isinstance(metric, PrecisionRecallDistributions)
    assert metric.higher_is_better is True


def _features(path: Path, x: np.ndarray) -> Path:
    np.savez(path, features=x)
    return path


def test_cli_run_reports_the_curve(run_cli, tmp_path, pair):
    """A run on two features arrays: the JSON carries the curve whole, the table summarises
    it, a gate on the value works and the HTML draws it."""
    x, y = pair
    out, page = tmp_path / "r.json", tmp_path / "r.html"
    res = run_cli(
        "run", "--samples", _features(tmp_path / "x.npz", x),
        "--reference", _features(tmp_path / "y.npz", y), "--metrics", "prd",
        "--opt", "prd.num_runs=2", "--opt", "prd.num_angles=51", "--seed", "3",
        "--json", out, "--html", page, "--fail-if", "prd<0.01", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    result = json.loads(out.read_text())["metrics"]["prd"]
    p, r = reference.compute_prd_from_embedding(x, y, num_runs=2, num_angles=51, seed=3)
    np.testing.assert_allclose(result["curve"]["y"], p, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(result["curve"]["x"], r, rtol=1e-9, atol=1e-15)
    assert "51 points, precision vs recall" in res.out
    (points,) = re.findall(r'<polyline class="curve"[^>]* points="([^"]*)"', page.read_text())
    assert len(points.split()) == 51  # every point of the curve is drawn
    assert not math.isnan(result["value"])


def test_cli_unbalanced_is_one_line_exit_2(run_cli, tmp_path, pair):
    x, y = pair
    res = run_cli(
        "run", "--samples", _features(tmp_path / "x.npz", x[:100]),
        "--reference", _features(tmp_path / "y.npz", y), "--metrics", "prd", "--quiet",
    )  # fmt: skip
    assert res.code == 2
    assert "prd: 100 samples against 400 reference points" in res.err
    assert len(res.err.strip().splitlines()) == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_curve_equals_the_cpu_curve(pair):
    x, y = pair
    cpu = compute_prd(x, y, num_runs=2, seed=1)
    gpu = compute_prd(x, y, num_runs=2, seed=1, device="cuda")
    np.testing.assert_allclose(gpu.precision, cpu.precision, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gpu.recall, cpu.recall, rtol=1e-12, atol=1e-15)
    assert gpu.f_beta == pytest.approx(cpu.f_beta, rel=1e-12)
