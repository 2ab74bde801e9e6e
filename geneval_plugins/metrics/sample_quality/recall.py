"""Metric ``recall``: the fraction of reference points inside the samples' k-NN manifold.

See :mod:`geneval_plugins.metrics.sample_quality.manifold` for the definition (Kynkäänniemi
et al. 2019) and :func:`~geneval_plugins.metrics.sample_quality.manifold.recall`.
"""

from __future__ import annotations

from geneval.plugin import hookimpl
from geneval_plugins.metrics.sample_quality.manifold import ManifoldMetric

INTERPRETATION = (
    "fraction of reference features within the k-NN balls of the samples (diversity); "
    "0 to 1, higher means more of the reference distribution is reproduced"
)


def recall_metric() -> ManifoldMetric:
    """The ``recall`` metric, k = 3 by default as Kynkäänniemi et al. and torch-fidelity;
    ``protocol=adm`` gives the ADM evaluator's (:func:`manifold.adm_precision_recall`)."""
    return ManifoldMetric("recall", 3, INTERPRETATION)


@hookimpl
def geneval_register_metrics(register) -> None:
    register(recall_metric())
