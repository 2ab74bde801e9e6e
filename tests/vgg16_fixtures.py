"""Random VGG-16 weights in torchvision's published key layout, in a torch hub cache.

The published ``vgg16-397923af.pth`` cannot be downloaded here. The fixture saves torchvision's
own VGG-16 initialisation (seeded) under that file name in a private ``TORCH_HOME``, where
geneval finds it as it would the real file and where torchvision (hence torch-fidelity's
default ``vgg16`` extractor) loads it without downloading.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torchvision

VGG16_FILE = "vgg16-397923af.pth"
WEIGHTS_SEED = 16


def random_vgg16_state_dict(seed: int = WEIGHTS_SEED) -> dict[str, torch.Tensor]:
    """torchvision's VGG-16 initialisation under ``seed`` (the global RNG is left untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = torchvision.models.vgg16(weights=None)
    return model.state_dict()


@pytest.fixture(scope="session", name="vgg16_weights")
def vgg16_weights_fixture(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``…/torch_home/hub/checkpoints/vgg16-397923af.pth`` holding the random weights."""
    checkpoints = tmp_path_factory.mktemp("vgg_torch_home") / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(random_vgg16_state_dict(), checkpoints / VGG16_FILE)
    return checkpoints / VGG16_FILE


@pytest.fixture(name="vgg16_home")
def vgg16_home_fixture(vgg16_weights: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Point ``TORCH_HOME`` at the random VGG-16 hub cache for one test."""
    home = vgg16_weights.parents[2]
    monkeypatch.setenv("TORCH_HOME", str(home))
    monkeypatch.delenv("GENEVAL_VGG16_WEIGHTS", raising=False)
    assert os.path.samefile(torch.hub.get_dir(), home / "hub")
    yield home
