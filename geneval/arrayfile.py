"""Reading the ``.npy`` and ``.npz`` files a user gives, within bounds (docs/contracts.md §4).

This is the one error boundary of the array-file reader: whatever numpy, zipfile or zlib raise
on a corrupt, truncated or lying file becomes one :class:`InputError` naming the file
(:func:`reading`), and nothing is allocated for an array before its header has been checked
against what the file can hold:

* an ``.npy`` is memory-mapped (:func:`open_npy`): a header claiming more data than the file
  holds cannot be mapped, so it is refused without allocating;
* an ``.npz`` member's header is read first (:func:`npz_members`); a member is refused when its
  header claims more bytes than the member holds, when the member claims more than its
  compressed data can expand to (deflate expands at most :data:`DEFLATE_MAX_RATIO`:1) or
  than the file holds, and the members read together must fit in the machine's memory
  (:func:`memory_bound`), as an ``.npz`` is read whole. Only then is each member read, in
  chunks, into one array of exactly the size its header claims (:func:`read_member`).

It is the one reader of ``.npz`` files: sample arrays (:mod:`geneval.sources`) and statistics
files (:mod:`geneval.feature_stats`) alike. A reader that wants only some members names them
(``keys`` of :func:`npz_members`); the others are ignored and their data never read, but one
whose header declares Python objects (a pickle) is refused all the same.
"""

from __future__ import annotations

import contextlib
import math
import os
import struct
import tokenize
import zipfile
import zlib
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geneval.errors import InputError

#: Deflate cannot expand data by more than 1032:1; a member claiming more is not real data.
DEFLATE_MAX_RATIO = 1032
#: Bytes read from a member at a time.
_CHUNK = 1 << 20

#: What reading a file that is not a readable ``.npy``/``.npz`` raises (numpy's header
#: parser, zipfile, zlib): turned into one :class:`InputError` by :func:`reading`.
UNREADABLE = (
    OSError,
    EOFError,
    ValueError,  # numpy's header parser, mmap of a file shorter than its header claims
    TypeError,  # numpy: a header whose descr is not a dtype
    KeyError,
    SyntaxError,
    tokenize.TokenError,  # numpy's parser of an old-style header
    zipfile.BadZipFile,
    zlib.error,
    NotImplementedError,  # zipfile: an unsupported compression method
    RuntimeError,  # zipfile: an encrypted member; RecursionError of a nested header
    OverflowError,
    struct.error,
)


@contextlib.contextmanager
def reading(what: str, *, kind: str | None = None) -> Iterator[None]:
    """The error boundary of an array-file reader: whatever numpy, zipfile or zlib raise on a
    corrupt file becomes one :class:`InputError`, ``cannot read WHAT: REASON``, or, given the
    ``kind`` of file expected (``".npz"``), ``WHAT is not a readable KIND (REASON)``."""
    try:
        yield
    except InputError:
        raise
    except UNREADABLE as exc:
        lines = str(exc).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        if kind is not None:
            raise InputError(f"{what} is not a readable {kind} ({reason})") from None
        raise InputError(f"cannot read {what}: {reason}") from None


def memory_bound() -> int:
    """The most bytes the members of one ``.npz`` may claim together: this machine's physical
    memory (an ``.npz`` is read whole; an ``.npy`` is memory-mapped and has no such bound)."""
    try:
        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (AttributeError, OSError, ValueError):  # pragma: no cover - not POSIX
        return 64 << 30


def _describe_bytes(n: int) -> str:
    return f"{n / 2**30:.1f} GiB" if n >= 2**30 else f"{n} bytes"


@dataclass(frozen=True)
class Member:
    """One ``.npy`` member of an ``.npz``, described by its header alone."""

    key: str
    info: zipfile.ZipInfo
    shape: tuple[int, ...]
    fortran: bool
    dtype: np.dtype
    offset: int  # where the data begins in the member

    @property
    def nbytes(self) -> int:
        """The bytes the header claims (exact: Python integers, no overflow)."""
        return math.prod(self.shape) * self.dtype.itemsize

    def describe(self) -> str:
        """``shape (…), dtype …`` as the header claims them."""
        return f"shape {self.shape}, dtype {self.dtype}"


try:  # version 3.0 headers (UTF-8 field names) have no public reader
    from numpy.lib._format_impl import _read_array_header
except ImportError:  # pragma: no cover - numpy < 2
    _read_array_header = getattr(np.lib.format, "_read_array_header", None)


def _read_header(handle: Any, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """An ``.npy`` header read from ``handle`` as it stands (Python objects included): shape,
    Fortran order, dtype and where the data begins. Not an ``.npy`` or another format version:
    an :class:`InputError` naming ``name``."""
    magic = handle.read(6)
    if magic != b"\x93NUMPY":
        raise InputError(f"{name} is not an .npy array (no .npy magic string)")
    version = tuple(handle.read(2))
    if version == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
    elif version == (2, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
    elif version == (3, 0) and _read_array_header is not None:
        shape, fortran, dtype = _read_array_header(handle, version)
    else:
        raise InputError(f"{name} has .npy format version {version}")
    return tuple(int(s) for s in shape), bool(fortran), np.dtype(dtype), handle.tell()


def _refuse_objects(dtype: np.dtype, name: str) -> None:
    """Python objects (a pickle) are never loaded: an :class:`InputError` naming ``name``."""
    if dtype.hasobject:
        raise InputError(f"{name} holds Python objects (dtype {dtype}), which are never unpickled")


def _parse_header(handle: Any, name: str) -> tuple[tuple[int, ...], bool, np.dtype, int]:
    """An ``.npy`` header read from ``handle``: shape, Fortran order, dtype and where the data
    begins. Not an ``.npy``, another format version, or Python objects: an
    :class:`InputError` naming ``name``."""
    shape, fortran, dtype, offset = _read_header(handle, name)
    _refuse_objects(dtype, name)
    return shape, fortran, dtype, offset


def _header(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, what: str) -> Member:
    with archive.open(info) as handle:
        shape, fortran, dtype, offset = _parse_header(handle, f"{what}: member {key!r}")
    return Member(key, info, shape, fortran, dtype, offset)


def _ignore(archive: zipfile.ZipFile, info: zipfile.ZipInfo, key: str, what: str) -> None:
    """A member the reader does not want: its data is never read, and its header only to
    refuse one that declares Python objects (a pickle), which nothing may load. A header that
    cannot be read is left alone with the rest of the member: no reader would unpickle it."""
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        return
    name = f"{what}: member {key!r}"
    try:
        with archive.open(info) as handle:
            dtype = _read_header(handle, name)[2]
    except (InputError, *UNREADABLE):
        return
    _refuse_objects(dtype, name)


def npz_members(
    archive: zipfile.ZipFile, path: Path, what: str, keys: Collection[str] | None = None
) -> dict[str, Member]:
    """The members of an open ``.npz`` (by key: the name without ``.npy``), each described by
    its header, every claim checked before any data is read (see the module docstring).

    ``keys`` names the members wanted (all when ``None``): only those are described, checked
    and counted against the memory bound; any other member is ignored, its data never read
    (:func:`_ignore`: only a header declaring Python objects is refused). A header that claims
    more than the file can hold is an :class:`InputError` naming ``what`` and the member.
    """
    size = path.stat().st_size
    members: dict[str, Member] = {}
    for info in archive.infolist():
        key = info.filename.removesuffix(".npy")
        if info.is_dir():
            continue
        if keys is not None and key not in keys:
            _ignore(archive, info, key, what)
            continue
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise InputError(
                f"{what}: member {key!r} uses compression method {info.compress_type} "
                "(numpy writes stored or deflated members)"
            )
        can_hold = (
            info.compress_size
            if info.compress_type == zipfile.ZIP_STORED
            else DEFLATE_MAX_RATIO * info.compress_size + 4096
        )
        if info.compress_size > size or info.file_size > can_hold:
            raise InputError(
                f"{what}: member {key!r} claims {info.file_size} bytes, more than the file "
                "holds (truncated or corrupt)"
            )
        member = _header(archive, info, key, what)
        if member.nbytes > info.file_size - member.offset:
            raise InputError(
                f"{what}: member {key!r} claims {member.describe()} ({member.nbytes} bytes), "
                "more than the file holds (truncated or corrupt)"
            )
        members[key] = member
    total, bound = sum(m.nbytes for m in members.values()), memory_bound()
    if total > bound:
        raise InputError(
            f"{what}: its arrays need {_describe_bytes(total)} in memory, more than this "
            f"machine's {_describe_bytes(bound)} (an .npz is read whole; save the images as "
            ".npy, which is read batch by batch)"
        )
    return members


def read_member(archive: zipfile.ZipFile, member: Member) -> np.ndarray:
    """A member's data, read in chunks into one array of exactly the size its (checked)
    header claims; writable, in the dtype and byte order the file stores."""
    buffer = np.empty(member.nbytes, dtype=np.uint8)
    with archive.open(member.info) as handle:
        handle.read(member.offset)
        done = 0
        while done < member.nbytes:
            chunk = handle.read(min(_CHUNK, member.nbytes - done))
            if not chunk:
                raise EOFError(
                    f"member {member.key!r} ends after {done} of its {member.nbytes} bytes"
                )
            buffer[done : done + len(chunk)] = np.frombuffer(chunk, dtype=np.uint8)
            done += len(chunk)
        while handle.read(_CHUNK):  # to the end, so that zipfile checks the member's CRC
            pass
    if member.dtype.itemsize == 0:
        return np.zeros(member.shape, dtype=member.dtype)
    flat = buffer.view(member.dtype)
    if member.fortran:
        return flat.reshape(member.shape[::-1]).T
    return flat.reshape(member.shape)


def open_npy(path: Path, what: str) -> np.ndarray:
    """An ``.npy`` file memory-mapped read-only (never read whole). Its header is checked
    first (exact sizes, in Python integers): one that claims more data than the file holds is
    an :class:`InputError` naming ``what``, as is a file that is not an ``.npy`` (a zip or a
    pickle under that name) or holds Python objects."""
    with open(path, "rb") as handle:
        shape, _, dtype, offset = _parse_header(handle, what)
    claimed = math.prod(shape) * dtype.itemsize
    if claimed > path.stat().st_size - offset:
        raise InputError(
            f"{what} claims shape {shape}, dtype {dtype} ({claimed} bytes), more than the "
            "file holds (truncated or corrupt)"
        )
    if claimed == 0:  # nothing to map (mmap refuses an empty range)
        return np.zeros(shape, dtype=dtype)
    return np.lib.format.open_memmap(path, mode="r")


__all__ = [
    "DEFLATE_MAX_RATIO",
    "UNREADABLE",
    "Member",
    "memory_bound",
    "npz_members",
    "open_npy",
    "read_member",
    "reading",
]
