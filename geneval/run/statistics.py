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

``format="adm"`` (``geneval stats --format adm``) writes the layout of the ADM evaluator's
reference batches (``openai/guided-diffusion/evaluations``): ``mu``, ``sigma`` (the feature
output) and ``mu_s``, ``sigma_s`` (the extractor's ``spatial`` output, sFID's) as float64,
with the source's images as ``arr_0`` (uint8 NHWC, 3 channels, one size), plus geneval's
``n`` and ``meta`` (which the evaluator ignores), so that the file serves the evaluator and
geneval alike. The moments come from one pass; the images are read a second time and
streamed into the file block by block, so memory holds one batch of them.
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
#: The file layouts ``geneval stats`` writes (``--format``), the first the default.
FORMATS = ("geneval", "adm")
#: The extractor output whose moments an ADM batch stores as ``mu_s``/``sigma_s``.
ADM_SPATIAL = "spatial"


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
    format: str = "geneval",
) -> StatsFile:
    """The feature statistics (mu, sigma, n; with ``features=True`` the per-sample features)
    of ``source`` (a folder, an array, ``DATASET[:SPLIT]`` or an image tensor), written to
    ``output`` (``.npz``) when given, as ``geneval stats SOURCE -o OUT.npz`` does.

    Inside a sharded run every rank extracts its shard; only rank 0 writes ``output``.
    ``format="adm"`` writes the ADM evaluator's layout instead (see the module docstring).
    """
    from geneval.distributed import context
    from geneval.feature_stats import StatsFile, make_meta, save_stats
    from geneval.io import check_writable
    from geneval.run.pipeline import Run

    if format not in FORMATS:
        raise InputError(f"unknown statistics format {format!r} (choose from {', '.join(FORMATS)})")
    adm = format == "adm"
    if adm and features:
        raise InputError("--features applies to geneval's format, not --format adm")
    if output is not None:
        if Path(output).suffix != ".npz":
            raise InputError(f"-o {quote(output)}: statistics files end in .npz")
        check_writable(Path(output), force=force, what="statistics file")
    needs = [Need("features", source="samples", stats_ok=True)]
    if features:
        needs.append(Need("features", source="samples"))
    if adm:
        needs.append(Need("stats", source="samples", output=ADM_SPATIAL))
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
        if adm:
            raise InputError(
                f"{quote(resolved.description)} carries a 'features' array: the ADM layout "
                "needs images, from which the extractor computes both the pool and the "
                "spatial moments"
            )
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
    if adm:
        spatial = values[keys[("stats", "samples", ADM_SPATIAL)]]
        found.outputs[ADM_SPATIAL] = (spatial.mean.cpu().numpy(), spatial.cov.cpu().numpy())
        found.layout = "adm"
        found.images_member = "arr_0"
        result = run.state.result("samples")
        if len(result.sizes) != 1:
            sizes = ", ".join(f"{h}×{w}" for h, w in sorted(result.sizes))
            raise InputError(
                f"{quote(resolved.description)}: the ADM layout stores the images as one "
                f"array (arr_0), and they have several sizes ({sizes})"
            )
        if output is not None and context().is_main:
            (height, width) = next(iter(result.sizes))
            _write_adm(
                Path(output),
                found,
                resolved.source,
                (height, width),
                batch_size=config.batch_size,
                workers=workers,
                force=force,
            )
            found.path = Path(output)
        return found
    if output is not None and context().is_main:
        save_stats(output, moments, meta, features=kept, force=force)
        found.path = Path(output)
    return found


def _rgb_blocks(source: Any, batch_size: int, workers: int | None) -> Any:
    """The source's images as float [0, 1] NCHW blocks with 3 channels (grey repeated), on
    the host, in order."""
    import torch

    from geneval.run.passes import same_size_groups

    for batch in source.batches(batch_size, torch.device("cpu"), workers):
        for group in same_size_groups(batch):
            yield group.expand(-1, 3, -1, -1) if group.shape[1] == 1 else group


def _write_adm(
    path: Path,
    found: StatsFile,
    source: Any,
    size: tuple[int, int],
    *,
    batch_size: int,
    workers: int | None,
    force: bool,
) -> None:
    """Write ``found`` in the ADM layout at ``path`` (atomically, only after success):
    ``arr_0`` uint8 (n, H, W, 3) streamed from ``source``, ``mu``, ``sigma``, ``mu_s``,
    ``sigma_s`` float64, ``n`` and ``meta``."""
    import json

    import numpy as np

    from geneval.io import write_atomic
    from geneval.sample_files import npz_writer, uint8_blocks

    mu_s, sigma_s = found.outputs[ADM_SPATIAL]
    extra = {
        "mu": np.asarray(found.mu, dtype=np.float64),
        "sigma": np.asarray(found.sigma, dtype=np.float64),
        "mu_s": np.asarray(mu_s, dtype=np.float64),
        "sigma_s": np.asarray(sigma_s, dtype=np.float64),
        "n": np.int64(found.n),
        "meta": np.array(json.dumps(found.meta, sort_keys=True)),
    }
    assert found.n is not None
    shape = (found.n, size[0], size[1], 3)
    blocks = uint8_blocks(_rgb_blocks(source, batch_size, workers))
    writer = npz_writer("arr_0", shape, np.uint8, blocks, extra=extra)
    write_atomic(path, writer, force=force, what="statistics file")


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
