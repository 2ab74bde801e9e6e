"""What a run is asked to do: :class:`RunConfig`, and :data:`DEFAULTS`, its one set of defaults.

The command line's options, :func:`geneval.evaluate` and :class:`geneval.Evaluator` read their
defaults from :data:`DEFAULTS` (as torch-fidelity's ``DEFAULTS``) and build their
:class:`RunConfig` with :func:`run_config`. This module imports neither torch nor any plugin,
so that the command line's ``--help`` stays fast.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.errors import InputError, setting
from geneval.text import quote

if TYPE_CHECKING:
    import torch

#: Extraction precisions (:mod:`geneval.precision`): ``--precision`` and ``precision=``.
PRECISIONS = ("fp32", "bf16", "tf32", "fp16")
#: How an image array's axes are read: ``auto`` (by the one rule of
#: :func:`geneval.sources.image_layout`), ``nchw`` or ``nhwc`` (``--layout`` on the command
#: line, ``layout=`` in the Python API).
LAYOUTS = ("auto", "nchw", "nhwc")

#: The defaults of a run's settings, shared by the command line and the Python API.
DEFAULTS: dict[str, Any] = {
    "metrics": "fid",
    "num_samples": 1000,  # samples drawn from a model
    "batch_size": 64,  # images per extractor call
    "sample_batch_size": 500,  # samples per model call
    "device": "auto",
    "seed": 0,
    "precision": "fp32",  # fp32, bf16 or tf32 (geneval.precision)
    "layout": "auto",  # how image arrays' axes are read: auto, nchw or nhwc
    "cache": True,  # the feature cache of $GENEVAL_CACHE (docs/contracts.md §12)
    "compile": False,  # torch.compile the extractors where they stay exact
}


@dataclass
class RunConfig:
    """Everything ``geneval run`` was asked to do (the Python API mirrors the CLI).

    ``samples`` and ``reference`` are paths, ``DATASET[:SPLIT]``, statistics files, in-memory
    image tensors or arrays, sample sources, or (samples only) a generator object
    (:func:`geneval.generators.adopt`); ``model`` names a model family (``NAME``,
    ``NAME:CHECKPOINT``) or the user's generator (``module.path:attribute``) instead.
    ``options`` are ``METRIC.KEY=VALUE`` strings or ``{metric: {key: value}}``, with the
    model's sample options under ``model`` (``--opt model.KEY=VALUE``). ``batch_size`` is
    the number of images per extractor call,
    ``sample_batch_size`` the number of samples per model call.
    """

    metrics: Sequence[str]
    model: str | None = None
    checkpoint: Path | None = None
    num_samples: int = DEFAULTS["num_samples"]
    samples: Any = None
    reference: Any = None
    extractor: str | None = None
    #: ``--extractor-weights``: one path (the run's one extractor), or extractor name → path
    extractor_weights: Path | dict[str, Path] | None = None
    resize: str | None = None
    options: Sequence[str] | Mapping[str, Mapping[str, Any]] = ()
    device: str | torch.device = DEFAULTS["device"]
    batch_size: int = DEFAULTS["batch_size"]
    sample_batch_size: int = DEFAULTS["sample_batch_size"]
    workers: int | None = None  # None: chosen by the folder's size
    seed: int = DEFAULTS["seed"]
    sampler: str | None = None
    steps: int | None = None
    # -- what a model's samples are conditioned on (geneval/generators.py) --
    labels: Path | Sequence[int] | None = None  # class labels (--labels FILE)
    prompts: Path | Sequence[str] | None = None  # text prompts (--prompts FILE)
    # -- what a report shows besides the numbers (geneval/report/visuals.py, baseline.py) --
    grid: int = 0  # the first images of each source kept for grids
    neighbours: int = 0  # samples whose nearest reference images are shown
    baseline: bool = False  # score a held-out split of the reference dataset at the same n
    cache: bool = DEFAULTS["cache"]
    precision: str = DEFAULTS["precision"]
    compile: bool = DEFAULTS["compile"]
    layout: str = DEFAULTS["layout"]


def run_config(
    metrics: str | Sequence[str],
    *,
    batch_size: int | None = None,
    sample_batch_size: int | None = None,
    checkpoint: str | Path | None = None,
    extractor_weights: str | Path | Mapping[str, str | Path] | Sequence[str | Path] | None = None,
    options: Sequence[str] | Mapping[str, Mapping[str, Any]] | None = None,
    labels: str | Path | Sequence[int] | None = None,
    prompts: str | Path | Sequence[str] | None = None,
    **settings: Any,
) -> RunConfig:
    """The :class:`RunConfig` of the command line's or the Python API's arguments.

    ``metrics`` may be a comma-separated string; paths may be strings. ``batch_size`` (images
    per extractor call) also sets the samples per model call unless ``sample_batch_size`` is
    given (as ``--batch-size`` always has); each falls back to its :data:`DEFAULTS` entry.
    ``labels`` and ``prompts`` are a file (a path) or the values themselves.
    ``extractor_weights`` is read by :func:`parse_extractor_weights`.
    """
    names = metrics.split(",") if isinstance(metrics, str) else list(metrics)
    if sample_batch_size is None:
        sample_batch_size = batch_size
    return RunConfig(
        metrics=[name for name in names if name.strip()],
        checkpoint=Path(checkpoint) if checkpoint is not None else None,
        extractor_weights=parse_extractor_weights(extractor_weights),
        labels=Path(labels) if isinstance(labels, str) else labels,
        prompts=Path(prompts) if isinstance(prompts, str) else prompts,
        options=list(options) if isinstance(options, list | tuple) else dict(options or {}),
        batch_size=DEFAULTS["batch_size"] if batch_size is None else batch_size,
        sample_batch_size=(
            DEFAULTS["sample_batch_size"] if sample_batch_size is None else sample_batch_size
        ),
        **settings,
    )


_WEIGHTS_NAME = re.compile(r"^([a-z0-9_-]+)=(.+)$", re.DOTALL)


def parse_extractor_weights(
    given: str | Path | Mapping[str, str | Path] | Sequence[str | Path] | None,
) -> Path | dict[str, Path] | None:
    """``--extractor-weights`` (repeatable) or ``extractor_weights=`` as one path or a mapping.

    Accepted: ``None`` or nothing; one path (for the run's one extractor); a mapping
    ``{extractor: path}``; or a sequence of ``PATH`` and ``NAME=PATH`` strings, as the command
    line gives them. A string ``NAME=PATH`` (``NAME`` of ``[a-z0-9_-]``) names an extractor
    unless the whole string is an existing file. Two paths without names, a path without a
    name beside named ones, or one name given twice is an :class:`InputError`.
    """
    if given is None:
        return None
    if isinstance(given, Mapping):
        named: dict[str, Path] = {}
        for key, value in given.items():
            if not isinstance(key, str) or not isinstance(value, str | os.PathLike):
                raise InputError(
                    f"extractor_weights: expected {{extractor name: path}}, got {key!r}: {value!r}"
                )
            named[key] = Path(value)
        return named or None
    items = [given] if isinstance(given, str | os.PathLike) else list(given)
    plain: list[Path] = []
    named = {}
    for item in items:
        if not isinstance(item, str | os.PathLike):
            raise InputError(f"{setting('extractor_weights')}: {item!r} is not a path")
        match = _WEIGHTS_NAME.match(item) if isinstance(item, str) else None
        if match is not None and not Path(item).is_file():
            name, path = match.group(1), match.group(2)
            if name in named:
                raise InputError(f"{setting('extractor_weights')}: extractor {name} is given twice")
            named[name] = Path(path)
        else:
            plain.append(Path(item))
    if len(plain) > 1 or (plain and named):
        shown = ", ".join(quote(p) for p in plain)
        raise InputError(
            f"{setting('extractor_weights')} {shown}: give one PATH for a run with one "
            "extractor, or NAME=PATH for each extractor"
        )
    if plain:
        return plain[0]
    return named or None


def validate_config(config: RunConfig) -> None:
    """Cheap checks on the combination of options, before anything heavy runs."""
    if (config.model is None) == (config.samples is None):
        raise InputError(
            f"give exactly one of {setting('model')} NAME or {setting('samples')} PATH"
        )
    if config.checkpoint is not None and config.model is None:
        raise InputError(f"{setting('checkpoint')} needs {setting('model')}")
    for name, value, low in (
        ("batch_size", config.batch_size, 1),
        ("sample_batch_size", config.sample_batch_size, 1),
        ("workers", config.workers, 0),
        ("num_samples", config.num_samples, 1),
        ("steps", config.steps, 1),
        ("grid", config.grid, 0),
        ("neighbours", config.neighbours, 0),
    ):
        if value is not None and (not isinstance(value, int) or value < low):
            raise InputError(f"{setting(name)} must be an integer ≥ {low}, got {value}")
    if not isinstance(config.seed, int) or not 0 <= config.seed < 2**63:
        raise InputError(f"{setting('seed')} must be an integer in [0, 2^63), got {config.seed}")
    if config.precision not in PRECISIONS:
        raise InputError(
            f"{setting('precision')} {config.precision}: choose from {', '.join(PRECISIONS)}"
        )
    if config.layout not in LAYOUTS:
        raise InputError(
            f"{setting('layout')} {quote(config.layout)}: choose from {', '.join(LAYOUTS)}"
        )
