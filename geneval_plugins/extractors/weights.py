"""Finding published network weights: an explicit path, a variable, the torch hub cache, a URL.

Every bundled extractor whose weights are too large to ship (Inception, VGG-16, DINOv2) finds
its file the same way, in this order:

1. the path given on the command line (``--extractor-weights``) or to ``load(weights=...)``;
2. the environment variable the extractor names (e.g. ``GENEVAL_INCEPTION_WEIGHTS``);
3. the torch hub checkpoint cache, ``$TORCH_HOME/hub/checkpoints/<file name>``;
4. the published URL, downloaded once into that cache (the sha256 prefix that torch hub
   file names carry is checked).

An explicitly named file that does not exist is an error (no fallback), as is a failed
download; both messages say where to put the file. Weights are read with
``torch.load(weights_only=True)``: a weights file can never run code.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geneval.plugin import InputError, progress_enabled, quote

if TYPE_CHECKING:
    import torch


def hub_checkpoint_dir() -> Path:
    """The torch hub checkpoint cache, ``$TORCH_HOME/hub/checkpoints`` (as torch resolves it)."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


@dataclass(frozen=True)
class PublishedWeights:
    """Where one extractor's published weights live and how they are looked up."""

    what: str  # e.g. "Inception weights"
    filename: str
    url: str
    env: str  # the environment variable that may name the file
    hash_prefix: str | None = None  # the sha256 prefix in the file name (torch hub convention)
    option: str = "--extractor-weights"

    def missing_message(self, reason: str) -> str:
        return (
            f"{self.what} {self.filename} not found ({reason}); download it from {self.url} and "
            f"put it in {hub_checkpoint_dir()}, or pass {self.option} PATH or set {self.env}"
        )

    def find(self, weights: str | os.PathLike[str] | None = None, *, download: bool = True) -> Path:
        """The weights file, looked up in the order of the module docstring."""
        import torch

        for given, what in ((weights, self.option), (os.environ.get(self.env), self.env)):
            if given:
                path = Path(given).expanduser()
                if not path.is_file():
                    raise InputError(f"{what}: {self.what} file {path} does not exist")
                return path
        cached = hub_checkpoint_dir() / self.filename
        if cached.is_file():
            return cached
        if not download:
            raise InputError(self.missing_message("not in the torch hub cache"))
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(
                self.url, str(cached), hash_prefix=self.hash_prefix, progress=progress_enabled()
            )
        except Exception as exc:  # noqa: BLE001 - any download failure becomes one clear line
            raise InputError(
                self.missing_message(f"download failed: {exc}".splitlines()[0])
            ) from None
        return cached


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
