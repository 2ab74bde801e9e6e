"""The seed dependence of the disentanglement metrics, stated and averaged.

Every disentanglement metric draws with the run's ``--seed``: the shuffle of the rows before
the training/test split (:func:`.codes.read_codes`), the fixed-factor batches of ``beta_vae``
and ``factor_vae``, and the ``random_state`` of ``dci``'s boosted trees and ``sap``'s SVMs
(disentanglement_lib leaves its trees unseeded, so its own numbers move from run to run). The
same arrays therefore give different scores at different seeds — SAP moves by about 0.03 on
a few thousand rows — and a score is comparable only at the same seed, or averaged over
several. :class:`SeedAveraged` states this in each metric's interpretation and adds the
option ``seeds``: ``--opt sap.seeds=5`` scores seeds ``s, s + 1, …, s + 4`` (``s`` the run's
``--seed``) and reports their mean, each value and their standard deviation.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping
from typing import Any

from geneval.plugin import MetricInputs, Option


class _SeededInputs:
    """``inputs`` with another ``seed``; everything else is read from ``inputs``."""

    def __init__(self, inputs: MetricInputs, seed: int) -> None:
        self._inputs = inputs
        self.seed = seed

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inputs, name)


class SeedAveraged:
    """A disentanglement metric whose interpretation names what ``--seed`` changes, with the
    option ``seeds`` to average the metric over that many consecutive seeds.

    The result is the metric's own at the run's seed, with ``value`` replaced by the mean over
    the seeds and ``seeds``, ``seed_values`` and ``seed_std`` (sample standard deviation, with
    ``seeds > 1``) added; its other fields are those of the first seed.
    """

    def __init__(self, metric: Any, draws: str) -> None:
        self._metric = metric
        self.name: str = metric.name
        self.higher_is_better: bool = metric.higher_is_better
        self.needs = metric.needs
        self.uncertainty = metric.uncertainty
        self.interpretation = (
            f"{metric.interpretation}; depends on --seed ({draws}): compare at one seed, or "
            f"average with --opt {metric.name}.seeds=S"
        )
        self.options: Mapping[str, Option] = {
            **metric.options,
            "seeds": Option(
                1, "score this many consecutive seeds from --seed and report their mean", low=1
            ),
        }
        self.fields: Mapping[str, str] = {
            **metric.fields,
            "seeds": "the seeds scored (from --seed on)",
            "seed_values": "the value at each seed (with seeds > 1)",
            "seed_std": "standard deviation of the value over the seeds (with seeds > 1)",
        }

    def __getattr__(self, name: str) -> Any:
        return getattr(self._metric, name)

    def compute(self, inputs: MetricInputs, *, seeds: int = 1, **options: Any) -> Mapping[str, Any]:
        """The metric at seeds ``--seed`` … ``--seed + seeds − 1``; ``value`` is their mean."""
        first = int(inputs.seed)
        used = [first + i for i in range(seeds)]
        results = [self._metric.compute(_SeededInputs(inputs, seed), **options) for seed in used]
        out = {**results[0], "seeds": used}
        if seeds > 1:
            values = [float(result["value"]) for result in results]
            out["value"] = math.fsum(values) / seeds
            out["seed_values"] = values
            out["seed_std"] = statistics.stdev(values)
        return out


__all__ = ["SeedAveraged"]
