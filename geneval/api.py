"""The plugin contracts: what metrics, models, extractors and datasets provide (DESIGN §2).

A plugin module implements one or more ``geneval_register_*`` hooks (see
:mod:`geneval.hookspecs`) and calls ``register(obj)`` with objects that follow the
protocols below. The core never names a concrete plugin.

Conventions shared by every plugin:

* Images are float tensors in ``[0, 1]``, layout NCHW (1 or 3 channels).
* Option defaults are declared once (``Metric.defaults``); the CLI's ``--opt`` values are
  typed from them, and the Python API uses the same mapping.
* Bad input raises :class:`geneval.errors.InputError` with one line naming the culprit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

import torch

if TYPE_CHECKING:
    from geneval.stats import FeatureStatistics

Source = Literal["samples", "reference"]
NeedKind = Literal["features", "logits", "images", "labels", "model"]

#: Model capabilities a metric may ask for (DESIGN §2).
CAPABILITIES = frozenset(
    {"sample", "log_prob", "energy", "log_z", "encode", "decode", "elbo", "score"}
)


@dataclass(frozen=True)
class Need:
    """One input a metric needs; the runner computes each distinct need once per run.

    Parameters
    ----------
    kind
        ``features`` — the run extractor's feature output (e.g. Inception ``pool``);
        ``logits`` — the run extractor's classifier logits (e.g. ``logits_unbiased``);
        ``images`` — the raw images in ``[0, 1]``; ``labels`` — ground-truth labels;
        ``model`` — the loaded model itself, which must offer ``capability``.
    source
        ``samples`` or ``reference``.
    stats_ok
        With ``kind="features"``: mean and covariance suffice (FID), so a reference
        statistics file without per-sample features can serve.
    capability
        With ``kind="model"``: the capability the model must have (``elbo``, ``log_z`` ...).
    """

    kind: NeedKind
    source: Source = "samples"
    stats_ok: bool = False
    capability: str | None = None


@dataclass
class ImageSet:
    """A set of images with optional labels, as datasets return them."""

    images: torch.Tensor  # float32 [0, 1], NCHW
    labels: torch.Tensor | None = None  # int64 (N,)
    factors: torch.Tensor | None = None  # ground-truth generative factors (N, K)


@runtime_checkable
class MetricInputs(Protocol):
    """What the runner hands to :meth:`Metric.compute`.

    Only what the metric declared in ``needs`` is available; asking for anything else
    raises ``KeyError``. Features and logits are float32 CPU tensors (n, d); metrics move
    them to ``device`` and accumulate in float64.
    """

    device: torch.device
    seed: int

    def features(self, source: Source) -> torch.Tensor: ...

    def stats(self, source: Source) -> FeatureStatistics: ...

    def logits(self, source: Source) -> torch.Tensor: ...

    def images(self, source: Source) -> torch.Tensor: ...

    def labels(self, source: Source) -> torch.Tensor: ...

    @property
    def model(self) -> GenerativeModel: ...


@runtime_checkable
class Metric(Protocol):
    """A metric plugin.

    ``compute`` returns a mapping with at least ``value`` (float); extra fields such as
    ``std``, ``ci_low``, ``ci_high``, ``n`` and the options used are welcome.
    ``defaults`` maps each option name to its default; its type types the CLI's
    ``--opt name.key=value``. ``options_help`` documents each option in one line.
    """

    name: str
    higher_is_better: bool
    needs: tuple[Need, ...]
    defaults: Mapping[str, Any]
    options_help: Mapping[str, str]

    def compute(self, inputs: MetricInputs, **options: Any) -> Mapping[str, Any]: ...


@runtime_checkable
class GenerativeModel(Protocol):
    """A loaded model, ready to sample on its device.

    ``capabilities`` lists what it offers beyond sampling; a metric that needs one calls the
    method of the same name:

    * ``elbo(x, *, generator) -> Tensor (N,)`` — negative ELBO of images ``x`` in bits/dim;
    * ``log_prob(x) -> Tensor (N,)`` — exact log-likelihood (nats) where it is tractable;
    * ``energy(x) -> Tensor (N,)`` — energy (free energy for latent-variable models);
    * ``log_z() -> float`` — exact log partition function, float64;
    * ``score(x, sigma) -> Tensor`` — ∇ₓ log p_σ(x), shaped like ``x``.
    """

    image_shape: tuple[int, int, int]  # (C, H, W)
    capabilities: frozenset[str]
    device: torch.device
    config: Mapping[str, Any]  # what the checkpoint says (architecture, schedule, seed ...)

    def sample(
        self,
        n: int,
        *,
        batch_size: int,
        generator: torch.Generator,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` samples, float in ``[0, 1]``, NCHW, on ``device``, in batches."""
        ...


@runtime_checkable
class ModelFamily(Protocol):
    """A model plugin: loads checkpoints (or its bundled default) and trains new ones.

    ``samplers`` names the samplers ``sample(sampler=...)`` accepts, the first being the
    default. ``train_defaults`` maps each training option to its default (typed ``--opt``).
    """

    name: str
    dataset: str  # the dataset its bundled checkpoint was trained on, e.g. "digits"
    samplers: tuple[str, ...]
    train_defaults: Mapping[str, Any]

    def load(self, checkpoint: Path | None, *, device: torch.device) -> GenerativeModel:
        """Load ``checkpoint`` (``None``: the bundled one) onto ``device``."""
        ...

    def train(
        self,
        data: ImageSet,
        *,
        output: Path,
        steps: int | None,
        device: torch.device,
        seed: int,
        resume: bool,
        force: bool,
        options: Mapping[str, Any],
    ) -> Path:
        """Train on ``data`` and write a checkpoint to ``output`` (atomically)."""
        ...


@runtime_checkable
class LoadedExtractor(Protocol):
    """A feature extractor ready on its device.

    Called on a batch of images (float ``[0, 1]`` NCHW, any size, 1 or 3 channels) it
    returns ``{output_name: tensor (N, dim)}`` for every name in ``outputs``.
    ``convention`` is the preprocessing actually applied (e.g. ``tf1``), recorded in
    reports and statistics files; ``weights_sha256`` identifies the weights.
    """

    name: str
    outputs: Mapping[str, int]
    convention: str
    weights_sha256: str

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]: ...


@runtime_checkable
class FeatureExtractor(Protocol):
    """An extractor plugin.

    ``feature_output`` is the output metrics get as ``features`` (e.g. ``pool``);
    ``logits_output`` the one they get as ``logits`` (e.g. ``logits_unbiased``), or
    ``None`` when it has no classifier head. ``resize_options`` lists the accepted
    ``--resize`` values, the first being the default; empty when resizing is fixed.
    """

    name: str
    outputs: Mapping[str, int]
    feature_output: str
    logits_output: str | None
    resize_options: tuple[str, ...]

    def load(
        self, *, device: torch.device, weights: Path | None = None, resize: str | None = None
    ) -> LoadedExtractor: ...


@runtime_checkable
class Dataset(Protocol):
    """A dataset plugin: named splits of images (and labels/factors where it has them)."""

    name: str
    splits: tuple[str, ...]
    default_split: str
    default_extractor: str

    def load(self, split: str) -> ImageSet: ...
