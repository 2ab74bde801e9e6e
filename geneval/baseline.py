"""A real-versus-real baseline (``--baseline``): a held-out split of the reference dataset
scored exactly as the samples are, at the same n.

A number such as FID means little alone: it is biased by the sample count and depends on the
data. Where the reference is a dataset with a held-out split (``test``, else ``val``, other
than the reference split), the run scores the first ``n`` images of that split against the
same reference, and the first ``n`` samples too, with ``n = min(samples, held-out images)``,
so both numbers are comparable: a model whose samples score near the held-out data is as
close to the reference as fresh real data is.

The reference's inputs are the run's own (nothing is extracted again); only the held-out
images go through the extractors. Metrics that read only images, features, logits or
statistics take part; those that need a model, reconstructions or carried arrays do not.
When a metric reads only the samples' moments, the samples' pass also keeps their
per-sample features (float32, on the host) so that the moments of the first ``n`` can be
formed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from geneval.api import Dataset, ImageSet
from geneval.errors import InputError
from geneval.feature_stats import FeatureStatistics
from geneval.run.inputs import InputKey, features_from_files

if TYPE_CHECKING:  # the run imports this module when it plans
    from geneval.run.pipeline import Run
    from geneval.run.state import Plan, RunState

#: Splits taken as held out, in order of preference.
HELD_OUT_SPLITS = ("test", "val")
#: Input kinds a baseline can be computed for.
BASELINE_KINDS = frozenset({"images", "features", "logits", "stats"})


def held_out_split(dataset: Dataset, split: str | None) -> str | None:
    """The first of :data:`HELD_OUT_SPLITS` the dataset has, other than ``split``."""
    for name in HELD_OUT_SPLITS:
        if name in dataset.splits and name != split:
            return name
    return None


def _reference_split(run: RunState) -> tuple[Dataset, str] | None:
    reference = run.sources.get("reference")
    if reference is None or reference.dataset is None:
        return None
    split = held_out_split(reference.dataset, reference.split)
    return None if split is None else (reference.dataset, split)


def plan_baseline(run: RunState, plan: Plan) -> None:
    """Keep the samples' per-sample features where a metric reads only their moments."""
    if _reference_split(run) is None:
        return
    samples = run.sources["samples"]
    for keys in plan.keys.values():
        for key in keys.values():
            if key.kind != "stats" or key.source != "samples":
                continue
            carried = samples.carried("features") is not None and key.output is None
            if carried or samples.stats_file is not None:
                continue
            output = key.output or run.extractor_plugin(key.extractor).feature_output
            run.plan_for("samples").outputs.setdefault(key.extractor, set()).add(output)


def _first_n(key: InputKey, run: RunState, values: dict[InputKey, Any], n: int) -> Any:
    """The samples' input ``key`` restricted to the first ``n`` samples (None: not possible)."""
    if key.kind in ("images", "features", "logits"):
        return values[key][:n]
    samples = run.sources["samples"]
    carried = samples.carried("features")
    if carried is not None and key.output is None:  # a features array serves the default output
        return FeatureStatistics.from_features(carried[:n])
    result = run.results.get("samples")
    output = key.output or run.extractor_plugin(key.extractor).feature_output
    if result is None or (key.extractor, output) not in result.outputs:
        return None
    return FeatureStatistics.from_features(result.outputs[(key.extractor, output)][:n])


def _dispatch_one(run: Run, name: str, values: dict[InputKey, Any]) -> dict[str, Any] | str:
    """Run one metric; returns its result, or the one-line message of its failure."""
    try:
        results, errors = run.dispatch([name], values)
    except InputError as exc:
        return str(exc)
    return results[name] if name in results else errors[name]


def compute_baseline(
    pipeline: Run, plan: Plan, values: dict[InputKey, Any], results: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The ``baseline`` section of the report.

    ``{"held_out": "DATASET:SPLIT", "n": n, "metrics": {name: {"samples": result,
    "held_out": result}}, "skipped": {name: why}, "errors": {name: message}}``, or
    ``{"note": why}`` when the reference has no held-out split.
    """
    run = pipeline.state
    found = _reference_split(run)
    reference = run.sources.get("reference")
    if found is None:
        what = reference.description if reference is not None else "none"
        return {
            "note": f"no held-out split to compare with: the reference ({what}) is not a "
            f"dataset with a {' or '.join(HELD_OUT_SPLITS)} split other than its own"
        }
    dataset, split = found
    held = dataset.load(split)
    samples = run.sources["samples"]
    n_samples = run.results["samples"].count if "samples" in run.results else samples.source.count
    n = min(n_samples, int(held.images.shape[0]))
    taking_part, skipped = [], {}
    truncated: dict[InputKey, Any] = {}
    for name, keys in plan.keys.items():
        kinds = {key.kind for key in keys.values()}
        if not kinds <= BASELINE_KINDS:
            skipped[name] = "reads more than images, features, logits or statistics"
            continue
        if not any(key.source == "samples" for key in keys.values()):
            skipped[name] = "reads nothing of the samples"
            continue
        if features_from_files(keys, run):
            # the held-out images would go through an extractor, the samples did not
            skipped[name] = "reads features or logits from a file, not from an extractor"
            continue
        restricted = {
            key: _first_n(key, run, values, n) for key in keys.values() if key.source == "samples"
        }
        if any(v is None for v in restricted.values()):
            skipped[name] = "the samples' first n cannot be taken from a statistics file"
            continue
        truncated.update(restricted)
        taking_part.append(name)

    description = f"{dataset.name}:{split}"
    subset = ImageSet(
        images=held.images[:n],
        labels=None if held.labels is None else held.labels[:n],
        factors=None if held.factors is None else held.factors[:n],
        latents=None if held.latents is None else held.latents[:n],
    )
    held_run = pipeline.held_out(subset, f"{description} (first {n})")
    held_run.resolve("samples")
    held_run.resolve("reference")
    held_plan = held_run.plan(taking_part)
    held_run.collect(("samples",))
    held_keys = [k for name in taking_part for k in held_plan.keys[name].values()]
    held_values = held_run.produce(k for k in held_keys if k.source == "samples")

    section: dict[str, Any] = {"held_out": description, "n": n, "metrics": {}}
    errors = {}
    for name in taking_part:
        if n == n_samples and name in results:
            ours = results[name]
        else:
            ours = _dispatch_one(pipeline, name, {**values, **truncated})
        theirs = _dispatch_one(held_run, name, {**values, **held_values})
        if isinstance(ours, str) or isinstance(theirs, str):
            errors[name] = ours if isinstance(ours, str) else theirs
            continue
        section["metrics"][name] = {"samples": ours, "held_out": theirs}
    if skipped:
        section["skipped"] = skipped
    if errors:
        section["errors"] = errors
    return section
