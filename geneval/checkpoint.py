"""Model checkpoints: one safetensors file whose metadata holds the model name and its config.

safetensors stores tensors only, so loading a checkpoint can never run code. The file's
metadata holds one JSON entry, ``geneval``: ``model`` (the family that wrote it),
``geneval_version`` and ``config`` (architecture, schedule, training seed and command ...).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from geneval import __version__
from geneval.errors import InputError
from geneval.io import atomic_path


def save_checkpoint(
    path: str | Path,
    tensors: Mapping[str, torch.Tensor],
    config: Mapping[str, Any],
    *,
    model: str,
    force: bool,
) -> Path:
    """Write ``tensors`` and ``config`` to ``path`` atomically.

    An existing ``path`` is refused unless ``force``.
    """
    # One metadata entry: safetensors does not keep the order of several, and a fixed byte
    # layout lets a retrained checkpoint be compared by its sha256.
    metadata = {
        "geneval": json.dumps(
            {"model": model, "geneval_version": __version__, "config": dict(config)},
            sort_keys=True,
        )
    }
    plain = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path, force=force, what="checkpoint") as tmp:
        save_file(plain, str(tmp), metadata=metadata)
    return Path(path)


def load_checkpoint(
    path: str | Path, *, model: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` for ``model``.

    Returns ``(tensors, config)``. A missing file, a file that is not safetensors, or a
    checkpoint of another model family is an :class:`InputError`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"checkpoint {path} is not a readable safetensors file ({exc})") from None
    try:
        header = json.loads(metadata.get("geneval", "{}"))
    except json.JSONDecodeError:
        raise InputError(f"checkpoint {path} has an unreadable geneval header") from None
    found = header.get("model")
    if found != model:
        raise InputError(f"checkpoint {path} is for model {found!r}, not {model!r}")
    return tensors, dict(header.get("config", {}))


def prefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``{"prefix.key": tensor}``: several state dicts (``ema``, ``net``, ``opt``) in one file."""
    return {f"{prefix}.{k}": v for k, v in tensors.items()}


def unprefixed(prefix: str, tensors: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The tensors stored under ``prefix.``, prefix removed (inverse of :func:`prefixed`)."""
    start = len(prefix) + 1
    return {k[start:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def load_weights(module: torch.nn.Module, state: Mapping[str, torch.Tensor], path: Path) -> None:
    """``module.load_state_dict(state)``; a mismatch is an :class:`InputError` naming ``path``."""
    try:
        module.load_state_dict(state)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise InputError(f"checkpoint {path} does not match its config ({first})") from None
