"""Datasets ``cifar100`` and ``stl10``: torchvision's CIFAR-100 and STL-10, downloaded on first use.

torch-fidelity registers ``cifar100-train``/``cifar100-val`` and ``stl10-train``/``-test``/
``-unlabeled`` and computes their statistics from torchvision's downloads; no statistics of
them are published anywhere (clean-fid's table has neither), so they are datasets here, not
named statistics: ``--reference cifar100:train`` reads the images, and the feature cache keeps
each extractor's moments of them, so the features are computed once per extractor and
convention, and every metric (KID, precision/recall, grids, neighbours, ``--baseline`` with
the held-out split) gets what a dataset gives.

* ``cifar100``: splits ``train`` (50 000) and ``test`` (10 000; ``val`` is torch-fidelity's
  name for it), 32×32 RGB, the 100 fine labels.
* ``stl10``: splits ``train`` (5 000, labelled), ``test`` (8 000, labelled) and ``unlabeled``
  (100 000), 96×96 RGB; labels 0–9 (``unlabeled``: none).

Any split takes ``,n=N`` for its first N images (``stl10:unlabeled,n=50000``): a split is held
in memory as float32, 12 kB per CIFAR image and 110 kB per STL-10 image (all of ``unlabeled``
is 11 GB).

The archives are fetched by torchvision (its URLs and MD5 checksums) into
``$GENEVAL_CACHE/datasets/<name>`` and extracted there. Offline, put the archive
(``cifar-100-python.tar.gz``, ``stl10_binary.tar.gz``) in that folder: it is checked and
extracted without network access.

References
----------
.. [1] A. Krizhevsky, "Learning Multiple Layers of Features from Tiny Images", 2009.
.. [2] A. Coates, H. Lee, A. Y. Ng, "An Analysis of Single-Layer Networks in Unsupervised
   Feature Learning", AISTATS 2011.
.. [3] A. Obukhov et al., torch-fidelity, ``datasets.py`` (registered inputs).
"""

from __future__ import annotations

import contextlib
import re
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.plugin import ImageSet, InputError, geneval_cache_dir, hookimpl, quote

if TYPE_CHECKING:
    import numpy as np


def parse_split(dataset: str, spec: str, splits: tuple[str, ...]) -> tuple[str, int | None]:
    """``"train,n=500"`` → ``("train", 500)``; an unknown split or option is an
    :class:`InputError` naming it."""
    name, *options = [part.strip() for part in spec.split(",")]
    name = {"val": "test"}.get(name, name)
    if name not in splits:
        raise InputError(
            f"dataset {dataset} has no split {quote(name)} (choose from {', '.join(splits)})"
        )
    count: int | None = None
    for option in options:
        match = re.fullmatch(r"n=([0-9]{1,9})", option)
        if match is None or int(match.group(1)) < 1:
            raise InputError(
                f"dataset {dataset}: unknown option {quote(option)} in {quote(spec)} "
                "(a split takes n=N, N ≥ 1, for its first N images)"
            )
        count = int(match.group(1))
    return name, count


class TorchvisionDataset:
    """A torchvision image dataset fetched into the geneval cache on first use."""

    name = ""
    splits: tuple[str, ...] = ()
    default_split = "train"
    default_extractor = "inception-v3-fid"
    archive = ""

    def root(self) -> Path:
        """Where the archive and its files are kept: ``$GENEVAL_CACHE/datasets/<name>``."""
        return geneval_cache_dir() / "datasets" / self.name

    def _open(self, split: str, root: Path, download: bool) -> Any:
        raise NotImplementedError

    def _arrays(self, data: Any) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def _url(self) -> str:
        raise NotImplementedError

    def load(self, split: str) -> ImageSet:
        """Images (float32 in ``[0, 1]``, NCHW) and int64 labels of ``split`` (``,n=N``: its
        first N images), downloading the archive first if it is not in :meth:`root`."""
        import numpy as np
        import torch

        name, count = parse_split(self.name, split, self.splits)
        root = self.root()
        try:
            data = self._open(name, root, download=False)
        except RuntimeError:  # not there yet (torchvision: "Dataset not found or corrupted")
            try:
                root.mkdir(parents=True, exist_ok=True)
                # torchvision prints what it downloads and extracts: keep stdout for reports
                with contextlib.redirect_stdout(sys.stderr):
                    data = self._open(name, root, download=True)
            except (OSError, RuntimeError, ValueError) as exc:
                message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise InputError(
                    f"dataset {self.name}: could not download {self._url()} ({message}); "
                    f"without network access, download that file elsewhere and put it in "
                    f"{root} (it is checked and extracted there)"
                ) from None
        images, labels = self._arrays(data)
        if count is not None:
            images = images[:count]
            labels = None if labels is None else labels[:count]
        tensor = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
        return ImageSet(
            images=tensor,
            labels=None if labels is None else torch.from_numpy(labels.astype(np.int64)),
        )


class Cifar100(TorchvisionDataset):
    """CIFAR-100 (32×32 RGB, 100 fine labels): ``train`` 50 000, ``test`` 10 000 images."""

    name = "cifar100"
    splits = ("train", "test")

    def _open(self, split: str, root: Path, download: bool) -> Any:
        from torchvision.datasets import CIFAR100

        return CIFAR100(str(root), train=split == "train", download=download)

    def _url(self) -> str:
        from torchvision.datasets import CIFAR100

        return CIFAR100.url

    def _arrays(self, data: Any) -> tuple[np.ndarray, np.ndarray | None]:
        import numpy as np

        return data.data.transpose(0, 3, 1, 2), np.asarray(data.targets)


class Stl10(TorchvisionDataset):
    """STL-10 (96×96 RGB): ``train`` 5 000 and ``test`` 8 000 labelled images (labels 0–9),
    ``unlabeled`` 100 000."""

    name = "stl10"
    splits = ("train", "test", "unlabeled")

    def _open(self, split: str, root: Path, download: bool) -> Any:
        from torchvision.datasets import STL10

        return STL10(str(root), split=split, download=download)

    def _url(self) -> str:
        from torchvision.datasets import STL10

        return STL10.url

    def _arrays(self, data: Any) -> tuple[np.ndarray, np.ndarray | None]:
        import numpy as np

        labels = None if data.split == "unlabeled" else np.asarray(data.labels)
        return data.data, labels


@hookimpl
def geneval_register_datasets(register) -> None:
    """Register ``cifar100`` and ``stl10``."""
    register(Cifar100())
    register(Stl10())
