"""Sample sources: image folders, sample arrays, model plugins and datasets (docs/contracts.md §4).

Every source yields batches of images for the runner. A batch is either a float tensor in
``[0, 1]`` (N, C, H, W) or — for image folders of mixed sizes — a list of such tensors, one per
image. Sources know how many images they hold (``count``) so progress bars have a total.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geneval.api import GenerativeModel, ImageSet
from geneval.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff")
DEFAULT_SAMPLE_BATCH = 500  # samples per model call unless --batch-size says otherwise

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
    ``latents``, ``features``), row i describing image i; ``names`` the images' relative paths
    when they come from a folder (used to pair reconstructions with originals).
    """

    description: str
    count: int
    carried: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)
    names: list[str] | None = field(default=None, repr=False)

    @property
    def has_images(self) -> bool:
        return True

    def batches(
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        raise NotImplementedError

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
                f"image {path}: 32-bit integer pixels in [{low}, {high}] cannot be mapped to "
                "[0, 1] (expected 16-bit values in [0, 65535])"
            )
        return array.astype(np.float32) / 65535.0
    array = array.astype(np.float32)  # mode "F"
    if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
        raise InputError(
            f"image {path}: float pixels must lie in [0, 1], found "
            f"[{np.nanmin(array)}, {np.nanmax(array)}]"
        )
    return array


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


def _decode(path: Path) -> DecodedImage:
    try:
        with Image.open(path) as img:
            width, height = img.size
            limit = Image.MAX_IMAGE_PIXELS
            if limit is not None and width * height > limit:
                raise InputError(
                    f"image {path} has {width}×{height} = {width * height} pixels, over the "
                    f"decompression-bomb limit of {limit} pixels"
                )
            multi_frame = getattr(img, "n_frames", 1) > 1
            img.load()
            if img.mode in _SIXTEEN_BIT_MODES or img.mode in ("I", "F"):
                grey = _high_depth_to_unit(img, path)
                pixels = torch.from_numpy(grey).unsqueeze(0).expand(3, -1, -1).contiguous()
                return DecodedImage(pixels, multi_frame)
            rgb = img.convert("RGB")
    except Image.DecompressionBombError:
        raise InputError(
            f"image {path} is over the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS} pixels"
        ) from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InputError(f"cannot read image {path}: {exc}".splitlines()[0]) from None
    array = np.asarray(rgb, dtype=np.uint8)
    return DecodedImage(torch.from_numpy(array.copy()).permute(2, 0, 1), multi_frame)


@dataclass
class _FolderBatch:
    """What a decoding worker hands back: the images, or the first error met (a message,
    because exceptions lose their text crossing the worker boundary)."""

    images: list[torch.Tensor]
    multi_frame: int = 0
    error: str | None = None


class _FolderDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> DecodedImage | str:
        try:
            return decode_image(self.paths[index])
        except InputError as exc:
            return str(exc)


def _collate(items: list[DecodedImage | str]) -> _FolderBatch:
    errors = [item for item in items if isinstance(item, str)]
    if errors:
        return _FolderBatch([], error=errors[0])
    decoded = [item for item in items if isinstance(item, DecodedImage)]
    return _FolderBatch(
        [item.pixels for item in decoded], multi_frame=sum(item.multi_frame for item in decoded)
    )


def _to_unit_float(pixels: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 (sent as such, 4× less to copy) or float pixels → float32 in ``[0, 1]`` on device."""
    moved = pixels.to(device, non_blocking=True)
    return moved.float().div_(255.0) if pixels.dtype == torch.uint8 else moved.float()


class FolderSource(SampleSource):
    """Images from a folder tree, decoded with PIL in DataLoader workers.

    With ``workers=None`` small folders are decoded in the main process (starting workers
    costs more than it saves) and larger ones by up to 8 workers, one per core. After a full
    pass, ``multi_frame`` counts the files of which only the first frame was used.
    """

    def __init__(self, folder: Path) -> None:
        if not folder.exists():
            raise InputError(f"path {folder} does not exist")
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder")
        self.paths = list_images(folder)
        if not self.paths:
            raise InputError(f"folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        self.multi_frame = 0
        super().__init__(
            description=str(folder),
            count=len(self.paths),
            names=[path.relative_to(folder).as_posix() for path in self.paths],
        )

    def default_workers(self) -> int:
        if self.count < 512:
            return 0
        return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)

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
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(
            _FolderDataset(self.paths),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.default_workers() if workers is None else workers,
            collate_fn=_collate,
        )
        self.multi_frame = 0
        for batch in loader:
            if batch.error is not None:
                raise InputError(batch.error)
            self.multi_frame += batch.multi_frame
            images = batch.images
            if all(im.shape == images[0].shape and im.dtype == images[0].dtype for im in images):
                stacked = torch.stack(images)
                if device.type == "cuda":
                    stacked = stacked.pin_memory()
                yield _to_unit_float(stacked, device)
            else:
                yield [_to_unit_float(im, device) for im in images]


# -- arrays ------------------------------------------------------------------------------------

#: Arrays an ``.npz`` may carry beside (or instead of) ``images``, with their required form.
CARRIED_KEYS = ("labels", "factors", "latents", "features")


def _describe(array: np.ndarray) -> str:
    if array.size and np.issubdtype(array.dtype, np.number):
        return f"shape {array.shape}, dtype {array.dtype}, range [{array.min()}, {array.max()}]"
    return f"shape {array.shape}, dtype {array.dtype}"


def check_image_array(array: np.ndarray, what: str) -> np.ndarray:
    """Validate images (``docs/contracts.md`` §4) and return them as NCHW.

    uint8 in [0, 255] or float in [0, 1]; NHWC or NCHW with 1 or 3 channels; at least one
    image and one pixel. Anything else is an :class:`InputError` naming ``what`` and stating the
    shape, dtype and range found.
    """
    if array.ndim != 4:
        raise InputError(f"{what} must be 4-D images (NHWC or NCHW), found {_describe(array)}")
    if array.shape[1] in (1, 3) and array.shape[3] not in (1, 3):
        layout = "NCHW"
    elif array.shape[3] in (1, 3):
        layout = "NHWC"
    else:
        raise InputError(
            f"{what} must have 1 or 3 channels (NHWC or NCHW), found {_describe(array)}"
        )
    if 0 in array.shape:
        raise InputError(f"{what} holds no images or no pixels ({_describe(array)})")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise InputError(f"{what}: float images must lie in [0, 1], found {_describe(array)}")
    else:
        raise InputError(
            f"{what} must be uint8 in [0, 255] or float in [0, 1], found {_describe(array)}"
        )
    return array.transpose(0, 3, 1, 2) if layout == "NHWC" else array


def check_carried(
    arrays: dict[str, np.ndarray], count: int | None, what: str
) -> dict[str, torch.Tensor]:
    """Validate the arrays carried beside images and return them as tensors.

    ``labels`` (N,) and ``factors`` (N, K) must be integers (int64 on return); ``latents``
    (N, D) and ``features`` (N, D) finite floats (float32 on return). Every array must have the
    same N, and ``count`` images when given.
    """
    out: dict[str, torch.Tensor] = {}
    for key, array in arrays.items():
        integer = key in ("labels", "factors")
        ndim = 1 if key == "labels" else 2
        if array.ndim != ndim or 0 in array.shape:
            shape = "(N,)" if ndim == 1 else "(N, D)" if not integer else "(N, K)"
            raise InputError(
                f"{what}: {key} must be a non-empty {shape} array, found {_describe(array)}"
            )
        if integer:
            if np.issubdtype(array.dtype, np.integer):
                pass
            elif (
                np.issubdtype(array.dtype, np.floating)
                and np.isfinite(array).all()
                and (array == np.round(array)).all()
            ):
                pass
            else:
                raise InputError(f"{what}: {key} must be integers, found {_describe(array)}")
            out[key] = torch.from_numpy(np.ascontiguousarray(array).astype(np.int64))
        else:
            if not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.bool_):
                raise InputError(f"{what}: {key} must be numbers, found {_describe(array)}")
            if not np.isfinite(array).all():
                raise InputError(f"{what}: {key} contain non-finite values ({_describe(array)})")
            out[key] = torch.from_numpy(np.ascontiguousarray(array).astype(np.float32))
    counts = {key: int(t.shape[0]) for key, t in out.items()}
    if count is not None:
        counts = {"images": count, **counts}
    if len(set(counts.values())) > 1:
        found = ", ".join(f"{n} {key}" for key, n in counts.items())
        raise InputError(f"{what}: the arrays disagree on the number of rows ({found})")
    return out


def load_array_file(path: Path) -> tuple[np.ndarray | None, dict[str, torch.Tensor]]:
    """Read a sample array file: images (NCHW, or ``None``) and the arrays carried with them.

    ``.npy`` holds images. ``.npz`` holds ``images`` (or a single array of any other name) and
    optionally ``labels``, ``factors``, ``latents`` and ``features`` (see
    :func:`check_carried`); a file with no images must carry at least one of those. Any other
    key is an :class:`InputError`.
    """
    if not path.exists():
        raise InputError(f"path {path} does not exist")
    carried: dict[str, np.ndarray] = {}
    try:
        if path.suffix == ".npy":
            images = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                keys = list(data.files)
                carried = {k: np.asarray(data[k]) for k in keys if k in CARRIED_KEYS}
                rest = [k for k in keys if k not in CARRIED_KEYS]
                if "images" in rest:
                    images = np.asarray(data["images"])
                    rest.remove("images")
                elif len(rest) == 1 and not carried:
                    images = np.asarray(data[rest.pop()])
                else:
                    images = None
                if rest:
                    raise InputError(
                        f"array file {path} has unknown key(s) {', '.join(rest)} (known: "
                        f"images, {', '.join(CARRIED_KEYS)})"
                    )
                if images is None and not carried:
                    raise InputError(f"array file {path} holds no arrays")
        else:
            raise InputError(f"{path}: sample arrays must be .npy or .npz")
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(f"cannot read array file {path}: {exc}".splitlines()[0]) from None
    if images is not None:
        images = check_image_array(images, f"array {path}")
    count = int(images.shape[0]) if images is not None else None
    return images, check_carried(carried, count, f"array file {path}")


class ArraySource(SampleSource):
    """Images (and carried arrays) from an ``.npy``/``.npz`` file, or from an in-memory array.

    A file may hold no images, only carried arrays (``features``, ``latents`` ...): it then
    serves the metrics that need those and nothing else.
    """

    def __init__(
        self,
        path: Path | None = None,
        *,
        array: np.ndarray | None = None,
        carried: dict[str, torch.Tensor] | None = None,
        description: str | None = None,
    ) -> None:
        if path is not None:
            self.array, carried = load_array_file(path)
            description = str(path)
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
        picked = torch.from_numpy(np.ascontiguousarray(self.array[list(indices)]))
        return list(picked.float().div_(scale))

    def batches(
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        if self.array is None:
            raise InputError(f"{self.description} holds no images")
        scale = 255.0 if self.array.dtype == np.uint8 else 1.0
        for start in range(0, self.count, batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(self.array[start : start + batch_size]))
            yield chunk.to(device, non_blocking=True).float().div_(scale)


def array_source(images: Any, what: str) -> ArraySource:
    """An in-memory image tensor or array (uint8 or float in [0, 1], NCHW or NHWC) as a source."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    array = check_image_array(np.asarray(images), what)
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
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        for start in range(0, self.count, batch_size):
            yield self.images[start : start + batch_size].to(device, non_blocking=True).float()


# -- models ------------------------------------------------------------------------------------


class ModelSource(SampleSource):
    """Samples drawn from a loaded model in batches with a seeded generator.

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
    ) -> None:
        if count < 1:
            raise InputError(f"--num-samples must be positive, got {count}")
        super().__init__(description=description, count=count)
        self.model = model
        self.seed = seed
        self.sampler = sampler
        self.steps = steps
        self.sample_batch = batch_size or DEFAULT_SAMPLE_BATCH

    def batches(
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        """Sample in model calls of ``sample_batch`` images (the seed fixes the samples for a
        given ``sample_batch``); the runner's extraction ``batch_size`` does not matter here."""
        batch_size = self.sample_batch
        generator = torch.Generator(device=self.model.device).manual_seed(self.seed)
        done = 0
        while done < self.count:
            k = min(batch_size, self.count - done)
            try:
                images = self.model.sample(
                    k,
                    batch_size=batch_size,
                    generator=generator,
                    sampler=self.sampler,
                    steps=self.steps,
                )
            except ValueError as exc:  # samplers refuse bad settings with ValueError
                raise InputError(f"{self.description}: {exc}".splitlines()[0]) from None
            yield quantize_to_uint8_levels(images.to(device).float())
            done += k


def source_from_path(path: str | os.PathLike[str]) -> SampleSource:
    """A folder or an array file."""
    p = Path(path)
    if not p.exists():
        raise InputError(f"path {p} does not exist")
    if p.is_dir():
        return FolderSource(p)
    if p.suffix in (".npy", ".npz"):
        return ArraySource(p)
    raise InputError(f"{p} is neither a folder of images nor an .npy/.npz array")
