"""The memorisation metrics ``authpct``, ``ct``, ``fls`` and ``mifid``.

* Each equals its reference on identical feature arrays: dgm-eval's ``metrics/`` transcribed
  in ``tests/dgm_eval_reference.py`` (k-means seeded with ``random_state``, PCA on its exact
  solver, FLS on the CPU in float64 and in its own float32), and torchmetrics'
  ``MemorizationInformedFrechetInceptionDistance`` with an identity feature extractor.
* Sensitivity: samples that copy 30 % of the training part of the reference (the rest drawn
  fresh) move ``authpct``, ``ct`` and ``fls`` towards memorisation while FID barely moves.
* The blocked nearest-neighbour search equals a brute-force one across block edges.
* Bad input is an ``InputError``; one end-to-end ``geneval run`` on ``.npz`` features arrays.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geneval.errors import InputError
from geneval_plugins.metrics.memorisation import _common
from geneval_plugins.metrics.memorisation._common import nearest_neighbours, split_reference
from geneval_plugins.metrics.memorisation.authpct import (
    AuthenticityPercentage,
    authenticity_percentage,
)
from geneval_plugins.metrics.memorisation.ct import DataCopyingTest, data_copying_statistic
from geneval_plugins.metrics.memorisation.fls import (
    FeatureLikelihoodScore,
    feature_likelihood_score,
)
from geneval_plugins.metrics.memorisation.mifid import (
    MemorizationInformedFID,
    memorization_informed_fid,
)
from geneval_plugins.metrics.sample_quality.fid import frechet_distance
from tests import dgm_eval_reference as ref


class _Inputs:
    """The slice of :class:`geneval.api.MetricInputs` these metrics read."""

    device = torch.device("cpu")

    def __init__(self, samples: np.ndarray, reference: np.ndarray, seed: int = 0) -> None:
        self.seed = seed
        self._features = {
            "samples": torch.as_tensor(samples, dtype=torch.float32),
            "reference": torch.as_tensor(reference, dtype=torch.float32),
        }

    def features(self, source: str, output: str | None = None) -> torch.Tensor:
        return self._features[source]


def _gauss(rng: np.random.Generator, n: int, d: int, scale: float = 1.0) -> np.ndarray:
    return rng.normal(size=(n, d)) * scale


# --------------------------------------------------------------------------- neighbours


def test_blocked_nearest_neighbours_equal_brute_force(monkeypatch: pytest.MonkeyPatch):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(97, 5)) + 40.0  # far from the origin: the product form cancels
    x = np.concatenate([rng.normal(size=(60, 5)) + 40.0, y[:7]])  # 7 exact copies
    monkeypatch.setattr(_common, "BLOCK_ELEMENTS", 97 * 4)  # blocks of 4 rows
    dist, idx = nearest_neighbours(torch.tensor(x), torch.tensor(y))
    brute = np.sqrt(((x[:, None, :] - y[None, :, :]) ** 2).sum(-1))
    np.testing.assert_array_equal(idx.numpy(), brute.argmin(1))
    np.testing.assert_allclose(dist.numpy(), brute.min(1), rtol=1e-12)
    assert (dist[-7:] == 0).all()  # copies at distance exactly 0
    own, own_idx = nearest_neighbours(torch.tensor(y), torch.tensor(y), exclude_self=True)
    np.fill_diagonal(brute_y := np.sqrt(((y[:, None] - y[None]) ** 2).sum(-1)), np.inf)
    np.testing.assert_array_equal(own_idx.numpy(), brute_y.argmin(1))
    np.testing.assert_allclose(own.numpy(), brute_y.min(1), rtol=1e-12)


def test_split_reference_is_seeded_and_disjoint():
    train, test = split_reference(10, 0.3, 5, metric="x")
    again = split_reference(10, 0.3, 5, metric="x")
    assert torch.equal(train, again[0]) and torch.equal(test, again[1])
    assert len(test) == 3 and sorted(torch.cat([train, test]).tolist()) == list(range(10))
    other = split_reference(10, 0.3, 6, metric="x")
    assert not torch.equal(test, other[1])


# --------------------------------------------------------------------------- authpct


def test_authpct_closed_form():
    """1-D: training points 0, 1, 3 (own nearest distances 1, 1, 2). Sample 0.4 → nearest 0
    at 0.4 < 1: copy; 3.1 → nearest 3 at 0.1 < 2: copy; −2 → nearest 0 at 2 > 1: authentic;
    6 → nearest 3 at 3 > 2: authentic; 1.5 → nearest 1 at 0.5 < 1: copy. 2 of 5 = 40 %."""
    train = np.array([[0.0], [1.0], [3.0]])
    samples = np.array([[0.4], [3.1], [-2.0], [6.0], [1.5]])
    assert authenticity_percentage(samples, train) == 40.0


@pytest.mark.parametrize("d", [3, 32])
def test_authpct_equals_dgm_eval(d: int):
    rng = np.random.default_rng(d)
    train = _gauss(rng, 400, d)
    samples = np.concatenate([_gauss(rng, 250, d, 1.2), train[:50] + 1e-3]).astype(np.float32)
    train = train.astype(np.float32)
    expected = ref.compute_authpct(train, samples)  # upstream float32 cdist
    count = round(expected * len(samples) / 100)  # upstream divides in float32
    assert expected == pytest.approx(100 * count / len(samples), rel=1e-6)
    assert authenticity_percentage(samples, train) == 100 * count / len(samples)
    assert 0 < count < len(samples)


# --------------------------------------------------------------------------- ct


@pytest.mark.parametrize(("d", "seed"), [(12, 0), (80, 3)])  # 80 > 64: the PCA path
def test_ct_equals_dgm_eval(d: int, seed: int):
    rng = np.random.default_rng(10 + d)
    train, test = _gauss(rng, 600, d), _gauss(rng, 300, d)
    samples = np.concatenate([_gauss(rng, 350, d, 1.1), train[:60]])
    expected = ref.compute_CTscore(train, test, samples, random_state=seed)
    result = data_copying_statistic(train, test, samples, seed=seed)
    assert result.value == pytest.approx(expected, rel=1e-9)
    assert result.cells_used == 3 and len(result.z_cells) == 3


def test_ct_leaves_out_thin_cells_as_dgm_eval():
    """Two well separated clusters and a third thin one: cells with ≤ 20 samples drop out of
    C_T, in both implementations."""
    rng = np.random.default_rng(7)
    centres = np.array([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    train = np.concatenate([rng.normal(size=(200, 2)) + c for c in centres])
    test = np.concatenate([rng.normal(size=(100, 2)) + c for c in centres])
    samples = np.concatenate(
        [rng.normal(size=(150, 2)) + centres[0], rng.normal(size=(150, 2)) + centres[1]]
        + [rng.normal(size=(15, 2)) + centres[2]]
    )
    result = data_copying_statistic(train, test, samples, seed=1)
    expected = ref.compute_CTscore(train, test, samples, random_state=1)
    assert result.value == pytest.approx(expected, rel=1e-9)
    assert result.cells_used == 2 and result.z_cells.count(None) == 1


# --------------------------------------------------------------------------- fls


def _fls_sets(seed: int, d: int = 10, n: int = 150):
    rng = np.random.default_rng(seed)
    train, baseline, test = (_gauss(rng, n, d) for _ in range(3))
    samples = np.concatenate([_gauss(rng, n - 30, d, 1.2), train[:30]])
    return train, baseline, test, samples


def test_fls_equals_dgm_eval_float64():
    sets = _fls_sets(0)
    result = feature_likelihood_score(*sets)
    expected = ref.compute_fls(*sets, dtype=torch.float64)
    assert result.value == pytest.approx(expected, rel=1e-9)
    assert result.overfit_pct == ref.compute_fls_overfit(*sets, dtype=torch.float64)
    assert 20 < result.value < 200


def test_fls_uncached_row_blocks_equal_cached(monkeypatch: pytest.MonkeyPatch):
    """Distances recomputed by blocks of 7 rows at every step give the same score."""
    from geneval_plugins.metrics.memorisation import fls as fls_module

    sets = _fls_sets(2, n=40)
    cached = feature_likelihood_score(*sets)
    monkeypatch.setattr(fls_module, "CACHE_ELEMENTS", 0)
    monkeypatch.setattr(_common, "BLOCK_ELEMENTS", 7 * 40)
    blocked = feature_likelihood_score(*sets)
    assert blocked.value == pytest.approx(cached.value, rel=1e-12)
    assert blocked.overfit_pct == cached.overfit_pct


def test_fls_against_dgm_eval_float32():
    """dgm-eval's own float32 path: 100 Adam steps in float32 leave ~1e-7 relative in the
    score; held to 1e-5."""
    sets = _fls_sets(1)
    result = feature_likelihood_score(*sets)
    assert result.value == pytest.approx(ref.compute_fls(*sets), rel=1e-5)


# --------------------------------------------------------------------------- mifid


def _torchmetrics_mifid(samples: np.ndarray, reference: np.ndarray) -> float:
    from torchmetrics.image.mifid import MemorizationInformedFrechetInceptionDistance

    class Identity(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    metric = MemorizationInformedFrechetInceptionDistance(feature=Identity())
    metric.update(torch.tensor(reference, dtype=torch.float64), real=True)
    metric.update(torch.tensor(samples, dtype=torch.float64), real=False)
    return float(metric.compute())


@pytest.mark.parametrize("copies", [0, 380])
def test_mifid_equals_torchmetrics(copies: int):
    """32-d features: without copies the mean minimum cosine distance is above 0.1 and the
    FID is left as it is; near-copies of 380 of the 400 reference points bring it below and
    divide the FID by it. torchmetrics takes the FID's trace term from general eigenvalues
    of Σ₁Σ₂: equal to round-off (~1e-12 here), held to 1e-9."""
    rng = np.random.default_rng(copies)
    reference = _gauss(rng, 400, 32) + 0.2
    samples = _gauss(rng, 400, 32, 1.1) + 0.2
    samples[:copies] = reference[:copies] * (1 + 1e-3 * rng.normal(size=(copies, 32)))
    result = memorization_informed_fid(samples, reference)
    assert result.value == pytest.approx(_torchmetrics_mifid(samples, reference), rel=1e-9)
    assert result.penalised == (copies > 0)
    assert result.fid == pytest.approx(
        frechet_distance(
            samples.mean(0),
            np.cov(samples, rowvar=False),
            reference.mean(0),
            np.cov(reference, rowvar=False),
        ),  # fmt: skip
        rel=1e-12,
    )


def test_mifid_average_over_samples_closed_form():
    """``average_over=samples``: mean over samples of min_j (1 − |cos|), by numpy."""
    rng = np.random.default_rng(4)
    reference, samples = _gauss(rng, 60, 4), _gauss(rng, 40, 4)
    cos = (samples / np.linalg.norm(samples, axis=1, keepdims=True)) @ (
        reference / np.linalg.norm(reference, axis=1, keepdims=True)
    ).T
    d_mem = float((1 - np.abs(cos)).min(axis=1).mean())
    result = memorization_informed_fid(samples, reference, average_over="samples")
    assert result.memorisation_distance == pytest.approx(d_mem, rel=1e-12)
    assert result.value == pytest.approx(result.fid / (d_mem + 1e-14), rel=1e-12)


# --------------------------------------------------------------------------- sensitivity


def test_copying_30_percent_moves_memorisation_metrics_not_fid():
    """30 % of the samples copy points of the reference's training part (the part left after
    the held-out split, which both ``ct`` and ``fls`` draw with the run's seed); the rest is
    fresh from the same distribution. AuthPct and C_T fall sharply, FLS falls and its
    overfit percentage rises, while FID changes by less than its own small-sample value."""
    rng = np.random.default_rng(1)
    n, d, m = 1200, 16, 600
    reference = _gauss(rng, n, d).astype(np.float32)
    fresh = _gauss(rng, m, d).astype(np.float32)
    k = int(0.3 * m)
    copying = fresh.copy()
    # ct splits at 0.5 and fls at 1/3 with the same seed: the permutation's tail is in the
    # training part of both.
    train_ct, _ = split_reference(n, 0.5, 0, metric="ct")
    train_fls, _ = split_reference(n, 1 / 3, 0, metric="fls")
    both = np.intersect1d(train_ct.numpy(), train_fls.numpy())
    copying[:k] = reference[rng.choice(both, k, replace=False)]

    def scores(samples: np.ndarray) -> dict[str, float]:
        inputs = _Inputs(samples, reference)
        ct = DataCopyingTest().compute(
            inputs, cells=3, test_fraction=0.5, min_cell_samples=20, pca_dim=64
        )
        fls = FeatureLikelihoodScore().compute(inputs, test_fraction=1 / 3, max_n=10000)
        mifid = memorization_informed_fid(samples, reference)
        return {
            "authpct": authenticity_percentage(samples, reference),
            "ct": ct["value"],
            "fls": fls["value"],
            "fls_overfit": fls["overfit_pct"],
            "fid": mifid.fid,
        }

    a, b = scores(fresh), scores(copying)
    assert b["authpct"] < a["authpct"] - 15
    assert a["ct"] > -2 and b["ct"] < a["ct"] - 3
    assert b["fls"] < a["fls"]
    assert b["fls_overfit"] > a["fls_overfit"] + 3
    assert abs(b["fid"] - a["fid"]) < 0.5 * a["fid"] < 0.01 * 2 * d


# --------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_input_error():
    rng = np.random.default_rng(0)
    good = _gauss(rng, 50, 4)
    bad = good.copy()
    bad[3, 1] = np.nan
    with pytest.raises(InputError, match="non-finite.*row 3"):
        authenticity_percentage(bad, good)
    with pytest.raises(InputError, match="non-finite"):
        memorization_informed_fid(good, bad)
    with pytest.raises(InputError, match="at least 2 reference"):
        authenticity_percentage(good, good[:1])
    with pytest.raises(InputError, match="each part needs"):
        DataCopyingTest().compute(
            _Inputs(good, good[:4]), cells=3, test_fraction=0.5, min_cell_samples=20, pca_dim=64
        )
    with pytest.raises(InputError, match="no k-means cell holds more than 20"):
        data_copying_statistic(good, good, good[:20])
    with pytest.raises(InputError, match="at least 2 points in each set"):
        FeatureLikelihoodScore().compute(_Inputs(good[:1], good), test_fraction=1 / 3, max_n=10)
    constant = good.copy()
    constant[:, 2] = 1.0
    with pytest.raises(InputError, match="dimension 2 is constant"):
        feature_likelihood_score(constant, constant, constant, constant)
    with pytest.raises(InputError, match="4-d, reference 3-d"):
        memorization_informed_fid(good, good[:, :3])


def test_ct_cell_without_test_points_is_input_error():
    train = np.concatenate([np.zeros((5, 2)), np.full((5, 2), 10.0), np.full((5, 2), -10.0)])
    train += np.random.default_rng(0).normal(size=train.shape) * 0.1
    test = train[:10] + 0.01  # none near −10
    with pytest.raises(InputError, match="cell .* each cell needs both"):
        data_copying_statistic(train, test, train, seed=0)


def test_metric_declarations():
    for metric, higher in (
        (AuthenticityPercentage(), True),
        (DataCopyingTest(), True),
        (FeatureLikelihoodScore(), True),
        (MemorizationInformedFID(), False),
    ):
        assert metric.report_panel == "neighbours"
        assert metric.higher_is_better is higher
        assert "memoris" in metric.interpretation or "copying" in metric.interpretation


# --------------------------------------------------------------------------- end to end


def test_cli_run_on_features_files(run_cli, tmp_path: Path):
    rng = np.random.default_rng(3)
    reference = _gauss(rng, 400, 8).astype(np.float32)
    samples = np.concatenate([_gauss(rng, 200, 8), reference[:60]]).astype(np.float32)
    np.savez(tmp_path / "a.npz", features=samples)
    np.savez(tmp_path / "b.npz", features=reference)
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", tmp_path / "a.npz", "--reference", tmp_path / "b.npz",
        "--metrics", "authpct,ct,fls,mifid", "--device", "cpu", "--seed", "4",
        "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    metrics = json.loads(out.read_text())["metrics"]
    inputs = _Inputs(samples, reference, seed=4)
    assert metrics["authpct"]["value"] == authenticity_percentage(samples, reference)
    ct = DataCopyingTest().compute(
        inputs, cells=3, test_fraction=0.5, min_cell_samples=20, pca_dim=64
    )
    assert metrics["ct"]["value"] == pytest.approx(ct["value"], rel=1e-12)
    train, test = split_reference(400, 0.5, 4, metric="ct")
    direct = data_copying_statistic(reference[train], reference[test], samples, seed=4)
    assert metrics["ct"]["value"] == pytest.approx(direct.value, rel=1e-12)
    fls = FeatureLikelihoodScore().compute(inputs, test_fraction=1 / 3, max_n=10000)
    assert metrics["fls"]["value"] == pytest.approx(fls["value"], rel=1e-12)
    assert metrics["fls"]["overfit_pct"] == fls["overfit_pct"]
    mifid = memorization_informed_fid(samples, reference)
    assert metrics["mifid"]["value"] == pytest.approx(mifid.value, rel=1e-12)
