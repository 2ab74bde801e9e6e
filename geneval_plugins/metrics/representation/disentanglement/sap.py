"""Metric ``sap``: the separated attribute predictability score (Kumar et al. 2018)."""

from __future__ import annotations

from collections.abc import Mapping
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

#: disentanglement_lib's classifier of one factor from one latent.
SVC_C = 0.01


def sap_score_matrix(train: Codes, test: Codes, *, seed: int = 0) -> np.ndarray:
    """Accuracy (D, K) of predicting each factor from each single latent.

    For each latent i and factor k, ``LinearSVC(C=0.01, class_weight="balanced")`` is fitted on
    the training rows of ``z_i`` alone and scored by its accuracy on the test rows
    (disentanglement_lib's ``compute_score_matrix`` for discrete factors).
    """
    import numpy as np
    from sklearn.svm import LinearSVC

    d, k = train.latents.shape[1], train.factors.shape[1]
    matrix = np.zeros((d, k))
    with progress_bar(total=d * k, desc="sap", unit="fit") as bar:
        for i in range(d):
            x_fit, x_score = train.latents[:, i : i + 1], test.latents[:, i : i + 1]
            for j in range(k):
                svc = LinearSVC(C=SVC_C, class_weight="balanced", random_state=seed)
                svc.fit(x_fit, train.factors[:, j])
                matrix[i, j] = np.mean(svc.predict(x_score) == test.factors[:, j])
                bar.update(1)
    return matrix


def sap_from_matrix(matrix: np.ndarray) -> tuple[float, np.ndarray]:
    """SAP = mean over factors of the gap between the two best latents' scores, and the gaps."""
    import numpy as np

    top = np.sort(matrix, axis=0)
    gaps = top[-1] - top[-2]
    return float(gaps.mean()), gaps


def sap(train: Codes, test: Codes, *, seed: int = 0) -> tuple[float, np.ndarray]:
    """SAP score of the latents, and the gap of each factor.

    ``SAP = (1/K) Σ_k (S_{j₁k} − S_{j₂k})`` where ``S_{ik}`` is the test accuracy of a linear
    classifier of factor k from latent i alone (:func:`sap_score_matrix`) and ``j₁``, ``j₂`` the
    two best latents for factor k (Kumar et al. 2018, Section 3; disentanglement_lib's
    ``_compute_sap`` for discrete factors).

    A one-dimensional linear classifier can only threshold a latent, so a factor with many
    values is poorly predicted even from a perfect latent: SAP of the ground truth itself is
    about 0.4 on multi-valued factors. Compare SAP between representations of the same data.

    References
    ----------
    .. [1] A. Kumar, P. Sattigeri, A. Balakrishnan, "Variational Inference of Disentangled
       Latent Concepts from Unlabeled Observations", ICLR 2018.
    """
    return sap_from_matrix(sap_score_matrix(train, test, seed=seed))


class SeparatedAttributePredictability:
    """``sap``: how much better the best single latent predicts each factor than the next."""

    name = "sap"
    higher_is_better = True
    interpretation = (
        "SAP score: gap in test accuracy between the two latents that best predict each factor "
        "alone (bounded well below 1 for many-valued factors)"
    )
    needs = (Need("latents", "samples"), Need("factors", "samples"))
    options: Mapping[str, Option] = {
        "num_train": num_train_option(),
        "num_test": num_test_option(),
    }
    fields: Mapping[str, str] = {
        **CODE_FIELDS,
        **TEST_FIELD,
        "per_factor": "accuracy gap of each scored factor",
    }
    uncertainty = None

    def compute(self, inputs: MetricInputs, *, num_train: int, num_test: int) -> Mapping[str, Any]:
        """SAP of the training/test split of the (shuffled) rows."""
        train, test = split(read_codes(inputs, self.name), num_train, num_test, self.name)
        require(self.name, latents=2, factors=1, codes=train)
        with collected_warnings(train.warnings):
            value, gaps = sap(train, test, seed=int(inputs.seed))
        return {"value": value, "per_factor": [float(g) for g in gaps], **describe(train, test)}


@hookimpl
def geneval_register_metrics(register) -> None:
    register(
        SeedAveraged(
            SeparatedAttributePredictability(),
            "the row shuffle before the split, and the SVMs' random_state",
        )
    )
