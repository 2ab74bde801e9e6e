"""Shared by the memorisation metrics (``authpct``, ``ct``, ``fls``, ``mifid``).

* :func:`as_features`: features checked (2-D, finite) and moved to the device in float64.
* :func:`squared_distances`: a block of ``‖x_i − y_j‖²`` in float64 by the matrix-product
  form, with the entries small enough for its cancellation to matter measured again as
  ``Σ (x − y)²`` (an exact copy is at distance 0, not at the round-off of ``‖x‖²``).
* :func:`nearest_neighbours`: each row's nearest neighbour among ``y`` (optionally excluding
  itself), in row blocks: memory O(block × n), never an n × n matrix.
* :func:`split_reference`: the seeded held-out split of the reference (the training set) into
  a training part and a test part, for the metrics whose papers take three sets.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geneval.plugin import InputError

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray

#: float64 entries in one block of a distance matrix (128 MiB).
BLOCK_ELEMENTS = 1 << 24

#: A matrix-product squared distance below this fraction of ``‖x‖² + ‖y‖²`` is measured again
#: as ``Σ (x − y)²``: the product form's absolute error is a few ε (‖x‖² + ‖y‖²), so every
#: entry kept from it has a relative error below ~1e-12.
RECHECK_FRACTION = 1e-3


def as_features(x: ArrayLike, name: str, device: torch.device | str) -> torch.Tensor:
    """``x`` as a float64 (n, d) tensor on ``device``; an :class:`InputError` naming ``name``
    when it is not 2-D, is empty, or holds a non-finite value."""
    import torch

    t = torch.as_tensor(x).to(device=torch.device(device), dtype=torch.float64)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise InputError(f"{name} must be a non-empty (n, d) array, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).any(dim=1).nonzero()[0, 0])
        raise InputError(f"{name} holds non-finite values (first in row {bad})")
    return t


def row_block(n_cols: int) -> int:
    """Rows per block so that a block of ``n_cols`` float64 columns stays within
    :data:`BLOCK_ELEMENTS`."""
    return max(1, BLOCK_ELEMENTS // max(1, n_cols))


def squared_norms(x: torch.Tensor) -> torch.Tensor:
    """``‖x_i‖²`` (n,) in float64."""
    return (x * x).sum(dim=1)


def squared_distances(
    x: torch.Tensor,
    y: torch.Tensor,
    x_sq: torch.Tensor | None = None,
    y_sq: torch.Tensor | None = None,
) -> torch.Tensor:
    """``D_ij = ‖x_i − y_j‖²`` (float64, m × n) for float64 ``x`` (m × d), ``y`` (n × d).

    ``‖x‖² + ‖y‖² − 2 xᵀy`` (one matrix product), clipped at 0; the entries below
    ``RECHECK_FRACTION · (‖x_i‖² + ‖y_j‖²)``, where that form's cancellation would leave a
    relative error above ~1e-12, are measured again as ``Σ_k (x_ik − y_jk)²``.
    """
    import torch

    if x_sq is None:
        x_sq = squared_norms(x)
    if y_sq is None:
        y_sq = squared_norms(y)
    scale = x_sq[:, None] + y_sq[None, :]
    d = torch.addmm(scale, x, y.T, alpha=-2.0).clamp_min_(0.0)
    rows, cols = (d < RECHECK_FRACTION * scale).nonzero(as_tuple=True)
    chunk = max(1, BLOCK_ELEMENTS // max(1, x.shape[1]))
    for start in range(0, rows.numel(), chunk):
        r, c = rows[start : start + chunk], cols[start : start + chunk]
        diff = x[r] - y[c]
        d[r, c] = (diff * diff).sum(dim=1)
    return d


def nearest_neighbours(
    x: torch.Tensor, y: torch.Tensor, *, exclude_self: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Distance (float64) and index of each ``x_i``'s nearest neighbour among the rows of ``y``.

    ``min_j ‖x_i − y_j‖`` over row blocks of ``x`` (:func:`squared_distances`); with
    ``exclude_self`` (``x`` is ``y``), ``j = i`` is left out. Ties go to the lowest index, as
    ``torch.min`` decides them. Memory O(block × n_y).
    """
    import torch

    n = x.shape[0]
    if exclude_self and (y.shape[0] < 2 or n != y.shape[0]):
        raise InputError("a nearest neighbour other than itself needs at least 2 points")
    y_sq = squared_norms(y)
    x_sq = y_sq if exclude_self else squared_norms(x)
    dist = torch.empty(n, dtype=torch.float64, device=x.device)
    index = torch.empty(n, dtype=torch.int64, device=x.device)
    step = row_block(y.shape[0])
    for start in range(0, n, step):
        stop = min(n, start + step)
        d = squared_distances(x[start:stop], y, x_sq[start:stop], y_sq)
        if exclude_self:
            local = torch.arange(stop - start, device=x.device)
            d[local, local + start] = torch.inf
        best = d.min(dim=1)
        dist[start:stop] = best.values
        index[start:stop] = best.indices
    return dist.sqrt(), index


def split_reference(
    n: int, test_fraction: float, seed: int, *, metric: str, min_each: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(train, test)`` of a seeded split of ``n`` reference points.

    ``round(n · test_fraction)`` points, the first of ``torch.randperm(n)`` under a CPU
    generator seeded with ``seed``, form the held-out test part; the rest the training part.
    An :class:`InputError` naming ``metric`` when either part has fewer than ``min_each``.
    """
    import torch

    n_test = int(round(n * test_fraction))
    if n_test < min_each or n - n_test < min_each:
        raise InputError(
            f"{metric}: {n} reference points split at test_fraction={test_fraction:g} give "
            f"{n - n_test} training and {n_test} test points; each part needs at least "
            f"{min_each}"
        )
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(n, generator=gen)
    return perm[n_test:], perm[:n_test]
