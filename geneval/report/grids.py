"""Image grids for reports: a few images as one PNG, small enough to embed.

A grid holds its images in rows of equal cells. Images of other sizes than the most common
one are resized to it; cells are then brought to between ``min_cell`` and ``max_cell`` pixels
on their longer side — small images (8×8 digits) are enlarged by an integer factor with
nearest-neighbour sampling, so each pixel stays a sharp square, and large ones are reduced
with an antialiased filter, so that a grid of 64 images stays well under a megabyte.
"""

from __future__ import annotations

import base64
import io
import math
from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

#: Longer side of a grid cell, in pixels, at most and at least.
MAX_CELL = 64
MIN_CELL = 32
#: Pixels between cells, and their colour.
GAP = 2
GAP_COLOUR = (255, 255, 255)


def to_rgb_uint8(image: torch.Tensor) -> np.ndarray:
    """One float ``[0, 1]`` image (C, H, W), C = 1 or 3, as uint8 RGB (H, W, 3), rounded as an
    8-bit file would store it."""
    x = image.detach().float().cpu().clamp(0, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    return (x * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def cell_scale(height: int, width: int) -> tuple[int, int]:
    """The cell size for images of ``height`` × ``width`` (see the module docstring)."""
    side = max(height, width)
    if side < MIN_CELL:
        factor = math.ceil(MIN_CELL / side)
        return height * factor, width * factor
    if side > MAX_CELL:
        shrink = MAX_CELL / side
        return max(1, round(height * shrink)), max(1, round(width * shrink))
    return height, width


def _fit(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """``array`` (H, W, 3) resized to ``size`` (H, W): nearest when enlarging by an integer
    factor, else an antialiased box/Lanczos filter."""
    if array.shape[:2] == size:
        return array
    h, w = array.shape[:2]
    enlarging = size[0] >= h and size[1] >= w and size[0] % h == 0 and size[1] % w == 0
    if enlarging:
        return np.repeat(np.repeat(array, size[0] // h, axis=0), size[1] // w, axis=1)
    resample = Image.Resampling.BOX if size[0] < h else Image.Resampling.LANCZOS
    return np.asarray(Image.fromarray(array).resize((size[1], size[0]), resample))


def image_grid(images: Sequence[torch.Tensor], columns: int | None = None) -> np.ndarray:
    """The images (each float ``[0, 1]``, (C, H, W)) in a grid, uint8 RGB (H, W, 3).

    ``columns`` defaults to ``ceil(sqrt(n))``; cells are separated by :data:`GAP` pixels.
    """
    if not images:
        raise ValueError("image_grid: no images")
    arrays = [to_rgb_uint8(image) for image in images]
    common = Counter(a.shape[:2] for a in arrays).most_common(1)[0][0]
    cell = cell_scale(*common)
    cells = [_fit(_fit(a, common) if a.shape[:2] != common else a, cell) for a in arrays]
    n = len(cells)
    columns = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / columns)
    ch, cw = cell
    grid = np.empty((rows * ch + (rows + 1) * GAP, columns * cw + (columns + 1) * GAP, 3), np.uint8)
    grid[:] = GAP_COLOUR
    for i, array in enumerate(cells):
        r, c = divmod(i, columns)
        top, left = GAP + r * (ch + GAP), GAP + c * (cw + GAP)
        grid[top : top + ch, left : left + cw] = array
    return grid


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int = 16) -> np.ndarray:
    """Two uint8 RGB images next to each other, top-aligned, on a white background."""
    height = max(left.shape[0], right.shape[0])
    out = np.full((height, left.shape[1] + gap + right.shape[1], 3), 255, np.uint8)
    out[: left.shape[0], : left.shape[1]] = left
    out[: right.shape[0], left.shape[1] + gap :] = right
    return out


def png_bytes(array: np.ndarray) -> bytes:
    """A uint8 RGB array (H, W, 3) encoded as PNG (maximum compression)."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def data_uri(png: bytes) -> str:
    """PNG bytes as a ``data:image/png;base64,...`` URI."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")
