"""Model capabilities as typed protocols.

A metric that needs the model itself asks for it with
``Need("model", capabilities=(SupportsELBO,))``; the runner checks ``isinstance(model, P)``
for each protocol when the model loads, and an unmet need is exit 2 naming the model and the
missing capability. A model family may also declare ``capabilities`` (a tuple of these
protocols); the registry checks that what it loads really offers them.

Conventions shared by every capability:

* images are float tensors in ``[0, 1]``, NCHW, in the model's ``image_shape``, on any device
  (the model moves them to its own);
* per-image results are float tensors of shape (N,), on the model's device;
* log-likelihoods are in nats in the model's ``likelihood_space``: ``density`` (a density on
  ``[0, 1]^D``), ``discrete-8bit`` (a probability of 8-bit images) or ``binary`` (a
  probability of binarised images; the model states its binarisation rule in
  ``binarization``).

Options a capability method accepts beyond its arguments are declared in an attribute named
after the method (``elbo_options``: name → :class:`geneval.options.Option`), so that a metric
passes them on without inspecting signatures.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from geneval.options import Option

if TYPE_CHECKING:  # annotations only: declaring a capability loads no torch
    import torch

#: Names of the likelihood spaces (see the module docstring).
LIKELIHOOD_SPACES = ("density", "discrete-8bit", "binary")


@runtime_checkable
class SupportsELBO(Protocol):
    """``elbo(x, *, generator, **options)``: a lower bound on log p(x) per image, in nats.

    ``elbo_options`` declares the options it accepts (e.g. a diffusion model's number of
    Monte-Carlo timesteps); ``likelihood_space`` names the space of p.
    """

    likelihood_space: str
    elbo_options: Mapping[str, Option]

    def elbo(
        self, images: torch.Tensor, *, generator: torch.Generator, **options: Any
    ) -> torch.Tensor: ...


@runtime_checkable
class SupportsLogZ(Protocol):
    """``log_z()``: the exact log partition function (float64), where it is tractable."""

    def log_z(self) -> float: ...


@runtime_checkable
class SupportsEnergy(Protocol):
    """``energy(x)``: the energy E(x) per image, p(x) = exp(−E(x)) / Z on the model's space.

    For latent-variable models this is the free energy, −log Σ_h exp(−E(x, h)).
    """

    likelihood_space: str

    def energy(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SupportsLogProb(Protocol):
    """``log_prob(x)``: the exact log-likelihood per image in nats (normalised)."""

    likelihood_space: str

    def log_prob(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SupportsEncode(Protocol):
    """``encode(x)``: the latent representation (N, D) of images, e.g. a posterior mean."""

    def encode(self, images: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SupportsDecode(Protocol):
    """``decode(z)``: images (N, C, H, W) in ``[0, 1]`` from latents (N, D)."""

    def decode(self, latents: torch.Tensor) -> torch.Tensor: ...


@runtime_checkable
class SupportsScore(Protocol):
    """``score(x, sigma)``: ∇ₓ log p_σ(x) of the noise-perturbed data, shaped like ``x``."""

    def score(self, images: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor: ...


@runtime_checkable
class SupportsLatentProposal(Protocol):
    """Importance sampling of a latent-variable model p(x, z) = p(z) p(x | z).

    ``log_joint(x, z)`` is log p(x, z) in nats; ``sample_posterior`` draws z from the model's
    proposal q(z | x) (e.g. a VAE's encoder) and ``sample_prior`` from p(z), each returning the
    draws and their log-density. Latents are laid out (K, N, L): K draws for each of the N
    images, L latent dimensions. Every random draw uses ``generator``.
    """

    likelihood_space: str

    def log_joint(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """log p(x, z) of ``images`` (N, C, H, W) and ``latents`` (K, N, L): shape (K, N)."""
        ...

    def sample_posterior(
        self, images: torch.Tensor, k: int, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` draws z ~ q(z | x) per image (K, N, L) and log q(z | x) (K, N)."""
        ...

    def sample_prior(
        self, n: int, k: int, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` draws z ~ p(z) for each of ``n`` images (K, N, L) and log p(z) (K, N)."""
        ...


class AnnealingPath(Protocol):
    """A path of unnormalised densities f_β, β ∈ [0, 1], for annealed importance sampling.

    f_0 is a tractable base with known normaliser exp(``log_z_base``) that ``sample_base``
    draws from exactly; f_1 is the model's unnormalised marginal, exp(−E(x)) with E the
    model's ``energy`` (the free energy for latent-variable models). States are whatever the
    path's kernels act on (e.g. binarised visible vectors), (M, ...) for M parallel runs.
    """

    log_z_base: float

    def sample_base(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` exact draws from the base f_0 / Z_0."""
        ...

    def log_density(self, states: torch.Tensor, beta: float) -> torch.Tensor:
        """log f_β of each state, float64, shape (M,)."""
        ...

    def transition(
        self, states: torch.Tensor, beta: float, generator: torch.Generator
    ) -> torch.Tensor:
        """One Markov transition that leaves f_β / Z_β invariant (Gibbs, MALA, ...)."""
        ...


@runtime_checkable
class SupportsAnnealing(Protocol):
    """``annealing_path(x)``: the model's AIS path from a base fitted to the images ``x``.

    The base is tractable (a base-rate Bernoulli for binary visibles, a Gaussian fitted to the
    data, or the uniform density on the model's box support) and the path ends at
    exp(−``energy``); the model supplies the transitions (its Gibbs kernel at inverse
    temperature β, or Metropolis-adjusted Langevin restricted to its support). Reusable paths
    are in :mod:`geneval_plugins.metrics.likelihood.annealing`.
    """

    likelihood_space: str

    def annealing_path(self, images: torch.Tensor) -> AnnealingPath: ...


#: The SDE kinds of :class:`ProbabilityFlowSDE` (Song et al. 2021, §3.4).
SDE_KINDS = ("vp", "subvp", "ve")


@dataclass(frozen=True)
class ProbabilityFlowSDE:
    """The forward SDE dx = f(x, t) dt + g(t) dw of a score model, t ∈ [``eps``, ``t_end``].

    Song et al. 2021 ("Score-Based Generative Modeling through SDEs", §3.4, App. B):

    * ``vp``: β(t) = β_min + t(β_max − β_min), f = −½β(t)x, g² = β(t); x_t | x_0 has mean
      α(t)x_0 and variance 1 − α(t)², α(t) = exp(−¼t²(β_max − β_min) − ½tβ_min); prior N(0, I).
    * ``subvp``: f as ``vp``, g² = β(t)(1 − α(t)⁴); variance (1 − α(t)²)²; prior N(0, I).
    * ``ve``: σ(t) = σ_min(σ_max/σ_min)^t, f = 0, g² = dσ²/dt = 2σ(t)² ln(σ_max/σ_min);
      variance σ(t)² (about the data); prior N(0, σ_max² I).

    ``data_scale`` and ``data_shift`` map images y in [0, 1] to the model's space,
    x = ``data_scale``·y + ``data_shift`` (a DDPM's [−1, 1] is 2y − 1).
    """

    kind: str
    beta_min: float = 0.1
    beta_max: float = 20.0
    sigma_min: float = 0.01
    sigma_max: float = 50.0
    eps: float = 1e-5
    t_end: float = 1.0
    data_scale: float = 1.0
    data_shift: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in SDE_KINDS:
            raise ValueError(f"unknown SDE kind {self.kind!r} ({', '.join(SDE_KINDS)})")
        if not 0 <= self.eps < self.t_end:
            raise ValueError(f"need 0 <= eps < t_end, got {self.eps}, {self.t_end}")
        if self.data_scale == 0:
            raise ValueError("data_scale must not be 0")

    def log_mean_coeff(self, t: torch.Tensor) -> torch.Tensor:
        """log α(t) = −¼t²(β_max − β_min) − ½tβ_min of ``vp`` and ``subvp`` (0 for ``ve``):
        x_t | x_0 has mean α(t)x_0 (score_sde's ``marginal_prob``)."""
        if self.kind == "ve":
            return t * 0.0
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def marginal_std(self, t: torch.Tensor) -> torch.Tensor:
        """The standard deviation of x_t | x_0 at times t: √(1 − α²) (``vp``), 1 − α²
        (``subvp``), σ(t) = σ_min(σ_max/σ_min)^t (``ve``, the noise level a VE model is called
        at)."""
        if self.kind == "ve":
            return self.sigma_min * (self.sigma_max / self.sigma_min) ** t
        one_minus = -(2 * self.log_mean_coeff(t)).expm1()
        return one_minus.sqrt() if self.kind == "vp" else one_minus


@runtime_checkable
class SupportsProbabilityFlow(Protocol):
    """The probability-flow ODE of a score model (Song et al. 2021, §4.3).

    ``probability_flow`` is the model's :class:`ProbabilityFlowSDE` (``None`` where the model
    has none, e.g. a DDPM whose schedule has no continuous-time form); ``flow_score(x, t)``
    is s_θ(x, t) ≈ ∇ₓ log p_t(x) for x (N, C, H, W) in the model's space and times t (N,),
    differentiable in x (no ``no_grad``), so that its divergence can be taken. An
    ε-predictor returns −ε_θ(x, t)/std(t), std(t) the SDE's marginal standard deviation.
    """

    probability_flow: ProbabilityFlowSDE | None

    def flow_score(self, images: torch.Tensor, t: torch.Tensor) -> torch.Tensor: ...


# -- what sampling accepts beyond (n, generator) -------------------------------------------------


@runtime_checkable
class SupportsClassLabels(Protocol):
    """A class-conditional model: ``sample(n, ..., labels=y)`` draws image i of class
    ``y[i]`` (a LongTensor of n labels in ``[0, num_classes)``).

    The run draws the labels balanced over the classes, or reads them from ``--labels FILE``,
    and the labels travel with the samples as the ``labels`` input.
    """

    num_classes: int


@runtime_checkable
class SupportsPrompts(Protocol):
    """A text-to-image model: ``sample(n, ..., prompts=p)`` draws image i for the prompt
    ``p[i]`` (a list of n strings). The run reads the prompts from ``--prompts FILE``, and they
    travel with the samples as the ``captions`` input."""

    takes_prompts: bool


@runtime_checkable
class SupportsSampleOptions(Protocol):
    """``sample(..., **options)`` accepts the options ``sample_options`` declares (name →
    :class:`geneval.options.Option`, e.g. a guidance scale), given as ``--opt model.KEY=VALUE``
    or ``options={"model": {...}}``."""

    sample_options: Mapping[str, Option]


@runtime_checkable
class SupportsPerSampleGenerators(Protocol):
    """``sample(n, ..., generator=[g_0, …, g_{n−1}])``: one generator per image, as diffusers
    pipelines accept, so that image i depends only on the run's seed and i — not on the batch
    size nor on the shard that draws it. The run seeds g_i with
    :func:`geneval.sources.sample_block_seed` ``(seed, i)``. ``per_sample_generators`` is
    ``True``."""

    per_sample_generators: bool


#: Every capability protocol, by the short name used in listings and messages.
CAPABILITIES: dict[str, type] = {
    "elbo": SupportsELBO,
    "log_z": SupportsLogZ,
    "energy": SupportsEnergy,
    "log_prob": SupportsLogProb,
    "encode": SupportsEncode,
    "decode": SupportsDecode,
    "score": SupportsScore,
    "probability_flow": SupportsProbabilityFlow,
    "latent_proposal": SupportsLatentProposal,
    "annealing": SupportsAnnealing,
    "class_labels": SupportsClassLabels,
    "prompts": SupportsPrompts,
    "sample_options": SupportsSampleOptions,
    "per_sample_generators": SupportsPerSampleGenerators,
}


def capability_name(protocol: type) -> str:
    """The short name of a capability protocol (``SupportsELBO`` → ``elbo``)."""
    for name, proto in CAPABILITIES.items():
        if proto is protocol:
            return name
    return protocol.__name__


def capabilities_of(model: Any) -> tuple[str, ...]:
    """The short names of the capability protocols ``model`` satisfies, sorted."""
    return tuple(sorted(name for name, proto in CAPABILITIES.items() if isinstance(model, proto)))
