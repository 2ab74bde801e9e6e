"""Model family ``grbm``: a Gaussian–Bernoulli RBM on grey-level images.

Energy E(v, h) = ½‖(v − μ)/σ‖² − (v/σ²)ᵀWh − bᵀh over v ∈ ℝ^D, h ∈ {0,1}^H (the
parametrisation of Cho, Ilin & Raiko 2011), with

* p(v | h) = N(v; μ + Wh, diag σ²) and p(h_j = 1 | v) = sigmoid(b + Wᵀ(v/σ²))_j,
* free energy F(v) = ½‖(v − μ)/σ‖² − Σ_j softplus(b_j + (Wᵀ(v/σ²))_j),
* log Z = log Σ_h ∫ exp(−E(v, h)) dv
  = log Σ_h exp(bᵀh + Σ_i (2μ_i m_i + m_i²)/(2σ_i²)) + (D/2)·log 2π + Σ_i log σ_i, m = Wh,
  exact by enumerating the hidden layer when it has at most 24 units.

σ is per pixel, stored as log σ (``net.log_sigma``) and learned with the other parameters
unless ``learn_sigma=false`` (Cho et al. 2011 learn log σ²; a fixed σ = 0.3 blurs the
background, whose pixels hardly vary). Persistent chains start from the data moments.
Sampling returns the mean μ + Wh of the last Gibbs step (``gibbs``) or the Gaussian draw
(``gibbs-state``), clamped to [0, 1]. ``log_prob`` is a log-density with respect to Lebesgue
measure on ℝ^D (``likelihood_space = "density"``); the model puts a little mass outside
[0, 1]^D, so on that cube it is a lower bound of the truncated, renormalised density.

This module registers the family without importing torch; the network
(:class:`~geneval_plugins.models.energy.grbm_network.GaussianRBM`) and the loaded models live in
:mod:`~geneval_plugins.models.energy.grbm_network`, which the family's hooks import.

References
----------
Welling, M., Rosen-Zvi, M. & Hinton, G. E. (2005). Exponential family harmoniums with an
application to information retrieval. NeurIPS. Hinton, G. E. & Salakhutdinov, R. (2006).
Reducing the dimensionality of data with neural networks. Science 313. Cho, K., Ilin, A. &
Raiko, T. (2011). Improved learning of Gaussian-Bernoulli restricted Boltzmann machines. ICANN.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import Option, SupportsAnnealing, SupportsEnergy, hookimpl
from geneval_plugins.models.energy.bipartite import BipartiteFamily, bipartite_train_options
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    from geneval_plugins.models.energy.grbm_network import GaussianRBM, GRBMModel

NAME = "grbm"
#: Default floor of a learned σ: about the grey-level step of 8×8 digits (1/16), below which
#: σ only follows the quantisation of nearly constant pixels and v/σ² stalls the chains.
SIGMA_FLOOR = 0.05


class GRBMFamily(BipartiteFamily):
    """Family ``grbm``: Gaussian–Bernoulli RBM on grey-level images, trained by PCD or CD-k."""

    name = NAME
    dataset = "digits"
    samplers = SAMPLER_NAMES[NAME]
    train_options = bipartite_train_options(
        sigma=Option(
            0.3,
            "initial (or, with learn_sigma=false, fixed) visible σ",
            low=0.0,
            low_exclusive=True,
        ),
        learn_sigma=Option(True, "learn a σ per pixel (Cho et al. 2011)"),
        sigma_floor=Option(SIGMA_FLOOR, "smallest value a learned σ may take", low=0.0),
    )
    capabilities = (SupportsEnergy, SupportsAnnealing)
    bundled_file = "grbm-digits.safetensors"
    arch_options = ("hidden", "sigma", "learn_sigma", "sigma_floor")

    @property
    def network(self) -> type[GaussianRBM]:
        """:class:`~geneval_plugins.models.energy.grbm_network.GaussianRBM`."""
        from geneval_plugins.models.energy.grbm_network import GaussianRBM

        return GaussianRBM

    @property
    def model_class(self) -> type[GRBMModel]:
        """:class:`~geneval_plugins.models.energy.grbm_network.GRBMModel`."""
        from geneval_plugins.models.energy.grbm_network import GRBMModel

        return GRBMModel

    @property
    def exact_model_class(self) -> type[GRBMModel]:
        """:class:`~geneval_plugins.models.energy.grbm_network.ExactGRBMModel`."""
        from geneval_plugins.models.energy.grbm_network import ExactGRBMModel

        return ExactGRBMModel

    def make_network(self, arch: Mapping[str, Any], n_visible: int) -> GaussianRBM:
        """A :class:`~geneval_plugins.models.energy.grbm_network.GaussianRBM` of the configured
        size; σ frozen unless it is learned."""
        net = self.network(
            n_visible, int(arch["hidden"]), float(arch["sigma"]), float(arch["sigma_floor"])
        )
        net.log_sigma.requires_grad_(bool(arch["learn_sigma"]))
        return net


@hookimpl
def geneval_register_models(register) -> None:
    """Register the ``grbm`` family."""
    register(GRBMFamily())
