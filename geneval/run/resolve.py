"""Resolving what the user named: sample and reference sources, models and extractors.

Every source, whether given on the command line or to the Python API, is resolved here and
nowhere else:

* a loaded model object (``GenerativeModel``), or a model family name with ``--model``;
* an in-memory image tensor or array (uint8 or float in [0, 1], NCHW or NHWC);
* a path: a statistics file (an ``.npz`` with ``mu`` and ``sigma``; an ADM evaluator batch,
  with ``mu_s``/``sigma_s`` and/or ``arr_0`` images, serves its moments and its images,
  :func:`adm_batch`), an ``.npy``/``.npz``
  array file (images and/or ``labels``, ``factors``, ``latents``, ``features``, ``logits``,
  ``captions``), or a folder;
* ``DATASET[:SPLIT]``, a registered dataset plugin (default split when none is given);
* for the reference only, any other ``NAME[:SPLIT]`` is looked up as published statistics of
  the run's extractor (``FeatureExtractor.published_stats``), once the extractor is known.

The extractor of a metric follows one rule (:func:`metric_extractor`): the extractor the
metric requires (``Need(extractor=..., extractor_required=True)``), else ``--extractor``, else
the reference dataset's default extractor (or the samples' dataset's), else the extractor
recorded in a reference statistics file, else the metric's own preference (``Need.extractor``),
else the extractor plugin that declares itself the default (``default = True``). A required
extractor that is not installed or fails to load is an :class:`InputError` naming the metric
and the extractor (:func:`metric_extractor`, :func:`load_required_extractor`). A metric
whose extracted inputs all come from files (a source's ``features`` or ``logits`` array, a
statistics file whose ``meta`` names no extractor) has no extractor, and the rule is not
consulted (:func:`geneval.run.inputs.served_by_files`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval.api import Dataset, GenerativeModel, Need
from geneval.errors import InputError, warn
from geneval.feature_stats import StatsFile, load_stats
from geneval.feature_stats import is_stats_file as stats_file_named
from geneval.plugins import Registry
from geneval.sources import (
    ArraySource,
    SampleSource,
    TensorSource,
    array_source,
    source_from_path,
)
from geneval.text import quote


@dataclass
class ResolvedSource:
    """One resolved source (samples or reference) and everything it can provide."""

    role: str  # "samples" or "reference"
    description: str
    source: SampleSource | None = None  # images and the arrays carried with them
    stats_file: StatsFile | None = None  # a statistics file given as the source
    dataset: Dataset | None = None  # the dataset plugin, when the source is DATASET[:SPLIT]
    split: str | None = None
    model: GenerativeModel | None = None  # the samples are drawn from this model
    published: tuple[str, str | None] | None = None  # NAME[:SPLIT] to look up as statistics
    #: statistics files found for this source per extractor (shipped with a dataset, or the
    #: file the user gave), once the extractor is known
    stats_by_extractor: dict[str, StatsFile] = field(default_factory=dict)

    @property
    def has_images(self) -> bool:
        return self.source is not None and self.source.has_images

    def carried(self, key: str) -> torch.Tensor | None:
        """An array carried with the images (``labels``, ``factors``, ``latents``,
        ``features``, ``logits``, ``captions``)."""
        return None if self.source is None else self.source.carried.get(key)


def is_stats_file(path: Path) -> bool:
    """An ``.npz`` holding ``mu`` and ``sigma`` is a statistics file (the one test, in
    :func:`geneval.feature_stats.is_stats_file`: an unreadable file is left to the array reader)."""
    return stats_file_named(path)


def split_name(spec: str) -> tuple[str, str | None]:
    """``"digits:test"`` → ``("digits", "test")``; ``"digits"`` → ``("digits", None)``."""
    name, _, split = spec.partition(":")
    return name, (split or None)


def resolve_dataset(name: str, split: str | None, registry: Registry, role: str) -> ResolvedSource:
    """A dataset plugin's split (its default split when none is given)."""
    dataset = registry.dataset(name)
    split = split or dataset.default_split
    try:
        images = dataset.load(split)
    except InputError:
        raise
    except (KeyError, ValueError):
        if split in dataset.splits:
            raise
        # a split beyond the named ones that the dataset does not understand
        raise InputError(
            f"dataset {name} has no split {split!r} (choose from {', '.join(dataset.splits)})"
        ) from None
    spec = f"{name}:{split}"
    return ResolvedSource(
        role,
        spec,
        source=TensorSource(spec, images),
        dataset=dataset,
        split=split,
    )


def resolve_spec(
    spec: Any, role: str, registry: Registry, *, layout: str | None = "auto"
) -> ResolvedSource:
    """Resolve a samples or reference specification (see the module docstring).

    A loaded model is accepted here only as an object; ``--model NAME`` is resolved by the
    runner, which also knows the number of samples and the seed. ``layout`` (``auto``,
    ``nchw`` or ``nhwc``: ``--layout``, ``layout=``) states how the axes of an image array,
    in a file or in memory, are read (:func:`geneval.sources.image_layout`).
    """
    if isinstance(spec, SampleSource):  # e.g. update() batches, a held-out split's images
        return ResolvedSource(role, spec.description, source=spec)
    if isinstance(spec, torch.Tensor | np.ndarray):
        what = f"{role} array"
        return ResolvedSource(role, what, source=array_source(spec, what, layout))
    if not isinstance(spec, str | Path):
        raise InputError(
            f"{role}: expected a path, DATASET[:SPLIT], a statistics file, an image tensor or "
            f"array, or a loaded model; got {type(spec).__name__}"
        )
    path = Path(spec)
    try:
        exists = path.exists()
    except ValueError:  # a NUL byte: no file has that name
        raise InputError(f"path {quote(spec)} cannot name a file (it holds a NUL byte)") from None
    if exists:
        if is_stats_file(path):
            stats = load_stats(path)
            if stats.layout == "adm":
                return adm_batch(stats, role, registry, layout)
            return ResolvedSource(role, str(path), stats_file=stats)
        return ResolvedSource(role, str(path), source=source_from_path(path, layout))
    name, split = split_name(str(spec))
    if name in registry.items("dataset"):
        return resolve_dataset(name, split, registry, role)
    looks_like_path = "/" in str(spec) or Path(str(spec)).suffix in (".npz", ".npy")
    if role == "reference" and not looks_like_path:
        return ResolvedSource(role, str(spec), published=(name, split))
    raise InputError(f"path {quote(spec)} does not exist (nor is it a dataset name)")


class AdmImages(ArraySource):
    """The images of an ADM batch (``arr_0``, uint8 NHWC), read whole the first time a pass
    or a report needs them: a batch that serves only moments (FID from ``mu``/``sigma``) is
    never read further than its headers. The feature cache keys it by the file's content."""

    def __init__(self, path: Path, member: str, count: int, layout: str | None) -> None:
        self.path = path
        self.key_note = ""
        self._member = member
        self._layout = layout
        self._array: np.ndarray | None = None
        SampleSource.__init__(self, description=str(path), count=count, carried={})

    @property
    def array(self) -> np.ndarray:  # type: ignore[override]
        """``arr_0`` as NCHW uint8, read through the bounded ``.npz`` reader."""
        if self._array is None:
            import zipfile

            from geneval.arrayfile import npz_members, read_member, reading
            from geneval.sources import check_image_array

            what = f"array file {quote(self.path)}"
            with reading(what), zipfile.ZipFile(self.path) as archive:
                members = npz_members(archive, self.path, what, keys=(self._member,))
                raw = read_member(archive, members[self._member])
            self._array = check_image_array(raw, f"array {quote(self.path)}", "nhwc")
        return self._array

    @array.setter
    def array(self, value: np.ndarray | None) -> None:
        self._array = value

    @property
    def has_images(self) -> bool:
        return True

    @property
    def can_fetch(self) -> bool:
        return True


#: The layout name extractors claim (``statistics_layouts``) for the ADM evaluator's batches.
ADM_LAYOUT = "adm"


def adm_provenance(registry: Registry) -> dict[str, str] | None:
    """The provenance assumed for an ADM batch without ``meta``: the installed extractor
    that declares ``statistics_layouts = {"adm": RESIZE}`` (the network and resize the ADM
    evaluator computes its moments with), as ``{"extractor", "resize", "assumed"}``;
    ``None`` when no extractor claims the layout."""
    for name, item in sorted(registry.items("extractor").items()):
        layouts = getattr(item.obj, "statistics_layouts", None) or {}
        if ADM_LAYOUT in layouts:
            return {"extractor": name, "resize": layouts[ADM_LAYOUT], "assumed": ADM_LAYOUT}
    return None


def adm_batch(
    stats: StatsFile, role: str, registry: Registry, layout: str | None
) -> ResolvedSource:
    """An ADM evaluator batch (``arr_0`` images and/or ``mu``, ``sigma``, ``mu_s``,
    ``sigma_s``): its moments serve the ``stats`` of the feature output and of ``spatial``,
    its images (when it has ``arr_0``) every input that needs images. A batch without
    ``meta`` is assumed to follow the ADM evaluator's convention (:func:`adm_provenance`),
    with a note in the report."""
    path = stats.path
    assert path is not None
    if stats.meta is None:
        assumed = adm_provenance(registry)
        if assumed is not None:
            stats.meta = assumed
            warn(
                f"{quote(path)} has no provenance (an ADM evaluator batch): assumed to be "
                f"computed as the ADM evaluator does, extractor {assumed['extractor']} with "
                f"resize {assumed['resize']}"
            )
        else:
            warn(
                f"{quote(path)} has no provenance (an ADM evaluator batch) and no installed "
                "extractor claims the ADM layout: make sure it matches the run's extractor"
            )
    source = None
    if stats.images_member is not None:
        count = _member_count(path, stats.images_member)
        source = AdmImages(path, stats.images_member, count, layout)
    return ResolvedSource(role, str(path), source=source, stats_file=stats)


def _member_count(path: Path, member: str) -> int:
    """The number of images a member's header declares."""
    import zipfile

    from geneval.arrayfile import npz_members, reading

    what = f"array file {quote(path)}"
    with reading(what), zipfile.ZipFile(path) as archive:
        return int(npz_members(archive, path, what, keys=(member,))[member].shape[0])


def default_extractor(registry: Registry) -> str:
    """The extractor plugin that declares itself the default (``default = True``)."""
    claims = sorted(
        name
        for name, item in registry.items("extractor").items()
        if registry.extractor(name).default
    )
    if len(claims) == 1:
        return claims[0]
    if not claims:
        raise InputError("no extractor is installed as the default: choose one with --extractor")
    raise InputError(
        f"several extractors declare themselves the default ({', '.join(claims)}): choose one "
        "with --extractor"
    )


def required_extractor(needs: Sequence[Need]) -> str | None:
    """The extractor a metric's needs require (``extractor_required=True``), if any."""
    for need in needs:
        if need.extractor_required:
            return need.extractor
    return None


def preferred_extractor(needs: Sequence[Need]) -> str | None:
    """The extractor a metric's needs prefer (the first ``Need.extractor``), if any."""
    for need in needs:
        if need.extractor:
            return need.extractor
    return None


def metric_extractor(
    metric: str,
    needs: Sequence[Need],
    *,
    explicit: str | None,
    samples: ResolvedSource,
    reference: ResolvedSource | None,
    registry: Registry,
) -> str:
    """The extractor of ``metric``'s features (the rule of the module docstring).

    A required extractor wins over every other; one that is not installed is an
    :class:`InputError` naming the metric and the extractor.
    """
    required = required_extractor(needs)
    if required is None:
        return extractor_for(
            preferred_extractor(needs),
            explicit=explicit,
            samples=samples,
            reference=reference,
            registry=registry,
        )
    if required not in registry.items("extractor"):
        installed = ", ".join(sorted(registry.items("extractor"))) or "none"
        raise InputError(
            f"metric {metric} requires extractor {required}, which is not installed "
            f"(installed: {installed})"
        )
    return required


def load_required_extractor(metric: str, extractor: str, load: Callable[[str], object]) -> None:
    """Load the extractor ``metric`` requires now, with ``load`` (the run's loader), so that a
    failure is an :class:`InputError` naming the metric and the extractor."""
    try:
        load(extractor)
    except InputError as exc:
        raise InputError(f"metric {metric} requires extractor {extractor}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - missing weights, a package it lacks, ...
        first = (str(exc).splitlines() or [""])[0][:200]
        raise InputError(
            f"metric {metric} requires extractor {extractor}, which failed to load "
            f"({type(exc).__name__}: {first})"
        ) from None


def extractor_for(
    preferred: str | None,
    *,
    explicit: str | None,
    samples: ResolvedSource,
    reference: ResolvedSource | None,
    registry: Registry,
) -> str:
    """The extractor of features whose metric requires none: ``explicit`` (``--extractor``),
    else the datasets' default, a statistics file's, ``preferred``, the installed default."""
    if explicit:
        return explicit
    for resolved in (reference, samples):
        if resolved is not None and resolved.dataset is not None:
            return str(resolved.dataset.default_extractor)
    for resolved in (reference, samples):
        if resolved is not None and resolved.stats_file is not None:
            recorded = (resolved.stats_file.meta or {}).get("extractor")
            if recorded:
                return str(recorded)
    if preferred:
        return preferred
    return default_extractor(registry)
