"""``--precision``: float32 by default (TF32 switched off on CUDA), bf16 and TF32 on request,
with the deviation from float32 measured on the run's own images."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import geneval
from geneval import precision
from geneval.precision import (
    PROBE_IMAGES,
    _tf32_switches,
    precision_mode,
    with_precision,
)
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.extractors.digits_cnn import DigitsCNNExtractor


def test_bf16_reports_its_deviation_measured_independently():
    samples = DigitsDataset().load("test").images  # not served by shipped statistics
    report = geneval.evaluate(
        samples, "digits:train", ["fid"], precision="bf16", cache=False, batch_size=64
    )
    assert report["config"]["precision"] == "bf16"
    found = report["precision"]["extractors"]["digits-cnn"]
    assert found["probe_images"] == PROBE_IMAGES
    # the same first 256 samples through the network, bf16 autocast against float32
    images = DigitsDataset().load("test").images[:PROBE_IMAGES]
    net = DigitsCNNExtractor().load(device=torch.device("cpu"))
    reference = torch.cat([net(images[i : i + 64])["features"] for i in range(0, 256, 64)])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = torch.cat(
            [net(images[i : i + 64])["features"].float() for i in range(0, 256, 64)]
        )
    diff = (reduced.double() - reference.double()).abs()
    max_rel = float(diff.max() / reference.abs().max())
    rms_rel = float(diff.square().sum().sqrt() / reference.double().square().sum().sqrt())
    assert found["outputs"]["features"]["max_rel"] == pytest.approx(max_rel, rel=1e-12)
    assert found["outputs"]["features"]["rms_rel"] == pytest.approx(rms_rel, rel=1e-9)
    assert 1e-4 < max_rel < 0.1  # bf16 keeps 8 bits of mantissa
    assert any(w.startswith("--precision bf16: extractor digits-cnn") for w in report["warnings"])
    exact = geneval.evaluate(samples, "digits:train", ["fid"], cache=False)
    assert "precision" not in exact and exact["config"]["precision"] == "fp32"
    assert report["metrics"]["fid"]["value"] == pytest.approx(
        exact["metrics"]["fid"]["value"], rel=0.05
    )
    assert report["metrics"]["fid"]["value"] != exact["metrics"]["fid"]["value"]


def test_fp32_is_the_plain_extractor_bit_for_bit():
    net = DigitsCNNExtractor().load(device=torch.device("cpu"))
    wrapped = with_precision(net, "fp32", torch.device("cpu"))
    images = DigitsDataset().load("test").images[:50]
    assert wrapped.name == "digits-cnn" and wrapped.convention == net.convention
    assert wrapped.weights_sha256 == net.weights_sha256 and wrapped.network is net.network
    for key, value in net(images).items():
        assert torch.equal(wrapped(images)[key], value)


def test_tf32_needs_a_gpu(run_cli):
    res = run_cli("run", "--samples", "digits:test", "--metrics", "fid", "--precision", "tf32")
    assert res.code == 2 and len(res.err_lines) == 1 and "CUDA" in res.err
    res = run_cli("run", "--samples", "digits:test", "--metrics", "fid", "--precision", "fp16")
    assert res.code == 2 and len(res.err_lines) == 1


def test_cuda_modes_switch_tf32_and_restore_it():
    """The switches are plain settings: checked here without a GPU."""
    switches = _tf32_switches()
    before = [getattr(obj, attr) for obj, attr, _ in switches]
    cuda = torch.device("cuda")
    with precision_mode("fp32", cuda):
        assert [getattr(o, a) for o, a, _ in switches] == [
            "ieee" if isinstance(allow, str) else False for _, _, allow in switches
        ]
    with precision_mode("tf32", cuda):
        assert [getattr(o, a) for o, a, _ in switches] == [allow for _, _, allow in switches]
    assert [getattr(obj, attr) for obj, attr, _ in switches] == before


def test_precision_is_part_of_the_cache_key(run_cli, tmp_path):
    samples = tmp_path / "test.npy"
    np.save(samples, DigitsDataset().load("test").images.numpy())
    args = ["run", "--samples", samples, "--reference", "digits:train", "--metrics", "fid"]
    args += ["--quiet"]
    for mode, status in (("fp32", "miss"), ("bf16", "miss"), ("bf16", "hit"), ("fp32", "hit")):
        out = tmp_path / f"{mode}-{status}.json"
        assert run_cli(*args, "--precision", mode, "--json", out).code == 0
        assert json.loads(out.read_text())["inputs"]["samples"]["cache"] == {"digits-cnn": status}


class _FakeCompile:
    """Stands in for ``torch.compile``: the 'compiled' call is the eager one, scaled by
    ``1 + error`` (or raising), and counts its calls."""

    def __init__(self, error: float | None) -> None:
        self.error, self.calls = error, 0

    def __call__(self, fn, **kwargs):
        def compiled(images):
            self.calls += 1
            if self.error is None:
                raise RuntimeError("no compiler here")
            return {k: v * (1 + self.error) for k, v in fn(images).items()}

        return compiled


@pytest.mark.parametrize(("error", "used"), [(1e-7, True), (1e-3, False), (None, False)])
def test_compiled_extractors_are_used_only_where_they_match_eager(monkeypatch, error, used):
    fake = _FakeCompile(error)
    monkeypatch.setattr(precision.torch, "compile", fake)
    samples = DigitsDataset().load("test").images[:150]
    eager = geneval.evaluate(samples, "digits:train", ["fid", "is"], cache=False, batch_size=64)
    compiled = geneval.evaluate(
        samples, "digits:train", ["fid", "is"], cache=False, batch_size=64, compile=True
    )
    assert compiled["config"]["compile"] is True
    notes = [w for w in compiled["warnings"] if w.startswith("--compile")]
    if used:  # shapes (64, ...) and (22, ...) each checked once, then the compiled call runs
        assert fake.calls == 3 and not notes
        assert compiled["metrics"]["fid"]["value"] == pytest.approx(
            eager["metrics"]["fid"]["value"], rel=1e-5
        )
    else:
        assert notes and ("deviates" in notes[0] or "compiling failed" in notes[0])
        assert compiled["metrics"] == eager["metrics"]  # every batch ran eagerly


@pytest.mark.slow
def test_torch_compile_on_the_cpu_stays_within_tolerance():
    samples = DigitsDataset().load("test").images
    eager = geneval.evaluate(samples, "digits:train", ["fid", "kid"], cache=False)
    compiled = geneval.evaluate(samples, "digits:train", ["fid", "kid"], cache=False, compile=True)
    assert not [w for w in compiled["warnings"] if w.startswith("--compile")]
    assert compiled["metrics"]["fid"]["value"] == pytest.approx(
        eager["metrics"]["fid"]["value"], rel=1e-5
    )
