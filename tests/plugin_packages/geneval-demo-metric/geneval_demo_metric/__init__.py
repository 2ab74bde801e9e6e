"""A third-party metric: the mean pixel intensity of the samples (a test fixture).

Written as the README's "Write a plugin" teaches: everything comes from the SDK,
:mod:`geneval.plugin`, and the metric subclasses its protocol, declaring what §2 of
``docs/contracts.md`` requires (``interpretation``, ``options``, ``fields``, ``uncertainty``).
"""

from geneval.plugin import Metric, Need, Option, hookimpl


class MeanIntensity(Metric):
    """Mean pixel value of the samples in [0, 1]: (scale / NCHW) Σ x."""

    name = "mean-intensity"
    higher_is_better = False
    interpretation = "Mean pixel value of the samples in [0, 1], times the option scale."
    needs = (Need(kind="images", source="samples"),)
    options = {"scale": Option(1.0, "Multiply the mean by this factor.")}
    fields = {"n": "number of samples averaged"}
    uncertainty = None

    def compute(self, inputs, *, scale: float):
        images = inputs.images("samples")
        return {"value": float(images.double().mean()) * scale, "n": int(images.shape[0])}


@hookimpl
def geneval_register_metrics(register):
    register(MeanIntensity())
