"""The torch side of the ``ncsn`` family: the noise-conditional score network, the loaded model
and the training loss.

The family itself (:mod:`~geneval_plugins.models.diffusion.ncsn`) registers without torch; its
hooks import this module when a network is built, trained or loaded.
:class:`NoiseConditionalScore` turns a network f(x, c) into the score model
s_θ(x, σ) = f(x, c(σ))/σ (NCSNv2 technique 3), :func:`score_matching_loss` trains it by
denoising score matching with λ(σ) = σ² (:mod:`~geneval_plugins.models.score_matching`), and
:class:`NCSNModel` samples it with the samplers of :mod:`~geneval_plugins.models.score_samplers`.

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

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import torch
from torch import nn

from geneval.plugin import ProbabilityFlowSDE, SampledModel, TrainingStep
from geneval_plugins.models.diffusion.ncsn import NAME
from geneval_plugins.models.score_matching import denoising_score_matching_loss, noise_condition
from geneval_plugins.models.score_samplers import SAMPLERS


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


def score_matching_loss(net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
    """Denoising score matching with λ(σ) = σ² (Song & Ermon 2019, Eq. 6) over the levels of
    ``step.arch["sigmas"]``, every draw from ``step.generator``."""
    sigmas = torch.tensor(step.arch["sigmas"], dtype=torch.float32, device=batch.device)
    return denoising_score_matching_loss(net, batch, sigmas, step.generator)


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

    @cached_property
    def probability_flow(self) -> ProbabilityFlowSDE:
        """The VE SDE of the noise levels (capability ``probability_flow``): σ(t) =
        σ_L(σ_1/σ_L)^t, t from 1e-5 to 1 (Song et al. 2021, §3.4, App. B), on images in
        [0, 1] as they are (the model's space)."""
        return ProbabilityFlowSDE(
            "ve",
            sigma_min=float(self.sigmas[-1]),
            sigma_max=float(self.sigmas[0]),
            eps=1e-5,
            t_end=1.0,
        )

    def flow_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s_θ(x, σ(t)) at the continuous noise level σ(t) = σ_L(σ_1/σ_L)^t, differentiable in
        x (the network's condition c(σ) is continuous in log σ)."""
        sde = self.probability_flow
        sigma = sde.marginal_std(t.to(x.dtype))
        return self.score_model(x, sigma)

    def sampler_target(self):
        """The score function the samplers drive."""
        return self.score


def _bind(cls: type, levels: list[float]):
    return lambda **settings: cls(levels, **settings)
