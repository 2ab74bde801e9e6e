"""Metric ``explicitness``: explicitness of the latents (Ridgeway & Mozer 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl, progress_bar
from geneval_plugins.metrics.representation.disentanglement.codes import (
    CODE_FIELDS,
    TEST_FIELD,
    Codes,
    collected_warnings,
    describe,
    num_test_option,
    num_train_option,
    read_codes,
    split,
)
from geneval_plugins.metrics.representation.disentanglement.seeds import SeedAveraged

if TYPE_CHECKING:
    import numpy as np


def one_vs_rest_auc(labels: np.ndarray, classes: np.ndarray, scores: np.ndarray) -> float:
    """Macro-averaged one-vs-rest ROC-AUC of class probabilities ``scores`` (n, C).

    Column c is scored against the indicator ``labels == classes[c]``; columns whose class is
    absent (or alone) among ``labels`` have no AUC and are skipped. With every class present
    this is ``roc_auc_score(MultiLabelBinarizer().fit_transform(labels[:, None]), scores)`` as
    disentanglement_lib computes it.
    """
    import numpy as np
    from sklearn.metrics import roc_auc_score

    aucs = []
    for c, cls in enumerate(classes):
        truth = labels == cls
        if 0 < truth.sum() < truth.size:
            aucs.append(roc_auc_score(truth, scores[:, c]))
    return float(np.mean(aucs)) if aucs else float("nan")


def explicitness(train: Codes, test: Codes, *, seed: int = 0) -> tuple[float, float]:
    """Mean over factors of the test and train ROC-AUC of a logistic regression on all latents.

    Latents are standardised with the training mean and (population) standard deviation; for
    each factor ``LogisticRegression()`` (scikit-learn defaults) is fitted on the training rows
    and its class probabilities scored by :func:`one_vs_rest_auc` (disentanglement_lib's
    ``explicitness_per_factor``). Returns ``(test, train)``.

    The AUC of an uninformative representation is 0.5, not 0: explicitness measures how
    linearly decodable the factors are, and says nothing about which latent holds them.

    References
    ----------
    .. [1] K. Ridgeway, M. C. Mozer, "Learning Deep Disentangled Embeddings With the
       F-Statistic Loss", NeurIPS 2018, Section 3.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    mean = train.latents.mean(axis=0)
    std = train.latents.std(axis=0)
    std = np.where(std > 0.0, std, 1.0)
    x_fit, x_score = (train.latents - mean) / std, (test.latents - mean) / std
    train_auc, test_auc = [], []
    with progress_bar(total=train.factors.shape[1], desc="explicitness", unit="factor") as bar:
        for j in range(train.factors.shape[1]):
            clf = LogisticRegression(random_state=seed).fit(x_fit, train.factors[:, j])
            train_auc.append(
                one_vs_rest_auc(train.factors[:, j], clf.classes_, clf.predict_proba(x_fit))
            )
            test_auc.append(
                one_vs_rest_auc(test.factors[:, j], clf.classes_, clf.predict_proba(x_score))
            )
            bar.update(1)
    return float(np.nanmean(test_auc)), float(np.nanmean(train_auc))


class Explicitness:
    """``explicitness``: how well a linear classifier decodes each factor from the latents."""

    name = "explicitness"
    higher_is_better = True
    interpretation = (
        "explicitness: mean one-vs-rest ROC-AUC of a logistic regression of each factor on the "
        "latents (0.5 = chance, 1 = perfectly decodable)"
    )
    needs = (Need("latents", "samples"), Need("factors", "samples"))
    options: Mapping[str, Option] = {
        "num_train": num_train_option(),
        "num_test": num_test_option(),
    }
    fields: Mapping[str, str] = {
        **CODE_FIELDS,
        **TEST_FIELD,
        "explicitness_train": "the same ROC-AUC on the training rows",
    }
    uncertainty = None

    def compute(self, inputs: MetricInputs, *, num_train: int, num_test: int) -> Mapping[str, Any]:
        """Explicitness of the training/test split of the (shuffled) rows."""
        import numpy as np

        train, test = split(read_codes(inputs, self.name), num_train, num_test, self.name)
        with collected_warnings(train.warnings):
            test_auc, train_auc = explicitness(train, test, seed=int(inputs.seed))
        if not np.isfinite(test_auc):
            raise InputError(
                f"explicitness: every factor takes a single value in the {test.n} test rows; "
                "give more rows"
            )
        return {"value": test_auc, "explicitness_train": train_auc, **describe(train, test)}


@hookimpl
def geneval_register_metrics(register) -> None:
    register(SeedAveraged(Explicitness(), "the row shuffle before the split"))
