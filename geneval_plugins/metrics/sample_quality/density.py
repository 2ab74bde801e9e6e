"""Metric ``density``: how many reference k-NN balls hold each sample, over k.

See :mod:`geneval_plugins.metrics.sample_quality.manifold` for the definition (Naeem et al.
2020) and :func:`~geneval_plugins.metrics.sample_quality.manifold.density`.
"""

from __future__ import annotations

from geneval.plugin import hookimpl
from geneval_plugins.metrics.sample_quality.manifold import ManifoldMetric

INTERPRETATION = (
    "mean number of reference k-NN balls holding a sample, divided by k (fidelity, robust to "
    "outliers); about 1 for matching distributions, can exceed 1"
)


def density_metric() -> ManifoldMetric:
    """The ``density`` metric, k = 5 by default as Naeem et al."""
    return ManifoldMetric("density", 5, INTERPRETATION)


@hookimpl
def geneval_register_metrics(register) -> None:
    register(density_metric())
