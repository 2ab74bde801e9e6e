"""``clip_score`` and ``cmmd`` end to end: a CLIP extractor with random weights in the published
layout (saved as safetensors), captions from an ``.npz``, each number equal to its reference
computed on the same extractor's embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from geneval.plugin import hookimpl
from geneval_plugins.extractors import clip as C
from geneval_plugins.metrics.text_alignment.clip_score import clip_score
from tests.clip_reference import TINY, open_clip_model, save_weights, write_tokenizer_files
from tests.cmmd_reference import mmd

CAPTIONS = ["a red square", "two cats", "a photo of the sea at night", "x", "blue", "a dog"]


class _TinyClip:
    __name__ = "tiny_clip_plugin"

    @hookimpl
    def geneval_register_extractors(self, register):
        register(C.ClipExtractor(TINY))


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("clip-tiny")
    path = save_weights(open_clip_model(TINY, seed=5), folder / "model.safetensors")
    write_tokenizer_files(folder)
    return path


def test_clip_score_and_cmmd_run_equal_their_references(add_plugin, run_cli, weights, tmp_path):
    add_plugin(_TinyClip())
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 256, (6, 40, 56, 3), dtype=np.uint8)
    reference = rng.integers(0, 256, (7, 48, 48, 3), dtype=np.uint8)
    np.savez(tmp_path / "s.npz", images=samples, captions=np.array(CAPTIONS))
    np.save(tmp_path / "r.npy", reference)
    out = tmp_path / "run.json"
    res = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--reference", tmp_path / "r.npy",
        "--metrics", "clip_score,cmmd", "--opt", "clip_score.extractor=clip-tiny",
        "--opt", "cmmd.extractor=clip-tiny", "--extractor-weights", f"clip-tiny={weights}",
        "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    loaded = C.ClipExtractor(TINY).load(device=torch.device("cpu"), weights=weights)

    def embed(images: np.ndarray) -> torch.Tensor:
        return loaded(torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255)["image_embeds"]

    image_emb, reference_emb = embed(samples), embed(reference)
    text_emb = loaded.encode_text(CAPTIONS)
    expected = clip_score(image_emb, text_emb, w=100.0)
    got = report["metrics"]["clip_score"]
    assert got["value"] == pytest.approx(expected.value, rel=1e-5)
    assert got["n"] == 6 and got["model"] == "clip-tiny" and got["scale"].startswith("w = 100")
    # torchmetrics' formula, where no cosine is negative: 100 · mean cos
    cos = torch.nn.functional.cosine_similarity(image_emb.double(), text_emb.double())
    if bool((cos > 0).all()):
        assert got["value"] == pytest.approx(100 * float(cos.mean()), rel=1e-5)

    def unit(x: torch.Tensor) -> np.ndarray:
        x = x.double().numpy()
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    reference_cmmd = float(mmd(unit(image_emb), unit(reference_emb)))
    assert report["metrics"]["cmmd"]["value"] == pytest.approx(reference_cmmd, rel=1e-4)
    assert report["config"]["extractors"]["cmmd"]["name"] == "clip-tiny"
    assert report["config"]["extractors"]["clip_score"]["resize"] == "openai"

    # captions that do not pair with the images: one line, exit 2
    np.savez(tmp_path / "bad.npz", images=samples, captions=np.array(CAPTIONS[:5]))
    res = run_cli(
        "run", "--samples", tmp_path / "bad.npz", "--metrics", "clip_score",
        "--opt", "clip_score.extractor=clip-tiny", "--extractor-weights", f"clip-tiny={weights}",
        "--quiet",
    )  # fmt: skip
    assert res.code == 2 and len(res.err_lines) == 1 and "bad.npz" in res.err
    # a non-CLIP extractor for cmmd: one line, exit 2, before anything loads
    res = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--reference", tmp_path / "r.npy",
        "--metrics", "cmmd", "--opt", "cmmd.extractor=digits-cnn", "--quiet",
    )  # fmt: skip
    assert res.code == 2 and len(res.err_lines) == 1
    assert "'digits-cnn' is not a CLIP extractor" in res.err
