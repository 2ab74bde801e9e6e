"""The plugin SDK: everything a plugin author imports, from this one module.

A plugin (``docs/contracts.md`` §2) is a module named by an entry point of the ``geneval``
group that implements the ``geneval_register_*`` hooks::

    from geneval.plugin import Metric, Need, Option, hookimpl

    class MeanIntensity(Metric):
        name = "mean-intensity"
        higher_is_better = False
        interpretation = "Mean pixel value of the samples in [0, 1]."
        needs = (Need("images", "samples"),)
        options = {"scale": Option(1.0, "Multiply the mean by this factor.", low=0.0)}
        fields = {"n": "number of samples"}
        uncertainty = None

        def compute(self, inputs, *, scale):
            images = inputs.images("samples")
            return {"value": float(images.double().mean()) * scale, "n": len(images)}

    @hookimpl
    def geneval_register_metrics(register):
        register(MeanIntensity())

What it offers:

* **Hooks**: :data:`hookimpl`, the marker of ``geneval_register_metrics``, ``_models``,
  ``_extractors``, ``_datasets`` and ``_commands`` (:mod:`geneval.hookspecs`).
* **Protocols**, which double as base classes holding the optional attributes' defaults:
  :class:`Metric`, :class:`ModelFamily`, :class:`GenerativeModel`, :class:`FeatureExtractor`,
  :class:`LoadedExtractor`, :class:`Dataset`, :class:`FactorDataset`, what a metric reads
  (:class:`MetricInputs`, :class:`Need`, :class:`ImageSet`, :class:`PairedImages`,
  :class:`FeatureStatistics`), :class:`CommandOption`, and the capability protocols
  (``SupportsELBO`` …) a model family's models satisfy.
* **Declarations that explain a number** (optional, read with their default ``None`` when a
  plugin lacks them): a metric's ``unit`` (``"nats/image"``, ``"bits/dim"``, ``"dB"``), shown
  beside its value in every report, and its ``feature_space`` (the space its published numbers
  use, e.g. ``"inception-v3-fid"``); an extractor's ``feature_space`` (default: its name). A
  run whose features lie in another space than the metric's is reported as comparable only
  with runs in that space.
* **Options and errors**: :class:`Option`; :class:`InputError` (bad input, exit 2, one line
  naming the culprit); :func:`warn` (a one-line caveat the report shows); :func:`quote`
  (a user string, such as a path, written safely into such a line).
* **Progress**: :func:`progress_bar`, :func:`progress_enabled`, :func:`note`.
* **Published weights**: :class:`WeightsFile` (an extractor's or family's
  ``published_weights``), :func:`find_weights`, :func:`hub_checkpoint_dir`
  (:mod:`geneval.weights`, no torch).
* **Cache and files**: :func:`geneval_cache_dir`, :func:`file_sha256` (a file's sha256,
  remembered by the cache), :func:`sha256_of`, :func:`atomic_path`, :func:`load_stats`.
* **Training toolkit** for model families: :class:`TrainableFamily`, :class:`TrainingStep`
  and :func:`training_options` (:mod:`geneval.family`, no torch), and the loop's pieces,
  :class:`ExponentialMovingAverage`, :class:`MinibatchStream`, :func:`minibatches`,
  :func:`images_from_source`, :func:`sample_in_batches`,
  :class:`Checkpoint`, :func:`load_checkpoint`, :func:`save_checkpoint`.
* **The sampler shape**: :class:`Sampler`, :func:`build_sampler`, :func:`run_chain`,
  :func:`draw`, :class:`SampledModel`, :data:`MAX_SAMPLER_STEPS` (:mod:`geneval.sampling`).

Importing this module does not import torch: the names whose modules need it (the
training toolkit, the sampler shape, statistics, progress and files) load on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from geneval.api import (
    INPUT_KINDS,
    CommandOption,
    Dataset,
    FactorDataset,
    FeatureExtractor,
    GenerativeModel,
    ImageSet,
    LoadedExtractor,
    Metric,
    MetricInputs,
    ModelFamily,
    Need,
    PairedImages,
)
from geneval.cache import file_sha256, geneval_cache_dir, sha256_of
from geneval.capabilities import (
    LIKELIHOOD_SPACES,
    AnnealingPath,
    ProbabilityFlowSDE,
    SupportsAnnealing,
    SupportsClassLabels,
    SupportsDecode,
    SupportsELBO,
    SupportsEncode,
    SupportsEnergy,
    SupportsLatentProposal,
    SupportsLogProb,
    SupportsLogZ,
    SupportsPerSampleGenerators,
    SupportsProbabilityFlow,
    SupportsPrompts,
    SupportsSampleOptions,
    SupportsScore,
)
from geneval.errors import GenevalWarning, InputError, warn
from geneval.family import TrainableFamily, TrainingStep, training_options
from geneval.hookspecs import hookimpl
from geneval.options import Option
from geneval.text import quote
from geneval.weights import WeightsFile, find_weights, hub_checkpoint_dir

if TYPE_CHECKING:
    from geneval.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from geneval.distributed import map_shards
    from geneval.feature_stats import FeatureStatistics, load_stats
    from geneval.io import atomic_path
    from geneval.progress import note, progress_bar, progress_enabled
    from geneval.sampling import (
        MAX_SAMPLER_STEPS,
        SampledModel,
        Sampler,
        build_sampler,
        draw,
        run_chain,
    )
    from geneval.sources import sample_block_seed
    from geneval.training import (
        ExponentialMovingAverage,
        MinibatchStream,
        images_from_source,
        minibatches,
        sample_in_batches,
    )

#: Names loaded on first use, by the module that defines them (these modules import torch
#: or tqdm).
_LAZY: dict[str, str] = {
    **dict.fromkeys(("Checkpoint", "load_checkpoint", "save_checkpoint"), "geneval.checkpoint"),
    "atomic_path": "geneval.io",
    "map_shards": "geneval.distributed",
    "sample_block_seed": "geneval.sources",
    **dict.fromkeys(("note", "progress_bar", "progress_enabled"), "geneval.progress"),
    **dict.fromkeys(
        ("MAX_SAMPLER_STEPS", "SampledModel", "Sampler", "build_sampler", "draw", "run_chain"),
        "geneval.sampling",
    ),
    **dict.fromkeys(("FeatureStatistics", "load_stats"), "geneval.feature_stats"),
    **dict.fromkeys(
        (
            "ExponentialMovingAverage",
            "MinibatchStream",
            "images_from_source",
            "minibatches",
            "sample_in_batches",
        ),
        "geneval.training",
    ),
}


def __getattr__(name: str) -> Any:
    """Load a name of the training toolkit, the sampler shape, statistics, progress or files
    on first use (see :data:`_LAZY`)."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'geneval.plugin' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "INPUT_KINDS",
    "LIKELIHOOD_SPACES",
    "MAX_SAMPLER_STEPS",
    "AnnealingPath",
    "Checkpoint",
    "CommandOption",
    "Dataset",
    "ExponentialMovingAverage",
    "FactorDataset",
    "FeatureExtractor",
    "FeatureStatistics",
    "GenerativeModel",
    "GenevalWarning",
    "ImageSet",
    "InputError",
    "LoadedExtractor",
    "Metric",
    "MetricInputs",
    "MinibatchStream",
    "ModelFamily",
    "Need",
    "Option",
    "PairedImages",
    "ProbabilityFlowSDE",
    "SampledModel",
    "Sampler",
    "SupportsAnnealing",
    "SupportsClassLabels",
    "SupportsDecode",
    "SupportsELBO",
    "SupportsEncode",
    "SupportsEnergy",
    "SupportsLatentProposal",
    "SupportsLogProb",
    "SupportsLogZ",
    "SupportsPerSampleGenerators",
    "SupportsProbabilityFlow",
    "SupportsPrompts",
    "SupportsSampleOptions",
    "SupportsScore",
    "TrainableFamily",
    "TrainingStep",
    "WeightsFile",
    "atomic_path",
    "build_sampler",
    "draw",
    "find_weights",
    "file_sha256",
    "geneval_cache_dir",
    "hub_checkpoint_dir",
    "hookimpl",
    "images_from_source",
    "load_checkpoint",
    "load_stats",
    "map_shards",
    "minibatches",
    "note",
    "progress_bar",
    "progress_enabled",
    "quote",
    "run_chain",
    "sample_block_seed",
    "sample_in_batches",
    "save_checkpoint",
    "sha256_of",
    "training_options",
    "warn",
]
