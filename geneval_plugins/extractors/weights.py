"""Published network weights of the bundled extractors, and reading them.

Every bundled extractor whose weights are too large to ship (Inception, VGG-16, DINOv2)
declares its file as a :class:`geneval.plugin.WeightsFile` in ``published_weights`` and finds
it with :func:`geneval.plugin.find_weights`, in this order:

1. the path given on the command line (``--extractor-weights [NAME=]PATH``) or to
   ``load(weights=...)``;
2. the environment variable the extractor names (e.g. ``GENEVAL_INCEPTION_WEIGHTS``);
3. the torch hub checkpoint cache, ``$TORCH_HOME/hub/checkpoints/<file name>``;
4. the published URL, downloaded once into that cache (the sha256, or the prefix that torch
   hub file names carry, is checked before the file is moved into place).

An explicitly named file that does not exist is an error (no fallback), as is a failed
download; both messages say where to put the file and name ``geneval weights fetch NAME``.
Weights are read with ``torch.load(weights_only=True)``: a weights file can never run code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from geneval.plugin import InputError, WeightsFile, find_weights, hub_checkpoint_dir, quote

if TYPE_CHECKING:
    import torch


def find(
    file: WeightsFile, weights: str | os.PathLike[str] | None = None, *, download: bool = True
) -> Path:
    """``file`` by the lookup order of the module docstring
    (:func:`geneval.plugin.find_weights`)."""
    return find_weights(file, weights, download_missing=download)


def load_state_dict(path: Path, what: str) -> dict[str, torch.Tensor]:
    """``torch.load(path, weights_only=True)`` as a flat state dict (``state_dict`` unwrapped).

    A file that cannot be read, or that holds no mapping of tensors, is an
    :class:`InputError` naming it.
    """
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001
        message = f"{what} {quote(path)} could not be read ({exc})"
        raise InputError(message.splitlines()[0]) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise InputError(f"{what} {path} hold no state dict (a mapping of names to tensors)")
    return state


__all__ = ["find", "hub_checkpoint_dir", "load_state_dict"]
