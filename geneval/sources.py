"""Sample sources: image folders, sample arrays, model plugins and datasets (docs/contracts.md §4).

Every source yields batches of images for the runner. A batch is either a float tensor in
``[0, 1]`` (N, C, H, W) or — for image folders of mixed sizes — a list of such tensors, one per
image. Sources know how many images they hold (``count``) so progress bars have a total.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geneval.api import GenerativeModel, ImageSet, LoadedExtractor
from geneval.arrayfile import npz_members, open_npy, read_member, reading
from geneval.capabilities import SupportsPerSampleGenerators
from geneval.errors import InputError, current_surface
from geneval.run.config import DEFAULTS, LAYOUTS
from geneval.run.passes import PassPlan, PassResult, SourcePass
from geneval.text import quote

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
#: The most decoded pixels one batch of a folder holds (2^26: 64 images of 1024×1024, about
#: 200 MB as uint8 RGB and 800 MB as float32 on the device). A batch whose images, by their
#: files' headers, add up to more is cut into consecutive parts that each stay within it; an
#: image over it on its own is refused (docs/contracts.md §4).
FOLDER_BATCH_PIXELS = 2**26

Batch = torch.Tensor | list[torch.Tensor]


def quantize_to_uint8_levels(images: torch.Tensor) -> torch.Tensor:
    """Round float images in ``[0, 1]`` to the 256 levels an 8-bit image file would hold.

    Model samples pass through this so that ``geneval run --model`` and evaluating the same
    samples written by ``geneval sample`` give identical numbers.
    """
    return torch.round(images.clamp(0.0, 1.0) * 255.0) / 255.0


@dataclass
class SampleSource:
    """Base class: a description for reports, an image count, and batched iteration.

    ``carried`` holds the arrays that come with the images (``labels``, ``factors``,
    ``latents``, ``features``; ``captions``, a list of strings), row i describing image i;
    ``names`` the images' relative paths when they come from a folder (used to pair
    reconstructions with originals).
    """

    description: str
    count: int
    carried: dict[str, Any] = field(default_factory=dict, repr=False)
    names: list[str] | None = field(default=None, repr=False)

    @property
    def has_images(self) -> bool:
        return True

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        workers: int | None,
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Batch]:
        """Batches of the images ``start`` to ``stop`` (all by default). ``start`` is a
        multiple of :meth:`shard_unit`, so a shard's batches are the batches one pass over
        the whole source would make."""
        raise NotImplementedError

    def shard_unit(self, batch_size: int) -> int:
        """The images of one batch: shards of a sharded pass begin at multiples of it."""
        return batch_size

    def notes(self) -> list[str]:
        """One-line notes on what a pass over the source noticed (shown in the report)."""
        return []

    @property
    def can_fetch(self) -> bool:
        """Whether :meth:`fetch` gives random access to the images (not for model samples)."""
        return False

    def fetch(self, indices: Sequence[int]) -> list[torch.Tensor]:
        """The images at ``indices`` (float32 ``[0, 1]``, (C, H, W) each, on the host), for
        reports that show them; only where :attr:`can_fetch`."""
        raise NotImplementedError(f"{self.description}: no random access to its images")

    def pass_counters(self) -> dict[str, int]:
        """Counts a pass gathered for :meth:`notes` (summed over the shards of a sharded pass,
        stored with cached features)."""
        return {}

    def set_pass_counters(self, counters: dict[str, int]) -> None:
        """Restore counts of :meth:`pass_counters` (from all shards, or from the cache)."""


# -- image folders -----------------------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """All image files below ``folder``, recursively, sorted for a stable order.

    Symbolic links to folders are followed (each real folder is visited once, so a link
    cycle cannot loop); hidden files and folders (names starting with ``.``) are skipped.
    """
    found: list[Path] = []
    seen: set[str] = set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            path = Path(root) / name
            if (
                not name.startswith(".")
                and path.suffix.lower() in IMAGE_EXTENSIONS
                and path.is_file()
            ):
                found.append(path)
    return sorted(found)


#: 16-bit integer modes PIL opens 16-bit greyscale PNG/TIFF files as.
_SIXTEEN_BIT_MODES = {"I;16", "I;16B", "I;16L", "I;16N"}


@dataclass
class DecodedImage:
    """One decoded image: ``pixels`` (3, H, W), uint8 for 8-bit files or float32 in ``[0, 1]``
    for deeper ones, and whether the file held several frames (only the first is used)."""

    pixels: torch.Tensor
    multi_frame: bool = False


def _high_depth_to_unit(img: Image.Image, path: Path) -> np.ndarray:
    """A 16-bit or 32-bit integer, or float, single-channel image as float32 in ``[0, 1]``."""
    if img.mode in _SIXTEEN_BIT_MODES:
        return np.asarray(img, dtype=np.float32) / 65535.0
    array = np.asarray(img)
    if img.mode == "I":  # 16-bit PNGs open as "I" in some Pillow versions
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 65535:
            raise InputError(
                f"image {quote(path)}: 32-bit integer pixels in [{low}, {high}] cannot be "
                "mapped to [0, 1] (expected 16-bit values in [0, 65535])"
            )
        return array.astype(np.float32) / 65535.0
    array = array.astype(np.float32)  # mode "F"
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise InputError(
            f"image {quote(path)}: float pixels must lie in [0, 1], found "
            f"[{np.nanmin(array)}, {np.nanmax(array)}]"
        )
    return array


def pil_image_pixels(img: Image.Image, name: str | Path) -> torch.Tensor:
    """The pixels (3, H, W) of a loaded PIL image by the rule of image folders
    (:func:`decode_image`): uint8 RGB for 8-bit modes (alpha and palette transparency dropped,
    CMYK converted), float32 in ``[0, 1]`` for 16-bit greyscale (÷ 65535) and ``F`` images,
    repeated to three channels. ``name`` names the image in an :class:`InputError`."""
    if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
        grey = _high_depth_to_unit(img, Path(name) if isinstance(name, str) else name)
        return torch.from_numpy(grey).unsqueeze(0).expand(3, -1, -1).contiguous()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # palette transparency: dropped, as documented
        rgb = img if img.mode == "RGB" else img.convert("RGB")
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1)


def decode_image(path: Path) -> DecodedImage:
    """Decode one image file with PIL to RGB pixels (3, H, W).

    * 8-bit modes (grey ``L``, ``1``, palette ``P``, ``LA``, ``RGBA``, ``CMYK``, ``YCbCr`` ...)
      become uint8 RGB; alpha and palette transparency are dropped, CMYK is converted.
    * 16-bit greyscale (``I;16``, ``I;16B``, and 16-bit files that open as ``I``) is divided
      by 65535; ``F`` images are taken as they are and must lie in ``[0, 1]``; both come back
      as float32 in ``[0, 1]``, repeated to three channels.
    * Images larger than PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``) are
      refused before decoding.

    A file PIL cannot read, or whose pixels cannot be mapped to ``[0, 1]``, is an
    :class:`InputError` naming it.
    """
    with warnings.catch_warnings():
        # PIL's warnings (palette transparency, EXIF quirks) concern cases handled below; in a
        # decoding worker they would print between other output.
        warnings.simplefilter("ignore")
        return _decode(path)


def _decode(path: Path, opened: Image.Image | None = None) -> DecodedImage:
    """:func:`decode_image` without its warnings filter. ``opened``: the file already opened
    (its header read) by :class:`_FolderChunks`, which checked the batch's pixels with it."""
    try:
        with Image.open(path) if opened is None else opened as img:
            width, height = img.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and width * height > limit:
                raise InputError(
                    f"image {quote(path)} has {width}×{height} = {width * height} pixels, over "
                    f"the decompression-bomb limit of {limit} pixels"
                )
            if width * height > FOLDER_BATCH_PIXELS:
                raise InputError(
                    f"image {quote(path)} has {width}×{height} = {width * height} pixels, over "
                    f"the {FOLDER_BATCH_PIXELS} decoded pixels geneval holds in one batch"
                )
            multi_frame = getattr(img, "n_frames", 1) > 1
            img.load()
            if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
                return DecodedImage(pil_image_pixels(img, path), multi_frame)
            rgb = img.convert("RGB")
            img.close()  # frees the decoded file now (a context's exit does not)
    except Image.DecompressionBombError:
        raise InputError(
            f"image {quote(path)} is over the decompression-bomb limit of "
            f"{Image.MAX_IMAGE_PIXELS} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"cannot read image {quote(path)}: {exc}".splitlines()[0]) from None
    array = np.asarray(rgb, dtype=np.uint8)
    rgb.close()  # PIL's copy is freed before the pixels are copied once more for torch
    return DecodedImage(torch.from_numpy(array.copy()).permute(2, 0, 1), multi_frame)


@dataclass
class _FolderBatch:
    """What a decoding worker hands back: the images — stacked into one tensor when they
    share a size and dtype, so the main process only copies it — or the first error met (a
    message, because exceptions lose their text crossing the worker boundary)."""

    images: list[torch.Tensor]
    stacked: torch.Tensor | None = None
    multi_frame: int = 0
    error: str | None = None
    #: instead of pixels: the parts (image indices) a batch over the pixel budget is cut into,
    #: decoded one after the other by the main process
    parts: list[list[int]] | None = None

    def pin_memory(self) -> _FolderBatch:
        """Page-locked copies, so the copy to the GPU runs asynchronously (DataLoader calls
        this in its pinning thread when ``pin_memory=True``)."""
        if self.parts is not None or self.error is not None:
            return self
        if self.stacked is not None:
            return _FolderBatch([], self.stacked.pin_memory(), self.multi_frame, self.error)
        return _FolderBatch([im.pin_memory() for im in self.images], None, self.multi_frame)


def budget_parts(pixels: Sequence[int], budget: int) -> list[range]:
    """Cut consecutive images of ``pixels`` each into runs whose pixels add up to at most
    ``budget``, in order; an image over the budget on its own is a run by itself (decoding
    refuses it). One run when the whole batch fits."""
    parts: list[range] = []
    first, total = 0, 0
    for i, count in enumerate(pixels):
        if i > first and total + count > budget:
            parts.append(range(first, i))
            first, total = i, 0
        total += count
    if len(pixels) > first:
        parts.append(range(first, len(pixels)))
    return parts


def _header_pixels(img: Image.Image | None) -> int:
    """Width × height from an opened file's header (0 when it could not be opened: decoding
    then reports the error, in order)."""
    if img is None:
        return 0
    width, height = img.size
    return int(width) * int(height)


class _FolderChunks(torch.utils.data.Dataset):
    """Item ``b``: batch ``b`` of ``paths`` (``batch_size`` images), decoded by a worker when
    its pixels, read from the files' headers, stay within ``budget``; else only the parts it
    is cut into (:func:`budget_parts`), for the main process to decode one at a time."""

    def __init__(self, paths: list[Path], batch_size: int, budget: int) -> None:
        self.paths = paths
        self.batch_size = batch_size
        self.budget = budget

    def __len__(self) -> int:
        return -(-len(self.paths) // self.batch_size)

    def __getitem__(self, index: int) -> _FolderBatch:
        first = index * self.batch_size
        indices = range(first, min(first + self.batch_size, len(self.paths)))
        opened: list[Image.Image | None] = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                for i in indices:
                    try:
                        opened.append(Image.open(self.paths[i]))
                    except Exception:  # unreadable: its decoding reports it, in order
                        opened.append(None)
                parts = budget_parts([_header_pixels(img) for img in opened], self.budget)
                if len(parts) > 1:
                    return _FolderBatch([], parts=[[first + k for k in part] for part in parts])
                pairs = zip(indices, opened, strict=True)
                return _collate([_decode_item(self.paths[i], img) for i, img in pairs])
            finally:
                for img in opened:
                    if img is not None:
                        img.close()


def _decode_item(path: Path, opened: Image.Image | None = None) -> DecodedImage | str:
    """One image decoded, or the message of its :class:`InputError` (exceptions lose their
    text crossing the worker boundary)."""
    try:
        return _decode(path, opened) if opened is not None else decode_image(path)
    except InputError as exc:
        return str(exc)


def _as_is(item: _FolderBatch) -> _FolderBatch:
    """The DataLoader's collate function for items that are whole batches already."""
    return item


def _collate(items: list[DecodedImage | str]) -> _FolderBatch:
    errors = [item for item in items if isinstance(item, str)]
    if errors:
        return _FolderBatch([], error=errors[0])
    decoded = [item for item in items if isinstance(item, DecodedImage)]
    images = [item.pixels for item in decoded]
    multi_frame = sum(item.multi_frame for item in decoded)
    if all(im.shape == images[0].shape and im.dtype == images[0].dtype for im in images):
        return _FolderBatch([], torch.stack(images), multi_frame)
    return _FolderBatch(images, None, multi_frame)


def _to_unit_float(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (sent as such, 4× less to copy) or float pixels → float32 in ``[0, 1]`` on device."""
    moved = pixels.to(device, non_blocking=True)
    unit = moved.float().div_(255.0) if pixels.dtype == torch.uint8 else moved.float()
    return _standard_strides(unit)


#: The largest caption file read beside an image.
MAX_CAPTION_BYTES = 1 << 20


def sidecar_captions(folder: Path, paths: Sequence[Path]) -> tuple[list[str] | None, str | None]:
    """The captions of a folder's images from a ``NAME.txt`` beside each image ``NAME.png``
    (the COCO-caption habit), stripped of surrounding white space, in the images' order.

    Returns ``(captions, None)`` when every image has one, ``(None, None)`` when none has, and
    ``(None, gap)`` when only some have, ``gap`` saying which image lacks one (a run that needs
    the captions names it). A caption file that is not UTF-8 text, or over 1 MiB, is an
    :class:`InputError` naming it.
    """
    sidecars = [path.with_suffix(".txt") for path in paths]
    present = [sidecar.is_file() for sidecar in sidecars]
    if not any(present):
        return None, None
    if not all(present):
        first = next(path for path, ok in zip(paths, present, strict=True) if not ok)
        name = first.relative_to(folder).as_posix()
        return None, (
            f"{sum(present)} of {len(paths)} images have a caption file, {quote(name)} has none"
        )
    captions = []
    for sidecar in sidecars:
        if sidecar.stat().st_size > MAX_CAPTION_BYTES:
            raise InputError(f"caption file {quote(sidecar)} is larger than 1 MiB")
        try:
            captions.append(sidecar.read_text(encoding="utf-8").strip())
        except UnicodeDecodeError:
            raise InputError(f"caption file {quote(sidecar)} is not UTF-8 text") from None
    return captions, None


class FolderSource(SampleSource):
    """Images from a folder tree, decoded with PIL in DataLoader workers.

    With ``workers=None`` small folders are decoded in the main process (starting workers
    costs more than it saves) and larger ones by up to 8 workers, one per core. After a full
    pass, ``multi_frame`` counts the files of which only the first frame was used.
    """

    def __init__(self, folder: Path) -> None:
        if not folder.exists():
            raise InputError(f"path {quote(folder)} does not exist")
        if not folder.is_dir():
            raise InputError(f"{quote(folder)} is not a folder")
        self.paths = list_images(folder)
        if not self.paths:
            kinds = ", ".join(IMAGE_EXTENSIONS)
            raise InputError(f"folder {quote(folder)} contains no images ({kinds})")
        self.multi_frame = 0
        captions, self.caption_gap = sidecar_captions(folder, self.paths)
        super().__init__(
            description=str(folder),
            count=len(self.paths),
            carried={} if captions is None else {"captions": captions},
            names=[path.relative_to(folder).as_posix() for path in self.paths],
        )

    def default_workers(self, count: int | None = None) -> int:
        """No workers for fewer than 512 images, else one per core, up to 8."""
        if (self.count if count is None else count) < 512:
            return 0
        return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)

    def pass_counters(self) -> dict[str, int]:
        return {"multi_frame": self.multi_frame}

    def set_pass_counters(self, counters: dict[str, int]) -> None:
        self.multi_frame = int(counters.get("multi_frame", 0))

    def notes(self) -> list[str]:
        if not self.multi_frame:
            return []
        return [
            f"{self.multi_frame} image file(s) in {self.description} hold several frames "
            "(animations or multi-page files): only the first frame of each was used"
        ]

    @property
    def can_fetch(self) -> bool:
        return True

    def fetch(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return [
            _to_unit_float(decode_image(self.paths[i]).pixels, torch.device("cpu")) for i in indices
        ]

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        workers: int | None,
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Batch]:
        """Decoded in DataLoader workers, sent as uint8 (4× less to copy than float), pinned
        and copied without blocking when the device is a GPU, converted on the device."""
        paths = self.paths[start:stop]
        loader = torch.utils.data.DataLoader(
            _FolderChunks(paths, batch_size, FOLDER_BATCH_PIXELS),
            batch_size=None,
            shuffle=False,
            num_workers=self.default_workers(len(paths)) if workers is None else workers,
            collate_fn=_as_is,
            pin_memory=device.type == "cuda",
        )
        self.multi_frame = 0
        for chunk in loader:
            for batch in self._within_budget(chunk, paths, device):
                if batch.error is not None:
                    raise InputError(batch.error)
                self.multi_frame += batch.multi_frame
                if batch.stacked is not None:
                    yield _to_unit_float(batch.stacked, device)
                else:
                    yield [_to_unit_float(im, device) for im in batch.images]

    @staticmethod
    def _within_budget(
        chunk: _FolderBatch, paths: list[Path], device: torch.device
    ) -> Iterator[_FolderBatch]:
        """A decoded batch as it is; a batch cut into parts over the pixel budget, decoded
        here one part at a time (the parts of one batch are the same in every run and shard,
        so the numbers are too)."""
        if chunk.parts is None:
            yield chunk
            return
        for part in chunk.parts:
            batch = _collate([_decode_item(paths[i]) for i in part])
            yield batch.pin_memory() if device.type == "cuda" else batch


# -- arrays ------------------------------------------------------------------------------------

#: Arrays an ``.npz`` may carry beside (or instead of) ``images``, with their required form.
CARRIED_KEYS = ("labels", "factors", "latents", "features", "logits", "captions")


#: Bytes of an array checked at a time (a memory-mapped array is never copied whole).
_CHECK_BYTES = 32 << 20


def _describe(array: np.ndarray) -> str:
    if array.size and np.issubdtype(array.dtype, np.number):
        with np.errstate(all="ignore"):
            low, high = array.min(), array.max()
        return f"shape {array.shape}, dtype {array.dtype}, range [{low}, {high}]"
    return f"shape {array.shape}, dtype {array.dtype}"


def image_layout(shape: Sequence[int], layout: str | None, what: str) -> str:
    """The layout, ``"nchw"`` or ``"nhwc"``, of images of ``shape``: the one rule shared by
    array files, in-memory arrays and tensors (``evaluate()``) and ``Evaluator.update``.

    With ``layout`` ``"nchw"`` or ``"nhwc"`` that layout is read, and its channel axis must
    hold 1 or 3 channels. With ``"auto"`` (or ``None``) the layout is the one whose channel
    axis holds 1 or 3 channels; a shape that fits both, such as (N, 3, 3, 3) or (N, 1, 8, 3),
    is refused with a message saying how to state the layout. Anything else (not 4-D, no
    layout with 1 or 3 channels) is an :class:`InputError` naming ``what``.
    """
    shape = tuple(int(s) for s in shape)
    if layout is None:
        layout = "auto"
    if layout not in LAYOUTS:
        raise InputError(f"layout {quote(layout)}: choose from {', '.join(LAYOUTS)}")
    if len(shape) != 4:
        raise InputError(f"{what} must be 4-D images (NHWC or NCHW), found shape {shape}")
    fits = {"nchw": shape[1] in (1, 3), "nhwc": shape[3] in (1, 3)}
    if layout != "auto":
        if not fits[layout]:
            axis = 1 if layout == "nchw" else 3
            raise InputError(
                f"{what} has shape {shape}: read as {layout.upper()} it has {shape[axis]} "
                "channels (expected 1 or 3)"
            )
        return layout
    if fits["nchw"] and fits["nhwc"]:
        how = (
            "layout='nchw' or 'nhwc'"
            if current_surface() == "python"
            else "--layout nchw|nhwc (layout='nchw' or 'nhwc' in the Python API)"
        )
        raise InputError(
            f"{what} has shape {shape}, which fits both NCHW and NHWC: state the layout with {how}"
        )
    if fits["nchw"]:
        return "nchw"
    if fits["nhwc"]:
        return "nhwc"
    raise InputError(f"{what} must have 1 or 3 channels (NHWC or NCHW), found shape {shape}")


def check_not_empty(shape: Sequence[int], what: str) -> None:
    """Refuse a batch of images with no image (``"... is empty (0 images)"``) or no pixel:
    the one emptiness check of array files, in-memory arrays and tensors, and ``update()``."""
    shape = tuple(int(s) for s in shape)
    if shape and shape[0] == 0:
        raise InputError(f"{what} is empty (0 images, shape {shape})")
    if 0 in shape:
        raise InputError(f"{what} holds no pixels (shape {shape})")


def _first_where(mask: np.ndarray | torch.Tensor) -> tuple[int, ...]:
    """The index of the first true element of ``mask`` (row-major order)."""
    if isinstance(mask, torch.Tensor):
        flat = int(torch.argmax(mask.reshape(-1).to(torch.uint8)))
    else:
        flat = int(np.argmax(mask.reshape(-1)))
    return tuple(int(i) for i in np.unravel_index(flat, tuple(mask.shape)))


def check_image_values(
    values: np.ndarray | torch.Tensor,
    what: str,
    *,
    low: float = 0.0,
    high: float = 1.0,
    first: int = 0,
) -> None:
    """Refuse float image values that are not finite numbers in ``[low, high]``: the one value
    check of array files, in-memory arrays and tensors (CLI and ``evaluate()``) and
    ``update()``. A NaN is ``"WHAT contains NaN at index (i, c, h, w) (image i)"``, an
    infinity likewise (``inf``/``-inf``), indices in the layout the values were given in;
    ``first`` is the index of the first image of ``values`` (a chunk of a larger array).
    Finite values out of range are ``"WHAT: float images must lie in [low, high], found
    [min, max]"``. ``values`` is a numpy array or a tensor on any device."""
    lib: Any = torch if isinstance(values, torch.Tensor) else np
    if not bool(lib.isfinite(values).all()):  # the common case costs one test
        nan = lib.isnan(values)
        mask, word = (nan, "NaN") if bool(nan.any()) else (lib.isinf(values), "inf")
        local = _first_where(mask)
        if word == "inf" and float(values[local]) < 0:
            word = "-inf"
        index = (local[0] + first, *local[1:])
        raise InputError(f"{what} contains {word} at index {index} (image {index[0]})")
    found_low, found_high = float(values.min()), float(values.max())
    if found_low < low or found_high > high:
        raise InputError(
            f"{what}: float images must lie in [{low:g}, {high:g}], found "
            f"[{found_low}, {found_high}]"
        )


def _check_unit_interval(array: np.ndarray, what: str) -> None:
    """:func:`check_image_values` over ``array``, about :data:`_CHECK_BYTES` at a time (a
    memory-mapped array is never copied whole)."""
    per_image = max(1, array[:1].nbytes)
    rows = max(1, _CHECK_BYTES // per_image)
    for start in range(0, array.shape[0], rows):
        check_image_values(np.asarray(array[start : start + rows]), what, first=start)


def check_image_array(array: np.ndarray, what: str, layout: str | None = "auto") -> np.ndarray:
    """Validate images (``docs/contracts.md`` §4) and return them as NCHW (a view).

    uint8 in [0, 255] or real floats (any precision and byte order) in [0, 1]; NHWC or NCHW
    with 1 or 3 channels, by the rule of :func:`image_layout` (``layout`` states it); at
    least one image and one pixel. Anything else is an :class:`InputError` naming ``what``
    and stating the shape, dtype and range found.
    """
    if array.ndim != 4:
        raise InputError(f"{what} must be 4-D images (NHWC or NCHW), found {_describe(array)}")
    if array.dtype.fields is not None or array.dtype.hasobject:
        raise InputError(
            f"{what} must be uint8 in [0, 255] or float in [0, 1], found {_describe(array)}"
        )
    chosen = image_layout(array.shape, layout, what)
    check_not_empty(array.shape, what)
    if array.dtype == np.uint8:
        pass
    elif array.dtype.kind == "f":
        _check_unit_interval(array, what)
    else:
        raise InputError(
            f"{what} must be uint8 in [0, 255] or float in [0, 1], found {_describe(array)}"
        )
    return array.transpose(0, 3, 1, 2) if chosen == "nhwc" else array


#: The integers an int64 holds, as floats compare with them.
_INT64_RANGE = (-(2.0**63), 2.0**63)


def check_carried(arrays: dict[str, np.ndarray], count: int | None, what: str) -> dict[str, Any]:
    """Validate the arrays carried beside images and return them as tensors.

    ``labels`` (N,) and ``factors`` (N, K) must be integers that fit int64 (int64 on return;
    integral floats are accepted); ``latents`` (N, D), ``features`` (N, D) and ``logits``
    (N, C), C ≥ 2 classes, real numbers, finite in float32 (float32 on return); ``captions``
    (N,) unicode strings (a list of ``str`` on return). Any byte order is accepted. Every
    array must have the same N, and ``count`` images when given.
    """
    out: dict[str, Any] = {}
    for key, array in arrays.items():
        if key == "captions":
            if array.ndim != 1 or array.dtype.kind != "U" or array.size == 0:
                raise InputError(
                    f"{what}: captions must be a non-empty (N,) array of strings, found "
                    f"{_describe(array)}"
                )
            out[key] = [str(c) for c in array.tolist()]
            continue
        integer = key in ("labels", "factors")
        ndim = 1 if key == "labels" else 2
        if array.ndim != ndim or 0 in array.shape:
            shapes = {"labels": "(N,)", "factors": "(N, K)", "logits": "(N, C)"}
            shape = shapes.get(key, "(N, D)")
            raise InputError(
                f"{what}: {key} must be a non-empty {shape} array, found {_describe(array)}"
            )
        if key == "logits" and array.shape[1] < 2:
            raise InputError(
                f"{what}: logits must be (N, C) with C ≥ 2 classes, found {_describe(array)}"
            )
        kind = array.dtype.kind if array.dtype.fields is None else "V"
        if integer:
            if kind in "iu":
                fits = kind == "i" or array.max() <= np.iinfo(np.int64).max
            elif kind == "f":
                fits = bool(
                    np.isfinite(array).all()
                    and (array == np.round(array)).all()
                    and array.min() >= _INT64_RANGE[0]
                    and array.max() < _INT64_RANGE[1]
                )
            else:
                fits = False
            if not fits:
                raise InputError(
                    f"{what}: {key} must be integers that fit int64, found {_describe(array)}"
                )
            out[key] = torch.from_numpy(np.ascontiguousarray(array).astype(np.int64))
        else:
            if kind not in "iuf":
                raise InputError(f"{what}: {key} must be real numbers, found {_describe(array)}")
            with np.errstate(over="ignore"):  # beyond float32: refused just below
                converted = np.ascontiguousarray(array).astype(np.float32)
            if not np.isfinite(converted).all():
                raise InputError(
                    f"{what}: {key} contain non-finite values (or values beyond float32) "
                    f"({_describe(array)})"
                )
            out[key] = torch.from_numpy(converted)
    counts = {key: len(t) for key, t in out.items()}
    if count is not None:
        counts = {"images": count, **counts}
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{n} {key}" for key, n in counts.items())
        raise InputError(f"{what}: the arrays disagree on the number of rows ({found})")
    return out


def load_array_file(
    path: Path, layout: str | None = "auto"
) -> tuple[np.ndarray | None, dict[str, torch.Tensor]]:
    """Read a sample array file: images (NCHW, or ``None``) and the arrays carried with them.

    ``.npy`` holds images, memory-mapped (read batch by batch, never whole). ``.npz`` holds
    ``images`` (or a single array of any other name) and optionally ``labels``, ``factors``,
    ``latents``, ``features``, ``logits`` and ``captions`` (see :func:`check_carried`); a file
    with no images must carry at least one of those. Exactly ``arr_0`` and ``arr_1`` (the
    class-conditional samples guided-diffusion's ``image_sample.py`` writes) are images and
    labels. Any other key is an :class:`InputError`;
    so is any file that numpy, zipfile or zlib cannot read (truncated, corrupt, a header that
    claims more than the file holds, Python objects), through the one error boundary of
    :mod:`geneval.arrayfile`, which also bounds what an ``.npz`` may make geneval allocate.
    ``layout`` states how the images' axes are read (:func:`image_layout`).
    """
    if not path.exists():
        raise InputError(f"path {quote(path)} does not exist")
    if not path.is_file():
        raise InputError(f"array file {quote(path)} is not a regular file")
    what = f"array file {quote(path)}"
    carried: dict[str, np.ndarray] = {}
    with reading(what):
        if path.suffix == ".npy":
            images = open_npy(path, what)
        elif path.suffix == ".npz":
            images = None
            with zipfile.ZipFile(path) as archive:
                members = npz_members(archive, path, what)
                if set(members) == {"arr_0", "arr_1"}:
                    # guided-diffusion's class-conditional samples: np.savez(path, images,
                    # labels) names them arr_0 and arr_1
                    members = {"images": members["arr_0"], "labels": members["arr_1"]}
                keys = list(members)
                rest = [k for k in keys if k not in CARRIED_KEYS]
                if "images" in rest:
                    image_key: str | None = "images"
                elif len(rest) == 1 and len(rest) == len(keys):
                    image_key = rest[0]
                else:
                    image_key = None
                if image_key is not None:
                    rest.remove(image_key)
                if rest:
                    raise InputError(
                        f"{what} has unknown key(s) {', '.join(map(quote, rest))} (known: "
                        f"images, {', '.join(CARRIED_KEYS)})"
                    )
                if image_key is None and not keys:
                    raise InputError(f"{what} holds no arrays")
                if image_key is not None:
                    image_layout(members[image_key].shape, layout, f"array {quote(path)}")
                    images = read_member(archive, members[image_key])
                carried = {k: read_member(archive, members[k]) for k in keys if k in CARRIED_KEYS}
        else:
            raise InputError(f"{quote(path)}: sample arrays must be .npy or .npz")
    if images is not None:
        images = check_image_array(images, f"array {quote(path)}", layout)
    count = int(images.shape[0]) if images is not None else None
    return images, check_carried(carried, count, what)


def host_tensor(array: np.ndarray) -> torch.Tensor:
    """Images of an array (uint8, or floats of any precision and byte order) as a CPU tensor
    torch can take, values unchanged: uint8 stays uint8; float16/32/64 in native byte order
    stay as they are; another byte order becomes native (exactly), a longer float float64.
    A read-only (memory-mapped) or strided array is copied, so torch never wraps memory it
    must not write (and warns about none)."""
    dtype = array.dtype
    if dtype != np.uint8 and not (
        dtype.isnative and dtype.kind == "f" and dtype.itemsize in (2, 4, 8)
    ):
        native = dtype.kind == "f" and dtype.itemsize in (2, 4, 8)
        array = array.astype(dtype.newbyteorder("=") if native else np.float64, order="C")
    if not array.flags.writeable or not array.flags.c_contiguous:
        array = np.array(array, order="C", copy=True)
    return torch.from_numpy(array)


class ArraySource(SampleSource):
    """Images (and carried arrays) from an ``.npy``/``.npz`` file, or from an in-memory array.

    A file may hold no images, only carried arrays (``features``, ``latents`` ...): it then
    serves the metrics that need those and nothing else. ``layout`` states how a file's image
    axes are read (:func:`image_layout`); an in-memory ``array`` is already NCHW.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        array: np.ndarray | None = None,
        carried: dict[str, torch.Tensor] | None = None,
        description: str | None = None,
        layout: str | None = "auto",
    ) -> None:
        self.path = path
        #: what the feature cache adds to a file's content key: the stated layout of a shape
        #: that fits both (the same bytes read the other way are other images)
        self.key_note = ""
        if path is not None:
            self.array, carried = load_array_file(path, layout)
            description = str(path)
            if layout in ("nchw", "nhwc"):
                self.key_note = f"|layout={layout}"
        else:
            self.array = array
        carried = dict(carried or {})
        count = (
            int(self.array.shape[0])
            if self.array is not None
            else next(int(t.shape[0]) for t in carried.values())
        )
        super().__init__(description=description or "array", count=count, carried=carried)

    @property
    def has_images(self) -> bool:
        return self.array is not None

    @property
    def can_fetch(self) -> bool:
        return self.array is not None

    def fetch(self, indices: Sequence[int]) -> list[torch.Tensor]:
        scale = 255.0 if self.array.dtype == np.uint8 else 1.0
        picked = host_tensor(self.array[list(indices)])
        return list(picked.float().div_(scale))

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        workers: int | None,
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Batch]:
        """Chunks sent in their own dtype (uint8 stays uint8), pinned for a GPU, converted to
        float on the device."""
        if self.array is None:
            raise InputError(f"{self.description} holds no images")
        stop = self.count if stop is None else min(stop, self.count)
        for first in range(start, stop, batch_size):
            chunk = _standard_strides(
                host_tensor(self.array[first : min(first + batch_size, stop)])
            )
            if device.type == "cuda":
                chunk = chunk.pin_memory()
            moved = chunk.to(device, non_blocking=True)
            yield moved.float().div_(255.0) if chunk.dtype == torch.uint8 else moved.float()


def _standard_strides(t: torch.Tensor) -> torch.Tensor:
    """``t`` with the strides of a fresh NCHW tensor. An NHWC array with one channel,
    transposed, counts as contiguous but keeps strides that convolutions may take for
    channels-last, and would then round differently from the same images sampled by a model."""
    expected = torch.empty(t.shape, dtype=t.dtype, device="meta").stride()
    return t if t.stride() == expected else t.clone(memory_format=torch.contiguous_format)


def standard_strides(t: torch.Tensor) -> torch.Tensor:
    """Public name of :func:`_standard_strides` (the Python API's ``update`` uses it)."""
    return _standard_strides(t)


#: Float dtypes of torch that numpy holds as they are.
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)


def checked_tensor(images: torch.Tensor, what: str) -> torch.Tensor:
    """``images`` detached, refused with an :class:`InputError` naming ``what`` when it holds
    no plain numbers a pass can read: a tensor on the ``meta`` device (no data), a sparse,
    nested or quantized tensor, or complex numbers."""
    if images.device.type == "meta":
        raise InputError(f"{what} is a tensor on the meta device, which holds no data")
    if getattr(images, "is_nested", False):
        raise InputError(f"{what} is a nested tensor: give one dense (N, C, H, W) tensor")
    if images.layout != torch.strided:
        raise InputError(f"{what} is a {images.layout} tensor: give a dense one (.to_dense())")
    if images.is_quantized:
        raise InputError(f"{what} is a quantized tensor: give it .dequantize()d")
    if images.is_complex():
        raise InputError(
            f"{what} must be uint8 or float in [0, 1], found complex numbers (dtype {images.dtype})"
        )
    return images.detach()


def array_source(images: Any, what: str, layout: str | None = "auto") -> ArraySource:
    """An in-memory image tensor or array (uint8 or float in [0, 1], NCHW or NHWC by the rule
    of :func:`image_layout`) as a source. Tensors that hold no plain numbers are refused
    (:func:`checked_tensor`); float dtypes numpy lacks (bfloat16 ...) are read as float32."""
    if isinstance(images, torch.Tensor):
        tensor = checked_tensor(images, what)
        if tensor.is_floating_point() and tensor.dtype not in _NUMPY_FLOATS:
            tensor = tensor.float()
        try:
            images = tensor.cpu().numpy()
        except (TypeError, RuntimeError):
            raise InputError(
                f"{what} must be uint8 in [0, 255] or float in [0, 1], found dtype {tensor.dtype}"
            ) from None
    if not isinstance(images, np.ndarray):
        raise InputError(f"{what}: expected an image tensor or array, got {type(images).__name__}")
    array = check_image_array(np.asarray(images), what, layout)
    return ArraySource(array=array, description=what)


# -- in-memory images (datasets) ---------------------------------------------------------------


class TensorSource(SampleSource):
    """Images already in memory, with what they carry, e.g. a dataset split."""

    def __init__(self, description: str, data: ImageSet) -> None:
        images = data.images
        if images.ndim != 4 or images.shape[0] == 0:
            raise InputError(f"{description}: expected a non-empty (N, C, H, W) image tensor")
        self.images = images
        carried = {
            key: value
            for key in ("labels", "factors", "latents")
            if (value := getattr(data, key)) is not None
        }
        super().__init__(description=description, count=int(images.shape[0]), carried=carried)

    @property
    def can_fetch(self) -> bool:
        return True

    def fetch(self, indices: Sequence[int]) -> list[torch.Tensor]:
        return list(self.images[list(indices)].detach().float().cpu())

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        workers: int | None,
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Batch]:
        stop = self.count if stop is None else min(stop, self.count)
        for first in range(start, stop, batch_size):
            chunk = self.images[first : min(first + batch_size, stop)]
            yield chunk.to(device, non_blocking=True).float()


# -- update() batches --------------------------------------------------------------------------


class StreamSource(SampleSource):
    """Samples that arrive one batch at a time (:meth:`geneval.Evaluator.update`).

    A stream is not read by a pass (it has no :meth:`batches`): the run :meth:`open` s it with
    its planned pass, each :meth:`add` goes through that pass at once, and the run collects
    :meth:`result`.
    """

    def __init__(self) -> None:
        super().__init__(description="update() batches", count=0)
        self._opened: tuple[PassPlan, dict[str, LoadedExtractor], torch.device, int] | None = None
        self._pass: SourcePass | None = None

    def open(
        self,
        plan: PassPlan,
        extractors: dict[str, LoadedExtractor],
        device: torch.device,
        batch_size: int,
    ) -> None:
        """Ready the stream for the pass ``plan`` with
        the loaded ``extractors``, ``batch_size`` images per extractor call; forgets every
        batch given so far."""
        self._opened = (plan, extractors, device, batch_size)
        self.reset()

    def reset(self) -> None:
        """Forget every batch given so far."""
        if self._opened is None:
            raise RuntimeError("the stream is not opened: plan the run first")
        plan, extractors, device, _ = self._opened
        self._pass = SourcePass(plan, extractors, device, description="update()")

    def add(self, images: torch.Tensor) -> None:
        """Pass a float32 NCHW batch on the run's device through the stream's pass."""
        if self._opened is None or self._pass is None:
            raise RuntimeError("the stream is not opened: plan the run first")
        step = self._opened[3]
        for start in range(0, images.shape[0], step):
            self._pass.add(images[start : start + step])

    @property
    def pass_device(self) -> torch.device:
        """The device the stream's pass runs on (where :meth:`add` expects its images)."""
        if self._opened is None:
            raise RuntimeError("the stream is not opened: plan the run first")
        return self._opened[2]

    @property
    def received(self) -> int:
        """The images added since the last :meth:`reset`."""
        return 0 if self._pass is None else self._pass.count

    def nbytes(self) -> int:
        """Bytes held for the images added (running sums, and per-sample outputs)."""
        return 0 if self._pass is None else self._pass.nbytes()

    def result(self) -> PassResult:
        """What this process's pass gathered."""
        if self._pass is None:
            raise RuntimeError("the stream is not opened: plan the run first")
        return self._pass.result()


# -- models ------------------------------------------------------------------------------------


def sample_block_seed(seed: int, index: int) -> int:
    """The seed of the block of model samples that begins at global sample ``index``.

    ``sha256(b"geneval-samples" ‖ seed ‖ index)`` (both as 8-byte big-endian integers), first
    8 bytes, top bit cleared: a seed in [0, 2^63) that any rank of a sharded run derives alone,
    so N ranks draw exactly the samples one process draws, and nearby seeds or indices give
    unrelated streams.
    """
    digest = hashlib.sha256(
        b"geneval-samples" + int(seed).to_bytes(8, "big") + int(index).to_bytes(8, "big")
    ).digest()
    return int.from_bytes(digest[:8], "big") & (2**63 - 1)


class ModelSource(SampleSource):
    """Samples drawn from a loaded model in blocks of ``batch_size`` samples (default
    ``DEFAULTS["sample_batch_size"]``: the run's ``sample_batch_size``).

    The block that begins at global sample index ``i`` is drawn with a generator seeded with
    :func:`sample_block_seed` ``(seed, i)``: the seed and the block size fix the samples, and
    the blocks of a sharded run (each rank its own range of blocks) are those one process
    draws. A model that takes one generator per sample
    (:class:`~geneval.capabilities.SupportsPerSampleGenerators`, e.g. a diffusers pipeline)
    gets the list of generators seeded with ``sample_block_seed(seed, j)`` for each sample
    ``j`` of the block: its samples depend on the seed alone, whatever the block size or the
    shard. ``geneval sample`` draws through the same source, so its files score the same.

    ``conditions`` (:func:`geneval.generators.conditions`) holds one class label or prompt per
    sample; each block passes its slice to ``sample(labels=...)`` or ``sample(prompts=...)``,
    and they travel with the samples as the ``labels`` and ``captions`` inputs. ``options``
    are the model's validated sample options (``--opt model.KEY=VALUE``).

    Samples are quantised to 8-bit levels (:func:`quantize_to_uint8_levels`), as if written to
    image files and read back.
    """

    def __init__(
        self,
        description: str,
        model: GenerativeModel,
        count: int,
        *,
        seed: int,
        sampler: str | None = None,
        steps: int | None = None,
        batch_size: int | None = None,
        conditions: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        if count < 1:
            raise InputError(f"--num-samples must be positive, got {count}")
        conditions = dict(conditions or {})
        carried: dict[str, Any] = {}
        if "labels" in conditions:
            carried["labels"] = conditions["labels"]
        if "prompts" in conditions:
            carried["captions"] = list(conditions["prompts"])
        super().__init__(description=description, count=count, carried=carried)
        self.model = model
        self.seed = seed
        self.sampler = sampler
        self.steps = steps
        self.sample_batch = batch_size or DEFAULTS["sample_batch_size"]
        self.conditions = conditions
        self.options = dict(options or {})
        self.per_sample = (
            isinstance(model, SupportsPerSampleGenerators) and model.per_sample_generators
        )

    def shard_unit(self, batch_size: int) -> int:
        return 1 if self.per_sample else self.sample_batch

    def _generators(self, first: int, k: int) -> torch.Generator | list[torch.Generator]:
        device = self.model.device
        if not self.per_sample:
            return torch.Generator(device=device).manual_seed(sample_block_seed(self.seed, first))
        return [
            torch.Generator(device=device).manual_seed(sample_block_seed(self.seed, j))
            for j in range(first, first + k)
        ]

    def batches(
        self,
        batch_size: int,
        device: torch.device,
        workers: int | None,
        *,
        start: int = 0,
        stop: int | None = None,
    ) -> Iterator[Batch]:
        """One model call per block of ``sample_batch`` samples from ``start`` (a multiple of
        :meth:`shard_unit`) to ``stop``, each block yielded in batches of ``batch_size`` images
        (the run's extraction batch; 0: whole blocks)."""
        if start % self.shard_unit(batch_size):
            raise ValueError(f"start {start} is not a multiple of {self.shard_unit(batch_size)}")
        stop = self.count if stop is None else min(stop, self.count)
        for first in range(start, stop, self.sample_batch):
            k = min(self.sample_batch, stop - first)
            extra = dict(self.options)
            for name, values in self.conditions.items():
                extra[name] = values[first : first + k]
            try:
                images = self.model.sample(
                    k,
                    batch_size=self.sample_batch,
                    generator=self._generators(first, k),
                    sampler=self.sampler,
                    steps=self.steps,
                    **extra,
                )
            except ValueError as exc:  # samplers refuse bad settings with ValueError
                raise InputError(f"{quote(self.description)}: {exc}".splitlines()[0]) from None
            block = quantize_to_uint8_levels(images.to(device).float())
            step = batch_size if batch_size > 0 else k
            for part in range(0, k, step):
                yield block[part : part + step]


def source_from_path(path: str | os.PathLike[str], layout: str | None = "auto") -> SampleSource:
    """A folder or an array file (whose image axes are read by ``layout``: see
    :func:`image_layout`)."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"path {quote(p)} does not exist")
    if p.is_dir():
        return FolderSource(p)
    if p.suffix in (".npy", ".npz"):
        return ArraySource(p, layout=layout)
    raise InputError(f"{quote(p)} is neither a folder of images nor an .npy/.npz array")
