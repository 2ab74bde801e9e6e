"""A third-party metric: the mean pixel intensity of the samples (a test fixture)."""

from geneval import hookimpl
from geneval.api import Need


class MeanIntensity:
    """Mean pixel value of the samples in [0, 1]: (1 / NCHW) Σ x."""

    name = "mean-intensity"
    higher_is_better = False
    needs = (Need(kind="images", source="samples"),)
    defaults = {"scale": 1.0}
    options_help = {"scale": "Multiply the mean by this factor."}

    def compute(self, inputs, *, scale: float):
        images = inputs.images("samples")
        return {"value": float(images.double().mean()) * scale, "n": int(images.shape[0])}


@hookimpl
def geneval_register_metrics(register):
    register(MeanIntensity())
