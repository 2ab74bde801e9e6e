"""Features arrays, plain statistics files of any dimension, and logits files
(``docs/contracts.md`` §4, §6, §9).

* ``--samples feats.npz --reference plain.npz`` (and the other way round, and two plain
  files), any dimension: no extractor takes part at all (none is resolved, checked for
  weights or loaded); FID equals the closed form on the same moments; the features are
  credited to their file and the plain file gets its warning; a width mismatch is exit 2
  naming the file and both widths. A statistics file whose ``meta`` names an extractor keeps
  its rule (its dimension must be that extractor's).
* ``geneval stats feats.npz``: the moments of the array (float64, exact for large offsets),
  ``meta`` crediting the file instead of an extractor; ``--extractor`` with it is exit 2.
* ``logits`` (N, C) in an ``.npz``: the ``is`` metric reads them and equals a direct float64
  computation; ``--extractor`` with them, wrong shapes and NaN are exit 2 in one line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy import linalg
from scipy.special import log_softmax

import geneval
from geneval.errors import InputError
from geneval.run.state import RunState
from tests.fake_plugins import FakePlugins

PLAIN_WARNING = "plain pytorch-fid/TTUR file"


@pytest.fixture
def no_extractor(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to look up, check the weights of, or load an extractor fails the test."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("an extractor took part")

    monkeypatch.setattr(RunState, "extractor", refuse)
    monkeypatch.setattr(RunState, "extractor_plugin", refuse)
    monkeypatch.setattr(RunState, "provenance", refuse)
    monkeypatch.setattr("geneval.run.pipeline.preflight", refuse)
    monkeypatch.setattr("geneval.run.pipeline.metric_extractor", refuse)


def _features(path: Path, n: int, dim: int, *, seed: int, offset: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    features = (rng.normal(size=(n, dim)) + offset).astype(np.float32)
    np.savez(path, features=features)
    return features


def _plain(path: Path, n: int, dim: int, *, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A plain pytorch-fid/TTUR statistics file: ``mu`` and ``sigma`` only."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, dim)) * rng.uniform(0.5, 2.0, size=dim) + 0.3
    mu, sigma = x.mean(axis=0), np.cov(x, rowvar=False)
    np.savez(path, mu=mu, sigma=sigma)
    return mu, sigma


def _moments(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x = features.astype(np.float64)
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The Fréchet distance by scipy's ``sqrtm`` (pytorch-fid's formula), an independent
    reference: ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½."""
    root = linalg.sqrtm(s1 @ s2)
    return float(((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * np.trace(root).real)


def _warned(report: dict) -> bool:
    """Whether the report carries the plain file's warning."""
    return any(PLAIN_WARNING in text for text in report.get("warnings", []))


def _single_error(res) -> str:
    assert res.code == 2, (res.code, res.out, res.err)
    lines = [line for line in res.err_lines if not line.startswith("geneval: warning")]
    assert len(lines) == 1, res.err
    assert "Traceback" not in res.err
    return lines[0]


# -- (a) features arrays and plain statistics files --------------------------------------------
@pytest.mark.parametrize("dim", [64, 512])
def test_features_against_a_plain_file_need_no_extractor(no_extractor, tmp_path, dim):
    feats = _features(tmp_path / "feats.npz", 600, dim, seed=1)
    mu, sigma = _plain(tmp_path / "plain.npz", 700, dim, seed=2)
    report = geneval.evaluate(
        tmp_path / "feats.npz", tmp_path / "plain.npz", "fid", device="cpu", cache=False
    )
    assert _warned(report)
    expected = _fid(*_moments(feats), mu, sigma)
    assert report["metrics"]["fid"]["value"] == pytest.approx(expected, rel=1e-9)
    credit = report["config"]["extractors"]["fid"]
    assert credit["name"] is None and credit["weights_sha256"] is None
    assert credit["features_from"] == {"samples": f"the features array of {tmp_path / 'feats.npz'}"}
    assert report["config"]["extractor"] is None


def test_plain_samples_against_a_features_reference(no_extractor, tmp_path):
    feats = _features(tmp_path / "feats.npz", 300, 64, seed=3)
    mu, sigma = _plain(tmp_path / "plain.npz", 400, 64, seed=4)
    report = geneval.evaluate(
        tmp_path / "plain.npz", tmp_path / "feats.npz", "fid", device="cpu", cache=False
    )
    assert _warned(report)
    expected = _fid(mu, sigma, *_moments(feats))
    assert report["metrics"]["fid"]["value"] == pytest.approx(expected, rel=1e-9)
    credit = report["config"]["extractors"]["fid"]
    assert credit["name"] is None
    assert credit["features_from"] == {
        "reference": f"the features array of {tmp_path / 'feats.npz'}"
    }


def test_two_plain_files_need_no_extractor(no_extractor, tmp_path):
    mu1, s1 = _plain(tmp_path / "a.npz", 100, 48, seed=5)
    mu2, s2 = _plain(tmp_path / "b.npz", 120, 48, seed=6)
    report = geneval.evaluate(
        tmp_path / "a.npz", tmp_path / "b.npz", "fid", device="cpu", cache=False
    )
    assert _warned(report)
    assert report["metrics"]["fid"]["value"] == pytest.approx(_fid(mu1, s1, mu2, s2), rel=1e-9)
    assert report["config"]["extractors"]["fid"]["name"] is None
    assert "features_from" not in report["config"]["extractors"]["fid"]


def test_cli_features_against_a_plain_file(run_cli, tmp_path):
    """The command line, with the bundled plugins: the default extractor's weights are not
    on this machine, so a run that asked for them would fail."""
    feats = _features(tmp_path / "feats.npz", 200, 64, seed=7)
    mu, sigma = _plain(tmp_path / "plain.npz", 300, 64, seed=8)
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", tmp_path / "feats.npz", "--reference", tmp_path / "plain.npz",
        "--metrics", "fid", "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    assert _warned(report) and PLAIN_WARNING in res.out
    assert report["metrics"]["fid"]["value"] == pytest.approx(
        _fid(*_moments(feats), mu, sigma), rel=1e-9
    )
    assert report["config"]["extractors"]["fid"]["name"] is None


@pytest.mark.parametrize("order", ["features-first", "plain-first", "two-plain"])
def test_a_width_mismatch_names_the_file_and_both_widths(run_cli, tmp_path, order):
    _features(tmp_path / "feats.npz", 50, 64, seed=9)
    _plain(tmp_path / "narrow.npz", 50, 32, seed=10)
    _plain(tmp_path / "wide.npz", 50, 64, seed=11)
    samples, reference = {
        "features-first": ("feats.npz", "narrow.npz"),
        "plain-first": ("narrow.npz", "feats.npz"),
        "two-plain": ("narrow.npz", "wide.npz"),
    }[order]
    out = tmp_path / "r.json"
    line = _single_error(
        run_cli(
            "run",
            "--samples",
            tmp_path / samples,
            "--reference",
            tmp_path / reference,
            "--metrics",
            "fid",
            "--json",
            out,
        )  # fmt: skip
    )
    assert "narrow.npz" in line and "32-d" in line and "64-d" in line, line
    assert not out.exists()


def test_kid_against_a_plain_file_asks_for_its_features(no_extractor, tmp_path):
    _features(tmp_path / "feats.npz", 50, 16, seed=12)
    _plain(tmp_path / "plain.npz", 50, 16, seed=13)
    with pytest.raises(InputError, match=r"plain\.npz holds no per-sample features"):
        geneval.evaluate(
            tmp_path / "feats.npz", tmp_path / "plain.npz", "kid", device="cpu", cache=False
        )


def test_a_features_array_with_an_extractor_and_a_plain_file_is_exit_2(run_cli, tmp_path):
    _features(tmp_path / "feats.npz", 50, 64, seed=14)
    _plain(tmp_path / "plain.npz", 50, 64, seed=15)
    line = _single_error(
        run_cli(
            "run",
            "--samples",
            tmp_path / "feats.npz",
            "--reference",
            tmp_path / "plain.npz",
            "--metrics",
            "fid",
            "--extractor",
            "inception-v3-fid",
        )  # fmt: skip
    )
    assert "feats.npz" in line and "'features'" in line and "--extractor" in line


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def test_a_statistics_file_naming_an_extractor_keeps_its_rule(fake, run_cli, tmp_path):
    """A statistics file whose meta names the ``counting`` extractor (12-d): features of
    12-d are compared with it (the extractor credited for the file's side); one of another
    dimension is exit 2 naming the extractor's dimension, as before."""
    feats = _features(tmp_path / "feats.npz", 80, 12, seed=16)
    rng = np.random.default_rng(17)
    x = rng.normal(size=(90, 12))
    mu, sigma = x.mean(axis=0), np.cov(x, rowvar=False)
    meta = json.dumps({"extractor": "counting"})
    np.savez(tmp_path / "named.npz", mu=mu, sigma=sigma, n=np.int64(90), meta=np.array(meta))
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", tmp_path / "feats.npz", "--reference", tmp_path / "named.npz",
        "--metrics", "fid", "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    assert report["metrics"]["fid"]["value"] == pytest.approx(
        _fid(*_moments(feats), mu, sigma), rel=1e-9
    )
    assert report["config"]["extractors"]["fid"]["name"] == "counting"

    x = rng.normal(size=(90, 7))
    meta = json.dumps({"extractor": "counting"})
    np.savez(
        tmp_path / "named7.npz",
        mu=x.mean(axis=0),
        sigma=np.cov(x, rowvar=False),
        n=np.int64(90),
        meta=np.array(meta),
    )
    _features(tmp_path / "feats7.npz", 80, 7, seed=18)
    line = _single_error(
        run_cli(
            "run",
            "--samples",
            tmp_path / "feats7.npz",
            "--reference",
            tmp_path / "named7.npz",
            "--metrics",
            "fid",
        )  # fmt: skip
    )
    assert "named7.npz" in line and "7-d" in line and "12-d" in line, line


# -- (b) geneval stats of a features array ------------------------------------------------------
def test_stats_of_a_features_array(no_extractor, run_cli, tmp_path):
    """The moments of the array, exact to the two-pass float64 values at an offset of 10⁴;
    meta credits the file, names no extractor; the written file serves a run."""
    feats = _features(tmp_path / "feats.npz", 500, 32, seed=19, offset=1e4)
    out = tmp_path / "out.npz"
    res = run_cli("stats", tmp_path / "feats.npz", "-o", out, "--quiet")
    assert res.code == 0, res.err
    mu, sigma = _moments(feats)
    with np.load(out) as written:
        assert set(written.files) == {"mu", "sigma", "n", "meta"}
        np.testing.assert_allclose(written["mu"], mu, rtol=1e-15)
        np.testing.assert_allclose(written["sigma"], sigma, rtol=1e-12, atol=1e-12)
        assert int(written["n"]) == 500
        meta = json.loads(str(written["meta"]))
    assert meta["features_from"] == str(tmp_path / "feats.npz")
    assert not {"extractor", "weights_sha256", "resize", "output"} & set(meta)
    assert meta["geneval_version"] == geneval.__version__

    # --features keeps them, as for extracted features
    kept = geneval.stats(tmp_path / "feats.npz", tmp_path / "kept.npz", features=True)
    with np.load(tmp_path / "kept.npz") as written:
        np.testing.assert_array_equal(written["features"], feats)
    np.testing.assert_array_equal(kept.features, feats)

    # the written file is a statistics file that names no extractor: no extractor either
    other = _features(tmp_path / "other.npz", 400, 32, seed=20, offset=1e4)
    report = geneval.evaluate(tmp_path / "other.npz", out, "fid", device="cpu", cache=False)
    assert report["metrics"]["fid"]["value"] == pytest.approx(
        _fid(*_moments(other), mu, sigma), rel=1e-6
    )
    assert report["config"]["extractors"]["fid"]["name"] is None


@pytest.mark.parametrize(
    ("option", "value"),
    [("--extractor", "inception-v3-fid"), ("--resize", "tf1"), ("--extractor-weights", "w.pth")],
)
def test_stats_of_a_features_array_with_an_extractor_is_exit_2(run_cli, tmp_path, option, value):
    _features(tmp_path / "feats.npz", 20, 8, seed=21)
    out = tmp_path / "out.npz"
    line = _single_error(run_cli("stats", tmp_path / "feats.npz", "-o", out, option, value))
    assert "feats.npz" in line and "'features'" in line and option in line, line
    assert not out.exists()


def test_stats_of_one_feature_vector_is_exit_2(run_cli, tmp_path):
    _features(tmp_path / "one.npz", 1, 8, seed=22)
    line = _single_error(run_cli("stats", tmp_path / "one.npz", "-o", tmp_path / "o.npz"))
    assert "one.npz" in line and "at least 2" in line


# -- (c) logits files -----------------------------------------------------------------------------
def _inception_score(logits: np.ndarray, splits: int, order: np.ndarray | None) -> np.ndarray:
    """Per-split scores in float64 with numpy/scipy: exp of the mean KL(p(y|x) ‖ p(y)), part
    i holding rows ⌊iN/s⌋ … ⌊(i+1)N/s⌋ − 1 of the shuffled logits (Salimans et al. 2016)."""
    x = logits.astype(np.float64)
    if order is not None:
        x = x[order]
    n = x.shape[0]
    scores = []
    for i in range(splits):
        part = x[i * n // splits : (i + 1) * n // splits]
        log_p = log_softmax(part, axis=1)
        p = np.exp(log_p)
        marginal = np.log(p.mean(axis=0))
        scores.append(np.exp((p * (log_p - marginal)).sum(axis=1).mean()))
    return np.array(scores)


def _logits(path: Path, n: int, classes: int, *, seed: int, **extra: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng(seed)
    logits = (rng.normal(size=(n, classes)) * 3).astype(np.float32)
    np.savez(path, logits=logits, **extra)
    return logits


def test_is_from_a_logits_file(no_extractor, tmp_path):
    logits = _logits(tmp_path / "logits.npz", 230, 10, seed=23)
    whole = geneval.evaluate(
        tmp_path / "logits.npz", None, "is", device="cpu", cache=False,
        options={"is": {"splits": 1}},
    )  # fmt: skip
    assert whole["metrics"]["is"]["value"] == pytest.approx(
        float(_inception_score(logits, 1, None)[0]), rel=1e-12
    )
    assert whole["config"]["extractors"]["is"]["name"] is None
    assert whole["config"]["extractors"]["is"]["features_from"] == {
        "samples": f"the logits array of {tmp_path / 'logits.npz'}"
    }
    report = geneval.evaluate(
        tmp_path / "logits.npz", None, "is", device="cpu", cache=False, seed=5
    )
    order = torch.randperm(230, generator=torch.Generator().manual_seed(5)).numpy()
    scores = _inception_score(logits, 10, order)
    assert report["metrics"]["is"]["value"] == pytest.approx(float(scores.mean()), rel=1e-12)
    assert report["metrics"]["is"]["std"] == pytest.approx(float(scores.std()), rel=1e-9)


def test_features_and_logits_in_one_file_run_fid_and_is_without_an_extractor(
    no_extractor, tmp_path
):
    rng = np.random.default_rng(24)
    features = rng.normal(size=(150, 40)).astype(np.float32)
    logits = _logits(tmp_path / "both.npz", 150, 6, seed=25, features=features)
    mu, sigma = _plain(tmp_path / "plain.npz", 200, 40, seed=26)
    report = geneval.evaluate(
        tmp_path / "both.npz", tmp_path / "plain.npz", ["fid", "is"], device="cpu",
        cache=False, options={"is": {"splits": 1}},
    )  # fmt: skip
    assert _warned(report)
    assert report["metrics"]["fid"]["value"] == pytest.approx(
        _fid(*_moments(features), mu, sigma), rel=1e-9
    )
    assert report["metrics"]["is"]["value"] == pytest.approx(
        float(_inception_score(logits, 1, None)[0]), rel=1e-12
    )
    assert report["config"]["extractors"]["is"]["name"] is None
    assert report["config"]["extractors"]["fid"]["name"] is None


def test_logits_with_an_extractor_is_exit_2(run_cli, tmp_path):
    _logits(tmp_path / "logits.npz", 20, 5, seed=27)
    line = _single_error(
        run_cli(
            "run",
            "--samples",
            tmp_path / "logits.npz",
            "--metrics",
            "is",
            "--extractor",
            "inception-v3-fid",
        )  # fmt: skip
    )
    assert "logits.npz" in line and "'logits'" in line and "--extractor" in line


@pytest.mark.parametrize(
    ("logits", "said"),
    [
        (np.zeros(10, np.float32), "(N, C)"),
        (np.zeros((10, 1), np.float32), "C ≥ 2"),
        (np.zeros((10, 3, 2), np.float32), "(N, C)"),
        (np.array([[0.0, 1.0], [np.nan, 2.0]], np.float32), "non-finite"),
        (np.array([[0.0, 1.0], [1e39, 2.0]], np.float64), "non-finite"),
        (np.array([["a", "b"], ["c", "d"]]), "real numbers"),
    ],
)
def test_bad_logits_are_one_line_exit_2(run_cli, tmp_path, logits, said):
    np.savez(tmp_path / "bad.npz", logits=logits)
    line = _single_error(run_cli("run", "--samples", tmp_path / "bad.npz", "--metrics", "is"))
    assert "bad.npz" in line and "logits" in line and said in line, line


def test_logits_and_features_must_agree_on_the_count(run_cli, tmp_path):
    np.savez(
        tmp_path / "mixed.npz",
        logits=np.zeros((10, 3), np.float32),
        features=np.zeros((9, 4), np.float32),
    )
    line = _single_error(run_cli("run", "--samples", tmp_path / "mixed.npz", "--metrics", "is"))
    assert "mixed.npz" in line and "10 logits" in line and "9 features" in line, line


def test_baseline_skips_a_metric_fed_from_a_logits_file(tmp_path):
    """The held-out reference images would be scored through an extractor while the samples'
    logits came from their file: the baseline leaves such a metric out and says why, and
    keeps the metrics whose samples went through the extractor."""
    rng = np.random.default_rng(29)
    _logits(
        tmp_path / "both.npz", 300, 10, seed=30,
        images=rng.integers(0, 256, (300, 8, 8, 1), dtype=np.uint8),
    )  # fmt: skip
    report = geneval.evaluate(
        tmp_path / "both.npz", "digits:test", ["fid", "is"], device="cpu", cache=False,
        baseline=True, options={"is": {"splits": 1}},
    )  # fmt: skip
    section = report["baseline"]
    assert section["skipped"] == {
        "is": "reads features or logits from a file, not from an extractor"
    }
    assert set(section["metrics"]) == {"fid"}
    assert report["config"]["extractors"]["fid"]["name"] == "digits-cnn"
