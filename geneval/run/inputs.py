"""The typed inputs metrics declare, and the one producer of each kind.

A metric declares its needs (:class:`geneval.api.Need`); the runner turns each into an
:class:`InputKey` (kind, source and, for features, logits and statistics, the extractor) and
hands it to the producer of its kind in :data:`PRODUCERS`. Every producer works in two steps:

1. ``plan(key, run)``: say what the single pass over each source must gather (kept images,
   an extractor's per-sample outputs, running moments), or that a file already holds it;
2. ``produce(key, run)``: after the passes, build the input.

Each distinct key is planned and produced once per run, however many metrics ask for it.
Adding an input kind means adding a producer to the table, not editing the runner.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from geneval.api import INPUT_KINDS, ImageSet, Metric, Need, PairedImages
from geneval.capabilities import SupportsDecode, SupportsEncode
from geneval.errors import InputError
from geneval.feature_stats import FeatureStatistics, StatsFile
from geneval.run.passes import moments_key
from geneval.text import quote

#: Kinds that come from an extractor (and so carry the extractor's name in their key).
EXTRACTED_KINDS = ("features", "logits", "stats", "caption_features")


@dataclass(frozen=True)
class InputKey:
    """One input of a run: a kind, a source, and the extractor for extracted kinds; for
    ``features`` and ``stats``, the extractor output when it is not the feature output."""

    kind: str
    source: str
    extractor: str | None = None
    output: str | None = None

    @property
    def slot(self) -> tuple[str, ...]:
        """How :class:`RunInputs` finds it: (kind, source), plus the output when named."""
        base = (self.kind, self.source)
        return base if self.output is None else (*base, self.output)


def needs_of(metric: Metric, options: Mapping[str, Any]) -> tuple[Need, ...]:
    """A metric's needs under its options (``needs_for(options)``: ``needs`` by default)."""
    return tuple(metric.needs_for(options))


def input_key(need: Need, extractor: str | None) -> InputKey:
    """The key of a need: ``features`` with ``stats_ok`` is the ``stats`` kind."""
    kind = "stats" if need.kind == "features" and need.stats_ok else need.kind
    output = need.output if kind in FEATURE_KINDS else None
    return InputKey(kind, need.source, extractor if kind in EXTRACTED_KINDS else None, output)


def output_of(key: InputKey, run: RunView) -> str:
    """The extractor output a ``features`` or ``stats`` key reads: its ``output``, else the
    extractor's ``feature_output``; an :class:`InputError` when the extractor has no such
    output."""
    plugin = run.extractor_plugin(key.extractor)
    if key.output is None:
        return plugin.feature_output
    if key.output not in plugin.outputs:
        raise InputError(
            f"extractor {key.extractor} has no output {quote(key.output)} (it has "
            f"{', '.join(sorted(plugin.outputs))}): choose an extractor that has it"
        )
    return key.output


class RunView(Protocol):
    """What producers see of a run (implemented by :class:`geneval.run.state.RunState`)."""

    config: Any  # the run's RunConfig (``extractor``: the one the user requested, if any)
    sources: dict[str, Any]
    model: Any
    device: torch.device
    batch_size: int
    extract_only: bool  # no input from a statistics file or a carried features array

    def plan_for(self, role: str) -> Any: ...

    def result(self, role: str) -> Any: ...

    def extractor_plugin(self, name: str) -> Any: ...

    def stats_file(self, role: str, extractor: str) -> StatsFile | None: ...

    def source(self, role: str) -> Any: ...

    def extractor(self, name: str) -> Any: ...


class Producer(Protocol):
    """Plans and produces one input kind (see the module docstring)."""

    def plan(self, key: InputKey, run: RunView) -> None: ...

    def produce(self, key: InputKey, run: RunView) -> Any: ...


def _no(what: str, resolved: Any, hint: str) -> InputError:
    return InputError(f"the {resolved.role} ({quote(resolved.description)}) {what}{hint}")


#: Kinds a source's own ``features`` array serves instead of an extractor.
FEATURE_KINDS = ("features", "stats")

#: The array of a source's own file that serves each extracted kind instead of an extractor.
FILE_ARRAYS = {"features": "features", "stats": "features", "logits": "logits"}


def file_array(key: InputKey, run: RunView) -> torch.Tensor | None:
    """The array the key's source carries (an ``.npz``'s ``features`` for the ``features`` and
    ``stats`` kinds, its ``logits`` for the ``logits`` kind), which serves the key instead of
    an extractor; ``None`` when it carries none.

    The one rule for precomputed features and logits: they are used only when no extractor is
    requested. A source that carries them in a run that names an extractor (``--extractor``,
    ``extractor=``) is an :class:`InputError`: which of the two was meant cannot be told.
    """
    name = FILE_ARRAYS.get(key.kind)
    if name is None or key.output is not None:  # a carried array is the feature output
        return None
    resolved = run.source(key.source)
    carried = resolved.carried(name)
    if carried is None or run.extract_only:
        return None
    requested = getattr(getattr(run, "config", None), "extractor", None)
    if requested:
        raise InputError(
            f"the {resolved.role} ({quote(resolved.description)}) carry a '{name}' array "
            f"and --extractor {quote(requested)} was given: drop --extractor to use the "
            f"file's {name}, or give the images without '{name}' to extract them"
        )
    return carried


def file_features(key: InputKey, run: RunView) -> torch.Tensor | None:
    """The ``features`` array the key's source carries, for the ``features`` and ``stats``
    kinds (:func:`file_array`, whose rule it follows); ``None`` for other kinds."""
    if key.kind not in FEATURE_KINDS:
        return None
    return file_array(key, run)


def file_stats(key: InputKey, run: RunView) -> StatsFile | None:
    """The statistics file that serves a ``features`` or ``stats`` key with no extractor: the
    key's source is a statistics file that names no extractor (a plain pytorch-fid/TTUR file,
    or one computed from a features array), and the key's metric runs with no extractor at
    all (its key names none, :func:`served_by_files`). ``None`` otherwise: a statistics file
    of a metric that has an extractor is checked against it
    (:meth:`geneval.run.state.RunState.stats_file`)."""
    if key.extractor is not None or key.kind not in FEATURE_KINDS or run.extract_only:
        return None
    stats = getattr(run.source(key.source), "stats_file", None)
    if stats is None or (stats.meta or {}).get("extractor"):
        return None
    return stats.for_output(key.output)


def served_by_files(keys: Iterable[InputKey], run: RunView) -> bool:
    """Whether a metric whose input keys (built with no extractor) are ``keys`` runs with no
    extractor at all: no extractor is requested, and every extracted input comes from a file,
    either its source's own ``features`` or ``logits`` array (:func:`file_array`) or a
    statistics file that names no extractor (:func:`file_stats`). Such a metric's keys then
    name no extractor, and none is loaded or checked for it."""
    if run.extract_only or getattr(getattr(run, "config", None), "extractor", None):
        return False
    extracted = [key for key in keys if key.kind in EXTRACTED_KINDS]
    if not extracted:
        return False
    return all(
        key.source in run.sources
        and (file_array(key, run) is not None or file_stats(key, run) is not None)
        for key in extracted
    )


def refuse_file_features(
    metric: str, extractor: str, keys: Iterable[InputKey], run: RunView
) -> None:
    """A metric that requires ``extractor`` measures in that feature space only: a source that
    carries its own ``features`` or ``logits`` array (of unknown origin) cannot feed it. An
    :class:`InputError` naming the metric, the extractor and the source."""
    if run.extract_only:
        return
    for key in keys:
        name = FILE_ARRAYS.get(key.kind)
        if name is None:
            continue
        resolved = run.source(key.source)
        if resolved.carried(name) is not None:
            raise InputError(
                f"metric {metric} requires the {quote(extractor)} extractor, but the "
                f"{resolved.role} ({quote(resolved.description)}) carry a '{name}' array of "
                f"another space: give the images without '{name}' so that {extractor} "
                "extracts them"
            )


def features_from_files(keys: Mapping[Any, InputKey], run: RunView) -> dict[str, str]:
    """Of one metric's input keys, the sources whose features or logits came from their own
    file: role → "the ARRAY array of SOURCE" (what the report credits instead of an
    extractor)."""
    return {
        key.source: f"the {FILE_ARRAYS[key.kind]} array of {run.source(key.source).description}"
        for key in keys.values()
        if file_array(key, run) is not None
    }


def uses_extractor(keys: Mapping[Any, InputKey], run: RunView) -> bool:
    """Whether any of one metric's input keys is produced by (or checked against) its
    extractor, rather than read from a source's own ``features`` or ``logits`` array or from
    a statistics file that names no extractor."""
    return any(
        key.kind in EXTRACTED_KINDS and key.extractor is not None and file_array(key, run) is None
        for key in keys.values()
    )


def _stats_of(key: InputKey, run: RunView) -> StatsFile | None:
    """The statistics file that serves ``key``: one that names no extractor when the key
    names none, else the one checked against the key's extractor."""
    if key.extractor is None:
        return file_stats(key, run)
    found = run.stats_file(key.source, key.extractor)
    return None if found is None else found.for_output(key.output)


def check_feature_widths(metric: str, keys: Mapping[Any, InputKey], run: RunView) -> None:
    """A metric that compares the samples' features with the reference's needs both of one
    width: a source's own ``features`` array, or a statistics file that names no extractor,
    of another width than the other side (its own array or file, or the extractor's output,
    which statistics files are checked against) is an :class:`InputError` naming the file
    and both widths, before any work."""
    sides: dict[str, tuple[int, bool, str]] = {}
    for key in keys.values():
        if key.kind not in FEATURE_KINDS:
            continue
        whose = "samples'" if key.source == "samples" else f"{key.source}'s"
        carried = file_features(key, run)
        description = quote(run.source(key.source).description)
        stats = file_stats(key, run) if carried is None else None
        if carried is not None:
            width = int(carried.shape[1])
            said = f"the {whose} features array ({description}) is {width}-d"
        elif stats is not None:
            width = stats.dim
            said = f"the {whose} statistics file ({description}) is {width}-d"
        else:
            plugin = run.extractor_plugin(key.extractor)
            width = int(plugin.outputs[output_of(key, run)])
            said = f"the {whose} features (extractor {key.extractor}) are {width}-d"
        sides[key.source] = (width, carried is not None or stats is not None, said)
    if len(sides) < 2 or len({width for width, _, _ in sides.values()}) == 1:
        return
    ordered = sorted(sides.values(), key=lambda side: not side[1])  # a file first
    raise InputError(
        f"metric {metric}: {ordered[0][2]}, but {ordered[1][2]} (both must have one width)"
    )


class ImagesProducer:
    """``images``: the source's images in ``[0, 1]``, NCHW, kept by the pass."""

    def plan(self, key: InputKey, run: RunView) -> None:
        resolved = run.source(key.source)
        if not resolved.has_images and resolved.model is None:
            raise _no("hold no images", resolved, ", which a requested metric needs")
        run.plan_for(key.source).keep_images = True

    def produce(self, key: InputKey, run: RunView) -> torch.Tensor:
        return run.result(key.source).images


class FeaturesProducer:
    """``features``: per-sample feature vectors (n, d), float32 on the host.

    From the source's own ``features`` array, from a statistics file that stores them, or
    from the extractor's feature output during the pass.
    """

    def plan(self, key: InputKey, run: RunView) -> None:
        resolved = run.source(key.source)
        if file_features(key, run) is not None:
            return
        stats = _stats_of(key, run)
        if stats is not None and stats.features is None and resolved.has_images:
            stats = None  # a file with moments and images (an ADM batch): extract the images
        if stats is not None:
            if stats.features is None:
                raise InputError(
                    f"statistics file {stats.path} holds no per-sample features, which a "
                    "requested metric needs (write it with `geneval stats --features`)"
                )
            return
        if key.extractor is None or (not resolved.has_images and resolved.model is None):
            raise _no("hold no images or features", resolved, ", which a requested metric needs")
        output = output_of(key, run)
        run.plan_for(key.source).outputs.setdefault(key.extractor, set()).add(output)

    def produce(self, key: InputKey, run: RunView) -> torch.Tensor:
        carried = file_features(key, run)
        if carried is not None:
            return carried
        stats = _stats_of(key, run)
        if stats is not None and stats.features is not None:
            return torch.from_numpy(stats.features)
        return run.result(key.source).outputs[(key.extractor, output_of(key, run))]


class LogitsProducer:
    """``logits``: per-sample classifier logits (n, classes), float32 on the host.

    From the source's own ``logits`` array (:func:`file_array`), or from the extractor's
    classifier output during the pass.
    """

    def _output(self, key: InputKey, run: RunView) -> str:
        plugin = run.extractor_plugin(key.extractor)
        if plugin.logits_output is None:
            raise InputError(f"extractor {key.extractor} has no classifier logits")
        return plugin.logits_output

    def plan(self, key: InputKey, run: RunView) -> None:
        resolved = run.source(key.source)
        if file_array(key, run) is not None:
            return
        if key.extractor is None or (not resolved.has_images and resolved.model is None):
            raise _no("hold no images or logits", resolved, ", from which the logits are computed")
        run.plan_for(key.source).outputs.setdefault(key.extractor, set()).add(
            self._output(key, run)
        )

    def produce(self, key: InputKey, run: RunView) -> torch.Tensor:
        carried = file_array(key, run)
        if carried is not None:
            return carried
        return run.result(key.source).outputs[(key.extractor, self._output(key, run))]


class StatsProducer:
    """``stats``: float64 running moments of the features, from a file or from the pass."""

    def plan(self, key: InputKey, run: RunView) -> None:
        resolved = run.source(key.source)
        if file_features(key, run) is not None:
            return
        stats = _stats_of(key, run)
        if stats is not None:
            if key.output is not None and key.extractor is not None:
                width = int(run.extractor_plugin(key.extractor).outputs[output_of(key, run)])
                if stats.dim != width:
                    raise InputError(
                        f"statistics file {quote(stats.path)} holds {stats.dim}-d moments of "
                        f"{key.output}, but extractor {key.extractor} gives {width}-d"
                    )
            return
        if key.extractor is None or (not resolved.has_images and resolved.model is None):
            if key.output is not None and getattr(resolved, "stats_file", None) is not None:
                raise _no(
                    f"hold no moments of {quote(key.output)} and no images",
                    resolved,
                    ", which a requested metric needs",
                )
            raise _no("hold no images or features", resolved, ", which a requested metric needs")
        output = output_of(key, run)
        run.plan_for(key.source).moments[moments_key(key.extractor, key.output)] = output

    def produce(self, key: InputKey, run: RunView) -> FeatureStatistics:
        carried = file_features(key, run)
        if carried is not None:
            return FeatureStatistics.from_features(carried.to(run.device))
        stats = _stats_of(key, run)
        if stats is not None:
            return stats.statistics().to(run.device)
        return run.result(key.source).moments[moments_key(key.extractor, key.output)]


class CarriedProducer:
    """``labels``, ``factors``, ``latents``, ``captions``: what comes with the images.

    From an ``.npz`` or a dataset, or from a conditional model: the class labels and prompts
    its samples were drawn from. When the samples are an unconditional model, the samples'
    ``labels`` and ``factors`` are the reference's, and ``latents`` (of either source) are the
    model's ``encode`` of the reference images.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def _encodes(self, key: InputKey, run: RunView) -> bool:
        resolved = run.source(key.source)
        return (
            self.kind == "latents"
            and resolved.carried("latents") is None
            and isinstance(run.model, SupportsEncode)
        )

    def _holder(self, key: InputKey, run: RunView) -> Any:
        resolved = run.source(key.source)
        if resolved.carried(self.kind) is not None:
            return resolved
        if key.source == "samples" and resolved.model is not None and "reference" in run.sources:
            reference = run.source("reference")
            if reference.carried(self.kind) is not None:
                return reference
        return None

    def plan(self, key: InputKey, run: RunView) -> None:
        if self._encodes(key, run):
            reference = run.source("reference")
            if not reference.has_images:
                raise _no("hold no images", reference, " for the model to encode")
            run.plan_for("reference").keep_images = True
            return
        if self._holder(key, run) is None:
            resolved = run.source(key.source)
            raise _no(f"carry no {self.kind}", resolved, _how_to_give(self.kind, resolved))

    def produce(self, key: InputKey, run: RunView) -> torch.Tensor:
        if self._encodes(key, run):
            images = run.result("reference").images
            with torch.no_grad():
                parts = [
                    run.model.encode(images[i : i + run.batch_size].to(run.model.device))
                    .detach()
                    .float()
                    .cpu()
                    for i in range(0, images.shape[0], run.batch_size)
                ]
            return torch.cat(parts)
        return self._holder(key, run).carried(self.kind)


def _how_to_give(kind: str, resolved: Any) -> str:
    """The end of the one-line error for a source that lacks ``kind``: how to provide it."""
    if kind != "captions":
        return f" (give an .npz with a '{kind}' array, or a dataset that has them)"
    gap = getattr(resolved.source, "caption_gap", None)
    found = f"; {gap}" if gap else ""
    return (
        " (give --prompts FILE to a text-to-image model, an .npz with a 'captions' array, or a "
        f"folder with a NAME.txt caption beside each image NAME.png{found})"
    )


class CaptionFeaturesProducer:
    """``caption_features``: the extractor's text embedding of the source's captions (n, d),
    float32 on the host, row i that of caption i (:class:`CarriedProducer` ``captions``).

    The extractor must have a text tower: its plugin declares ``text_encoder = True`` and its
    loaded form offers ``encode_text(texts) -> (n, d)`` (e.g. CLIP).
    """

    captions = CarriedProducer("captions")

    def plan(self, key: InputKey, run: RunView) -> None:
        if not getattr(run.extractor_plugin(key.extractor), "text_encoder", False):
            raise InputError(
                f"extractor {key.extractor} has no text encoder, which a requested metric needs "
                "to embed the captions (choose one that has, such as a CLIP extractor)"
            )
        self.captions.plan(InputKey("captions", key.source), run)

    def produce(self, key: InputKey, run: RunView) -> torch.Tensor:
        texts = self.captions.produce(InputKey("captions", key.source), run)
        with torch.no_grad():
            embedded = run.extractor(key.extractor).encode_text(list(texts))
        embedded = embedded.detach().float().cpu()
        if embedded.ndim != 2 or embedded.shape[0] != len(texts):
            raise RuntimeError(
                f"extractor {key.extractor}: encode_text returned {tuple(embedded.shape)} for "
                f"{len(texts)} captions"
            )
        return embedded


class ReconstructionsProducer:
    """``reconstructions``: images paired one to one with the reference images.

    A model with ``encode`` and ``decode`` reconstructs the reference images. Otherwise the
    samples are the reconstructions: paired by index (arrays, datasets) or by sorted relative
    path (two folders); a count or name mismatch is an :class:`InputError` naming the first.
    """

    def _model(self, run: RunView) -> bool:
        return isinstance(run.model, SupportsEncode) and isinstance(run.model, SupportsDecode)

    def plan(self, key: InputKey, run: RunView) -> None:
        if "reference" not in run.sources:
            raise InputError("paired reconstructions need a reference: use --reference")
        reference = run.source("reference")
        if not reference.has_images:
            raise _no("hold no images", reference, " to pair reconstructions with")
        run.plan_for("reference").keep_images = True
        if self._model(run):
            return
        samples = run.source("samples")
        if not samples.has_images:
            raise _no("hold no images", samples, " to pair with the reference")
        _check_pairing(samples, reference)
        run.plan_for("samples").keep_images = True

    def produce(self, key: InputKey, run: RunView) -> PairedImages:
        originals = run.result("reference").images
        if self._model(run):
            with torch.no_grad():
                parts = []
                for i in range(0, originals.shape[0], run.batch_size):
                    batch = originals[i : i + run.batch_size].to(run.model.device)
                    decoded = run.model.decode(run.model.encode(batch))
                    parts.append(decoded.detach().float().clamp(0, 1).cpu())
            return PairedImages(torch.cat(parts), originals)
        samples = run.source("samples")
        reconstructions = run.result("samples").images
        if reconstructions.shape != originals.shape:
            raise InputError(
                f"reconstructions {tuple(reconstructions.shape)} and reference images "
                f"{tuple(originals.shape)} differ in shape"
            )
        return PairedImages(reconstructions, originals, samples.source.names)


def _check_pairing(samples: Any, reference: Any) -> None:
    """Pair by sorted relative path when both are folders, else by index."""
    a, b = samples.source, reference.source
    if a.names is not None and b.names is not None:
        for left, right in zip(a.names, b.names, strict=False):
            if left != right:
                raise InputError(
                    f"cannot pair {samples.description} with {reference.description}: "
                    f"{left!r} has no counterpart (first mismatch; {right!r} in the reference)"
                )
    if a.count != b.count:
        raise InputError(
            f"cannot pair {a.count} samples ({samples.description}) with {b.count} reference "
            f"images ({reference.description}): the counts differ"
        )


class DatasetProducer:
    """``dataset``: the dataset plugin of a source given as ``DATASET[:SPLIT]``."""

    def plan(self, key: InputKey, run: RunView) -> None:
        resolved = run.source(key.source)
        if resolved.dataset is None:
            raise InputError(
                f"a requested metric needs the {key.source} to be a dataset "
                f"(DATASET[:SPLIT]), not {resolved.description}"
            )

    def produce(self, key: InputKey, run: RunView) -> Any:
        return run.source(key.source).dataset


class ModelProducer:
    """``model``: the loaded model (its capabilities were checked when it loaded)."""

    def plan(self, key: InputKey, run: RunView) -> None:
        if run.model is None:
            raise InputError("a requested metric needs a model: use --model")

    def produce(self, key: InputKey, run: RunView) -> Any:
        return run.model


#: The one producer of each input kind.
PRODUCERS: dict[str, Producer] = {
    "images": ImagesProducer(),
    "features": FeaturesProducer(),
    "logits": LogitsProducer(),
    "stats": StatsProducer(),
    "labels": CarriedProducer("labels"),
    "factors": CarriedProducer("factors"),
    "latents": CarriedProducer("latents"),
    "captions": CarriedProducer("captions"),
    "caption_features": CaptionFeaturesProducer(),
    "reconstructions": ReconstructionsProducer(),
    "dataset": DatasetProducer(),
    "model": ModelProducer(),
}
assert set(PRODUCERS) == set(INPUT_KINDS)


class RunInputs:
    """:class:`geneval.api.MetricInputs` for one metric: only what it declared is available."""

    def __init__(
        self,
        keys: Mapping[tuple[str, ...], InputKey],
        values: Mapping[InputKey, Any],
        *,
        run: Any,
        device: torch.device,
        seed: int,
        run_options: Mapping[str, Mapping[str, Any]],
        memo: dict[Hashable, Any],
    ) -> None:
        self._keys = dict(keys)
        self._values = values
        self._run = run
        self.device = device
        self.seed = seed
        self.run_options = run_options
        self._memo = memo

    def _get(self, kind: str, source: str, output: str | None = None) -> Any:
        slot = (kind, source) if output is None else (kind, source, output)
        key = self._keys.get(slot)
        if key is None and output is None:  # the one output declared for this kind and source
            named = [k for s, k in self._keys.items() if s[:2] == (kind, source)]
            key = named[0] if len(named) == 1 else None
        if key is None and output is not None:  # the feature output, named explicitly
            key = self._keys.get((kind, source))
            if key is not None and key.extractor is not None:
                plugin = self._run.extractor_plugin(key.extractor)
                key = key if plugin.feature_output == output else None
            else:
                key = None
        if key is None:
            what = kind if output is None else f"{kind} ({output})"
            raise KeyError(f"{what} of {source} were not declared in the metric's needs")
        return self._values[key]

    def features(self, source: str, output: str | None = None) -> torch.Tensor:
        return self._get("features", source, output)

    def stats(self, source: str, output: str | None = None) -> FeatureStatistics:
        return self._get("stats", source, output)

    def logits(self, source: str) -> torch.Tensor:
        return self._get("logits", source)

    def images(self, source: str) -> torch.Tensor:
        return self._get("images", source)

    def labels(self, source: str) -> torch.Tensor:
        return self._get("labels", source)

    def factors(self, source: str) -> torch.Tensor:
        return self._get("factors", source)

    def latents(self, source: str) -> torch.Tensor:
        return self._get("latents", source)

    def captions(self, source: str) -> list[str]:
        return self._get("captions", source)

    def caption_features(self, source: str) -> torch.Tensor:
        return self._get("caption_features", source)

    def reconstructions(self) -> PairedImages:
        return self._get("reconstructions", "samples")

    @property
    def model(self) -> Any:
        return self._get("model", "samples")

    def dataset(self, source: str) -> Any:
        return self._get("dataset", source)

    def other_images(self, spec: str, *, default_split: str, option: str = "") -> ImageSet:
        return self._run.other_images(spec, default_split=default_split, option=option)

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]
