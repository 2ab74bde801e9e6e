"""Named reference statistics for common benchmarks, fetched once into a local cache.

``--reference cifar10:train`` needs no CIFAR-10 images: the published Inception statistics
of the benchmark are downloaded on first use into ``$GENEVAL_CACHE/reference_stats`` (or
``~/.cache/geneval/reference_stats``) and read from there afterwards.

:data:`PUBLISHED_STATS` is the one table of what exists, keyed by
``(dataset, split, extractor, resize)``:

* ``tf1`` — TTUR's statistics (Heusel et al. 2017), computed with the original TensorFlow
  Inception graph, whose in-graph bilinear resize is what the ``tf1`` convention reproduces;
* ``clean`` and ``pytorch-fid`` — clean-fid's statistics (Parmar et al. 2022) in its
  ``clean`` and ``legacy_pytorch`` modes, which use the same resize conventions.

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

import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path

from geneval.plugin import (
    GenevalWarning,
    InputError,
    atomic_path,
    geneval_cache_dir,
    progress_bar,
    sha256_of,
)

INCEPTION = "inception-v3-fid"
TTUR_BASE = "http://bioinf.jku.at/research/ttur/ttur_stats/"
CLEANFID_BASE = "https://www.cs.cmu.edu/~clean-fid/stats/"


@dataclass(frozen=True)
class PublishedStats:
    """One published statistics file: where it lives and what produced it."""

    url: str
    filename: str
    source: str
    sha256: str | None = None  # published checksum, when one exists
    dim: int = 2048


def _cleanfid(name: str, mode: str, split: str, res: int) -> PublishedStats:
    filename = f"{name}_{mode}_{split}_{res}.npz"
    return PublishedStats(CLEANFID_BASE + filename, filename, f"clean-fid ({mode} mode)")


#: Every named reference statistics file geneval knows, by (dataset, split, extractor, resize).
PUBLISHED_STATS: dict[tuple[str, str, str, str], PublishedStats] = {
    ("cifar10", "train", INCEPTION, "tf1"): PublishedStats(
        TTUR_BASE + "fid_stats_cifar10_train.npz", "fid_stats_cifar10_train.npz", "TTUR"
    ),
    ("cifar10", "train", INCEPTION, "clean"): _cleanfid("cifar10", "clean", "train", 32),
    ("cifar10", "test", INCEPTION, "clean"): _cleanfid("cifar10", "clean", "test", 32),
    ("cifar10", "train", INCEPTION, "pytorch-fid"): _cleanfid(
        "cifar10", "legacy_pytorch", "train", 32
    ),
    ("cifar10", "test", INCEPTION, "pytorch-fid"): _cleanfid(
        "cifar10", "legacy_pytorch", "test", 32
    ),
}


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


def _verify(path: Path, entry: PublishedStats, *, first_download: bool) -> None:
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
            f"delete the file to fetch it again from {entry.url}"
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
    dataset: str, split: str, extractor: str, resize: str, *, cache_dir: Path | None = None
) -> Path | None:
    """The local path of published statistics for a benchmark, downloading them if needed.

    Parameters
    ----------
    dataset, split
        The benchmark, e.g. ``"cifar10"``, ``"train"``.
    extractor, resize
        The run's extractor and resize convention; statistics exist only for
        ``inception-v3-fid`` with the conventions listed in :data:`PUBLISHED_STATS`.
    cache_dir
        Where the files are kept; default ``geneval_cache_dir() / "reference_stats"``.

    Returns
    -------
    Path or None
        ``None`` when no published statistics exist for this combination; otherwise the
        verified cached file.

    Raises
    ------
    InputError
        When the file cannot be downloaded (the message names the URL and where to put the
        file by hand), or the cached file fails its checksum or is not a statistics file.
    """
    entry = PUBLISHED_STATS.get((dataset, split, extractor, resize))
    if entry is None:
        return None
    folder = Path(cache_dir) if cache_dir is not None else geneval_cache_dir() / "reference_stats"
    path = folder / entry.filename
    if path.is_file():
        _verify(path, entry, first_download=False)
        return path
    try:
        folder.mkdir(parents=True, exist_ok=True)
        _download(entry.url, path)
    except (OSError, ValueError) as exc:
        raise InputError(
            f"could not download the {dataset}:{split} reference statistics from {entry.url} "
            f"({exc}); download the file by hand and put it at {path}"
        ) from None
    try:
        _verify(path, entry, first_download=True)
    except InputError:
        path.unlink(missing_ok=True)
        raise
    return path
