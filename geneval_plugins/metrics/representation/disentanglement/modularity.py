"""Metric ``modularity``: modularity of the latents (Ridgeway & Mozer 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.representation.disentanglement.codes import (
    CODE_FIELDS,
    NUM_BINS_OPTION,
    describe,
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


def modularity_per_code(mutual_information: np.ndarray) -> np.ndarray:
    """Modularity of each latent from its mutual information (D, K) with the K factors.

    ``δ_i = Σ_{k≠k*} I(z_i; v_k)² / (I(z_i; v_{k*})² (K − 1))`` with ``k*`` the factor sharing
    the most information with latent i, and ``modularity_i = 1 − δ_i``; a latent that shares no
    information with any factor scores 0 (disentanglement_lib's ``modularity``).
    """
    import numpy as np

    squared = np.square(mutual_information)
    top = squared.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (squared.sum(axis=1) - top) / (top * (squared.shape[1] - 1.0))
    return np.where(top == 0.0, 0.0, 1.0 - delta)


def modularity(latents: np.ndarray, factors: np.ndarray, *, num_bins: int = 20) -> float:
    """Mean modularity over latents (n, D) of integer factors (n, K ≥ 2).

    The mutual information is that of MIG (:func:`.codes.histogram_discretize` with
    ``num_bins`` bins, then :func:`.codes.discrete_mutual_info`); see
    :func:`modularity_per_code` for the score. Modularity only asks that each latent depend on
    at most one factor: it does not ask that every factor be captured, and latents of pure
    noise score about 0.7 because their small, spread-out mutual information is not zero.

    References
    ----------
    .. [1] K. Ridgeway, M. C. Mozer, "Learning Deep Disentangled Embeddings With the
       F-Statistic Loss", NeurIPS 2018, Section 3.
    """
    import numpy as np

    mi = discrete_mutual_info(histogram_discretize(latents, num_bins), factors)
    return float(np.mean(modularity_per_code(mi)))


class Modularity:
    """``modularity``: do the latents each depend on at most one factor."""

    name = "modularity"
    higher_is_better = True
    interpretation = (
        "modularity: 1 when each latent carries information about one factor only "
        "(noise latents score about 0.7, so compare representations, not against 0)"
    )
    needs = (Need("latents", "samples"), Need("factors", "samples"))
    options: Mapping[str, Option] = {
        "num_train": num_train_option(),
        "num_bins": NUM_BINS_OPTION,
    }
    fields: Mapping[str, str] = {
        **CODE_FIELDS,
        "num_train": "rows the mutual information is estimated on",
    }
    uncertainty = None

    def compute(self, inputs: MetricInputs, *, num_train: int, num_bins: int) -> Mapping[str, Any]:
        """Modularity on the first ``num_train`` (shuffled) rows."""
        codes = read_codes(inputs, self.name)
        (codes,) = drop_constant_factors(codes.rows(0, min(num_train, codes.n)), metric=self.name)
        require(self.name, latents=1, factors=2, codes=codes)
        value = modularity(codes.latents, codes.factors, num_bins=num_bins)
        return {"value": value, **describe(codes)}


@hookimpl
def geneval_register_metrics(register) -> None:
    register(SeedAveraged(Modularity(), "the row shuffle, when num_train is below the rows given"))
