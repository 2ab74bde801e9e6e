"""The ``fid`` metric takes the Fréchet distance's small-side route from statistics that kept
their rows.

While n ≤ d, :class:`geneval.feature_stats.FeatureStatistics` keeps the feature rows in place of
the co-moment and gives the centred factor ``F = (X − x̄)/√(n − 1)``; the ``fid`` metric passes
it to :func:`frechet_distance`, whose trace term then comes from the n × n problem. These tests
hold the metric's value to the d × d eigen route (no factors) to 1e-10 relative and to an
independent numpy computation of ``tr (Σ₁^½ Σ₂ Σ₁^½)^½``, with the rows on both sides, one
side, and merged from shards; and they hold the rows to their bounds: at most d of them, dropped
as soon as n > d, never pickled, and taken from a statistics file only when they reproduce its
``mu`` and ``sigma``.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import geneval_plugins.metrics.sample_quality.fid as fid_module
from geneval.feature_stats import FeatureStatistics, load_stats, rows_match, save_stats
from geneval.plugins import get_registry
from geneval_plugins.metrics.sample_quality.fid import frechet_distance
from tests.stub_inputs import StubInputs

pytestmark = pytest.mark.numerics

D = 96
RTOL = 1e-10


def _features(seed: int, n: int, d: int = D, offset: float = 0.0, scale: float = 1.0):
    """``n`` correlated float32 features about ``offset`` (plus a per-feature shift)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    x = offset + rng.uniform(-1, 1, d) + scale * rng.standard_normal((n, d)) @ mixing
    return x.astype(np.float32)


def _batched(x: np.ndarray, batch: int = 17) -> FeatureStatistics:
    stats = FeatureStatistics(x.shape[1])
    for start in range(0, x.shape[0], batch):
        stats.update(torch.from_numpy(x[start : start + batch]))
    return stats


def _numpy_fid(x: np.ndarray, y: np.ndarray) -> float:
    """Independent reference: two-pass float64 moments, ``Σ₁^½`` from numpy's eigh, and the
    non-zero eigenvalues of ``Σ₁^½ Σ₂ Σ₁^½`` (those at round-off level clipped to zero)."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = np.linalg.eigh(s1)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    eig = np.linalg.eigvalsh(root @ s2 @ root)
    eig = np.where(eig > x.shape[1] * np.finfo(np.float64).eps * eig.max(), eig, 0.0)
    diff = x.mean(0) - y.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.sqrt(eig).sum())


class _Routes:
    """Counts the trace-term routes :func:`frechet_distance` takes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: list[str] = []
        for name in (
            "trace_sqrt_product",
            "trace_sqrt_product_small",
            "trace_sqrt_product_factors",
        ):
            original = getattr(fid_module, name)

            def counted(*args, _name=name, _original=original):
                self.calls.append(_name)
                return _original(*args)

            monkeypatch.setattr(fid_module, name, counted)


def _metric_fid(a: FeatureStatistics, b: FeatureStatistics) -> float:
    metric = get_registry().metric("fid")
    return metric.compute(StubInputs({("stats", "samples"): a, ("stats", "reference"): b}))["value"]


def _eigen_fid(a: FeatureStatistics, b: FeatureStatistics) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


@pytest.mark.parametrize(
    ("n1", "n2", "route"),
    [
        (40, 70, "trace_sqrt_product_factors"),  # both sides keep rows
        (60, 300, "trace_sqrt_product_small"),  # samples keep rows, the reference does not
        (250, 50, "trace_sqrt_product_small"),  # the reference keeps rows
        (200, 300, "trace_sqrt_product"),  # neither: the Cholesky route
    ],
)
def test_fid_metric_takes_the_small_side_and_equals_the_eigen_route(
    monkeypatch: pytest.MonkeyPatch, n1: int, n2: int, route: str
) -> None:
    x, y = _features(0, n1), _features(1, n2, scale=1.3)
    a, b = _batched(x), _batched(y, batch=29)
    assert (a.covariance_factor() is not None) == (n1 <= D)
    assert (b.covariance_factor() is not None) == (n2 <= D)
    eigen = _eigen_fid(a, b)
    routes = _Routes(monkeypatch)
    value = _metric_fid(a, b)
    assert routes.calls == [route]
    assert value == pytest.approx(eigen, rel=RTOL)
    assert value == pytest.approx(_numpy_fid(x, y), rel=1e-9)


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e6])
def test_shards_merged_keep_their_rows_and_the_value(
    monkeypatch: pytest.MonkeyPatch, offset: float
) -> None:
    x, y = _features(2, 80, offset=offset), _features(3, 60, offset=offset, scale=0.8)
    whole = _batched(x)
    first, second = _batched(x[:30], batch=7), _batched(x[30:], batch=11)
    merged = first.merge(second)
    assert merged.n == 80 and merged.rows is not None
    assert torch.equal(merged.rows, torch.from_numpy(x.astype(np.float64)))
    factor = merged.covariance_factor()
    assert factor is not None
    # FᵀF is the covariance, which equals one process's (two-pass float64 about the shift)
    cov = np.cov(x.astype(np.float64), rowvar=False)
    scale = np.abs(cov).max()
    np.testing.assert_allclose((factor.T @ factor).numpy(), cov, atol=1e-12 * scale, rtol=0)
    np.testing.assert_allclose(merged.cov.numpy(), whole.cov.numpy(), atol=1e-12 * scale, rtol=0)
    reference = _batched(y)
    routes = _Routes(monkeypatch)
    value = _metric_fid(merged, reference)
    assert routes.calls == ["trace_sqrt_product_factors"]
    assert value == pytest.approx(_eigen_fid(whole, reference), rel=RTOL)
    assert value == pytest.approx(_numpy_fid(x, y), rel=1e-9)


def test_rows_are_kept_up_to_d_and_dropped_past_it() -> None:
    x = _features(4, D + 1, d=D)
    stats = FeatureStatistics(D)
    nbytes = stats.nbytes
    stats.update(torch.from_numpy(x[: D - 1]))
    stats.update(torch.from_numpy(x[D - 1 : D]))
    assert stats.n == D and stats.rows is not None and stats.rows.shape == (D, D)
    assert stats.nbytes == nbytes == 8 * (2 * D + D * D)
    stats.update(torch.from_numpy(x[D:]))  # n = d + 1: the rows become the co-moment
    assert stats.n == D + 1 and stats.rows is None and stats.covariance_factor() is None
    cov = np.cov(x.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(stats.cov.numpy(), cov, atol=1e-12 * np.abs(cov).max(), rtol=0)
    assert stats.nbytes == nbytes
    # a first batch larger than d is never kept
    big = FeatureStatistics.from_features(torch.from_numpy(x))
    assert big.rows is None and torch.equal(big.cov, big.cov.T)
    # a batch is copied: changing it afterwards changes nothing
    batch = torch.from_numpy(x[:10].copy())
    kept = FeatureStatistics(D).update(batch)
    before = kept.cov.clone()
    batch.add_(5.0)
    assert torch.equal(kept.cov, before)


def test_merges_past_d_and_with_moments_drop_the_rows() -> None:
    x = _features(5, 150)
    first, second = _batched(x[:60]), _batched(x[60:])
    assert first.rows is not None and second.rows is not None
    merged = first.merge(second)  # 150 > d: merged by Chan's update, without rows
    assert merged.n == 150 and merged.rows is None
    cov = np.cov(x.astype(np.float64), rowvar=False)
    np.testing.assert_allclose(merged.cov.numpy(), cov, atol=1e-12 * np.abs(cov).max(), rtol=0)
    # statistics rebuilt from moments hold no rows, and neither does their merge with rows
    moments = FeatureStatistics.from_moments(first.mean.numpy(), first.cov.numpy(), first.n)
    assert moments.rows is None and moments.covariance_factor() is None
    small = _batched(x[60:80])
    mixed = moments.merge(small)
    assert mixed.n == 80 and mixed.rows is None
    expected = np.cov(np.concatenate([x[:60], x[60:80]]).astype(np.float64), rowvar=False)
    scale = np.abs(expected).max()
    np.testing.assert_allclose(mixed.cov.numpy(), expected, atol=1e-12 * scale, rtol=0)
    # an empty side changes nothing, rows included
    empty = FeatureStatistics(D)
    for out in (empty.merge(small), small.merge(empty), small.to("cpu")):
        assert out.rows is not None and torch.equal(out.rows, small.rows)
        assert torch.equal(out.cov, small.cov)


def test_rows_are_never_pickled() -> None:
    x = _features(6, 50)
    stats = _batched(x)
    assert stats.rows is not None
    back = pickle.loads(pickle.dumps(stats))
    assert back.rows is None and back.covariance_factor() is None
    assert back.n == 50 and torch.equal(back.comoment, stats.comoment)
    assert torch.equal(back.mean, stats.mean)
    assert stats.rows is not None  # pickling leaves the original as it was
    # the pickle holds the d × d co-moment, not the 50 × d rows next to it
    fresh = FeatureStatistics.from_shifted(50, stats.shift, stats.shifted_sum, stats.comoment)
    assert len(pickle.dumps(stats)) == len(pickle.dumps(fresh))


def test_a_statistics_file_with_features_gives_its_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = _features(7, 70, offset=1e3), _features(8, 500, offset=1e3, scale=1.2)
    samples = _batched(x)
    path = save_stats(tmp_path / "ref.npz", samples, {"extractor": "test"}, features=x, force=False)
    loaded = load_stats(path)
    stats = loaded.statistics()
    assert stats.n == 70 and stats.count_known and stats.rows is not None
    scale = np.abs(loaded.sigma).max()
    np.testing.assert_allclose(stats.cov.numpy(), loaded.sigma, atol=1e-12 * scale, rtol=0)
    other = _batched(y)
    routes = _Routes(monkeypatch)
    value = _metric_fid(other, stats)
    assert routes.calls == ["trace_sqrt_product_small"]
    from_moments = FeatureStatistics.from_moments(loaded.mu, loaded.sigma, 70)
    assert value == pytest.approx(_eigen_fid(other, from_moments), rel=RTOL)
    # features that do not reproduce mu and sigma are not used: the stored moments are
    loaded.features = x.copy()
    loaded.features[3, 5] += 0.01
    fallback = loaded.statistics()
    assert fallback.rows is None and fallback.n == 70
    assert np.array_equal(fallback.cov.numpy(), loaded.sigma)
    assert not rows_match(FeatureStatistics.from_features(loaded.features), loaded.mu, loaded.sigma)
    shifted = loaded.mu + 1e-3
    assert not rows_match(samples, shifted, loaded.sigma)
    assert rows_match(samples, loaded.mu, loaded.sigma)
