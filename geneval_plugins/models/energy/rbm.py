"""Model family ``rbm``: a Bernoulli–Bernoulli restricted Boltzmann machine on binarised digits.

Energy E(x, h) = −aᵀx − bᵀh − xᵀWh over x ∈ {0,1}^D, h ∈ {0,1}^H, with

* p(h_j = 1 | x) = sigmoid(b + Wᵀx)_j and p(x_i = 1 | h) = sigmoid(a + Wh)_i,
* free energy F(x) = −log Σ_h exp(−E(x, h)) = −aᵀx − Σ_j softplus(b_j + (Wᵀx)_j),
* log Z = log Σ_x exp(−F(x)) = log Σ_h exp(bᵀh + Σ_i softplus(a_i + (Wh)_i)), computed
  exactly by enumerating whichever layer is smaller when it has at most 24 units.

Images are binarised as x = [pixel > 0.5] (``binarization``), so log-likelihoods are
probabilities of binarised images (``likelihood_space = "binary"``). Trained by persistent CD
(default) or CD-k in the core training loop; the parameters are stored under their own names,
``net.weight``, ``net.visible_bias`` and ``net.hidden_bias``.

References
----------
Smolensky, P. (1986). Foundations of harmony theory. Hinton, G. E. (2002). Training products
of experts by minimizing contrastive divergence. Neural Computation 14(8).
Salakhutdinov, R. & Murray, I. (2008). On the quantitative analysis of deep belief networks.
ICML (exact log Z by enumeration for small hidden layers, §4).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from geneval.plugin import Option, SupportsAnnealing, SupportsEnergy, TrainingStep, hookimpl
from geneval_plugins.models.energy.bipartite import (
    ENUMERATION_CHUNK,
    MAX_ENUMERATED_UNITS,
    BipartiteFamily,
    BipartiteRBM,
    ExactGibbsModel,
    GibbsModel,
    bipartite_train_options,
    enumerated_logsumexp,
    float64_copy,
)

if TYPE_CHECKING:
    from geneval_plugins.models.energy.annealing import BernoulliRBMPath

#: Pixels strictly above this value become 1 when images are binarised.
BINARIZE_THRESHOLD = 0.5
#: How training visibles are made from grey images (``--opt binarize``).
BINARIZE_MODES = ("threshold", "stochastic")
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


class RBMFamily(BipartiteFamily):
    """Family ``rbm``: Bernoulli RBM on images binarised at 0.5, trained by PCD or CD-k.

    Models offer ``energy`` (the free energy); those with a layer of at most 24 units also
    ``log_z`` and ``log_prob`` (exact, by enumeration).
    """

    name = "rbm"
    dataset = "digits"
    network = BernoulliRBM
    train_options = bipartite_train_options(
        binarize=Option(
            "threshold",
            "training visibles: the images binarised at 0.5 (threshold), or a fresh draw "
            "v ~ Bernoulli(pixel) at every step (stochastic)",
            choices=BINARIZE_MODES,
        ),
    )
    capabilities = (SupportsEnergy, SupportsAnnealing)
    bundled_file = "rbm-digits.safetensors"
    arch_options = ("hidden", "binarize")
    model_class = RBMModel
    exact_model_class = ExactRBMModel

    def prepare(self, images: torch.Tensor, arch: Mapping[str, Any]) -> torch.Tensor:
        """Binarised images, or (``stochastic``) the grey levels the draws are made from."""
        if arch.get("binarize") == "stochastic":
            return images.flatten(1)
        return super().prepare(images, arch)

    def positive(self, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """v⁺ ~ Bernoulli(grey level) per pixel when ``binarize=stochastic``."""
        if step.arch.get("binarize") != "stochastic":
            return batch
        return torch.bernoulli(batch, generator=step.generator)

    def make_network(self, arch: Mapping[str, Any], n_visible: int) -> BernoulliRBM:
        """A :class:`BernoulliRBM` of the configured size."""
        return BernoulliRBM(n_visible, int(arch["hidden"]))


@hookimpl
def geneval_register_models(register) -> None:
    register(RBMFamily())
