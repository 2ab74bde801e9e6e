"""Shifted, mergeable feature statistics keep their digits for features with a large offset.

Raw running sums ``Σxxᵀ − n μμᵀ`` cancel when the features' mean is large against their spread
(offset 3·10⁴, unit spread: the FID was 10⁻⁶ relative off). The statistics of
:class:`geneval.feature_stats.FeatureStatistics` are accumulated about a shift and merged with
the pairwise update of Chan, Golub & LeVeque (1979, 1983); these tests hold them, the FID and
merged shards to the two-pass float64 computation.

The reference is two-pass: the mean first, then ``numpy.cov`` about it. Its mean is the
correctly rounded one (exact rational sum, one rounding): ``numpy.mean``'s pairwise sum is
itself up to ~16 ulps off at these offsets, and at an offset of 10⁶ one ulp of the mean
(1.2·10⁻¹⁰) already moves the FID's ``‖μ₁ − μ₂‖²`` term by ~10⁻¹⁰ relative, so no float64
mean can reproduce ``numpy.mean``'s rounding to 10⁻¹².
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from geneval.feature_cache import FeatureCache, _payload_digest, entry_key
from geneval.feature_stats import FeatureStatistics
from geneval_plugins.metrics.sample_quality.fid import frechet_distance

pytestmark = pytest.mark.numerics

OFFSETS = [0.0, 1e3, 1e4, 3e4, 1e6]
N, D, BATCH = 500, 32, 64
RTOL = 1e-12


def _features(seed: int, offset: float, n: int = N, d: int = D) -> np.ndarray:
    """``n`` correlated features of unit spread about ``offset`` (plus a per-feature shift)."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((d, d)) / np.sqrt(d)
    return offset + rng.uniform(-1, 1, d) + rng.standard_normal((n, d)) @ mixing


def _exact_mean(x: np.ndarray) -> np.ndarray:
    """The correctly rounded mean of each column (exact rational sum, rounded once)."""
    n = x.shape[0]
    return np.array([float(sum(map(Fraction, column)) / n) for column in x.T])


def _two_pass(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The two-pass float64 moments: the mean, then the unbiased covariance about it."""
    return _exact_mean(x), np.cov(x, rowvar=False)


def _batched(x: np.ndarray, batch: int = BATCH) -> FeatureStatistics:
    stats = FeatureStatistics(x.shape[1])
    for start in range(0, x.shape[0], batch):
        stats.update(torch.from_numpy(x[start : start + batch]))
    return stats


def _close(actual: torch.Tensor, expected: np.ndarray, rtol: float = RTOL) -> None:
    """Equal to ``rtol`` relative to the largest entry of ``expected``."""
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(actual.numpy(), expected, rtol=rtol, atol=rtol * scale)


def _fid(a: FeatureStatistics, b: FeatureStatistics) -> float:
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


@pytest.mark.parametrize("offset", OFFSETS)
def test_batched_moments_and_fid_equal_the_two_pass_computation(offset: float) -> None:
    x, y = _features(0, offset), _features(1, offset)
    sx, sy = _batched(x), _batched(y)
    (mx, cx), (my, cy) = _two_pass(x), _two_pass(y)
    assert sx.n == N and sx.shift.dtype == sx.comoment.dtype == torch.float64
    _close(sx.mean, mx)
    _close(sx.cov, cx)
    _close(sy.cov, cy)
    assert torch.equal(sx.cov, sx.cov.T)
    if offset:  # about an offset, the mean is within one ulp of the correctly rounded one
        assert (np.abs(sx.mean.numpy() - mx) <= np.spacing(np.abs(mx))).all()
    reference = frechet_distance(mx, cx, my, cy)
    assert _fid(sx, sy) == pytest.approx(reference, rel=RTOL)
    # numpy.mean's own rounding (a few ulps) is all that separates pytorch-fid's moments
    assert _fid(sx, sy) == pytest.approx(
        frechet_distance(x.mean(0), cx, y.mean(0), cy), rel=max(RTOL, 1e-15 * offset)
    )


def test_raw_sums_lose_the_digits_the_shifted_statistics_keep() -> None:
    """The issue's case: raw sums at an offset of 3·10⁴ are ~10⁻⁷ off; shifted ones are not."""
    x, y = _features(0, 3e4), _features(1, 3e4)
    (mx, cx), (my, cy) = _two_pass(x), _two_pass(y)
    reference = frechet_distance(mx, cx, my, cy)

    def raw(z: np.ndarray) -> FeatureStatistics:
        return FeatureStatistics.from_sums(N, torch.from_numpy(z.sum(0)), torch.from_numpy(z.T @ z))

    assert abs(_fid(raw(x), raw(y)) / reference - 1) > 1e-9
    assert _fid(_batched(x), _batched(y)) == pytest.approx(reference, rel=RTOL)


@pytest.mark.parametrize("offset", OFFSETS)
def test_two_shards_merged_equal_one_process(offset: float) -> None:
    x, y = _features(2, offset), _features(3, offset)
    whole = _batched(x)
    first, second = _batched(x[:200], batch=50), _batched(x[200:], batch=37)
    assert not torch.equal(first.shift, second.shift)  # each shard has its own shift
    merged = first.merge(second)
    assert merged.n == N and torch.equal(merged.shift, first.shift)
    _close(merged.mean, whole.mean.numpy())
    _close(merged.cov, whole.cov.numpy())
    assert _fid(merged, _batched(y)) == pytest.approx(_fid(whole, _batched(y)), rel=RTOL)
    # merging is symmetric up to round-off, and an empty side changes nothing
    _close(second.merge(first).cov, whole.cov.numpy())
    empty = FeatureStatistics(D)
    assert torch.equal(empty.merge(merged).cov, merged.cov)
    assert torch.equal(merged.merge(empty).cov, merged.cov)


def test_a_stream_that_drifts_away_from_its_shift_keeps_its_digits() -> None:
    """The shift is the first batch's mean; later batches far from it lose nothing, since
    every batch is absorbed centred (Chan's δδᵀ nᴬnᴮ/n term, not shifted squares)."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((N, 8)) + np.linspace(0, 1e6, N)[:, None]  # sorted, drifting
    stats = _batched(x)
    mean, cov = _two_pass(x)
    _close(stats.mean, mean)
    _close(stats.cov, cov)


def test_empty_batches_sums_and_moments() -> None:
    x = _features(5, 1e4, n=40, d=6)
    stats = FeatureStatistics(6).update(torch.zeros(0, 6))
    assert stats.n == 0 and torch.equal(stats.sum, torch.zeros(6, dtype=torch.float64))
    with pytest.raises(ValueError, match="no features"):
        _ = stats.mean
    stats.update(torch.from_numpy(x))
    # the raw sums are derived from the shifted statistics (float64, summed in another order
    # than numpy's pairwise sums: a few ulps)
    _close(stats.sum, x.sum(0), rtol=1e-13)
    _close(stats.sum_outer, x.T @ x, rtol=1e-13)
    assert stats.nbytes == 8 * (2 * 6 + 36)
    rebuilt = FeatureStatistics.from_moments(stats.mean.numpy(), stats.cov.numpy(), stats.n)
    assert torch.equal(rebuilt.mean, stats.mean)
    _close(rebuilt.cov, stats.cov.numpy(), rtol=1e-15)
    from_sums = FeatureStatistics.from_sums(stats.n, stats.sum, stats.sum_outer)
    _close(from_sums.mean, stats.mean.numpy())
    assert FeatureStatistics.from_sums(0, torch.zeros(6), torch.zeros(6, 6)).n == 0
    with pytest.raises(ValueError, match="do not match"):
        FeatureStatistics.from_shifted(3, stats.shift, stats.shifted_sum, stats.comoment[:3])
    with pytest.raises(ValueError, match="merge"):
        stats.merge(FeatureStatistics(5))


def _fields() -> dict:
    return {"format": 1, "source": "s", "kind": "moments"}


def test_cache_entries_keep_the_shifted_statistics_and_old_entries_stay_readable(
    tmp_path: Path,
) -> None:
    from geneval.feature_cache import CachedPart

    x = _features(6, 1e6, n=100, d=8)
    stats = _batched(x)
    store = FeatureCache(tmp_path, limit=10**9)
    store.store(_fields(), CachedPart(100, {(4, 4)}, {}, moments=stats))
    back = store.load(_fields()).moments
    assert back.n == 100 and torch.equal(back.comoment, stats.comoment)
    assert torch.equal(back.mean, stats.mean) and torch.equal(back.cov, stats.cov)
    # an entry written with raw sums (the layout before the shifted statistics) is still read
    arrays = {"n": np.asarray(100, dtype=np.int64), "sum": x.sum(0), "sum_outer": x.T @ x}
    meta = {"fields": _fields(), "digest": _payload_digest(arrays), "count": 100, "sizes": []}
    with open(store.path(entry_key(_fields())), "wb") as handle:
        np.savez(handle, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
    legacy = store.load(_fields()).moments
    assert legacy.n == 100
    _close(legacy.mean, stats.mean.numpy())


def _merge_worker(rank: int, world: int, init: str, out: str, sizes: list[int]) -> None:
    import torch.distributed as dist

    from geneval.distributed import context, merge_statistics

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    x = _features(7, 1e6)
    start = sum(sizes[:rank])
    local = _batched(x[start : start + sizes[rank]])
    merged = merge_statistics(context(), local)
    result = {"n": merged.n, "mean": merged.mean.tolist(), "cov": merged.cov.tolist()}
    Path(out, f"{rank}.json").write_text(json.dumps(result))
    dist.destroy_process_group()


@pytest.mark.parametrize("sizes", [[300, 200], [0, 500]])
def test_gloo_ranks_merge_to_one_process_at_a_large_offset(tmp_path: Path, sizes) -> None:
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_merge_worker, args=(2, init, str(tmp_path), sizes), nprocs=2, join=True)
    results = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    assert results[0] == results[1]  # every rank holds the same merged statistics
    x = _features(7, 1e6)
    whole = _batched(x)
    mean, cov = _two_pass(x)
    assert results[0]["n"] == N
    merged_mean = torch.tensor(results[0]["mean"], dtype=torch.float64)
    merged_cov = torch.tensor(results[0]["cov"], dtype=torch.float64)
    _close(merged_mean, whole.mean.numpy())
    _close(merged_cov, whole.cov.numpy())
    _close(merged_mean, mean)
    _close(merged_cov, cov)
