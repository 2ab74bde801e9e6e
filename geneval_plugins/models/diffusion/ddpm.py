"""Model family ``ddpm``: denoising diffusion probabilistic models (Ho et al. 2020).

A :class:`~geneval_plugins.models.unet.ConditionalUNet` predicts the noise ε of
x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε from (x_t, t); it is trained with L_simple and EMA weights by
the core training loop (:mod:`geneval.training`), sampled by the samplers of
:mod:`~geneval_plugins.models.diffusion.ddpm_samplers` (ancestral, DDIM), and its variational
bound (capability ``elbo``) comes from
:mod:`~geneval_plugins.models.gaussian_diffusion`. Images in ``[0, 1]`` are mapped to
the model's data space ``[-1, 1]`` by x ↦ 2x − 1. The UNet's resolutions follow the image size
unless ``channel_mults`` names them (:func:`~geneval_plugins.models.unet.auto_channel_mults`).

This module is the family's entry point and imports no torch: it declares the name, options,
samplers and capabilities that ``geneval plugins`` lists and a run checks, and its hooks import
the torch implementation when a network is built, trained or loaded: the model
(:class:`~geneval_plugins.models.diffusion.ddpm_model.DDPMModel`) and the loss
(:func:`~geneval_plugins.models.diffusion.ddpm_model.simple_loss`) live in
:mod:`~geneval_plugins.models.diffusion.ddpm_model`. The option choices come from torch-free
modules: :mod:`~geneval_plugins.models.diffusion_schedules` (``SCHEDULES``, ``SKIPS``) and
:mod:`~geneval_plugins.models.sampler_names` (the sampler names).

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    Option,
    SupportsELBO,
    SupportsProbabilityFlow,
    TrainableFamily,
    TrainingStep,
    hookimpl,
    training_options,
)
from geneval_plugins.models.diffusion_schedules import SCHEDULES, SKIPS
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    import torch
    from torch import nn

    from geneval.plugin import Checkpoint
    from geneval_plugins.models.diffusion.ddpm_model import DDPMModel
    from geneval_plugins.models.unet import ConditionalUNet

NAME = "ddpm"
#: The most diffusion steps T a model may have (its schedule holds a few arrays of T values).
MAX_TIMESTEPS = 100_000

#: Every training option (``geneval train --opt key=value``).
TRAIN_OPTIONS: dict[str, Option] = {
    **training_options(lr=5e-4, batch_size=128, warmup=500, grad_clip=1.0, ema_decay=0.999),
    "base_channels": Option(16, "UNet channels at full resolution", low=1),
    "channel_mults": Option(
        "auto",
        "channel multiplier per UNet resolution, e.g. 1,2,2 (auto: from the image size)",
    ),
    "embedding_dim": Option(32, "width of the sinusoidal timestep embedding (even)", low=2),
    "dropout": Option(
        0.0, "dropout in the residual blocks", low=0.0, high=1.0, high_exclusive=True
    ),
    "schedule": Option("linear", "β schedule", choices=SCHEDULES),
    "timesteps": Option(1000, "T, the number of diffusion steps", low=2, high=MAX_TIMESTEPS),
    "sampler": Option(
        SAMPLER_NAMES[NAME][0],
        "default sampler stored in the checkpoint",
        choices=SAMPLER_NAMES[NAME],
    ),
    "sampler_steps": Option(50, "DDIM steps of the default sampling", low=1),
    "ddim_eta": Option(0.0, "DDIM η (0: deterministic)", low=0.0),
    "ddim_skip": Option("uniform", "DDIM timestep sub-sequence", choices=SKIPS),
}


class DDPMFamily(TrainableFamily):
    """The ``ddpm`` model family: a UNet ε-predictor trained with L_simple (Algorithm 1)."""

    name = NAME
    dataset = "digits"
    samplers = SAMPLER_NAMES[NAME]
    train_options = TRAIN_OPTIONS
    # probability_flow: the VP SDE of a linear schedule (a cosine one offers None)
    capabilities = (SupportsELBO, SupportsProbabilityFlow)
    default_steps = 12000
    bundled_file = "ddpm-digits.safetensors"
    arch_options = (
        "base_channels",
        "channel_mults",
        "embedding_dim",
        "dropout",
        "schedule",
        "timesteps",
    )

    def architecture(self, options: Mapping[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """The UNet and schedule; ``channel_mults=auto`` resolved for the image size."""
        from geneval_plugins.models.unet import parse_channel_mults

        arch = super().architecture(options, images)
        arch["channel_mults"] = list(
            parse_channel_mults(str(options["channel_mults"]), tuple(images.shape[1:]))
        )
        if int(arch["embedding_dim"]) % 2:
            raise InputError(f"--opt embedding_dim={arch['embedding_dim']}: must be even")
        return arch

    def build_network(
        self, arch: Mapping[str, Any], image_shape: tuple[int, int, int]
    ) -> ConditionalUNet:
        """The ε-predictor UNet (sinusoidal timestep embedding, Ho et al. App. B)."""
        from geneval_plugins.models.unet import unet_for

        return unet_for(arch, image_shape)

    def prepare(self, images: torch.Tensor, arch: Mapping[str, Any]) -> torch.Tensor:
        """Images in [0, 1] → the data space [−1, 1]."""
        return images * 2 - 1

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """L_simple (Ho et al. 2020, eq. 14): t uniform on 1..T, ε ~ N(0, I) from the generator."""
        from geneval_plugins.models.diffusion.ddpm_model import simple_loss

        return simple_loss(net, batch, step)

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """Default sampler and DDIM settings from the options."""
        from geneval_plugins.models.diffusion.ddpm_samplers import sampling_config

        return sampling_config(
            options["sampler"],
            {
                "steps": min(int(options["sampler_steps"]), int(arch["timesteps"])),
                "eta": float(options["ddim_eta"]),
                "skip": options["ddim_skip"],
            },
        )

    def make_model(self, net: nn.Module, checkpoint: Checkpoint, device: torch.device) -> DDPMModel:
        """The DDPM around the (EMA) UNet."""
        from geneval_plugins.models.diffusion.ddpm_model import DDPMModel, diffusion_of

        diffusion = diffusion_of(
            str(checkpoint.arch["schedule"]), int(checkpoint.arch["timesteps"])
        )
        return DDPMModel(
            net, diffusion, checkpoint.config, image_shape=checkpoint.image_shape, device=device
        )


@hookimpl
def geneval_register_models(register) -> None:
    """Register the ``ddpm`` family (no torch is imported)."""
    register(DDPMFamily())
