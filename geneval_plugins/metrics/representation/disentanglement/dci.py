"""Metric ``dci``: disentanglement, completeness and informativeness (Eastwood & Williams 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import MetricInputs, Need, Option, hookimpl, progress_bar
from geneval_plugins.metrics.representation.disentanglement.codes import (
    CODE_FIELDS,
    TEST_FIELD,
    Codes,
    collected_warnings,
    describe,
    num_test_option,
    num_train_option,
    read_codes,
    require,
    split,
)
from geneval_plugins.metrics.representation.disentanglement.seeds import SeedAveraged

if TYPE_CHECKING:
    import numpy as np

#: disentanglement_lib adds this to the importances before taking entropies.
EPSILON = 1e-11


@dataclass(frozen=True)
class DCIScores:
    """Disentanglement, completeness, informativeness (test and train accuracy), importances."""

    disentanglement: float
    completeness: float
    informativeness: float
    informativeness_train: float
    importance: np.ndarray  # (D, K)


def importance_matrix(
    train: Codes, test: Codes, *, seed: int = 0
) -> tuple[np.ndarray, float, float]:
    """Importances (D, K) of the latents for each factor, and mean train and test accuracy.

    One ``GradientBoostingClassifier()`` (scikit-learn defaults: 100 stages of depth-3 trees,
    learning rate 0.1) per factor on all latents; ``R_ik`` is the impurity-based importance of
    latent i for factor k (disentanglement_lib's ``compute_importance_gbt``).
    """
    import numpy as np
    from sklearn.ensemble import GradientBoostingClassifier

    d, k = train.latents.shape[1], train.factors.shape[1]
    importance = np.zeros((d, k), dtype=np.float64)
    train_acc, test_acc = [], []
    with progress_bar(total=k, desc="dci", unit="factor") as bar:
        for j in range(k):
            model = GradientBoostingClassifier(random_state=seed)
            model.fit(train.latents, train.factors[:, j])
            importance[:, j] = np.abs(model.feature_importances_)
            train_acc.append(np.mean(model.predict(train.latents) == train.factors[:, j]))
            test_acc.append(np.mean(model.predict(test.latents) == test.factors[:, j]))
            bar.update(1)
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def disentanglement(importance: np.ndarray) -> float:
    """``D = Σ_i ρ_i (1 − H_K(P_i·))`` with ``P_ik = R_ik / Σ_k R_ik`` and ``ρ_i = Σ_k R_ik / Σ R``
    (entropy in base K; Eastwood & Williams 2018, eq. 2, as disentanglement_lib)."""
    import numpy as np
    import scipy.stats  # imported on use: it costs seconds at CLI start

    per_code = 1.0 - scipy.stats.entropy(importance.T + EPSILON, base=importance.shape[1])
    weights = importance if importance.sum() != 0.0 else np.ones_like(importance)
    return float(np.sum(per_code * weights.sum(axis=1) / weights.sum()))


def completeness(importance: np.ndarray) -> float:
    """``C = Σ_k ρ_k (1 − H_D(P̃_·k))`` with ``P̃_ik = R_ik / Σ_i R_ik`` and ``ρ_k = Σ_i R_ik / Σ R``
    (entropy in base D; Eastwood & Williams 2018, eq. 3, as disentanglement_lib)."""
    import numpy as np
    import scipy.stats

    per_factor = 1.0 - scipy.stats.entropy(importance + EPSILON, base=importance.shape[0])
    weights = importance if importance.sum() != 0.0 else np.ones_like(importance)
    return float(np.sum(per_factor * weights.sum(axis=0) / weights.sum()))


def dci(train: Codes, test: Codes, *, seed: int = 0) -> DCIScores:
    """DCI scores of the latents from gradient-boosted-tree importances.

    Disentanglement asks that each latent matter for one factor, completeness that each factor
    be captured by one latent, informativeness that the factors be predictable (here the mean
    test accuracy of the boosted trees, disentanglement_lib's ``informativeness_test``).
    Impurity-based importances of boosted trees depend on the estimator: compare DCI numbers
    only between runs with the same one.

    References
    ----------
    .. [1] C. Eastwood, C. K. I. Williams, "A Framework for the Quantitative Evaluation of
       Disentangled Representations", ICLR 2018.
    """
    importance, train_acc, test_acc = importance_matrix(train, test, seed=seed)
    return DCIScores(
        disentanglement=disentanglement(importance),
        completeness=completeness(importance),
        informativeness=test_acc,
        informativeness_train=train_acc,
        importance=importance,
    )


class DCI:
    """``dci``: disentanglement (value), completeness and informativeness."""

    name = "dci"
    higher_is_better = True
    interpretation = (
        "DCI disentanglement: 1 when each latent is important for a single factor "
        "(gradient-boosted-tree importances)"
    )
    needs = (Need("latents", "samples"), Need("factors", "samples"))
    options: Mapping[str, Option] = {
        "num_train": num_train_option(),
        "num_test": num_test_option(),
    }
    fields: Mapping[str, str] = {
        **CODE_FIELDS,
        **TEST_FIELD,
        "completeness": "DCI completeness: 1 when each factor is captured by a single latent",
        "informativeness": "mean test accuracy of the per-factor boosted trees",
        "informativeness_train": "mean training accuracy of the per-factor boosted trees",
    }
    uncertainty = None

    def compute(self, inputs: MetricInputs, *, num_train: int, num_test: int) -> Mapping[str, Any]:
        """DCI of the training/test split of the (shuffled) rows."""
        train, test = split(read_codes(inputs, self.name), num_train, num_test, self.name)
        require(self.name, latents=2, factors=2, codes=train)
        with collected_warnings(train.warnings):
            scores = dci(train, test, seed=int(inputs.seed))
        return {
            "value": scores.disentanglement,
            "completeness": scores.completeness,
            "informativeness": scores.informativeness,
            "informativeness_train": scores.informativeness_train,
            **describe(train, test),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(
        SeedAveraged(DCI(), "the row shuffle before the split, and the boosted trees' random_state")
    )
