"""One resumable training loop for every model family, and the pieces it is made of.

A model family derives from :class:`TrainableFamily` and supplies only its network
(:meth:`~TrainableFamily.build_network`), its loss (:meth:`~TrainableFamily.loss`, which may
run a sampler and update the family's own state, such as a replay buffer) and its sampler
defaults (:meth:`~TrainableFamily.sampling`). The loop in :func:`train_family` does the rest,
the same way for every family:

* options: the given ones are checked against the family's ``train_options`` and completed
  from the defaults (a new run) or from the checkpoint (``--resume``, where options that fix
  the architecture may not change);
* seeding: the weights are initialised under ``torch.manual_seed(seed)``, minibatches come
  from a generator seeded with ``seed``, every other draw (noise, chains) from one seeded with
  ``seed + 1``;
* Adam with an optional linear warm-up, gradient-norm clipping and an exponential moving
  average of the weights (for families that declare ``ema_decay``);
* checkpoints in the one layout of :mod:`geneval.checkpoint`, written atomically every
  ``checkpoint_every`` steps and at the end, holding everything an exact resume needs: raw
  weights (``net.``), EMA (``ema.``), optimiser moments (``opt.``), random generator states
  (``rng.``), the data order and the family's state (``state.``). A resumed run equals an
  uninterrupted one tensor for tensor;
* a progress bar with the loss, and a closing line with the final loss.
"""

from __future__ import annotations

import copy
import hashlib
import math
import sys
from collections import deque
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from geneval.api import ImageSet
from geneval.checkpoint import (
    Checkpoint,
    load_checkpoint,
    load_weights,
    prefixed,
    save_checkpoint,
)
from geneval.errors import InputError
from geneval.family import TrainableFamily, TrainingStep, _first_line
from geneval.io import check_writable
from geneval.options import declared_options, resolve_options
from geneval.progress import note, progress_bar
from geneval.text import quote

if TYPE_CHECKING:
    from geneval.sources import SampleSource

#: Keys of ``state.`` that the loop itself uses (the data order); families use other names.
DATA_STATE_KEYS = ("data_generator", "data_order", "data_position")
#: The most elements (parameters and buffers) a network may hold: 2^30, 4 GiB of float32.
#: A config (a checkpoint's, or a new run's options) that describes more is refused before
#: anything is allocated (:func:`check_network`).
MAX_NETWORK_ELEMENTS = 2**30
#: What building a network from a checkpoint's config may raise when the config does not fit
#: the family (a missing key is reported apart, as such).
_CONFIG_ERRORS = (TypeError, ValueError, OverflowError, IndexError, ZeroDivisionError)


# -- pieces ------------------------------------------------------------------------------------


class ExponentialMovingAverage:
    """Shadow weights θ̄ ← d·θ̄ + (1 − d)·θ after each optimiser step (Polyak averaging).

    As used for DDPM and NCSN sampling (Ho et al. 2020, App. B; Song & Ermon 2020, technique 5).
    Buffers are copied, not averaged.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            if self.decay == 0.0:  # no averaging: the weights themselves, exactly
                s.copy_(p.detach())
            else:
                s.lerp_(p.detach(), 1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)


class MinibatchStream:
    """Endless shuffled minibatches: epochs without replacement, drawn with ``generator``.

    Each epoch draws a permutation and yields its consecutive slices of ``batch_size`` (an
    incomplete last slice is skipped; with fewer than ``batch_size`` images every batch is the
    whole, shuffled set). :meth:`state_dict` holds the generator, the epoch's permutation and
    the position in it, so a restored stream continues exactly where it stopped.
    """

    def __init__(self, data: torch.Tensor, batch_size: int, generator: torch.Generator) -> None:
        if data.shape[0] == 0:
            raise ValueError("no training data")
        if batch_size < 1:
            raise ValueError(f"batch size must be positive, got {batch_size}")
        self.data = data
        self.batch_size = batch_size
        self.generator = generator
        n = data.shape[0]
        self._stop = n - batch_size + 1 if n >= batch_size else 1
        self.order: torch.Tensor | None = None
        self.position = 0

    def __iter__(self) -> Iterator[torch.Tensor]:
        return self

    def __next__(self) -> torch.Tensor:
        if self.order is None or self.position >= self._stop:
            perm = torch.randperm(
                self.data.shape[0], generator=self.generator, device=self.generator.device
            )
            self.order = perm.to(self.data.device)
            self.position = 0
        start = self.position
        self.position += self.batch_size
        return self.data[self.order[start : start + self.batch_size]]

    def state_dict(self) -> dict[str, torch.Tensor]:
        order = self.order if self.order is not None else torch.empty(0, dtype=torch.long)
        return {
            "data_generator": self.generator.get_state(),
            "data_order": order.to("cpu", torch.long),
            "data_position": torch.tensor([self.position], dtype=torch.long),
        }

    def load_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        self.generator.set_state(state["data_generator"])
        order = state["data_order"]
        self.order = order.to(self.data.device) if order.numel() else None
        self.position = int(state["data_position"][0])


def minibatches(
    data: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless shuffled minibatches of ``data`` (a :class:`MinibatchStream`)."""
    return MinibatchStream(data, batch_size, generator)


def optimiser_tensors(net: nn.Module, optimiser: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """The optimiser's per-parameter state as ``{"<parameter name>.<field>": tensor}``."""
    names = dict(enumerate(n for n, _ in net.named_parameters()))
    return {
        f"{names[index]}.{key}": torch.as_tensor(value).clone()
        for index, slot in optimiser.state_dict()["state"].items()
        for key, value in slot.items()
    }


def restore_optimiser(
    net: nn.Module, optimiser: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor]
) -> None:
    """Load what :func:`optimiser_tensors` saved back into ``optimiser``."""
    index = {n: i for i, (n, _) in enumerate(net.named_parameters())}
    slots: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        name, field = key.rsplit(".", 1)
        slots.setdefault(index[name], {})[field] = value
    full = optimiser.state_dict()
    full["state"] = slots
    optimiser.load_state_dict(full)


def data_fingerprint(images: torch.Tensor) -> dict[str, Any]:
    """Count, shape and sha256 of the training images (float32 bytes): resume checks them."""
    array = np.ascontiguousarray(images.detach().to("cpu", torch.float32).numpy())
    return {
        "count": int(array.shape[0]),
        "shape": list(array.shape[1:]),
        "sha256": hashlib.sha256(array.tobytes()).hexdigest(),
        "range": [float(array.min()), float(array.max())],
    }


def images_from_source(source: SampleSource, *, batch_size: int = 256) -> ImageSet:
    """Read every image of a sample source (:mod:`geneval.sources`) into one :class:`ImageSet`,
    with the labels, factors and latents the source carries beside them.

    All images must share one size. A folder of grey images, which the folder loader decodes
    to RGB, becomes one channel again when all three channels are equal in every image.
    """
    parts: list[torch.Tensor] = []
    for batch in source.batches(batch_size, torch.device("cpu"), None):
        for part in batch if isinstance(batch, list) else [batch]:
            if part.ndim == 3:
                part = part.unsqueeze(0)
            if parts and part.shape[1:] != parts[0].shape[1:]:
                raise InputError(
                    f"{source.description}: training images must share one size, found "
                    f"{tuple(parts[0].shape[1:])} and {tuple(part.shape[1:])}"
                )
            parts.append(part.float())
    images = torch.cat(parts)
    if images.shape[1] == 3 and bool((images[:, :1] == images[:, 1:]).all()):
        images = images[:, :1].contiguous()
    carried = source.carried
    return ImageSet(
        images=images,
        labels=carried.get("labels"),
        factors=carried.get("factors"),
        latents=carried.get("latents"),
    )


@torch.no_grad()
def sample_in_batches(
    n: int,
    batch_size: int,
    draw: Callable[[int], torch.Tensor],
    *,
    desc: str = "sampling",
) -> torch.Tensor:
    """Call ``draw(k)`` for batches of at most ``batch_size`` until ``n`` samples exist.

    Each batch is copied into one preallocated result as it comes (the samples are held once,
    not twice as concatenating the batches would); a single batch is returned as drawn.
    Shows a progress bar counted in samples.
    """
    if n < 1:
        raise ValueError(f"number of samples must be positive, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    out: torch.Tensor | None = None
    with progress_bar(total=n, desc=desc, unit="img") as bar:
        done = 0
        while done < n:
            k = min(batch_size, n - done)
            part = draw(k)
            if part.shape[0] != k:
                raise RuntimeError(f"{desc}: asked for {k} samples, got {part.shape[0]}")
            if k == n:
                out = part
            else:
                if out is None:
                    out = part.new_empty((n, *part.shape[1:]))
                out[done : done + k] = part
            done += k
            bar.update(k)
    assert out is not None
    return out


# -- checking a network before it is built ----------------------------------------------------


def check_arch_values(family: TrainableFamily, arch: Mapping[str, Any], where: str) -> None:
    """Check the scalar values of ``arch`` that the family declares as ``arch_options`` against
    their :class:`~geneval.options.Option` (type, bounds, choices), e.g. a DDPM's
    ``timesteps``, which sizes the schedule rather than a tensor of the file. A list where
    the option is a string (``channel_mults``, resolved from ``auto``) is left to the family."""
    declared = declared_options(family, "train_options")
    for key in family.arch_options:
        option = declared.get(key)
        if option is None or key not in arch or option.type not in (bool, int, float, str):
            continue
        if isinstance(arch[key], list) and option.type is str:
            continue
        option.convert(arch[key], where=f"{where}: arch.{key}")


def check_network(
    family: Any,
    arch: Mapping[str, Any],
    image_shape: tuple[int, int, int],
    *,
    weights: Mapping[str, torch.Tensor] | None = None,
    path: Path | None = None,
) -> None:
    """Check, before anything is allocated, the network ``arch`` describes.

    The network is built on the ``meta`` device (shapes only, no memory). It may hold at most
    :data:`MAX_NETWORK_ELEMENTS` elements; with ``weights`` (a checkpoint's, read from
    ``path``) its state must have exactly their names and shapes, so a config can describe no
    more than the file holds. With ``path`` the config is the user's: its scalar
    ``arch_options`` are checked first (:func:`check_arch_values`) and a config the family
    cannot build is an :class:`InputError` naming the file; a missing key raises
    :class:`KeyError` for the caller to name.
    """
    where = f"checkpoint {quote(path)}" if path is not None else f"model {family.name}"
    if path is not None:
        check_arch_values(family, arch, where)
    try:
        with torch.device("meta"):
            skeleton = family.build_network(arch, image_shape)
    except KeyError:
        raise
    except (*_CONFIG_ERRORS, RuntimeError, NotImplementedError) as exc:
        if path is None:
            raise
        raise InputError(
            f"{where}: its config does not fit model {family.name} ({_first_line(exc)})"
        ) from None
    total = sum(t.numel() for t in [*skeleton.parameters(), *skeleton.buffers()])
    if total > MAX_NETWORK_ELEMENTS:
        raise InputError(
            f"{where}: the network {'its config describes' if path else 'these options describe'}"
            f" holds {total} parameters and buffers, above the bound of {MAX_NETWORK_ELEMENTS}"
        )
    if weights is None:
        return
    expected = skeleton.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    if missing or unexpected:
        what = f"lacks tensor {missing[0]}" if missing else f"has an unexpected {unexpected[0]}"
        raise InputError(f"{where} does not match its config (it {what})")
    for key, tensor in expected.items():
        if tuple(weights[key].shape) != tuple(tensor.shape):
            raise InputError(
                f"{where} does not match its config (tensor {key} is "
                f"{tuple(weights[key].shape)}, the config describes {tuple(tensor.shape)})"
            )


def _check_samplers(model: Any, sampling: Mapping[str, Any], path: Path) -> None:
    """Make the default sampler and each sampler the ``sampling`` config has settings for, so
    that settings a sampler refuses are an :class:`InputError` naming the checkpoint when it
    loads (for models that make samplers from their config, as the bundled ones do)."""
    make = getattr(model, "make_sampler", None)
    if make is None:
        return
    factories = getattr(model, "factories", {})
    try:
        make()
        for name in sampling:
            if name != "sampler" and name in factories:
                make(name)
    except InputError as exc:
        raise InputError(f"checkpoint {quote(path)}: {exc}") from None


def _check_images(images: torch.Tensor, family: str) -> torch.Tensor:
    if images.ndim != 4 or images.shape[0] == 0:
        raise InputError(
            f"model {family}: training data must be non-empty NCHW images, got shape "
            f"{tuple(images.shape)}"
        )
    if not bool(torch.isfinite(images).all()) or images.min() < 0 or images.max() > 1:
        raise InputError(f"model {family}: training images must lie in [0, 1]")
    return images.to(torch.float32)


def _rng_tensors(noise: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    out = {"rng.noise": noise.get_state(), "rng.torch": torch.get_rng_state()}
    if device.type == "cuda":
        out["rng.cuda"] = torch.cuda.get_rng_state(device)
    return out


def _restore_rng(tensors: Mapping[str, torch.Tensor], noise: torch.Generator, device) -> None:
    noise.set_state(tensors["rng.noise"])
    torch.set_rng_state(tensors["rng.torch"])
    if device.type == "cuda" and "rng.cuda" in tensors:
        torch.cuda.set_rng_state(tensors["rng.cuda"], device)


def train_family(
    family: TrainableFamily,
    data: ImageSet,
    *,
    output: Path,
    steps: int | None,
    device: torch.device,
    seed: int,
    resume: bool,
    force: bool,
    options: Mapping[str, Any],
) -> Path:
    """Train ``family`` on ``data`` and write its checkpoint to ``output``.

    ``options`` holds the options given (names of the family's ``train_options``); the rest
    come from the defaults, or with ``resume`` from the checkpoint at ``output``, which is
    continued up to ``steps`` in total with its recorded seed. ``steps=None`` means the
    family's ``default_steps``. Bad options, a missing or weights-only checkpoint to resume,
    different training data, or a changed architecture option are :class:`InputError`.
    """
    output = Path(output)
    declared = declared_options(family, "train_options")
    checked = resolve_options(options, declared, owner=f"model {family.name}")
    given = {key: checked[key] for key in options}
    images = _check_images(data.images, family.name)
    fingerprint = data_fingerprint(images)
    total = family.default_steps if steps is None else int(steps)
    if total < 1:
        raise InputError(f"--steps must be positive, got {total}")

    previous: Checkpoint | None = None
    if resume:
        previous = load_checkpoint(output, family=family.name)
        if not previous.has_training_state:
            raise InputError(
                f"--resume: checkpoint {quote(output)} holds sampling weights only "
                "(written with save_training_state=false)"
            )
        recorded = {
            key: declared[key].convert(
                value, where=f"checkpoint {quote(output)}: train.options.{key}"
            )
            if key in declared
            else value
            for key, value in previous.train.get("options", {}).items()
        }
        for key in family.arch_options:
            if key in given and given[key] != recorded.get(key):
                raise InputError(
                    f"--opt {key}={given[key]}: the checkpoint was trained with "
                    f"{key}={recorded.get(key)} and --resume cannot change it"
                )
        if previous.train.get("data", {}).get("sha256") != fingerprint["sha256"]:
            raise InputError(
                f"--resume: the training data differ from those checkpoint {quote(output)} was "
                f"trained on ({previous.train.get('data', {}).get('count')} images)"
            )
        opts = {**{k: o.default for k, o in declared.items()}, **recorded, **given}
        seed = int(previous.train["seed"])
        done = int(previous.train["steps_done"])
        if done >= total:
            raise InputError(
                f"--resume: checkpoint {quote(output)} already has {done} steps (--steps {total})"
            )
        arch, image_shape = dict(previous.arch), previous.image_shape
        if tuple(image_shape) != tuple(images.shape[1:]):
            raise InputError(
                f"--resume: checkpoint {quote(output)} models images of {tuple(image_shape)}, the "
                f"training data are {tuple(images.shape[1:])}"
            )
        try:
            check_network(family, arch, image_shape, weights=previous.group("net"), path=output)
        except KeyError as exc:
            raise InputError(
                f"checkpoint {quote(output)}: its config lacks {_first_line(exc)}"
            ) from None
    else:
        check_writable(output, force=force, what="checkpoint")
        opts = {**{k: o.default for k, o in declared.items()}, **given}
        done = 0
        arch = family.architecture(opts, images)
        image_shape = tuple(int(v) for v in images.shape[1:])
        check_network(family, arch, image_shape)  # type: ignore[arg-type]

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        net = family.build_network(arch, image_shape).to(device)  # type: ignore[arg-type]
        prepared = family.prepare(images.to(device), arch)
        if previous is None:
            init_generator = torch.Generator(device=device).manual_seed(seed)
            family.initialise(net, prepared, opts, init_generator)
        noise = torch.Generator(device=device).manual_seed(seed + 1)
        data_generator = torch.Generator().manual_seed(seed)
        stream = MinibatchStream(prepared, int(opts["batch_size"]), data_generator)
        step = TrainingStep(0, opts, arch, noise, {}, device)
        ema = (
            ExponentialMovingAverage(net, float(opts["ema_decay"])) if "ema_decay" in opts else None
        )
        optimiser = torch.optim.Adam(
            net.parameters(),
            lr=float(opts["lr"]),
            betas=(float(opts["adam_beta1"]), float(opts["adam_beta2"])),
        )
        if previous is None:
            step.state = family.initial_state(net, prepared, step)
        else:
            tensors = previous.tensors
            load_weights(net, previous.group("net"), output)
            if ema is not None:
                ema.load_state_dict(previous.group("ema"))
            restore_optimiser(net, optimiser, previous.group("opt"))
            saved = previous.group("state")
            stream.load_state_dict(saved)
            step.state = {k: v.to(device) for k, v in saved.items() if k not in DATA_STATE_KEYS}
            _restore_rng(tensors, noise, device)
        sampling = family.sampling(opts, arch, prepared)
        commands = list(previous.train.get("commands", [])) if previous else []
        commands.append(sys.argv[1:])

        def save(number: int) -> None:
            keep = number < total or bool(opts["save_training_state"])
            tensors: dict[str, torch.Tensor] = {}
            if keep or ema is None:
                tensors.update(prefixed("net", net.state_dict()))
            if ema is not None:
                tensors.update(prefixed("ema", ema.state_dict()))
            if keep:
                tensors.update(prefixed("opt", optimiser_tensors(net, optimiser)))
                tensors.update(_rng_tensors(noise, device))
                tensors.update(prefixed("state", {**step.state, **stream.state_dict()}))
            record = {
                "seed": int(seed),
                "steps_done": int(number),
                "options": dict(opts),
                "data": fingerprint,
                "commands": commands,
            }
            ckpt = Checkpoint(family.name, arch, image_shape, sampling, record, tensors)  # type: ignore[arg-type]
            save_checkpoint(output, ckpt, force=True)

        warmup = int(opts["warmup"])
        clip = float(opts["grad_clip"])
        every = int(opts["checkpoint_every"])
        recent: deque[float] = deque(maxlen=100)
        net.train()
        with progress_bar(total=total, desc=f"{family.name} training", unit="step") as bar:
            bar.update(done)
            for number in range(done + 1, total + 1):
                if warmup:
                    for group in optimiser.param_groups:
                        group["lr"] = float(opts["lr"]) * min(1.0, number / warmup)
                step.number = number
                loss = family.loss(net, next(stream), step)
                value = float(loss.detach())
                if not math.isfinite(value):
                    raise InputError(
                        f"model {family.name}: the loss became {value} at step {number} "
                        "(training diverged; try a lower --opt lr)"
                    )
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                if clip > 0:
                    nn.utils.clip_grad_norm_(net.parameters(), clip)
                optimiser.step()
                if ema is not None:
                    ema.update(net)
                recent.append(value)
                bar.set_postfix(loss=f"{value:.4g}", refresh=False)
                bar.update(1)
                if (every and number % every == 0) or number == total:
                    save(number)
    note(
        f"{family.name}: trained to step {total}; loss {value:.5g} at the last step, "
        f"{sum(recent) / len(recent):.5g} over the last {len(recent)}"
    )
    return output
