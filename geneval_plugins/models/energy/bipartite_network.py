"""The networks and loaded models of the Bernoulli RBM (``rbm``) and the Gaussian–Bernoulli RBM
(``grbm``): what the two share.

* :class:`BipartiteRBM` — the network base: weights W (D×H), hidden biases b, the hidden
  conditional p(h_j = 1 | v) = sigmoid(b + Wᵀ s(v))_j (s(v) = v for binary visibles, v/σ²
  for Gaussian ones), and the exact log partition function by enumerating the hidden layer
  in chunks with a float64 log-sum-exp.
* :func:`contrastive_divergence_loss` and :func:`bipartite_loss` — the CD-k / persistent-CD
  objective (Hinton 2002; Tieleman 2008), whose negative chains are the
  :class:`~geneval_plugins.models.energy.mcmc.GibbsSampler`'s, or the exact negative
  log-likelihood.
* :class:`GibbsModel` and :class:`ExactGibbsModel` — the loaded models (energy; exact log Z and
  log p when a layer is small enough to enumerate), with their samplers from
  :func:`gibbs_factories`.

The family hooks that build, train and load them are
:class:`~geneval_plugins.models.energy.bipartite.BipartiteFamily`'s (no torch).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from geneval.plugin import SampledModel, TrainingStep, run_chain
from geneval_plugins.models.energy.bipartite import MAX_ENUMERATED_UNITS
from geneval_plugins.models.energy.mcmc import GIBBS_OUTPUTS, GibbsSampler

#: Configurations per enumeration chunk (bounds memory: chunk × units float64 values).
ENUMERATION_CHUNK = 1 << 16


def binary_configurations(
    n_units: int, *, chunk_size: int = ENUMERATION_CHUNK, dtype: torch.dtype, device: torch.device
) -> Iterator[torch.Tensor]:
    """Every binary vector of length ``n_units``, in chunks of at most ``chunk_size`` rows.

    Row ``k`` of the whole sequence is the binary expansion of ``k`` (bit ``i`` in column ``i``).
    """
    bits = torch.arange(n_units, device=device)
    total = 1 << n_units
    for start in range(0, total, chunk_size):
        index = torch.arange(start, min(start + chunk_size, total), device=device)
        yield ((index[:, None] >> bits) & 1).to(dtype)


def enumerated_logsumexp(
    log_weight: Any,
    n_units: int,
    *,
    chunk_size: int = ENUMERATION_CHUNK,
    device: torch.device,
    dtype: torch.dtype = torch.float64,
) -> torch.Tensor:
    """log Σ_u exp(log_weight(u)) over all u ∈ {0,1}^n_units, chunk by chunk.

    ``log_weight`` maps a (K, n_units) batch of configurations (of ``dtype``: float64 for
    exact values, the network's type inside a differentiable training loss) to (K,) log
    weights.
    Each chunk is reduced with ``torch.logsumexp``; the chunk results are combined the same way,
    so no intermediate ever overflows.
    """
    if n_units > MAX_ENUMERATED_UNITS:
        raise ValueError(f"refusing to enumerate 2^{n_units} configurations")
    partial = [
        torch.logsumexp(log_weight(u), dim=0)
        for u in binary_configurations(n_units, chunk_size=chunk_size, dtype=dtype, device=device)
    ]
    return torch.logsumexp(torch.stack(partial), dim=0)


class BipartiteRBM(nn.Module):
    """Base of the restricted Boltzmann machines: binary hidden units h ∈ {0,1}^H.

    Subclasses define the visible units: :meth:`hidden_input` (s(v) in p(h | v)),
    :meth:`visible_mean`, :meth:`sample_visible`, :meth:`free_energy`,
    :meth:`log_hidden_marginal` (log Σ_v exp(−E(v, h)), or the integral for continuous v),
    :meth:`to_visible` (images → visible vectors, e.g. the binarisation of a binary RBM) and
    :meth:`initial_visible` (chain starts).

    References
    ----------
    Smolensky, P. (1986). Information processing in dynamical systems: foundations of harmony
    theory. Hinton, G. E. (2010). A practical guide to training restricted Boltzmann machines.
    UTML TR 2010-003.
    """

    def __init__(self, n_visible: int, n_hidden: int) -> None:
        super().__init__()
        if n_visible < 1 or n_hidden < 1:
            raise ValueError(f"layer sizes must be positive, got {n_visible}×{n_hidden}")
        self.n_visible = n_visible
        self.n_hidden = n_hidden
        self.weight = nn.Parameter(torch.zeros(n_visible, n_hidden))
        self.hidden_bias = nn.Parameter(torch.zeros(n_hidden))

    # -- hidden layer (shared) ----------------------------------------------------------------
    def hidden_input(self, v: torch.Tensor) -> torch.Tensor:
        """s(v), the visible statistic the hidden units see (v for binary, v/σ² for Gaussian)."""
        raise NotImplementedError

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """b + Wᵀ s(v), shape (N, H): logit of p(h_j = 1 | v)."""
        return self.hidden_bias + self.hidden_input(v) @ self.weight

    def hidden_probs(self, v: torch.Tensor) -> torch.Tensor:
        """p(h_j = 1 | v) = sigmoid(b + Wᵀ s(v))_j, shape (N, H)."""
        return torch.sigmoid(self.hidden_logits(v))

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw h ~ p(h | v) (independent Bernoulli units) with ``generator``."""
        return torch.bernoulli(self.hidden_probs(v), generator=generator)

    # -- visible layer (per subclass) ---------------------------------------------------------
    def visible_mean(self, h: torch.Tensor) -> torch.Tensor:
        """E[v | h], shape (N, D)."""
        raise NotImplementedError

    def sample_visible(self, mean: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Draw v ~ p(v | h) given ``mean = visible_mean(h)``."""
        raise NotImplementedError

    def free_energy(self, v: torch.Tensor) -> torch.Tensor:
        """F(v) = −log Σ_h exp(−E(v, h)), shape (N,)."""
        raise NotImplementedError

    def log_hidden_marginal(self, h: torch.Tensor) -> torch.Tensor:
        """log Σ_v exp(−E(v, h)) (an integral for continuous v), shape (K,)."""
        raise NotImplementedError

    @staticmethod
    def to_visible(images: torch.Tensor) -> torch.Tensor:
        """Images float [0, 1] NCHW → visible vectors (N, D) as the model sees them."""
        raise NotImplementedError

    def init_from_data(
        self, data: torch.Tensor, init_std: float, generator: torch.Generator
    ) -> None:
        """Initialise from the training visibles (N, D): W ~ N(0, init_std²), data biases."""
        raise NotImplementedError

    def initial_visible(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """Starting states of ``n`` Gibbs chains."""
        raise NotImplementedError

    def to_image_range(self, v: torch.Tensor) -> torch.Tensor:
        """Visible vectors → values in [0, 1] for output."""
        return v.clamp(0.0, 1.0)

    # -- exact normalisation ------------------------------------------------------------------
    @property
    def has_exact_log_z(self) -> bool:
        """Whether :meth:`log_partition` is exact (the enumerated layer has ≤ 24 units)."""
        return self.n_hidden <= MAX_ENUMERATED_UNITS

    @torch.no_grad()
    def log_partition(self, *, chunk_size: int = ENUMERATION_CHUNK) -> float:
        """log Z = log Σ_h exp(log Σ_v exp(−E(v, h))) by enumerating all 2^H hidden states.

        Computed in float64 with a chunked log-sum-exp (a float64 copy of the parameters).
        """
        if not self.has_exact_log_z:
            raise ValueError(
                f"exact log Z needs a layer of at most {MAX_ENUMERATED_UNITS} units "
                f"(this model is {self.n_visible}×{self.n_hidden})"
            )
        exact = float64_copy(self)
        device = self.weight.device
        value = enumerated_logsumexp(
            exact.log_hidden_marginal, self.n_hidden, chunk_size=chunk_size, device=device
        )
        return float(value)


def float64_copy(module: BipartiteRBM) -> BipartiteRBM:
    """A float64 copy of ``module`` for exact computations (the original is left as it is)."""
    return copy.deepcopy(module).to(torch.float64)


def contrastive_divergence_loss(
    rbm: BipartiteRBM, v_data: torch.Tensor, v_model: torch.Tensor
) -> torch.Tensor:
    """mean F(v⁺) − mean F(v⁻): its gradient is the CD estimate of −∇θ mean log p(v⁺).

    ∂F(v)/∂θ = E_{p(h|v)}[∂E(v, h)/∂θ], so the gradient of this loss is
    E_data E_{h|v}[∂E/∂θ] − E_chain E_{h|v}[∂E/∂θ] with the hidden statistics taken as
    probabilities (Hinton 2010, §3.3). ``v_model`` is detached (the chain is not differentiated).
    """
    return rbm.free_energy(v_data).mean() - rbm.free_energy(v_model.detach()).mean()


def bipartite_loss(
    net: BipartiteRBM,
    batch: torch.Tensor,
    step: TrainingStep,
    *,
    positive: Callable[[torch.Tensor, TrainingStep], torch.Tensor],
) -> torch.Tensor:
    """The negative log-likelihood, or the CD objective, plus ½λ‖W‖².

    ``exact``: mean F(v⁺) + log Z with log Z = log Σ_h exp(log Σ_v exp(−E(v, h))) summed
    over all 2^H hidden states, so the gradient is the exact likelihood gradient
    E_data[∂F/∂θ] − E_model[∂F/∂θ] (no sampling; Ackley, Hinton & Sejnowski 1985).
    ``pcd``/``cd``: mean F(v⁺) − mean F(v⁻), v⁻ after k Gibbs steps from the persistent
    chains or the data. v⁺ = ``positive(batch, step)`` (the family's positive phase).
    """
    decay = float(step.options["weight_decay"])
    penalty = 0.5 * decay * net.weight.pow(2).sum() if decay else 0.0
    v_data = positive(batch, step)
    if step.options["method"] == "exact":
        log_z = enumerated_logsumexp(
            net.log_hidden_marginal, net.n_hidden, device=batch.device, dtype=batch.dtype
        )
        return net.free_energy(v_data).mean() + log_z + penalty
    sampler = GibbsSampler(steps=int(step.options["k"]))
    persistent = step.options["method"] == "pcd"
    start = step.state["chains"] if persistent else v_data
    end = run_chain(sampler, net, GibbsSampler.start(start), step.generator, progress=False)
    if persistent:
        step.state["chains"].copy_(end.visible)
    return contrastive_divergence_loss(net, v_data, end.visible) + penalty


def gibbs_factories(names: Sequence[str]) -> dict[str, Callable[..., GibbsSampler]]:
    """Block Gibbs samplers under a bipartite family's two sampler names (its entry of
    :data:`~geneval_plugins.models.sampler_names.SAMPLER_NAMES`): the first returns E[v | h]
    of the last step, the second the sampled v (:data:`~geneval_plugins.models.energy.mcmc.
    GIBBS_OUTPUTS`, in that order). Each factory takes the settings stored in a checkpoint."""

    def factory(output_kind: str) -> Callable[..., GibbsSampler]:
        return lambda **kw: GibbsSampler(output_kind=output_kind, **kw)

    return {name: factory(kind) for name, kind in zip(names, GIBBS_OUTPUTS, strict=True)}


class GibbsModel(SampledModel):
    """A loaded RBM or GRBM: block Gibbs sampling and the free energy.

    ``energy(x)`` (:class:`~geneval.capabilities.SupportsEnergy`) is the free energy
    F(v) = −log Σ_h exp(−E(v, h)) in float64 of the images as the model sees them
    (``net.to_visible``), so p(v) = exp(−F(v))/Z on the model's ``likelihood_space``.
    Samples: the family's first sampler (the default) returns E[v | h] of the last of ``steps``
    block Gibbs steps from the chain start, its second the sampled v; subclasses set
    ``factories`` with :func:`gibbs_factories` under their family's sampler names.
    """

    def __init__(
        self,
        net: BipartiteRBM,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, int, int],
        device: torch.device | str,
    ) -> None:
        super().__init__(config, image_shape=image_shape, device=device)
        self.family = str(self.config.get("family", ""))
        self.net = net.to(self.device).eval()
        self._exact = float64_copy(self.net)

    def sampler_target(self) -> BipartiteRBM:
        """The network whose conditionals the Gibbs sampler alternates."""
        return self.net

    def state_shape(self, n: int) -> tuple[int, ...]:
        """Chains are visible vectors (n, D)."""
        return (n, self.net.n_visible)

    def to_images(self, output: torch.Tensor) -> torch.Tensor:
        """Visible vectors → images in [0, 1]."""
        return self.net.to_image_range(output)

    @torch.no_grad()
    def energy(self, images: torch.Tensor) -> torch.Tensor:
        """Free energy F(v) in float64 of each image (as the model sees it), shape (N,)."""
        v = self.net.to_visible(images.to(self.device)).to(torch.float64)
        return self._exact.free_energy(v)


class ExactGibbsModel(GibbsModel):
    """A :class:`GibbsModel` whose smaller layer can be enumerated: exact log Z and log p(v).

    Adds :class:`~geneval.capabilities.SupportsLogZ` and
    :class:`~geneval.capabilities.SupportsLogProb` (log p(v) = −F(v) − log Z, float64).
    """

    _log_z: float | None = None

    def log_z(self) -> float:
        """Exact log Z (float64 enumeration of the smaller layer), computed once."""
        if self._log_z is None:
            self._log_z = self._exact.log_partition()
        return self._log_z

    @torch.no_grad()
    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        """Exact log p(v) = −F(v) − log Z in float64 of each image (as the model sees it)."""
        return -self.energy(images) - self.log_z()
