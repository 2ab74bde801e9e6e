"""What the Bernoulli RBM (``rbm``) and the Gaussian–Bernoulli RBM (``grbm``) share.

* :class:`BipartiteRBM` — the network base: weights W (D×H), hidden biases b, the hidden
  conditional p(h_j = 1 | v) = sigmoid(b + Wᵀ s(v))_j (s(v) = v for binary visibles, v/σ²
  for Gaussian ones), and the exact log partition function by enumerating the hidden layer
  in chunks with a float64 log-sum-exp.
* :func:`contrastive_divergence_loss` and :func:`train_bipartite` — CD-k and persistent CD
  (Hinton 2002; Tieleman 2008) for any subclass.
* :class:`GibbsModel` and :class:`GibbsFamily` — the :class:`geneval.api.GenerativeModel` and
  :class:`geneval.api.ModelFamily` plumbing (checkpoints, sampling, training entry point).
"""

from __future__ import annotations

import copy
import math
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geneval.api import ImageSet
from geneval.checkpoint import load_checkpoint, load_weights, save_checkpoint
from geneval.errors import InputError
from geneval.io import check_writable
from geneval.options import Option
from geneval.progress import progress_bar
from geneval.training import (
    merge_train_options,
    minibatches,
    sample_in_batches,
    total_training_steps,
)
from geneval_plugins.models.mcmc import GibbsSampler

#: Largest layer enumerated for an exact log Z (2^24 ≈ 1.7e7 configurations).
MAX_ENUMERATED_UNITS = 24
#: Configurations per enumeration chunk (bounds memory: chunk × units float64 values).
ENUMERATION_CHUNK = 1 << 16

#: Sampler names accepted by ``sample(sampler=...)``, the first being the default:
#: ``gibbs`` returns E[v | h] of the last Gibbs step, ``gibbs-state`` the sampled v itself.
GIBBS_SAMPLERS = ("gibbs", "gibbs-state")
#: The training methods of :func:`train_bipartite`.
CD_METHODS = ("pcd", "cd")


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
    log_weight: Any, n_units: int, *, chunk_size: int = ENUMERATION_CHUNK, device: torch.device
) -> torch.Tensor:
    """log Σ_u exp(log_weight(u)) over all u ∈ {0,1}^n_units, in float64, chunk by chunk.

    ``log_weight`` maps a (K, n_units) float64 batch of configurations to (K,) log weights.
    Each chunk is reduced with ``torch.logsumexp``; the chunk results are combined the same way,
    so no intermediate ever overflows.
    """
    if n_units > MAX_ENUMERATED_UNITS:
        raise ValueError(f"refusing to enumerate 2^{n_units} configurations")
    partial = [
        torch.logsumexp(log_weight(u), dim=0)
        for u in binary_configurations(
            n_units, chunk_size=chunk_size, dtype=torch.float64, device=device
        )
    ]
    return torch.logsumexp(torch.stack(partial), dim=0)


class BipartiteRBM(nn.Module):
    """Base of the restricted Boltzmann machines: binary hidden units h ∈ {0,1}^H.

    Subclasses define the visible units: :meth:`hidden_input` (s(v) in p(h | v)),
    :meth:`visible_mean`, :meth:`sample_visible`, :meth:`free_energy`,
    :meth:`log_hidden_marginal` (log Σ_v exp(−E(v, h)), or the integral for continuous v),
    :meth:`encode` (images → visible vectors) and :meth:`initial_visible` (chain starts).

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
    def encode(images: torch.Tensor) -> torch.Tensor:
        """Images float [0, 1] NCHW → visible vectors (N, D) as the model sees them."""
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


def train_bipartite(
    rbm: BipartiteRBM,
    data: torch.Tensor,
    *,
    steps: int,
    method: str,
    k: int,
    lr: float,
    batch_size: int,
    weight_decay: float,
    generator: torch.Generator,
    start_step: int = 0,
    desc: str = "training",
) -> BipartiteRBM:
    """Train ``rbm`` on visible vectors ``data`` (N, D) by CD-k or persistent CD with Adam.

    ``cd``: each negative chain starts at the minibatch and runs ``k`` Gibbs steps (Hinton 2002).
    ``pcd``: ``batch_size`` persistent chains continue across updates, ``k`` steps per update
    (Tieleman 2008). The update minimises :func:`contrastive_divergence_loss` (plus L2 weight
    decay on W) with Adam (Kingma & Ba 2015). Steps ``start_step … steps−1`` are run.

    References
    ----------
    Hinton, G. E. (2002). Training products of experts by minimizing contrastive divergence.
    Tieleman, T. (2008). Training restricted Boltzmann machines using approximations to the
    likelihood gradient. ICML.
    """
    if method not in CD_METHODS:
        raise InputError(f"--opt method={method!r}: choose from {', '.join(CD_METHODS)}")
    if k < 1:
        raise InputError(f"--opt k={k}: Gibbs steps per update must be at least 1")
    sampler = GibbsSampler(steps=k)
    optimiser = torch.optim.Adam(rbm.parameters(), lr=lr)
    batches = minibatches(data, batch_size, generator)
    chains = rbm.initial_visible(batch_size, generator) if method == "pcd" else None
    with progress_bar(total=steps - start_step, desc=desc) as bar:
        for _ in range(start_step, steps):
            v_data = next(batches)
            start = chains if chains is not None else v_data
            state = sampler.run(rbm, start, generator)
            if chains is not None:
                chains = state.visible
            loss = contrastive_divergence_loss(rbm, v_data, state.visible)
            if weight_decay:
                loss = loss + 0.5 * weight_decay * rbm.weight.pow(2).sum()
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            bar.update(1)
    return rbm


class GibbsModel:
    """A loaded RBM or GRBM as a :class:`geneval.api.GenerativeModel`.

    Capabilities: ``sample``, ``energy`` (the free energy F(v) of the encoded images) and,
    when the hidden layer is small enough to enumerate, ``log_z`` and ``log_prob``
    (log p(v) = −F(v) − log Z). Exact quantities are computed in float64.
    """

    image_shape = (1, 8, 8)

    def __init__(self, net: BipartiteRBM, config: Mapping[str, Any], device: torch.device) -> None:
        self.net = net.to(device).eval()
        self.config = dict(config)
        self.device = device
        self.image_shape = tuple(self.config.get("image_shape", (1, 8, 8)))
        caps = {"sample", "energy"}
        if net.has_exact_log_z:
            caps |= {"log_z", "log_prob"}
        self.capabilities = frozenset(caps)
        self._exact = float64_copy(self.net)
        self._log_z: float | None = None

    def sample(
        self,
        n: int,
        *,
        batch_size: int,
        generator: torch.Generator,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """``n`` samples in [0, 1], NCHW: ``steps`` block Gibbs steps from the chain start.

        ``gibbs`` (default) returns E[v | h] of the last step — for the RBM the pixel
        probabilities p(v_i = 1 | h), a Rao–Blackwellised, less noisy view of the same chain
        state that keeps grey levels as in the data; ``gibbs-state`` returns the sampled v.
        """
        sampler = sampler or GIBBS_SAMPLERS[0]
        if sampler not in GIBBS_SAMPLERS:
            raise InputError(f"--sampler {sampler!r}: choose from {', '.join(GIBBS_SAMPLERS)}")
        steps = int(self.config["sample_steps"]) if steps is None else steps
        if steps < 1:
            raise InputError(f"--steps {steps}: Gibbs steps must be at least 1")
        gibbs = GibbsSampler(steps=steps)

        def draw(k: int) -> torch.Tensor:
            state = gibbs.run(self.net, self.net.initial_visible(k, generator), generator)
            v = state.visible_mean if sampler == "gibbs" else state.visible
            return self.net.to_image_range(v).reshape(k, *self.image_shape).float()

        return sample_in_batches(n, batch_size, draw, desc="Gibbs sampling")

    @torch.no_grad()
    def energy(self, images: torch.Tensor) -> torch.Tensor:
        """Free energy F(v) in float64 of each image (encoded as in training), shape (N,)."""
        v = self.net.encode(images.to(self.device)).to(torch.float64)
        return self._exact.free_energy(v)

    def log_z(self) -> float:
        """Exact log Z (float64 enumeration of the hidden layer, or the visible one if smaller)."""
        if "log_z" not in self.capabilities:
            raise InputError(
                f"model {self.config.get('family')}: exact log Z needs at most "
                f"{MAX_ENUMERATED_UNITS} hidden units (this one has {self.net.n_hidden})"
            )
        if self._log_z is None:
            self._log_z = self._exact.log_partition()
        return self._log_z

    @torch.no_grad()
    def log_prob(self, images: torch.Tensor) -> torch.Tensor:
        """Exact log p(v) = −F(v) − log Z in float64 of each image (encoded as in training)."""
        return -self.energy(images) - self.log_z()


#: Training options shared by ``rbm`` and ``grbm`` (``--opt key=value``): hidden units,
#: ``pcd``|``cd``, Gibbs steps per update, Adam learning rate, minibatch (= persistent chains),
#: L2 on W, initial weight scale, and the Gibbs steps ``sample`` runs by default (stored in the
#: checkpoint).
GIBBS_TRAIN_DEFAULTS: Mapping[str, Any] = {
    "hidden": 24,
    "method": "pcd",
    "k": 5,
    "lr": 1e-3,
    "batch_size": 100,
    "weight_decay": 1e-4,
    "init_std": 0.01,
    "sample_steps": 1000,
}


class GibbsFamily:
    """:class:`geneval.api.ModelFamily` plumbing shared by ``rbm`` and ``grbm``.

    Subclasses set ``name`` and ``network`` and implement :meth:`make_network`; they may extend
    ``train_defaults`` and :meth:`initial_config`.
    """

    name = ""
    dataset = "digits"
    samplers = GIBBS_SAMPLERS
    network: type[BipartiteRBM] = BipartiteRBM
    train_defaults: Mapping[str, Any] = GIBBS_TRAIN_DEFAULTS
    capabilities: tuple[type, ...] = ()

    @property
    def train_options(self) -> dict[str, Option]:
        return {k: Option(v) for k, v in self.train_defaults.items()}
    default_steps = 10000

    def make_network(self, config: Mapping[str, Any]) -> BipartiteRBM:
        """An uninitialised network of the size (and σ) ``config`` describes."""
        raise NotImplementedError

    def build(
        self,
        config: Mapping[str, Any],
        data: torch.Tensor | None,
        generator: torch.Generator | None,
    ) -> BipartiteRBM:
        """The network described by ``config``; initialised from ``data`` when given
        (W ~ N(0, init_std²), visible biases from the data's base rates)."""
        net = self.make_network(config)
        if data is not None and generator is not None:
            net = net.to(data.device)
            net.init_from_data(data, float(config.get("init_std", 0.01)), generator)
        return net

    @property
    def bundled_checkpoint(self) -> Path:
        """The checkpoint shipped with the package, ``<name>-digits.safetensors``."""
        return Path(__file__).with_name(f"{self.name}-digits.safetensors")

    def load(self, checkpoint: Path | None, *, device: torch.device) -> GibbsModel:
        """Load ``checkpoint`` (``None``: the bundled one) onto ``device``."""
        path = self.bundled_checkpoint if checkpoint is None else Path(checkpoint)
        tensors, config = load_checkpoint(path, model=self.name)
        net = self.build(config, None, None)
        load_weights(net, tensors, path)
        return GibbsModel(net, config, device)

    def train(
        self,
        data: ImageSet,
        *,
        output: Path,
        steps: int | None,
        device: torch.device,
        seed: int,
        resume: bool,
        force: bool,
        options: Mapping[str, Any],
    ) -> Path:
        """Train by CD-k/PCD on ``data`` and write a checkpoint to ``output``.

        ``resume`` restores the weights and step count from ``output`` and runs the remaining
        steps up to ``steps`` (optimiser moments and persistent chains restart).
        """
        opts = merge_train_options(self.name, self.train_defaults, options)
        steps = total_training_steps(steps, self.default_steps)
        generator = torch.Generator(device=device).manual_seed(seed)
        if resume:
            tensors, config = load_checkpoint(output, model=self.name)
            net = self.build(config, None, None)
            net.load_state_dict(tensors)
            start = int(config["train"]["steps_done"])
            opts = merge_train_options(
                self.name, self.train_defaults, {**config["train"]["options"], **options}
            )
        else:
            check_writable(output, force=force, what="checkpoint")
            start = 0
        visible = self.network.encode(data.images.to(device))
        if not resume:
            config = self.initial_config(opts, tuple(data.images.shape[1:]))
            net = self.build(config, visible, generator)
        net = net.to(device).train()
        train_bipartite(
            net,
            visible,
            steps=steps,
            method=str(opts["method"]),
            k=int(opts["k"]),
            lr=float(opts["lr"]),
            batch_size=int(opts["batch_size"]),
            weight_decay=float(opts["weight_decay"]),
            generator=generator,
            start_step=start,
            desc=f"training {self.name}",
        )
        config = dict(config)
        config["train"] = {
            "seed": seed,
            "steps_done": max(steps, start),
            "options": opts,
            "examples": int(visible.shape[0]),
            "device": str(device),
            "resumed_from": start if resume else None,
            "argv": sys.argv[1:] if sys.argv else [],
        }
        save_checkpoint(output, net.state_dict(), config, model=self.name, force=force or resume)
        return Path(output)

    def initial_config(
        self, opts: Mapping[str, Any], image_shape: tuple[int, ...]
    ) -> dict[str, Any]:
        """The architecture/sampling config of a new checkpoint from training options."""
        return {
            "family": self.name,
            "n_visible": int(math.prod(image_shape)),
            "n_hidden": int(opts["hidden"]),
            "image_shape": list(image_shape),
            "sample_steps": int(opts["sample_steps"]),
            "init_std": float(opts["init_std"]),
        }
