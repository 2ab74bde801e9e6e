"""The torch side of the ``ddpm`` family: the loaded model, its cached diffusion and L_simple.

The family itself (:mod:`~geneval_plugins.models.diffusion.ddpm`) registers without torch; its
hooks import this module when a network is trained or loaded. :class:`DDPMModel` wraps an
ε-predictor (usually the EMA copy of a :class:`~geneval_plugins.models.unet.ConditionalUNet`)
with the samplers of :mod:`~geneval_plugins.models.diffusion.ddpm_samplers` (ancestral, DDIM)
and the variational bound of :mod:`~geneval_plugins.models.gaussian_diffusion`
(capability ``elbo``); :func:`simple_loss` is the training objective.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property, lru_cache, partial
from typing import Any

import torch
from torch import nn

from geneval.plugin import InputError, ProbabilityFlowSDE, SampledModel, TrainingStep
from geneval_plugins.models.diffusion.ddpm import NAME
from geneval_plugins.models.diffusion.ddpm_samplers import (
    SAMPLER_FACTORIES,
    SAMPLERS,
    sampling_config,
)
from geneval_plugins.models.elbo_options import ELBO_OPTIONS, VARIANCES
from geneval_plugins.models.gaussian_diffusion import (
    EpsPredictor,
    GaussianDiffusion,
    image_elbo,
    linear_vp_sde,
    vp_score,
)


@lru_cache(maxsize=8)
def diffusion_of(schedule: str, timesteps: int) -> GaussianDiffusion:
    """The forward process of a schedule (cached: the loop asks for it at every step)."""
    return GaussianDiffusion.from_schedule(schedule, timesteps)


def simple_loss(net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
    """L_simple (Ho et al. 2020, eq. 14) of the UNet ε-predictor ``net`` on ``batch`` (data space).

    t is uniform on 1..T and ε ~ N(0, I), both drawn from ``step.generator``; the diffusion is
    the one ``step.arch`` names (``schedule``, ``timesteps``), and the UNet sees t as a float.
    """
    diffusion = diffusion_of(str(step.arch["schedule"]), int(step.arch["timesteps"]))
    return diffusion.simple_loss(lambda x, t: net(x, t.to(x.dtype)), batch, step.generator)


#: Sampling settings of a model without a stored ``sampling`` config (e.g. an analytic ε).
DEFAULT_SAMPLING = sampling_config(SAMPLERS[0], {"steps": 50, "eta": 0.0, "skip": "uniform"})


class DDPMModel(SampledModel):
    """A loaded DDPM: an ε-predictor, its diffusion, and the samplers and bound built on them.

    Parameters
    ----------
    eps_model
        Any callable ``eps(x_t, t)`` with x_t in the data space [−1, 1] (N, C, H, W) and integer
        timesteps t (N,) in 1..T; usually the EMA copy of a
        :class:`~geneval_plugins.models.unet.ConditionalUNet`.
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
    :func:`~geneval_plugins.models.gaussian_diffusion.negative_elbo`). Every random
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

    @cached_property
    def probability_flow(self) -> ProbabilityFlowSDE | None:
        """The VP SDE of a ``linear`` schedule (capability ``probability_flow``,
        :func:`~geneval_plugins.models.gaussian_diffusion.linear_vp_sde`); other schedules:
        ``None``."""
        return linear_vp_sde(self.diffusion.betas)

    def flow_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s_θ(x, t) = −ε_θ(x, T·t)/√(1 − α(t)²) for x in [−1, 1] space and continuous t (N,):
        the ε-predictor (trained on timesteps 1..T) at the fractional timestep T·t (Song et al.
        2021, App. B); differentiable in x."""
        sde = self.probability_flow
        if sde is None:
            raise InputError("ddpm: this schedule has no probability-flow SDE")
        label = t.to(x.dtype) * self.diffusion.num_timesteps
        return vp_score(self.eps_model(x, label), t, sde)

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
        return image_elbo(
            self.diffusion,
            self._eps,
            x,
            generator,
            device=self.device,
            variance=variance,
            timesteps=timesteps,
            bins=bins,
        )
