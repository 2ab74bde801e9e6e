"""Metric ``mifid``: the memorisation-informed FID of Bai et al. (2021), as torchmetrics
computes it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.memorisation._common import as_features, row_block

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray

#: torchmetrics' ``10e-15`` added to the penalty before dividing.
PENALTY_EPS = 1e-14
#: torchmetrics returns 0 for an FID at or below this.
FID_FLOOR = 1e-8
AVERAGE_OVER = ("reference", "samples")


@dataclass(frozen=True)
class MiFIDResult:
    """MiFID and its two factors."""

    value: float
    fid: float
    memorisation_distance: float  # mean minimum cosine distance d_mem
    penalised: bool  # d_mem < ε: the FID was divided by d_mem


def _unit_rows(x: torch.Tensor) -> torch.Tensor:
    """The non-zero rows of ``x`` scaled to unit length (all-zero rows dropped)."""
    norms = x.norm(dim=1, keepdim=True)
    keep = norms[:, 0] != 0
    return x[keep] / norms[keep]


def mean_min_cosine_distance(queries: torch.Tensor, pool: torch.Tensor) -> float:
    """``(1/n) Σ_i min_j (1 − |cos(q_i, p_j)|)`` (float64) over the non-zero rows, by row
    blocks of ``queries``: no n × m matrix."""
    import torch

    q, p = _unit_rows(queries), _unit_rows(pool)
    if q.shape[0] == 0 or p.shape[0] == 0:
        raise InputError("mifid: every feature vector of one side is zero")
    total = torch.zeros((), dtype=torch.float64, device=q.device)
    step = row_block(p.shape[0])
    for start in range(0, q.shape[0], step):
        sim = (q[start : start + step] @ p.T).abs_()
        total += (1.0 - sim.max(dim=1).values).sum()
    return float(total) / q.shape[0]


def memorization_informed_fid(
    samples: ArrayLike,
    reference: ArrayLike,
    *,
    cosine_distance_eps: float = 0.1,
    average_over: str = "reference",
    device: torch.device | str | None = None,
) -> MiFIDResult:
    """MiFID: the FID divided by a memorisation distance when that distance is small.

    ``d_mem = mean_i min_j (1 − |cos(a_i, b_j)|)`` with ``a`` the reference and ``b`` the
    samples (``average_over="reference"``, torchmetrics' order) or the other way round
    (``"samples"``, the order of Bai et al.'s Kaggle code); the penalty is ``d_mem`` when
    ``d_mem < cosine_distance_eps``, else 1, and

        MiFID = FID / (penalty + 1e-14)    (0 when FID ≤ 1e-8).

    The FID is :func:`~geneval_plugins.metrics.sample_quality.fid.frechet_distance` of the
    float64 means and unbiased covariances of the two feature sets.

    Notes
    -----
    torchmetrics' ``MemorizationInformedFrechetInceptionDistance`` (``_mifid_compute``),
    with two differences: all-zero rows are dropped where torchmetrics drops rows whose
    *sum* is 0 (the same rows except for non-zero features summing to exactly 0), and the
    FID's trace term comes from a symmetric eigenproblem where torchmetrics takes the
    general eigenvalues of Σ₁Σ₂ (equal to round-off, ~1e-10 relative).

    References
    ----------
    .. [1] C.-Y. Bai, H.-T. Lin, C. Raffel, W. C.-W. Kan, "On Training Sample Memorization:
       Lessons from Benchmarking Generative Modeling with a Large-scale Competition",
       KDD 2021.
    """
    import torch

    from geneval_plugins.metrics.sample_quality.fid import covariance_factor, frechet_distance

    if average_over not in AVERAGE_OVER:
        raise InputError(f"mifid: average_over must be one of {', '.join(AVERAGE_OVER)}")
    device = torch.device("cpu" if device is None else device)
    gen = as_features(samples, "mifid: sample features", device)
    ref = as_features(reference, "mifid: reference features", device)
    if gen.shape[1] != ref.shape[1]:
        raise InputError(f"mifid: sample features are {gen.shape[1]}-d, reference {ref.shape[1]}-d")
    for name, x in (("samples", gen), ("reference", ref)):
        if x.shape[0] < 2:
            raise InputError(f"mifid needs at least 2 {name} to estimate a covariance")
    f_gen, f_ref = covariance_factor(gen), covariance_factor(ref)
    fid = frechet_distance(
        gen.mean(dim=0),
        f_gen.T @ f_gen,
        ref.mean(dim=0),
        f_ref.T @ f_ref,
        factor1=f_gen,
        factor2=f_ref,
    )
    queries, pool = (ref, gen) if average_over == "reference" else (gen, ref)
    d_mem = mean_min_cosine_distance(queries, pool)
    penalised = d_mem < cosine_distance_eps
    penalty = d_mem if penalised else 1.0
    value = fid / (penalty + PENALTY_EPS) if fid > FID_FLOOR else 0.0
    return MiFIDResult(value=value, fid=fid, memorisation_distance=d_mem, penalised=penalised)


class MemorizationInformedFID:
    """The ``mifid`` metric: FID scaled up when samples nearly copy the reference (the
    training set)."""

    name = "mifid"
    higher_is_better = False
    report_panel = "neighbours"
    interpretation = (
        "FID divided by the mean minimum cosine distance between reference (training) and "
        "sample features when that distance is below cosine_distance_eps: memorisation "
        "inflates it above the FID"
    )
    needs = (Need("features", "samples"), Need("features", "reference"))
    options: Mapping[str, Option] = {
        "cosine_distance_eps": Option(
            0.1, "the penalty applies when the mean minimum cosine distance is below this", low=0
        ),
        "average_over": Option(
            "reference",
            "whose nearest neighbours are averaged: reference (torchmetrics) or samples "
            "(Bai et al.'s Kaggle code)",
            choices=AVERAGE_OVER,
        ),
    }
    fields: Mapping[str, str] = {
        "fid": "the Fréchet distance before the penalty",
        "memorisation_distance": "mean minimum cosine distance d_mem",
        "penalised": "whether d_mem < cosine_distance_eps, so that FID was divided by it",
        "n_samples": "number of sample feature vectors",
        "n_reference": "number of reference feature vectors",
    }
    uncertainty = None
    feature_space = "inception-v3-fid"

    def compute(
        self, inputs: MetricInputs, *, cosine_distance_eps: float, average_over: str
    ) -> Mapping[str, Any]:
        """``{"value": MiFID, "fid", "memorisation_distance", "penalised", ...}``
        (:func:`memorization_informed_fid`)."""
        samples, reference = inputs.features("samples"), inputs.features("reference")
        result = memorization_informed_fid(
            samples,
            reference,
            cosine_distance_eps=cosine_distance_eps,
            average_over=average_over,
            device=inputs.device,
        )
        return {
            "value": result.value,
            "fid": result.fid,
            "memorisation_distance": result.memorisation_distance,
            "penalised": result.penalised,
            "n_samples": int(samples.shape[0]),
            "n_reference": int(reference.shape[0]),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(MemorizationInformedFID())
