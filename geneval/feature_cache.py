"""The content-addressed feature cache: extract a folder, an array or a dataset once.

A run that extracts features of a source stores what the pass gathered for each extractor —
the float64 running sums of the moments output and/or the float32 per-sample outputs — in
``$GENEVAL_CACHE/features``; a later run over the same bytes with the same extractor reads them
instead of running the extractor (``docs/contracts.md`` §12).

**The key** of an entry is the sha256 of

* the **content** of the source: for a folder, the sorted relative paths and the sha256 of
  every file's bytes (and the version of the image decoder); for an array file, the sha256 of
  the file; for an in-memory array or a dataset, the sha256 of the image array's bytes, dtype
  and shape — never a path or a modification time, so a fresh checkout of the same files hits;
* the **extractor**: its name, the sha256 of its weights, its resize convention, the output and
  what is kept of it (moments or per-sample rows), the precision mode and the device type;
* the geneval and torch versions.

Any change of a file's bytes, of the weights or of the convention changes the key: a miss,
never a stale hit. File sizes, modification and change times (and inodes) only let the cache
skip re-hashing a file it has hashed before (:class:`FileHashIndex`); a file modified within
two seconds of being hashed is not recorded, so a same-size rewrite within one timestamp tick
cannot hide.

**Entries** are ``.npz`` files written to a temporary name, flushed to disk and renamed into
place, so a reader sees a whole entry or none. Each records its key's fields and the sha256 of
its arrays; an entry that cannot be read, whose digest or fields do not match, is deleted and
recomputed, never used. Reading an entry refreshes its modification time; when the folder
outgrows its bound (``$GENEVAL_CACHE_SIZE``, default 10 GB) the least recently used entries are
deleted. ``geneval cache info`` and ``geneval cache clear`` manage the folder; ``--no-cache``
turns the cache off for one run.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sqlite3
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval import __version__
from geneval.cache import geneval_cache_dir
from geneval.distributed import DistContext, all_gather_objects, collectively, shard_range
from geneval.errors import InputError, warn
from geneval.stats import FeatureStatistics

#: Folder below ``$GENEVAL_CACHE`` that holds the entries and the file-hash index.
FEATURES_DIR = "features"
#: Environment variable bounding the folder's size: bytes, or a number with kB/MB/GB/TB/KiB/….
SIZE_ENV = "GENEVAL_CACHE_SIZE"
DEFAULT_LIMIT = 10 * 1000**3
#: Files per chunk of a folder's content hash: the key does not depend on how ranks shard.
HASH_CHUNK = 1024
#: Version of the key's fields and of the entry layout.
FORMAT = 1
INDEX_FILE = "files.sqlite"
ENTRY_SUFFIX = ".npz"
#: A file whose mtime or ctime is this close to the hashing time is not recorded.
RACY_NS = 2_000_000_000
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


def parse_size(text: str) -> int:
    """``"10GB"`` → 10 000 000 000; ``"512MiB"``, ``"1e9"`` and plain byte counts too."""
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]*)?(?:[eE][0-9]+)?)\s*([A-Za-z]*)\s*", text)
    unit = match.group(2).lower() if match else None
    if match is None or unit not in _UNITS:
        raise InputError(
            f"{SIZE_ENV}={text!r}: expected a size such as 10GB, 500MB or a number of bytes"
        )
    return int(float(match.group(1)) * _UNITS[unit])


def cache_limit() -> int:
    """The size bound of the feature cache, from ``$GENEVAL_CACHE_SIZE`` (default 10 GB)."""
    text = os.environ.get(SIZE_ENV)
    return DEFAULT_LIMIT if not text else parse_size(text)


def features_dir() -> Path:
    """``$GENEVAL_CACHE/features``."""
    return geneval_cache_dir() / FEATURES_DIR


def _human(size: float) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"


# -- hashing files -----------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class FileHashIndex:
    """sha256 of files, remembered by resolved path, size, mtime, ctime and inode (SQLite).

    The index only saves work: a missing, locked or unreadable index means hashing again.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=60)
        conn.execute(
            "CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, sha256 TEXT)"
        )
        return conn

    def hashes(self, paths: list[Path], *, threads: int = 4) -> list[str]:
        """The sha256 of each file of ``paths``, in order (an unreadable file is an
        :class:`InputError` naming it)."""
        keys, stats = [], []
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError as exc:
                raise InputError(f"cannot read image {path}: {exc.strerror}") from None
            keys.append(os.fsencode(os.path.realpath(path)))  # bytes: any file name
            stats.append((stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino))
        known: dict[bytes, tuple[int, int, int, int, str]] = {}
        try:
            with self._connect() as conn:
                for start in range(0, len(keys), 500):
                    chunk = keys[start : start + 500]
                    rows = conn.execute(
                        "SELECT path, size, mtime_ns, ctime_ns, inode, sha256 FROM files "
                        f"WHERE path IN ({','.join('?' * len(chunk))})",
                        chunk,
                    )
                    known.update({row[0]: tuple(row[1:]) for row in rows})
            conn.close()
        except sqlite3.Error:
            known = {}
        out: list[str | None] = []
        todo = []
        for i, (key, stat) in enumerate(zip(keys, stats, strict=True)):
            row = known.get(key)
            if row is not None and tuple(row[:4]) == stat:
                out.append(row[4])
            else:
                out.append(None)
                todo.append(i)

        def hash_one(i: int) -> str:
            try:
                return _sha256_file(paths[i])
            except OSError as exc:
                raise InputError(f"cannot read image {paths[i]}: {exc.strerror}") from None

        if todo:
            now = time.time_ns()
            with ThreadPoolExecutor(max_workers=threads) as pool:  # hashlib releases the GIL
                for i, sha in zip(todo, pool.map(hash_one, todo), strict=True):
                    out[i] = sha
            fresh = [
                (keys[i], *stats[i], out[i])
                for i in todo
                if now - stats[i][1] > RACY_NS and now - stats[i][2] > RACY_NS
            ]
            if fresh:
                try:
                    with self._connect() as conn:
                        conn.executemany(
                            "INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?)", fresh
                        )
                    conn.close()
                except sqlite3.Error:
                    pass  # only costs re-hashing next time
        return [sha for sha in out if sha is not None]


# -- content keys of sources -------------------------------------------------------------------


def _array_digest(array: np.ndarray | torch.Tensor) -> str:
    """sha256 of an array's dtype, shape and bytes (C order)."""
    if isinstance(array, torch.Tensor):
        array = array.detach().cpu().contiguous().numpy()
    array = np.ascontiguousarray(array)
    digest = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


def _folder_chunks(source: Any, ctx: DistContext, index: FileHashIndex) -> list[str]:
    """Digests of this rank's whole chunks of :data:`HASH_CHUNK` files, each the sha256 of
    its (relative path, file sha256) pairs."""
    start, stop = shard_range(source.count, HASH_CHUNK, ctx.rank, ctx.world_size)
    shas = index.hashes(source.paths[start:stop])
    names = source.names[start:stop]
    digests = []
    for first in range(0, len(shas), HASH_CHUNK):
        chunk = hashlib.sha256()
        pairs = zip(
            names[first : first + HASH_CHUNK], shas[first : first + HASH_CHUNK], strict=True
        )
        for name, sha in pairs:
            chunk.update(f"{name}\0{sha}\n".encode("utf-8", "surrogateescape"))
        digests.append(chunk.hexdigest())
    return digests


def _local_key_part(source: Any, ctx: DistContext, index: FileHashIndex) -> Any:
    """What this rank contributes to the content key (no collectives: see
    :func:`source_key`)."""
    from geneval.sources import ArraySource, FolderSource, TensorSource

    if isinstance(source, FolderSource):
        return _folder_chunks(source, ctx, index)
    if ctx.rank != 0:
        return None  # one file or one array: rank 0 hashes it
    if isinstance(source, ArraySource) and source.has_images:
        path = getattr(source, "path", None)
        if path is not None:
            return f"file:{index.hashes([Path(path)])[0]}"
        return f"array:{_array_digest(source.array)}"
    if isinstance(source, TensorSource):
        return f"tensor:{_array_digest(source.images)}"
    return None


def source_key(source: Any, ctx: DistContext, index: FileHashIndex) -> str | None:
    """The content key of a folder, array or dataset source (the same for any number of
    ranks); ``None`` for sources the cache does not serve (models, streamed batches).

    Collective in a sharded run: each rank hashes its share of a folder's files, and any
    rank's failure (an unreadable file) is raised on every rank.
    """
    import PIL

    from geneval.sources import FolderSource

    mine = collectively(ctx, lambda: _local_key_part(source, ctx, index))
    parts = all_gather_objects(ctx, mine)
    if not isinstance(source, FolderSource):
        return parts[0]
    total = hashlib.sha256(f"folder|{source.count}|pillow {PIL.__version__}|".encode())
    for digest in (d for part in parts for d in part):
        total.update(digest.encode())
    return total.hexdigest()


# -- entries -----------------------------------------------------------------------------------


@dataclass
class CachedPart:
    """What one pass gathered of one extractor output: its running sums or its rows."""

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
            raise InputError(f"feature cache {root}: {exc.strerror or exc} ({hint})") from None
        if not root.is_dir():
            raise InputError(f"feature cache {root} is not a folder ({hint})")
        if not os.access(root, os.R_OK | os.W_OK | os.X_OK):
            raise InputError(f"feature cache {root} is not readable and writable ({hint})")
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
                stats = FeatureStatistics(int(arrays["sum"].shape[0]))
                stats.n = int(arrays["n"])
                stats.sum = torch.from_numpy(arrays["sum"].astype(np.float64))
                stats.sum_outer = torch.from_numpy(arrays["sum_outer"].astype(np.float64))
                if stats.n != count or stats.sum_outer.shape != (stats.dim, stats.dim):
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
                "sum": part.moments.sum.detach().cpu().numpy().astype(np.float64),
                "sum_outer": part.moments.sum_outer.detach().cpu().numpy().astype(np.float64),
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
            warn(f"feature cache {self.root}: could not store an entry ({exc.strerror or exc})")
            return
        self.evict()

    def _remove(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError as exc:
            warn(f"feature cache: could not delete {path} ({exc.strerror or exc})")

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
        f"entries: {info['entries']}, {_human(info['bytes'])} of {_human(info['limit'])} "
        f"(set {SIZE_ENV} to change the bound)",
        f"file-hash index: {_human(info['index_bytes'])}",
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
