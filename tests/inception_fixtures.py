"""Shared fixtures for the Inception tests: random weights in the published key layout, images.

No Inception weights can be downloaded here, so the tests build a deterministic random state
dict in the key layout of ``pt_inception-2015-12-05-6726825d.pth`` (the layout pytorch-fid's
FID Inception port loads; torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth`` uses
the same keys without ``num_batches_tracked``), save it under both published file names in a
torch hub cache, and point ``TORCH_HOME`` there, so that geneval, pytorch-fid and
torch-fidelity all run the same weights offline.

Random weights are scaled so activations stay O(1) through all 94 convolutions: convolution
weights are He-normal, and each BatchNorm's running mean and variance are set to the actual
per-channel statistics of its convolution's output on calibration images (skimage photos;
variance widened by a quarter of the layer's mean variance), with γ ~ U(0.4, 0.9) and
β ~ N(0, 0.2²); without this the pool features of a random network either vanish or blow up
and the comparisons would not test anything. Such a random network is more sensitive to
round-off than the trained one (a 1e-6 input change moves the pool features by ~5e-5 of
their scale), so agreement at 1e-4 of the scale here is a strict test.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geneval_plugins.extractors.resize import resize_for_inception

PYTORCH_FID_FILE = "pt_inception-2015-12-05-6726825d.pth"
TORCH_FIDELITY_FILE = "weights-inception-2015-12-05-6726825d.pth"
WEIGHTS_SEED = 20151205


def skimage_photos() -> list[np.ndarray]:
    """scikit-image's bundled colour photos as uint8 (H, W, 3) arrays."""
    from skimage import data

    photos = [
        data.astronaut(),
        data.chelsea(),
        data.coffee(),
        data.rocket(),
        data.immunohistochemistry(),
    ]
    photos.append(np.repeat(data.camera()[..., None], 3, axis=2))
    return [np.ascontiguousarray(p[..., :3]) for p in photos]


def photo_crops(count: int, *, seed: int, sizes: tuple[tuple[int, int], ...]) -> list[np.ndarray]:
    """``count`` uint8 RGB crops of the skimage photos, resized (PIL bilinear) to ``sizes`` in turn.

    Crops are random boxes (side 30–100 % of the photo) chosen with ``seed``.
    """
    rng = np.random.default_rng(seed)
    photos = skimage_photos()
    out = []
    for i in range(count):
        photo = photos[rng.integers(len(photos))]
        h, w = photo.shape[:2]
        ch, cw = int(h * rng.uniform(0.3, 1.0)), int(w * rng.uniform(0.3, 1.0))
        top, left = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
        crop = Image.fromarray(photo[top : top + ch, left : left + cw])
        height, width = sizes[i % len(sizes)]
        out.append(np.asarray(crop.resize((width, height), Image.BILINEAR)))
    return out


def to_float_batch(images: list[np.ndarray]) -> torch.Tensor:
    """uint8 (H, W, 3) arrays of one size → float [0, 1] (N, 3, H, W), as ``uint8 / 255``."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0


def write_png_folder(folder: Path, images: list[np.ndarray]) -> Path:
    """Write images as ``000.png``, ``001.png``, … into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:03d}.png")
    return folder


def random_inception_state_dict(seed: int = WEIGHTS_SEED) -> dict[str, torch.Tensor]:
    """A deterministic random state dict in the published FID Inception key layout."""
    from geneval_plugins.extractors.inception.network import ConvBN, empty_network

    gen = torch.Generator().manual_seed(seed)
    model = empty_network().eval()
    convs = [m for m in model.modules() if isinstance(m, ConvBN)]
    with torch.no_grad():
        for module in convs:
            w = module.conv.weight
            fan_in = w.shape[1] * w.shape[2] * w.shape[3]
            w.copy_(torch.randn(w.shape, generator=gen) * (2.0 / fan_in) ** 0.5)
            bn = module.bn
            bn.weight.copy_(0.4 + 0.5 * torch.rand(bn.weight.shape, generator=gen))
            bn.bias.copy_(0.2 * torch.randn(bn.bias.shape, generator=gen))
        fc = model.fc
        fc.weight.copy_(torch.randn(fc.weight.shape, generator=gen) * (4.0 / fc.in_features) ** 0.5)
        fc.bias.copy_(0.5 * torch.randn(fc.bias.shape, generator=gen))

    # Calibrate each BN on the photos: its running stats become its input's channel moments.
    calib = to_float_batch(photo_crops(2, seed=seed, sizes=((160, 160),)))
    calib = resize_for_inception(calib, "pytorch-fid")

    def calibrate(module: ConvBN):
        def hook(_conv: torch.nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
            var = output.var(dim=(0, 2, 3))
            module.bn.running_mean.copy_(output.mean(dim=(0, 2, 3)))
            module.bn.running_var.copy_(var + 0.25 * var.mean())

        return hook

    handles = [m.conv.register_forward_hook(calibrate(m)) for m in convs]
    with torch.no_grad():
        model.pool_features(calib)
    for h in handles:
        h.remove()
    return {
        k: v.clone() for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }


@pytest.fixture(scope="session", name="inception_weights")
def inception_weights_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A torch hub cache holding the random weights under both published file names.

    Returns the path of ``pt_inception-2015-12-05-6726825d.pth``; its ``parents[2]`` is the
    ``TORCH_HOME`` that :func:`torch_home` points the reference tools at.
    """
    home = tmp_path_factory.mktemp("torch_home")
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    state = random_inception_state_dict()
    torch.save(state, checkpoints / PYTORCH_FID_FILE)
    os.link(checkpoints / PYTORCH_FID_FILE, checkpoints / TORCH_FIDELITY_FILE)
    return checkpoints / PYTORCH_FID_FILE


@pytest.fixture(name="torch_home")
def torch_home_fixture(inception_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point ``TORCH_HOME`` at the random-weights hub cache for one test."""
    home = inception_weights.parents[2]
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("GENEVAL_INCEPTION_WEIGHTS", raising=False)
    yield home


@pytest.fixture(scope="session", name="png_folders")
def png_folders_fixture(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two PNG folders of skimage photo crops (24 images each, 80×80 and 120×96)."""
    root = tmp_path_factory.mktemp("folders")
    first = write_png_folder(root / "samples", photo_crops(24, seed=1, sizes=((80, 80),)))
    second = write_png_folder(root / "reference", photo_crops(24, seed=2, sizes=((120, 96),)))
    return first, second
