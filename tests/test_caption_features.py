"""The ``caption_features`` input kind: an extractor's text embedding of a source's captions,
which come from an ``.npz`` ``captions`` array, a folder's ``NAME.txt`` sidecars or a
text-to-image model's prompts."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geneval
from geneval.errors import InputError
from geneval.plugin import Need, hookimpl

DIM = 4


def _embed(text: str) -> list[float]:
    """A deterministic text embedding: letter counts of a, b, c and the length."""
    return [text.count("a"), text.count("b"), text.count("c"), len(text)]


class _TextLoaded:
    name = "toy-text"
    outputs = {"feat": 3}
    convention = "none"
    weights_sha256 = "0" * 64

    def __init__(self, calls: list[int]) -> None:
        self.calls = calls

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"feat": images.mean(dim=(2, 3))[:, :3].float()}

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        self.calls.append(len(texts))
        return torch.tensor([_embed(t) for t in texts], dtype=torch.float32)


class _TextExtractor:
    name = "toy-text"
    outputs = _TextLoaded.outputs
    feature_output = "feat"
    logits_output = None
    resize_options = ()
    text_encoder = True

    def __init__(self) -> None:
        self.calls: list[int] = []

    def load(self, *, device, weights=None, resize=None):
        return _TextLoaded(self.calls)


class _ImageOnly(_TextExtractor):
    name = "toy-image"
    text_encoder = False


class _CaptionSum:
    """Sum of the caption embeddings (a closed form of the toy embedding)."""

    name = "caption-sum"
    interpretation = "Sum of the caption embeddings."
    higher_is_better = False
    needs = (
        Need("features", "samples", extractor="toy-text", extractor_required=True),
        Need("caption_features", "samples", extractor="toy-text", extractor_required=True),
    )
    options: dict = {}
    fields = {"rows": "embedding rows"}
    uncertainty = None

    def compute(self, inputs):
        text = inputs.caption_features("samples")
        assert text.shape[0] == inputs.features("samples").shape[0]
        return {"value": float(text.double().sum()), "rows": int(text.shape[0])}


class _CaptionSumOther(_CaptionSum):
    name = "caption-sum-image-only"
    needs = (Need("caption_features", "samples", extractor="toy-image", extractor_required=True),)


class _Plugins:
    __name__ = "caption_feature_plugins"

    def __init__(self) -> None:
        self.text = _TextExtractor()

    @hookimpl
    def geneval_register_extractors(self, register):
        register(self.text)
        register(_ImageOnly())

    @hookimpl
    def geneval_register_metrics(self, register):
        register(_CaptionSum())
        register(_CaptionSumOther())


@pytest.fixture
def plugins(add_plugin) -> _Plugins:
    plugins = _Plugins()
    add_plugin(plugins)
    return plugins


CAPTIONS = ["a cab", "abba", "c", "banana bread", "cc cab"]


def _expected(captions: list[str]) -> float:
    return float(np.sum([_embed(c) for c in captions]))


def _images(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)


def test_npz_captions_are_embedded_once(plugins, tmp_path: Path):
    np.savez(tmp_path / "s.npz", images=_images(5), captions=np.array(CAPTIONS))
    report = geneval.evaluate(str(tmp_path / "s.npz"), None, ["caption-sum"], device="cpu")
    assert report["metrics"]["caption-sum"]["value"] == _expected(CAPTIONS)
    assert plugins.text.calls == [5]
    assert report["config"]["extractors"]["caption-sum"]["name"] == "toy-text"


def test_folder_sidecar_captions(plugins, tmp_path: Path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, (image, caption) in enumerate(zip(_images(5), CAPTIONS, strict=True)):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
        (folder / f"{i:03d}.txt").write_text(f"  {caption}\n", encoding="utf-8")
    report = geneval.evaluate(str(folder), None, ["caption-sum"], device="cpu")
    assert report["metrics"]["caption-sum"]["value"] == _expected(CAPTIONS)
    # one sidecar missing: the run that needs captions names the image without one
    (folder / "003.txt").unlink()
    with pytest.raises(InputError, match=r"4 of 5 images have a caption file, 003.png has none"):
        geneval.evaluate(str(folder), None, ["caption-sum"], device="cpu")
    (folder / "003.txt").write_bytes(b"\xff\xfe bad")
    with pytest.raises(InputError, match=r"caption file .*003.txt.* is not UTF-8"):
        geneval.evaluate(str(folder), None, ["caption-sum"], device="cpu")


def test_missing_or_mismatched_captions_are_one_line(plugins, tmp_path: Path, run_cli):
    np.save(tmp_path / "s.npy", _images(5))
    res = run_cli("run", "--samples", tmp_path / "s.npy", "--metrics", "caption-sum", "--quiet")
    assert res.code == 2 and len(res.err_lines) == 1
    assert "carry no captions" in res.err and "--prompts FILE" in res.err
    assert "'captions' array" in res.err and "NAME.txt" in res.err
    np.savez(tmp_path / "bad.npz", images=_images(5), captions=np.array(CAPTIONS[:4]))
    res = run_cli("run", "--samples", tmp_path / "bad.npz", "--metrics", "caption-sum", "--quiet")
    assert res.code == 2 and len(res.err_lines) == 1 and "bad.npz" in res.err


def test_an_extractor_without_a_text_tower_is_refused(plugins, tmp_path: Path, run_cli):
    np.savez(tmp_path / "s.npz", images=_images(5), captions=np.array(CAPTIONS))
    res = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--metrics", "caption-sum-image-only", "--quiet"
    )
    assert res.code == 2 and len(res.err_lines) == 1
    assert "extractor toy-image has no text encoder" in res.err
