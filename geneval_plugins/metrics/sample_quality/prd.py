"""Metric ``prd``: precision and recall for distributions (Sajjadi et al. 2018).

The sample and reference features are clustered together by k-means; the two histograms over
the clusters give discrete distributions Q (samples) and P (reference), and the PRD curve is
``α(λ) = Σᵢ min(λ Pᵢ, Qᵢ)``, ``β(λ) = α(λ) / λ`` over the slopes ``λ = tan θ`` of an
equiangular grid of θ in (0, π/2). The curve is averaged over several clusterings; F₈ and
F₁/₈, the largest F_β scores of its points, summarise it as recall-like and precision-like
numbers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl, progress_bar

if TYPE_CHECKING:
    import numpy as np
    import torch

#: The edge angle of the grid: θ runs from ε to π/2 − ε (the reference's ``epsilon``).
ANGLE_EPSILON = 1e-10
#: Added to the denominator of F_β, as the reference does (no division by 0 at p = r = 0).
F_BETA_EPSILON = 1e-10
#: Slopes handled at once by :func:`prd_curve` (bounds its num_angles × clusters temporaries).
ANGLE_CHUNK = 65_536
#: k-means restarts per clustering (scikit-learn's ``MiniBatchKMeans(n_init=10)``, as the
#: reference calls it).
KMEANS_RESTARTS = 10


@dataclass(frozen=True)
class PRD:
    """A PRD curve averaged over runs, and its F_β summaries."""

    precision: np.ndarray  # (num_angles,) float64, α(λ) averaged over runs
    recall: np.ndarray  # (num_angles,) float64, β(λ) averaged over runs
    f_beta: float  # max F_β: recall-like
    f_beta_inv: float  # max F_{1/β}: precision-like


def prd_curve(
    eval_dist: torch.Tensor, ref_dist: torch.Tensor, num_angles: int = 1001
) -> tuple[torch.Tensor, torch.Tensor]:
    """PRD curves ``(precision, recall)``, each (runs, num_angles), of histograms (runs, k).

    For the slopes ``λ = tan θ``, θ on ``num_angles`` equally spaced angles in
    ``[ε, π/2 − ε]`` (ε = 1e-10): ``precision(λ) = Σᵢ min(λ refᵢ, evalᵢ)`` and
    ``recall(λ) = precision(λ) / λ`` (Sajjadi et al. 2018, Theorem 2), clipped to [0, 1]
    (float64; the angles in chunks of :data:`ANGLE_CHUNK`).
    """
    import numpy as np
    import torch

    if not 3 <= num_angles <= 1_000_000:
        raise InputError(f"prd: num_angles must be in [3, 1e6], got {num_angles}")
    device = eval_dist.device
    angles = np.linspace(ANGLE_EPSILON, np.pi / 2 - ANGLE_EPSILON, num=num_angles)
    slopes = torch.from_numpy(np.tan(angles)).to(device)
    ref = ref_dist.to(torch.float64)
    ev = eval_dist.to(torch.float64)
    parts = []
    for start in range(0, num_angles, ANGLE_CHUNK):
        lam = slopes[start : start + ANGLE_CHUNK]
        # (runs, 1, k) · (1, a, 1) against (runs, 1, k) → (runs, a, k), summed over clusters
        scaled = ref[:, None, :] * lam[None, :, None]
        parts.append(torch.minimum(scaled, ev[:, None, :]).sum(dim=2))
    precision = torch.cat(parts, dim=1)
    recall = precision / slopes
    return precision.clamp(0, 1), recall.clamp(0, 1)


def max_f_beta_pair(
    precision: torch.Tensor, recall: torch.Tensor, beta: float = 8.0
) -> tuple[float, float]:
    """``(max F_β, max F_{1/β})`` over the points of a PRD curve.

    ``F_β = (1 + β²) p r / (β² p + r + ε)`` with ε = 1e-10 (the reference's
    ``prd_to_max_f_beta_pair``). F_β with β = 8 weighs recall more and reads as recall,
    F_{1/β} as precision (Sajjadi et al. 2018, §4).
    """
    if beta <= 0:
        raise InputError(f"prd: beta must be positive, got {beta}")

    def f(b: float) -> float:
        scores = (1 + b**2) * (precision * recall) / ((b**2 * precision) + recall + F_BETA_EPSILON)
        return float(scores.max())

    return f(beta), f(1 / beta)


def cluster_histograms(
    eval_data: np.ndarray, ref_data: np.ndarray, num_clusters: int, random_state: int
) -> tuple[np.ndarray, np.ndarray]:
    """Histograms (each summing to 1) of the k-means clusters of ``eval_data`` and
    ``ref_data``, clustered together.

    scikit-learn's ``MiniBatchKMeans(n_clusters, n_init=10, random_state)`` on the stacked
    float64 features, as the reference clusters them (it leaves ``random_state`` unset); the
    histograms are the cluster counts divided by each side's size (``numpy.histogram`` with
    ``density=True`` and unit bins).
    """
    import numpy as np
    from sklearn.cluster import MiniBatchKMeans

    kmeans = MiniBatchKMeans(
        n_clusters=num_clusters, n_init=KMEANS_RESTARTS, random_state=random_state
    )
    labels = kmeans.fit(np.vstack([eval_data, ref_data])).labels_
    n = len(eval_data)
    eval_counts = np.bincount(labels[:n], minlength=num_clusters)
    ref_counts = np.bincount(labels[n:], minlength=num_clusters)
    return eval_counts / eval_counts.sum(), ref_counts / ref_counts.sum()


def compute_prd(
    eval_data: Any,
    ref_data: Any,
    *,
    num_clusters: int = 20,
    num_angles: int = 1001,
    num_runs: int = 10,
    enforce_balance: bool = True,
    beta: float = 8.0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> PRD:
    """PRD curve of samples ``eval_data`` (n, d) against ``ref_data`` (m, d), averaged over runs.

    Each of ``num_runs`` runs clusters the union of both sets into ``num_clusters`` cells
    (:func:`cluster_histograms`, ``random_state = seed + i`` for run ``i``), and computes the
    PRD curve of the two histograms (:func:`prd_curve`); precision and recall are averaged
    over runs, then summarised by :func:`max_f_beta_pair`. This is
    ``compute_prd_from_embedding`` and ``prd_to_max_f_beta_pair`` of the reference
    (msmsajjadi/precision-recall-distributions), whose clustering is unseeded.

    With ``enforce_balance`` (the reference's default) the two sets must be of equal size: an
    unbalanced union biases the clustering towards the larger set.

    References
    ----------
    .. [1] M. S. M. Sajjadi, O. Bachem, M. Lucic, O. Bousquet, S. Gelly, "Assessing Generative
       Models via Precision and Recall", NeurIPS 2018.
    """
    import numpy as np
    import torch

    x = _as_points(eval_data, "samples")
    y = _as_points(ref_data, "reference")
    if x.shape[1] != y.shape[1]:
        raise InputError(
            f"prd: sample features are {x.shape[1]}-d but reference features {y.shape[1]}-d"
        )
    if enforce_balance and len(x) != len(y):
        raise InputError(
            f"prd: {len(x)} samples against {len(y)} reference points; the reference method "
            "needs equal counts (an unbalanced union biases the clustering); give as many "
            "samples as reference images, or set prd.enforce_balance=false (not recommended)"
        )
    if num_clusters > len(x) + len(y):
        raise InputError(
            f"prd: num_clusters={num_clusters} exceeds the {len(x) + len(y)} points clustered"
        )
    device = torch.device(device) if device is not None else torch.device("cpu")
    eval_dists, ref_dists = [], []
    with progress_bar(total=num_runs, desc="prd", unit="run") as bar:
        for i in range(num_runs):
            e, r = cluster_histograms(x, y, num_clusters, seed + i)
            eval_dists.append(e)
            ref_dists.append(r)
            bar.update(1)
    ev = torch.from_numpy(np.stack(eval_dists)).to(device)
    ref = torch.from_numpy(np.stack(ref_dists)).to(device)
    precision, recall = prd_curve(ev, ref, num_angles)
    precision, recall = precision.mean(dim=0), recall.mean(dim=0)
    f_beta, f_beta_inv = max_f_beta_pair(precision, recall, beta)
    return PRD(precision.cpu().numpy(), recall.cpu().numpy(), f_beta, f_beta_inv)


def _as_points(data: Any, name: str) -> np.ndarray:
    """``data`` as a float64 (n, d) numpy array of finite values."""
    import numpy as np
    import torch

    if isinstance(data, torch.Tensor):
        data = data.detach().to("cpu", torch.float64).numpy()
    points = np.asarray(data, dtype=np.float64)
    if points.ndim != 2 or points.shape[0] == 0:
        raise InputError(f"prd: {name} features must be (n, d) with n ≥ 1, got {points.shape}")
    if not np.isfinite(points).all():
        raise InputError(f"prd: the {name} features hold non-finite values")
    return points


class PrecisionRecallDistributions:
    """``prd``: the PRD curve of samples against the reference, with F₈ and F₁/₈."""

    name = "prd"
    higher_is_better = True
    interpretation = (
        "precision and recall for distributions over k-means cells of the joint features: "
        "the smaller of F₈ (recall-like) and F₁/₈ (precision-like), 1 when the cell "
        "histograms coincide"
    )
    needs = (Need("features", "samples"), Need("features", "reference"))
    options: Mapping[str, Option] = {
        "num_clusters": Option(20, "k-means cells of the joint features", low=2),
        "num_angles": Option(
            1001, "points of the curve (equally spaced angles)", low=3, high=1_000_000
        ),
        "num_runs": Option(10, "clusterings averaged (random_state = seed + i)", low=1),
        "enforce_balance": Option(
            True, "refuse unequal sample and reference counts, as the reference does"
        ),
        "beta": Option(
            8.0,
            "β of the F_β summaries (F_β recall-like, F_1/β precision-like)",
            low=0,
            low_exclusive=True,
        ),
    }
    fields: Mapping[str, str] = {
        "f_beta": "max F_β over the curve (β = 8 by default): recall-like",
        "f_beta_inv": "max F_1/β over the curve: precision-like",
        "curve": "the PRD curve: {x: recall, y: precision, x_label, y_label, x_range, "
        "y_range}, num_angles points averaged over runs",
        "n_samples": "number of sample feature vectors",
        "n_reference": "number of reference feature vectors",
    }
    uncertainty = None

    def compute(
        self,
        inputs: MetricInputs,
        *,
        num_clusters: int,
        num_angles: int,
        num_runs: int,
        enforce_balance: bool,
        beta: float,
    ) -> Mapping[str, Any]:
        """``value = min(F_β, F_1/β)``, both summaries and the curve (:func:`compute_prd`).

        The value is the smaller of the two summaries: high only when the samples both cover
        the reference (recall, F_β) and stay within it (precision, F_1/β), as a single number
        for gates; the two F scores, the paper's pair, are reported beside it.
        """
        samples = inputs.features("samples")
        reference = inputs.features("reference")
        result = compute_prd(
            samples,
            reference,
            num_clusters=num_clusters,
            num_angles=num_angles,
            num_runs=num_runs,
            enforce_balance=enforce_balance,
            beta=beta,
            seed=int(inputs.seed),
            device=inputs.device,
        )
        value = min(result.f_beta, result.f_beta_inv)
        if not math.isfinite(value):
            raise InputError("prd: the F scores are not finite")
        return {
            "value": value,
            "f_beta": result.f_beta,
            "f_beta_inv": result.f_beta_inv,
            "curve": {
                "x": result.recall.tolist(),
                "y": result.precision.tolist(),
                "x_label": "recall",
                "y_label": "precision",
                "x_range": [0.0, 1.0],
                "y_range": [0.0, 1.0],
            },
            "n_samples": len(samples),
            "n_reference": len(reference),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(PrecisionRecallDistributions())
