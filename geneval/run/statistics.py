"""``geneval stats`` as an API function: :func:`feature_statistics`, the feature statistics
of one source.

The statistics are a run of the pipeline without a metric: the source is resolved as a run's
samples, the extractor chosen by the run's one rule (:func:`geneval.run.resolve.extractor_for`),
the running moments (and, with ``features=True``, the per-sample features) planned and
collected in one pass, always from the images (never from a statistics file or a carried
``features`` array).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.api import Need
from geneval.errors import InputError
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


def stats(*args: Any, **kwargs: Any) -> StatsFile:
    """``geneval.stats``: :func:`feature_statistics`, its errors naming settings in Python's
    terms (``extractor=``, not ``--extractor``)."""
    from geneval.errors import surface

    with surface("python"):
        return feature_statistics(*args, **kwargs)
