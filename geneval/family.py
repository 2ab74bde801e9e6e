"""The base of a trainable model family and the options of its training loop, without torch.

Part of the plugin SDK (:mod:`geneval.plugin`). A model family derives from
:class:`TrainableFamily` and declares, as plain class attributes, what ``geneval plugins``
lists and what a run checks before anything is computed: its name, samplers, options and
capabilities. The hooks that build, train and load a network receive torch objects, but this
module imports no torch: the loop itself lives in :mod:`geneval.training` and is loaded when a
family trains or loads. A family module keeps its networks in a sibling module that its hooks
import, so registering the family (``geneval --help``, ``geneval plugins``) stays fast.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.errors import InputError
from geneval.options import Option
from geneval.text import quote

if TYPE_CHECKING:
    import torch
    from torch import nn

    from geneval.api import GenerativeModel, ImageSet
    from geneval.checkpoint import Checkpoint


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def training_options(
    *,
    lr: float,
    batch_size: int,
    warmup: int = 0,
    grad_clip: float = 0.0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    ema_decay: float | None = None,
) -> dict[str, Option]:
    """The options of the training loop itself, with a family's defaults.

    A family merges them into its ``train_options``; ``ema_decay=None`` leaves out the moving
    average (the family keeps none).
    """
    options = {
        "lr": Option(lr, "Adam learning rate", low=0.0, low_exclusive=True),
        "batch_size": Option(batch_size, "training images per step", low=1),
        "warmup": Option(warmup, "steps of linear learning-rate warm-up (0: none)", low=0),
        "grad_clip": Option(
            grad_clip, "clip the gradient's global norm to this value (0: no clipping)", low=0.0
        ),
        "adam_beta1": Option(adam_beta1, "Adam β₁", low=0.0, high=1.0, high_exclusive=True),
        "adam_beta2": Option(adam_beta2, "Adam β₂", low=0.0, high=1.0, high_exclusive=True),
        "checkpoint_every": Option(
            0, "write the checkpoint every N steps as well as at the end (0: at the end)", low=0
        ),
        "save_training_state": Option(
            True,
            "keep what --resume needs (raw weights, optimiser, random states, chains) in the "
            "final file; false keeps the sampling weights only",
        ),
    }
    if ema_decay is not None:
        options["ema_decay"] = Option(
            ema_decay,
            "decay of the weights' moving average used for sampling (0: the weights themselves)",
            low=0.0,
            high=1.0,
            high_exclusive=True,
        )
    return options


@dataclass
class TrainingStep:
    """What a family's :meth:`TrainableFamily.loss` sees at one step.

    ``state`` is the family's own state (replay buffer, persistent chains): tensors it created
    in :meth:`TrainableFamily.initial_state` and may update in place; they are saved under
    ``state.`` and restored on resume. Every random draw of the loss uses ``generator``.
    """

    number: int  # 1-based step number
    options: Mapping[str, Any]
    arch: Mapping[str, Any]
    generator: torch.Generator
    state: dict[str, torch.Tensor]
    device: torch.device


class TrainableFamily:
    """Base of the bundled model families (:class:`geneval.api.ModelFamily`).

    A subclass sets ``name``, ``samplers``, ``train_options`` (including
    :func:`training_options`), ``capabilities``, ``default_steps``, ``bundled_file`` (a file
    beside its module) and ``arch_options`` (options that fix the architecture or the data
    preparation: a resumed run may not change them), and implements the hooks
    :meth:`build_network`, :meth:`loss`, :meth:`sampling` and :meth:`make_model`, with
    :meth:`architecture`, :meth:`prepare`, :meth:`initialise` and :meth:`initial_state`
    where the defaults do not fit. :meth:`load` and :meth:`train` are shared.
    """

    name: str = ""
    dataset: str = ""  # the dataset the bundled checkpoint was trained on
    samplers: tuple[str, ...] = ()
    train_options: Mapping[str, Option] = {}
    capabilities: tuple[type, ...] = ()
    default_steps: int = 1000
    bundled_file: str | None = None
    arch_options: tuple[str, ...] = ()

    # -- hooks ---------------------------------------------------------------------------------
    def architecture(self, options: Mapping[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """The ``arch`` config of a new run: the ``arch_options`` (plus what the data decide)."""
        return {key: options[key] for key in self.arch_options}

    def build_network(
        self, arch: Mapping[str, Any], image_shape: tuple[int, int, int]
    ) -> nn.Module:
        """The (untrained) network ``arch`` describes, for images of ``image_shape``."""
        raise NotImplementedError

    def prepare(self, images: torch.Tensor, arch: Mapping[str, Any]) -> torch.Tensor:
        """The training images as the network sees them (default: unchanged)."""
        return images

    def initialise(
        self,
        net: nn.Module,
        data: torch.Tensor,
        options: Mapping[str, Any],
        generator: torch.Generator,
    ) -> None:
        """Data-dependent initialisation of a new network, drawing from ``generator`` (a
        generator seeded with the run's seed; default: nothing)."""

    def initial_state(
        self, net: nn.Module, data: torch.Tensor, step: TrainingStep
    ) -> dict[str, torch.Tensor]:
        """The family's state at step 0 (replay buffer, persistent chains; default: none)."""
        return {}

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """The scalar loss of one step; the loop back-propagates it and steps Adam."""
        raise NotImplementedError

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """The ``sampling`` config: ``{"sampler": default, <sampler name>: settings, ...}``."""
        raise NotImplementedError

    def make_model(
        self, net: nn.Module, checkpoint: Checkpoint, device: torch.device
    ) -> GenerativeModel:
        """The loaded model around ``net`` (weights loaded, on ``device``, in eval mode)."""
        raise NotImplementedError

    # -- shared --------------------------------------------------------------------------------
    @property
    def bundled_checkpoint(self) -> Path:
        """The checkpoint shipped beside the family's module."""
        if not self.bundled_file:
            raise InputError(f"model {self.name} ships no checkpoint: give --checkpoint")
        return Path(inspect.getfile(type(self))).with_name(self.bundled_file)

    def load(self, checkpoint: Path | None, *, device: torch.device) -> GenerativeModel:
        """Load ``checkpoint`` (``None``: the bundled one) with its sampling weights."""
        from geneval.checkpoint import load_checkpoint, load_weights
        from geneval.training import _CONFIG_ERRORS, _check_samplers, check_network

        path = self.bundled_checkpoint if checkpoint is None else Path(checkpoint)
        loaded = load_checkpoint(path, family=self.name)
        weights = loaded.sampling_weights()
        if not weights:
            raise InputError(f"checkpoint {quote(path)} holds no weights (net.* or ema.*)")
        try:
            check_network(self, loaded.arch, loaded.image_shape, weights=weights, path=path)
            net = self.build_network(loaded.arch, loaded.image_shape)
            load_weights(net, weights, path)
            net.to(device).eval()
            for p in net.parameters():
                p.requires_grad_(False)
            model = self.make_model(net, loaded, device)
            _check_samplers(model, loaded.sampling, path)
            return model
        except KeyError as exc:
            raise InputError(
                f"checkpoint {quote(path)}: its config lacks {_first_line(exc)} (not a complete "
                f"{self.name} checkpoint)"
            ) from None
        except _CONFIG_ERRORS as exc:
            raise InputError(
                f"checkpoint {quote(path)}: its config does not fit model {self.name} "
                f"({_first_line(exc)})"
            ) from None

    def train(
        self,
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
        """Train on ``data`` and write the checkpoint ``output`` (see
        :func:`geneval.training.train_family`)."""
        from geneval.training import train_family

        return train_family(
            self,
            data,
            output=output,
            steps=steps,
            device=device,
            seed=seed,
            resume=resume,
            force=force,
            options=options,
        )
