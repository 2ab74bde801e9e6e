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

A checkpoint is a user's file: :func:`load_checkpoint` checks its config's structure and types
(:func:`check_config`) before anything is built from it, so that a nested, mistyped or huge
value is an :class:`~geneval.errors.InputError` naming the file and the key, never a crash
or an allocation. The network a config describes is checked against the tensors the file
actually holds before it is allocated (:func:`geneval.training.build_checked_network`).
"""

from __future__ import annotations

import json
import math
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
from geneval.text import quote

#: The tensor prefixes of the layout (see the module docstring).
PREFIXES = ("net", "ema", "opt", "rng", "state")
#: The top-level keys of the JSON config.
CONFIG_KEYS = ("family", "arch", "image_shape", "sampling", "train")
#: Image channels a checkpoint may model (those of docs/contracts.md §4), and the largest side.
IMAGE_CHANNELS = (1, 3)
MAX_IMAGE_SIDE = 8192
#: Largest magnitude of an integer in a config (every count, size and seed fits in it).
MAX_CONFIG_INT = 2**63 - 1
#: Longest string and longest list of a config value; deepest nesting of the ``train`` record.
MAX_CONFIG_STRING = 4096
MAX_CONFIG_LIST = 100_000
MAX_TRAIN_DEPTH = 6


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
        raise InputError(f"checkpoint {quote(path)} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(
            f"checkpoint {quote(path)} is not a readable safetensors file ({exc})"
        ) from None
    try:
        header = json.loads(metadata.get("geneval", "{}"))
    except (ValueError, RecursionError):  # JSONDecodeError, over-long integers, deep nesting
        raise InputError(f"checkpoint {quote(path)} has an unreadable geneval header") from None
    if not isinstance(header, dict):
        raise InputError(
            f"checkpoint {quote(path)}: its geneval header is {_json_type(header)}, not a JSON "
            "object"
        )
    found = header.get("family", header.get("model"))
    if found != family:
        shown = _short(found) if isinstance(found, str | None) else _json_type(found)
        raise InputError(f"checkpoint {quote(path)} is for model {shown}, not {family!r}")
    missing = [k for k in CONFIG_KEYS if k not in header]
    if missing:
        raise InputError(
            f"checkpoint {quote(path)} predates the current layout (no {', '.join(missing)}); "
            "retrain it with geneval train"
        )
    check_config(header, path)
    return Checkpoint(
        family=found,
        arch=dict(header["arch"]),
        image_shape=tuple(header["image_shape"]),  # type: ignore[arg-type]
        sampling=dict(header["sampling"]),
        train=dict(header["train"]),
        tensors=tensors,
    )


def _json_type(value: Any) -> str:
    """The JSON kind of ``value`` in words, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object" if isinstance(value, dict) else type(value).__name__


def _short(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters (messages are one short line)."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _check_scalar(value: Any, key: str, path: Path) -> None:
    """A config scalar: null, a boolean, a bounded integer, a finite float or a short string."""
    if value is None or isinstance(value, bool):
        return
    if isinstance(value, int):
        if abs(value) > MAX_CONFIG_INT:
            raise InputError(
                f"checkpoint {quote(path)}: config {key} = {_short(value)} is out of range "
                f"(|value| ≤ 2^63 − 1)"
            )
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InputError(f"checkpoint {quote(path)}: config {key} = {value} is not finite")
        return
    if isinstance(value, str):
        if len(value) > MAX_CONFIG_STRING:
            raise InputError(
                f"checkpoint {quote(path)}: config {key} is a string of {len(value)} characters "
                f"(at most {MAX_CONFIG_STRING})"
            )
        return
    raise InputError(
        f"checkpoint {quote(path)}: config {key} is {_json_type(value)}, expected a number, "
        "a string, a boolean or null"
    )


def _check_flat(value: Any, key: str, path: Path) -> None:
    """A scalar, or a list of at most :data:`MAX_CONFIG_LIST` scalars (no deeper nesting)."""
    if isinstance(value, list):
        if len(value) > MAX_CONFIG_LIST:
            raise InputError(
                f"checkpoint {quote(path)}: config {key} is a list of {len(value)} values "
                f"(at most {MAX_CONFIG_LIST})"
            )
        for i, item in enumerate(value):
            _check_scalar(item, f"{key}[{i}]", path)
        return
    _check_scalar(value, key, path)


def _check_object(value: Any, key: str, path: Path) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InputError(
            f"checkpoint {quote(path)}: config {key} is {_json_type(value)}, expected a JSON object"
        )
    return value


def _check_tree(value: Any, key: str, path: Path, depth: int) -> None:
    """Any JSON below ``key``, nested at most :data:`MAX_TRAIN_DEPTH` deep, bounded scalars."""
    if depth > MAX_TRAIN_DEPTH:
        raise InputError(
            f"checkpoint {quote(path)}: config {key} is nested more than {MAX_TRAIN_DEPTH} "
            "levels deep"
        )
    if isinstance(value, dict):
        for name, item in value.items():
            _check_tree(item, f"{key}.{name}", path, depth + 1)
    elif isinstance(value, list):
        if len(value) > MAX_CONFIG_LIST:
            raise InputError(
                f"checkpoint {quote(path)}: config {key} is a list of {len(value)} values "
                f"(at most {MAX_CONFIG_LIST})"
            )
        for i, item in enumerate(value):
            _check_tree(item, f"{key}[{i}]", path, depth + 1)
    else:
        _check_scalar(value, key, path)


def check_config(header: Mapping[str, Any], path: Path) -> None:
    """Check the structure and types of a checkpoint's JSON config before anything uses it.

    * ``image_shape``: three integers (C, H, W), C one of :data:`IMAGE_CHANNELS`, H and W in
      [1, :data:`MAX_IMAGE_SIDE`];
    * ``arch``: an object whose values are scalars or flat lists of scalars;
    * ``sampling``: an object with a string ``sampler``; every other entry an object of
      scalars or flat lists (one sampler's settings);
    * ``train``: an object, nested at most :data:`MAX_TRAIN_DEPTH` levels, with integer
      ``seed`` and ``steps_done`` ≥ 0 where present.

    Scalars are null, booleans, integers of magnitude ≤ 2^63 − 1, finite floats and strings of
    at most :data:`MAX_CONFIG_STRING` characters. Anything else is an :class:`InputError`
    naming ``path`` and the key. What the values mean is the model family's to check.
    """
    shape = header["image_shape"]
    if (
        not isinstance(shape, list)
        or len(shape) != 3
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)
        or shape[0] not in IMAGE_CHANNELS
        or not all(1 <= v <= MAX_IMAGE_SIDE for v in shape[1:])
    ):
        raise InputError(
            f"checkpoint {quote(path)}: config image_shape = {_short(shape)} is not (C, H, W) "
            f"with C in {{{', '.join(map(str, IMAGE_CHANNELS))}}} and H, W in [1, {MAX_IMAGE_SIDE}]"
        )
    for name, value in _check_object(header["arch"], "arch", path).items():
        _check_flat(value, f"arch.{name}", path)
    sampling = _check_object(header["sampling"], "sampling", path)
    if not isinstance(sampling.get("sampler"), str):
        raise InputError(
            f"checkpoint {quote(path)}: config sampling.sampler is missing or not a string"
        )
    for name, settings in sampling.items():
        if name == "sampler":
            continue
        for key, value in _check_object(settings, f"sampling.{name}", path).items():
            _check_flat(value, f"sampling.{name}.{key}", path)
    train = _check_object(header["train"], "train", path)
    _check_tree(train, "train", path, 0)
    for key in ("seed", "steps_done"):
        value = train.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InputError(
                f"checkpoint {quote(path)}: config train.{key} = {_short(value)} is not an "
                "integer ≥ 0"
            )
    for key in ("options", "data"):
        if key in train:
            _check_object(train[key], f"train.{key}", path)


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
        raise InputError(f"checkpoint {quote(path)} does not match its config ({first})") from None
