"""The plugin contracts: what metrics, models, extractors and datasets provide.

See ``docs/contracts.md`` §2.

A plugin module implements one or more ``geneval_register_*`` hooks (see
:mod:`geneval.hookspecs`) and calls ``register(obj)`` with objects that follow the
protocols below. The core never names a concrete plugin. Plugin authors import these names
from :mod:`geneval.plugin`, the one module of the plugin SDK.

Each plugin protocol declares its required attributes and gives its optional ones a default
(:data:`REQUIRED_ATTRIBUTES`, :data:`OPTIONAL_ATTRIBUTES`): a plugin class may subclass the
protocol to inherit the defaults, and an object that does not is given them when it is
registered, so that the core reads every attribute directly.

Conventions shared by every plugin:

* Images are float tensors in ``[0, 1]``, layout NCHW (1 or 3 channels).
* Options are declared once (``Metric.options``, ``ModelFamily.train_options``) as
  :class:`geneval.options.Option` with defaults and bounds; the CLI's ``--opt`` values and the
  Python API's keyword values are typed and checked against them before any work starts.
* Bad input raises :class:`geneval.errors.InputError` with one line naming the culprit.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from geneval.errors import InputError
from geneval.options import Option

if TYPE_CHECKING:  # torch is imported by the code that runs, not by the declarations
    import torch

    from geneval.feature_stats import FeatureStatistics
    from geneval.weights import WeightsFile

Source = Literal["samples", "reference"]

#: Every input kind a metric may declare (each has one producer in the runner).
INPUT_KINDS = (
    "images",
    "features",
    "logits",
    "stats",
    "labels",
    "factors",
    "latents",
    "captions",
    "caption_features",
    "reconstructions",
    "dataset",
    "model",
)


@dataclass(frozen=True)
class Need:
    """One input a metric needs; the runner computes each distinct need once per run.

    Parameters
    ----------
    kind
        One of :data:`INPUT_KINDS`:

        * ``images`` — the images in ``[0, 1]``, NCHW;
        * ``features`` / ``logits`` — the extractor's feature / classifier output (n, d);
        * ``stats`` — float64 running moments of the features (a statistics file serves);
        * ``labels`` (n,) int64, ``factors`` (n, K) int64 ground-truth factors,
          ``latents`` (n, D) float: from an ``.npz``, a dataset, or a model's ``encode``
          of the reference images;
        * ``captions`` — one text per image (a list of n strings): the prompts a text-to-image
          model drew the samples from (``--prompts``), an ``.npz`` ``captions`` array, or a
          ``NAME.txt`` beside each image ``NAME.png`` of a folder;
        * ``caption_features`` — the extractor's text embedding of those captions (n, d),
          row i that of caption i: the extractor must have a text tower (``text_encoder =
          True``, and ``encode_text(texts)`` on its loaded form, e.g. CLIP);
        * ``reconstructions`` — images paired one to one with the reference images (by
          index for arrays, by sorted relative path for folders, or a model's
          ``decode(encode(reference))``);
        * ``dataset`` — the dataset plugin the source was drawn from (e.g. to draw fresh
          images with chosen factors), without loading the source's images;
        * ``model`` — the loaded model itself, which must satisfy ``capabilities``.
    source
        ``samples`` or ``reference``.
    stats_ok
        With ``kind="features"``: mean and covariance suffice (same as ``kind="stats"``).
    capabilities
        With ``kind="model"``: protocols of :mod:`geneval.capabilities` the model must
        satisfy (``SupportsELBO`` ...).
    extractor
        With ``features``/``logits``/``stats``: the extractor this metric uses when neither
        the run (``--extractor``) nor the reference dataset names one (e.g. ``vgg16`` for
        precision/recall).
    extractor_required
        With ``extractor``: the metric works only on that extractor's features (e.g. a CLIP
        metric), so it wins over ``--extractor``, the dataset's default and a statistics
        file's; a run where it is not installed or fails to load is exit 2 naming the metric
        and the extractor.
    output
        With ``features``/``stats``: the named output of the extractor (one of its
        ``outputs``, e.g. ``spatial`` of ``inception-v3-fid``); ``None`` (the default) is its
        ``feature_output``. Each (source, extractor, output) is computed once per pass; a
        source's own ``features`` array serves only the default output, and a statistics file
        serves another output only where it carries that output's moments (an ADM batch's
        ``mu_s``/``sigma_s`` serve ``spatial``). The metric reads it with
        ``inputs.stats(source, output=...)`` (or without ``output`` when it declared one
        output of that kind and source). A run whose extractor lacks the output is exit 2.
    """

    kind: str
    source: Source = "samples"
    stats_ok: bool = False
    capabilities: tuple[type, ...] = ()
    extractor: str | None = None
    extractor_required: bool = False
    output: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in INPUT_KINDS:
            raise ValueError(f"unknown input kind {self.kind!r} (one of {', '.join(INPUT_KINDS)})")
        if self.source not in ("samples", "reference"):
            raise ValueError(f"unknown source {self.source!r} (samples or reference)")
        if self.extractor_required and not self.extractor:
            raise ValueError("extractor_required=True needs the extractor's name (extractor=)")
        if self.output is not None and self.kind not in ("features", "stats"):
            raise ValueError(f"output= applies to features and stats, not {self.kind!r}")


@dataclass
class ImageSet:
    """A set of images with what a dataset or an array file may carry beside them."""

    images: torch.Tensor  # float32 [0, 1], NCHW
    labels: torch.Tensor | None = None  # int64 (N,)
    factors: torch.Tensor | None = None  # int64 ground-truth generative factors (N, K)
    latents: torch.Tensor | None = None  # float (N, D)


@dataclass
class PairedImages:
    """Reconstructions paired one to one with the originals they reconstruct."""

    reconstructions: torch.Tensor  # float [0, 1], NCHW
    originals: torch.Tensor  # float [0, 1], NCHW, same shape
    names: list[str] | None = None  # relative paths when paired by name


@runtime_checkable
class MetricInputs(Protocol):
    """What the runner hands to :meth:`Metric.compute`.

    Only what the metric declared in ``needs`` is available; asking for anything else
    raises ``KeyError``. Features and logits are float32 CPU tensors (n, d); metrics move
    them to ``device`` and accumulate in float64. ``output`` names the extractor output a
    need declared (``Need(..., output=...)``); without it, the need of that kind and source
    (the extractor's feature output when several were declared).
    """

    device: torch.device
    seed: int

    def features(self, source: Source, output: str | None = None) -> torch.Tensor: ...

    def stats(self, source: Source, output: str | None = None) -> FeatureStatistics: ...

    def logits(self, source: Source) -> torch.Tensor: ...

    def images(self, source: Source) -> torch.Tensor: ...

    def labels(self, source: Source) -> torch.Tensor: ...

    def factors(self, source: Source) -> torch.Tensor: ...

    def latents(self, source: Source) -> torch.Tensor: ...

    def captions(self, source: Source) -> list[str]: ...

    def caption_features(self, source: Source) -> torch.Tensor: ...

    def reconstructions(self) -> PairedImages: ...

    @property
    def model(self) -> GenerativeModel: ...

    def dataset(self, source: Source) -> Dataset:
        """The dataset plugin a source was drawn from (declared as ``Need("dataset", ...)``)."""
        ...

    def other_images(self, spec: str, *, default_split: str, option: str = "") -> ImageSet:
        """Images of a further source named by a metric option (a folder, an array or
        ``DATASET[:SPLIT]``); an empty ``spec`` means the ``default_split`` of the reference
        dataset. An :class:`InputError` when neither is available, naming ``option`` (e.g.
        ``kde.validation``) as the way to give them."""
        ...

    #: The validated options of every metric of this run, by metric name (metrics that share
    #: one computation, such as the k-nearest-neighbour radii of precision and recall, read
    #: each other's options to size it once).
    run_options: Mapping[str, Mapping[str, Any]]

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per run for ``key``; later calls with the same key, from any
        metric, return the stored result."""
        ...


@runtime_checkable
class Metric(Protocol):
    """A metric plugin; subclass it to inherit the optional attributes' defaults.

    ``compute`` receives the validated options as keyword arguments and returns a mapping
    with at least ``value`` (float, finite) and the declared ``fields``.

    * ``options`` maps each option name to its :class:`geneval.options.Option` (default,
      help, bounds): the single declaration the CLI, the API and the listing use.
    * ``fields`` maps every output field besides ``value`` and the options to a one-line
      meaning (the runner adds the options the metric ran with to its result); gates and
      comparisons on ``metric.field`` are checked against both before a run.
    * ``uncertainty`` names the field holding the standard deviation or standard error of
      ``value`` (``None`` when there is none).
    * ``higher_is_better`` is the direction; ``interpretation`` one line on what the number
      means.
    * A result may carry ``warnings``: a list of one-line strings on how far to trust the
      number (e.g. that Parzen estimates are unreliable in high dimensions); the report shows
      them beside the metric.
    * A field may hold a curve, ``{"x": [...], "y": [...], "x_label", "y_label", "x_range",
      "y_range"}`` (:mod:`geneval.report.curves`): the HTML report draws it and
      ``geneval compare`` draws the runs' curves on one plot.

    Optional, with the defaults below (a metric that does not subclass gets them at
    registration): ``min_samples``, the sample count below which the estimate is not to be
    trusted; ``allows_infinite_value``, whether ``value`` may be ±inf; ``needs_for(options)``,
    the needs under given options (a metric whose needs depend on them overrides it).

    Optional declarations that only explain the number (read with their default when absent,
    so a metric that predates them is never refused; see :data:`EXPLANATORY_ATTRIBUTES`):
    ``unit``, the unit of ``value`` and of its uncertainty (``"nats/image"``, ``"bits/dim"``,
    ``"dB"``; ``None`` for a number without one, such as FID); ``feature_space``, the feature
    space in which the metric's published numbers are computed (the ``feature_space`` of an
    extractor, e.g. ``"inception-v3-fid"`` for FID): a run in another space is reported as
    comparable only with runs in that same space (a metric whose published space depends on
    its options may define ``feature_space_for(options)``, read by the report, as precision
    under ``protocol=adm`` does); ``report_panel``, the report panel the
    metric is shown with besides the metrics table (``"neighbours"``: the nearest-neighbour
    panel of the HTML report, for memorisation and novelty scores; ``None``: none).
    """

    name: str
    higher_is_better: bool
    interpretation: str
    needs: tuple[Need, ...]
    options: Mapping[str, Option]
    fields: Mapping[str, str]
    uncertainty: str | None
    min_samples: int | None = None
    allows_infinite_value: bool = False
    #: The published weights files ``compute`` loads (:class:`geneval.weights.WeightsFile`),
    #: listed and fetched by ``geneval weights`` (e.g. the networks of a perceptual metric);
    #: read with ``getattr``, so a metric that predates it registers unchanged.
    published_weights: tuple[WeightsFile, ...] = ()
    # ``unit`` and ``feature_space`` are read by :func:`declared` and are deliberately not
    # protocol members: an object without them still satisfies ``isinstance(obj, Metric)``.

    def compute(self, inputs: MetricInputs, **options: Any) -> Mapping[str, Any]: ...

    def needs_for(self, options: Mapping[str, Any]) -> tuple[Need, ...]:
        """The needs under the validated ``options`` (default: ``needs``)."""
        return tuple(self.needs)


@runtime_checkable
class GenerativeModel(Protocol):
    """A loaded model, ready to sample on its device.

    What it offers beyond sampling are the capability protocols of
    :mod:`geneval.capabilities` it satisfies (``SupportsELBO``, ``SupportsEnergy`` ...):
    a metric declares the protocols it needs and calls their methods.
    """

    image_shape: tuple[int, int, int]  # (C, H, W)
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
    default.

    Optional, with the defaults below (a family that does not subclass gets them at
    registration): ``train_options`` declares each training option (:class:`Option`, typed
    ``--opt KEY=VALUE``); ``capabilities`` lists the capability protocols its models satisfy
    (the runner checks a loaded model against them); ``arch_options`` names the training
    options that fix the architecture; ``train`` (a family that only samples keeps the
    default, which refuses); ``adopt(obj, device=)``, a Python object (e.g. a pipeline) as a
    model of the family, or ``None`` (the default).
    """

    name: str
    dataset: str  # the dataset its bundled checkpoint was trained on, e.g. "digits" ("": none)
    samplers: tuple[str, ...]
    train_options: Mapping[str, Option] = MappingProxyType({})
    capabilities: tuple[type, ...] = ()
    arch_options: tuple[str, ...] = ()
    #: The published weights files its models load (``geneval weights``; no torch needed).
    published_weights: tuple[WeightsFile, ...] = ()

    def load(self, checkpoint: Path | None, *, device: torch.device) -> GenerativeModel:
        """Load ``checkpoint`` (``None``: the bundled one) onto ``device``."""
        ...

    def adopt(self, obj: Any, *, device: torch.device) -> GenerativeModel | None:
        """``obj`` as a loaded model of this family, when it is one this family can sample
        (e.g. a pipeline object the Python API was given as ``samples=``); the default
        adopts nothing (``None``)."""
        return None

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
        """Train on ``data`` and write a checkpoint to ``output`` (atomically).

        ``options`` are validated values of ``train_options``: every one of them for a new run;
        with ``resume``, only those given, which override the ones the checkpoint records.
        The default refuses: the family samples only (exit 2).
        """
        raise InputError(f"model {self.name} cannot be trained (it only samples)")


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

    Optional, with the defaults below (an extractor that does not subclass gets them at
    registration): ``default = True`` makes it the extractor of runs whose reference names
    none (one installed extractor may claim this); ``min_samples`` replaces the minimum
    sample count of the metrics it serves; ``published_stats(dataset, split, convention)``
    finds published statistics of a benchmark for ``--reference NAME``.

    Optional and read with ``getattr`` (default none): ``text_encoder = True``, an extractor
    with a text tower (CLIP), whose loaded form then offers ``encode_text(texts: list[str])
    -> torch.Tensor`` (n, d), the embeddings of the ``caption_features`` input kind;
    ``statistics_layouts``, the foreign
    statistics-file layouts whose moments this extractor computes, each with the resize
    convention they were made with (``{"adm": "tf1"}``: the ADM evaluator's batches, which
    carry no provenance, are read as this extractor's).

    Optional and read with its default when absent (:data:`EXPLANATORY_ATTRIBUTES`):
    ``feature_space``, the name of the feature space its ``feature_output`` lies in (``None``:
    the extractor's own ``name``). Two extractors that compute the same features (e.g. a
    faster port of the same network and weights) declare the same space, so that a metric's
    ``feature_space`` recognises both.
    """

    name: str
    outputs: Mapping[str, int]
    feature_output: str
    logits_output: str | None
    resize_options: tuple[str, ...]
    default: bool = False
    min_samples: int | None = None
    # ``feature_space`` is read by :func:`declared` and is deliberately not a protocol member:
    # an extractor without it still satisfies ``isinstance(obj, FeatureExtractor)``.
    #: The published weights files ``load`` reads (:class:`geneval.weights.WeightsFile`):
    #: listed and fetched by ``geneval weights``, checked by a run before anything loads.
    published_weights: tuple[WeightsFile, ...] = ()

    def load(
        self, *, device: torch.device, weights: Path | None = None, resize: str | None = None
    ) -> LoadedExtractor: ...

    def published_stats(self, dataset: str, split: str | None, convention: str) -> Path | None:
        """The published statistics file of ``dataset:split`` (default: none)."""
        return None


@runtime_checkable
class Dataset(Protocol):
    """A dataset plugin: named splits of images (and labels/factors where it has them).

    ``default_extractor`` names the extractor whose features suit its images.

    Optional, with the defaults below (a dataset that does not subclass gets them at
    registration): ``reference_stats(split, extractor) -> Path | None``, statistics files it
    ships (see ``geneval stats``), which the runner uses instead of extracting when their
    provenance matches the run; ``min_samples``, which replaces the minimum sample count of
    the metrics that read it.

    ``load(split)`` takes one of ``splits`` or any further split specification the dataset
    understands (``dsprites:test,n=2000,scale/2``), and raises :class:`InputError` naming the
    split for one it does not.
    """

    name: str
    splits: tuple[str, ...]
    default_split: str
    default_extractor: str
    min_samples: int | None = None

    def load(self, split: str) -> ImageSet: ...

    def reference_stats(self, split: str, extractor: str) -> Path | None:
        """The statistics file it ships for ``split`` and ``extractor`` (default: none)."""
        return None


@runtime_checkable
class FactorDataset(Protocol):
    """A dataset generated from discrete ground-truth factors (e.g. ``dsprites``).

    ``factor_names`` and ``factor_sizes`` describe the K factors; factor ``k`` takes the values
    ``0 .. factor_sizes[k] − 1``. Disentanglement metrics that need fresh images with chosen
    factors (``beta_vae``, ``factor_vae``) draw them through these two methods.
    """

    factor_names: tuple[str, ...]
    factor_sizes: tuple[int, ...]

    def sample_factors(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` factor vectors (n, K) int64, each factor uniform over its values."""
        ...

    def images_for_factors(self, factors: torch.Tensor) -> torch.Tensor:
        """The images (n, C, H, W) float in ``[0, 1]`` of factor vectors (n, K) int64."""
        ...


@dataclass(frozen=True)
class CommandOption:
    """An option a plugin adds to built-in commands through ``geneval_register_commands``.

    ``option`` is a :class:`click.Option`; its value is handed to the command's parameter
    ``forward_to`` (e.g. a deprecated ``--inception-weights`` forwarding to
    ``extractor_weights``), with ``note`` emitted as a warning when it is used.
    """

    commands: tuple[str, ...]
    option: Any  # click.Option
    forward_to: str
    note: str | None = None

    @property
    def name(self) -> str:
        """The option's long name without dashes, under which it is registered."""
        return str(self.option.name).replace("_", "-")


#: The protocol each registry kind follows.
PLUGIN_PROTOCOLS: dict[str, type] = {
    "metric": Metric,
    "model": ModelFamily,
    "extractor": FeatureExtractor,
    "dataset": Dataset,
}
#: What a registered object must declare itself; ``register`` refuses one that lacks any.
REQUIRED_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "metric": (
        "name",
        "higher_is_better",
        "interpretation",
        "needs",
        "options",
        "fields",
        "uncertainty",
        "compute",
    ),
    "model": ("name", "dataset", "samplers", "load"),
    "extractor": ("name", "outputs", "feature_output", "logits_output", "resize_options", "load"),
    "dataset": ("name", "splits", "default_split", "default_extractor", "load"),
}
#: Declarations that only explain a plugin's numbers: they are read with their protocol's
#: default when an object lacks them (:func:`declared`), so that a plugin written before they
#: existed registers unchanged, whatever its class (slots or a frozen dataclass included).
EXPLANATORY_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "metric": ("unit", "feature_space", "report_panel"),
    "extractor": ("feature_space",),
}


def declared(obj: Any, attribute: str) -> Any:
    """``obj.attribute``, or the protocol's default of an explanatory declaration
    (:data:`EXPLANATORY_ATTRIBUTES`, all ``None``) when ``obj`` lacks it."""
    return getattr(obj, attribute, None)


def extractor_space(extractor: Any) -> str:
    """The feature space of an extractor plugin: its ``feature_space``, else its ``name``."""
    return str(declared(extractor, "feature_space") or extractor.name)


#: What a registered object may leave out: it then gets its protocol's default.
OPTIONAL_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "metric": ("min_samples", "allows_infinite_value", "needs_for"),
    "model": (
        "train_options",
        "capabilities",
        "arch_options",
        "train",
        "adopt",
        "published_weights",
    ),
    "extractor": ("default", "min_samples", "published_stats", "published_weights"),
    "dataset": ("min_samples", "reference_stats"),
}
