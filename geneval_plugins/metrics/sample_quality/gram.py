"""Float64 Gram matrices ``YᵀY`` (d × d) of feature rows, in memory-bounded chunks.

Shared by ``fd_inf`` (the covariance of each random subset) and ``vendi`` (the d × d Gram form
of the cosine kernel): the rows are read :data:`CHUNK_ELEMENTS` at a time, widened to float64
on the features' device, transformed (centred, or L2-normalised) and accumulated, so that no
n × d float64 copy and no n × n matrix is ever made. On the CPU the product is BLAS ``dsyrk``
(one triangle: half the work of a general product); elsewhere torch's product.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

#: Float64 elements of one chunk of rows (32 MiB).
CHUNK_ELEMENTS = 4 * 1024 * 1024


def float64_chunks(
    features: torch.Tensor, rows: torch.Tensor | None = None, *, device: torch.device
) -> Iterator[torch.Tensor]:
    """The rows ``features[rows]`` (all rows when ``rows`` is None) as float64 chunks on
    ``device``, of at most :data:`CHUNK_ELEMENTS` elements each."""
    import torch

    n = features.shape[0] if rows is None else rows.shape[0]
    step = max(1, CHUNK_ELEMENTS // max(1, features.shape[1]))
    for lo in range(0, n, step):
        part = features[lo : lo + step] if rows is None else features[rows[lo : lo + step]]
        yield part.to(device=device, dtype=torch.float64, copy=True)  # callers work in place


def mean_float64(
    features: torch.Tensor, rows: torch.Tensor | None = None, *, device: torch.device
) -> torch.Tensor:
    """``(1/N) Σᵢ yᵢ`` (d,) in float64 of ``y = features[rows]``."""
    import torch

    total = torch.zeros(features.shape[1], dtype=torch.float64, device=device)
    count = 0
    for chunk in float64_chunks(features, rows, device=device):
        total += chunk.sum(dim=0)
        count += chunk.shape[0]
    return total / count


def _unit_rows(chunk: torch.Tensor) -> torch.Tensor:
    """Rows divided by their Euclidean norm, in place; zero rows stay zero (as
    ``sklearn.preprocessing.normalize``)."""
    import torch

    norms = torch.linalg.vector_norm(chunk, dim=1, keepdim=True)
    return chunk.div_(norms.masked_fill_(norms == 0, 1.0))


def gram_float64(
    features: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    device: torch.device,
    centre: torch.Tensor | None = None,
    normalise: bool = False,
) -> torch.Tensor:
    """``Σᵢ yᵢ yᵢᵀ`` (d × d, float64, symmetric) of ``y = features[rows]`` after the
    transformation asked for.

    ``centre`` (d,): ``yᵢ − centre`` (with the rows' mean, ``(N − 1) Σ`` for the unbiased
    covariance Σ, as ``numpy.cov``). ``normalise``: ``yᵢ / ‖yᵢ‖`` (the cosine kernel's unit
    rows). Accumulated chunk by chunk, float64 throughout.
    """
    return sum_and_gram_float64(features, rows, device=device, centre=centre, normalise=normalise)[
        1
    ]


def sum_and_gram_float64(
    features: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    device: torch.device,
    centre: torch.Tensor | None = None,
    normalise: bool = False,
    blas: bool | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σᵢ yᵢ, Σᵢ yᵢ yᵢᵀ)`` ((d,) and (d × d), float64) of the transformed rows
    ``y = features[rows]`` (see :func:`gram_float64`), in one pass over the rows.

    With a shift ``c`` close to the rows' mean (``centre``), ``Σ(x − c)(x − c)ᵀ −
    s sᵀ/N`` with ``s = Σ(x − c)`` is the centred co-moment without a second pass; the
    correction ``s sᵀ/N`` is small, so no digits are lost to cancellation. ``blas``: use
    BLAS ``dsyrk`` (default: on the CPU) rather than torch's product.
    """
    import torch

    d = features.shape[1]
    on_cpu = torch.device(device).type == "cpu" if blas is None else blas
    if on_cpu:
        import numpy as np
        from scipy.linalg.blas import dsyrk

        upper = np.zeros((d, d), dtype=np.float64, order="F")
    else:
        out = torch.zeros(d, d, dtype=torch.float64, device=device)
    total = torch.zeros(d, dtype=torch.float64, device=device)
    for chunk in float64_chunks(features, rows, device=device):
        if centre is not None:
            chunk -= centre
        if normalise:
            chunk = _unit_rows(chunk)
        total += chunk.sum(dim=0)
        if on_cpu:
            # Yᵀ Y: Yᵀ of a C-ordered chunk is Fortran-ordered, so BLAS reads it in place.
            upper = dsyrk(1.0, chunk.numpy().T, beta=1.0, c=upper, overwrite_c=1)
        else:
            out.addmm_(chunk.T, chunk)
    if not on_cpu:
        return total, (out + out.T).mul_(0.5)
    tri = torch.from_numpy(np.ascontiguousarray(np.triu(upper)))
    return total, tri + tri.T - torch.diag(tri.diagonal())
