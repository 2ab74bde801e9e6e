"""What a report says about each number: its direction, meaning and uncertainty, the software
that produced it, and warnings when too few samples stand behind it (docs/contracts.md §5).

* :func:`metric_info` — each metric's ``higher_is_better``, ``interpretation``, the field
  holding its ``uncertainty``, the ``unit`` of its value, the ``feature_space`` its published
  numbers use, the ``report_panel`` it is shown with, what it ``reads`` and its documented
  minimum sample count, as the report's ``metric_info`` section records them (so that
  ``geneval compare`` and readers of the JSON need no installed plugin to know which way is
  better).
* :func:`sample_count_warnings` — one line per source with fewer samples than the metric's
  minimum. A metric declares ``min_samples`` (FID and KID: 2048, the Inception feature
  dimension); the extractor that produced its features, or the dataset it is compared with,
  may declare its own ``min_samples``, which then replaces the metric's (a 128-d extractor
  needs fewer samples than Inception's 2048-d features).
* :func:`versions` — the versions of geneval, Python, torch and numpy.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from typing import Any

from geneval import __version__
from geneval.api import Dataset, FeatureExtractor, Metric, declared


def direction(higher_is_better: bool | None) -> str:
    """``"higher is better"``, ``"lower is better"`` or ``"direction unknown"``."""
    if higher_is_better is None:
        return "direction unknown"
    return "higher is better" if higher_is_better else "lower is better"


def reads(metric: Metric) -> list[str]:
    """What ``metric`` reads, from its declared needs: ``"samples"`` and/or ``"reference"``
    (any input of that source), and ``"model"`` when it scores images under the model itself
    (a likelihood, an ELBO), in that order."""
    kinds = {"model" if need.kind == "model" else need.source for need in metric.needs}
    return [role for role in ("samples", "reference", "model") if role in kinds]


def metric_info(
    metrics: Mapping[str, Metric],
    minimums: Mapping[str, tuple[int | None, str]] | None = None,
    options: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, dict[str, Any]]:
    """``{name: {"higher_is_better", "interpretation", "uncertainty", "unit", "feature_space",
    "reads", "min_samples", "min_samples_from", "report_panel"}}`` of the metric plugins
    ``metrics`` (name → plugin); a value a plugin does not declare is ``None``. ``unit`` is
    the unit of the value and its uncertainty, ``feature_space`` the space of the metric's
    published numbers, ``report_panel`` the report panel it is shown with
    (:class:`geneval.api.Metric`), ``reads`` what it reads (:func:`reads`). ``minimums``
    (name → :func:`minimum_samples`) gives the minimum that applies in a run, else the
    metric's own is recorded. ``options`` (name → the run's validated options) give the
    feature space of a metric whose published numbers depend on them (its optional
    ``feature_space_for(options)``, e.g. precision under ``protocol=adm``)."""
    info = {}
    for name, metric in metrics.items():
        higher = metric.higher_is_better
        minimum, who = (minimums or {}).get(name) or minimum_samples(metric, None, [])
        unit = declared(metric, "unit")
        space = declared(metric, "feature_space")
        space_for = getattr(metric, "feature_space_for", None)
        if callable(space_for) and options is not None and name in options:
            space = space_for(options[name])
        panel = declared(metric, "report_panel")
        info[name] = {
            "higher_is_better": None if higher is None else bool(higher),
            "interpretation": metric.interpretation,
            "uncertainty": metric.uncertainty,
            "unit": None if unit is None else str(unit),
            "feature_space": None if space is None else str(space),
            "reads": reads(metric),
            "min_samples": minimum,
            "min_samples_from": who or None,
            "report_panel": None if panel is None else str(panel),
        }
    return info


def minimum_samples(
    metric: Metric, extractor: FeatureExtractor | None, datasets: list[Dataset]
) -> tuple[int | None, str]:
    """The sample count below which ``metric``'s number is not to be trusted, and who says so.

    Only metrics that declare ``min_samples`` have one. The extractor that produced the
    metric's features (``extractor``, a plugin or ``None``) may declare its own minimum, which
    wins; else the first dataset of ``datasets`` (the reference's, then the samples') that
    declares one; else the metric's own.
    """
    own = metric.min_samples
    if own is None:
        return None, ""
    if extractor is not None and extractor.min_samples is not None:
        return int(extractor.min_samples), f"the minimum of extractor {extractor.name}"
    for dataset in datasets:
        if dataset.min_samples is not None:
            return int(dataset.min_samples), f"the minimum of dataset {dataset.name}"
    return int(own), f"the minimum of metric {metric.name}"


def sample_count_warnings(
    metric: Metric, counts: Mapping[str, int | None], minimum: int | None, who: str
) -> list[str]:
    """Warnings for each source ``metric`` reads that holds fewer images than ``minimum``.

    ``counts`` maps ``samples``/``reference`` to their image counts (``None``: unknown, no
    warning); ``minimum`` and ``who`` come from :func:`minimum_samples`. Estimates such as FID
    are biased at small n (Chong & Forsyth 2020), so a value from fewer samples than the
    minimum is flagged and is comparable only at equal n.

    References
    ----------
    .. [1] M. J. Chong, D. Forsyth, "Effectively Unbiased FID and Inception Score and where to
       find them", CVPR 2020.
    """
    if minimum is None:
        return []
    roles = dict.fromkeys(need.source for need in metric.needs)
    out = []
    for role in roles:
        count = counts.get(role)
        if count is not None and count < minimum:
            what = "samples" if role == "samples" else f"{role} images"
            out.append(
                f"computed from {count} {what}, fewer than {minimum} ({who}): the estimate is "
                f"unreliable and comparable only with runs at the same n"
            )
    return out


def versions() -> dict[str, str]:
    """The versions of the software that produced a report (torch and numpy are imported
    here, not with the module, so that the command line starts without them)."""
    import numpy as np
    import torch

    return {
        "geneval": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
    }
