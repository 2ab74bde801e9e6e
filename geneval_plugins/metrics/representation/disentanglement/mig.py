"""Metric ``mig``: the mutual information gap (Chen et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.representation.disentanglement.codes import (
    CODE_FIELDS,
    NUM_BINS_OPTION,
    describe,
    discrete_entropy,
    discrete_mutual_info,
    drop_constant_factors,
    histogram_discretize,
    num_train_option,
    read_codes,
    require,
)
from geneval_plugins.metrics.representation.disentanglement.seeds import SeedAveraged

if TYPE_CHECKING:
    import numpy as np


def mutual_information_gap(
    latents: np.ndarray, factors: np.ndarray, *, num_bins: int = 20
) -> tuple[float, np.ndarray]:
    """MIG of latents (n, D) against integer factors (n, K), and the gap of each factor.

    ``MIG = (1/K) Σ_k (I(z_{j₁}; v_k) − I(z_{j₂}; v_k)) / H(v_k)`` where ``j₁``, ``j₂`` are the
    latents with the largest and second largest mutual information with factor ``v_k``. The
    information is estimated on latents discretised into ``num_bins`` equal-width bins per
    dimension (disentanglement_lib's ``_compute_mig`` with its histogram discretiser).

    The plug-in estimate is biased upwards by about ``(bins − 1)(|v_k| − 1)/(2n)`` nats per
    pair, so the gap of an uninformative representation is small but positive on few rows;
    factors need ``H(v_k) > 0`` (the metric leaves constant factors out).

    References
    ----------
    .. [1] R. T. Q. Chen, X. Li, R. Grosse, D. Duvenaud, "Isolating Sources of Disentanglement
       in Variational Autoencoders", NeurIPS 2018.
    """
    import numpy as np

    mi = discrete_mutual_info(histogram_discretize(latents, num_bins), factors)
    top = np.sort(mi, axis=0)[::-1]
    gaps = (top[0] - top[1]) / discrete_entropy(factors)
    return float(gaps.mean()), gaps


class MutualInformationGap:
    """``mig``: mean normalised gap between the two latents most informative of each factor."""

    name = "mig"
    higher_is_better = True
    interpretation = (
        "mutual information gap: 1 when each factor is captured by one latent alone, "
        "0 when its two most informative latents carry it equally"
    )
    needs = (Need("latents", "samples"), Need("factors", "samples"))
    options: Mapping[str, Option] = {
        "num_train": num_train_option(),
        "num_bins": NUM_BINS_OPTION,
    }
    fields: Mapping[str, str] = {
        **CODE_FIELDS,
        "num_train": "rows the mutual information is estimated on",
        "per_factor": "normalised gap of each scored factor",
    }
    uncertainty = None

    def compute(self, inputs: MetricInputs, *, num_train: int, num_bins: int) -> Mapping[str, Any]:
        """MIG on the first ``num_train`` (shuffled) rows."""
        codes = read_codes(inputs, self.name)
        rows = min(num_train, codes.n)
        (codes,) = drop_constant_factors(codes.rows(0, rows), metric=self.name)
        require(self.name, latents=2, factors=1, codes=codes)
        value, gaps = mutual_information_gap(codes.latents, codes.factors, num_bins=num_bins)
        return {"value": value, "per_factor": [float(g) for g in gaps], **describe(codes)}


@hookimpl
def geneval_register_metrics(register) -> None:
    register(
        SeedAveraged(
            MutualInformationGap(), "the row shuffle, when num_train is below the rows given"
        )
    )
