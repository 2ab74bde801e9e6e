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
* "Checked" means fully: the name and the temporary name beside it fit the file system's
  limits (``NAME_MAX`` bytes per name, ``PATH_MAX`` in all), and a temporary file of exactly
  that name is created and removed in the destination's folder (so a read-only folder or file
  system is found before the work, not after it). Where the size of an output is known, the
  free space of its file system is checked too (:func:`check_free_space`).
* A write that fails because the disk is full (``ENOSPC``), a quota is exceeded, the file is
  too large or the file system went read-only is an :class:`InputError` naming the file
  (exit 2), never a plugin error; the temporary file is removed, nothing is left half written.
* SIGINT and SIGTERM during a write remove the temporary files (``finally``); the renames that
  put several outputs in place are not cut in half (:func:`geneval.interrupts.signals_deferred`).

Folders of images (``geneval sample -o FOLDER``) are written through a hidden staging folder
``.geneval-staging-*`` inside them and recorded in ``.geneval-samples.json``; ``--force``
replaces only files that are listed there *and* named as geneval names samples
(``000000.png`` ...), and removes staging folders that an interrupted run left behind.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from geneval.errors import InputError
from geneval.interrupts import signals_deferred
from geneval.text import quote, size_text

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


# -- names, temporary names, free space, write failures ----------------------------------------

#: Fallbacks where ``os.pathconf`` cannot tell (POSIX's usual limits).
NAME_MAX_DEFAULT = 255
PATH_MAX_DEFAULT = 4096
#: mkstemp's random part (8 characters) and the dots around it.
_RANDOM_CHARS = 8
#: A suffix longer than this is not kept in the temporary name (``.tmp`` instead).
_MAX_TMP_SUFFIX = 16


def _pathconf(folder: Path, name: str, default: int) -> int:
    try:
        value = os.pathconf(folder, name)
    except (OSError, ValueError, AttributeError):
        return default
    return value if value and value > 0 else default


def name_max(folder: Path) -> int:
    """The longest name, in bytes, that the file system of ``folder`` accepts."""
    return _pathconf(folder, "PC_NAME_MAX", NAME_MAX_DEFAULT)


def path_max(folder: Path) -> int:
    """The longest path, in bytes, that the system accepts for files in ``folder``."""
    return _pathconf(folder, "PC_PATH_MAX", PATH_MAX_DEFAULT)


def temporary_affixes(path: Path, limit: int = NAME_MAX_DEFAULT) -> tuple[str, str]:
    """The ``(prefix, suffix)`` of the temporary file written beside ``path``: ``.NAME.``, the
    random part, then ``path``'s suffix; ``NAME`` is shortened (at a byte boundary) so that the
    whole temporary name fits ``limit`` bytes whatever the length of ``path``'s name."""
    suffix = path.suffix or ".tmp"
    if len(os.fsencode(suffix)) > _MAX_TMP_SUFFIX:
        suffix = ".tmp"
    room = limit - _RANDOM_CHARS - len(os.fsencode(suffix)) - 2
    name = os.fsencode(path.name)[: max(room, 1)]
    return f".{os.fsdecode(name)}.", suffix


def _parent(path: Path) -> Path:
    return path.parent if str(path.parent) else Path(".")


def check_name(path: Path, *, what: str) -> None:
    """Refuse a ``path`` whose name, or whose temporary sibling's path, is longer than the
    file system accepts (``NAME_MAX`` bytes per name, ``PATH_MAX`` in all)."""
    parent = _parent(path)
    limit = name_max(parent)
    size = len(os.fsencode(path.name))
    if size > limit:
        raise InputError(
            f"{what} {quote(path)}: its name is {size} bytes long; the file system of "
            f"{quote(parent)} accepts at most {limit}"
        )
    prefix, suffix = temporary_affixes(path, limit)
    longest = len(os.fsencode(str(parent / f"{prefix}{'x' * _RANDOM_CHARS}{suffix}")))
    longest = max(longest, len(os.fsencode(str(path))))
    if longest >= path_max(parent):
        raise InputError(
            f"{what} {quote(path)}: the path (or the temporary file beside it) is {longest} "
            f"bytes long; the system accepts paths shorter than {path_max(parent)}"
        )


#: Errors of a write that are the output's fault (its disk, its quota, its file system).
_WRITE_ERRNOS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for its file system",
    errno.EROFS: "read-only file system",
    errno.ENAMETOOLONG: "file name too long",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
#: Libraries written in other languages report an OS error in their message (safetensors:
#: "I/O error: No space left on device (os error 28)").
_OS_ERROR_IN_TEXT = re.compile(r"os error (\d+)")


def write_failure(
    exc: BaseException, path: str | os.PathLike[str], *, what: str
) -> InputError | None:
    """The :class:`InputError` naming ``path`` that a failed write ``exc`` stands for (a full
    disk, a quota, a read-only file system ...), or ``None`` when ``exc`` is another error."""
    number = exc.errno if isinstance(exc, OSError) else None
    if number is None and isinstance(exc, Exception) and not isinstance(exc, InputError):
        found = _OS_ERROR_IN_TEXT.search(str(exc))
        number = int(found.group(1)) if found else None
    if number not in _WRITE_ERRNOS:
        return None
    return InputError(f"{_WRITE_ERRNOS[number]} writing {what} {quote(path)}")


def read_small_text(path: Path, *, shown: str, kind: str, limit: int) -> str:
    """The UTF-8 text of a small file a user names (a report, a gates file), read with one
    bounded buffer. ``shown`` names the file in messages (``report 'a.json'``), ``kind`` says
    what it should be (``a JSON report``). A directory, a device or FIFO, a missing or
    unreadable file, more than ``limit`` bytes, or bytes that are not UTF-8 are an
    :class:`InputError` naming it."""
    try:
        info = path.stat()
        if stat.S_ISDIR(info.st_mode):
            raise InputError(f"{shown} is a directory, not {kind}")
        if not stat.S_ISREG(info.st_mode):
            raise InputError(f"{shown} is not a regular file")
        if info.st_size > limit:
            raise InputError(f"{shown} holds {info.st_size} bytes, more than the {limit} allowed")
        with open(path, "rb") as handle:
            raw = handle.read(min(info.st_size, limit) + 1)  # no larger buffer
    except FileNotFoundError:
        raise InputError(f"{shown} does not exist") from None
    except OSError as exc:
        raise InputError(f"{shown}: {exc.strerror or type(exc).__name__}") from None
    if len(raw) > limit:
        raise InputError(f"{shown} holds more than the {limit} bytes allowed")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"{shown} is not UTF-8 text ({exc.reason}; expected {kind})") from None


def existing_folder(path: Path) -> Path:
    """The nearest existing folder that holds, or will hold, ``path`` (its file system)."""
    folder = _parent(path)
    while not folder.is_dir() and folder != folder.parent:
        folder = folder.parent
    return folder


@dataclass(frozen=True)
class FreeSpace:
    """What the file system holding a path has left: bytes, its block size and free inodes
    (``None`` where the system does not count them)."""

    bytes: int
    block: int
    inodes: int | None


def free_space(path: str | os.PathLike[str]) -> FreeSpace | None:
    """The free space of the file system that holds (or will hold) ``path``, as seen by an
    unprivileged writer (``statvfs``'s ``f_bavail``); ``None`` where it cannot be known."""
    folder = existing_folder(Path(path))
    try:
        fs = os.statvfs(folder)
    except AttributeError:  # no statvfs (Windows)
        try:
            return FreeSpace(shutil.disk_usage(folder).free, 4096, None)
        except (OSError, ValueError):
            return None
    except (OSError, ValueError):
        return None
    block = fs.f_frsize or fs.f_bsize or 4096
    return FreeSpace(fs.f_bavail * block, block, fs.f_favail if fs.f_files else None)


def check_free_space(path: str | os.PathLike[str], needed: int, *, what: str) -> None:
    """Refuse, before any work, an output of about ``needed`` bytes that the free space of
    ``path``'s file system cannot hold. Where the free space cannot be known, nothing is
    checked (the write itself then reports a full disk as :func:`write_failure` says)."""
    path = Path(path)
    space = free_space(path)
    if space is None:
        return
    free = space.bytes
    if needed > free:
        raise InputError(
            f"{what} {quote(path)} needs about {size_text(needed)} but its file system has "
            f"{size_text(free)} free"
        )


def _probe(path: Path, *, what: str) -> None:
    """Create and remove a temporary file of the very name :func:`atomic_path` will use, so
    that a folder that cannot be written is found before the work."""
    parent = _parent(path)
    prefix, suffix = temporary_affixes(path, name_max(parent))
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    except OSError as exc:
        raise InputError(
            f"{what} {quote(path)}: cannot write in folder {quote(parent)} ({exc.strerror})"
        ) from None
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(tmp)


def check_writable(
    path: str | os.PathLike[str], *, force: bool, what: str = "output", probe: bool = True
) -> Path:
    """Check that ``path`` may be written: absent, or a regular file and ``force``.

    Anything else (a link, a directory, a device, a FIFO ...) is an :class:`InputError`, as
    is a missing parent folder, a name (or temporary name) too long for the file system
    (:func:`check_name`) and, with ``probe``, a folder in which no file can be created.
    """
    path = Path(path)
    check_name(path, what=what)
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise InputError(f"{what} {quote(path)}: {exc.strerror}") from None
    if mode is not None:
        if not stat.S_ISREG(mode):
            raise InputError(
                f"{what} {quote(path)} is {_kind(mode)}: geneval only writes new or regular files"
            )
        if not force:
            raise InputError(f"{what} {quote(path)} already exists (use --force to overwrite)")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise InputError(f"{what} {quote(path)}: folder {quote(parent)} does not exist")
    if probe:
        _probe(path, what=what)
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
                raise InputError(f"{other.what} and {out.what} are the same file {quote(out.path)}")
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
    path = check_writable(path, force=force, what=what, probe=False)
    tmp_path = _temporary(path, what=what)
    try:
        try:
            yield tmp_path
            os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual mode
            with signals_deferred():
                _commit(tmp_path, path, force=force, what=what)
        except Exception as exc:
            failure = write_failure(exc, path, what=what)
            if failure is None:
                raise
            raise failure from None
    finally:
        tmp_path.unlink(missing_ok=True)


def _temporary(path: Path, *, what: str) -> Path:
    """A new, empty temporary file beside ``path`` (named by :func:`temporary_affixes`)."""
    parent = _parent(path)
    prefix, suffix = temporary_affixes(path, name_max(parent))
    try:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=parent)
    except OSError as exc:
        failure = write_failure(exc, path, what=what)
        if failure is None:
            raise InputError(
                f"{what} {quote(path)}: cannot write in folder {quote(parent)} ({exc.strerror})"
            ) from None
        raise failure from None
    os.close(fd)
    return Path(tmp)


def _commit(tmp: Path, path: Path, *, force: bool, what: str) -> None:
    """Move ``tmp`` onto ``path``: replace only a regular file, and only with ``force``."""
    check_writable(path, force=force, what=what, probe=False)  # again: it may have changed
    if force:
        os.replace(tmp, path)
        return
    try:
        os.link(tmp, path)
    except FileExistsError:
        raise InputError(
            f"{what} {quote(path)} appeared while writing (use --force to overwrite)"
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

    Outputs to ``-`` are handed to ``stdout`` (text only) after the files are in place. The
    sizes of text and bytes are known here: outputs that together need more than their file
    system has free are refused before any is written; a full disk met while writing is an
    :class:`InputError` naming the file (:func:`write_failure`), and nothing is left behind.
    """
    check_outputs([out for out, _ in planned], force=force)
    _check_total_space(planned)
    staged: list[tuple[Output, Path]] = []
    try:
        for out, data in planned:
            if out.to_stdout:
                continue
            path = Path(out.path)
            tmp = _temporary(path, what=out.what)
            staged.append((out, tmp))
            try:
                _write_content(tmp, data)
                os.chmod(tmp, 0o666 & ~_umask())
            except Exception as exc:
                failure = write_failure(exc, path, what=out.what)
                if failure is None:
                    raise
                raise failure from None
        with signals_deferred():  # all renamed, or (on an error) none but those before it
            for out, tmp in staged:
                try:
                    _commit(tmp, Path(out.path), force=force, what=out.what)
                except OSError as exc:
                    failure = write_failure(exc, out.path, what=out.what)
                    if failure is None:
                        raise
                    raise failure from None
    finally:
        for _, tmp in staged:
            tmp.unlink(missing_ok=True)
    for out, data in planned:
        if out.to_stdout:
            stdout(data if isinstance(data, str) else bytes(data).decode("utf-8", "replace"))


def _check_total_space(planned: Sequence[tuple[Output, Content]]) -> None:
    """Refuse outputs of known size that together exceed the free space of their file system."""
    needed: dict[int, tuple[int, list[Output]]] = {}
    for out, data in planned:
        if out.to_stdout or not isinstance(data, str | bytes):
            continue
        size = len(data.encode("utf-8", "surrogateescape") if isinstance(data, str) else data)
        try:
            device = os.stat(_parent(Path(out.path))).st_dev
        except OSError:
            continue
        total, outs = needed.get(device, (0, []))
        needed[device] = (total + size, [*outs, out])
    for total, outs in needed.values():
        if len(outs) == 1:
            check_free_space(outs[0].path, total, what=outs[0].what)
            continue
        space = free_space(outs[0].path)
        if space is None:
            continue
        free = space.bytes
        if total > free:
            names = " and ".join(f"{out.what} {quote(out.path)}" for out in outs)
            raise InputError(
                f"{names} need about {size_text(total)} together but their file system has "
                f"{size_text(free)} free"
            )


# -- folders of images written by `geneval sample` ---------------------------------------------

#: The file that records what `geneval sample` wrote into a folder, so that ``--force`` can
#: replace exactly that and nothing else.
SAMPLES_MANIFEST = ".geneval-samples.json"


#: The names `geneval sample` gives the images it writes into a folder (``000000.png`` ...):
#: ``--force`` removes nothing else, whatever a manifest lists.
SAMPLE_NAME = re.compile(r"[0-9]{6,}\.png")
#: The hidden folder inside ``-o FOLDER`` where images are written before they are moved in.
STAGING_PREFIX = ".geneval-staging-"
_STAGING_NAME = re.compile(re.escape(STAGING_PREFIX) + r"[A-Za-z0-9_]+")
#: A larger manifest is not one geneval wrote (a million names take about 20 MB).
MAX_MANIFEST_BYTES = 64 * 2**20


def sample_file_name(index: int, count: int) -> str:
    """The name of image ``index`` of ``count`` in a samples folder: at least 6 digits, so that
    sorting by name keeps the samples' order."""
    width = max(6, len(str(max(count - 1, 0))))
    return f"{index:0{width}d}.png"


def _lstat_mode(path: Path) -> int | None:
    try:
        return os.lstat(path).st_mode
    except OSError:
        return None


def _is_regular(path: Path) -> bool:
    mode = _lstat_mode(path)
    return mode is not None and stat.S_ISREG(mode)


def _folder_manifest(folder: Path) -> list[str] | None:
    """The sample files the manifest of ``folder`` lists, or ``None`` when it has no readable
    manifest (a missing one, a link, a directory, invalid JSON). Listed names that are not
    names geneval gives samples (:data:`SAMPLE_NAME`) are dropped: a manifest cannot make
    ``--force`` delete a user's file."""
    manifest = folder / SAMPLES_MANIFEST
    if not _is_regular(manifest):
        return None
    try:
        if manifest.stat().st_size > MAX_MANIFEST_BYTES:
            return None
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # (deeply nested JSON: RecursionError)
        return None
    files = data.get("files") if isinstance(data, dict) else None
    if not isinstance(files, list):
        return None
    return [f for f in files if isinstance(f, str) and SAMPLE_NAME.fullmatch(f)]


def _is_left_staging(path: Path) -> bool:
    """Whether ``path`` is a staging folder that an interrupted ``geneval sample`` left: named
    ``.geneval-staging-*``, a real folder (not a link), holding only sample images."""
    mode = _lstat_mode(path)
    if mode is None or not stat.S_ISDIR(mode) or not _STAGING_NAME.fullmatch(path.name):
        return False
    try:
        entries = os.listdir(path)
    except OSError:
        return False
    return all(SAMPLE_NAME.fullmatch(e) and _is_regular(path / e) for e in entries)


def _check_folder_name(folder: Path, *, what: str) -> None:
    """The folder's name, and the longest path written inside it, fit the file system."""
    check_name(folder, what=what)
    inner = folder / f"{STAGING_PREFIX}{'x' * _RANDOM_CHARS}" / f"{'0' * 12}.png"
    size = len(os.fsencode(str(inner)))
    limit = path_max(existing_folder(inner))
    if size >= limit:
        raise InputError(
            f"{what} {quote(folder)}: the paths of the files written into it would be {size} "
            f"bytes long; the system accepts paths shorter than {limit}"
        )


def check_image_folder(
    folder: str | os.PathLike[str], *, force: bool, what: str, needed: int | None = None
) -> Path:
    """Check, before any work, that images may be written into ``folder``.

    It must be absent, empty, or (with ``force``) a folder that holds only what an earlier
    ``geneval sample`` wrote there: the manifest, the sample images it lists, and staging
    folders an interrupted run left behind. A link, a file, or a folder with anything else in
    it is refused, so that no user file is lost and no stale image is mixed into the next
    evaluation. The folder (or the folder it will be created in) must be writable, its paths
    must fit the file system, and ``needed`` bytes, where given, must be free on it.
    """
    folder = Path(folder)
    _check_folder_name(folder, what=what)
    try:
        mode = os.lstat(folder).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise InputError(f"{what} {quote(folder)}: {exc.strerror}") from None
    if mode is None:
        ancestor = existing_folder(folder)
        if not os.access(ancestor, os.W_OK | os.X_OK):
            raise InputError(
                f"{what} {quote(folder)}: cannot create it in folder {quote(ancestor)} "
                "(permission denied)"
            )
    else:
        _check_folder_contents(folder, mode, force=force, what=what)
    if needed is not None:
        check_free_space(folder / SAMPLES_MANIFEST, needed, what=what)
    return folder


def _check_folder_contents(folder: Path, mode: int, *, force: bool, what: str) -> None:
    if not stat.S_ISDIR(mode):
        raise InputError(f"{what} {quote(folder)} is {_kind(mode)}, not a folder")
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise InputError(f"{what} {quote(folder)}: {exc.strerror}") from None
    listed = _folder_manifest(folder)
    ours = set(listed or ())
    staging = [e for e in entries if _is_left_staging(folder / e)]
    foreign = [
        e
        for e in entries
        if e not in ours and e not in staging and not (e == SAMPLES_MANIFEST and listed is not None)
    ]
    if foreign:
        if listed is None and not staging:
            raise InputError(
                f"{what} {quote(folder)} is a non-empty folder that geneval did not write "
                f"(e.g. {quote(foreign[0])}): choose an empty or new folder"
            )
        raise InputError(
            f"{what} {quote(folder)} holds files geneval did not write (e.g. "
            f"{quote(foreign[0])}): choose an empty or new folder"
        )
    if entries and not force:
        if staging:
            raise InputError(
                f"{what} {quote(folder)} holds {quote(staging[0])}, the unfinished output of an "
                "interrupted geneval sample (use --force to remove it and replace the samples "
                "geneval wrote there)"
            )
        raise InputError(
            f"{what} {quote(folder)} is a non-empty folder (use --force to replace the samples "
            "an earlier geneval sample wrote there)"
        )
    for name in sorted(ours & set(entries)):
        if not _is_regular(folder / name):
            raise InputError(
                f"{what} {quote(folder)}: {quote(name)} is not a regular file; not replacing it"
            )
    try:  # the folder must take new files (a read-only mount, a folder without write access)
        os.rmdir(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        raise InputError(f"{what} {quote(folder)}: cannot write in it ({exc.strerror})") from None


def _make_folder(folder: Path) -> list[Path]:
    """Create ``folder`` and its missing parents; returns those created, deepest first."""
    missing = []
    current = folder
    while _lstat_mode(current) is None and current != current.parent:
        missing.append(current)
        current = current.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def _write_manifest(folder: Path, names: Sequence[str]) -> None:
    manifest = json.dumps({"files": list(names)}, indent=1)
    write_atomic(folder / SAMPLES_MANIFEST, manifest + "\n", force=True, what="manifest")


def write_image_folder(
    folder: str | os.PathLike[str],
    files: Iterable[tuple[str, Callable[[Path], None]]],
    *,
    force: bool,
    what: str,
    needed: int | None = None,
) -> list[str]:
    """Write ``files`` (name, writer) into ``folder``, replacing an earlier sample run's files;
    returns the names written. ``files`` may be a generator (images written as they are made).

    The new files are written into a hidden staging folder first; only when all exist are the
    previous run's files (listed in its manifest and named as samples, nothing else) removed
    and the new ones moved in, then the manifest written, then staging folders an interrupted
    run left behind removed. Every file in the folder is listed in its manifest at every
    moment, so a run killed at any point leaves a folder the next ``--force`` can replace. On
    an error or a signal the staging folder is removed, and a folder this call created too.
    """
    folder = check_image_folder(folder, force=force, what=what, needed=needed)
    created: list[Path] = []
    try:
        created = _make_folder(folder)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=folder))
    except OSError as exc:
        for path in created:
            with contextlib.suppress(OSError):
                path.rmdir()
        raise write_failure(exc, folder, what=what) or InputError(
            f"{what} {quote(folder)}: {exc.strerror}"
        ) from None
    names: list[str] = []
    seen: set[str] = set()
    done = False
    try:
        try:
            for name, writer in files:
                if not SAMPLE_NAME.fullmatch(name) or name in seen:
                    raise ValueError(f"{name!r} is not a sample file name, or given twice")
                writer(staging / name)
                os.chmod(staging / name, 0o666 & ~_umask())
                names.append(name)
                seen.add(name)
            with signals_deferred():
                previous = [n for n in _folder_manifest(folder) or [] if _is_regular(folder / n)]
                if previous:  # listed: the old files until removed, the new ones as they come
                    _write_manifest(folder, sorted(set(previous) | set(names)))
                for name in previous:
                    (folder / name).unlink(missing_ok=True)
                for name in names:
                    os.replace(staging / name, folder / name)
                _write_manifest(folder, names)
            done = True
        except Exception as exc:
            failure = write_failure(exc, folder, what=what)
            if failure is None:
                raise
            raise failure from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if not done:
            for path in created:
                with contextlib.suppress(OSError):
                    path.rmdir()
    with contextlib.suppress(OSError):
        for entry in sorted(os.listdir(folder)):
            if entry != staging.name and _is_left_staging(folder / entry):
                shutil.rmtree(folder / entry, ignore_errors=True)
    return names
