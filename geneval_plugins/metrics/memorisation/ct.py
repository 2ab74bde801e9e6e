"""Metric ``ct``: the data-copying test of Meehan et al. (2020), as dgm-eval runs it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.memorisation._common import (
    as_features,
    nearest_neighbours,
    split_reference,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class CTResult:
    """The C_T statistic with its per-cell parts."""

    value: float
    z_cells: list[float | None]  # Z_U of each cell; None where the cell is left out (Π_τ)
    cells_used: int


def principal_components(train: torch.Tensor, others: list[torch.Tensor], dim: int) -> list:
    """``train`` and ``others`` projected on the first ``dim`` principal axes of ``train``.

    ``(X − x̄_train) V`` with ``V`` the eigenvectors of the top ``dim`` eigenvalues of the
    covariance of ``train`` (float64, ``torch.linalg.eigh``), the projection of
    scikit-learn's ``PCA(n_components=dim)`` up to the sign of each axis (which no distance
    sees).
    """
    import torch

    mean = train.mean(dim=0)
    centred = train - mean
    _, vectors = torch.linalg.eigh(centred.T @ centred)
    axes = vectors[:, -dim:].flip(1)
    return [centred @ axes] + [(x - mean) @ axes for x in others]


def mann_whitney_z(gen_dist: np.ndarray, test_dist: np.ndarray) -> float:
    """Z-scored Mann–Whitney U of ``gen_dist`` (m,) against ``test_dist`` (n,).

    ``U = R_gen − m(m + 1)/2`` with ``R_gen`` the sum of the generated distances' ranks in the
    pooled sample (ties get their average rank, as ``scipy.stats.mannwhitneyu``), then
    ``Z = (U − (mn/2 − 0.5)) / √(mn(m + n + 1)/12)``: Meehan et al.'s ``Zu``, with its
    continuity term and without a tie correction of the variance.
    """
    import numpy as np
    from scipy.stats import rankdata

    m, n = len(gen_dist), len(test_dist)
    ranks = rankdata(np.concatenate([gen_dist, test_dist]))
    u = float(ranks[:m].sum()) - m * (m + 1) / 2.0
    mean = n * m / 2.0 - 0.5
    std = math.sqrt(n * m * (n + m + 1) / 12.0)
    return (u - mean) / std


def data_copying_statistic(
    train: ArrayLike,
    test: ArrayLike,
    samples: ArrayLike,
    *,
    cells: int = 3,
    min_cell_samples: int = 20,
    pca_dim: int = 64,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> CTResult:
    """Meehan et al.'s C_T: the test-weighted mean of per-cell Z-scored Mann–Whitney U
    statistics of nearest-training-neighbour distances.

    1. Features wider than ``pca_dim`` are projected on the first ``pca_dim`` principal
       axes of ``train`` (:func:`principal_components`).
    2. ``train`` is partitioned into ``cells`` k-means cells (scikit-learn ``KMeans``,
       ``n_init=10``, ``random_state=seed mod 2³²``); every point takes its nearest centre's cell.
    3. In each cell π, ``L(x) = min_{t ∈ T ∩ π} ‖x − t‖`` for the test points ``P_n`` and the
       samples ``Q_m`` in π, and ``Z_U(π)`` = :func:`mann_whitney_z` of ``L(Q_m)`` against
       ``L(P_n)``.
    4. ``C_T = Σ_{π ∈ Π_τ} P_n(π) Z_U(π) / Σ_{π ∈ Π_τ} P_n(π)``, ``P_n(π)`` the fraction of
       test points in π and ``Π_τ`` the cells holding more than ``min_cell_samples`` samples
       (dgm-eval's ``τ = 20 / m``, ``Q_m(π) > τ``).

    C_T ≪ 0: samples closer to the training set than held-out data (data copying);
    C_T ≫ 0: farther (underfitting); ≈ 0 under the null.

    Parameters
    ----------
    train, test, samples
        Features (l, d), (n, d), (m, d): the training set T, a held-out test set P_n from
        the same distribution, the generated samples Q_m.

    Notes
    -----
    dgm-eval's ``metrics/ct.py`` (from casey-meehan/data-copying) with three differences
    that change no value beyond round-off: its k-means is unseeded (here
    ``random_state=seed``), its PCA is scikit-learn's (here the covariance eigenvectors in
    float64: the same projection up to axis signs), and its nearest neighbours come from
    scikit-learn (here float64 row blocks on ``device``). A cell without training or test
    points, or no cell with enough samples (C_T would be 0/0), is an :class:`InputError`.

    References
    ----------
    .. [1] C. Meehan, K. Chaudhuri, S. Dasgupta, "A Non-Parametric Test to Detect
       Data-Copying in Generative Models", AISTATS 2020.
    """
    import numpy as np
    import torch
    from sklearn.cluster import KMeans

    device = torch.device("cpu" if device is None else device)
    t = as_features(train, "ct: training features", device)
    p = as_features(test, "ct: test features", device)
    q = as_features(samples, "ct: sample features", device)
    if not t.shape[1] == p.shape[1] == q.shape[1]:
        raise InputError(
            f"ct: feature widths differ: training {t.shape[1]}, test {p.shape[1]}, "
            f"samples {q.shape[1]}"
        )
    if t.shape[0] < cells:
        raise InputError(f"ct: {t.shape[0]} training points cannot fill {cells} k-means cells")
    if t.shape[1] > pca_dim:
        t, p, q = principal_components(t, [p, q], pca_dim)
    t_np = t.cpu().numpy()
    km = KMeans(n_clusters=cells, n_init=10, random_state=seed % 2**32).fit(t_np)
    labels = [torch.as_tensor(km.predict(x.cpu().numpy()), device=device) for x in (t, p, q)]
    t_cell, p_cell, q_cell = labels
    n, m = p.shape[0], q.shape[0]
    weights, zs = [], []
    z_cells: list[float | None] = []
    for c in range(cells):
        t_in, p_in, q_in = t[t_cell == c], p[p_cell == c], q[q_cell == c]
        if t_in.shape[0] == 0 or p_in.shape[0] == 0:
            raise InputError(
                f"ct: k-means cell {c} holds {t_in.shape[0]} training and {p_in.shape[0]} test "
                f"points; each cell needs both (lower ct.cells or give more reference points)"
            )
        if q_in.shape[0] <= min_cell_samples:
            z_cells.append(None)
            continue
        l_q, _ = nearest_neighbours(q_in, t_in)
        l_p, _ = nearest_neighbours(p_in, t_in)
        z = mann_whitney_z(l_q.cpu().numpy(), l_p.cpu().numpy())
        z_cells.append(z)
        weights.append(p_in.shape[0] / n)
        zs.append(z)
    if not zs:
        raise InputError(
            f"ct: no k-means cell holds more than {min_cell_samples} of the {m} samples "
            f"(lower ct.cells or ct.min_cell_samples, or give more samples)"
        )
    w = np.asarray(weights)
    value = float(w.dot(np.asarray(zs)) / w.sum())
    return CTResult(value=value, z_cells=z_cells, cells_used=len(zs))


class DataCopyingTest:
    """The ``ct`` metric: Meehan et al.'s C_T with a seeded held-out part of the reference
    (the training set) as the test sample."""

    name = "ct"
    higher_is_better = True
    report_panel = "neighbours"
    interpretation = (
        "Z-scored test of whether samples lie closer to the reference (training) set than "
        "held-out reference points do; ≪ 0 means data copying (memorisation), ≫ 0 "
        "underfitting, ≈ 0 neither"
    )
    needs = (Need("features", "samples"), Need("features", "reference"))
    options: Mapping[str, Option] = {
        "cells": Option(3, "number of k-means cells of the training part (dgm-eval: 3)", low=1),
        "test_fraction": Option(
            0.5,
            "fraction of the reference held out as the test sample P_n (seeded)",
            low=0.0,
            high=1.0,
            low_exclusive=True,
            high_exclusive=True,
        ),
        "min_cell_samples": Option(
            20, "a cell counts when it holds more than this many samples (dgm-eval: 20)", low=0
        ),
        "pca_dim": Option(
            64, "wider features are projected on this many principal axes (dgm-eval: 64)", low=1
        ),
    }
    fields: Mapping[str, str] = {
        "z_cells": "Z-scored Mann–Whitney U of each k-means cell (null: cell left out)",
        "cells_used": "number of cells holding enough samples to count",
        "n_train": "reference points in the training part",
        "n_test": "reference points held out as the test sample",
        "n_samples": "number of sample feature vectors",
    }
    uncertainty = None

    def compute(
        self,
        inputs: MetricInputs,
        *,
        cells: int,
        test_fraction: float,
        min_cell_samples: int,
        pca_dim: int,
    ) -> Mapping[str, Any]:
        """``{"value": C_T, ...}`` (:func:`data_copying_statistic`) on the reference split by
        :func:`~geneval_plugins.metrics.memorisation._common.split_reference` (seed
        ``inputs.seed``), k-means seeded with ``inputs.seed``.

        The reference stands for the training set, so its held-out half plays Meehan et
        al.'s independent test sample P_n (dgm-eval takes a separate test set; with none
        given, halves balance the two samples whose distances the U test compares).
        Samples that copy held-out points look like test points and do not lower C_T.
        """
        samples, reference = inputs.features("samples"), inputs.features("reference")
        train_idx, test_idx = split_reference(
            reference.shape[0], test_fraction, inputs.seed, metric="ct", min_each=cells
        )
        result = data_copying_statistic(
            reference[train_idx],
            reference[test_idx],
            samples,
            cells=cells,
            min_cell_samples=min_cell_samples,
            pca_dim=pca_dim,
            seed=inputs.seed,
            device=inputs.device,
        )
        return {
            "value": result.value,
            "z_cells": result.z_cells,
            "cells_used": result.cells_used,
            "n_train": int(train_idx.numel()),
            "n_test": int(test_idx.numel()),
            "n_samples": int(samples.shape[0]),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(DataCopyingTest())
