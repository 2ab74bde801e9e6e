"""Registers a second metric called ``mean-intensity`` (clashing with geneval-demo-metric)."""

from geneval import hookimpl
from geneval.api import Need


class Clash:
    name = "mean-intensity"
    higher_is_better = False
    needs = (Need(kind="images", source="samples"),)
    defaults: dict = {}
    options_help: dict = {}

    def compute(self, inputs):
        return {"value": 0.0}


@hookimpl
def geneval_register_metrics(register):
    register(Clash())
