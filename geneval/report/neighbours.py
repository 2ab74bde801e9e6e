"""Nearest reference images of samples in a feature space: the memorisation check.

A generative model that copies its training images can score well on FID while having
learnt nothing; the usual check shows, for a few samples, the closest training images in the
feature space of the evaluation (e.g. Inception pool3). A sample whose nearest neighbour is
far closer than reference images are to each other is likely a copy.
"""

from __future__ import annotations

import torch

#: Upper bound on float32 elements of one block of distances (≈ 64 MiB).
_BLOCK_ELEMENTS = 16 * 1024 * 1024


def nearest_neighbours(
    queries: torch.Tensor,
    reference: torch.Tensor,
    k: int,
    *,
    device: torch.device | str = "cpu",
    block_elements: int = _BLOCK_ELEMENTS,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` nearest rows of ``reference`` to each row of ``queries`` (Euclidean).

    ``d(q, r) = ‖q − r‖₂``, computed in float32 with :func:`torch.cdist` over blocks of
    reference rows, so that memory stays bounded by ``block_elements`` distances (plus one
    block of reference rows on ``device``) however large the reference; the running best ``k``
    of each query are merged block by block.

    Parameters
    ----------
    queries
        (q, d) features of the samples shown.
    reference
        (n, d) features of the whole reference, on the host or the device.
    k
        Neighbours per query (at most n).

    Returns
    -------
    (distances, indices)
        (q, k) float32 distances in increasing order and (q, k) int64 reference row indices,
        on the host.

    Notes
    -----
    cdist's matrix-product route loses precision for nearly equal vectors: a sample that is
    an exact copy of a reference image may show a distance of about 1e-3 of the features'
    norm rather than 0. Do not read small distances more finely than that.

    References
    ----------
    .. [1] L. Theis, A. van den Oord, M. Bethge, "A note on the evaluation of generative
       models", ICLR 2016 (nearest neighbours as an overfitting check, and their limits).
    .. [2] C. Meehan, K. Chaudhuri, S. Dasgupta, "A Non-Parametric Test to Detect
       Data-Copying in Generative Models", AISTATS 2020.
    """
    device = torch.device(device)
    n = reference.shape[0]
    if queries.ndim != 2 or reference.ndim != 2 or queries.shape[1] != reference.shape[1]:
        raise ValueError(
            f"nearest_neighbours: features (q, d) and (n, d) expected, got "
            f"{tuple(queries.shape)} and {tuple(reference.shape)}"
        )
    k = min(k, n)
    q = queries.to(device=device, dtype=torch.float32)
    rows = max(k, block_elements // max(1, q.shape[0]))
    best_d = torch.empty(q.shape[0], 0, device=device)
    best_i = torch.empty(q.shape[0], 0, dtype=torch.int64, device=device)
    for start in range(0, n, rows):
        block = reference[start : start + rows].to(device=device, dtype=torch.float32)
        dist = torch.cdist(q, block)
        kk = min(k, dist.shape[1])
        d, i = dist.topk(kk, dim=1, largest=False)
        best_d = torch.cat([best_d, d], dim=1)
        best_i = torch.cat([best_i, i + start], dim=1)
        best_d, order = best_d.topk(min(k, best_d.shape[1]), dim=1, largest=False)
        best_i = best_i.gather(1, order)
    return best_d.cpu(), best_i.cpu()


def typical_distance(
    reference: torch.Tensor,
    *,
    sample: int = 256,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> float | None:
    """The median distance from a reference row to its nearest *other* reference row, over
    ``sample`` rows drawn with ``seed``: the scale against which a sample's neighbour distance
    is read (a copy sits far below it). ``None`` with fewer than two reference rows."""
    n = reference.shape[0]
    if n < 2:
        return None
    generator = torch.Generator().manual_seed(seed)
    picked = torch.randperm(n, generator=generator)[: min(sample, n)]
    dist, idx = nearest_neighbours(reference[picked], reference, 2, device=device)
    not_self = idx != picked.unsqueeze(1)
    # the nearest row other than the query itself (a duplicate image counts, at distance 0)
    first_other = not_self.float().argmax(dim=1)
    nearest = dist.gather(1, first_other.unsqueeze(1)).squeeze(1)
    return float(nearest.double().quantile(0.5))  # the median, averaging the middle two
