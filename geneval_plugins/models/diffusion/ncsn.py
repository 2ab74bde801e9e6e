"""Model family ``ncsn``: noise-conditional score networks (Song & Ermon 2019, 2020).

A :class:`~geneval_plugins.models.unet.ConditionalUNet` f(x, c) becomes the score model

    s_θ(x, σ) = f(x, c(σ)) / σ,   c(σ) = 999 · (log σ − log σ_L) / (log σ_1 − log σ_L),

i.e. the NCSNv2 output scaling (Song & Ermon 2020, technique 3) with the network conditioned on
log σ mapped onto the timestep range [0, 999] its sinusoidal embedding is built for. It is
trained by the core training loop (:mod:`geneval.training`) with denoising score matching,
λ(σ) = σ² (:mod:`~geneval_plugins.models.score_matching`), over geometric levels
σ_1 > … > σ_L: σ_1 is the largest pairwise distance of the training data (technique 1) and,
unless given, L follows technique 2. Sampling uses the EMA weights (technique 5) and the
samplers of :mod:`~geneval_plugins.models.score_samplers`.

Images stay in ``[0, 1]`` (the data space of Song & Ermon 2019); samples are clipped to it.

This module is the family's entry point and imports no torch: it declares the name, options,
samplers (:data:`~geneval_plugins.models.sampler_names.SAMPLER_NAMES`) and capabilities that
``geneval plugins`` lists and a run checks, and its hooks import the torch implementation when a
network is built, trained or loaded: the score network
(:class:`~geneval_plugins.models.diffusion.ncsn_model.NoiseConditionalScore`), the model
(:class:`~geneval_plugins.models.diffusion.ncsn_model.NCSNModel`) and the loss
(:func:`~geneval_plugins.models.diffusion.ncsn_model.score_matching_loss`) live in
:mod:`~geneval_plugins.models.diffusion.ncsn_model`.

References
----------
.. [1] Y. Song, S. Ermon, "Generative Modeling by Estimating Gradients of the Data
   Distribution", NeurIPS 2019.
.. [2] Y. Song, S. Ermon, "Improved Techniques for Training Score-Based Generative Models",
   NeurIPS 2020.
.. [3] Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential
   Equations", ICLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    Option,
    SupportsProbabilityFlow,
    SupportsScore,
    TrainableFamily,
    TrainingStep,
    hookimpl,
    training_options,
)
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    import torch
    from torch import nn

    from geneval.plugin import Checkpoint
    from geneval_plugins.models.diffusion.ncsn_model import NCSNModel, NoiseConditionalScore

NAME = "ncsn"
#: Every training option (``geneval train --opt key=value``).
TRAIN_OPTIONS: dict[str, Option] = {
    **training_options(lr=1e-3, batch_size=128, warmup=200, grad_clip=1.0, ema_decay=0.999),
    "base_channels": Option(16, "UNet channels at full resolution", low=1),
    "channel_mults": Option(
        "auto",
        "channel multiplier per UNet resolution, e.g. 1,2,2 (auto: from the image size)",
    ),
    "embedding_dim": Option(32, "width of the sinusoidal noise-level embedding (even)", low=2),
    "sigma_max": Option(
        0.0, "σ_1 (0: the largest pairwise distance of the training data, technique 1)", low=0.0
    ),
    "sigma_min": Option(0.01, "σ_L, the smallest noise level", low=0.0, low_exclusive=True),
    "num_levels": Option(0, "L noise levels (0: technique 2 for the data dimension)", low=0),
    "sampler": Option(
        SAMPLER_NAMES[NAME][0],
        "default sampler stored in the checkpoint",
        choices=SAMPLER_NAMES[NAME],
    ),
    "langevin_steps": Option(5, "T, annealed Langevin steps per noise level", low=1),
    "langevin_eps": Option(
        0.0, "ε, the Langevin step at σ_L (0: technique 4 for T and the level ratio)", low=0.0
    ),
    "pc_snr": Option(
        0.16, "signal-to-noise ratio of the PC corrector", low=0.0, low_exclusive=True
    ),
    "pc_corrector_steps": Option(2, "PC corrector steps per noise level", low=0),
}


class NCSNFamily(TrainableFamily):
    """The ``ncsn`` model family: a UNet score model trained by denoising score matching."""

    name = NAME
    dataset = "digits"
    samplers = SAMPLER_NAMES[NAME]
    train_options = TRAIN_OPTIONS
    capabilities = (SupportsScore, SupportsProbabilityFlow)
    default_steps = 10000
    bundled_file = "ncsn-digits.safetensors"
    arch_options = (
        "base_channels",
        "channel_mults",
        "embedding_dim",
        "sigma_max",
        "sigma_min",
        "num_levels",
    )

    def architecture(self, options: Mapping[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """The UNet, and the noise levels from the data (techniques 1 and 2)."""
        from geneval_plugins.models.noise_levels import (
            geometric_sigmas,
            max_pairwise_distance,
            num_levels_for,
        )
        from geneval_plugins.models.unet import parse_channel_mults

        arch = super().architecture(options, images)
        arch["channel_mults"] = list(
            parse_channel_mults(str(options["channel_mults"]), tuple(images.shape[1:]))
        )
        if int(arch["embedding_dim"]) % 2:
            raise InputError(f"--opt embedding_dim={arch['embedding_dim']}: must be even")
        sigma_max = float(options["sigma_max"]) or max_pairwise_distance(images)
        sigma_min = float(options["sigma_min"])
        if not sigma_max > sigma_min:
            raise InputError(
                f"--opt sigma_min={sigma_min}: must be below sigma_max ({sigma_max:g})"
            )
        dim = math.prod(images.shape[1:])
        levels = int(options["num_levels"]) or num_levels_for(sigma_max, sigma_min, dim)
        if levels < 2:
            raise InputError(f"--opt num_levels={levels}: at least 2 noise levels")
        arch["sigmas"] = geometric_sigmas(sigma_max, sigma_min, levels).tolist()
        return arch

    def build_network(
        self, arch: Mapping[str, Any], image_shape: tuple[int, int, int]
    ) -> NoiseConditionalScore:
        """s(x, σ) = UNet(x, c(σ))/σ for the levels of ``arch``."""
        from geneval_plugins.models.diffusion.ncsn_model import NoiseConditionalScore
        from geneval_plugins.models.unet import unet_for

        sigmas = arch["sigmas"]
        return NoiseConditionalScore(
            unet_for(arch, image_shape), sigma_max=float(sigmas[0]), sigma_min=float(sigmas[-1])
        )

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """Denoising score matching with λ(σ) = σ² (Song & Ermon 2019, Eq. 6)."""
        from geneval_plugins.models.diffusion.ncsn_model import score_matching_loss

        return score_matching_loss(net, batch, step)

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """Annealed Langevin with ε from technique 4 unless given; PC with its snr and M."""
        from geneval_plugins.models.noise_levels import ncsnv2_step_size

        sigmas = arch["sigmas"]
        steps = int(options["langevin_steps"])
        eps = float(options["langevin_eps"]) or ncsnv2_step_size(
            float(sigmas[0] / sigmas[1]), steps, float(sigmas[-1])
        )
        return {
            "sampler": options["sampler"],
            "annealed-langevin": {"eps": eps, "steps_per_level": steps, "denoise": True},
            "pc": {
                "snr": float(options["pc_snr"]),
                "corrector_steps": int(options["pc_corrector_steps"]),
                "denoise": True,
            },
        }

    def make_model(self, net: nn.Module, checkpoint: Checkpoint, device: torch.device) -> NCSNModel:
        """The NCSN around the (EMA) score network."""
        from geneval_plugins.models.diffusion.ncsn_model import NCSNModel

        return NCSNModel(net, checkpoint.config, image_shape=checkpoint.image_shape, device=device)


@hookimpl
def geneval_register_models(register) -> None:
    """Register the ``ncsn`` family (no torch is imported)."""
    register(NCSNFamily())
