"""geneval's cache folder, and the one way geneval knows a file's content: its sha256.

``$GENEVAL_CACHE`` (default ``~/.cache/geneval``) holds what geneval keeps between runs:
downloaded reference statistics, the feature cache (:mod:`geneval.feature_cache`) and the
**file-hash index** (``$GENEVAL_CACHE/features/files.sqlite``), which remembers the sha256 of
files geneval has read so that a 100 MB weights file or a folder of 50 000 images is hashed
once.

Every file whose content identifies something — extractor weights (the ``weights_sha256`` of
reports and statistics files), the files of a source (the feature cache's content key, the
agreement of the ranks of a sharded run) and statistics files — is hashed by
:func:`file_sha256` / :meth:`FileHashIndex.hashes`, and nothing else. A remembered hash is
used only while the file's **identity** (:func:`file_identity`: size, mtime_ns, ctime_ns,
inode and device) is unchanged. The change time cannot be set by a program (``cp -p``,
``rsync -t``, ``tar`` and cache restores set the modification time only), and replacing or
rewriting a file moves it, so a same-size replacement with the old modification time is
hashed again. A file whose mtime or ctime lies within :data:`RACY_NS` of the moment it was
hashed, or whose identity changed while it was being hashed, is not recorded: a rewrite
within one timestamp tick cannot hide either. The index only saves work: a missing, locked,
read-only or corrupt index means hashing again, never a wrong hash.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from geneval.errors import InputError
from geneval.text import quote

CACHE_ENV = "GENEVAL_CACHE"
#: Folder below ``$GENEVAL_CACHE`` holding the feature cache and the file-hash index.
FEATURES_DIR = "features"
#: The file-hash index's name (SQLite).
INDEX_FILE = "files.sqlite"
#: A file whose mtime or ctime is this close to the hashing time is not recorded.
RACY_NS = 2_000_000_000
#: The columns of a file's identity, in the order of :func:`file_identity`.
IDENTITY = ("size", "mtime_ns", "ctime_ns", "inode", "device")

Identity = tuple[int, int, int, int, int]


def _int64(value: int) -> int:
    """``value`` as SQLite's signed 64-bit integer (inode and device numbers may be unsigned)."""
    value %= 1 << 64
    return value - (1 << 64) if value >= 1 << 63 else value


def geneval_cache_dir() -> Path:
    """geneval's cache folder: ``$GENEVAL_CACHE``, else ``~/.cache/geneval``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geneval"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks (no index: always read)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_identity(stat: os.stat_result) -> Identity:
    """What must be unchanged for a remembered hash to stay valid: size, mtime_ns, ctime_ns,
    inode and device."""
    return (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino, stat.st_dev)


def _cannot_read(what: str, path: Path, exc: OSError) -> InputError:
    return InputError(f"cannot read {what} {quote(path)}: {exc.strerror or exc}".splitlines()[0])


class FileHashIndex:
    """sha256 of files, remembered by resolved path and :func:`file_identity` (SQLite).

    The index only saves work: a missing, locked or unreadable index means hashing again.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def _connect(self, *, create: bool = False) -> sqlite3.Connection:
        if create:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=60)
        columns = [row[1] for row in conn.execute("PRAGMA table_info(files)")]
        if columns and columns != ["path", *IDENTITY, "sha256"]:
            conn.execute("DROP TABLE files")  # an older layout: forget it, hash again
        conn.execute(
            "CREATE TABLE IF NOT EXISTS files (path BLOB PRIMARY KEY, size INTEGER, "
            "mtime_ns INTEGER, ctime_ns INTEGER, inode INTEGER, device INTEGER, sha256 TEXT)"
        )
        return conn

    def _known(self, keys: list[bytes]) -> dict[bytes, tuple]:
        if not self.path.is_file():
            return {}
        known: dict[bytes, tuple] = {}
        try:
            conn = self._connect()
            try:
                for start in range(0, len(keys), 500):
                    chunk = keys[start : start + 500]
                    rows = conn.execute(
                        f"SELECT path, {', '.join(IDENTITY)}, sha256 FROM files "
                        f"WHERE path IN ({','.join('?' * len(chunk))})",
                        chunk,
                    )
                    known.update({row[0]: tuple(row[1:]) for row in rows})
            finally:
                conn.close()
        except (sqlite3.Error, OSError):
            return {}
        return known

    def _record(self, rows: list[tuple]) -> None:
        try:
            conn = self._connect(create=True)
            try:
                with conn:
                    conn.executemany(
                        f"INSERT OR REPLACE INTO files VALUES ({', '.join('?' * 7)})", rows
                    )
            finally:
                conn.close()
        except (sqlite3.Error, OSError):
            pass  # only costs re-hashing next time

    def hashes(
        self, paths: Sequence[str | os.PathLike[str]], *, threads: int = 4, what: str = "image"
    ) -> list[str]:
        """The sha256 of each file of ``paths``, in order. A remembered hash is used only
        while the file's identity is unchanged; an unreadable file is an
        :class:`~geneval.errors.InputError` naming it (as ``what``)."""
        paths = [Path(p) for p in paths]
        keys, stats = [], []
        for path in paths:
            try:
                stat = os.stat(path)
            except OSError as exc:
                raise _cannot_read(what, path, exc) from None
            keys.append(os.fsencode(os.path.realpath(path)))  # bytes: any file name
            stats.append(tuple(_int64(v) for v in file_identity(stat)))
        known = self._known(keys)
        out: list[str | None] = []
        todo = []
        for i, (key, stat) in enumerate(zip(keys, stats, strict=True)):
            row = known.get(key)
            if row is not None and tuple(row[:5]) == stat and isinstance(row[5], str):
                out.append(row[5])
            else:
                out.append(None)
                todo.append(i)

        def hash_one(i: int) -> str:
            try:
                return sha256_of(paths[i])
            except OSError as exc:
                raise _cannot_read(what, paths[i], exc) from None

        if todo:
            now = time.time_ns()
            with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:  # hashlib frees the GIL
                for i, sha in zip(todo, pool.map(hash_one, todo), strict=True):
                    out[i] = sha
            fresh = []
            for i in todo:
                size, mtime, ctime = stats[i][:3]
                if now - mtime <= RACY_NS or now - ctime <= RACY_NS:
                    continue  # changed just now: a same-size rewrite could keep this identity
                try:
                    again = tuple(_int64(v) for v in file_identity(os.stat(paths[i])))
                    unchanged = again == stats[i]
                except OSError:
                    unchanged = False
                if unchanged:  # not modified while it was being hashed
                    fresh.append((keys[i], *stats[i], out[i]))
            if fresh:
                self._record(fresh)
        return [sha for sha in out if sha is not None]


def file_index() -> FileHashIndex:
    """The file-hash index of ``$GENEVAL_CACHE`` (shared by weights, sources, statistics)."""
    return FileHashIndex(geneval_cache_dir() / FEATURES_DIR / INDEX_FILE)


def file_sha256(path: str | os.PathLike[str], *, what: str = "file") -> str:
    """sha256 of a file's bytes, remembered in the file-hash index while the file's identity
    (size, mtime, ctime, inode, device) is unchanged. An unreadable file is an
    :class:`~geneval.errors.InputError` naming it."""
    return file_index().hashes([path], threads=1, what=what)[0]
