"""Model family ``ddpm``: denoising diffusion probabilistic models (Ho et al. 2020).

A :class:`~geneval_plugins.models.unet.ConditionalUNet` predicts the noise ε of
x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε from (x_t, t); it is trained with L_simple and EMA weights by
the core training loop (:mod:`geneval.training`), sampled by the samplers of
:mod:`~geneval_plugins.models.diffusion.ddpm_samplers` (ancestral, DDIM), and its variational
bound (capability ``elbo``) comes from
:mod:`~geneval_plugins.models.diffusion.gaussian_diffusion`. Images in ``[0, 1]`` are mapped to
the model's data space ``[-1, 1]`` by x ↦ 2x − 1. The UNet's resolutions follow the image size
unless ``channel_mults`` names them (:func:`~geneval_plugins.models.unet.auto_channel_mults`).

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache, partial
from typing import Any

import torch
from torch import nn

from geneval.plugin import (
    Checkpoint,
    InputError,
    Option,
    SampledModel,
    SupportsELBO,
    TrainableFamily,
    TrainingStep,
    hookimpl,
    training_options,
)
from geneval_plugins.models.diffusion.ddpm_samplers import (
    SAMPLER_FACTORIES,
    SAMPLERS,
    SKIPS,
    sampling_config,
)
from geneval_plugins.models.diffusion.elbo_options import ELBO_OPTIONS, VARIANCES
from geneval_plugins.models.diffusion.gaussian_diffusion import (
    SCHEDULES,
    EpsPredictor,
    GaussianDiffusion,
    negative_elbo,
)
from geneval_plugins.models.unet import ConditionalUNet, parse_channel_mults, unet_for

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
    "sampler": Option(SAMPLERS[0], "default sampler stored in the checkpoint", choices=SAMPLERS),
    "sampler_steps": Option(50, "DDIM steps of the default sampling", low=1),
    "ddim_eta": Option(0.0, "DDIM η (0: deterministic)", low=0.0),
    "ddim_skip": Option("uniform", "DDIM timestep sub-sequence", choices=SKIPS),
}


@lru_cache(maxsize=8)
def diffusion_of(schedule: str, timesteps: int) -> GaussianDiffusion:
    """The forward process of a schedule (cached: the loop asks for it at every step)."""
    return GaussianDiffusion.from_schedule(schedule, timesteps)


#: Sampling settings of a model without a stored ``sampling`` config (e.g. an analytic ε).
DEFAULT_SAMPLING = sampling_config(SAMPLERS[0], {"steps": 50, "eta": 0.0, "skip": "uniform"})


class DDPMModel(SampledModel):
    """A loaded DDPM: an ε-predictor, its diffusion, and the samplers and bound built on them.

    Parameters
    ----------
    eps_model
        Any callable ``eps(x_t, t)`` with x_t in the data space [−1, 1] (N, C, H, W) and integer
        timesteps t (N,) in 1..T; usually the EMA copy of a :class:`ConditionalUNet`.
    diffusion
        The forward process (schedule).
    config
        The checkpoint's config (``sampling`` holds the samplers' settings; without it, DDIM
        with 50 steps).
    image_shape
        (C, H, W) of the images it samples.
    device
        Where ``eps_model`` lives and where samples are returned.

    Notes
    -----
    ``elbo(x, *, generator, timesteps=100, variance="fixedsmall", bins=256)`` is the
    :class:`~geneval.capabilities.SupportsELBO` capability used by the ``nll`` metric: for
    images ``x`` in ``[0, 1]`` (N, C, H, W) it returns a float64 tensor (N,) of the ELBO of each
    image in **nats**, −(L_T + Σ_{t≥2} L_{t−1} + L_0) (Ho et al. 2020, eq. 5), a lower bound on
    the log-probability of the 8-bit image (``likelihood_space = "discrete-8bit"``): the
    decoder L_0 is the discretised Gaussian of eq. 13 with ``bins`` levels. ``timesteps=0``
    sums the T − 1 KL terms exactly; K > 0 uses an unbiased stratified Monte-Carlo estimate
    with K network passes per image (see
    :func:`~geneval_plugins.models.diffusion.gaussian_diffusion.negative_elbo`). Every random
    draw comes from ``generator``.
    """

    family = NAME
    likelihood_space = "discrete-8bit"
    #: The options ``elbo`` accepts (declared, so that metrics pass them without inspection).
    elbo_options = ELBO_OPTIONS

    def __init__(
        self,
        eps_model: EpsPredictor,
        diffusion: GaussianDiffusion,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(
            {"sampling": DEFAULT_SAMPLING, **config}, image_shape=image_shape, device=device
        )
        self.eps_model = eps_model
        self.diffusion = diffusion
        self.factories = {
            name: partial(factory, diffusion) for name, factory in SAMPLER_FACTORIES.items()
        }

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.eps_model(x, t.to(x.dtype) if isinstance(self.eps_model, nn.Module) else t)

    def sampler_target(self) -> EpsPredictor:
        """The ε-predictor the samplers call with integer timesteps."""
        return self._eps

    def to_images(self, output: torch.Tensor) -> torch.Tensor:
        """x_0 in [−1, 1] → images (x_0 + 1)/2 clamped to [0, 1]."""
        return ((output + 1) / 2).clamp(0.0, 1.0)

    @torch.no_grad()
    def elbo(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator,
        timesteps: int = 100,
        variance: str = "fixedsmall",
        bins: int = 256,
    ) -> torch.Tensor:
        """ELBO in nats of each image ``x`` in ``[0, 1]`` (see the class Notes).

        ``variance``: σ_t² of p_θ, ``fixedlarge`` or ``fixedsmall`` (the tighter bound for an
        ε-predictor of the true posterior mean at small t).
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise InputError(
                f"ddpm elbo: images of shape {tuple(x.shape)} do not match the model's "
                f"{self.image_shape}"
            )
        if variance not in VARIANCES:
            raise InputError(f"ddpm elbo: variance must be one of {', '.join(VARIANCES)}")
        x0 = x.to(self.device, torch.float32) * 2 - 1
        bound = negative_elbo(
            self.diffusion,
            self._eps,
            x0,
            generator,
            variance=variance,
            timesteps=timesteps or None,
            bins=bins,
        )
        return -bound.total


class DDPMFamily(TrainableFamily):
    """The ``ddpm`` model family: a UNet ε-predictor trained with L_simple (Algorithm 1)."""

    name = NAME
    dataset = "digits"
    samplers = SAMPLERS
    train_options = TRAIN_OPTIONS
    capabilities = (SupportsELBO,)
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
        return unet_for(arch, image_shape)

    def prepare(self, images: torch.Tensor, arch: Mapping[str, Any]) -> torch.Tensor:
        """Images in [0, 1] → the data space [−1, 1]."""
        return images * 2 - 1

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """L_simple (Ho et al. 2020, eq. 14): t uniform on 1..T, ε ~ N(0, I) from the generator."""
        diffusion = diffusion_of(str(step.arch["schedule"]), int(step.arch["timesteps"]))
        return diffusion.simple_loss(lambda x, t: net(x, t.to(x.dtype)), batch, step.generator)

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """Default sampler and DDIM settings from the options."""
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
        diffusion = diffusion_of(
            str(checkpoint.arch["schedule"]), int(checkpoint.arch["timesteps"])
        )
        return DDPMModel(
            net, diffusion, checkpoint.config, image_shape=checkpoint.image_shape, device=device
        )


@hookimpl
def geneval_register_models(register) -> None:
    register(DDPMFamily())
