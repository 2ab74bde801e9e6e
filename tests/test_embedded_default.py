"""The embedded default: digits + digits-cnn + shipped statistics, through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from geneval.feature_stats import load_stats
from geneval_reference_stats import shipped_stats_path
from tests.shipped_artefacts import assert_stats_current

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics


def _fid_reference(a: np.ndarray, b: np.ndarray) -> float:
    """pytorch-fid's own FID on the same features (an independent reference)."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    return float(
        calculate_frechet_distance(
            a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
        )
    )


# pytorch-fid's sqrtm warns on the singular digits covariance and on scipy's deprecated `disp`.
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.filterwarnings("ignore::scipy.linalg.LinAlgWarning")
def test_shipped_stats_and_recomputed_reference_agree(run_cli, tmp_path):
    from geneval.plugins import get_registry

    registry = get_registry()
    train = registry.dataset("digits").load("train").images.numpy()
    test = registry.dataset("digits").load("test").images.numpy()
    np.save(tmp_path / "train.npy", train)
    np.save(tmp_path / "test.npy", test)
    shipped = run_cli(
        "run",
        "--samples",
        "digits:test",
        "--reference",
        "digits:train",
        "--metrics",
        "fid",
        "--json",
        tmp_path / "a.json",
        "--quiet",
    )
    recomputed = run_cli(
        "run",
        "--samples",
        tmp_path / "test.npy",
        "--reference",
        tmp_path / "train.npy",
        "--extractor",
        "digits-cnn",
        "--metrics",
        "fid",
        "--json",
        tmp_path / "b.json",
        "--quiet",
    )
    assert shipped.code == recomputed.code == 0, shipped.err + recomputed.err
    a = json.loads((tmp_path / "a.json").read_text())
    b = json.loads((tmp_path / "b.json").read_text())
    assert a["config"]["extractor"] == "digits-cnn"
    assert a["config"]["reference"] == "digits:train"
    assert a["metrics"]["fid"]["value"] == pytest.approx(b["metrics"]["fid"]["value"], rel=1e-6)

    ref = np.load(shipped_stats_path("digits", "train", "digits-cnn"))["features"]
    extractor = registry.extractor("digits-cnn").load(device="cpu")
    import torch

    feats = extractor(torch.from_numpy(test))["features"].double().numpy()
    assert a["metrics"]["fid"]["value"] == pytest.approx(
        _fid_reference(feats, ref.astype(np.float64)), rel=1e-4
    )


def test_stats_command_reproduces_shipped_stats(run_cli, tmp_path):
    out = tmp_path / "train.npz"
    res = run_cli("stats", "digits:train", "-o", out, "--features", "--quiet")
    assert res.code == 0, res.err
    mine, shipped = load_stats(out), load_stats(shipped_stats_path("digits", "train", "digits-cnn"))
    assert mine.n == 1257
    assert_stats_current(shipped, mine.features)
    # the file's own moments are those of its features (float64 running sums)
    np.testing.assert_allclose(
        mine.mu, mine.features.astype(np.float64).mean(0), rtol=1e-12, atol=1e-12
    )
    assert mine.meta["extractor"] == "digits-cnn" and mine.meta["resize"] == shipped.meta["resize"]
    again = run_cli("stats", "digits:train", "-o", out)
    assert again.code == 2 and "--force" in again.err


def test_dataset_samples_choose_the_dataset_extractor(run_cli, tmp_path):
    """With no reference, a dataset given as samples still picks its own default extractor."""
    import torch

    from geneval.plugins import get_registry

    res = run_cli(
        "run",
        "--samples",
        "digits:test",
        "--metrics",
        "is",
        "--opt",
        "is.splits=1",
        "--json",
        tmp_path / "r.json",
        "--quiet",
    )
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["config"]["extractor"] == "digits-cnn"
    registry = get_registry()
    logits = (
        registry.extractor("digits-cnn")
        .load(device="cpu")(registry.dataset("digits").load("test").images)["logits"]
        .double()
    )
    p = torch.softmax(logits, dim=1)
    expected = torch.exp((p * (p.log() - p.mean(0, keepdim=True).log())).sum(1).mean())
    assert report["metrics"]["is"]["value"] == pytest.approx(float(expected), rel=1e-6)
