"""Atomic, non-clobbering file output."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from geneval.errors import InputError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(path: str | os.PathLike[str], *, force: bool, what: str = "output") -> Path:
    """Refuse to overwrite an existing file unless ``force``; check the parent folder exists."""
    path = Path(path)
    if path.exists() and not force:
        raise InputError(f"{what} {path} already exists (use --force to overwrite)")
    if path.is_dir():
        raise InputError(f"{what} {path} is a directory")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: folder {parent} does not exist")
    return path


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, force: bool, what: str = "output"
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed onto ``path`` atomically.

    On failure the temporary file is removed and ``path`` is left as it was.
    """
    path = check_writable(path, force=force, what=what)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if not force and path.exists():
            raise InputError(f"{what} {path} appeared while writing (use --force to overwrite)")
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_atomic(
    path: str | os.PathLike[str],
    data: str | bytes | Callable[[Path], None],
    *,
    force: bool,
    what: str = "output",
) -> Path:
    """Write text, bytes, or whatever ``data(tmp_path)`` writes, atomically to ``path``."""
    with atomic_path(path, force=force, what=what) as tmp:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        elif isinstance(data, bytes):
            tmp.write_bytes(data)
        else:
            data(tmp)
    return Path(path)
