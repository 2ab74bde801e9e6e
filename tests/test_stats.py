"""Feature statistics (geneval/feature_stats.py): shifted moments, merging, files,
provenance."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from pytorch_fid.fid_score import calculate_frechet_distance

from geneval import __version__
from geneval.errors import GenevalWarning, InputError
from geneval.feature_stats import (
    FeatureStatistics,
    check_provenance,
    load_stats,
    make_meta,
    save_stats,
)
from geneval_plugins.metrics.sample_quality.fid import frechet_distance

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics


def _features(n: int, d: int, seed: int, scale: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, d)) * scale + rng.uniform(-1, 1, d)).astype(np.float32)


def _meta(**over: str) -> dict:
    meta = make_meta(
        extractor="inception-v3-fid", output="pool", weights_sha256="ab" * 32, convention="tf1"
    )
    meta.update(over)
    return meta


def test_batched_statistics_give_numpy_mean_and_unbiased_covariance() -> None:
    x = _features(300, 20, 0)
    stats = FeatureStatistics(20)
    for part in np.array_split(x, 9):
        stats.update(torch.from_numpy(part))
    assert stats.n == 300 and stats.sum.dtype == torch.float64
    ref = x.astype(np.float64)
    np.testing.assert_allclose(stats.mean.numpy(), ref.mean(axis=0), rtol=0, atol=1e-13)
    np.testing.assert_allclose(stats.cov.numpy(), np.cov(ref, rowvar=False), rtol=0, atol=1e-12)
    assert torch.equal(stats.cov, stats.cov.T)
    with pytest.raises(ValueError, match="shape"):
        stats.update(torch.zeros(3, 19))


def test_shards_merge_exactly() -> None:
    x = _features(400, 16, 1)
    whole = FeatureStatistics.from_features(torch.from_numpy(x))
    shards = [FeatureStatistics.from_features(torch.from_numpy(p)) for p in np.split(x, [50, 310])]
    # The pairwise merge of Chan, Golub & LeVeque, as geneval.distributed.merge_statistics
    # does it over ranks.
    merged = shards[0].merge(shards[1]).merge(shards[2])
    assert merged.n == whole.n and merged.dim == 16
    # Sums of float32 values in float64 are exact up to the order of additions.
    assert torch.allclose(merged.sum, whole.sum, rtol=0, atol=1e-10)
    assert torch.allclose(merged.sum_outer, whole.sum_outer, rtol=1e-15, atol=1e-10)
    assert torch.allclose(merged.mean, whole.mean, rtol=0, atol=1e-12)
    assert torch.allclose(merged.cov, whole.cov, rtol=1e-12, atol=1e-12)
    # Raw sums still build statistics (their digits, for features without a large offset).
    from_sums = FeatureStatistics.from_sums(
        sum(s.n for s in shards),
        sum((s.sum for s in shards), torch.zeros(16, dtype=torch.float64)),
        sum((s.sum_outer for s in shards), torch.zeros(16, 16, dtype=torch.float64)),
    )
    assert torch.allclose(from_sums.mean, whole.mean, rtol=0, atol=1e-12)
    assert torch.allclose(from_sums.cov, whole.cov, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="do not match"):
        FeatureStatistics.from_sums(3, merged.sum, merged.sum_outer[:3, :3])


def test_from_moments_round_trips() -> None:
    x = _features(50, 6, 2)
    stats = FeatureStatistics.from_features(torch.from_numpy(x))
    rebuilt = FeatureStatistics.from_moments(stats.mean.numpy(), stats.cov.numpy(), stats.n)
    assert torch.allclose(rebuilt.mean, stats.mean, atol=1e-14)
    assert torch.allclose(rebuilt.cov, stats.cov, atol=1e-13)


def test_save_load_round_trip_with_features(tmp_path: Path) -> None:
    x = _features(120, 10, 3)
    stats = FeatureStatistics.from_features(torch.from_numpy(x))
    path = save_stats(tmp_path / "s.npz", stats, _meta(), features=x, force=False)
    loaded = load_stats(path)
    assert loaded.n == 120 and loaded.meta == _meta()
    assert loaded.meta["geneval_version"] == __version__
    assert loaded.mu.dtype == np.float64 and loaded.sigma.dtype == np.float64
    np.testing.assert_array_equal(loaded.features, x)
    back = loaded.statistics()
    assert torch.allclose(back.mean, stats.mean, atol=1e-14)
    assert torch.allclose(back.cov, stats.cov, atol=1e-13)
    with np.load(path) as raw:  # the npz keys pytorch-fid/TTUR read, plus ours
        assert {"mu", "sigma", "n", "meta"} <= set(raw.files)
        assert json.loads(str(raw["meta"]))["resize"] == "tf1"


@pytest.mark.filterwarnings("ignore:The `disp` argument:DeprecationWarning")  # pytorch-fid
def test_stats_file_gives_the_same_fid_through_pytorch_fid(tmp_path: Path) -> None:
    a, b = _features(600, 64, 4), _features(500, 64, 5, scale=1.3)
    pa = save_stats(
        tmp_path / "a.npz",
        FeatureStatistics.from_features(torch.from_numpy(a)),
        _meta(),
        force=False,
    )
    pb = save_stats(
        tmp_path / "b.npz",
        FeatureStatistics.from_features(torch.from_numpy(b)),
        _meta(),
        force=False,
    )
    with np.load(pa) as fa, np.load(pb) as fb:  # exactly how pytorch-fid reads a stats file
        theirs = calculate_frechet_distance(fa["mu"], fa["sigma"], fb["mu"], fb["sigma"])
    sa, sb = load_stats(pa), load_stats(pb)
    ours = frechet_distance(sa.mu, sa.sigma, sb.mu, sb.sigma)
    assert ours == pytest.approx(theirs, rel=1e-6)
    # And both equal the FID of the raw features' moments (np.cov, as pytorch-fid computes).
    direct = frechet_distance(
        a.astype(np.float64).mean(0),
        np.cov(a.astype(np.float64), rowvar=False),
        b.astype(np.float64).mean(0),
        np.cov(b.astype(np.float64), rowvar=False),
    )
    assert ours == pytest.approx(direct, rel=1e-10)


def test_writing_refuses_to_overwrite_and_needs_npz(tmp_path: Path) -> None:
    stats = FeatureStatistics.from_features(torch.from_numpy(_features(10, 4, 6)))
    path = save_stats(tmp_path / "s.npz", stats, _meta(), force=False)
    with pytest.raises(InputError, match="already exists"):
        save_stats(path, stats, _meta(), force=False)
    save_stats(path, stats, _meta(resize="clean"), force=True)
    assert load_stats(path).meta["resize"] == "clean"
    with pytest.raises(InputError, match=r"must end in \.npz"):
        save_stats(tmp_path / "s.npy", stats, _meta(), force=False)


def test_plain_pytorch_fid_file_is_read_with_a_warning(tmp_path: Path) -> None:
    x = _features(40, 5, 7).astype(np.float64)
    path = tmp_path / "plain.npz"
    np.savez(path, mu=x.mean(0), sigma=np.cov(x, rowvar=False))  # as pytorch-fid --save-stats
    with pytest.warns(GenevalWarning, match="no provenance") as caught:
        loaded = load_stats(path)
    assert len(caught) == 1 and str(path) in str(caught[0].message)
    assert loaded.meta is None and loaded.n is None
    assert not loaded.statistics().count_known  # reports say the count is unknown
    check_provenance(loaded, _meta(), dim=5)  # unknown provenance: accepted (after the warning)
    with pytest.raises(InputError, match="5-d features"):
        check_provenance(loaded, _meta(), dim=2048)  # but a dimension mismatch is named
    np.testing.assert_allclose(loaded.statistics().cov.numpy(), np.cov(x, rowvar=False), atol=1e-13)


def test_bad_files_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="does not exist"):
        load_stats(tmp_path / "missing.npz")
    np.savez(tmp_path / "nomu.npz", mean=np.zeros(3))
    with pytest.raises(InputError, match="no 'mu' and 'sigma'"):
        load_stats(tmp_path / "nomu.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.zeros((4, 4)))
    with pytest.raises(InputError, match="do not match"):
        load_stats(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a readable"):
        load_stats(tmp_path / "junk.npz")


@pytest.mark.parametrize(
    "key, theirs, ours",
    [
        ("extractor", "digits-cnn", "inception-v3-fid"),
        ("weights_sha256", "cd" * 32, "ab" * 32),
        ("resize", "clean", "tf1"),
    ],
)
def test_provenance_mismatch_names_both_sides(
    tmp_path: Path, key: str, theirs: str, ours: str
) -> None:
    stats = FeatureStatistics.from_features(torch.from_numpy(_features(10, 4, 8)))
    path = save_stats(tmp_path / "s.npz", stats, _meta(**{key: theirs}), force=False)
    loaded = load_stats(path)
    with pytest.raises(InputError) as err:
        check_provenance(loaded, _meta(), dim=4)
    message = str(err.value)
    assert f"{key}={theirs!r}" in message and f"{key}={ours!r}" in message and str(path) in message
    check_provenance(loaded, _meta(**{key: theirs}), dim=4)  # the matching run is accepted


def test_partial_provenance_is_a_warning(tmp_path: Path) -> None:
    stats = FeatureStatistics.from_features(torch.from_numpy(_features(10, 4, 8)))
    meta = {k: v for k, v in _meta().items() if k != "resize"}
    loaded = load_stats(save_stats(tmp_path / "s.npz", stats, meta, force=False))
    with pytest.warns(GenevalWarning, match=r"does not record resize \(this run: tf1\)"):
        check_provenance(loaded, _meta(), dim=4)
