"""Model family ``grbm``: a Gaussian–Bernoulli RBM on the grey-level digits.

Energy E(v, h) = ½‖(v − μ)/σ‖² − (v/σ²)ᵀWh − bᵀh over v ∈ ℝ^D, h ∈ {0,1}^H, with

* p(v | h) = N(v; μ + Wh, diag σ²) and p(h_j = 1 | v) = sigmoid(b + Wᵀ(v/σ²))_j,
* free energy F(v) = ½‖(v − μ)/σ‖² − Σ_j softplus(b_j + (Wᵀ(v/σ²))_j),
* log Z = log Σ_h ∫ exp(−E(v, h)) dv
  = log Σ_h exp(bᵀh + Σ_i (2μ_i m_i + m_i²)/(2σ_i²)) + (D/2)·log 2π + Σ_i log σ_i, m = Wh,
  exact by enumerating the hidden layer when it has at most 24 units.

σ is fixed per pixel (a buffer, set from the ``sigma`` option). Sampling returns the mean
μ + Wh of the last Gibbs step (``gibbs``) or the Gaussian draw (``gibbs-state``), clamped to
[0, 1]. ``log_prob`` is a log-density with respect to Lebesgue measure on the pixel values.

References
----------
Welling, M., Rosen-Zvi, M. & Hinton, G. E. (2005). Exponential family harmoniums with an
application to information retrieval. NeurIPS. Hinton, G. E. & Salakhutdinov, R. (2006).
Reducing the dimensionality of data with neural networks. Science 313. Cho, K., Ilin, A. &
Raiko, T. (2011). Improved learning of Gaussian-Bernoulli restricted Boltzmann machines. ICANN.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geneval.hookspecs import hookimpl
from geneval_plugins.models.gibbs import GIBBS_TRAIN_DEFAULTS, BipartiteRBM, GibbsFamily


class GaussianRBM(BipartiteRBM):
    """Gaussian visible units with fixed per-pixel σ, binary hidden units.

    ``visible_mean`` parameter μ (``visible_offset``), ``weight`` W (D×H), ``hidden_bias`` b;
    buffers ``sigma`` (D,), and ``chain_mean``/``chain_std`` (D,) that Gibbs chains start from
    (v ~ N(chain_mean, diag chain_std²), the training data's moments).
    """

    def __init__(self, n_visible: int, n_hidden: int, sigma: float = 1.0) -> None:
        super().__init__(n_visible, n_hidden)
        if not sigma > 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        self.visible_offset = nn.Parameter(torch.zeros(n_visible))
        self.register_buffer("sigma", torch.full((n_visible,), float(sigma)))
        self.register_buffer("chain_mean", torch.zeros(n_visible))
        self.register_buffer("chain_std", torch.ones(n_visible))

    def hidden_input(self, v: torch.Tensor) -> torch.Tensor:
        """s(v) = v/σ²."""
        return v / self.sigma.pow(2)

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h] = μ + Wh, shape (N, D)."""
        return self.visible_offset + h @ self.weight.T

    def sample_visible(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """v = mean + σ ⊙ z, z ~ N(0, I)."""
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + self.sigma * noise

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(v, h) = ½‖(v − μ)/σ‖² − (v/σ²)ᵀWh − bᵀh for paired rows, shape (N,)."""
        quadratic = 0.5 * ((v - self.visible_offset) / self.sigma).pow(2).sum(-1)
        return quadratic - ((self.hidden_input(v) @ self.weight) * h).sum(-1) - h @ self.hidden_bias

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = ½‖(v − μ)/σ‖² − Σ_j softplus(b_j + (Wᵀ(v/σ²))_j), shape (N,)."""
        quadratic = 0.5 * ((v - self.visible_offset) / self.sigma).pow(2).sum(-1)
        return quadratic - F.softplus(self.hidden_logits(v)).sum(-1)

    def log_hidden_marginal(self, h: torch.Tensor) -> torch.Tensor:
        """log ∫ exp(−E(v, h)) dv = bᵀh + Σ_i (2μ_i m_i + m_i²)/(2σ_i²) + Σ_i log(√(2π) σ_i)."""
        m = h @ self.weight.T
        var = self.sigma.pow(2)
        gauss = ((2 * self.visible_offset * m + m.pow(2)) / (2 * var)).sum(-1)
        const = 0.5 * self.n_visible * math.log(2 * math.pi) + torch.log(self.sigma).sum()
        return h @ self.hidden_bias + gauss + const

    @staticmethod
    def encode(images: torch.Tensor) -> torch.Tensor:
        """Flatten images to visible vectors (grey levels kept), shape (N, C·H·W)."""
        return images.flatten(1)

    def initial_visible(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Chain starts v ~ N(chain_mean, diag chain_std²)."""
        noise = torch.randn(
            (n, self.n_visible), generator=generator, device=self.chain_mean.device,
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
        self.visible_offset.copy_(data.mean(0))
        self.chain_mean.copy_(data.mean(0))
        self.chain_std.copy_(data.std(0))


class GRBMFamily(GibbsFamily):
    """Family ``grbm``: Gaussian–Bernoulli RBM on grey-level digits, trained by PCD or CD-k."""

    name = "grbm"
    network = GaussianRBM
    #: Training options (``--opt key=value``): as for ``rbm`` plus the fixed visible σ.
    train_defaults: Mapping[str, Any] = {**GIBBS_TRAIN_DEFAULTS, "sigma": 0.3}

    def initial_config(
        self, opts: Mapping[str, Any], image_shape: tuple[int, ...]
    ) -> dict[str, Any]:
        """Architecture and sampling config, plus the fixed visible σ."""
        return {**super().initial_config(opts, image_shape), "sigma": float(opts["sigma"])}

    def make_network(self, config: Mapping[str, Any]) -> GaussianRBM:
        """A :class:`GaussianRBM` of the configured size and σ."""
        sizes = int(config["n_visible"]), int(config["n_hidden"])
        return GaussianRBM(*sizes, float(config["sigma"]))


@hookimpl
def geneval_register_models(register) -> None:
    register(GRBMFamily())
