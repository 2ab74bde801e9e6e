"""Image grids and blocked nearest-neighbour search, against PIL and scikit-learn."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.neighbors import NearestNeighbors

from geneval.report.grids import GAP, GAP_COLOUR, MAX_CELL, cell_scale, image_grid, png_bytes
from geneval.report.neighbours import nearest_neighbours, typical_distance


@pytest.mark.parametrize("block_elements", [7, 1000, 16 * 1024 * 1024])
def test_nearest_neighbours_match_scikit_learn(block_elements):
    """Blocks of any size give scikit-learn's exact (float64, brute force) neighbours."""
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(500, 16)).astype(np.float32)
    queries = rng.normal(size=(9, 16)).astype(np.float32)
    distances, indices = nearest_neighbours(
        torch.from_numpy(queries), torch.from_numpy(reference), 5, block_elements=block_elements
    )
    exact = NearestNeighbors(n_neighbors=5, algorithm="brute").fit(reference.astype(np.float64))
    ref_d, ref_i = exact.kneighbors(queries.astype(np.float64))
    np.testing.assert_array_equal(indices.numpy(), ref_i)
    np.testing.assert_allclose(distances.numpy(), ref_d, rtol=1e-4)


def test_nearest_neighbours_k_larger_than_the_reference():
    d, i = nearest_neighbours(torch.zeros(2, 3), torch.ones(3, 3), 10)
    assert d.shape == (2, 3) and sorted(i[0].tolist()) == [0, 1, 2]


def test_typical_distance_is_the_median_nearest_other_row():
    rng = np.random.default_rng(1)
    reference = rng.normal(size=(300, 8)).astype(np.float32)
    exact = NearestNeighbors(n_neighbors=2, algorithm="brute").fit(reference.astype(np.float64))
    d, _ = exact.kneighbors(reference.astype(np.float64))
    value = typical_distance(torch.from_numpy(reference), sample=300)
    assert value == pytest.approx(float(np.median(d[:, 1])), rel=1e-4)
    assert typical_distance(torch.zeros(1, 4)) is None


def test_grid_places_images_and_enlarges_small_ones():
    """8×8 images become 32×32 cells (pixels repeated), row-major, GAP apart."""
    images = [torch.full((1, 8, 8), i / 10) for i in range(10)]
    grid = image_grid(images)  # ceil(√10) = 4 columns, 3 rows
    assert grid.shape == (3 * 32 + 4 * GAP, 4 * 32 + 4 * GAP + GAP, 3)
    for i in range(10):
        r, c = divmod(i, 4)
        top, left = GAP + r * (32 + GAP), GAP + c * (32 + GAP)
        assert (grid[top : top + 32, left : left + 32] == round(i / 10 * 255)).all()
    assert (grid[:GAP] == GAP_COLOUR).all()
    assert (grid[-(32 + GAP) :, GAP + 2 * (32 + GAP) :] == GAP_COLOUR).all()  # empty cells


def test_grid_reduces_large_images_with_an_antialiased_filter():
    """A 256×128 image becomes a 64×32 cell, as PIL's box filter makes it."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 256, size=(256, 128, 3), dtype=np.uint8)
    image = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255
    assert cell_scale(256, 128) == (MAX_CELL, MAX_CELL // 2)
    grid = image_grid([image])
    expected = np.asarray(Image.fromarray(pixels).resize((32, 64), Image.Resampling.BOX))
    np.testing.assert_array_equal(grid[GAP : GAP + 64, GAP : GAP + 32], expected)


def test_grid_of_mixed_sizes_uses_the_most_common_size():
    images = [torch.rand(3, 40, 40) for _ in range(3)] + [torch.rand(3, 20, 50)]
    grid = image_grid(images, columns=4)
    assert grid.shape == (40 + 2 * GAP, 4 * 40 + 5 * GAP, 3)
    decoded = np.asarray(Image.open(io.BytesIO(png_bytes(grid))))
    np.testing.assert_array_equal(decoded, grid)
