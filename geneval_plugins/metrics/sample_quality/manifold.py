"""k-nearest-neighbour manifolds: precision, recall, density and coverage of feature sets.

Each set of feature vectors is summarised by the union of balls around its points, the ball
of point ``x`` having radius ``r_k(x)``: the distance from ``x`` to its k-th nearest neighbour
in the same set, the point itself excluded. With samples ``Y = {y_j}`` (n_s of them) and
reference ``X = {x_i}`` (n_r):

* precision (Kynkäänniemi et al. 2019) — the fraction of samples inside the reference
  manifold, ``mean_j 1[∃i: ‖y_j − x_i‖ ≤ r_k(x_i)]``;
* recall (Kynkäänniemi et al. 2019) — the fraction of reference points inside the sample
  manifold, ``mean_i 1[∃j: ‖x_i − y_j‖ ≤ r_k(y_j)]``;
* density (Naeem et al. 2020) — how many reference balls hold each sample, divided by k,
  ``(1/(k n_s)) Σ_j Σ_i 1[‖y_j − x_i‖ < r_k(x_i)]`` (1 on average for matching
  distributions, unbounded above);
* coverage (Naeem et al. 2020) — the fraction of reference balls that hold at least one
  sample, ``mean_i 1[min_j ‖x_i − y_j‖ < r_k(x_i)]``.

Precision and recall count a point on a ball's boundary as inside (``≤``, a *closed* ball), as
Kynkäänniemi et al.'s code (``distance_batch <= self.D`` in NVlabs'
``improved-precision-and-recall-metric``) and torch-fidelity's ``prc`` do; density and coverage
count it outside (``<``, an *open* ball), as Naeem et al.'s ``prdc`` package does. The two
differ only on exact ties: duplicated feature vectors (which a memorising model produces) and
integer-valued features. Each metric's ``boundary`` option (``closed`` or ``open``) reproduces
the other convention, e.g. ``precision.boundary=open`` gives ``prdc``'s precision.

Decisions are exact. Distances are computed in float32 from the matrix-product form that
:func:`torch.cdist` uses for large inputs, ``‖x‖² + ‖y‖² − 2 xᵀy`` (:func:`pairwise_distances`;
decisions compare squared distances with squared radii, the square root being monotone), after
both sets are shifted by the reference's mean (distances do not change; the cancellation of
large offsets does). Every comparison that lies within float32 round-off of a ball's boundary,
and every radius (the ``k + RADIUS_MARGIN`` nearest candidates of each point), is then measured
again in float64 as ``Σ (x − y)²``. Ties are therefore decided as exact arithmetic decides them,
as ``prdc`` (float64 distances) does, and no longer by the round-off of one matrix product.

Memory stays at one block of at most ``block`` rows (:data:`CROSS_BLOCKS` ``× block`` in the
precision/recall pass) and :data:`MAX_BLOCK_ELEMENTS` distances, whatever n (never an n × n
matrix), on the features' device; each pass reuses one buffer for its blocks. The radii come
from one pass over each set that keeps each point's nearest candidates
(:func:`nearest_neighbour_radii`; the set's distance matrix is symmetric, so each block of rows
is only compared with itself and the rows after it, and of its diagonal tile only three
quarters are multiplied); every metric then reads its own k-th radius. One pass over the
sample × reference blocks then decides all the metrics asked at once (:func:`manifold_metrics`).
Precision and recall alone need no per-entry test: one product per block, whose row minima
decide precision and column minima recall (:func:`_precision_recall`); density counts entries,
so with density or coverage every entry is compared with its ball.

``protocol=adm`` (precision and recall only) follows the ADM evaluator instead
(:func:`adm_precision_recall`): its ``ManifoldEstimator`` counts the point itself among the
k + 1 nearest, decides on squared distances rounded to float16 as TensorFlow computes them
(float32 for a 10 000 × 10 000 block holding a non-finite float16 entry), with closed balls.
Those float16 decisions are reproduced, not exact arithmetic's: the norms are summed in
float16 in the order of TensorFlow's GPU kernel (:func:`tf_gpu_row_sums_float16`; summing
them in float32 instead moves 24 of 6000 decisions on 3000 × 2048 pool-like features), and
the result differs from the numpy transcription of the evaluator
(``tests/adm_evaluator_reference.py``) only where a dot product's float32 accumulation,
summed in another order, rounds to a neighbouring float16 (0 of those 6000 decisions).

References
----------
.. [1] T. Kynkäänniemi, T. Karras, S. Laine, J. Lehtinen, T. Aila, "Improved Precision and
   Recall Metric for Assessing Generative Models", NeurIPS 2019.
.. [2] M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi, J. Yoo, "Reliable Fidelity and Diversity
   Metrics for Generative Models", ICML 2020.
.. [3] P. Dhariwal, A. Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021
   (``guided-diffusion/evaluations/evaluator.py``: ``ManifoldEstimator``, ``DistanceBlock``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

from geneval.plugin import InputError, MetricInputs, Need, Option, progress_bar
from geneval_plugins.metrics.sample_quality.protocols import protocol_needs, protocol_option

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray


#: The four metrics, in the order their results are listed.
MANIFOLD_METRICS = ("precision", "recall", "density", "coverage")
#: The manifold metrics that take the ``protocol`` option (the ADM evaluator computes these).
ADM_METRICS = ("precision", "recall")
#: Which set's balls each metric counts in: the reference's, or the samples' (recall).
_RADII_OF = {
    "precision": "reference",
    "recall": "samples",
    "density": "reference",
    "coverage": "reference",
}
#: Rows of one distance block on the CPU and on a GPU (fewer rows waste less of the
#: symmetric self-distance matrix; more rows keep a GPU busy).
CPU_BLOCK = 1024
GPU_BLOCK = 4096
#: The fused precision/recall pass (:func:`_precision_recall`) takes this many blocks of rows
#: at once (still at most :data:`MAX_BLOCK_ELEMENTS` distances): it keeps no per-entry mask,
#: and larger products repack the reference's operand less often.
CROSS_BLOCKS = 4
#: At most this many distances in one block: 256 MiB of float32.
MAX_BLOCK_ELEMENTS = 1 << 26
#: Each point's radius is re-measured in float64 among its ``k + RADIUS_MARGIN`` nearest
#: candidates by float32 distance.
RADIUS_MARGIN = 4
#: A float32 squared distance within ``FLOAT32_BAND · (‖x‖² + ‖y‖²)`` of a squared radius is
#: re-measured in float64. The round-off of the matrix-product form after the shift is at
#: most ``d · 2⁻²⁴`` of that sum and in practice a few ``2⁻²⁴`` (at most 5 · 2⁻²⁴ measured on
#: 2048-d ReLU features); 2⁻¹⁶ = 256 · 2⁻²⁴ covers the worst case up to d = 256 and the
#: measured one fifty times over. The precision/recall pass sums the squared radii into the same
#: float32 expressions, so its bound also counts them among the magnitudes (``‖x‖² + ‖y‖² + r²``).
FLOAT32_BAND = 2.0**-16
#: Per-metric default of the ``boundary`` option: the convention of each metric's paper's code.
DEFAULT_BOUNDARY = {
    "precision": "closed",
    "recall": "closed",
    "density": "open",
    "coverage": "open",
}
#: At most this many float64 values in one exact re-measurement chunk (32 MiB).
_EXACT_CHUNK_ELEMENTS = 1 << 22


def default_block(device: torch.device) -> int:
    """The rows per block used on ``device``: :data:`CPU_BLOCK`, or :data:`GPU_BLOCK` off the
    CPU."""
    return CPU_BLOCK if device.type == "cpu" else GPU_BLOCK


def _feature_pair(
    samples: ArrayLike, reference: ArrayLike, device: torch.device | str | None
) -> tuple[torch.Tensor, torch.Tensor, torch.device]:
    """Both feature sets checked by :func:`_as_features` on ``device`` (default: the samples'
    device, else the CPU), and the device; an :class:`InputError` when their widths differ."""
    import torch

    if device is None:
        device = samples.device if isinstance(samples, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    s = _as_features(samples, "sample features", device)
    r = _as_features(reference, "reference features", device)
    if s.shape[1] != r.shape[1]:
        raise InputError(
            f"sample and reference features have different widths ({s.shape[1]} and {r.shape[1]})"
        )
    return s, r, device


def _as_features(x: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    import torch

    t = torch.as_tensor(x)
    if t.ndim != 2 or t.shape[0] == 0 or t.shape[1] == 0:
        raise InputError(f"{name} must be a non-empty (n, d) array, got shape {tuple(t.shape)}")
    t = t.to(device=device, dtype=torch.float32)
    lowest, highest = torch.aminmax(t)  # NaN propagates; one pass, no n × d mask
    if not (torch.isfinite(lowest) and torch.isfinite(highest)):
        raise InputError(f"{name} contain non-finite values")
    return t


def _row_blocks(n_rows: int, n_cols: int, block: int) -> list[tuple[int, int]]:
    """Split ``range(n_rows)`` into near-equal consecutive parts of at most ``block`` rows and
    at most :data:`MAX_BLOCK_ELEMENTS` distances to ``n_cols`` columns."""
    rows = max(1, min(block, MAX_BLOCK_ELEMENTS // max(n_cols, 1)))
    parts = max(1, math.ceil(n_rows / rows))
    edges = [i * n_rows // parts for i in range(parts + 1)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def pairwise_distances(
    x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor
) -> torch.Tensor:
    """Euclidean distances ``‖x_i − y_j‖`` (m, n) in float32, as ``torch.cdist`` computes them.

    ``√max(‖x_i‖² + ‖y_j‖² − 2 x_iᵀy_j, 0)``: one matrix product, the squared norms
    ``x_sq`` (m,) and ``y_sq`` (n,) given, so that the columns' norms are computed once per set
    rather than once per block (``torch.cdist`` recomputes them and copies both inputs into a
    padded product on every call: about a third slower in a blocked loop). Like
    ``torch.cdist``'s matrix-product path, it loses ~1e-7 of ``‖x‖²`` to cancellation: a
    point's distance to itself comes out near ``1e-3 ‖x‖``, not 0.
    """
    return _squared_distances(x, y, x_sq, y_sq).clamp_min_(0.0).sqrt_()


def _squared_distances(
    x: torch.Tensor,
    y: torch.Tensor,
    x_sq: torch.Tensor,
    y_sq: torch.Tensor,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``‖x_i‖² + ‖y_j‖² − 2 x_iᵀy_j`` (m, n), float32, not clamped (may be slightly < 0).

    ``out``, an (m, n) view of a buffer kept across blocks, receives it: a fresh allocation
    per block costs its page faults again (13–20 % of the product's time measured on a CPU).
    """
    import torch

    return torch.addmm(y_sq.unsqueeze(0), x, y.T, alpha=-2.0, out=out).add_(x_sq.unsqueeze(1))


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def _merge_smallest(
    best: torch.Tensor,
    best_index: torch.Tensor,
    values: torch.Tensor,
    index: torch.Tensor,
    k: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``k`` smallest of each row of ``best`` (m, k) and ``values`` (m, c), ascending, with
    the column indices that go with them (``best_index`` and ``index``, same shapes)."""
    import torch

    candidates = torch.cat([best, values], dim=1)
    indices = torch.cat([best_index, index], dim=1)
    kept, where = candidates.topk(k, dim=1, largest=False)
    return kept, indices.gather(1, where)


def exact_squared_distances(
    x: torch.Tensor, y: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor
) -> torch.Tensor:
    """``Σ_d (x[rows] − y[cols])²`` in float64 for index pairs ``(rows, cols)`` (p,), in chunks.

    The direct form has no cancellation: a duplicate's distance is exactly 0, and integer
    features give exact integers.
    """
    import torch

    out = torch.empty(rows.numel(), dtype=torch.float64, device=x.device)
    step = max(1, _EXACT_CHUNK_ELEMENTS // max(x.shape[1], 1))
    for i0 in range(0, rows.numel(), step):
        i1 = min(i0 + step, rows.numel())
        diff = x[rows[i0:i1]].double() - y[cols[i0:i1]].double()
        out[i0:i1] = (diff * diff).sum(dim=1)
    return out


def nearest_neighbour_radii(
    features: ArrayLike,
    k: int,
    *,
    device: torch.device | str | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Distances from each point to its 1st … k-th nearest neighbour in the same set.

    ``out[i, m − 1] = r_m(x_i)``, the m-th smallest of ``‖x_i − x_j‖`` over ``j ≠ i`` (the
    point itself excluded; a duplicate of it counts, at distance 0). This is the
    ``(k + 1)``-th smallest distance when the point itself is counted, as torch-fidelity
    (``kthvalue(k + 1)``) and ``prdc`` take it.

    Parameters
    ----------
    features
        (n, d) feature vectors.
    k
        The largest neighbour rank needed, ``1 ≤ k < n``.
    device
        Where to compute; default the device of ``features`` when it is a tensor, else the CPU.
    block
        Rows per distance block (default :func:`default_block`).

    Returns
    -------
    torch.Tensor
        (n, k) float64 on ``device``, each row ascending.

    Notes
    -----
    The candidates are the ``k +`` :data:`RADIUS_MARGIN` nearest points by float32 distance
    (:func:`pairwise_distances` after a shift by the set's mean); those within float32
    round-off of the float32 m-th distance are measured again in float64
    (:func:`exact_squared_distances`), which places the exact m-th (:class:`_Radii`): the radii
    are exact unless more than :data:`RADIUS_MARGIN` points lie within float32 round-off of
    one. The n
    × n distance matrix is symmetric: the distances of a block of rows ``I`` to the rows from
    ``I`` on are computed once and serve the rows of ``I`` and, by columns, the later rows; of
    the diagonal tile ``I × I`` three quarters are multiplied (:func:`_symmetric_block`), which
    costs about ``(2T + 1) / (4T)`` of the full matrix for ``T`` blocks (``(T + 1) / (2T)``
    for blocks below :data:`SPLIT_DIAGONAL_ROWS` rows).
    """
    import torch

    if device is None:
        device = features.device if isinstance(features, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    x = _as_features(features, "features", device)
    n = x.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k={k} must be at least 1 and below the number of feature vectors {n}")
    shifted = x - (x.sum(dim=0, dtype=torch.float64) / n).float()
    radii = _Radii(shifted, _squared_norms(shifted), k, block or default_block(device), x)
    return torch.stack([radii.exact(m) for m in range(1, k + 1)], dim=1).sqrt_()


#: A diagonal block of at least this many rows is computed as three products (see
#: :func:`_symmetric_block`); below it, as one.
SPLIT_DIAGONAL_ROWS = 128


def _symmetric_block(
    x: torch.Tensor, x_sq: torch.Tensor, i0: int, i1: int, out: torch.Tensor
) -> torch.Tensor:
    """Squared distances of the rows ``i0 … i1 − 1`` of ``x`` to the rows from ``i0`` on, into
    ``out`` (i1 − i0, n − i0), by :func:`_squared_distances`.

    The diagonal tile ``I × I`` is symmetric: with ``I = A ∪ B`` (two halves) only ``A × I``
    and ``B × B`` are multiplied, and ``B × A`` is ``(A × B)ᵀ`` copied, which saves a quarter
    of the tile's products.
    """
    b = i1 - i0
    if b < SPLIT_DIAGONAL_ROWS:
        return _squared_distances(x[i0:i1], x[i0:], x_sq[i0:i1], x_sq[i0:], out=out)
    h = i0 + b // 2
    if i1 < x.shape[0]:
        _squared_distances(x[i0:i1], x[i1:], x_sq[i0:i1], x_sq[i1:], out=out[:, b:])
    _squared_distances(x[i0:h], x[i0:i1], x_sq[i0:h], x_sq[i0:i1], out=out[: h - i0, :b])
    _squared_distances(x[h:i1], x[h:i1], x_sq[h:i1], x_sq[h:i1], out=out[h - i0 :, h - i0 : b])
    out[h - i0 :, : h - i0].copy_(out[: h - i0, h - i0 : b].T)
    return out


class _Radii:
    """The k-nearest-neighbour radii of one set: float32 from one blocked pass, exact on demand.

    The pass keeps each point's ``k +`` :data:`RADIUS_MARGIN` nearest candidates by float32
    distance (``x``: the checked features ``given``, shifted; ``x_sq`` its squared norms).
    :meth:`approx` is the float32 m-th squared radius, within :meth:`error` of the exact one;
    :meth:`exact` measures the candidates within that band of it again in float64 and sorts
    them (a candidate outside the band lies on the same side of the m-th in float32 as in
    exact arithmetic), for the points asked and once per point.
    """

    def __init__(
        self, x: torch.Tensor, x_sq: torch.Tensor, k: int, block: int, given: torch.Tensor
    ) -> None:
        import torch

        n = x.shape[0]
        keep = min(k + RADIUS_MARGIN, n - 1)
        parts = _row_blocks(n, n, block)
        best = torch.full((n, keep), math.inf, device=x.device)
        index = torch.zeros((n, keep), dtype=torch.int64, device=x.device)
        buffer = torch.empty((max(i1 - i0 for i0, i1 in parts), n), device=x.device)
        with progress_bar(len(parts), "nearest neighbours", "blocks") as bar:
            for i0, i1 in parts:
                # Rows I against themselves and every later row.
                d = _symmetric_block(x, x_sq, i0, i1, buffer[: i1 - i0, : n - i0])
                d[:, : i1 - i0].fill_diagonal_(math.inf)
                values, where = d.topk(min(keep, d.shape[1]), dim=1, largest=False)
                best[i0:i1], index[i0:i1] = _merge_smallest(
                    best[i0:i1], index[i0:i1], values, where + i0, keep
                )
                if i1 < n:  # the same distances, by columns, for the later rows
                    values, where = d[:, i1 - i0 :].topk(min(keep, i1 - i0), dim=0, largest=False)
                    best[i1:], index[i1:] = _merge_smallest(
                        best[i1:], index[i1:], values.T, where.T + i0, keep
                    )
                bar.update(1)
        self.best, self.index, self.x_sq, self.given = best, index, x_sq, given
        self._exact: dict[int, torch.Tensor] = {}

    def approx(self, m: int) -> torch.Tensor:
        """The float32 squared m-th radius of every point (n,)."""
        return self.best[:, m - 1]

    def error(self, m: int) -> torch.Tensor:
        """A bound on ``|approx(m) − exact(m)|`` per point (n,), float64."""
        return (self.x_sq + self.x_sq[self.index[:, m - 1]]).double() * FLOAT32_BAND

    def exact(self, m: int, points: torch.Tensor | None = None) -> torch.Tensor:
        """The exact (float64) squared m-th radius of ``points`` (default: every point)."""
        import torch

        n = self.best.shape[0]
        cache = self._exact.get(m)
        if cache is None:
            cache = self._exact[m] = torch.full(
                (n,), math.nan, dtype=torch.float64, device=self.best.device
            )
        if points is None:
            points = torch.arange(n, device=self.best.device)
        todo = points.unique()
        todo = todo[cache[todo].isnan()]
        if todo.numel():
            best, index = self.best[todo], self.index[todo]
            band = (self.x_sq[todo, None] + self.x_sq[index]).mul_(FLOAT32_BAND)
            again = (best - best[:, m - 1 : m]).abs_() <= band
            rows, cols = again.nonzero(as_tuple=True)
            values = best.double()
            values[rows, cols] = exact_squared_distances(
                self.given, self.given, todo[rows], index[rows, cols]
            )
            cache[todo] = values.sort(dim=1).values[:, m - 1]
        return cache[points]


def _check_k(name: str, k: int, n: int, source: str) -> None:
    if not 1 <= k < n:
        raise InputError(
            f"{name}: k={k} must be at least 1 and below the number of {source} "
            f"feature vectors ({n})"
        )


def _inside(
    d: torch.Tensor,
    approx: torch.Tensor,
    band: torch.Tensor,
    closed: bool,
    exact: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]],
) -> torch.Tensor:
    """Whether each distance of ``d`` lies in its ball, decided exactly.

    ``d`` holds float32 squared distances (b, c); ``approx`` the float32 squared radii and
    ``band`` (float64) a bound on the round-off of both near them, broadcastable to ``d`` (one
    per ball). A distance below ``approx − band`` is inside, above ``approx + band`` outside;
    for those between, ``exact(rows, cols)`` gives the float64 squared distance and exact
    squared radius of each entry, which decide.
    """
    inside = d < (approx - band).float()
    near = (d <= (approx + band).float()).logical_xor_(inside).nonzero(as_tuple=True)
    if near[0].numel():
        e, r = exact(*near)
        inside[near] = e <= r if closed else e < r
    return inside


class _Sets(NamedTuple):
    """Both feature sets: shifted float32 (``s``, ``r``), their squared norms, and as given."""

    s: torch.Tensor
    r: torch.Tensor
    s_sq: torch.Tensor
    r_sq: torch.Tensor
    given_s: torch.Tensor
    given_r: torch.Tensor


def _precision_recall(
    sets: _Sets,
    k: Mapping[str, int],
    closed: Mapping[str, bool],
    radii: Mapping[str, _Radii | None],
    approx: Mapping[str, torch.Tensor],
    band: Mapping[str, torch.Tensor],
    parts: list[tuple[int, int]],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Precision's and recall's decisions (n_s,) and (n_r,) from one product per block.

    Sample ``j`` is in the reference manifold iff ``min_i (d²_ji − R²_i) ≤ 0`` (``< 0`` for an
    open ball), reference point ``i`` in the samples' iff ``min_j (d²_ji − ρ²_j) ≤ 0``, with
    ``R`` and ``ρ`` the reference's and the samples' radii. Each block is one product
    ``G = (‖r_i‖² − R²_i) − 2 s_jᵀr_i`` (the column term as the product's bias): its row
    minimum plus ``‖s_j‖²`` is precision's ``min_i (d²_ji − R²_i)``; after adding
    ``‖s_j‖² − ρ²_j`` to its rows in place, its column minimum, kept over the blocks, plus
    ``R²_i`` is recall's: three passes over the block after the product, no elementwise
    mask. A minimum farther from 0 than the round-off bound of every entry it was taken over
    (the radii's :meth:`_Radii.error` plus :data:`FLOAT32_BAND` times the magnitudes summed,
    ``‖s_j‖² + ‖r_i‖² + R²_i + ρ²_j``) decides the row or column as exact arithmetic does; the
    rare rows and columns within it are measured again entry by entry as
    :func:`manifold_metrics` does for every metric (:func:`_inside`).
    """
    import torch

    s, r, s_sq, r_sq, given_s, given_r = sets
    n_s, n_r = s.shape[0], r.shape[0]
    device = s.device
    in_reference = torch.zeros(n_s, dtype=torch.bool, device=device)
    in_samples = torch.zeros(n_r, dtype=torch.bool, device=device)
    bias, r_terms = r_sq, r_sq.double()
    if "precision" in k:
        balls = radii["precision"]
        assert balls is not None
        big_r = approx["precision"]
        bias, r_terms = r_sq - big_r, r_terms + big_r.double()
        row_bound = (balls.error(k["precision"]) + r_terms * FLOAT32_BAND).max()
        row_bound = row_bound + s_sq.double() * FLOAT32_BAND  # (n_s,)
        undecided_rows = []
    if "recall" in k:
        balls = radii["recall"]
        assert balls is not None
        small_r = approx["recall"]
        row_shift = s_sq - small_r
        s_terms = s_sq.double() + small_r.double()
        col_bound = (balls.error(k["recall"]) + s_terms * FLOAT32_BAND).max()
        col_bound = col_bound + r_terms * FLOAT32_BAND  # (n_r,)
        col_min = torch.full((n_r,), math.inf, device=device)
    buffer = torch.empty((max(i1 - i0 for i0, i1 in parts), n_r), device=device)
    with progress_bar(len(parts), "manifold comparisons", "blocks") as bar:
        for i0, i1 in parts:
            g = torch.addmm(bias.unsqueeze(0), s[i0:i1], r.T, alpha=-2.0, out=buffer[: i1 - i0])
            if "precision" in k:
                low = g.amin(dim=1).add_(s_sq[i0:i1]).double()
                bound = row_bound[i0:i1]
                in_reference[i0:i1] = low < -bound
                undecided_rows.append((low.abs() <= bound).nonzero().squeeze(1) + i0)
            if "recall" in k:
                torch.minimum(col_min, g.add_(row_shift[i0:i1, None]).amin(dim=0), out=col_min)
            bar.update(1)
    chunk = max(1, MAX_BLOCK_ELEMENTS // max(n_r, n_s))
    if "precision" in k:
        balls, rank = radii["precision"], k["precision"]
        assert balls is not None
        rows = torch.cat(undecided_rows)
        for c0 in range(0, rows.numel(), chunk):
            these = rows[c0 : c0 + chunk]

            def exact_rows(
                i: torch.Tensor,
                j: torch.Tensor,
                these: torch.Tensor = these,
                balls: _Radii = balls,  # type: ignore[assignment]
                rank: int = rank,
            ) -> tuple[torch.Tensor, torch.Tensor]:
                e = exact_squared_distances(given_s, given_r, these[i], j)
                return e, balls.exact(rank, j)

            d = _squared_distances(s[these], r, s_sq[these], r_sq)
            inside = _inside(
                d,
                approx["precision"][None, :],
                band["precision"][None, :],
                closed["precision"],
                exact_rows,
            )
            in_reference[these] = inside.any(dim=1)
    if "recall" in k:
        balls, rank = radii["recall"], k["recall"]
        assert balls is not None
        low = col_min.double()
        if "precision" in k:
            low += approx["precision"].double()
        in_samples = low < -col_bound
        cols = (low.abs() <= col_bound).nonzero().squeeze(1)
        for c0 in range(0, cols.numel(), chunk):
            these = cols[c0 : c0 + chunk]

            def exact_cols(
                i: torch.Tensor,
                j: torch.Tensor,
                these: torch.Tensor = these,
                balls: _Radii = balls,  # type: ignore[assignment]
                rank: int = rank,
            ) -> tuple[torch.Tensor, torch.Tensor]:
                e = exact_squared_distances(given_s, given_r, i, these[j])
                return e, balls.exact(rank, i)

            d = _squared_distances(s, r[these], s_sq, r_sq[these])
            inside = _inside(
                d,
                approx["recall"][:, None],
                band["recall"][:, None],
                closed["recall"],
                exact_cols,
            )
            in_samples[these] = inside.any(dim=0)
    return in_reference, in_samples


def manifold_metrics(
    samples: ArrayLike,
    reference: ArrayLike,
    k: Mapping[str, int],
    *,
    boundary: Mapping[str, str] | None = None,
    device: torch.device | str | None = None,
    block: int | None = None,
) -> dict[str, float]:
    """Any of precision, recall, density and coverage, each with its own k, in one pass.

    See the module docstring for the definitions. Radii come from one
    :func:`nearest_neighbour_radii` pass per set up to the largest k that reads that set's
    radii (the reference's for precision, density and coverage, the samples' for recall);
    then one pass over the sample × reference distance blocks decides every metric: by row and
    column minima of one product per block when only precision and recall are asked
    (:func:`_precision_recall`), else by comparing every distance with its ball.

    Parameters
    ----------
    samples, reference
        Feature vectors (n_s, d) and (n_r, d) of the same width ``d``.
    k
        The metrics wanted and their neighbour rank, e.g. ``{"precision": 3, "recall": 3}``;
        keys from :data:`MANIFOLD_METRICS`. k must be below the number of points whose
        balls the metric counts (n_r, or n_s for recall).
    boundary
        Per metric, ``"closed"`` (a point on a ball's boundary is inside, ``≤``) or ``"open"``
        (``<``); default :data:`DEFAULT_BOUNDARY`, each metric's original code.
    device
        Where to compute; default the device of ``samples`` when it is a tensor, else the CPU.
    block
        Rows per distance block (default :func:`default_block`); the precision/recall
        pass takes :data:`CROSS_BLOCKS` of them at once.

    Returns
    -------
    dict
        ``{metric: value}`` for every key of ``k``.

    Notes
    -----
    With few points the manifolds are coarse: each ball is set by k neighbours, so values
    move in steps of ``1/n`` and carry a sampling error of order ``1/√n``. Kynkäänniemi et al.
    use 50 000 points per set; compare numbers only at equal n, k and feature extractor.
    Decisions are those of exact arithmetic (module docstring); an implementation that decides
    on float32 distances alone (torch-fidelity, NVlabs) can differ from them on a point that
    lies within ~1e-6 of a ball's boundary (a change of ``1/n``).

    References
    ----------
    .. [1] Kynkäänniemi et al., NeurIPS 2019 (precision, recall).
    .. [2] Naeem et al., ICML 2020 (density, coverage).
    """
    import torch

    unknown = sorted(set(k) - set(MANIFOLD_METRICS))
    if unknown:
        raise InputError(f"manifold_metrics: unknown metrics {', '.join(unknown)}")
    closed = {name: DEFAULT_BOUNDARY[name] == "closed" for name in k}
    for name, kind in (boundary or {}).items():
        if kind not in ("closed", "open"):
            raise InputError(f"{name}: boundary must be 'closed' or 'open', got {kind!r}")
        if name in closed:
            closed[name] = kind == "closed"
    s, r, device = _feature_pair(samples, reference, device)
    n_s, n_r = s.shape[0], r.shape[0]
    for name, rank in k.items():
        if _RADII_OF[name] == "samples":
            _check_k(name, rank, n_s, "sample")
        else:
            _check_k(name, rank, n_r, "reference")
    # Distances do not depend on a common shift; the float32 norms lose less to it. The exact
    # re-measurements read the features as given (the float32 shift rounds them).
    given_s, given_r = s, r
    shift = (r.sum(dim=0, dtype=torch.float64) / n_r).float()
    s, r = s - shift, r - shift
    block = block or default_block(device)
    s_sq, r_sq = _squared_norms(s), _squared_norms(r)
    ref_k = max((rank for name, rank in k.items() if _RADII_OF[name] == "reference"), default=0)
    ref_radii = _Radii(r, r_sq, ref_k, block, given_r) if ref_k else None
    sample_radii = _Radii(s, s_sq, k["recall"], block, given_s) if "recall" in k else None
    radii = {name: sample_radii if _RADII_OF[name] == "samples" else ref_radii for name in k}
    # Per ball: its float32 radius, and the round-off bound of that radius plus that of the
    # distances to it (its centre's squared norm plus the largest of the other side's).
    r_sq_max, s_sq_max = r_sq.max().double(), s_sq.max().double()
    approx, band = {}, {}
    for name, rank in k.items():
        balls = radii[name]
        assert balls is not None
        other_max = r_sq_max if _RADII_OF[name] == "samples" else s_sq_max
        approx[name] = balls.approx(rank)
        band[name] = balls.error(rank) + (balls.x_sq.double() + other_max) * FLOAT32_BAND

    in_reference = torch.zeros(n_s, dtype=torch.bool, device=device)  # precision
    in_samples = torch.zeros(n_r, dtype=torch.bool, device=device)  # recall
    balls_holding = torch.zeros((), dtype=torch.int64, device=device)  # density
    covered = torch.zeros(n_r, dtype=torch.bool, device=device)  # coverage
    parts = _row_blocks(n_s, n_r, block)
    if set(k) <= {"precision", "recall"}:
        in_reference, in_samples = _precision_recall(
            _Sets(s, r, s_sq, r_sq, given_s, given_r),
            k,
            closed,
            radii,
            approx,
            band,
            _row_blocks(n_s, n_r, CROSS_BLOCKS * block),
        )
    else:
        buffer = torch.empty((max(i1 - i0 for i0, i1 in parts), n_r), device=device)
        with progress_bar(len(parts), "manifold comparisons", "blocks") as bar:
            for i0, i1 in parts:
                # (samples of the block, every reference point)
                d = _squared_distances(s[i0:i1], r, s_sq[i0:i1], r_sq, out=buffer[: i1 - i0])
                for name, rank in k.items():
                    balls = radii[name]

                    def exact(
                        rows: torch.Tensor,
                        cols: torch.Tensor,
                        i0: int = i0,
                        balls: _Radii = balls,  # type: ignore[assignment]
                        rank: int = rank,
                        on_rows: bool = name == "recall",
                    ) -> tuple[torch.Tensor, torch.Tensor]:
                        e = exact_squared_distances(given_s, given_r, rows + i0, cols)
                        return e, balls.exact(rank, rows + i0 if on_rows else cols)

                    if name == "recall":
                        ball, width = approx[name][i0:i1, None], band[name][i0:i1, None]
                        in_samples |= _inside(d, ball, width, closed[name], exact).any(dim=0)
                        continue
                    inside = _inside(
                        d, approx[name][None, :], band[name][None, :], closed[name], exact
                    )
                    if name == "precision":
                        in_reference[i0:i1] = inside.any(dim=1)
                    elif name == "density":
                        balls_holding += inside.sum()
                    else:
                        covered |= inside.any(dim=0)
                bar.update(1)
    out: dict[str, float] = {}
    for name in k:
        if name == "precision":
            out[name] = float(in_reference.double().mean())
        elif name == "recall":
            out[name] = float(in_samples.double().mean())
        elif name == "density":
            out[name] = float(balls_holding) / (k[name] * n_s)
        else:
            out[name] = float(covered.double().mean())
    return out


def precision(samples: ArrayLike, reference: ArrayLike, k: int = 3, **kwargs: Any) -> float:
    """Fraction of samples inside the reference's k-NN manifold (Kynkäänniemi et al. 2019).

    ``mean_j 1[∃i: ‖y_j − x_i‖ ≤ r_k(x_i)]``; see :func:`manifold_metrics` for the
    keywords and when not to trust the number. Equals torch-fidelity's ``prc`` precision.
    """
    return manifold_metrics(samples, reference, {"precision": k}, **kwargs)["precision"]


def recall(samples: ArrayLike, reference: ArrayLike, k: int = 3, **kwargs: Any) -> float:
    """Fraction of reference points inside the samples' k-NN manifold (Kynkäänniemi et al.).

    ``mean_i 1[∃j: ‖x_i − y_j‖ ≤ r_k(y_j)]``; see :func:`manifold_metrics`. Equals
    torch-fidelity's ``prc`` recall.
    """
    return manifold_metrics(samples, reference, {"recall": k}, **kwargs)["recall"]


def density(samples: ArrayLike, reference: ArrayLike, k: int = 5, **kwargs: Any) -> float:
    """Mean number of reference balls holding a sample, over k (Naeem et al. 2020).

    ``(1/(k n_s)) Σ_j Σ_i 1[‖y_j − x_i‖ < r_k(x_i)]``: about 1 when samples follow the
    reference distribution, above 1 when they crowd into dense regions; see
    :func:`manifold_metrics`. Equals ``prdc.compute_prdc``'s density.
    """
    return manifold_metrics(samples, reference, {"density": k}, **kwargs)["density"]


def coverage(samples: ArrayLike, reference: ArrayLike, k: int = 5, **kwargs: Any) -> float:
    """Fraction of reference balls holding at least one sample (Naeem et al. 2020).

    ``mean_i 1[min_j ‖x_i − y_j‖ < r_k(x_i)]``; see :func:`manifold_metrics`. Equals
    ``prdc.compute_prdc``'s coverage.
    """
    return manifold_metrics(samples, reference, {"coverage": k}, **kwargs)["coverage"]


# -- The ADM evaluator's precision and recall (``protocol=adm``) -------------------------------

#: Rows and columns of one block of the ADM evaluator's ``ManifoldEstimator``
#: (``row_batch_size = col_batch_size = 10000``): it picks float16 or float32 per block.
ADM_BLOCK = 10000
#: At most this many distances are held at once within one ADM block (64 MiB of float32).
_ADM_CHUNK_ELEMENTS = 1 << 24


class _AdmSet(NamedTuple):
    """One feature set as the ADM distance graph reads it: float32, its float16 cast, and the
    squared norms of each (``tf.reduce_sum(tf.square(·), 1)``)."""

    x: torch.Tensor
    x16: torch.Tensor
    sq16: torch.Tensor
    sq32: torch.Tensor


def tf_gpu_row_sums_float16(values: torch.Tensor) -> torch.Tensor:
    """TensorFlow's GPU ``tf.reduce_sum(values, 1)`` of a float16 matrix (n, d): (n,) float16.

    TensorFlow reduces float16 sums with a float16 accumulator (``Sum<half>``, where its
    ``MeanReducer<half>`` accumulates in float32), in its kernels' order: rows of at least 1024
    columns go to CUB's ``DeviceSegmentedReduce`` with 256 threads per row (below one tile, as
    for 2048-d features, thread ``t`` adds items ``t, t + 256, …`` in turn), shorter rows to
    ``RowReduceKernel`` with one warp (lane ``l`` adds ``l, l + 32, …``); each warp adds its 32
    lanes as a tree of adjacent pairs (shuffle offsets 1, 2, 4, 8, 16) and the warp totals
    are added in order. Every addition here is a float16 addition in that order, so the sums
    are TensorFlow's bit for bit; zero padding stands for lanes without an item (x + 0 = x).
    """
    import torch.nn.functional as F

    n, d = values.shape
    threads = 256 if d >= 1024 else 32
    padded = F.pad(values, (0, (-d) % threads))
    parts = padded.reshape(n, -1, threads)
    acc = parts[:, 0].clone()
    for i in range(1, parts.shape[1]):
        acc += parts[:, i]
    warps = acc.reshape(n, -1, 32)
    while warps.shape[2] > 1:
        warps = warps[:, :, 0::2] + warps[:, :, 1::2]
    out = warps[:, 0, 0].clone()
    for w in range(1, warps.shape[1]):
        out += warps[:, w, 0]
    return out


def _adm_set(x: torch.Tensor) -> _AdmSet:
    """``x`` with its float16 cast (round to nearest even; beyond ±65504 it is ±inf, as
    ``tf.cast``) and both squared norms: the float16 one squares in float16 and sums in
    float16 as TensorFlow's GPU kernel does (:func:`tf_gpu_row_sums_float16`), in chunks of
    rows."""
    import torch

    x16 = x.half()
    sq16 = torch.empty(x.shape[0], dtype=torch.float16, device=x.device)
    step = max(1, _ADM_CHUNK_ELEMENTS // max(x.shape[1], 1))
    for i in range(0, x.shape[0], step):
        rows = x16[i : i + step]
        sq16[i : i + step] = tf_gpu_row_sums_float16(rows * rows)
    sq32 = (x * x).sum(dim=1)
    return _AdmSet(x, x16, sq16, sq32)


def adm_squared_distances(u: _AdmSet, v: _AdmSet, half: bool) -> torch.Tensor:
    """The ADM evaluator's ``_batch_pairwise_distances(U, V)``: ``max(‖u‖² − 2 uᵀv + ‖v‖², 0)``.

    With ``half``, each op as TensorFlow evaluates it on float16 tensors on a GPU: the norms
    of :func:`_adm_set`; the product ``uᵀv`` of float16 values is exact in float32,
    accumulated in float32 (cuBLAS with float32 compute, TensorFlow's default for float16
    matmuls) and rounded once to float16; ``‖u‖² − 2 uᵀv`` and ``… + ‖v‖²`` are each rounded
    to float16; an overflow gives inf. Without, the same expression in float32. Returned as a
    float16 or float32 tensor (len(u), len(v)).
    """
    import torch

    if half:
        m = torch.mm(u.x16.float(), v.x16.float().T).half()
        d = u.sq16[:, None] - m * 2
    else:
        d = u.sq32[:, None] - torch.mm(u.x, v.x.T) * 2
    return d.add_(v.sq16[None, :] if half else v.sq32[None, :]).clamp_min_(0.0)


def _adm_block(
    u: _AdmSet,
    rows: tuple[int, int],
    v: _AdmSet,
    cols: tuple[int, int],
    consume: Callable[[int, int, torch.Tensor], Any],
) -> list[Any]:
    """``consume(r0, r1, d)`` over the rows of one ADM block, ``d`` the block's squared
    distances of rows ``r0:r1`` of ``u`` to columns ``cols`` of ``v`` as float32, as
    ``DistanceBlock`` gives them: float16 values when every entry of the whole block is finite,
    else the float32 expression. Rows are taken in chunks of at most
    :data:`_ADM_CHUNK_ELEMENTS` distances; a chunk with a non-finite float16 entry discards
    the results so far and the block is computed again in float32. Returns consume's results.
    """
    import torch

    (i0, i1), (j0, j1) = rows, cols
    v_block = _AdmSet(*(t[j0:j1] for t in v))
    step = max(1, _ADM_CHUNK_ELEMENTS // max(j1 - j0, 1))
    for half in (True, False):
        results = []
        for r0 in range(i0, i1, step):
            r1 = min(r0 + step, i1)
            u_rows = _AdmSet(*(t[r0:r1] for t in u))
            d = adm_squared_distances(u_rows, v_block, half)
            if half and not bool(torch.isfinite(d).all()):
                break
            results.append(consume(r0, r1, d.float()))
        else:
            return results
    raise AssertionError("unreachable: the float32 pass always completes")


def _adm_edges(n: int) -> list[tuple[int, int]]:
    return [(i, min(i + ADM_BLOCK, n)) for i in range(0, n, ADM_BLOCK)]


def adm_manifold_radii(x: _AdmSet, k: int) -> torch.Tensor:
    """``ManifoldEstimator.manifold_radii`` with ``nhood_sizes=(k,)``: per point, the
    (k + 1)-th smallest squared distance of its row, its own distance counted (near 0, not
    always exactly 0 in float16), float32 (n,). Each row keeps its k + 1 smallest values
    over the column blocks: the same values as ADM's ``np.partition`` of the whole row."""
    import torch

    n = x.x.shape[0]
    radii = torch.empty(n, device=x.x.device)
    for rows in _adm_edges(n):
        best: torch.Tensor | None = None
        for cols in _adm_edges(n):
            keep = min(k + 1, cols[1] - cols[0])
            parts = _adm_block(
                x, rows, x, cols, lambda r0, r1, d, keep=keep: d.topk(keep, dim=1, largest=False)[0]
            )
            smallest = torch.cat(parts)
            if best is not None:
                smallest = torch.cat([best, smallest], dim=1)
            best = smallest.topk(min(k + 1, smallest.shape[1]), dim=1, largest=False)[0]
        assert best is not None
        radii[rows[0] : rows[1]] = best.max(dim=1).values
    return radii


def adm_precision_recall(
    samples: ArrayLike,
    reference: ArrayLike,
    k: Mapping[str, int] | None = None,
    *,
    device: torch.device | str | None = None,
) -> dict[str, float]:
    """Precision and recall as the ADM evaluator computes them (``compute_prec_recall``).

    ``ManifoldEstimator`` of ``openai/guided-diffusion/evaluations/evaluator.py``:

    * radii: per point, the squared distance to its k-th neighbour counting itself as the
      0-th (:func:`adm_manifold_radii`; k = 3, ``nhood_sizes=(3,)``), the reference's and the
      samples' from their own sets;
    * precision: the fraction of samples ``y`` with ``d²(x, y) ≤ r²(x)`` for some reference
      ``x``; recall: the fraction of reference points ``x`` with ``d²(x, y) ≤ r²(y)`` for some
      sample ``y`` (closed balls);
    * distances: ``max(‖x‖² − 2 xᵀy + ‖y‖², 0)`` in float16 with x the row (reference in
      the P/R pass), in blocks of :data:`ADM_BLOCK` × :data:`ADM_BLOCK`; a block with a
      non-finite float16 entry is computed in float32 instead (:func:`adm_squared_distances`).

    The float16 emulation rounds what TensorFlow rounds on a GPU, where it rounds, the norms'
    float16 additions in its kernel's order included (:func:`tf_gpu_row_sums_float16`); it can
    differ from a TensorFlow run only where a dot product's float32 accumulation, summed in
    another order, lands on the other side of a float16 rounding boundary (about 1e-4 of the
    distances, by one unit in the last place), and in the float32 fallback blocks by float32
    round-off. TensorFlow on a CPU sums in another order again.

    Parameters
    ----------
    samples, reference
        Feature vectors (n_s, d) and (n_r, d): the FID Inception's pool features for ADM's
        numbers. The reference is ADM's reference batch (10 000 images for ImageNet).
    k
        ``{"precision": k, "recall": k}`` or one of them (default both with k = 3): the
        neighbour rank of the reference's balls (precision) and of the samples' (recall).
    device
        Where to compute; default the device of ``samples`` when it is a tensor, else the CPU.

    Returns
    -------
    dict
        ``{metric: value}`` for every key of ``k``.
    """
    import torch

    k = dict(k or {"precision": 3, "recall": 3})
    unknown = sorted(set(k) - {"precision", "recall"})
    if unknown:
        raise InputError(f"adm_precision_recall: unknown metrics {', '.join(unknown)}")
    s, r, device = _feature_pair(samples, reference, device)
    n_s, n_r = s.shape[0], r.shape[0]
    if "precision" in k:
        _check_k("precision", k["precision"], n_r, "reference")
    if "recall" in k:
        _check_k("recall", k["recall"], n_s, "sample")
    ref, smp = _adm_set(r), _adm_set(s)
    ref_radii = adm_manifold_radii(ref, k["precision"]) if "precision" in k else None
    smp_radii = adm_manifold_radii(smp, k["recall"]) if "recall" in k else None
    ref_in = torch.zeros(n_r, dtype=torch.bool, device=device)  # recall
    smp_in = torch.zeros(n_s, dtype=torch.bool, device=device)  # precision
    ref_edges, smp_edges = _adm_edges(n_r), _adm_edges(n_s)
    with progress_bar(len(ref_edges) * len(smp_edges), "ADM manifold comparisons", "blocks") as bar:
        for rows in ref_edges:
            for cols in smp_edges:
                j0, j1 = cols

                def decide(
                    r0: int, r1: int, d: torch.Tensor, j0: int = j0, j1: int = j1
                ) -> tuple[int, int, torch.Tensor | None, torch.Tensor | None]:
                    # rows: reference points r0:r1; columns: samples j0:j1
                    in_samples = in_reference = None
                    if smp_radii is not None:
                        in_samples = (d <= smp_radii[None, j0:j1]).any(dim=1)
                    if ref_radii is not None:
                        in_reference = (d <= ref_radii[r0:r1, None]).any(dim=0)
                    return r0, r1, in_samples, in_reference

                for r0, r1, in_samples, in_reference in _adm_block(ref, rows, smp, cols, decide):
                    if in_samples is not None:
                        ref_in[r0:r1] |= in_samples
                    if in_reference is not None:
                        smp_in[j0:j1] |= in_reference
                bar.update(1)
    out: dict[str, float] = {}
    if "precision" in k:
        out["precision"] = float(smp_in.double().mean())
    if "recall" in k:
        out["recall"] = float(ref_in.double().mean())
    return out


# -- The four metric plugins share one computation per run ------------------------------------


def _run_ranks(
    inputs: MetricInputs, own: str, k: int, n_s: int, n_r: int, protocol: str = "geneval"
) -> dict[str, int]:
    """The k of every manifold metric of this run under the same ``protocol`` whose k is valid
    for these sets, own first.

    Metrics with an invalid k are left out here, so each reports its own error.
    """
    ranks = {own: k}
    run_options = getattr(inputs, "run_options", None) or {}
    for name in MANIFOLD_METRICS:
        options = run_options.get(name)
        if name == own or not options or "k" not in options:
            continue
        if options.get("protocol", "geneval") != protocol:
            continue
        n = n_s if _RADII_OF[name] == "samples" else n_r
        if isinstance(options["k"], int) and 1 <= options["k"] < n:
            ranks[name] = options["k"]
    return ranks


def _run_boundaries(
    inputs: MetricInputs, own: str, boundary: str, ranks: Mapping[str, int]
) -> dict[str, str]:
    """The ``boundary`` of every manifold metric in ``ranks``: its run option, else its
    default (:data:`DEFAULT_BOUNDARY`); ``own`` takes ``boundary``."""
    run_options = getattr(inputs, "run_options", None) or {}
    out = {}
    for name in ranks:
        given = (run_options.get(name) or {}).get("boundary")
        out[name] = boundary if name == own else given or DEFAULT_BOUNDARY[name]
    return out


def _tensor_key(t: torch.Tensor) -> tuple[Any, ...]:
    """Where a tensor's values live: storage address, layout, dtype and device.

    The memo keeps the tensors alive beside its result, so no other tensor can take their
    storage while the key is in use; two views of the same data share a key.
    """
    return (t.data_ptr(), tuple(t.shape), t.stride(), t.dtype, str(t.device))


class ManifoldMetric:
    """One of ``precision``, ``recall``, ``density``, ``coverage`` as a metric plugin.

    Features default to the ``vgg16`` extractor's ``fc2_relu`` (Kynkäänniemi et al.,
    torch-fidelity). All manifold metrics of one run are computed together on the first call
    (:func:`manifold_metrics` with each one's k, read from ``inputs.run_options``) and kept
    in the run's memo; the others read their value from it. Precision and recall take the
    option ``protocol``: under ``adm`` both come from one :func:`adm_precision_recall`, on
    inception-v3-fid pool features by preference.
    """

    higher_is_better = True
    needs = (
        Need("features", "samples", extractor="vgg16"),
        Need("features", "reference", extractor="vgg16"),
    )
    fields: Mapping[str, str] = {
        "n": "number of sample feature vectors",
        "n_reference": "number of reference feature vectors",
        "boundary": "closed: a point on a ball's boundary is inside (≤); open: it is not (<)",
    }
    uncertainty = None
    feature_space = "vgg16"  # VGG16 fc2 (Kynkäänniemi et al. 2019; Naeem et al. 2020)

    def __init__(self, name: str, default_k: int, interpretation: str) -> None:
        if name not in MANIFOLD_METRICS:
            raise ValueError(f"unknown manifold metric {name!r}")
        self.name = name
        self.interpretation = interpretation
        balls = "the samples'" if _RADII_OF[name] == "samples" else "the reference's"
        self.options: Mapping[str, Option] = {
            "k": Option(
                default_k, f"the k-th nearest neighbour sets the radius of {balls} balls", low=1
            ),
            "boundary": Option(
                DEFAULT_BOUNDARY[name],
                "closed (≤: Kynkäänniemi et al.'s code, torch-fidelity) or open (<: prdc) balls; "
                "they differ only on exact ties such as duplicated samples",
                choices=("closed", "open"),
            ),
        }
        if name in ADM_METRICS:
            self.options = {
                **self.options,
                "protocol": protocol_option(
                    "k-NN balls as its ManifoldEstimator: float16 squared distances with a "
                    "float32 fallback per 10000 × 10000 block, closed balls; prefers "
                    "inception-v3-fid pool features"
                ),
            }

    def feature_space_for(self, options: Mapping[str, Any]) -> str:
        """The space of the published numbers under ``options``: VGG-16 (Kynkäänniemi et al.)
        by default, the FID Inception network's under ``protocol=adm`` (the ADM tables)."""
        if options.get("protocol") == "adm":
            return "inception-v3-fid"
        return self.feature_space

    def needs_for(self, options: Mapping[str, Any]) -> tuple[Need, ...]:
        """VGG-16 features by preference; under ``protocol=adm``, inception-v3-fid's pool
        features by preference (``protocols.protocol_needs``)."""
        return protocol_needs(self.needs, options)

    def compute(
        self,
        inputs: MetricInputs,
        *,
        k: int,
        boundary: str | None = None,
        protocol: str = "geneval",
    ) -> Mapping[str, Any]:
        """``{"value", "k", "n", "n_reference", "boundary"}``, shared with the run's other
        manifold metrics of the same ``protocol`` (``adm``: :func:`adm_precision_recall`)."""
        if protocol == "adm" and boundary == "open":
            raise InputError(
                f"{self.name}: protocol=adm counts a point on a ball's boundary as inside "
                "(<=, as the ADM evaluator); boundary=open is not part of it"
            )
        boundary = boundary or DEFAULT_BOUNDARY[self.name]
        samples = inputs.features("samples")
        reference = inputs.features("reference")
        if samples.ndim != 2 or reference.ndim != 2:
            raise InputError(
                f"{self.name}: features must be (n, d), got {tuple(samples.shape)} and "
                f"{tuple(reference.shape)}"
            )
        if samples.shape[1] != reference.shape[1]:
            raise InputError(
                f"{self.name}: sample and reference features have different widths "
                f"({samples.shape[1]} and {reference.shape[1]})"
            )
        n_s, n_r = samples.shape[0], reference.shape[0]
        if _RADII_OF[self.name] == "samples":
            _check_k(self.name, k, n_s, "sample")
        else:
            _check_k(self.name, k, n_r, "reference")
        ranks = _run_ranks(inputs, self.name, k, n_s, n_r, protocol)
        if protocol == "adm":
            key_adm = (
                "manifold-adm",
                _tensor_key(samples),
                _tensor_key(reference),
                tuple(sorted(ranks.items())),
            )

            def run_adm() -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
                values = adm_precision_recall(samples, reference, ranks, device=inputs.device)
                return samples, reference, values

            return {
                "value": inputs.memo(key_adm, run_adm)[2][self.name],
                "k": k,
                "n": n_s,
                "n_reference": n_r,
                "boundary": "closed",
            }
        boundaries = _run_boundaries(inputs, self.name, boundary, ranks)
        key = (
            "manifold-metrics",
            _tensor_key(samples),
            _tensor_key(reference),
            tuple(sorted(ranks.items())),
            tuple(sorted(boundaries.items())),
        )

        def run() -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
            values = manifold_metrics(
                samples, reference, ranks, boundary=boundaries, device=inputs.device
            )
            return samples, reference, values

        values = inputs.memo(key, run)[2]
        return {
            "value": values[self.name],
            "k": k,
            "n": n_s,
            "n_reference": n_r,
            "boundary": boundary,
        }


__all__ = [
    "ADM_BLOCK",
    "ADM_METRICS",
    "CPU_BLOCK",
    "CROSS_BLOCKS",
    "DEFAULT_BOUNDARY",
    "GPU_BLOCK",
    "MANIFOLD_METRICS",
    "ManifoldMetric",
    "adm_manifold_radii",
    "adm_precision_recall",
    "adm_squared_distances",
    "coverage",
    "default_block",
    "density",
    "exact_squared_distances",
    "manifold_metrics",
    "nearest_neighbour_radii",
    "pairwise_distances",
    "precision",
    "recall",
    "tf_gpu_row_sums_float16",
]
