"""Metric ``authpct``: the authenticity percentage (Alaa et al. 2022), as dgm-eval has it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.memorisation._common import as_features, nearest_neighbours

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray


def authenticity_percentage(
    samples: ArrayLike, reference: ArrayLike, *, device: torch.device | str | None = None
) -> float:
    """Percentage of samples that are *authentic*: farther from their nearest training point
    than that training point is from its own nearest training neighbour.

    For each sample ``g``, let ``t = argmin_j ‖g − r_j‖`` be its nearest reference (training)
    point at distance ``d₁ = ‖g − t‖``, and ``d₂ = min_{j ≠ t} ‖t − r_j‖``. The sample is
    authentic when ``d₂ < d₁`` (strictly; a tie counts as not authentic), and

        AuthPct = 100 · #{authentic} / #{samples}   (in [0, 100]).

    Parameters
    ----------
    samples
        Sample features (m, d).
    reference
        Training-set features (n, d), n ≥ 2.
    device
        Where to compute (default: the CPU).

    Notes
    -----
    dgm-eval's ``metrics/authpct.py`` (transcribed from marcojira/fls): percent, not a
    fraction, without the ``− 50`` shift of marcojira/fld's ``AuthPct``. Distances are float64
    (dgm-eval's are float32 ``torch.cdist``), by row blocks: no n × n matrix. A
    nearest-neighbour tie goes to the lowest index, as ``torch.min`` decides it.

    References
    ----------
    .. [1] A. Alaa, B. van Breugel, E. Saveliev, M. van der Schaar, "How Faithful is your
       Synthetic Data? Sample-level Metrics for Evaluating and Auditing Generative Models",
       ICML 2022.
    .. [2] G. Stein et al., "Exposing flaws of generative model evaluation metrics and their
       unfair treatment of diffusion models", NeurIPS 2023 (dgm-eval).
    """
    import torch

    device = torch.device("cpu" if device is None else device)
    ref = as_features(reference, "authpct: reference features", device)
    gen = as_features(samples, "authpct: sample features", device)
    if gen.shape[1] != ref.shape[1]:
        raise InputError(
            f"authpct: sample features are {gen.shape[1]}-d, reference {ref.shape[1]}-d"
        )
    if ref.shape[0] < 2:
        raise InputError(f"authpct needs at least 2 reference points, got {ref.shape[0]}")
    own, _ = nearest_neighbours(ref, ref, exclude_self=True)
    d1, idx = nearest_neighbours(gen, ref)
    authentic = own[idx] < d1
    return float(100.0 * int(authentic.sum()) / authentic.numel())


class AuthenticityPercentage:
    """The ``authpct`` metric: percentage of samples that do not copy their nearest training
    point (Alaa et al. 2022), the reference standing for the training set."""

    name = "authpct"
    higher_is_better = True
    report_panel = "neighbours"
    unit = "%"
    interpretation = (
        "percentage of samples farther from their nearest reference (training) point than "
        "that point is from its own nearest neighbour; low values mean memorisation"
    )
    needs = (Need("features", "samples"), Need("features", "reference"))
    options: Mapping[str, Option] = {}
    fields: Mapping[str, str] = {
        "n_samples": "number of sample feature vectors",
        "n_reference": "number of reference (training) feature vectors",
    }
    uncertainty = None

    def compute(self, inputs: MetricInputs) -> Mapping[str, Any]:
        """``{"value": AuthPct in percent, "n_samples", "n_reference"}``
        (:func:`authenticity_percentage`)."""
        samples, reference = inputs.features("samples"), inputs.features("reference")
        value = authenticity_percentage(samples, reference, device=inputs.device)
        return {
            "value": value,
            "n_samples": int(samples.shape[0]),
            "n_reference": int(reference.shape[0]),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(AuthenticityPercentage())
