"""Metric ``coverage``: the fraction of reference k-NN balls that hold at least one sample.

See :mod:`geneval_plugins.metrics.sample_quality.manifold` for the definition (Naeem et al.
2020) and :func:`~geneval_plugins.metrics.sample_quality.manifold.coverage`.
"""

from __future__ import annotations

from geneval.plugin import hookimpl
from geneval_plugins.metrics.sample_quality.manifold import ManifoldMetric

INTERPRETATION = (
    "fraction of reference k-NN balls holding at least one sample (diversity, robust to "
    "outliers); 0 to 1, higher means more of the reference distribution is covered"
)


def coverage_metric() -> ManifoldMetric:
    """The ``coverage`` metric, k = 5 by default as Naeem et al."""
    return ManifoldMetric("coverage", 5, INTERPRETATION)


@hookimpl
def geneval_register_metrics(register) -> None:
    register(coverage_metric())
