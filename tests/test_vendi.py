"""``vendi`` (Friedman & Dieng 2023): exp of the order-q Rényi entropy of the eigenvalues of
K/n, cosine kernel by default.

* Equal to the ``vendi-score`` package (0.0.3) on float64 features to 1e-9 relative:
  ``score_K`` with q (q ≥ 1 on any features; q < 1 where K has full rank, because the package
  counts the round-off eigenvalues of a rank-deficient K, which weigh in for q < 1),
  ``score_dual`` with q, and ``score_X`` at q = 1, which is all it computes: its ``q`` is
  ignored (checked here).
* Closed forms: k mutually orthogonal clusters of identical points give the Hill number of
  the cluster proportions (k for equal clusters, any q); q = 0 counts the non-zero
  eigenvalues (the rank); both the d × d Gram form (d < n) and the n × n kernel.
* q < 0 is an ``InputError`` / exit 2 in one line; ``geneval run`` with an ``.npz`` of
  features reports the function's value.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from sklearn.preprocessing import normalize as unit_rows
from vendi_score import vendi

from geneval.errors import InputError
from geneval_plugins.metrics.sample_quality.vendi import vendi_score

#: vendi-score 0.0.3 reads ``scipy.sparse.csr.csr_matrix``, deprecated in scipy.
pytestmark = pytest.mark.filterwarnings("ignore:Please import `csr_matrix`:DeprecationWarning")


def _features(n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d)


def _package_q(q: float) -> float | str:
    return "inf" if math.isinf(q) else q


@pytest.mark.parametrize("q", [1.0, 2.0, 3.5, math.inf])
@pytest.mark.parametrize("shape", [(500, 32), (40, 64)], ids=["gram-form", "kernel-form"])
def test_equals_score_k_and_score_dual(q, shape):
    x = _features(*shape, seed=1)
    unit = unit_rows(x)
    expected = vendi.score_K(unit @ unit.T, q=_package_q(q))
    assert vendi_score(x, q=q) == pytest.approx(expected, rel=1e-9)
    assert vendi_score(x, q=q) == pytest.approx(vendi.score_dual(x, q=_package_q(q)), rel=1e-9)


@pytest.mark.parametrize("q", [0.25, 0.5, 0.9])
def test_orders_below_one_equal_the_package_where_k_has_full_rank(q):
    x = _features(40, 64, seed=2)  # n < d: K is 40 × 40 of rank 40
    unit = unit_rows(x)
    assert vendi_score(x, q=q) == pytest.approx(vendi.score_K(unit @ unit.T, q=q), rel=1e-9)
    wide = _features(500, 32, seed=2)  # the Gram form: the package's d × d route agrees
    assert vendi_score(wide, q=q) == pytest.approx(vendi.score_dual(wide, q=q), rel=1e-9)


def test_score_x_ignores_q_and_equals_q_1():
    x = _features(300, 16, seed=3)
    assert vendi.score_X(x, q=2) == vendi.score_X(x, q=1)
    assert vendi_score(x, q=1) == pytest.approx(vendi.score_X(x), rel=1e-9)
    assert vendi_score(x, q=2) < vendi_score(x, q=1) * (1 - 1e-3)


def test_linear_kernel_without_normalisation():
    x = _features(200, 16, seed=4) / 20
    expected = vendi.score_K(x @ x.T, q=1)
    assert vendi_score(x, normalize=False) == pytest.approx(expected, rel=1e-9)
    assert vendi_score(x, normalize=False) == pytest.approx(
        vendi.score_X(x, normalize=False), rel=1e-9
    )


# -- closed forms --------------------------------------------------------------------------------


@pytest.mark.parametrize("d", [16, 400], ids=["gram-form", "kernel-form"])
@pytest.mark.parametrize("q", [0.0, 0.5, 1.0, 2.0, math.inf])
def test_orthogonal_clusters(d, q):
    """Cluster j: m_j copies of a scaled basis vector e_j. K/n is block diagonal with blocks
    of ones / n, whose eigenvalues are p_j = m_j / n: the score is the Hill number of p."""
    sizes = np.array([50, 100, 100, 30])
    rows = np.concatenate(
        [np.repeat(np.eye(d)[j : j + 1] * (j + 1.5), m, axis=0) for j, m in enumerate(sizes)]
    )
    p = sizes / sizes.sum()
    if q == 1:
        expected = math.exp(-(p * np.log(p)).sum())
    elif math.isinf(q):
        expected = 1 / p.max()
    else:
        expected = float((p**q).sum() ** (1 / (1 - q)))
    assert vendi_score(rows, q=q) == pytest.approx(expected, rel=1e-12)
    equal = np.repeat(np.eye(d)[:4] * 3.0, 25, axis=0)
    assert vendi_score(equal, q=q) == pytest.approx(4.0, rel=1e-12)


def test_q_0_is_the_rank():
    rng = np.random.default_rng(5)
    x = rng.normal(size=(600, 7)) @ rng.normal(size=(7, 48))  # rank 7 in 48-d
    assert vendi_score(x, q=0) == pytest.approx(7.0, rel=1e-12)
    assert vendi_score(x[:5], q=0) == pytest.approx(5.0, rel=1e-12)


def test_identical_samples_score_1_and_orthonormal_ones_n():
    x = np.tile(np.arange(1.0, 9.0), (300, 1))
    assert vendi_score(x) == pytest.approx(1.0, rel=1e-12)
    assert vendi_score(np.eye(20) * 7.0, q=2) == pytest.approx(20.0, rel=1e-12)


def test_inputs_are_left_unchanged():
    """Rows are normalised in place in float64 copies, never in the caller's tensor."""
    import torch

    for shape in ((300, 8), (8, 30)):
        x = torch.from_numpy(_features(*shape, seed=9))
        before = x.clone()
        vendi_score(x)
        assert torch.equal(x, before)


# -- bad input -----------------------------------------------------------------------------------


def test_bad_input_is_one_input_error():
    x = _features(30, 4, seed=6)
    with pytest.raises(InputError, match=r"^vendi: q must be ≥ 0"):
        vendi_score(x, q=-0.5)
    with pytest.raises(InputError, match="q must be"):
        vendi_score(x, q=math.nan)
    with pytest.raises(InputError, match="non-finite"):
        vendi_score(np.where(np.eye(30, 4) > 0, np.inf, x))
    with pytest.raises(InputError, match="must be"):
        vendi_score(x[0])
    with pytest.raises(InputError, match="zero"):
        vendi_score(np.zeros((5, 3)))


def test_cli_negative_q_is_exit_2_in_one_line(run_cli, tmp_path):
    np.savez(tmp_path / "s.npz", features=_features(50, 8, seed=7).astype(np.float32))
    res = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--metrics", "vendi",
        "--opt", "vendi.q=-1", "--quiet",
    )  # fmt: skip
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [line for line in res.err.splitlines() if line and "warning" not in line]
    assert len(lines) == 1 and "Traceback" not in res.err
    assert "vendi.q" in lines[0] and "-1" in lines[0]


@pytest.mark.parametrize("q", ["1", "inf"])
def test_cli_run_reports_the_function_value(run_cli, tmp_path, q):
    x = _features(400, 24, seed=8).astype(np.float32)
    np.savez(tmp_path / "s.npz", features=x)
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--metrics", "vendi",
        "--opt", f"vendi.q={q}", "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    got = json.loads(out.read_text())["metrics"]["vendi"]
    expected = vendi_score(x, q=float(q))
    assert got["value"] == pytest.approx(expected, rel=1e-12)
    assert got["value"] == pytest.approx(
        vendi.score_K(unit_rows(x.astype(np.float64)) @ unit_rows(x.astype(np.float64)).T,
                      q=_package_q(float(q))),
        rel=1e-9,
    )  # fmt: skip
    assert got["n_samples"] == 400
