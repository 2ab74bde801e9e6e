"""What a report shows besides numbers: sample and reference grids, nearest neighbours.

Kept only when a report asks (``--html``, ``--markdown``), in two steps that follow the
runner's:

1. :func:`plan_visuals` (after the metrics' inputs are planned): a source without random
   access to its images (a model's samples) keeps its first images during its pass; the
   reference pass also keeps its per-sample features when the neighbour panel needs them and
   neither a metric, a carried ``features`` array nor a statistics file provides them.
2. :func:`collect_visuals` (after the passes): the first images of each source, and for the
   first few samples the nearest reference images in the feature space of the run's first
   metric that compares samples with the reference (:mod:`geneval.report.neighbours`), their
   images fetched by index from the reference source.

What cannot be shown is said in a note instead (a statistics-file reference holds no images).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from geneval.report.neighbours import nearest_neighbours, typical_distance
from geneval.run.inputs import InputKey
from geneval.run.passes import same_size_groups

if TYPE_CHECKING:  # the run imports this module when it plans
    from geneval.run.state import Plan, RunState

#: Reference images shown beside each sample of the neighbour panel.
NEIGHBOURS_PER_SAMPLE = 4
#: A sample closer to a reference image than this fraction of the typical
#: reference-to-reference distance is marked as a near copy.
NEAR_COPY = 0.1


@dataclass
class NeighbourRow:
    """One sample of the panel and its nearest reference images."""

    sample_index: int
    sample: torch.Tensor  # (C, H, W) float [0, 1]
    indices: list[int]  # reference image indices, nearest first
    distances: list[float]
    images: list[torch.Tensor]


@dataclass
class Visuals:
    """The images a report shows, and why a part is missing."""

    samples: list[torch.Tensor] = field(default_factory=list)  # first images, (C, H, W)
    reference: list[torch.Tensor] = field(default_factory=list)
    samples_total: int | None = None
    reference_total: int | None = None
    neighbours: list[NeighbourRow] = field(default_factory=list)
    #: the feature space of the neighbours, e.g. "digits-cnn features"
    space: str | None = None
    #: median distance of a reference image to its nearest other reference image
    typical_distance: float | None = None
    notes: dict[str, str] = field(default_factory=dict)  # part → why it is not shown


def _neighbour_extractor(plan: Plan) -> str | None:
    """The extractor of the run's first metric that reads features or statistics of both
    the samples and the reference."""
    for name, keys in plan.keys.items():
        kinds = {(k.kind, k.source) for k in keys.values()}
        both = any((kind, "samples") in kinds for kind in ("features", "stats")) and any(
            (kind, "reference") in kinds for kind in ("features", "stats")
        )
        if both and name in plan.extractors:
            return plan.extractors[name]
    return None


def _reference_features_ready(run: RunState, plan: Plan, extractor: str) -> bool:
    """Whether the whole reference's features in ``extractor``'s space come without a pass."""
    reference = run.sources["reference"]
    key = InputKey("features", "reference", extractor)
    if any(key in keys.values() for keys in plan.keys.values()):
        return True
    if reference.carried("features") is not None:
        return True
    stats = run.stats_file("reference", extractor)
    return stats is not None and stats.features is not None


def plan_visuals(run: RunState, plan: Plan, *, grid: int, neighbours: int) -> None:
    """Ask the passes for what :func:`collect_visuals` will need (see the module docstring)."""
    first = max(grid, neighbours)
    for role, resolved in run.sources.items():
        source = resolved.source
        if first and source is not None and source.has_images and not source.can_fetch:
            run.plan_for(role).keep_first = first
    if not neighbours or "reference" not in run.sources:
        return
    extractor = _neighbour_extractor(plan)
    reference = run.sources["reference"]
    if extractor is None or not reference.has_images:
        return
    if not _reference_features_ready(run, plan, extractor):
        output = run.extractor_plugin(extractor).feature_output
        run.plan_for("reference").outputs.setdefault(extractor, set()).add(output)


def _first_images(run: RunState, role: str, count: int) -> list[torch.Tensor]:
    resolved = run.sources.get(role)
    if resolved is None or resolved.source is None or not resolved.source.has_images:
        return []
    result = run.results.get(role)
    if result is not None and result.first:
        return result.first[:count]
    source = resolved.source
    if source.can_fetch:
        return source.fetch(range(min(count, source.count)))
    return []


def _reference_features(
    run: RunState, values: dict[InputKey, Any], extractor: str
) -> torch.Tensor | None:
    reference = run.sources["reference"]
    key = InputKey("features", "reference", extractor)
    if key in values:
        return values[key]
    carried = reference.carried("features")
    if carried is not None:
        return carried
    stats = run.stats_file("reference", extractor)
    if stats is not None and stats.features is not None:
        return torch.from_numpy(stats.features)
    result = run.results.get("reference")
    output = run.extractor_plugin(extractor).feature_output
    if result is not None and (extractor, output) in result.outputs:
        return result.outputs[(extractor, output)]
    return None


def _sample_features(
    run: RunState, values: dict[InputKey, Any], extractor: str, images: list[torch.Tensor]
) -> torch.Tensor:
    """Features of the first ``len(images)`` samples in the space of ``extractor``."""
    k = len(images)
    key = InputKey("features", "samples", extractor)
    if key in values:
        return values[key][:k]
    carried = run.sources["samples"].carried("features")
    if carried is not None:
        return carried[:k]
    loaded = run.extractor(extractor)
    output = run.extractor_plugin(extractor).feature_output
    parts = []
    with torch.inference_mode():
        for group in same_size_groups([image.to(run.device) for image in images]):
            parts.append(loaded(group)[output].float().cpu())
    return torch.cat(parts)


def _neighbour_panel(
    run: RunState,
    plan: Plan,
    values: dict[InputKey, Any],
    samples: list[torch.Tensor],
    visuals: Visuals,
) -> None:
    reference = run.sources.get("reference")
    if reference is None:
        visuals.notes["neighbours"] = "the run has no reference to look for neighbours in"
        return
    if reference.source is None or not reference.source.has_images:
        visuals.notes["neighbours"] = (
            f"the reference ({reference.description}) holds no images (a statistics file): "
            "there are no reference images to show beside the samples"
        )
        return
    if not reference.source.can_fetch:
        visuals.notes["neighbours"] = f"the reference ({reference.description}) cannot be indexed"
        return
    extractor = _neighbour_extractor(plan)
    if extractor is None:
        visuals.notes["neighbours"] = (
            "no metric of this run compares sample and reference features, so there is no "
            "feature space to look for neighbours in"
        )
        return
    if not samples:
        visuals.notes["neighbours"] = "the samples hold no images to show"
        return
    ref_features = _reference_features(run, values, extractor)
    if ref_features is None:
        visuals.notes["neighbours"] = f"no per-image {extractor} features of the reference"
        return
    queries = _sample_features(run, values, extractor, samples)
    distances, indices = nearest_neighbours(
        queries, ref_features, NEIGHBOURS_PER_SAMPLE, device=run.device
    )
    visuals.space = f"{extractor} features"
    visuals.typical_distance = typical_distance(ref_features, device=run.device)
    for i, sample in enumerate(samples):
        picked = [int(j) for j in indices[i]]
        visuals.neighbours.append(
            NeighbourRow(
                sample_index=i,
                sample=sample,
                indices=picked,
                distances=[float(d) for d in distances[i]],
                images=reference.source.fetch(picked),
            )
        )


def collect_visuals(
    run: RunState, plan: Plan, values: dict[InputKey, Any], *, grid: int, neighbours: int
) -> Visuals:
    """The grids and the neighbour panel of a finished run (see the module docstring)."""
    visuals = Visuals()
    first = max(grid, neighbours)
    for role in ("samples", "reference"):
        resolved = run.sources.get(role)
        images = _first_images(run, role, first)
        setattr(visuals, role, images[:grid])
        if resolved is not None and resolved.source is not None:
            setattr(visuals, f"{role}_total", resolved.source.count)
            result = run.results.get(role)
            if result is not None:
                setattr(visuals, f"{role}_total", result.count)
        if grid and not images and resolved is not None:
            verb = "hold" if role == "samples" else "holds"
            visuals.notes[role] = f"the {role} ({resolved.description}) {verb} no images to show"
    if neighbours:
        samples = _first_images(run, "samples", neighbours)
        _neighbour_panel(run, plan, values, samples, visuals)
    return visuals
