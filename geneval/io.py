"""Safe file output: atomic, non-clobbering, regular files only, all outputs or none.

The rules every command follows:

* An output path must be absent or an existing **regular file**. A directory, a device
  (``/dev/null``), a FIFO, a socket or a **symbolic link** (dangling or not) is refused, with
  or without ``--force``: geneval never writes through a link and never replaces anything but
  a regular file.
* An existing regular file is replaced only with ``--force``.
* Every output of a command is checked before any work starts (:func:`check_outputs`), and
  written only after everything succeeded (:func:`write_outputs`): each goes to a temporary file
  beside its destination and is renamed into place, so a failure leaves what was there.
* ``-`` names standard output (for text reports).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from geneval.errors import InputError

STDOUT = "-"

#: What a writer produces: text, bytes, or a function that writes the temporary path it gets.
Content = str | bytes | Callable[[Path], None]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"


def check_writable(path: str | os.PathLike[str], *, force: bool, what: str = "output") -> Path:
    """Check that ``path`` may be written: absent, or a regular file and ``force``.

    Anything else (a link, a directory, a device, a FIFO ...) is an :class:`InputError`, as
    is a missing parent folder.
    """
    path = Path(path)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise InputError(f"{what} {path}: {exc.strerror}") from None
    if mode is not None:
        if not stat.S_ISREG(mode):
            raise InputError(
                f"{what} {path} is {_kind(mode)}: geneval only writes new or regular files"
            )
        if not force:
            raise InputError(f"{what} {path} already exists (use --force to overwrite)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} {path}: folder {parent} does not exist")
    return path


def _same_destination(a: Path, b: Path) -> bool:
    return os.path.realpath(a.parent) == os.path.realpath(b.parent) and a.name == b.name


@dataclass(frozen=True)
class Output:
    """One planned output: where (a path, or ``-`` for stdout) and what it is (for messages)."""

    path: Path | str
    what: str

    @property
    def to_stdout(self) -> bool:
        return str(self.path) == STDOUT


def check_outputs(outputs: Sequence[Output], *, force: bool) -> None:
    """Check every planned output before any work: each writable, no two the same."""
    for i, out in enumerate(outputs):
        for other in outputs[:i]:
            if out.to_stdout and other.to_stdout:
                raise InputError(f"{other.what} and {out.what} both write to standard output")
            if (
                not out.to_stdout
                and not other.to_stdout
                and _same_destination(Path(out.path), Path(other.path))
            ):
                raise InputError(f"{other.what} and {out.what} are the same file {out.path}")
        if not out.to_stdout:
            check_writable(out.path, force=force, what=out.what)


@contextlib.contextmanager
def atomic_path(
    path: str | os.PathLike[str], *, force: bool, what: str = "output"
) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is moved onto ``path`` atomically.

    Without ``force`` the move refuses to replace a file that appeared meanwhile (a hard link
    is made, which fails if the name exists). On failure the temporary file is removed and
    ``path`` is left as it was.
    """
    path = check_writable(path, force=force, what=what)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent
    )
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
        _commit(tmp_path, path, force=force, what=what)
    finally:
        tmp_path.unlink(missing_ok=True)


def _commit(tmp: Path, path: Path, *, force: bool, what: str) -> None:
    """Move ``tmp`` onto ``path``: replace only a regular file, and only with ``force``."""
    check_writable(path, force=force, what=what)  # again: it may have changed meanwhile
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(
            f"{what} {path} appeared while writing (use --force to overwrite)"
        ) from None
    except OSError:  # file systems without hard links: a plain rename after the check above
        os.replace(tmp, path)


def _write_content(tmp: Path, data: Content) -> None:
    if isinstance(data, str):
        tmp.write_text(data, encoding="utf-8")
    elif isinstance(data, bytes):
        tmp.write_bytes(data)
    else:
        data(tmp)


def write_atomic(
    path: str | os.PathLike[str], data: Content, *, force: bool, what: str = "output"
) -> Path:
    """Write text, bytes, or whatever ``data(tmp_path)`` writes, atomically to ``path``."""
    with atomic_path(path, force=force, what=what) as tmp:
        _write_content(tmp, data)
    return Path(path)


def write_outputs(
    planned: Sequence[tuple[Output, Content]],
    *,
    force: bool,
    stdout: Callable[[str], None],
) -> None:
    """Write several outputs all or none: every file to a temporary file first, then all renamed.

    Outputs to ``-`` are handed to ``stdout`` (text only) after the files are in place.
    """
    check_outputs([out for out, _ in planned], force=force)
    staged: list[tuple[Output, Path]] = []
    try:
        for out, data in planned:
            if out.to_stdout:
                continue
            path = Path(out.path)
            fd, tmp = tempfile.mkstemp(
                prefix=f".{path.name}.", suffix=path.suffix or ".tmp", dir=path.parent
            )
            os.close(fd)
            staged.append((out, Path(tmp)))
            _write_content(Path(tmp), data)
            os.chmod(tmp, 0o666 & ~_umask())
        for out, tmp in staged:
            _commit(tmp, Path(out.path), force=force, what=out.what)
    finally:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)
    for out, data in planned:
        if out.to_stdout:
            stdout(data if isinstance(data, str) else bytes(data).decode("utf-8", "replace"))


# -- folders of images written by `geneval sample` ---------------------------------------------

#: The file that records what `geneval sample` wrote into a folder, so that ``--force`` can
#: replace exactly that and nothing else.
SAMPLES_MANIFEST = ".geneval-samples.json"


def _folder_manifest(folder: Path) -> list[str] | None:
    try:
        data = json.loads((folder / SAMPLES_MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) and "/" not in f for f in files):
        return None
    return files


def check_image_folder(folder: str | os.PathLike[str], *, force: bool, what: str) -> Path:
    """Check, before any work, that images may be written into ``folder``.

    It must be absent, empty, or (with ``force``) a folder that holds only what an earlier
    ``geneval sample`` wrote there (listed in its manifest). A link, a file, or a folder with
    anything else in it is refused, so that no user file is lost and no stale image is mixed
    into the next evaluation.
    """
    folder = Path(folder)
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        return folder
    if not stat.S_ISDIR(mode):
        raise InputError(f"{what} {folder} is {_kind(mode)}, not a folder")
    entries = sorted(os.listdir(folder))
    if not entries:
        return folder
    if not force:
        raise InputError(
            f"{what} {folder} is a non-empty folder (use --force to replace the samples an "
            "earlier geneval sample wrote there)"
        )
    ours = _folder_manifest(folder)
    if ours is None:
        raise InputError(
            f"{what} {folder} is a non-empty folder that geneval did not write: choose an "
            "empty or new folder"
        )
    foreign = [e for e in entries if e != SAMPLES_MANIFEST and e not in set(ours)]
    if foreign:
        raise InputError(
            f"{what} {folder} holds files geneval did not write (e.g. {foreign[0]}): choose "
            "an empty or new folder"
        )
    for name in ours:
        entry = folder / name
        if entry.is_symlink() or (entry.exists() and not entry.is_file()):
            raise InputError(f"{what} {folder}: {name} is not a regular file; not replacing it")
    return folder


def write_image_folder(
    folder: str | os.PathLike[str],
    files: Sequence[tuple[str, Callable[[Path], None]]],
    *,
    force: bool,
    what: str,
) -> None:
    """Write ``files`` (name, writer) into ``folder``, replacing an earlier sample run's files.

    The new files are written into a hidden staging folder first; only when all exist are the
    previous run's files (and only those) removed and the new ones moved in, then the manifest.
    """
    folder = check_image_folder(folder, force=force, what=what)
    folder.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".geneval-staging-", dir=folder))
    try:
        for name, writer in files:
            writer(staging / name)
            os.chmod(staging / name, 0o666 & ~_umask())
        for name in _folder_manifest(folder) or []:
            (folder / name).unlink(missing_ok=True)
        for name, _ in files:
            os.replace(staging / name, folder / name)
        manifest = json.dumps({"files": [name for name, _ in files]}, indent=1)
        write_atomic(folder / SAMPLES_MANIFEST, manifest + "\n", force=True, what="manifest")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
