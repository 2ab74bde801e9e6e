"""``cmmd``: equal to the numpy transcription of google-research/cmmd ``distance.py``, closed
forms, the CLIP-extractor rule and the metric through the runner."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from geneval.errors import InputError
from geneval.plugin import hookimpl
from geneval_plugins.metrics.clip_space import check_clip_extractor, is_clip_extractor
from geneval_plugins.metrics.sample_quality.cmmd import (
    DEFAULT_EXTRACTOR,
    SERIES_BOUND,
    CLIPMaximumMeanDiscrepancy,
    cmmd,
    mmd_rbf,
)
from tests.cmmd_reference import mmd as reference_mmd
from tests.stub_inputs import StubInputs, compute, metric_options


def _unit(rng: np.random.Generator, n: int, d: int, shift: float = 0.0) -> np.ndarray:
    x = rng.standard_normal((n, d)) + shift
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.mark.parametrize(
    ("n", "m", "d", "block"),
    [(300, 200, 64, 64), (257, 257, 32, 100), (40, 500, 768, 128), (1, 3, 16, 1024)],
)
def test_equals_the_reference_on_normalised_embeddings(n: int, m: int, d: int, block: int):
    rng = np.random.default_rng(n + m + d)
    x, y = _unit(rng, n, d), _unit(rng, m, d, shift=0.2)
    expected = reference_mmd(x, y)
    assert expected > 0
    assert mmd_rbf(x, y, block=block) == pytest.approx(expected, rel=1e-9, abs=1e-9)
    # the same number whatever the tiling (one tile, many, ragged edges)
    assert mmd_rbf(x, y, block=7) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_series_and_direct_routes_agree_at_the_bound():
    # norms just inside and just outside the series route's bound: both equal the reference
    rng = np.random.default_rng(3)
    inside = math.sqrt(SERIES_BOUND * 100.0) * 0.999  # |u| = ‖a‖‖b‖/σ² just below the bound
    for scale in (inside, inside * 1.01):
        x, y = scale * _unit(rng, 150, 48), scale * _unit(rng, 120, 48, 0.5)
        assert mmd_rbf(x, y, block=64) == pytest.approx(reference_mmd(x, y), rel=1e-9, abs=1e-9)


def test_equals_the_reference_on_unnormalised_embeddings():
    rng = np.random.default_rng(1)
    x = 3.0 * rng.standard_normal((120, 24))
    y = 3.0 * rng.standard_normal((90, 24)) + 1.0
    expected = reference_mmd(x, y)
    assert mmd_rbf(x, y, block=50) == pytest.approx(expected, rel=1e-9)


def test_cmmd_normalises_first():
    rng = np.random.default_rng(2)
    x, y = _unit(rng, 80, 32), _unit(rng, 60, 32, shift=0.5)
    lengths_x = rng.uniform(0.1, 30.0, size=(80, 1))
    lengths_y = rng.uniform(0.1, 30.0, size=(60, 1))
    expected = reference_mmd(x, y)
    assert cmmd(x * lengths_x, y * lengths_y) == pytest.approx(expected, rel=1e-9, abs=1e-9)


def test_closed_forms():
    # one point each: 1000 (k(a,a) + k(b,b) − 2k(a,b)) = 2000 (1 − exp(−‖a − b‖² / 200))
    a = np.array([[1.0, 0.0, 0.0]])
    b = np.array([[0.0, 1.0, 0.0]])
    assert cmmd(a, b) == pytest.approx(2000.0 * (1.0 - math.exp(-2.0 / 200.0)), rel=1e-11)
    # a set with itself, and a set with a reordered copy, is 0
    rng = np.random.default_rng(4)
    x = _unit(rng, 200, 16)
    assert abs(cmmd(x, x)) < 1e-12
    assert abs(cmmd(x, x[::-1].copy())) < 1e-12
    # two points vs their mean direction: the biased estimator's closed form
    p, q = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    m = (p + q) / np.linalg.norm(p + q)
    k = lambda u, v: math.exp(-np.sum((u - v) ** 2) / 200.0)  # noqa: E731
    expected = 1000.0 * ((2 + 2 * k(p, q)) / 4 + 1.0 - 2 * (k(p, m) + k(q, m)) / 2)
    assert cmmd(np.stack([p, q]), m[None]) == pytest.approx(expected, rel=1e-10)


def test_float32_embeddings_are_close_to_float64():
    rng = np.random.default_rng(5)
    x, y = _unit(rng, 300, 128), _unit(rng, 300, 128, shift=0.1)
    expected = reference_mmd(x, y)
    got = cmmd(x.astype(np.float32), y.astype(np.float32))
    assert got == pytest.approx(expected, rel=1e-5)


def test_bad_embeddings_are_input_errors():
    rng = np.random.default_rng(6)
    x = _unit(rng, 10, 8)
    with pytest.raises(InputError, match="different widths"):
        cmmd(x, _unit(rng, 10, 9))
    zero = x.copy()
    zero[3] = 0.0
    with pytest.raises(InputError, match="row 3"):
        cmmd(zero, x)
    nan = x.copy()
    nan[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        cmmd(x, nan)
    with pytest.raises(InputError, match=r"\(n, d\)"):
        cmmd(x[0], x)


def test_metric_on_stub_inputs():
    rng = np.random.default_rng(7)
    raw_s = rng.standard_normal((120, 32)).astype(np.float32) * 4
    raw_r = rng.standard_normal((90, 32)).astype(np.float32) * 4 + 0.5
    metric = CLIPMaximumMeanDiscrepancy()
    inputs = StubInputs(
        {
            ("features", "samples"): torch.from_numpy(raw_s),
            ("features", "reference"): torch.from_numpy(raw_r),
        }
    )
    result = compute(metric, inputs)
    s = raw_s.astype(np.float64)
    r = raw_r.astype(np.float64)
    expected = reference_mmd(
        s / np.linalg.norm(s, axis=1, keepdims=True), r / np.linalg.norm(r, axis=1, keepdims=True)
    )
    assert result["value"] == pytest.approx(expected, rel=1e-9)
    assert result["n_samples"] == 120 and result["n_reference"] == 90
    assert result["sigma"] == 10.0 and result["scale"] == 1000.0
    assert result["extractor"] == DEFAULT_EXTRACTOR
    assert set(result) - {"value", "extractor"} == set(metric.fields)


def test_needs_require_the_clip_extractor():
    metric = CLIPMaximumMeanDiscrepancy()
    needs = metric.needs_for(metric_options(metric))
    assert {(n.kind, n.source) for n in needs} == {
        ("features", "samples"),
        ("features", "reference"),
    }
    assert all(n.extractor == "clip-vit-l14-336" and n.extractor_required for n in needs)
    other = metric.needs_for(metric_options(metric, extractor="clip-vit-b32"))
    assert all(n.extractor == "clip-vit-b32" and n.extractor_required for n in other)
    with pytest.raises(InputError, match="'inception-v3-fid' is not a CLIP extractor"):
        metric.needs_for(metric_options(metric, extractor="inception-v3-fid"))


class _Pooled:
    """A stand-in CLIP extractor: 2×2 average pooling of each RGB channel, plus one."""

    outputs = {"embedding": 12}
    convention = "pool-2x2"
    weights_sha256 = "0" * 64

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        return {"embedding": F.adaptive_avg_pool2d(images, 2).flatten(1) + 1.0}


class _PooledExtractor:
    outputs = _Pooled.outputs
    feature_output = "embedding"
    logits_output = None
    resize_options = ()

    def __init__(self, name: str, text_encoder: bool = False) -> None:
        self.name = name
        self.text_encoder = text_encoder

    def load(self, *, device, weights=None, resize=None):  # noqa: ANN001, ANN201
        return _Pooled(self.name)


class _Plugin:
    __name__ = "cmmd_test_extractors"

    @hookimpl
    def geneval_register_extractors(self, register) -> None:  # noqa: ANN001
        register(_PooledExtractor("clip-pooled"))
        register(_PooledExtractor("open-pooled", text_encoder=True))
        register(_PooledExtractor("plain-pooled"))


def _pooled(images: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    return (F.adaptive_avg_pool2d(t, 2).flatten(1) + 1.0).double().numpy()


def test_extractor_rule_is_the_clip_prefix(add_plugin):
    add_plugin(_Plugin())
    assert is_clip_extractor("clip-anything")
    assert not is_clip_extractor("open-pooled")
    assert not is_clip_extractor("plain-pooled")
    assert check_clip_extractor("cmmd", "clip-pooled") == "clip-pooled"
    with pytest.raises(InputError, match="extractor 'open-pooled' is not a CLIP extractor"):
        check_clip_extractor("cmmd", "open-pooled")


def test_run_end_to_end_and_bad_extractor(add_plugin, run_cli, tmp_path: Path):
    add_plugin(_Plugin())
    rng = np.random.default_rng(8)
    samples = rng.integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    reference = rng.integers(0, 200, size=(50, 8, 8, 3), dtype=np.uint8)
    np.save(tmp_path / "s.npy", samples)
    np.save(tmp_path / "r.npy", reference)
    common = ["run", "--samples", tmp_path / "s.npy", "--reference", tmp_path / "r.npy"]
    common += ["--metrics", "cmmd", "--device", "cpu"]
    report = tmp_path / "report.json"
    result = run_cli(*common, "--opt", "cmmd.extractor=clip-pooled", "--json", report)
    assert result.code == 0, result.err
    got = json.loads(report.read_text())["metrics"]["cmmd"]
    a, b = _pooled(samples), _pooled(reference)
    a /= np.linalg.norm(a, axis=1, keepdims=True)
    b /= np.linalg.norm(b, axis=1, keepdims=True)
    # float32 features from the extractor: the reference on the same float32 rows
    assert got["value"] == pytest.approx(reference_mmd(a, b), rel=1e-5)
    assert got["extractor"] == "clip-pooled" and got["n_samples"] == 40
    # --extractor does not replace the required CLIP extractor
    bad = run_cli(*common, "--opt", "cmmd.extractor=plain-pooled", "--json", tmp_path / "b.json")
    assert bad.code == 2
    assert len(bad.err_lines) == 1
    assert "plain-pooled" in bad.err_lines[0] and "not a CLIP extractor" in bad.err_lines[0]
    assert not (tmp_path / "b.json").exists()
