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

This module registers the family without importing torch; the network
(:class:`~geneval_plugins.models.energy.rbm_network.BernoulliRBM`) and the loaded models live in
:mod:`~geneval_plugins.models.energy.rbm_network`, which the family's hooks import.

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

from geneval.plugin import Option, SupportsAnnealing, SupportsEnergy, TrainingStep, hookimpl
from geneval_plugins.models.energy.bipartite import BipartiteFamily, bipartite_train_options
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    import torch

    from geneval_plugins.models.energy.rbm_network import BernoulliRBM, RBMModel

NAME = "rbm"
#: How training visibles are made from grey images (``--opt binarize``).
BINARIZE_MODES = ("threshold", "stochastic")


class RBMFamily(BipartiteFamily):
    """Family ``rbm``: Bernoulli RBM on images binarised at 0.5, trained by PCD or CD-k.

    Models offer ``energy`` (the free energy); those with a layer of at most 24 units also
    ``log_z`` and ``log_prob`` (exact, by enumeration).
    """

    name = NAME
    dataset = "digits"
    samplers = SAMPLER_NAMES[NAME]
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

    @property
    def network(self) -> type[BernoulliRBM]:
        """:class:`~geneval_plugins.models.energy.rbm_network.BernoulliRBM`."""
        from geneval_plugins.models.energy.rbm_network import BernoulliRBM

        return BernoulliRBM

    @property
    def model_class(self) -> type[RBMModel]:
        """:class:`~geneval_plugins.models.energy.rbm_network.RBMModel`."""
        from geneval_plugins.models.energy.rbm_network import RBMModel

        return RBMModel

    @property
    def exact_model_class(self) -> type[RBMModel]:
        """:class:`~geneval_plugins.models.energy.rbm_network.ExactRBMModel`."""
        from geneval_plugins.models.energy.rbm_network import ExactRBMModel

        return ExactRBMModel

    def prepare(self, images: torch.Tensor, arch: Mapping[str, Any]) -> torch.Tensor:
        """Binarised images, or (``stochastic``) the grey levels the draws are made from."""
        if arch.get("binarize") == "stochastic":
            return images.flatten(1)
        return super().prepare(images, arch)

    def positive(self, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """v⁺ ~ Bernoulli(grey level) per pixel when ``binarize=stochastic``."""
        import torch

        if step.arch.get("binarize") != "stochastic":
            return batch
        return torch.bernoulli(batch, generator=step.generator)

    def make_network(self, arch: Mapping[str, Any], n_visible: int) -> BernoulliRBM:
        """A :class:`~geneval_plugins.models.energy.rbm_network.BernoulliRBM` of the configured
        size."""
        return self.network(n_visible, int(arch["hidden"]))


@hookimpl
def geneval_register_models(register) -> None:
    """Register the ``rbm`` family."""
    register(RBMFamily())
