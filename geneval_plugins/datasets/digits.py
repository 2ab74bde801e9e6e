"""Dataset ``digits``: scikit-learn's bundled 8×8 handwritten digits (offline, no download).

1797 greyscale images with 17 grey levels (0–16), scaled to ``[0, 1]`` by dividing by 16,
and labels 0–9. The split is deterministic and stratified by label: 70 % ``train``
(1257 images), 15 % ``val`` and 15 % ``test`` (270 each), drawn with ``random_state=0``.

Reference: Alpaydin & Kaynak, "Optical Recognition of Handwritten Digits", UCI ML
Repository (1998), as packaged by :func:`sklearn.datasets.load_digits`.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

from geneval.plugin import ImageSet, InputError, hookimpl
from geneval_reference_stats import shipped_stats_path

if TYPE_CHECKING:
    import numpy as np

SPLIT_SEED = 0


@lru_cache(maxsize=1)
def _split_indices() -> dict[str, np.ndarray]:
    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    labels = load_digits().target
    index = np.arange(len(labels))
    train, rest = train_test_split(index, test_size=0.3, stratify=labels, random_state=SPLIT_SEED)
    val, test = train_test_split(
        rest, test_size=0.5, stratify=labels[rest], random_state=SPLIT_SEED
    )
    return {"train": np.sort(train), "val": np.sort(val), "test": np.sort(test), "all": index}


class DigitsDataset:
    """scikit-learn's 8×8 digits as float images in ``[0, 1]``, shape (N, 1, 8, 8)."""

    name = "digits"
    splits = ("train", "val", "test", "all")
    default_split = "train"
    default_extractor = "digits-cnn"
    image_shape = (1, 8, 8)

    def reference_stats(self, split: str, extractor: str) -> Path | None:
        """The shipped statistics of ``split`` for ``extractor`` (with per-image features),
        ``None`` when none ship. The runner uses them only when their provenance matches."""
        return shipped_stats_path(self.name, split, extractor)

    def load(self, split: str) -> ImageSet:
        """Images (float32, ``[0, 1]``) and int64 labels of one split."""
        import numpy as np
        import torch

        if split not in self.splits:
            raise InputError(
                f"dataset digits has no split {split!r} (choose from {', '.join(self.splits)})"
            )
        from sklearn.datasets import load_digits  # imported on use: keeps the CLI start fast

        bunch = load_digits()
        idx = _split_indices()[split]
        images = torch.from_numpy(bunch.images[idx].astype(np.float32) / 16.0).unsqueeze(1)
        labels = torch.from_numpy(bunch.target[idx].astype(np.int64))
        return ImageSet(images=images.contiguous(), labels=labels)


@hookimpl
def geneval_register_datasets(register) -> None:
    register(DigitsDataset())
