"""Registers a second metric called ``mean-intensity`` (clashing with geneval-demo-metric)."""

from geneval.plugin import Metric, Need, hookimpl


class Clash(Metric):
    name = "mean-intensity"
    higher_is_better = False
    interpretation = "Always zero: a metric whose name clashes with another distribution's."
    needs = (Need(kind="images", source="samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        return {"value": 0.0}


@hookimpl
def geneval_register_metrics(register):
    register(Clash())
