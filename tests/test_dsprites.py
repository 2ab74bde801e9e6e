"""The procedural ``dsprites`` dataset: geometry, factors, splits and the factor-dataset API."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geneval.api import Dataset, FactorDataset
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.datasets import dsprites
from geneval_plugins.datasets.dsprites import DSpritesDataset, parse_split, render


def _reference_image(shape: int, scale: int, orientation: int, x: int, y: int) -> np.ndarray:
    """The documented geometry evaluated on the whole 64×64 grid in float64, pixel by pixel."""
    radius = 10.0 * (0.5 + 0.1 * scale)
    theta = 2 * math.pi * orientation / 39
    cx, cy = 14 + 36 * x / 31, 14 + 36 * y / 31
    image = np.zeros((64, 64))
    for row in range(64):
        for col in range(64):
            dx, dy = col + 0.5 - cx, row + 0.5 - cy
            u = (math.cos(theta) * dx + math.sin(theta) * dy) / radius
            v = (math.cos(theta) * dy - math.sin(theta) * dx) / radius
            if shape == 0:
                inside = max(abs(u), abs(v)) <= 1
            elif shape == 1:
                inside = u * u + 4 * v * v <= 1
            else:
                hx, hy = 1.2 * u, 0.1 - 1.2 * v
                inside = (hx * hx + hy * hy - 1) ** 3 - hx * hx * hy**3 <= 0
            image[row, col] = inside
    return image


def test_rendering_matches_the_documented_geometry() -> None:
    dataset = DSpritesDataset()
    factors = dataset.sample_factors(40, torch.Generator().manual_seed(0))
    # Include the extremes: largest rotated square at the corners.
    factors = torch.cat([factors, torch.tensor([[0, 5, 5, 0, 0], [0, 5, 15, 31, 31]])])
    images = render(factors).numpy()
    reference = np.stack([_reference_image(*map(int, f)) for f in factors])
    # float32 and float64 may disagree on a pixel centre lying on the outline, nowhere else.
    assert np.mean(images[:, 0] != reference) < 1e-4
    assert set(np.unique(images)) <= {0.0, 1.0}


def test_factors_move_the_sprite_as_documented() -> None:
    base = torch.tensor([[1, 3, 0, 10, 10]])
    moved = base.clone()
    moved[0, 3] = 11
    a, b = render(torch.cat([base, moved]))[:, 0]
    cols = torch.arange(64, dtype=torch.float64) + 0.5
    centroid = lambda im: (im.double().sum(0) * cols).sum() / im.sum()  # noqa: E731
    assert float(centroid(b) - centroid(a)) == pytest.approx(36 / 31, abs=0.05)
    areas = render(torch.tensor([[0, s, 0, 16, 16] for s in range(6)]))[:, 0].sum(dim=(1, 2))
    assert torch.all(areas[1:] > areas[:-1])  # scale grows the sprite
    # The three shapes differ at the same pose; a half turn changes the heart only.
    shapes = render(torch.tensor([[s, 5, 0, 16, 16] for s in range(3)]))
    assert len({tuple(im.flatten().tolist()) for im in shapes}) == 3


def test_splits() -> None:
    dataset = DSpritesDataset()
    train = dataset.load("train")
    assert train.images.shape == (11_520, 1, 64, 64) and train.images.dtype == torch.float32
    assert train.factors.shape == (11_520, 5) and train.factors.dtype == torch.int64
    assert [len(torch.unique(c)) for c in train.factors.T] == [3, 6, 10, 8, 8]
    assert torch.equal(train.labels, train.factors[:, 0])
    assert torch.equal(train.factors[:, 2].unique(), torch.arange(0, 40, 4))
    test = dataset.load("test,n=500")
    assert test.images.shape == (500, 1, 64, 64)
    assert torch.equal(test.factors, dataset.load("test,n=500").factors)  # deterministic
    fixed = dataset.load("grid,shape=2,orientation=0,scale=5")
    assert fixed.factors.shape == (32 * 32, 5)
    assert torch.all(fixed.factors[:, :3] == torch.tensor([2, 5, 0]))
    assert torch.equal(fixed.images, render(fixed.factors))
    strided = dataset.load("train,x/2,shape=1")
    assert strided.factors.shape[0] == 6 * 10 * 16 * 8


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ("validation", "has no split 'validation'"),
        ("grid", "737280 images"),
        ("train,colour=1", "unknown factor 'colour'"),
        ("train,shape=3", "shape has values 0..2"),
        ("train,x/0", "K ≥ 1"),
        ("train,n=10", "applies to test only"),
        ("test,x", "cannot read 'x'"),
    ],
)
def test_bad_splits_are_input_errors(split: str, message: str) -> None:
    with pytest.raises(InputError, match=message):
        DSpritesDataset().load(split)


def test_factor_dataset_api() -> None:
    dataset = get_registry().dataset("dsprites")
    assert isinstance(dataset, Dataset) and isinstance(dataset, FactorDataset)
    assert dataset.factor_names == ("shape", "scale", "orientation", "x", "y")
    assert dataset.factor_sizes == (3, 6, 40, 32, 32)
    factors = dataset.sample_factors(20_000, torch.Generator().manual_seed(1))
    assert factors.dtype == torch.int64 and factors.shape == (20_000, 5)
    for column, size in zip(factors.T, dataset.factor_sizes, strict=True):
        counts = torch.bincount(column, minlength=size)
        assert counts.numel() == size and counts.min() > 0.7 * 20_000 / size
    images = dataset.images_for_factors(factors[:8])
    assert images.shape == (8, 1, 64, 64)
    assert torch.equal(images, render(factors[:8]))
    with pytest.raises(InputError, match="out of range"):
        dataset.images_for_factors(torch.tensor([[0, 0, 40, 0, 0]]))
    with pytest.raises(InputError, match=r"\(n, 5\)"):
        dataset.images_for_factors(torch.zeros(3, 4, dtype=torch.long))


def test_parse_split_keeps_allowed_values() -> None:
    spec = parse_split("test,n=7,scale/2,y=3")
    assert spec.n == 7 and spec.allowed[1].tolist() == [0, 2, 4] and spec.allowed[4].tolist() == [3]
    assert dsprites.split_factors(spec).shape == (7, 5)
