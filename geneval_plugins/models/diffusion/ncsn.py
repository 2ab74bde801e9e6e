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
from typing import Any

import torch
from torch import nn

from geneval.plugin import (
    Checkpoint,
    InputError,
    Option,
    SampledModel,
    SupportsScore,
    TrainableFamily,
    TrainingStep,
    hookimpl,
    training_options,
)
from geneval_plugins.models.noise_levels import (
    geometric_sigmas,
    max_pairwise_distance,
    ncsnv2_step_size,
    num_levels_for,
)
from geneval_plugins.models.score_matching import denoising_score_matching_loss, noise_condition
from geneval_plugins.models.score_samplers import SAMPLERS
from geneval_plugins.models.unet import parse_channel_mults, unet_for

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
        next(iter(SAMPLERS)), "default sampler stored in the checkpoint", choices=tuple(SAMPLERS)
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


class NoiseConditionalScore(nn.Module):
    """s(x, σ) = f(x, c(σ))/σ with c(σ) = 999 (log σ − log σ_L)/(log σ_1 − log σ_L).

    ``net`` is any module ``net(x, cond)`` returning a tensor shaped like ``x`` (the UNet for
    images, a small MLP for toy data). The 1/σ output scaling is NCSNv2 technique 3; with
    λ(σ) = σ² the training target of f is −z, of unit scale at every level.
    """

    def __init__(self, net: nn.Module, sigma_max: float, sigma_min: float) -> None:
        super().__init__()
        self.net = net
        self.sigma_max = float(sigma_max)
        self.sigma_min = float(sigma_min)

    def condition(self, sigma: torch.Tensor) -> torch.Tensor:
        """c(σ): log σ mapped linearly so that σ_L ↦ 0 and σ_1 ↦ 999."""
        return noise_condition(sigma, self.sigma_max, self.sigma_min)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """The score estimate at ``x`` (N, ...) for noise levels ``sigma`` (scalar or (N,))."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        out = self.net(x, self.condition(sigma))
        return out / sigma.reshape(-1, *([1] * (x.ndim - 1)))


class NCSNModel(SampledModel):
    """A loaded NCSN: the EMA score model, its noise levels and default sampler settings.

    ``score(x, sigma)`` (:class:`~geneval.capabilities.SupportsScore`) returns
    s_θ(x, σ) ≈ ∇ₓ log q_σ(x) for images ``x`` in the model's data space (``[0, 1]`` plus
    noise). Chains start from the prior N(0, σ_1² I) of the VE SDE and run through every level;
    ``steps`` overrides the Langevin steps per level (T of annealed Langevin, the corrector
    steps M of predictor–corrector). Samples are clipped to ``[0, 1]``.
    """

    family = NAME

    def __init__(
        self,
        score_model: NoiseConditionalScore,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__(config, image_shape=image_shape, device=device)
        self.score_model = score_model
        self.sigmas = torch.tensor(self.config["arch"]["sigmas"], dtype=torch.float64)
        levels = self.sigmas.tolist()
        self.factories = {name: _bind(cls, levels) for name, cls in SAMPLERS.items()}

    @torch.no_grad()
    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """s_θ(x, σ) for images ``x`` (N, C, H, W) and noise level(s) ``sigma`` (scalar or (N,))."""
        x = x.to(self.device, torch.float32)
        return self.score_model(x, torch.as_tensor(sigma, dtype=torch.float32, device=self.device))

    def sampler_target(self):
        """The score function the samplers drive."""
        return self.score


def _bind(cls: type, levels: list[float]):
    return lambda **settings: cls(levels, **settings)


class NCSNFamily(TrainableFamily):
    """The ``ncsn`` model family: a UNet score model trained by denoising score matching."""

    name = NAME
    dataset = "digits"
    samplers = tuple(SAMPLERS)
    train_options = TRAIN_OPTIONS
    capabilities = (SupportsScore,)
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
        sigmas = arch["sigmas"]
        return NoiseConditionalScore(
            unet_for(arch, image_shape), sigma_max=float(sigmas[0]), sigma_min=float(sigmas[-1])
        )

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """Denoising score matching with λ(σ) = σ² (Song & Ermon 2019, Eq. 6)."""
        sigmas = torch.tensor(step.arch["sigmas"], dtype=torch.float32, device=batch.device)
        return denoising_score_matching_loss(net, batch, sigmas, step.generator)

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """Annealed Langevin with ε from technique 4 unless given; PC with its snr and M."""
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
        return NCSNModel(net, checkpoint.config, image_shape=checkpoint.image_shape, device=device)


@hookimpl
def geneval_register_models(register) -> None:
    register(NCSNFamily())
