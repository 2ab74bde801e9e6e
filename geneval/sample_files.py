"""What ``geneval sample`` writes, streamed: one block of uint8 samples in memory at a time.

``geneval sample -n N`` draws N samples block by block (:class:`geneval.sources.ModelSource`)
and writes each block as soon as it is drawn: quantised to uint8 at once (never the whole run
in float32), into a preallocated ``images`` member of an ``.npz`` (the bytes ``np.savez``
would write) or as PNG files in the staging folder of
:func:`geneval.io.write_image_folder`. The output's size is checked before any sample is
drawn (:func:`check_sample_output`): against :data:`MAX_SAMPLE_BYTES`, at most
:data:`MAX_FOLDER_FILES` files for a folder, and the free space (and free inodes) of the
file system that will hold it.
"""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval.errors import InputError
from geneval.io import existing_folder, free_space
from geneval.text import quote, size_text

#: The largest output one ``geneval sample`` may write: 1 TiB of uint8 pixels.
MAX_SAMPLE_BYTES = 2**40
#: The most PNG files one ``geneval sample`` may write into a folder (its manifest lists each).
MAX_FOLDER_FILES = 1_000_000
#: Bytes a PNG file holds beyond its filtered pixels, at most: signature, IHDR, IDAT and IEND
#: chunks, and zlib's stored-block framing (5 bytes per 16 KiB block, bounding any input).
_PNG_OVERHEAD = 128


def planned_sample_bytes(
    n: int, image_shape: Sequence[int], *, folder: bool, block: int = 4096
) -> int:
    """An upper bound of the bytes ``n`` samples of ``image_shape`` (C, H, W) take on disk.

    An ``.npz``: the uint8 array, its header and the zip records. A folder: per PNG the
    filtered rows (one filter byte per row), zlib's framing and the chunks, rounded up to the
    file system's ``block`` (each file takes whole blocks), plus the manifest.
    """
    c, h, w = (int(v) for v in image_shape)
    if not folder:
        return n * c * h * w + 1024
    raw = h * (w * c + 1)
    per_file = raw + 5 * (raw // 16384 + 1) + _PNG_OVERHEAD
    per_file = -(-per_file // block) * block
    return n * per_file + n * 16 + block


def check_sample_output(
    output: Path, n: int, image_shape: Sequence[int], *, folder: bool, what: str
) -> None:
    """Refuse, before any sample is drawn, an output that would be too large to write.

    Over :data:`MAX_SAMPLE_BYTES`, over :data:`MAX_FOLDER_FILES` files for a folder, or
    more than the free space or free inodes of the file system that will hold ``output``
    (where the system reports them) is an :class:`InputError` naming ``output``.
    """
    shape = "×".join(str(int(v)) for v in image_shape)
    if folder and n > MAX_FOLDER_FILES:
        raise InputError(
            f"{what} {quote(output)}: {n} PNG files are more than the {MAX_FOLDER_FILES} geneval "
            "writes into one folder (write an .npz instead)"
        )
    home = existing_folder(output)
    space = free_space(output)
    block = space.block if space is not None else 4096
    free = space.bytes if space is not None else None
    inodes = space.inodes if space is not None else None
    need = planned_sample_bytes(n, image_shape, folder=folder, block=block)
    if need > MAX_SAMPLE_BYTES:
        raise InputError(
            f"{what} {quote(output)}: {n} samples of {shape} would take about "
            f"{size_text(need)}, above the {size_text(MAX_SAMPLE_BYTES)} one geneval sample writes"
        )
    if free is not None and need > free:
        raise InputError(
            f"{what} {quote(output)}: {n} samples of {shape} need up to {size_text(need)}, and "
            f"the file system of {quote(home)} has {size_text(free)} free"
        )
    if folder and inodes is not None and n + 3 > inodes:
        raise InputError(
            f"{what} {quote(output)}: {n} files need as many inodes, and the file system of "
            f"{quote(home)} has {inodes} free"
        )


def uint8_blocks(blocks: Iterable[torch.Tensor]) -> Iterator[np.ndarray]:
    """Each block of float samples in ``[0, 1]`` (N, C, H, W) as uint8 NHWC on the host.

    The rounding is that of an 8-bit image file, ``round(x · 255)``, block by block: the same
    numbers as converting the whole run at once.
    """
    for block in blocks:
        yield (block.cpu() * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def npz_writer(
    key: str,
    shape: tuple[int, ...],
    dtype: Any,
    chunks: Iterable[np.ndarray],
    *,
    extra: Mapping[str, np.ndarray] | None = None,
) -> Callable[[Path], None]:
    """A writer (for :func:`geneval.io.write_atomic`) of an ``.npz`` holding the array
    ``key`` and the small arrays of ``extra`` (the labels and captions carried with samples).

    The array ``key`` of ``shape`` and ``dtype`` is written from ``chunks`` (consecutive
    rows) as they come, so only one chunk is in memory; the file holds the bytes
    ``np.savez(file, key=array, **extra)`` would write (an uncompressed zip, one ``.npy``
    member per array). Chunks that do not add up to ``shape`` raise :class:`ValueError`.
    """
    dtype = np.dtype(dtype)
    row_shape = tuple(shape[1:])

    def write(tmp: Path) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": False,
            "shape": tuple(int(v) for v in shape),
        }
        rows = 0
        with (
            zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive,
            archive.open(f"{key}.npy", "w", force_zip64=True) as member,
        ):
            np.lib.format.write_array_header_1_0(member, header)
            for chunk in chunks:
                if chunk.dtype != dtype or tuple(chunk.shape[1:]) != row_shape:
                    raise ValueError(
                        f"a chunk of {chunk.dtype} {chunk.shape} does not fit {dtype} {shape}"
                    )
                rows += int(chunk.shape[0])
                if rows > shape[0]:
                    raise ValueError(f"more than the {shape[0]} rows announced")
                member.write(np.ascontiguousarray(chunk).data)
            if rows != shape[0]:
                raise ValueError(f"{rows} rows written, {shape[0]} announced")
        if extra:
            with zipfile.ZipFile(tmp, "a", compression=zipfile.ZIP_STORED) as archive:
                for name, array in extra.items():
                    with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                        np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)

    return write


class StreamedPNGs(Sequence[tuple[str, Callable[[Path], None]]]):
    """The ``(name, writer)`` pairs of ``n`` PNG files for
    :func:`geneval.io.write_image_folder`, drawn from ``blocks`` (uint8 NHWC) only as the
    writers are called, in order: one block is in memory at a time.

    Names are ``000000.png`` … (at least six digits, as many as ``n - 1`` needs). A writer
    called out of order (for an image of a block already passed) raises :class:`RuntimeError`.
    """

    def __init__(self, n: int, blocks: Iterable[np.ndarray]) -> None:
        self.n = int(n)
        self.width = max(6, len(str(self.n - 1)))
        self._blocks = iter(blocks)
        self._block: np.ndarray | None = None
        self._first = 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> tuple[str, Callable[[Path], None]]:  # type: ignore[override]
        if not isinstance(index, int) or not -self.n <= index < self.n:
            raise IndexError(index)
        index %= self.n
        return f"{index:0{self.width}d}.png", lambda path: self._write(index, path)

    def _image(self, index: int) -> np.ndarray:
        while self._block is None or index >= self._first + len(self._block):
            if self._block is not None:
                self._first += len(self._block)
            self._block = next(self._blocks, None)
            if self._block is None:
                raise RuntimeError(f"the samples ended before image {index}")
        if index < self._first:
            raise RuntimeError(f"image {index} was asked for after image {self._first}")
        return self._block[index - self._first]

    def _write(self, index: int, path: Path) -> None:
        from PIL import Image

        image = self._image(index)
        Image.fromarray(image[:, :, 0] if image.shape[2] == 1 else image).save(path, format="PNG")


def carried_arrays(carried: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """What a model's samples carry, as the arrays of a samples ``.npz``: ``labels`` int64
    (N,) and ``captions`` unicode (N,), which :func:`geneval.sources.load_array_file` reads
    back."""
    out: dict[str, np.ndarray] = {}
    if "labels" in carried:
        out["labels"] = np.asarray(torch.as_tensor(carried["labels"]).cpu(), dtype=np.int64)
    if "captions" in carried:
        out["captions"] = np.array([str(c) for c in carried["captions"]], dtype=np.str_)
    return out


def sample_shape(n: int, image_shape: Sequence[int]) -> tuple[int, int, int, int]:
    """The NHWC shape of ``n`` samples of ``image_shape`` (C, H, W)."""
    c, h, w = (int(v) for v in image_shape)
    return (int(n), h, w, c)
