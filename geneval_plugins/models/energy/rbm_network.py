"""The network and loaded models of the ``rbm`` family
(:mod:`~geneval_plugins.models.energy.rbm`, where the family registers without torch).

* :class:`BernoulliRBM` — binary visible and hidden units, E(x, h) = −aᵀx − bᵀh − xᵀWh, with
  the free energy F(x) = −aᵀx − Σ_j softplus(b_j + (Wᵀx)_j) and the exact log Z by
  enumerating whichever layer is smaller when it has at most 24 units;
* :class:`RBMModel` and :class:`ExactRBMModel` — the loaded models: block Gibbs sampling, the
  free energy, AIS paths, and exact log Z and log p(x) when a layer can be enumerated.

References
----------
Smolensky, P. (1986). Foundations of harmony theory. Hinton, G. E. (2010). A practical guide
to training restricted Boltzmann machines. UTML TR 2010-003. Salakhutdinov, R. & Murray, I.
(2008). On the quantitative analysis of deep belief networks. ICML (exact log Z by enumeration
for small hidden layers, §4).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import nn

from geneval_plugins.models.energy.bipartite import MAX_ENUMERATED_UNITS
from geneval_plugins.models.energy.bipartite_network import (
    ENUMERATION_CHUNK,
    BipartiteRBM,
    ExactGibbsModel,
    GibbsModel,
    enumerated_logsumexp,
    float64_copy,
    gibbs_factories,
)
from geneval_plugins.models.energy.rbm import NAME
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    from geneval_plugins.models.energy.annealing import BernoulliRBMPath

#: Pixels strictly above this value become 1 when images are binarised.
BINARIZE_THRESHOLD = 0.5
#: The binarisation rule, as the ``binarization`` attribute states it.
BINARIZATION = "x = 1 where the pixel value (in [0, 1]) is > 0.5, else 0; channels flattened"


class BernoulliRBM(BipartiteRBM):
    """Binary visible and binary hidden units: E(x, h) = −aᵀx − bᵀh − xᵀWh.

    ``visible_bias`` is a, ``hidden_bias`` b, ``weight`` W (D×H). The buffer ``chain_mean``
    holds the per-pixel probabilities Gibbs chains start from (the training base rate).
    """

    def __init__(self, n_visible: int, n_hidden: int) -> None:
        super().__init__(n_visible, n_hidden)
        self.visible_bias = nn.Parameter(torch.zeros(n_visible))
        self.register_buffer("chain_mean", torch.full((n_visible,), 0.5))

    def hidden_input(self, v: torch.Tensor) -> torch.Tensor:
        """s(x) = x."""
        return v

    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """p(x_i = 1 | h) = sigmoid(a + Wh)_i, shape (N, D)."""
        return torch.sigmoid(self.visible_bias + h @ self.weight.T)

    def sample_visible(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """x_i ~ Bernoulli(mean_i), independently."""
        return torch.bernoulli(mean, generator=generator)

    def joint_energy(self, v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """E(x, h) = −aᵀx − bᵀh − xᵀWh for paired rows, shape (N,)."""
        return -(v @ self.visible_bias) - (h @ self.hidden_bias) - ((v @ self.weight) * h).sum(-1)

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(x) = −aᵀx − Σ_j softplus(b_j + (Wᵀx)_j), shape (N,)."""
        return -(v @ self.visible_bias) - F.softplus(self.hidden_logits(v)).sum(-1)

    def log_hidden_marginal(self, h: torch.Tensor) -> torch.Tensor:
        """log Σ_x exp(−E(x, h)) = bᵀh + Σ_i softplus(a_i + (Wh)_i), shape (K,)."""
        return h @ self.hidden_bias + F.softplus(self.visible_bias + h @ self.weight.T).sum(-1)

    @property
    def has_exact_log_z(self) -> bool:
        """Exact when the smaller layer has at most 24 units."""
        return min(self.n_visible, self.n_hidden) <= MAX_ENUMERATED_UNITS

    @torch.no_grad()
    def log_partition(self, *, chunk_size: int = ENUMERATION_CHUNK) -> float:
        """Exact log Z in float64, enumerating the smaller layer in chunks.

        Hidden layer: log Σ_h exp(bᵀh + Σ_i softplus(a_i + (Wh)_i));
        visible layer: log Σ_x exp(−F(x)).
        """
        if self.n_hidden <= self.n_visible:
            return super().log_partition(chunk_size=chunk_size)
        if not self.has_exact_log_z:
            raise ValueError(f"exact log Z needs a layer of at most {MAX_ENUMERATED_UNITS} units")
        exact = float64_copy(self)
        value = enumerated_logsumexp(
            lambda x: -exact.free_energy(x),
            self.n_visible,
            chunk_size=chunk_size,
            device=self.weight.device,
        )
        return float(value)

    @staticmethod
    def to_visible(images: torch.Tensor) -> torch.Tensor:
        """Binarise images at 0.5 and flatten: x = [pixel > 0.5], shape (N, C·H·W)."""
        return (images.flatten(1) > BINARIZE_THRESHOLD).to(images.dtype)

    def initial_visible(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Chain starts x ~ Bernoulli(chain_mean), independently per pixel."""
        return torch.bernoulli(self.chain_mean.expand(n, -1), generator=generator)

    @torch.no_grad()
    def init_from_data(
        self, data: torch.Tensor, init_std: float, generator: torch.Generator
    ) -> None:
        """W ~ N(0, init_std²), b = 0, a_i = logit of the base rate p_i (Hinton 2010, §8)."""
        rate = data.mean(0).clamp(1e-3, 1 - 1e-3)
        self.weight.copy_(
            init_std * torch.randn(self.weight.shape, generator=generator, device=data.device)
        )
        self.hidden_bias.zero_()
        self.visible_bias.copy_(torch.logit(rate))
        self.chain_mean.copy_(rate)


class RBMModel(GibbsModel):
    """A loaded RBM: p(x) over binarised images (:data:`BINARIZATION`)."""

    factories = gibbs_factories(SAMPLER_NAMES[NAME])
    likelihood_space = "binary"
    binarization = BINARIZATION

    def annealing_path(self, images: torch.Tensor) -> BernoulliRBMPath:
        """AIS from the base-rate Bernoulli of the binarised ``images`` to this RBM, with block
        Gibbs kernels at each β (Salakhutdinov & Murray 2008; :class:`BernoulliRBMPath`)."""
        from geneval_plugins.models.energy.annealing import BernoulliRBMPath

        net = self._exact
        visible = net.to_visible(images.to(self.device)).to(torch.float64)
        return BernoulliRBMPath.from_data(net.weight, net.visible_bias, net.hidden_bias, visible)


class ExactRBMModel(ExactGibbsModel, RBMModel):
    """A loaded RBM with a layer of at most 24 units: exact log Z and log p(x) as well."""
