"""Small in-process plugins for the core's tests: a call-counting extractor, metrics over its
features, a metric that raises, a toy model and a toy dataset."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from geneval.api import ImageSet, Need
from geneval.options import Option
from geneval.plugin import hookimpl


class CountingLoaded:
    name = "counting"
    outputs = {"feat": 12, "logit": 3}
    convention = "pool-2x2"
    weights_sha256 = "0" * 64

    def __init__(self, counter: list[int]) -> None:
        self.counter = counter

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.counter.append(int(images.shape[0]))
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        feat = F.adaptive_avg_pool2d(images, 2).flatten(1)
        return {"feat": feat, "logit": feat[:, :3] * 5}


class CountingExtractor:
    """Features: 2×2 average pooling of each RGB channel (12-d). Records each forward call."""

    name = "counting"
    outputs = CountingLoaded.outputs
    feature_output = "feat"
    logits_output = "logit"
    resize_options = ()

    def __init__(self) -> None:
        self.calls: list[int] = []

    def load(self, *, device, weights=None, resize=None):
        return CountingLoaded(self.calls)


class FeatureMean:
    name = "feat-mean"
    interpretation = "Mean of the samples' features."
    higher_is_better = False
    needs = (Need("features", "samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        return {"value": float(inputs.features("samples").double().mean())}


class FeatureMeanDistance:
    """‖μ_samples − μ_reference‖² from the shared statistics."""

    name = "feat-dist"
    interpretation = "Squared distance between the feature means."
    higher_is_better = False
    needs = (
        Need("features", "samples", stats_ok=True),
        Need("features", "reference", stats_ok=True),
    )
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        a, b = inputs.stats("samples").mean, inputs.stats("reference").mean
        return {"value": float(((a - b) ** 2).sum())}


class ReferenceCount:
    name = "ref-count"
    interpretation = "Number of reference features, plus the option offset."
    higher_is_better = True
    needs = (Need("features", "reference"),)
    options = {"offset": Option(0, "added to the count")}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs, *, offset: int):
        return {"value": float(inputs.features("reference").shape[0] + offset)}


class Boom:
    name = "boom"
    interpretation = "Always raises (a metric that fails)."
    higher_is_better = True
    needs = (Need("images", "samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        raise RuntimeError("this metric always fails")


class ToyNoiseModel:
    image_shape = (1, 6, 6)
    device = torch.device("cpu")
    config = {"default_sampler": "uniform"}

    def sample(self, n, *, batch_size, generator, sampler=None, steps=None):
        return torch.rand((n, *self.image_shape), generator=generator)


class ToyNoiseFamily:
    name = "toy-noise"
    dataset = "toyset"
    samplers = ("uniform",)
    train_options: dict = {}
    capabilities: tuple = ()

    def load(self, checkpoint, *, device):
        return ToyNoiseModel()

    def train(self, data, **kwargs):  # pragma: no cover - not trainable
        raise NotImplementedError


class ToySet:
    name = "toyset"
    splits = ("train", "test")
    default_split = "train"
    default_extractor = "counting"

    def load(self, split):
        g = torch.Generator().manual_seed(1 if split == "train" else 2)
        return ImageSet(
            images=torch.rand((40, 1, 6, 6), generator=g) * 0.5, labels=torch.arange(40) % 4
        )


class FakePlugins:
    """A plugin object holding one instance of everything above."""

    __name__ = "fake_plugins"

    def __init__(self) -> None:
        self.extractor = CountingExtractor()

    @hookimpl
    def geneval_register_extractors(self, register):
        register(self.extractor)

    @hookimpl
    def geneval_register_metrics(self, register):
        for metric in (FeatureMean(), FeatureMeanDistance(), ReferenceCount(), Boom()):
            register(metric)

    @hookimpl
    def geneval_register_models(self, register):
        register(ToyNoiseFamily())

    @hookimpl
    def geneval_register_datasets(self, register):
        register(ToySet())
