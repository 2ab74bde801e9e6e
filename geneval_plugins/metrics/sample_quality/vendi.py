"""Metric ``vendi``: the Vendi Score (Friedman & Dieng 2023), the diversity of the samples.

The effective number of distinct samples: the exponential of the order-q Rényi entropy of the
eigenvalues of ``K/n``, K the n × n similarity matrix (cosine similarity of the features by
default). It is 1 when all samples are identical and n when they are mutually orthogonal.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl

if TYPE_CHECKING:
    import numpy as np
    import torch


def renyi_exp_entropy(p: torch.Tensor, q: float) -> float:
    """``exp(H_q(p))`` of a probability vector ``p`` (float64, zeros allowed), the Hill number
    of order q:

    * ``q = 1``: ``exp(−Σ pᵢ log pᵢ)`` (Shannon);
    * ``q = ∞``: ``1 / max pᵢ``;
    * otherwise ``(Σ pᵢ^q)^(1/(1−q))``, over the ``pᵢ > 0`` (``q = 0``: their count).

    As ``vendi_score.vendi.entropy_q`` (which takes ``q="inf"`` for ∞).
    """
    import torch

    pos = p[p > 0]
    if pos.numel() == 0:
        raise InputError("vendi: the similarity matrix is zero (every feature row is zero)")
    if q == 1:
        return math.exp(float(-(pos * pos.log()).sum()))
    top = pos.max()
    if math.isinf(q):
        return 1.0 / float(top)
    # log Σ pᵢ^q = q log p_max + log Σ (pᵢ/p_max)^q: no underflow for large q
    log_sum = q * torch.log(top) + torch.log(((pos / top) ** q).sum())
    return math.exp(float(log_sum) / (1 - q))


def vendi_eigenvalues(
    features: torch.Tensor | np.ndarray,
    *,
    normalize: bool = True,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The non-zero eigenvalues (float64) of ``K/n``, ``K = X Xᵀ`` of the rows ``X`` (n × d),
    unit-normalised first when ``normalize`` (cosine kernel).

    ``X Xᵀ/n`` and ``XᵀX/n`` have the same non-zero eigenvalues, so the smaller of the two is
    decomposed: the d × d Gram form when d < n, accumulated in float64 over chunks of rows
    (:func:`~geneval_plugins.metrics.sample_quality.gram.gram_float64`; memory ``O(d²)``
    whatever n), else the n × n kernel. Eigenvalues at or below ``m · ε · λ_max`` (m the
    matrix's size: round-off, negative ones included) count as zero.
    """
    import torch

    from geneval_plugins.metrics.sample_quality.gram import _unit_rows, gram_float64

    x = torch.as_tensor(features)
    if device is None:
        device = x.device
    device = torch.device(device)
    if x.ndim != 2 or x.shape[0] < 1:
        raise InputError(f"vendi: features must be (n, d) with n ≥ 1, got {tuple(x.shape)}")
    if not x.is_floating_point() or x.dtype in (torch.float16, torch.bfloat16):
        x = x.to(torch.float32)
    if not (bool(torch.isfinite(x.sum(dtype=torch.float64))) or bool(torch.isfinite(x).all())):
        raise InputError("vendi: features contain non-finite values")
    n, d = x.shape
    if d < n:
        gram = gram_float64(x, device=device, normalise=normalize)
    else:
        rows = x.to(device=device, dtype=torch.float64, copy=True)
        if normalize:
            rows = _unit_rows(rows)
        gram = rows @ rows.T
    eig = torch.linalg.eigvalsh(gram / n)
    floor = gram.shape[0] * torch.finfo(torch.float64).eps * eig.abs().max()
    return eig[eig > floor]


def vendi_score(
    features: torch.Tensor | np.ndarray,
    *,
    q: float = 1.0,
    normalize: bool = True,
    device: torch.device | str | None = None,
) -> float:
    """Vendi Score ``exp(H_q(λ(K/n)))`` of n samples (Friedman & Dieng 2023, eq. 1 and its
    order-q generalisation, Pasarkar & Dieng 2024).

    ``K = X Xᵀ`` with ``X`` the features, rows L2-normalised when ``normalize`` (the cosine
    kernel, ``K_ii = 1``, the default); λ the eigenvalues of ``K/n`` (they sum to 1 for unit
    rows); ``H_q`` the Rényi entropy of order q (:func:`renyi_exp_entropy`).

    Parameters
    ----------
    features
        (n, d) features of the samples.
    q
        Order ≥ 0: 1 (default) Shannon, 0 the rank of K, ``inf`` ``1 / λ_max``.
    normalize
        L2-normalise the rows (cosine kernel); ``False`` uses the linear kernel ``xᵀy``.
    device
        Where to compute; default the features' device.

    Returns
    -------
    float
        Between 1 and the rank of K (≤ min(n, d)).

    Notes
    -----
    Equals the ``vendi-score`` package (0.0.3) on float64 features: ``score_K(X Xᵀ, q=q)``
    with normalised rows, ``score_dual(X, q=q)``, and ``score_X(X)`` at q = 1 only:
    ``score_X`` ignores its ``q`` (it calls ``score_K(K, q=1, ...)``), so the package's
    ``score_X(X, q=2)`` is the q = 1 score. For q < 1 on a rank-deficient K (n > d),
    ``score_K`` differs slightly (1e-7 relative on 300 × 20 features): it keeps the positive
    round-off eigenvalues of the n × n kernel, which weigh ``λ^q`` in the sum, whereas here
    eigenvalues at round-off level count as zero (so q = 0 gives the rank). The package
    computes in the features' type (float32 features give a float32 eigensolver) and takes
    ``q="inf"`` as a string (with ``float("inf")`` it returns nan). Here the computation is
    float64 and uses the d × d Gram form when d < n: 50 000 × 2048 features need one
    2048 × 2048 eigenproblem and about 100 MiB of float64 working memory instead of a 20 GB
    kernel. Rows of zeros stay zero under
    ``normalize``, as ``sklearn.preprocessing.normalize`` leaves them.

    References
    ----------
    .. [1] D. Friedman, A. B. Dieng, "The Vendi Score: A Diversity Evaluation Metric for
       Machine Learning", TMLR 2023; package ``vendi-score``.
    .. [2] A. P. Pasarkar, A. B. Dieng, "Cousins Of The Vendi Score: A Family Of Similarity-
       Based Diversity Metrics For Science And Machine Learning", AISTATS 2024.
    """
    if not q >= 0:  # also refuses nan
        raise InputError(f"vendi: q must be ≥ 0 (or inf), got {q}")
    return renyi_exp_entropy(vendi_eigenvalues(features, normalize=normalize, device=device), q)


class VendiScore:
    """The ``vendi`` metric: the Vendi Score of the sample features (cosine kernel)."""

    name = "vendi"
    higher_is_better = True
    needs = (Need("features", "samples"),)
    interpretation = (
        "effective number of distinct samples: exp of the entropy of the eigenvalues of the "
        "similarity matrix / n; 1 for identical samples, higher is more diverse"
    )
    options: Mapping[str, Option] = {
        "q": Option(
            1.0,
            "order of the Rényi entropy: 1 Shannon, 0 rank, inf 1/λ_max",
            low=0.0,
            allow_nonfinite=True,
        ),
        "normalize": Option(True, "L2-normalise the features (cosine kernel); false: linear"),
    }
    fields: Mapping[str, str] = {"n_samples": "number of sample feature vectors"}
    uncertainty = None

    def compute(self, inputs: MetricInputs, *, q: float, normalize: bool) -> Mapping[str, Any]:
        """``{"value": Vendi score, "n_samples"}`` on ``inputs.device``."""
        features = inputs.features("samples")
        value = vendi_score(features, q=q, normalize=normalize, device=inputs.device)
        return {"value": value, "n_samples": int(features.shape[0])}


@hookimpl
def geneval_register_metrics(register) -> None:
    register(VendiScore())
