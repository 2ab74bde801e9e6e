"""The network and loaded models of the ``grbm`` family
(:mod:`~geneval_plugins.models.energy.grbm`, where the family registers without torch).

* :class:`GaussianRBM` — Gaussian visible units with a per-pixel σ and binary hidden units,
  E(v, h) = ½‖(v − μ)/σ‖² − (v/σ²)ᵀWh − bᵀh (the parametrisation of Cho, Ilin & Raiko 2011),
  with the free energy and the exact log Z by enumerating the hidden layer;
* :class:`GRBMModel` and :class:`ExactGRBMModel` — the loaded models: block Gibbs sampling, the
  free energy, AIS paths, and exact log Z and log-density when the hidden layer can be
  enumerated.

References
----------
Welling, M., Rosen-Zvi, M. & Hinton, G. E. (2005). Exponential family harmoniums with an
application to information retrieval. NeurIPS. Cho, K., Ilin, A. & Raiko, T. (2011). Improved
learning of Gaussian-Bernoulli restricted Boltzmann machines. ICANN.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from geneval_plugins.models.energy.bipartite_network import (
    BipartiteRBM,
    ExactGibbsModel,
    GibbsModel,
    gibbs_factories,
)
from geneval_plugins.models.energy.grbm import NAME
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    from geneval_plugins.models.energy.annealing import GaussianRBMPath


class GaussianRBM(BipartiteRBM):
    """Gaussian visible units with a per-pixel σ, binary hidden units.

    ``visible_bias`` μ, ``weight`` W (D×H), ``hidden_bias`` b and ``log_sigma`` log σ (D,)
    are parameters; the buffers ``chain_mean``/``chain_std`` (D,) are where Gibbs chains start
    (v ~ N(chain_mean, diag chain_std²), the training data's moments). σ = max(e^{log σ},
    ``sigma_floor``).
    """

    def __init__(
        self, n_visible: int, n_hidden: int, sigma: float = 1.0, sigma_floor: float = 0.0
    ) -> None:
        super().__init__(n_visible, n_hidden)
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.sigma_floor = float(sigma_floor)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.log_sigma = nn.Parameter(torch.full((n_visible,), math.log(sigma)))
        self.register_buffer("chain_mean", torch.zeros(n_visible))
        self.register_buffer("chain_std", torch.ones(n_visible))

    @property
    def sigma(self) -> torch.Tensor:
        """σ per pixel, (D,)."""
        return self.log_sigma.exp().clamp_min(self.sigma_floor)

    def hidden_input(self, v: torch.Tensor) -> torch.Tensor:
        """s(v) = v/σ²."""
        return v / self.sigma.pow(2)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h] = μ + Wh, shape (N, D)."""
        return self.visible_bias + h @ self.weight.T

    def sample_visible(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """v = mean + σ ⊙ z, z ~ N(0, I)."""
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.sigma * noise

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = ½‖(v − μ)/σ‖² − (v/σ²)ᵀWh − bᵀh for paired rows, shape (N,)."""
        quadratic = 0.5 * ((v - self.visible_bias) / self.sigma).pow(2).sum(-1)
        return quadratic - ((self.hidden_input(v) @ self.weight) * h).sum(-1) - h @ self.hidden_bias

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = ½‖(v − μ)/σ‖² − Σ_j softplus(b_j + (Wᵀ(v/σ²))_j), shape (N,)."""
        quadratic = 0.5 * ((v - self.visible_bias) / self.sigma).pow(2).sum(-1)
        return quadratic - F.softplus(self.hidden_logits(v)).sum(-1)

    def log_hidden_marginal(self, h: torch.Tensor) -> torch.Tensor:
        """log ∫ exp(−E(v, h)) dv = bᵀh + Σ_i (2μ_i m_i + m_i²)/(2σ_i²) + Σ_i log(√(2π) σ_i)."""
        m = h @ self.weight.T
        var = self.sigma.pow(2)
        gauss = ((2 * self.visible_bias * m + m.pow(2)) / (2 * var)).sum(-1)
        const = 0.5 * self.n_visible * math.log(2 * math.pi) + torch.log(self.sigma).sum()
        return h @ self.hidden_bias + gauss + const

    @staticmethod
    def to_visible(images: torch.Tensor) -> torch.Tensor:
        """Flatten images to visible vectors (grey levels kept), shape (N, C·H·W)."""
        return images.flatten(1)

    def initial_visible(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Chain starts v ~ N(chain_mean, diag chain_std²)."""
        noise = torch.randn(
            (n, self.n_visible),
            generator=generator,
            device=self.chain_mean.device,
            dtype=self.chain_mean.dtype,
        )
        return self.chain_mean + self.chain_std * noise

    @torch.no_grad()
    def init_from_data(
        self, data: torch.Tensor, init_std: float, generator: torch.Generator
    ) -> None:
        """W ~ N(0, init_std²), b = 0, μ = data mean; chains start from the data moments."""
        self.weight.copy_(
            init_std * torch.randn(self.weight.shape, generator=generator, device=data.device)
        )
        self.hidden_bias.zero_()
        self.visible_bias.copy_(data.mean(0))
        self.chain_mean.copy_(data.mean(0))
        self.chain_std.copy_(data.std(0))


class GRBMModel(GibbsModel):
    """A loaded GRBM: a density of the grey levels with respect to Lebesgue measure on ℝ^D."""

    factories = gibbs_factories(SAMPLER_NAMES[NAME])
    likelihood_space = "density"

    def annealing_path(self, images: torch.Tensor) -> GaussianRBMPath:
        """AIS from the images' per-pixel Gaussian to this GRBM, with block Gibbs kernels at
        each β (Salakhutdinov & Murray 2008; :class:`GaussianRBMPath`)."""
        from geneval_plugins.models.energy.annealing import GaussianRBMPath

        net = self._exact
        visible = net.to_visible(images.to(self.device)).to(torch.float64)
        return GaussianRBMPath.from_data(
            net.weight, net.visible_bias, net.hidden_bias, net.sigma, visible
        )


class ExactGRBMModel(ExactGibbsModel, GRBMModel):
    """A loaded GRBM with at most 24 hidden units: exact log Z and log-density as well."""
