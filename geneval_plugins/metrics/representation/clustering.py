"""Metric ``clustering``: k-means on latents (or extractor features) scored against labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl, progress_bar

if TYPE_CHECKING:
    import numpy as np

#: The scores reported, each as mean over seeds and ``<name>_std``.
SCORES = ("v_measure", "homogeneity", "completeness", "ari", "nmi")


@dataclass(frozen=True)
class ClusteringScores:
    """Mean and population standard deviation over seeds of each score, and what was used."""

    mean: dict[str, float]
    std: dict[str, float]
    k: int
    seeds: int
    n: int


def score_assignments(labels: np.ndarray, clusters: np.ndarray) -> dict[str, float]:
    """Homogeneity, completeness, V-measure, ARI and NMI of ``clusters`` against ``labels``.

    scikit-learn's definitions: homogeneity ``h = 1 − H(C|K)/H(C)``, completeness
    ``c = 1 − H(K|C)/H(K)``, V-measure ``2hc/(h + c)`` (Rosenberg & Hirschberg 2007),
    adjusted Rand index (Hubert & Arabie 1985) and NMI with the arithmetic-mean normaliser.
    """
    from sklearn import metrics

    h, c, v = metrics.homogeneity_completeness_v_measure(labels, clusters)
    return {
        "v_measure": float(v),
        "homogeneity": float(h),
        "completeness": float(c),
        "ari": float(metrics.adjusted_rand_score(labels, clusters)),
        "nmi": float(metrics.normalized_mutual_info_score(labels, clusters)),
    }


def kmeans_scores(
    points: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 0,
    seeds: int = 5,
    seed: int = 0,
    n_init: int = 1,
) -> ClusteringScores:
    """k-means clusterings of ``points`` (n, d) scored against ``labels`` (n,), over seeds.

    Runs :class:`sklearn.cluster.KMeans` (k-means++ initialisation, ``n_init`` restarts) with
    ``random_state = seed + i`` for ``i < seeds`` and scores each assignment with
    :func:`score_assignments`; ``k = 0`` means the number of distinct labels. The labels are used
    for scoring only.

    The scores depend on the scale of each dimension (k-means is Euclidean) and reward clusters
    that match the labels, not clusters that are natural: read them as "do the latents group by
    label", not as a measure of representation quality in general.

    References
    ----------
    .. [1] A. Rosenberg, J. Hirschberg, "V-Measure: A conditional entropy-based external cluster
       evaluation measure", EMNLP-CoNLL 2007.
    .. [2] L. Hubert, P. Arabie, "Comparing partitions", Journal of Classification 2 (1985).
    .. [3] D. Arthur, S. Vassilvitskii, "k-means++: the advantages of careful seeding", SODA 2007.
    """
    import numpy as np
    from sklearn.cluster import KMeans

    k = k or int(np.unique(labels).size)
    if k < 2:
        raise InputError("clustering: the labels hold a single class; set --opt clustering.k ≥ 2")
    if k > points.shape[0]:
        raise InputError(f"clustering: k={k} exceeds the {points.shape[0]} points")
    runs = []
    with progress_bar(total=seeds, desc="clustering", unit="run") as bar:
        for i in range(seeds):
            clusters = KMeans(n_clusters=k, n_init=n_init, random_state=seed + i).fit_predict(
                points
            )
            runs.append(score_assignments(labels, clusters))
            bar.update(1)
    table = {name: np.array([run[name] for run in runs]) for name in SCORES}
    return ClusteringScores(
        mean={name: float(v.mean()) for name, v in table.items()},
        std={name: float(v.std()) for name, v in table.items()},
        k=k,
        seeds=seeds,
        n=points.shape[0],
    )


def _labels(inputs: MetricInputs, n: int) -> np.ndarray:
    import torch

    try:
        labels = torch.as_tensor(inputs.labels("samples"))
    except KeyError:
        raise InputError(
            "clustering needs labels beside the latents (an .npz with 'labels', or a dataset "
            "with labels)"
        ) from None
    if labels.ndim != 1 or labels.shape[0] != n:
        raise InputError(
            f"clustering: labels must be (n,) with one label per point, got {tuple(labels.shape)} "
            f"for {n} points"
        )
    if labels.is_floating_point():
        if not torch.equal(labels, labels.round()):
            raise InputError("clustering: labels must be integers")
        labels = labels.long()
    return labels.cpu().numpy()


class Clustering:
    """``clustering``: V-measure (and friends) of k-means clusters of latents against labels."""

    name = "clustering"
    higher_is_better = True
    interpretation = (
        "how well k-means clusters of the latents (or features) recover the labels: "
        "V-measure 1 = clusters and classes coincide, 0 = independent"
    )
    needs = (Need("latents", "samples"), Need("labels", "samples"))
    options: Mapping[str, Option] = {
        "on": Option(
            "latents",
            "cluster the latents or the extractor's features",
            choices=("latents", "features"),
        ),
        "k": Option(0, "number of clusters (0: the number of label classes)", low=0),
        "seeds": Option(5, "k-means runs averaged (random_state = seed + i)", low=1),
        "n_init": Option(1, "k-means++ restarts per run (scikit-learn's 'auto' is 1)", low=1),
    }
    fields: Mapping[str, str] = {
        "v_measure_std": "population standard deviation of the V-measure over seeds",
        "homogeneity": "mean homogeneity: each cluster holds one class (1 = pure clusters)",
        "homogeneity_std": "its standard deviation over seeds",
        "completeness": "mean completeness: each class lies in one cluster",
        "completeness_std": "its standard deviation over seeds",
        "ari": "mean adjusted Rand index (0 = chance, 1 = identical partitions)",
        "ari_std": "its standard deviation over seeds",
        "nmi": "mean normalised mutual information (arithmetic normaliser)",
        "nmi_std": "its standard deviation over seeds",
        "clusters": "number of clusters used: k, or the number of label classes when k is 0",
        "n": "number of points",
    }
    uncertainty = "v_measure_std"

    def needs_for(self, options: Mapping[str, Any]) -> tuple[Need, ...]:
        """The needs under the given options: features instead of latents with ``on=features``."""
        kind = options.get("on", "latents")
        return (Need(kind, "samples"), Need("labels", "samples"))

    def compute(
        self, inputs: MetricInputs, *, on: str, k: int, seeds: int, n_init: int
    ) -> Mapping[str, Any]:
        """Mean and std over ``seeds`` k-means runs of every score; ``value`` is the V-measure."""
        import torch

        points = torch.as_tensor(
            inputs.latents("samples") if on == "latents" else inputs.features("samples")
        )
        if points.ndim != 2 or points.shape[0] == 0:
            raise InputError(f"clustering: {on} must be (n, d), got {tuple(points.shape)}")
        if not torch.isfinite(points).all():
            raise InputError(f"clustering: the {on} hold non-finite values")
        points_np = points.double().cpu().numpy()
        labels = _labels(inputs, points_np.shape[0])
        scores = kmeans_scores(
            points_np, labels, k=k, seeds=seeds, seed=int(inputs.seed), n_init=n_init
        )
        result: dict[str, Any] = {"value": scores.mean["v_measure"]}
        for name in SCORES:
            if name != "v_measure":
                result[name] = scores.mean[name]
            result[f"{name}_std"] = scores.std[name]
        result.update(clusters=scores.k, n=scores.n)
        return result


@hookimpl
def geneval_register_metrics(register) -> None:
    register(Clustering())
