"""geneval's cache folder and content hashes of files.

``$GENEVAL_CACHE`` (default ``~/.cache/geneval``) holds what geneval keeps between runs:
downloaded reference statistics and the sha256 of large weights files. A file's sha256 is
recorded by its resolved path, size and modification time, so a 100 MB weights file is hashed
once; any change of size or mtime hashes it again.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from geneval.errors import InputError
from geneval.io import write_atomic

CACHE_ENV = "GENEVAL_CACHE"


def geneval_cache_dir() -> Path:
    """geneval's cache folder: ``$GENEVAL_CACHE``, else ``~/.cache/geneval``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "geneval"


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """sha256 of a file, remembered in ``$GENEVAL_CACHE/sha256.json`` by path, size and mtime."""
    path = Path(path).resolve()
    stat = path.stat()
    key = f"{path}|{stat.st_size}|{stat.st_mtime_ns}"
    cache_file = geneval_cache_dir() / "sha256.json"
    try:
        cache = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        cache = {}
    if not isinstance(cache, dict):
        cache = {}
    if isinstance(cache.get(key), str):
        return cache[key]
    sha = sha256_of(path)
    cache = {k: v for k, v in cache.items() if not k.startswith(f"{path}|")}
    cache[key] = sha
    try:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(cache_file, json.dumps(cache, indent=1, sort_keys=True), force=True)
    except (OSError, InputError):
        pass  # a read-only cache only costs re-hashing next time
    return sha
