"""Model checkpoints: one safetensors file with a JSON config and prefixed tensors.

safetensors stores tensors only, so loading a checkpoint can never run code. Every model family
writes the same layout:

* one metadata entry, ``geneval``, holding the JSON config
  ``{family, arch, image_shape, sampling, train: {seed, steps_done, options, ...}}``:
  ``arch`` is what builds the network, ``image_shape`` the (C, H, W) of the images it models,
  ``sampling`` the default sampler and each sampler's settings, ``train`` the training run;
* tensors under five prefixes: ``net.`` (the trained weights, with the network's own parameter
  names, e.g. an RBM's ``net.weight``, ``net.visible_bias``, ``net.hidden_bias``), ``ema.``
  (their exponential moving average, where the family keeps one), ``opt.`` (optimiser moments,
  by parameter name), ``rng.`` (random generator states) and ``state.`` (whatever else an exact
  resume needs: the data order, replay buffers, persistent chains).

A checkpoint written for sampling only (``save_training_state=false``) keeps the weights used
for sampling (``ema.`` where there is one, else ``net.``) and nothing else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from geneval import __version__
from geneval.errors import InputError
from geneval.io import atomic_path

#: The tensor prefixes of the layout (see the module docstring).
PREFIXES = ("net", "ema", "opt", "rng", "state")
#: The top-level keys of the JSON config.
CONFIG_KEYS = ("family", "arch", "image_shape", "sampling", "train")


@dataclass
class Checkpoint:
    """A checkpoint in memory: its config and its prefixed tensors."""

    family: str
    arch: dict[str, Any]
    image_shape: tuple[int, int, int]
    sampling: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)

    @property
    def config(self) -> dict[str, Any]:
        """The JSON config ``{family, arch, image_shape, sampling, train}``."""
        return {
            "family": self.family,
            "arch": dict(self.arch),
            "image_shape": list(self.image_shape),
            "sampling": dict(self.sampling),
            "train": dict(self.train),
        }

    def group(self, prefix: str) -> dict[str, torch.Tensor]:
        """The tensors stored under ``prefix.``, prefix removed."""
        return unprefixed(prefix, self.tensors)

    def sampling_weights(self) -> dict[str, torch.Tensor]:
        """The weights a model samples with: ``ema.`` where there are any, else ``net.``."""
        return self.group("ema") or self.group("net")

    @property
    def has_training_state(self) -> bool:
        """Whether the file holds the raw weights, optimiser and random states of a run."""
        return bool(self.group("net")) and bool(self.group("opt")) and bool(self.group("rng"))


def save_checkpoint(path: str | Path, checkpoint: Checkpoint, *, force: bool) -> Path:
    """Write ``checkpoint`` to ``path`` atomically; an existing file is refused unless ``force``."""
    bad = sorted(k for k in checkpoint.tensors if k.split(".", 1)[0] not in PREFIXES)
    if bad:
        raise ValueError(f"tensor {bad[0]!r} has no layout prefix ({', '.join(PREFIXES)})")
    # One metadata entry: safetensors does not keep the order of several, and a fixed byte
    # layout lets a retrained checkpoint be compared by its sha256.
    header = {"geneval_version": __version__, **checkpoint.config}
    metadata = {"geneval": json.dumps(header, sort_keys=True)}
    plain = {k: v.detach().to("cpu").contiguous() for k, v in checkpoint.tensors.items()}
    with atomic_path(path, force=force, what="checkpoint") as tmp:
        save_file(plain, str(tmp), metadata=metadata)
    return Path(path)


def load_checkpoint(path: str | Path, *, family: str) -> Checkpoint:
    """Read a checkpoint of model family ``family``.

    A missing file, a file that is not safetensors, a checkpoint of another family or one
    without the layout's config is an :class:`InputError` naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(f"checkpoint {path} is not a readable safetensors file ({exc})") from None
    try:
        header = json.loads(metadata.get("geneval", "{}"))
    except json.JSONDecodeError:
        raise InputError(f"checkpoint {path} has an unreadable geneval header") from None
    found = header.get("family", header.get("model"))
    if found != family:
        raise InputError(f"checkpoint {path} is for model {found!r}, not {family!r}")
    missing = [k for k in CONFIG_KEYS if k not in header]
    if missing:
        raise InputError(
            f"checkpoint {path} predates the current layout (no {', '.join(missing)}); "
            "retrain it with geneval train"
        )
    return Checkpoint(
        family=found,
        arch=dict(header["arch"]),
        image_shape=tuple(int(v) for v in header["image_shape"]),  # type: ignore[arg-type]
        sampling=dict(header["sampling"]),
        train=dict(header["train"]),
        tensors=tensors,
    )


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
