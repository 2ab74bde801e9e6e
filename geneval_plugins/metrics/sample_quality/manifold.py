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

Precision and recall compare with ``≤`` as Kynkäänniemi et al.'s code and torch-fidelity's
``prc`` do; density and coverage with ``<`` as Naeem et al.'s ``prdc`` package does. The two
differ only on exact ties (duplicated feature vectors).

Distances are Euclidean, float32, from the matrix-product form that :func:`torch.cdist`
uses for large inputs, ``‖x‖² + ‖y‖² − 2 xᵀy`` (:func:`pairwise_distances`; decisions compare
squared distances with squared radii, the square root being monotone), for a block of rows
against all columns at a time, on the features' device: memory stays at one
block of at most ``block`` rows and :data:`MAX_BLOCK_ELEMENTS` distances, whatever n (never an
n × n matrix). The radii come from one pass over each set that keeps each point's ``k_max``
nearest distances (:func:`nearest_neighbour_radii`; the set's distance matrix is symmetric,
so each block of rows is only compared with itself and the rows after it); every metric then
reads its own k-th radius. One pass over the sample × reference blocks then decides all four
metrics at once (:func:`manifold_metrics`).

References
----------
.. [1] T. Kynkäänniemi, T. Karras, S. Laine, J. Lehtinen, T. Aila, "Improved Precision and
   Recall Metric for Assessing Generative Models", NeurIPS 2019.
.. [2] M. F. Naeem, S. J. Oh, Y. Uh, Y. Choi, J. Yoo, "Reliable Fidelity and Diversity
   Metrics for Generative Models", ICML 2020.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, progress_bar

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray


#: The four metrics, in the order their results are listed.
MANIFOLD_METRICS = ("precision", "recall", "density", "coverage")
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
#: At most this many distances in one block: 256 MiB of float32.
MAX_BLOCK_ELEMENTS = 1 << 26


def default_block(device: torch.device) -> int:
    """The rows per block used on ``device``: :data:`CPU_BLOCK`, or :data:`GPU_BLOCK` off the
    CPU."""
    return CPU_BLOCK if device.type == "cpu" else GPU_BLOCK


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
    x: torch.Tensor, y: torch.Tensor, x_sq: torch.Tensor, y_sq: torch.Tensor
) -> torch.Tensor:
    """``‖x_i‖² + ‖y_j‖² − 2 x_iᵀy_j`` (m, n), float32, not clamped (may be slightly < 0)."""
    import torch

    return torch.addmm(y_sq.unsqueeze(0), x, y.T, alpha=-2.0).add_(x_sq.unsqueeze(1))


def _squared_norms(x: torch.Tensor) -> torch.Tensor:
    return (x * x).sum(dim=1)


def _keep_smallest(best: torch.Tensor, distances: torch.Tensor, k: int) -> torch.Tensor:
    """The ``k`` smallest of each row of ``best`` (m, k) and ``distances`` (m, c), ascending."""
    import torch

    take = min(k, distances.shape[1])
    candidates = torch.cat([best, distances.topk(take, dim=1, largest=False).values], dim=1)
    return candidates.topk(k, dim=1, largest=False).values


def nearest_neighbour_radii(
    features: ArrayLike,
    k: int,
    *,
    device: torch.device | str | None = None,
    block: int | None = None,
) -> torch.Tensor:
    """Distances from each point to its 1st … k-th nearest neighbour in the same set.

    ``out[i, m − 1] = r_m(x_i)``, the m-th smallest of ``‖x_i − x_j‖`` over ``j ≠ i`` (the
    point itself excluded; a duplicate of it counts, at distance 0), as float32 from
    :func:`pairwise_distances`. This is the ``(k + 1)``-th smallest distance when the point itself
    is counted, as torch-fidelity (``kthvalue(k + 1)``) and ``prdc`` take it.

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
        (n, k) float32 on ``device``, each row ascending.

    Notes
    -----
    The n × n distance matrix is symmetric: the distances of a block of rows ``I`` to the
    rows from ``I`` on are computed once and serve the rows of ``I`` and, by columns, the
    later rows, which costs about ``(T + 1) / (2T)`` of the full matrix for ``T`` blocks.
    """
    import torch

    if device is None:
        device = features.device if isinstance(features, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    x = _as_features(features, "features", device)
    n = x.shape[0]
    if not 1 <= k < n:
        raise InputError(f"k={k} must be at least 1 and below the number of feature vectors {n}")
    squared = _squared_radii(x, _squared_norms(x), k, block or default_block(device))
    return squared.sqrt_()


def _squared_radii(x: torch.Tensor, x_sq: torch.Tensor, k: int, block: int) -> torch.Tensor:
    """The squares of :func:`nearest_neighbour_radii` of checked features ``x`` (squared
    norms ``x_sq``), clamped at 0."""
    import torch

    n = x.shape[0]
    parts = _row_blocks(n, n, block)
    best = torch.full((n, k), math.inf, device=x.device)
    with progress_bar(len(parts), "nearest neighbours", "blocks") as bar:
        for i0, i1 in parts:
            # Rows I against themselves and every later row.
            d = _squared_distances(x[i0:i1], x[i0:], x_sq[i0:i1], x_sq[i0:])
            d[:, : i1 - i0].fill_diagonal_(math.inf)
            best[i0:i1] = _keep_smallest(best[i0:i1], d, k)
            if i1 < n:  # the same distances, by columns, for the later rows
                later = d[:, i1 - i0 :].topk(min(k, i1 - i0), dim=0, largest=False).values
                best[i1:] = _keep_smallest(best[i1:], later.T, k)
            bar.update(1)
    return best.clamp_min_(0.0)


def _check_k(name: str, k: int, n: int, source: str) -> None:
    if not 1 <= k < n:
        raise InputError(
            f"{name}: k={k} must be at least 1 and below the number of {source} "
            f"feature vectors ({n})"
        )


def manifold_metrics(
    samples: ArrayLike,
    reference: ArrayLike,
    k: Mapping[str, int],
    *,
    device: torch.device | str | None = None,
    block: int | None = None,
) -> dict[str, float]:
    """Any of precision, recall, density and coverage, each with its own k, in one pass.

    See the module docstring for the definitions. Radii come from one
    :func:`nearest_neighbour_radii` pass per set up to the largest k that reads that set's
    radii (the reference's for precision, density and coverage, the samples' for recall);
    then one pass over the sample × reference distance blocks decides every metric.

    Parameters
    ----------
    samples, reference
        Feature vectors (n_s, d) and (n_r, d) of the same width ``d``.
    k
        The metrics wanted and their neighbour rank, e.g. ``{"precision": 3, "recall": 3}``;
        keys from :data:`MANIFOLD_METRICS`. k must be below the number of points whose
        balls the metric counts (n_r, or n_s for recall).
    device
        Where to compute; default the device of ``samples`` when it is a tensor, else the CPU.
    block
        Rows per distance block (default :func:`default_block`).

    Returns
    -------
    dict
        ``{metric: value}`` for every key of ``k``.

    Notes
    -----
    With few points the manifolds are coarse: each ball is set by k neighbours, so values
    move in steps of ``1/n`` and carry a sampling error of order ``1/√n``. Kynkäänniemi et al.
    use 50 000 points per set; compare numbers only at equal n, k and feature extractor.
    Float32 distances from different implementations differ by ~1e-6 relative, which can
    flip a decision that lies that close to a ball's boundary (a change of ``1/n``).

    References
    ----------
    .. [1] Kynkäänniemi et al., NeurIPS 2019 (precision, recall).
    .. [2] Naeem et al., ICML 2020 (density, coverage).
    """
    import torch

    unknown = sorted(set(k) - set(MANIFOLD_METRICS))
    if unknown:
        raise InputError(f"manifold_metrics: unknown metrics {', '.join(unknown)}")
    if device is None:
        device = samples.device if isinstance(samples, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    s = _as_features(samples, "sample features", device)
    r = _as_features(reference, "reference features", device)
    if s.shape[1] != r.shape[1]:
        raise InputError(
            f"sample and reference features have different widths ({s.shape[1]} and {r.shape[1]})"
        )
    n_s, n_r = s.shape[0], r.shape[0]
    for name, rank in k.items():
        if _RADII_OF[name] == "samples":
            _check_k(name, rank, n_s, "sample")
        else:
            _check_k(name, rank, n_r, "reference")
    block = block or default_block(device)
    s_sq, r_sq = _squared_norms(s), _squared_norms(r)
    ref_k = max((rank for name, rank in k.items() if _RADII_OF[name] == "reference"), default=0)
    ref_radii = _squared_radii(r, r_sq, ref_k, block) if ref_k else None
    sample_radii = _squared_radii(s, s_sq, k["recall"], block) if "recall" in k else None

    def radius(name: str) -> torch.Tensor:
        """The squared k-th neighbour radius of each ball ``name`` counts in."""
        radii = sample_radii if _RADII_OF[name] == "samples" else ref_radii
        return radii[:, k[name] - 1]  # type: ignore[index]

    in_reference = torch.zeros(n_s, dtype=torch.bool, device=device)  # precision
    in_samples = torch.zeros(n_r, dtype=torch.bool, device=device)  # recall
    balls_holding = torch.zeros((), dtype=torch.int64, device=device)  # density
    nearest_sample = torch.full((n_r,), math.inf, device=device)  # coverage (squared)
    parts = _row_blocks(n_s, n_r, block)
    strict = "density" in k or "coverage" in k
    with progress_bar(len(parts), "manifold comparisons", "blocks") as bar:
        for i0, i1 in parts:
            # (samples of the block, every reference point)
            d = _squared_distances(s[i0:i1], r, s_sq[i0:i1], r_sq)
            if strict:  # round-off below 0 must not pass a strict test against a 0 radius
                d.clamp_min_(0.0)
            if "precision" in k:
                in_reference[i0:i1] = (d <= radius("precision")).any(dim=1)
            if "recall" in k:
                in_samples |= (d <= radius("recall")[i0:i1, None]).any(dim=0)
            if "density" in k:
                balls_holding += (d < radius("density")).sum()
            if "coverage" in k:
                torch.minimum(nearest_sample, d.min(dim=0).values, out=nearest_sample)
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
            out[name] = float((nearest_sample < radius("coverage")).double().mean())
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


# -- The four metric plugins share one computation per run ------------------------------------


def _run_ranks(inputs: MetricInputs, own: str, k: int, n_s: int, n_r: int) -> dict[str, int]:
    """The k of every manifold metric of this run whose k is valid for these sets, own first.

    Metrics with an invalid k are left out here, so each reports its own error.
    """
    ranks = {own: k}
    run_options = getattr(inputs, "run_options", None) or {}
    for name in MANIFOLD_METRICS:
        options = run_options.get(name)
        if name == own or not options or "k" not in options:
            continue
        n = n_s if _RADII_OF[name] == "samples" else n_r
        if isinstance(options["k"], int) and 1 <= options["k"] < n:
            ranks[name] = options["k"]
    return ranks


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
    in the run's memo; the others read their value from it.
    """

    higher_is_better = True
    needs = (
        Need("features", "samples", extractor="vgg16"),
        Need("features", "reference", extractor="vgg16"),
    )
    fields: Mapping[str, str] = {
        "n": "number of sample feature vectors",
        "n_reference": "number of reference feature vectors",
    }
    uncertainty = None

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
        }

    def compute(self, inputs: MetricInputs, *, k: int) -> Mapping[str, Any]:
        """``{"value", "k", "n", "n_reference"}``, shared with the run's other manifold metrics."""
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
        ranks = _run_ranks(inputs, self.name, k, n_s, n_r)
        key = (
            "manifold-metrics",
            _tensor_key(samples),
            _tensor_key(reference),
            tuple(sorted(ranks.items())),
        )

        def run() -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
            values = manifold_metrics(samples, reference, ranks, device=inputs.device)
            return samples, reference, values

        values = inputs.memo(key, run)[2]
        return {"value": values[self.name], "k": k, "n": n_s, "n_reference": n_r}


__all__ = [
    "CPU_BLOCK",
    "GPU_BLOCK",
    "MANIFOLD_METRICS",
    "ManifoldMetric",
    "coverage",
    "default_block",
    "density",
    "manifold_metrics",
    "nearest_neighbour_radii",
    "pairwise_distances",
    "precision",
    "recall",
]
