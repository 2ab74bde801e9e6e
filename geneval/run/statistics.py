"""``geneval stats`` as an API function: :func:`feature_statistics`, the feature statistics
of one source.

The statistics are a run of the pipeline without a metric: the source is resolved as a run's
samples, the extractor chosen by the run's one rule (:func:`geneval.run.resolve.extractor_for`),
the running moments (and, with ``features=True``, the per-sample features) planned and
collected in one pass from the images (never from a statistics file).

A source that carries its own ``features`` array (an ``.npz``) follows the one rule of
precomputed features (``docs/contracts.md`` §4): no extractor takes part, the moments are
those of the array (float64, about a shift, as for extracted features), and the file's
``meta`` records ``features_from`` (the source) instead of an extractor, its weights and its
resize convention; naming an extractor (or its weights, or a resize convention) together with
such a source is an :class:`InputError`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.api import Need
from geneval.errors import InputError, setting
from geneval.run.config import DEFAULTS, run_config
from geneval.text import quote

if TYPE_CHECKING:
    import torch

    from geneval.feature_stats import StatsFile
    from geneval.plugins import Registry

#: The name the statistics' needs are planned under.
STATISTICS = "statistics"


def feature_statistics(
    source: object,
    output: str | Path | None = None,
    *,
    extractor: str | None = None,
    extractor_weights: str | Path | None = None,
    resize: str | None = None,
    layout: str = DEFAULTS["layout"],
    features: bool = False,
    device: str | torch.device = DEFAULTS["device"],
    batch_size: int | None = None,
    workers: int | None = None,
    cache: bool = DEFAULTS["cache"],
    force: bool = False,
    registry: Registry | None = None,
) -> StatsFile:
    """The feature statistics (mu, sigma, n; with ``features=True`` the per-sample features)
    of ``source`` (a folder, an array, ``DATASET[:SPLIT]`` or an image tensor), written to
    ``output`` (``.npz``) when given, as ``geneval stats SOURCE -o OUT.npz`` does.

    Inside a sharded run every rank extracts its shard; only rank 0 writes ``output``.
    """
    from geneval.distributed import context
    from geneval.feature_stats import StatsFile, make_meta, save_stats
    from geneval.io import check_writable
    from geneval.run.pipeline import Run

    if output is not None:
        if Path(output).suffix != ".npz":
            raise InputError(f"-o {quote(output)}: statistics files end in .npz")
        check_writable(Path(output), force=force, what="statistics file")
    needs = [Need("features", source="samples", stats_ok=True)]
    if features:
        needs.append(Need("features", source="samples"))
    config = run_config(
        (),
        samples=source,
        extractor=extractor,
        extractor_weights=extractor_weights,
        resize=resize,
        layout=layout,
        device=device,
        batch_size=batch_size,
        workers=workers,
        cache=cache,
    )
    run = Run(config, registry, needs={STATISTICS: needs})
    run.resolve("samples")
    resolved = run.state.source("samples")
    carried = resolved.carried("features")
    if carried is not None:
        given = [
            setting(name)
            for name, value in (
                ("extractor", extractor),
                ("extractor_weights", extractor_weights),
                ("resize", resize),
            )
            if value
        ]
        if given:
            raise InputError(
                f"{quote(resolved.description)} carries a 'features' array, on which no "
                f"extractor runs, and {' and '.join(given)} {'was' if len(given) == 1 else 'were'}"
                f" given: drop {'it' if len(given) == 1 else 'them'} to use the file's features, "
                "or give the images without 'features' to extract them"
            )
        return _from_features(resolved.description, carried, output, features, force)
    if not resolved.has_images:
        raise InputError(f"{quote(resolved.description)} holds no images to extract features from")
    plan = run.plan()
    name = plan.extractors[STATISTICS]
    run.collect(("samples",))
    values = run.produce()
    keys = plan.keys[STATISTICS]
    moments = values[keys[("stats", "samples")]]
    kept = values[keys[("features", "samples")]] if features else None
    if moments.n < 2:
        raise InputError(
            f"{quote(resolved.description)}: statistics need at least 2 images, found {moments.n}"
        )
    provenance = run.state.provenance(name)
    meta = make_meta(
        extractor=name,
        output=run.state.extractor_plugin(name).feature_output,
        weights_sha256=provenance["weights_sha256"],
        convention=provenance["resize"],
    )
    meta["source"] = resolved.description
    found = StatsFile(
        mu=moments.mean.cpu().numpy(),
        sigma=moments.cov.cpu().numpy(),
        n=moments.n,
        meta=meta,
        features=None if kept is None else kept.cpu().numpy(),
    )
    if output is not None and context().is_main:
        save_stats(output, moments, meta, features=kept, force=force)
        found.path = Path(output)
    return found


def features_meta(source: str) -> dict[str, Any]:
    """The provenance of statistics computed from a features array rather than by an
    extractor: ``features_from`` (the source that carried the array), ``source`` and the
    geneval version; no ``extractor``, ``output``, ``weights_sha256`` or ``resize``, since
    none took part (a run that compares the file with extracted features warns that it
    cannot check them)."""
    from geneval import __version__

    return {"features_from": source, "source": source, "geneval_version": __version__}


def _from_features(
    description: str,
    carried: torch.Tensor,
    output: str | Path | None,
    keep: bool,
    force: bool,
) -> StatsFile:
    """The statistics of a source's own ``features`` (n, d) array: μ and the unbiased Σ of
    :class:`geneval.feature_stats.FeatureStatistics` (float64, about the first batch's mean,
    here the whole array's), written to ``output`` when given (by rank 0 only)."""
    from geneval.distributed import context
    from geneval.feature_stats import FeatureStatistics, StatsFile, save_stats

    if carried.shape[0] < 2:
        raise InputError(
            f"{quote(description)}: statistics need at least 2 feature vectors, found "
            f"{carried.shape[0]}"
        )
    moments = FeatureStatistics.from_features(carried)
    meta = features_meta(description)
    found = StatsFile(
        mu=moments.mean.cpu().numpy(),
        sigma=moments.cov.cpu().numpy(),
        n=moments.n,
        meta=meta,
        features=carried.cpu().numpy() if keep else None,
    )
    if output is not None and context().is_main:
        save_stats(output, moments, meta, features=carried if keep else None, force=force)
        found.path = Path(output)
    return found


def stats(*args: Any, **kwargs: Any) -> StatsFile:
    """``geneval.stats``: :func:`feature_statistics`, its errors naming settings in Python's
    terms (``extractor=``, not ``--extractor``)."""
    from geneval.errors import surface

    with surface("python"):
        return feature_statistics(*args, **kwargs)
