"""Metric ``precision``: the fraction of samples inside the reference's k-NN manifold.

See :mod:`geneval_plugins.metrics.sample_quality.manifold` for the definition (Kynkäänniemi
et al. 2019) and :func:`~geneval_plugins.metrics.sample_quality.manifold.precision`.
"""

from __future__ import annotations

from geneval.plugin import hookimpl
from geneval_plugins.metrics.sample_quality.manifold import ManifoldMetric

INTERPRETATION = (
    "fraction of samples within the k-NN balls of the reference features (fidelity); "
    "0 to 1, higher means fewer samples off the reference manifold"
)


def precision_metric() -> ManifoldMetric:
    """The ``precision`` metric, k = 3 by default as Kynkäänniemi et al. and torch-fidelity;
    ``protocol=adm`` gives the ADM evaluator's (:func:`manifold.adm_precision_recall`)."""
    return ManifoldMetric("precision", 3, INTERPRETATION)


@hookimpl
def geneval_register_metrics(register) -> None:
    register(precision_metric())
