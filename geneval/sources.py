"""Sample sources: image folders, sample arrays, model plugins and datasets (DESIGN §3–4).

Every source yields batches of images for the runner. A batch is either a float tensor in
``[0, 1]`` (N, C, H, W) or — for image folders of mixed sizes — a list of such tensors, one per
image. Sources know how many images they hold (``count``) so progress bars have a total.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from geneval.api import GenerativeModel, ImageSet
from geneval.errors import InputError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
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
    """Base class: a description for reports, an image count, and batched iteration."""

    description: str
    count: int
    labels: torch.Tensor | None = field(default=None, repr=False)

    def batches(
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        raise NotImplementedError


# -- image folders -----------------------------------------------------------------------------


def list_images(folder: Path) -> list[Path]:
    """All image files below ``folder`` (recursive), sorted for a stable order."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
    )


def decode_image(path: Path) -> torch.Tensor:
    """Decode one image file with PIL to a uint8 RGB tensor (3, H, W).

    Grey, palette, CMYK and RGBA images are converted to RGB (alpha is dropped).
    A file PIL cannot read is an :class:`InputError` naming it.
    """
    try:
        with Image.open(path) as img:
            img.load()
            rgb = img.convert("RGB")
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise InputError(f"cannot read image {path}: {exc}") from None
    array = np.asarray(rgb, dtype=np.uint8)
    return torch.from_numpy(array.copy()).permute(2, 0, 1)


class _FolderDataset(torch.utils.data.Dataset):
    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> torch.Tensor | str:
        try:
            return decode_image(self.paths[index])
        except InputError as exc:  # exceptions cross the worker boundary badly: pass a message
            return str(exc)


def _collate(items: list[torch.Tensor | str]) -> list[torch.Tensor] | torch.Tensor:
    for item in items:
        if isinstance(item, str):
            raise InputError(item)
    if all(item.shape == items[0].shape for item in items):
        return torch.stack(items)
    return list(items)


class FolderSource(SampleSource):
    """Images from a folder tree, decoded with PIL in DataLoader workers.

    With ``workers=None`` small folders are decoded in the main process (starting workers
    costs more than it saves) and larger ones by up to 8 workers, one per core.
    """

    def __init__(self, folder: Path) -> None:
        if not folder.exists():
            raise InputError(f"path {folder} does not exist")
        if not folder.is_dir():
            raise InputError(f"{folder} is not a folder")
        self.paths = list_images(folder)
        if not self.paths:
            raise InputError(f"folder {folder} contains no images ({', '.join(IMAGE_EXTENSIONS)})")
        super().__init__(description=str(folder), count=len(self.paths))

    def default_workers(self) -> int:
        if self.count < 512:
            return 0
        return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)

    def batches(
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        loader = torch.utils.data.DataLoader(
            _FolderDataset(self.paths),
            batch_size=batch_size,
            shuffle=False,
            num_workers=self.default_workers() if workers is None else workers,
            collate_fn=_collate,
            pin_memory=device.type == "cuda",
        )
        for batch in loader:
            if isinstance(batch, list):
                yield [b.to(device, non_blocking=True).float().div_(255.0) for b in batch]
            else:
                yield batch.to(device, non_blocking=True).float().div_(255.0)


# -- arrays ------------------------------------------------------------------------------------


def _describe(array: np.ndarray) -> str:
    if array.size and np.issubdtype(array.dtype, np.number):
        return f"shape {array.shape}, dtype {array.dtype}, range [{array.min()}, {array.max()}]"
    return f"shape {array.shape}, dtype {array.dtype}"


def load_image_array(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a sample array (DESIGN §4) and return it as NCHW plus labels if present.

    ``.npy``, or ``.npz`` with the key ``images`` (or its only array); uint8 in [0, 255] or
    float in [0, 1]; NHWC or NCHW with 1 or 3 channels. Anything else is an
    :class:`InputError` stating the shape, dtype and range found.
    """
    if not path.exists():
        raise InputError(f"path {path} does not exist")
    labels = None
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif path.suffix == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if "images" in data.files:
                    array = data["images"]
                elif len(data.files) == 1:
                    array = data[data.files[0]]
                else:
                    raise InputError(
                        f"array file {path} has no 'images' key and several arrays "
                        f"({', '.join(data.files)})"
                    )
                if "labels" in data.files:
                    labels = np.asarray(data["labels"])
        else:
            raise InputError(f"{path}: sample arrays must be .npy or .npz")
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read array file {path}: {exc}") from None
    if array.ndim != 4:
        raise InputError(
            f"array {path} must be 4-D images (NHWC or NCHW), found {_describe(array)}"
        )
    if array.shape[1] in (1, 3) and array.shape[3] not in (1, 3):
        layout = "NCHW"
    elif array.shape[3] in (1, 3):
        layout = "NHWC"
    else:
        raise InputError(
            f"array {path} must have 1 or 3 channels (NHWC or NCHW), found {_describe(array)}"
        )
    if array.shape[0] == 0:
        raise InputError(f"array {path} holds no images ({_describe(array)})")
    if array.dtype == np.uint8:
        pass
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or array.min() < 0.0 or array.max() > 1.0:
            raise InputError(f"float array {path} must lie in [0, 1], found {_describe(array)}")
    else:
        raise InputError(
            f"array {path} must be uint8 in [0, 255] or float in [0, 1], found {_describe(array)}"
        )
    if layout == "NHWC":
        array = array.transpose(0, 3, 1, 2)
    if labels is not None and labels.shape[:1] != array.shape[:1]:
        raise InputError(f"array file {path}: {len(labels)} labels for {len(array)} images")
    return array, labels


class ArraySource(SampleSource):
    """Images from an ``.npy``/``.npz`` array file."""

    def __init__(self, path: Path) -> None:
        self.array, labels = load_image_array(path)
        super().__init__(
            description=str(path),
            count=int(self.array.shape[0]),
            labels=torch.from_numpy(labels) if labels is not None else None,
        )

    def batches(
        self, batch_size: int, device: torch.device, workers: int | None
    ) -> Iterator[Batch]:
        scale = 255.0 if self.array.dtype == np.uint8 else 1.0
        for start in range(0, self.count, batch_size):
            chunk = torch.from_numpy(np.ascontiguousarray(self.array[start : start + batch_size]))
            yield chunk.to(device, non_blocking=True).float().div_(scale)


# -- in-memory images (datasets) ---------------------------------------------------------------


class TensorSource(SampleSource):
    """Images already in memory, e.g. a dataset split."""

    def __init__(self, description: str, data: ImageSet) -> None:
        images = data.images
        if images.ndim != 4 or images.shape[0] == 0:
            raise InputError(f"{description}: expected a non-empty (N, C, H, W) image tensor")
        self.images = images
        super().__init__(description=description, count=int(images.shape[0]), labels=data.labels)

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
            images = self.model.sample(
                k,
                batch_size=batch_size,
                generator=generator,
                sampler=self.sampler,
                steps=self.steps,
            )
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
