"""Named reference statistics of common benchmarks, fetched once into a local cache.

``--reference cifar10:train`` or ``--reference ffhq:trainval70k`` needs no images: the
published Inception statistics of the benchmark are downloaded on first use into
``$GENEVAL_CACHE/reference_stats`` (or ``~/.cache/geneval/reference_stats``) and read from
there afterwards. ``geneval references list`` shows every one (this module registers them
through the ``geneval_register_references`` hook).

:data:`PUBLISHED_STATS` is the one table of what exists, keyed by
``(dataset, split, extractor, resize, resolution)``:

* ``tf1`` on CIFAR-10 ``train`` — TTUR's statistics (Heusel et al. 2017), computed with the
  original TensorFlow Inception graph, whose in-graph bilinear resize is what the ``tf1``
  convention reproduces;
* every file clean-fid publishes (Parmar et al. 2022; its table of precomputed datasets,
  :data:`CLEANFID_PUBLISHED`: CIFAR-10, FFHQ, LSUN church/horse/cat, AFHQ cat/dog/wild,
  BreCaHAD, MetFaces, horse2zebra, cat2dog), named as clean-fid names them,
  ``{name}_{mode}_{split}_{res}.npz``, and served to the geneval convention of the same
  preprocessing (:data:`CLEANFID_MODES`): ``clean`` → ``clean``, ``pytorch-fid`` →
  ``legacy_pytorch``, ``tf1`` → ``legacy_tensorflow`` (clean-fid's TF-graph mode; TTUR's file
  keeps precedence for CIFAR-10 ``train``).

A benchmark published at several resolutions (FFHQ at 1024 and 256) is chosen with
``,res=R`` after the split, ``--reference ffhq:trainval70k,res=256``; without it, the first
resolution of the table (the dataset's native one). The statistics describe images of that
side resized to 299 by the convention, so name the resolution of the images they are
compared with.

CIFAR-100 and STL-10 (registered by torch-fidelity) have no published statistics: they are
computed from the images, so they are the datasets ``cifar100`` and ``stl10``
(:mod:`geneval_plugins.datasets.torchvision_sets`, whose passes the feature cache keeps),
not entries of this table.

Offline use: a file that cannot be downloaded is an error naming its URL and the path to put
it at by hand; ``$GENEVAL_REFERENCE_STATS_MIRROR`` names a base URL (a local mirror) to fetch
the same file names from instead.

Checksums: neither TTUR nor clean-fid publishes a checksum for these files, so none can be
pinned honestly. A table entry may carry a ``sha256`` (then it is enforced on every read);
without one, the file is checked to be a well-formed statistics file (``mu`` (2048,),
``sigma`` (2048, 2048), finite) and the sha256 of the first download is recorded beside it
(``<file>.sha256``) and enforced on every later read, so a cached copy that changes is
detected.

References
----------
.. [1] M. Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
   Nash Equilibrium", NeurIPS 2017; statistics at http://bioinf.jku.at/research/ttur/.
.. [2] G. Parmar, R. Zhang, J.-Y. Zhu, "On Aliased Resizing and Surprising Subtleties in
   GAN Evaluation", CVPR 2022; statistics at https://www.cs.cmu.edu/~clean-fid/stats/.
"""

from __future__ import annotations

import http.client
import os
import re
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from geneval.plugin import (
    GenevalWarning,
    InputError,
    atomic_path,
    geneval_cache_dir,
    hookimpl,
    progress_bar,
    quote,
    sha256_of,
)

INCEPTION = "inception-v3-fid"
TTUR_BASE = "http://bioinf.jku.at/research/ttur/ttur_stats/"
CLEANFID_BASE = "https://www.cs.cmu.edu/~clean-fid/stats/"
#: A base URL that replaces TTUR's and clean-fid's (a local mirror): files are fetched from
#: ``$GENEVAL_REFERENCE_STATS_MIRROR/<file name>``.
MIRROR_ENV = "GENEVAL_REFERENCE_STATS_MIRROR"

#: geneval's resize convention → clean-fid's mode of the same preprocessing.
CLEANFID_MODES: dict[str, str] = {
    "clean": "clean",
    "tf1": "legacy_tensorflow",
    "pytorch-fid": "legacy_pytorch",
}
ALL_MODES = tuple(CLEANFID_MODES.values())

#: clean-fid's published FID statistics (its README's table of precomputed datasets):
#: (name, resolutions (the first is the default), split, modes).
CLEANFID_PUBLISHED: tuple[tuple[str, tuple[int, ...], str, tuple[str, ...]], ...] = (
    ("cifar10", (32,), "train", ALL_MODES),
    ("cifar10", (32,), "test", ALL_MODES),
    ("ffhq", (1024, 256), "trainval", ALL_MODES),
    ("ffhq", (1024, 256), "trainval70k", ALL_MODES),
    ("lsun_church", (256,), "train", ALL_MODES),
    ("lsun_church", (256,), "trainfull", ("clean",)),
    ("lsun_horse", (256,), "train", ALL_MODES),
    ("lsun_horse", (256,), "trainfull", ("clean",)),
    ("lsun_cat", (256,), "train", ALL_MODES),
    ("lsun_cat", (256,), "trainfull", ALL_MODES),
    ("afhq_cat", (512,), "train", ALL_MODES),
    ("afhq_dog", (512,), "train", ALL_MODES),
    ("afhq_wild", (512,), "train", ALL_MODES),
    ("brecahad", (512,), "train", ALL_MODES),
    ("metfaces", (1024,), "train", ALL_MODES),
    ("horse2zebra", (256,), "test", ALL_MODES),
    ("cat2dog", (256,), "test", ALL_MODES),
)


@dataclass(frozen=True)
class PublishedStats:
    """One published statistics file: where it lives and what produced it.

    ``resolution`` is the side of the images the statistics were computed from, and
    ``default_resolution`` whether it is the one ``--reference NAME:SPLIT`` means when it
    names no ``res=``.
    """

    url: str
    filename: str
    source: str
    sha256: str | None = None  # published checksum, when one exists
    dim: int = 2048
    resolution: int | None = None
    default_resolution: bool = True


def cleanfid_filename(name: str, mode: str, split: str, res: int) -> str:
    """clean-fid's file name of FID statistics: ``{name}_{mode}_{split}_{res}.npz``,
    lower-cased (``cleanfid.features.get_reference_statistics``)."""
    return f"{name}_{mode}_{split}_{res}.npz".lower()


def _cleanfid(name: str, mode: str, split: str, res: int, default: bool = True) -> PublishedStats:
    filename = cleanfid_filename(name, mode, split, res)
    return PublishedStats(
        CLEANFID_BASE + filename,
        filename,
        f"clean-fid ({mode} mode)",
        resolution=res,
        default_resolution=default,
    )


def _table() -> dict[tuple[str, str, str, str, int], PublishedStats]:
    table: dict[tuple[str, str, str, str, int], PublishedStats] = {
        # TTUR's file is the reference of the original TF code for tf1 on CIFAR-10 train.
        ("cifar10", "train", INCEPTION, "tf1", 32): PublishedStats(
            TTUR_BASE + "fid_stats_cifar10_train.npz",
            "fid_stats_cifar10_train.npz",
            "TTUR",
            resolution=32,
        ),
    }
    for name, resolutions, split, modes in CLEANFID_PUBLISHED:
        for convention, mode in CLEANFID_MODES.items():
            if mode not in modes:
                continue
            for res in resolutions:
                key = (name, split, INCEPTION, convention, res)
                table.setdefault(key, _cleanfid(name, mode, split, res, res == resolutions[0]))
    return table


#: Every named reference statistics file geneval knows, by
#: (dataset, split, extractor, resize convention, resolution).
PUBLISHED_STATS: dict[tuple[str, str, str, str, int], PublishedStats] = _table()


def parse_split(dataset: str, split: str | None) -> tuple[str, int | None]:
    """``"trainval70k,res=256"`` → ``("trainval70k", 256)``; ``"train"`` → ``("train", None)``
    (no split: ``train``)."""
    text = split or "train"
    name, *options = text.split(",")
    resolution: int | None = None
    for option in options:
        key, _, value = option.partition("=")
        if key.strip() != "res" or not re.fullmatch(r"[0-9]{1,6}", value.strip()):
            raise InputError(
                f"--reference {quote(dataset + ':' + text)}: unknown option {quote(option)} "
                "(a named reference takes res=PIXELS, e.g. ffhq:trainval70k,res=256)"
            )
        resolution = int(value)
    return name.strip(), resolution


def lookup(
    dataset: str, split: str | None, extractor: str, resize: str
) -> tuple[tuple[str, str, str, str, int], PublishedStats] | None:
    """The table entry ``--reference DATASET[:SPLIT[,res=R]]`` names for ``extractor`` under
    ``resize``; ``None`` when no statistics of that name are published for ``extractor``.

    Raises
    ------
    InputError
        When statistics of ``dataset`` are published for ``extractor`` but not for that split,
        resolution or convention: the message lists those that are.
    """
    name = dataset.lower()
    known = [key for key in PUBLISHED_STATS if key[0] == name and key[2] == extractor]
    if not known:
        return None
    wanted, resolution = parse_split(dataset, split)
    matches = [
        key
        for key in known
        if key[1] == wanted
        and key[3] == resize
        and (
            key[4] == resolution
            if resolution is not None
            else PUBLISHED_STATS[key].default_resolution
        )
    ]
    if matches:
        return matches[0], PUBLISHED_STATS[matches[0]]
    offered = sorted({f"{reference_spec(key)} (--resize {key[3]})" for key in known})
    raise InputError(
        f"--reference {quote(dataset + ':' + (split or 'train'))}: no published statistics for "
        f"{extractor} with --resize {resize}"
        + (f" at {resolution} px" if resolution is not None else "")
        + f"; published: {', '.join(offered)}"
    )


def reference_spec(key: tuple[str, str, str, str, int]) -> str:
    """The ``--reference`` text that names a table entry (``res=`` only when not the default
    resolution)."""
    name, split, _extractor, _resize, res = key
    entry = PUBLISHED_STATS[key]
    return f"{name}:{split}" + ("" if entry.default_resolution else f",res={res}")


def reference_url(entry: PublishedStats) -> str:
    """Where ``entry`` is downloaded from: its published URL, or the mirror of
    ``$GENEVAL_REFERENCE_STATS_MIRROR``."""
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    return f"{mirror.rstrip('/')}/{entry.filename}" if mirror else entry.url


def cache_folder(cache_dir: Path | None = None) -> Path:
    """Where the files are kept: ``cache_dir``, else ``$GENEVAL_CACHE/reference_stats``
    (``~/.cache/geneval/reference_stats``)."""
    return Path(cache_dir) if cache_dir is not None else geneval_cache_dir() / "reference_stats"


def _check_stats_file(path: Path, dim: int) -> None:
    """Raise :class:`InputError` unless ``path`` is a valid statistics file (read by the one
    reader, :func:`geneval.feature_stats.load_stats`) with ``mu`` (dim,) and ``sigma``
    (dim, dim)."""
    from geneval.plugin import load_stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GenevalWarning)  # no provenance: said when it is used
        stats = load_stats(path)
    mu, sigma = stats.mu, stats.sigma
    if mu.shape != (dim,) or sigma.shape != (dim, dim):
        raise InputError(
            f"reference statistics {path}: expected mu ({dim},) and sigma ({dim}, {dim}), "
            f"found {mu.shape} and {sigma.shape}"
        )


def _verify(path: Path, entry: PublishedStats, url: str, *, first_download: bool) -> None:
    """Check a cached file against the pinned sha256, or the one recorded at first download."""
    sha = sha256_of(path)
    recorded = path.with_name(path.name + ".sha256")
    if entry.sha256 is not None:
        expected, origin = entry.sha256, "the published checksum"
    elif recorded.is_file() and not first_download:
        expected, origin = (
            recorded.read_text(encoding="utf-8").split()[0],
            f"the checksum recorded in {recorded}",
        )
    else:
        expected, origin = sha, ""
    if sha != expected:
        raise InputError(
            f"reference statistics {path} have sha256 {sha} but {origin} is {expected}; "
            f"delete the file to fetch it again from {url}"
        )
    _check_stats_file(path, entry.dim)
    if entry.sha256 is None and (first_download or not recorded.is_file()):
        with atomic_path(recorded, force=True, what="checksum file") as tmp:
            tmp.write_text(f"{sha}  {path.name}\n", encoding="utf-8")


def _download(url: str, path: Path) -> None:
    """Stream ``url`` into ``path`` atomically, with a progress bar."""
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - published https/http URL
        total = response.headers.get("Content-Length")
        with atomic_path(path, force=True, what="reference statistics") as tmp:
            with (
                open(tmp, "wb") as out,
                progress_bar(total=int(total) if total else None, desc=path.name, unit="B") as bar,
            ):
                for block in iter(lambda: response.read(1 << 20), b""):
                    out.write(block)
                    bar.update(len(block))


def fetch_reference_stats(
    dataset: str,
    split: str | None,
    extractor: str,
    resize: str,
    *,
    cache_dir: Path | None = None,
) -> Path | None:
    """The local path of published statistics for a benchmark, downloading them if needed.

    Parameters
    ----------
    dataset, split
        The benchmark, e.g. ``"cifar10"``, ``"train"``; the split may end in ``,res=R`` to
        choose among the resolutions a benchmark is published at (``ffhq:trainval70k,res=256``;
        default: the first of :data:`CLEANFID_PUBLISHED`, its native one). No split: ``train``.
    extractor, resize
        The run's extractor and resize convention; statistics exist only for
        ``inception-v3-fid`` with the conventions listed in :data:`PUBLISHED_STATS`.
    cache_dir
        Where the files are kept; default ``geneval_cache_dir() / "reference_stats"``.

    Returns
    -------
    Path or None
        ``None`` when no statistics of that name are published for ``extractor``; otherwise
        the verified cached file.

    Raises
    ------
    InputError
        When the benchmark is published for ``extractor`` but not for that split, resolution
        or convention (the message lists what is), when the file cannot be downloaded (the
        message names the URL, where to put the file by hand and the mirror variable), or the
        cached file fails its checksum or is not a statistics file.
    """
    found = lookup(dataset, split, extractor, resize)
    if found is None:
        return None
    key, entry = found
    folder = cache_folder(cache_dir)
    path = folder / entry.filename
    url = reference_url(entry)
    if path.is_file():
        _verify(path, entry, url, first_download=False)
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _download(url, path)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise InputError(
            f"could not download the {reference_spec(key)} reference statistics "
            f"({entry.source}, {entry.resolution} px, --resize {resize}) from {url} ({exc}); "
            f"without network access, download that file elsewhere and put it at {path} "
            f"(the folder is $GENEVAL_CACHE/reference_stats), or name a mirror holding it "
            f"with ${MIRROR_ENV}"
        ) from None
    try:
        _verify(path, entry, url, first_download=True)
    except InputError:
        path.unlink(missing_ok=True)
        raise
    return path


@dataclass(frozen=True)
class NamedReference:
    """One named reference as ``geneval references list`` shows it: the ``--reference`` text,
    the extractor and ``--resize`` convention it serves, the images' resolution, the URL, the
    cache path and who published it."""

    name: str
    extractor: str
    convention: str
    resolution: int | None
    url: str
    path: Path
    source: str


def named_references(cache_dir: Path | None = None) -> list[NamedReference]:
    """Every entry of :data:`PUBLISHED_STATS` as a :class:`NamedReference`."""
    folder = cache_folder(cache_dir)
    return [
        NamedReference(
            name=reference_spec(key),
            extractor=key[2],
            convention=key[3],
            resolution=entry.resolution,
            url=reference_url(entry),
            path=folder / entry.filename,
            source=entry.source,
        )
        for key, entry in sorted(PUBLISHED_STATS.items())
    ]


@hookimpl
def geneval_register_references(register) -> None:
    """The published statistics of :data:`PUBLISHED_STATS`, for ``geneval references list``."""
    for reference in named_references():
        register(reference)
