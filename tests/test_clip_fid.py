"""CLIP-FID: ``fid --extractor clip-vit-b32 --resize clean-fid`` against clean-fid's
``compute_fid(..., model_name="clip_vit_b_32")`` on the same images and the same weights.

clean-fid loads OpenAI's JIT ViT-B/32 through the ``clip`` package from the network. Here its
``clip.load`` is replaced by one returning open_clip's ViT-B/32 (QuickGELU) with seeded random
weights (:mod:`tests.clip_reference`); geneval reads the same weights converted to the
published ``model.safetensors`` layout. Everything else is clean-fid's own code: its folder
reading, ``img_preprocess_clip``, its data set's ``ToTensor() * 255``, ``CLIP_fx``'s
normalisation, ``np.cov`` and ``frechet_distance`` (``scipy.linalg.sqrtm``).

With 12 images a side the covariances are singular (rank 11 in 512 dimensions), where
``sqrtm`` is accurate to about 1e-6 relative; the FID of clean-fid's own features is also
computed exactly in float64 and held to 1e-5.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geneval
from geneval_plugins.extractors import clip as C
from tests.clip_reference import install_fake_openai_clip, open_clip_model, save_weights

N = 12


def _folder(path: Path, seed: int, size: tuple[int, int]) -> Path:
    """``N`` smooth random RGB PNGs of ``size`` (height, width): low-frequency noise plus a
    per-image tint, so that the two folders differ in distribution."""
    rng = np.random.default_rng(seed)
    path.mkdir()
    for i in range(N):
        small = rng.uniform(0, 1, (size[0] // 8, size[1] // 8, 3)) * rng.uniform(0.3, 1, 3)
        image = Image.fromarray((small * 255).astype(np.uint8)).resize(
            (size[1], size[0]), Image.BILINEAR
        )
        noisy = np.asarray(image).astype(np.int16) + rng.integers(-20, 21, (*size, 3))
        Image.fromarray(noisy.clip(0, 255).astype(np.uint8)).save(path / f"{i:03d}.png")
    return path


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("clip-fid")
    model = open_clip_model(C.VIT_B32, seed=5)
    weights = save_weights(model, root / "model.safetensors")
    a = _folder(root / "a", 0, (64, 96))
    b = _folder(root / "b", 1, (80, 80))
    return model, weights, a, b


def test_clip_fid_equals_clean_fid(setup, monkeypatch: pytest.MonkeyPatch) -> None:
    model, weights, a, b = setup
    install_fake_openai_clip(monkeypatch, model)
    import cleanfid.fid as cf

    recorded: list[np.ndarray] = []
    original = cf.get_folder_features

    def record(*args, **kwargs) -> np.ndarray:
        recorded.append(original(*args, **kwargs))
        return recorded[-1]

    monkeypatch.setattr(cf, "get_folder_features", record)
    with torch.no_grad():
        reference = cf.compute_fid(
            str(a),
            str(b),
            mode="clean",
            model_name="clip_vit_b_32",
            num_workers=0,
            batch_size=8,
            device=torch.device("cpu"),
            verbose=False,
        )

    report = geneval.evaluate(
        samples=a,
        reference=b,
        metrics=["fid"],
        extractor="clip-vit-b32",
        extractor_weights=weights,
        resize="clean-fid",
        device="cpu",
        batch_size=8,
    )
    assert report["config"]["extractor"] == "clip-vit-b32"
    assert report["config"]["resize"] == "clean-fid"
    value = report["metrics"]["fid"]["value"]
    assert value == pytest.approx(reference, rel=1e-4)

    # the features themselves: geneval's extractor on the PNGs as geneval reads them
    loaded = C.ClipExtractor(C.VIT_B32).load(device="cpu", weights=weights, resize="clean-fid")
    for folder, theirs in zip((a, b), recorded, strict=True):
        images = np.stack([np.asarray(Image.open(p)) for p in sorted(folder.glob("*.png"))])
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        ours = loaded(x)["image_embeds"].double()
        theirs_t = torch.from_numpy(np.asarray(theirs)).double()
        assert float((ours - theirs_t).norm() / theirs_t.norm()) < 1e-5

    # and the Fréchet distance of clean-fid's own features, in float64 by eigenvalues
    f1, f2 = (np.asarray(f, dtype=np.float64) for f in recorded)
    mu1, mu2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    w = np.linalg.eigvalsh(s1)
    root = (np.linalg.eigh(s1)[1] * np.sqrt(w.clip(0))) @ np.linalg.eigh(s1)[1].T
    trace = np.sqrt(np.linalg.eigvalsh(root @ s2 @ root).clip(0)).sum()
    exact = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * trace
    assert value == pytest.approx(exact, rel=1e-5)
