"""The content-addressed feature cache: extract a folder, an array or a dataset once.

A run that extracts features of a source stores what the pass gathered for each extractor —
the float64 moments (shifted sums and co-moment) of the moments output and/or the float32
per-sample outputs — in ``$GENEVAL_CACHE/features``; a later run over the same bytes with the
same extractor reads them instead of running the extractor (``docs/contracts.md`` §12).

**The key** of an entry is the sha256 of

* the **content** of the source: for a folder, the sorted relative paths and the sha256 of
  every file's bytes (and the version of the image decoder); for an array file, the sha256 of
  the file; for an in-memory array or a dataset, the sha256 of the image array's bytes, dtype
  and shape — never a path or a modification time, so a fresh checkout of the same files hits;
* the **extractor**: its name, the sha256 of its weights, its resize convention, the output and
  what is kept of it (moments or per-sample rows), the precision mode and the device type;
* the geneval and torch versions.

Any change of a file's bytes, of the weights or of the convention changes the key: a miss,
never a stale hit. A file's size, modification and change times, inode and device only let
the cache skip re-hashing a file it has hashed before (:class:`geneval.cache.FileHashIndex`, the
one index of file hashes, which also serves the weights' sha256); a file modified within two
seconds of being hashed is not recorded, so a same-size rewrite within one timestamp tick
cannot hide.

**Sharded runs** (:func:`source_key`): every rank hashes what it reads — a folder's listing
(relative names and sizes) and the files of its own shard, the whole of an array or
statistics file, an in-memory array's bytes — and the ranks compare before anything is
computed or cached, with the cache on or off. Ranks that read different content under one
path, or different paths, are an :class:`InputError` naming the rank and the path; nothing of
such a run is computed or cached. A folder's key is built from the hashes of the files the
ranks actually read.

**Entries** are ``.npz`` files written to a temporary name, flushed to disk and renamed into
place, so a reader sees a whole entry or none. Each records its key's fields and the sha256 of
its arrays; an entry that cannot be read, whose digest or fields do not match, is deleted and
recomputed, never used. Reading an entry refreshes its modification time; when the folder
outgrows its bound (``$GENEVAL_CACHE_SIZE``, default 10 GB) the least recently used entries are
deleted. ``geneval cache info`` and ``geneval cache clear`` manage the folder; ``--no-cache``
turns the cache off for one run.
"""

from __future__ import annotations

import decimal
import hashlib
import json
import os
import re
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval import __version__
from geneval.cache import (
    FEATURES_DIR,
    INDEX_FILE,
    FileHashIndex,
    geneval_cache_dir,
)
from geneval.distributed import DistContext, all_gather_objects, collectively, shard_range
from geneval.errors import InputError, warn
from geneval.feature_stats import FeatureStatistics
from geneval.text import quote, size_text

#: Environment variable bounding the folder's size: bytes, or a number with kB/MB/GB/TB/KiB/….
SIZE_ENV = "GENEVAL_CACHE_SIZE"
DEFAULT_LIMIT = 10 * 1000**3
#: Files per chunk of a folder's content hash: the key does not depend on how ranks shard.
HASH_CHUNK = 1024
#: Version of the key's fields and of the entry layout.
FORMAT = 1
ENTRY_SUFFIX = ".npz"
#: Temporary files of writes that never finished are deleted once this old.
STALE_TMP_S = 3600.0

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


#: The largest bound ``$GENEVAL_CACHE_SIZE`` may state (1 EB): anything larger is a mistake.
MAX_LIMIT = 1000**6


def parse_size(text: str) -> int:
    """``"10GB"`` → 10 000 000 000; ``"512MiB"``, ``"1e9"`` and plain byte counts too.

    The number is read exactly (no float rounding or overflow) and must lie in
    [0, :data:`MAX_LIMIT`]; anything else — a sign, ``inf``, ``nan``, ``1e999``, an unknown
    unit, garbage — is an :class:`InputError` naming the variable.
    """
    match = re.fullmatch(
        r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][+-]?[0-9]{1,6})?)\s*([A-Za-z]*)\s*", text, re.ASCII
    )
    unit = match.group(2).lower() if match else None
    shown = text if len(text) <= 40 else f"{text[:37]}..."
    if match is None or unit not in _UNITS:
        raise InputError(
            f"{SIZE_ENV}={shown!r}: expected a size such as 10GB, 500MB or a number of bytes"
        )
    # exact decimal arithmetic: "1e999" is a number, not inf, and cannot overflow
    exact = decimal.Context(prec=64, Emax=10**7, Emin=-(10**7), traps=[])
    size = exact.multiply(decimal.Decimal(match.group(1)), _UNITS[unit])
    if size > MAX_LIMIT:
        raise InputError(
            f"{SIZE_ENV}={shown!r}: larger than the largest bound geneval accepts "
            f"({MAX_LIMIT // 1000**6} EB)"
        )
    return int(size)


def cache_limit() -> int:
    """The size bound of the feature cache, from ``$GENEVAL_CACHE_SIZE`` (default 10 GB)."""
    text = os.environ.get(SIZE_ENV)
    return DEFAULT_LIMIT if not text else parse_size(text)


def features_dir() -> Path:
    """``$GENEVAL_CACHE/features``."""
    return geneval_cache_dir() / FEATURES_DIR


# -- content keys of sources -------------------------------------------------------------------


def _array_digest(array: np.ndarray | torch.Tensor) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _folder_key(count: int, names: list[str], shas: list[str]) -> str:
    """A folder's content key from every file's (relative path, sha256), in order: the
    sha256 of the digests of chunks of :data:`HASH_CHUNK` files (one process and any number
    of ranks give the same key)."""
    import PIL

    total = hashlib.sha256(f"folder|{count}|pillow {PIL.__version__}|".encode())
    for first in range(0, len(shas), HASH_CHUNK):
        chunk = hashlib.sha256()
        pairs = zip(
            names[first : first + HASH_CHUNK], shas[first : first + HASH_CHUNK], strict=True
        )
        for name, sha in pairs:
            chunk.update(f"{name}\0{sha}\n".encode("utf-8", "surrogateescape"))
        total.update(chunk.hexdigest().encode())
    return total.hexdigest()


def _folder_listing(source: Any) -> list[tuple[str, int]]:
    """A folder's (relative path, size) pairs, as this rank sees them."""
    listing = []
    for name, path in zip(source.names, source.paths, strict=True):
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise InputError(f"cannot read image {quote(path)}: {exc.strerror or exc}") from None
        listing.append((name, size))
    return listing


def _listing_digest(listing: list[tuple[str, int]]) -> str:
    digest = hashlib.sha256()
    for name, size in listing:
        digest.update(f"{name}\0{size}\n".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()


@dataclass
class _Seen:
    """What one rank read of a source: its kind, its description (the path), its count and
    the digest of its content (a folder: of its listing), and for a folder the sha256 of the
    files of this rank's shard (raw 32-byte digests)."""

    kind: str
    description: str
    count: int | None
    digest: str | None
    shard: bytes = b""


def _seen(source: Any, ctx: DistContext, index: FileHashIndex, unit: int) -> _Seen:
    """Hash what this rank reads of ``source`` (no collectives: see :func:`source_key`)."""
    from geneval.feature_stats import StatsFile
    from geneval.sources import ArraySource, FolderSource, TensorSource

    if source is None:  # a role this rank has no source for
        return _Seen("none", "nothing", None, None)
    description = str(getattr(source, "description", None) or getattr(source, "path", ""))
    count = getattr(source, "count", None)
    if isinstance(source, FolderSource):
        listing = _folder_listing(source)
        start, stop = shard_range(source.count, unit, ctx.rank, ctx.world_size)
        shas = index.hashes(source.paths[start:stop])
        shard = b"".join(bytes.fromhex(sha) for sha in shas)
        return _Seen("folder", description, count, _listing_digest(listing), shard)
    if isinstance(source, StatsFile):
        path = source.path
        digest = None if path is None else index.hashes([path], what="statistics file")[0]
        return _Seen("stats", str(path), source.n, digest)
    if isinstance(source, ArraySource):
        path = getattr(source, "path", None)
        if path is not None:
            return _Seen("file", description, count, index.hashes([path], what="array file")[0])
        if source.array is None:
            return _Seen("array", description, count, None)
        return _Seen("array", description, count, _array_digest(source.array))
    if isinstance(source, TensorSource):
        return _Seen("tensor", description, count, _array_digest(source.images))
    return _Seen(type(source).__name__, description, count, None)  # a model: its seed decides


def _listing_difference(
    role: str, description: str, listings: list[list[tuple[str, int]]]
) -> str | None:
    """The first file whose name or size differs between a rank's listing and rank 0's."""
    for rank, listing in enumerate(listings[1:], start=1):
        for (name, size), (name0, size0) in zip(listing, listings[0], strict=False):
            if (name, size) != (name0, size0):
                return (
                    f"{role} {quote(description)}: rank {rank} sees {quote(name)} ({size} "
                    f"bytes) where rank 0 sees {quote(name0)} ({size0} bytes): every rank must "
                    "read the same files"
                )
    return None


def _disagreement(role: str, seen: list[_Seen]) -> str | None:
    """The one-line message naming the first rank that read other content than rank 0, or
    ``None`` when all agree."""
    first = seen[0]
    for rank, other in enumerate(seen[1:], start=1):
        if other.kind != first.kind or other.description != first.description:
            return (
                f"{role}: rank {rank} read {quote(other.description)} but rank 0 read "
                f"{quote(first.description)}: every rank must read the same {role}"
            )
        if other.count != first.count:
            return (
                f"{role} {quote(first.description)}: rank {rank} sees {other.count} images, "
                f"rank 0 sees {first.count}: every rank must read the same content"
            )
        if other.digest != first.digest:
            what = "files" if first.kind == "folder" else "content"
            return (
                f"{role} {quote(first.description)}: rank {rank} read different {what} than "
                "rank 0 "
                f"(sha256 {str(other.digest)[:12]}… vs {str(first.digest)[:12]}…): every rank "
                "must read the same content"
            )
    return None


def source_key(
    source: Any,
    ctx: DistContext,
    index: FileHashIndex,
    *,
    unit: int = HASH_CHUNK,
    role: str = "source",
) -> str | None:
    """The content key of a folder, array or dataset source (the same for any number of
    ranks); ``None`` for sources the cache does not serve (models, statistics files, files
    without images).

    Collective in a sharded run, where every rank hashes what it reads: a folder's listing
    (names and sizes) and the files of its shard of ``unit``-image blocks (the pass's
    :func:`~geneval.distributed.shard_range`), the whole of an array or statistics file, an
    in-memory array's bytes. Any rank's failure (an unreadable file) is raised on every
    rank; ranks that read different paths, counts or content are an :class:`InputError`
    naming the first such rank and the path, raised on every rank before anything is
    computed or cached.
    """
    from geneval.sources import ArraySource, FolderSource, TensorSource

    mine = collectively(ctx, lambda: _seen(source, ctx, index, unit))
    seen = all_gather_objects(ctx, mine)
    problem = _disagreement(role, seen)
    same = {(s.kind, s.description, s.count) for s in seen}
    if problem is not None and len(same) == 1 and seen[0].kind == "folder":
        # the same number of files, other names or sizes (every rank takes this branch)
        listings = all_gather_objects(ctx, _folder_listing(source))
        problem = _listing_difference(role, seen[0].description, listings) or problem
    if problem is not None:
        error = InputError(problem)
        error.shared = True  # type: ignore[attr-defined]  # every rank raises the same line
        raise error
    if isinstance(source, FolderSource):
        shard = b"".join(s.shard for s in seen)
        shas = [shard[i : i + 32].hex() for i in range(0, len(shard), 32)]
        if len(shas) != source.count:
            raise InputError(
                f"{quote(source.description)}: the ranks hashed {len(shas)} of {source.count} files"
            )
        return _folder_key(source.count, source.names, shas)
    if isinstance(source, ArraySource) and source.has_images:
        # key_note: a stated --layout (the same bytes read the other way are other images)
        note = getattr(source, "key_note", "")
        return f"{'file' if mine.kind == 'file' else 'array'}:{mine.digest}{note}"
    if isinstance(source, TensorSource):
        return f"tensor:{mine.digest}"
    return None


# -- entries -----------------------------------------------------------------------------------


@dataclass
class CachedPart:
    """What one pass gathered of one extractor output: its moments or its rows."""

    count: int
    sizes: set[tuple[int, int]]
    counters: dict[str, int] = field(default_factory=dict)
    moments: FeatureStatistics | None = None
    rows: torch.Tensor | None = None


def entry_fields(
    source: str,
    loaded: Any,
    extractor: str,
    output: str,
    kind: str,
    *,
    precision: str,
    device: torch.device,
) -> dict[str, Any]:
    """Everything an entry's key depends on (see the module docstring)."""
    return {
        "format": FORMAT,
        "source": source,
        "extractor": extractor,
        "weights_sha256": str(loaded.weights_sha256),
        "resize": str(loaded.convention),
        "output": output,
        "kind": kind,
        "precision": precision,
        "device": torch.device(device).type,
        "geneval": __version__,
        "torch": torch.__version__.split("+")[0],
    }


def entry_key(fields: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def _payload_digest(arrays: dict[str, np.ndarray]) -> str:
    digest = hashlib.sha256()
    for name in sorted(arrays):
        digest.update(f"{name}|".encode())
        digest.update(_array_digest(arrays[name]).encode())
    return digest.hexdigest()


def _read_moments(arrays: dict[str, np.ndarray]) -> FeatureStatistics:
    """An entry's moments: the shifted statistics (``shift``, ``shifted_sum``, ``comoment``),
    or the raw sums (``sum``, ``sum_outer``) that entries written before them hold."""
    n = int(arrays["n"])
    if "comoment" in arrays:
        return FeatureStatistics.from_shifted(
            n,
            torch.from_numpy(arrays["shift"].astype(np.float64)),
            torch.from_numpy(arrays["shifted_sum"].astype(np.float64)),
            torch.from_numpy(arrays["comoment"].astype(np.float64)),
        )
    return FeatureStatistics.from_sums(
        n,
        torch.from_numpy(arrays["sum"].astype(np.float64)),
        torch.from_numpy(arrays["sum_outer"].astype(np.float64)),
    )


class CorruptEntry(Exception):
    """An entry that cannot be used (unreadable, truncated, altered, or for another key)."""


class FeatureCache:
    """The entries in one folder, bounded to ``limit`` bytes (least recently used go first)."""

    def __init__(self, root: Path, limit: int = DEFAULT_LIMIT) -> None:
        self.root = Path(root)
        self.limit = int(limit)
        self.index = FileHashIndex(self.root / INDEX_FILE)

    @classmethod
    def open(cls) -> FeatureCache:
        """The cache of ``$GENEVAL_CACHE``; a folder that cannot be created, read or written is
        an :class:`InputError` (use ``--no-cache`` or point ``GENEVAL_CACHE`` elsewhere)."""
        root = features_dir()
        hint = "set GENEVAL_CACHE to a writable folder or use --no-cache"
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(
                f"feature cache {quote(root)}: {exc.strerror or exc} ({hint})"
            ) from None
        if not root.is_dir():
            raise InputError(f"feature cache {quote(root)} is not a folder ({hint})")
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise InputError(f"feature cache {quote(root)} is not readable and writable ({hint})")
        return cls(root, cache_limit())

    def path(self, key: str) -> Path:
        return self.root / f"{key}{ENTRY_SUFFIX}"

    # -- reading -------------------------------------------------------------------------------
    def load(self, fields: dict[str, Any]) -> CachedPart | None:
        """The entry of ``fields``, or ``None``; a corrupt entry is deleted (with a warning)."""
        path = self.path(entry_key(fields))
        if not path.is_file():
            return None
        try:
            part = self._read(path, fields)
        except CorruptEntry as exc:
            warn(f"feature cache entry {path.name} is unusable ({exc}): discarded, recomputing")
            self._remove(path)
            return None
        try:
            os.utime(path)  # least recently used is evicted first
        except OSError:
            pass
        return part

    def _read(self, path: Path, fields: dict[str, Any]) -> CachedPart:
        try:
            with np.load(path, allow_pickle=False) as data:
                arrays = {name: np.asarray(data[name]) for name in data.files}
        except Exception as exc:  # noqa: BLE001 - any failure to read means unusable
            raise CorruptEntry(f"{type(exc).__name__}: {exc}".splitlines()[0]) from None
        try:
            meta = json.loads(str(arrays.pop("meta")))
        except (KeyError, ValueError):
            raise CorruptEntry("no readable meta") from None
        if not isinstance(meta, dict) or meta.get("fields") != fields:
            raise CorruptEntry("recorded for another key")
        if meta.get("digest") != _payload_digest(arrays):
            raise CorruptEntry("its arrays do not match their digest")
        try:
            count = int(meta["count"])
            sizes = {(int(h), int(w)) for h, w in meta["sizes"]}
            counters = {str(k): int(v) for k, v in meta.get("counters", {}).items()}
            part = CachedPart(count, sizes, counters)
            if fields["kind"] == "moments":
                stats = _read_moments(arrays)
                if stats.n != count:
                    raise CorruptEntry("moments do not match the count")
                part.moments = stats
            else:
                rows = torch.from_numpy(arrays["rows"].astype(np.float32))
                if rows.ndim != 2 or rows.shape[0] != count:
                    raise CorruptEntry("rows do not match the count")
                part.rows = rows
        except (KeyError, TypeError, ValueError) as exc:
            raise CorruptEntry(f"malformed ({exc})".splitlines()[0]) from None
        return part

    # -- writing -------------------------------------------------------------------------------
    def store(self, fields: dict[str, Any], part: CachedPart) -> None:
        """Write an entry atomically (temporary file, fsync, rename), then evict down to the
        bound. A failure to write is a warning: the run's numbers do not depend on it."""
        if part.moments is not None:
            arrays = {
                "n": np.asarray(part.moments.n, dtype=np.int64),
                "shift": part.moments.shift.detach().cpu().numpy().astype(np.float64),
                "shifted_sum": part.moments.shifted_sum.detach().cpu().numpy().astype(np.float64),
                "comoment": part.moments.comoment.detach().cpu().numpy().astype(np.float64),
            }
        elif part.rows is not None:
            arrays = {"rows": part.rows.detach().cpu().numpy().astype(np.float32)}
        else:
            return
        nbytes = sum(a.nbytes for a in arrays.values())
        if nbytes > self.limit:
            return  # larger than the whole cache: never stored
        meta = {
            "fields": fields,
            "digest": _payload_digest(arrays),
            "count": part.count,
            "sizes": sorted(part.sizes),
            "counters": part.counters,
            "created": time.time(),
        }
        final = self.path(entry_key(fields))
        tmp = self.root / f".{final.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(tmp, "wb") as handle:
                np.savez(handle, meta=np.array(json.dumps(meta, sort_keys=True)), **arrays)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            self._remove(tmp)
            warn(
                f"feature cache {quote(self.root)}: could not store an entry "
                f"({exc.strerror or exc})"
            )
            return
        self.evict()

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            warn(f"feature cache: could not delete {quote(path)} ({exc.strerror or exc})")

    def _entries(self) -> list[tuple[float, int, Path]]:
        found = []
        for path in self.root.glob(f"*{ENTRY_SUFFIX}"):
            try:
                stat = path.stat()
            except OSError:
                continue
            found.append((stat.st_mtime, stat.st_size, path))
        return sorted(found)

    def evict(self) -> list[Path]:
        """Delete the least recently used entries until the folder fits its bound, and
        temporary files of writes that never finished; returns the entries deleted."""
        now = time.time()
        for tmp in self.root.glob(".*.tmp"):
            try:
                if now - tmp.stat().st_mtime > STALE_TMP_S:
                    tmp.unlink()
            except OSError:
                pass
        entries = self._entries()
        total = sum(size for _, size, _ in entries)
        removed = []
        for _, size, path in entries:
            if total <= self.limit:
                break
            self._remove(path)
            total -= size
            removed.append(path)
        return removed

    # -- management ----------------------------------------------------------------------------
    def info(self) -> dict[str, Any]:
        """Folder, entry count, bytes used, bound, and the size of the file-hash index."""
        entries = self._entries()
        index = self.root / INDEX_FILE
        return {
            "path": str(self.root),
            "entries": len(entries),
            "bytes": sum(size for _, size, _ in entries),
            "limit": self.limit,
            "index_bytes": index.stat().st_size if index.is_file() else 0,
            "oldest": min((m for m, _, _ in entries), default=None),
            "newest": max((m for m, _, _ in entries), default=None),
        }

    def clear(self) -> int:
        """Delete every entry, unfinished write and the file-hash index; returns the number
        of entries deleted."""
        entries = self._entries()
        for _, _, path in entries:
            self._remove(path)
        for path in self.root.glob(".*.tmp"):
            self._remove(path)
        for name in (INDEX_FILE, f"{INDEX_FILE}-journal"):
            self._remove(self.root / name)
        return len(entries)


def describe_info(info: dict[str, Any]) -> str:
    """``geneval cache info`` as text."""
    lines = [
        f"feature cache: {info['path']}",
        f"entries: {info['entries']}, {size_text(info['bytes'])} of {size_text(info['limit'])} "
        f"(set {SIZE_ENV} to change the bound)",
        f"file-hash index: {size_text(info['index_bytes'])}",
    ]
    if info["oldest"] is not None:
        oldest = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["oldest"]))
        newest = time.strftime("%Y-%m-%d %H:%M", time.localtime(info["newest"]))
        lines.append(f"least recently used: {oldest}, most recently used: {newest}")
    return "\n".join(lines) + "\n"


__all__ = [
    "CachedPart",
    "FeatureCache",
    "FileHashIndex",
    "cache_limit",
    "entry_fields",
    "entry_key",
    "features_dir",
    "parse_size",
    "source_key",
]
