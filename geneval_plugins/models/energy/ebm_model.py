"""The samplers, loaded model and training objectives of the ``ebm`` family
(:mod:`~geneval_plugins.models.energy.ebm`, where the family registers without torch; the
network is :class:`~geneval_plugins.models.energy.ebm_network.ConvEnergy`).

* Samplers, under the family's names (:data:`~geneval_plugins.models.energy.ebm.SAMPLERS`):
  Langevin chains (:func:`langevin_settings`, :func:`langevin_sampler`; walk-jump for a
  ``dsm`` energy, Saremi & Hyvärinen 2019), the replay buffer's chains (Du & Mordatch 2019,
  §3.1) and annealed Langevin on a noise-conditional energy (:class:`AnnealedEnergyLangevin`;
  Song & Ermon 2019). :data:`SAMPLER_SETTINGS` gives what each stores in a checkpoint.
* :class:`EBMModel` — the loaded model: those samplers, ``energy`` and an AIS path.
* Training: :func:`ebm_loss` — contrastive divergence with Langevin negatives
  (:func:`contrastive_divergence_loss`; Du & Mordatch 2019, Eq. 6) or denoising score matching
  of −∇ₓE_θ (:func:`energy_score`; Vincent 2011, Song & Ermon 2019) —, the training chains
  (:func:`training_chains`, :func:`initial_buffer`) and the noise levels of a
  noise-conditional energy (:func:`conditional_sigmas`).

References
----------
Du, Y. & Mordatch, I. (2019). Implicit generation and modeling with energy-based models.
NeurIPS. Saremi, S. & Hyvärinen, A. (2019). Neural empirical Bayes. JMLR 20(181). Vincent, P.
(2011). A connection between score matching and denoising autoencoders. Neural Computation
23(7). Song, Y. & Ermon, S. (2019). Generative modeling by estimating gradients of the data
distribution. NeurIPS. Song, Y. & Ermon, S. (2020). Improved techniques for training
score-based generative models. NeurIPS. Neal, R. M. (2001). Annealed importance sampling.
Statistics and Computing 11.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from geneval.plugin import InputError, ProbabilityFlowSDE, SampledModel, TrainingStep, draw
from geneval_plugins.models.energy.ebm import ANNEALED_LANGEVIN, LANGEVIN, NAME, REPLAY
from geneval_plugins.models.energy.ebm_network import ConvEnergy
from geneval_plugins.models.energy.mcmc import (
    LangevinSampler,
    ReplayBufferSampler,
    energy_gradient,
)
from geneval_plugins.models.noise_levels import (
    geometric_sigmas,
    max_pairwise_distance,
    ncsnv2_step_size,
)
from geneval_plugins.models.score_matching import denoising_score_matching_loss
from geneval_plugins.models.score_samplers import AnnealedLangevinSampler

if TYPE_CHECKING:
    from geneval_plugins.models.energy.annealing import EnergyPath


def langevin_settings(
    options: Mapping[str, Any], arch: Mapping[str, Any], *, sampling: bool
) -> dict[str, Any]:
    """The :class:`LangevinSampler` settings of the ``cd`` training chains, or (``sampling``)
    of ``sample``, whose ``sample_*`` options default (0) to the training chains' settings.

    ``dsm`` chains walk on the smoothed density (no clamping) and end with the jump
    x̂ = y − s²∇E(y); ``cd`` chains are clamped to the data range.
    """

    def pick(sample_key: str, train_key: str) -> Any:
        return (options[sample_key] if sampling else 0) or options[train_key]

    clip = float(options["langevin_grad_clip"])
    dsm = options["objective"] == "dsm"
    return {
        "steps": int(pick("sample_steps", "langevin_steps")),
        "step_size": float(pick("sample_step_size", "step_size")),
        "noise_scale": float(pick("sample_noise_scale", "noise_scale")),
        "grad_clip": clip if clip > 0 else None,
        "start": "model" if options["chain_start"] == "gaussian" else "uniform",
        "clamp": None if dsm else list(arch["data_range"]),
        "jump": float(options["dsm_sigma"]) ** 2 if dsm else 0.0,
    }


def langevin_sampler(settings: Mapping[str, Any]) -> LangevinSampler:
    """A :class:`LangevinSampler` from stored settings (the clamp range stored as a list)."""
    clamp = settings.get("clamp")
    return LangevinSampler(**{**settings, "clamp": None if clamp is None else tuple(clamp)})


def annealed_settings(options: Mapping[str, Any], arch: Mapping[str, Any]) -> dict[str, Any] | None:
    """The :class:`AnnealedEnergyLangevin` settings of a noise-conditional energy (``None``
    for an energy of one level): ``sample_steps`` Langevin steps per level and ε =
    ``sample_step_size``, or by default ε from NCSNv2 technique 4 (Song & Ermon 2020), ending
    with the Tweedie step."""
    sigmas = arch.get("sigmas") or []
    if not sigmas:
        return None
    steps = int(options["sample_steps"] or options["langevin_steps"])
    eps = float(options["sample_step_size"]) or ncsnv2_step_size(
        float(sigmas[0] / sigmas[1]), steps, float(sigmas[-1])
    )
    return {"eps": eps, "steps_per_level": steps, "denoise": True}


#: The settings a sampler stores, from the training options and the ``arch`` config.
SettingsRule = Callable[[Mapping[str, Any], Mapping[str, Any]], dict[str, Any] | None]
#: What each sampler stores in a checkpoint's ``sampling`` config, from the training options
#: and the ``arch`` config (``None``: nothing): the Langevin settings; nothing for the replay
#: sampler, which continues the buffer's chains with the Langevin settings; the annealed
#: settings of a noise-conditional energy.
SAMPLER_SETTINGS: dict[str, SettingsRule] = {
    LANGEVIN: lambda options, arch: langevin_settings(options, arch, sampling=True),
    REPLAY: lambda options, arch: None,
    ANNEALED_LANGEVIN: annealed_settings,
}


class AnnealedEnergyLangevin:
    """Annealed Langevin dynamics (Song & Ermon 2019, Algorithm 1) on a noise-conditional
    energy: :class:`AnnealedLangevinSampler` driven by the score s(x, σ) = −∇ₓE_θ(x, σ), ending
    with the Tweedie step at the smallest level. Takes the sampler's settings (``eps``,
    ``steps_per_level``, ``denoise``) for the energy's levels."""

    def __init__(self, sigmas: Sequence[float], **settings: Any) -> None:
        self.inner = AnnealedLangevinSampler(list(sigmas), **settings)
        self.schedule = self.inner.schedule

    def set_steps(self, steps: int) -> None:
        """Langevin steps per noise level."""
        self.inner.set_steps(steps)
        self.schedule = self.inner.schedule

    @staticmethod
    def score(energy: ConvEnergy) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """s(x, σ) = −∇ₓE(x, σ) per sample."""
        return lambda x, sigma: -energy_gradient(lambda y: energy(y, sigma), x)

    def init(self, energy: ConvEnergy, shape, generator: torch.Generator, device) -> torch.Tensor:
        """x ~ N(0, σ_1² I)."""
        return self.inner.init(self.score(energy), shape, generator, device)

    def step(self, energy: ConvEnergy, x: torch.Tensor, point, generator) -> torch.Tensor:
        """One Langevin update at one level."""
        return self.inner.step(self.score(energy), x, point, generator)

    def output(self, energy: ConvEnergy, x: torch.Tensor) -> torch.Tensor:
        """The Tweedie-denoised chain."""
        return self.inner.output(self.score(energy), x).detach()


class EBMModel(SampledModel):
    """A loaded deep EBM: Langevin sampling and ``energy``.

    ``energy(x)`` (:class:`~geneval.capabilities.SupportsEnergy`) is E_θ(x) in float64 for
    images in ``[0, 1]``: p(x) ∝ exp(−E_θ(x)) is a density on ``[0, 1]^D``
    (``likelihood_space = "density"``). For a ``dsm`` checkpoint exp(−E_θ) models the
    smoothed density p_s (see :mod:`~geneval_plugins.models.energy.ebm`), restricted to that
    box. log Z of a deep energy is intractable, so ``log_z``/``log_prob`` are not offered.
    """

    family = NAME
    likelihood_space = "density"

    def __init__(
        self,
        net: ConvEnergy,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, int, int],
        device: torch.device | str,
        buffer: torch.Tensor | None = None,
    ) -> None:
        super().__init__(config, image_shape=image_shape, device=device)
        self.net = net.to(self.device).eval()
        self._exact = copy.deepcopy(self.net).to(torch.float64)

        def langevin(**settings: Any) -> LangevinSampler:
            return langevin_sampler(settings)

        def replay(**settings: Any) -> ReplayBufferSampler:
            if buffer is None:
                raise ValueError(
                    "this checkpoint keeps no replay buffer (trained with "
                    "buffer_size=0 or saved with save_training_state=false)"
                )
            # a fresh copy per sampler: sampling writes chains back into the buffer
            return ReplayBufferSampler(langevin(**settings), buffer.clone(), reinit=0.0)

        def annealed(**settings: Any) -> AnnealedEnergyLangevin:
            if not net.conditional:
                raise ValueError(
                    f"{ANNEALED_LANGEVIN} needs a noise-conditional energy (trained with "
                    "noise_levels > 1)"
                )
            return AnnealedEnergyLangevin(net.sigmas.tolist(), **settings)

        self.factories = {LANGEVIN: langevin, REPLAY: replay, ANNEALED_LANGEVIN: annealed}
        # the replay sampler uses the Langevin settings
        self.config["sampling"] = {
            **self.config["sampling"],
            REPLAY: self.config["sampling"][LANGEVIN],
        }

    @cached_property
    def probability_flow(self) -> ProbabilityFlowSDE | None:
        """The VE SDE of a noise-conditional energy's levels (capability
        ``probability_flow``): σ(t) = σ_L(σ_1/σ_L)^t, t from 1e-5 to 1, on images in [0, 1];
        ``None`` for an energy of one noise level (no path to a prior)."""
        if not self.net.conditional:
            return None
        sigmas = self.net.sigmas
        return ProbabilityFlowSDE(
            "ve",
            sigma_min=float(sigmas[-1]),
            sigma_max=float(sigmas[0]),
            eps=1e-5,
            t_end=1.0,
        )

    def flow_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s_θ(x, t) = −∇ₓE_θ(x, σ(t)), σ(t) = σ_L(σ_1/σ_L)^t; the gradient keeps its graph
        when x requires one, so that the divergence (a second derivative of E) can be taken."""
        sde = self.probability_flow
        if sde is None:
            raise InputError("ebm: an energy of one noise level has no probability-flow SDE")
        sigma = sde.marginal_std(t.to(x.dtype))
        with torch.inference_mode(False), torch.enable_grad():
            keep = x.requires_grad
            y = x if keep else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.net(y, sigma).sum(), y, create_graph=keep)
        return -grad

    def sampler_target(self) -> ConvEnergy:
        """The energy network the Langevin chains descend."""
        return self.net

    @torch.no_grad()
    def energy(self, images: torch.Tensor) -> torch.Tensor:
        """E_θ(x) of each image, computed in float64, shape (N,)."""
        return self._exact(images.to(self.device, torch.float64))

    def annealing_path(self, images: torch.Tensor) -> EnergyPath:
        """AIS from a Gaussian fitted to ``images`` and truncated to the data range, to
        exp(−E_θ) on that box, with Metropolis-adjusted Langevin kernels
        (:class:`EnergyPath`; Neal 2001). The energy is evaluated in float64."""
        from geneval_plugins.models.energy.annealing import (
            EnergyPath,
            TruncatedGaussianBase,
        )

        low, high = (float(v) for v in self.config["arch"]["data_range"])
        data = images.to(self.device, torch.float64)
        base = TruncatedGaussianBase.fitted(data, low=low, high=high)
        return EnergyPath(self._exact, base)


def contrastive_divergence_loss(
    energy_pos: torch.Tensor, energy_neg: torch.Tensor, penalty: float
) -> torch.Tensor:
    """mean E(x⁺) − mean E(x⁻) + α·mean(E(x⁺)² + E(x⁻)²)   (Du & Mordatch 2019, Eq. 6)."""
    regulariser = penalty * (energy_pos.pow(2).mean() + energy_neg.pow(2).mean())
    return energy_pos.mean() - energy_neg.mean() + regulariser


def energy_score(net: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """s(x, σ) = −∇ₓE_θ(x, σ) (σ ignored unless the energy is noise-conditional), for DSM.

    The graph is kept (``create_graph``) so that the loss can be differentiated in θ.
    """

    conditional = bool(getattr(net, "conditional", False))

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            energy = net(x, sigma) if conditional else net(x)
            (grad,) = torch.autograd.grad(energy.sum(), x, create_graph=True)
        return -grad

    return score


def conditional_sigmas(
    options: Mapping[str, Any], images: torch.Tensor, levels: int
) -> list[float]:
    """The ``levels`` geometric noise levels σ_1 > … > σ_L = ``dsm_sigma`` of a
    noise-conditional energy; σ_1 = ``sigma_max``, or by default the largest distance between
    two training images (Song & Ermon 2020, technique 1)."""
    sigma_min = float(options["dsm_sigma"])
    sigma_max = float(options["sigma_max"]) or max_pairwise_distance(images)
    if not sigma_max > sigma_min:
        raise InputError(f"--opt sigma_max={sigma_max:g}: must be above dsm_sigma ({sigma_min:g})")
    return geometric_sigmas(sigma_max, sigma_min, levels).tolist()


def training_chains(step: TrainingStep) -> LangevinSampler | ReplayBufferSampler:
    """The negative chains of a ``cd`` step: Langevin from the chain start, or continued from
    the replay buffer in ``step.state`` (restarting ``reinit_fraction`` of them)."""
    langevin = langevin_sampler(langevin_settings(step.options, step.arch, sampling=False))
    if "buffer" not in step.state:
        return langevin
    return ReplayBufferSampler(
        langevin, step.state["buffer"], reinit=float(step.options["reinit_fraction"])
    )


def initial_buffer(
    net: nn.Module, data: torch.Tensor, size: int, step: TrainingStep
) -> torch.Tensor:
    """A replay buffer of ``size`` chain starts of the training chains."""
    sampler = langevin_sampler(langevin_settings(step.options, step.arch, sampling=False))
    shape = (size, *data.shape[1:])
    return sampler.init(net, shape, step.generator, data.device)


def ebm_loss(net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
    """The ``cd`` loss with this step's negative chains, or the ``dsm`` loss (over the noise
    levels of a noise-conditional energy, else at ``dsm_sigma``); the training images are
    jittered by ``data_noise`` first."""
    noise = float(step.options["data_noise"])
    if noise > 0:
        jitter = torch.randn(batch.shape, generator=step.generator, device=step.generator.device)
        batch = batch + noise * jitter.to(batch)
    if step.options["objective"] == "dsm":
        levels = step.arch.get("sigmas") or [float(step.options["dsm_sigma"])]
        sigmas = torch.tensor(levels, dtype=batch.dtype, device=batch.device)
        return denoising_score_matching_loss(energy_score(net), batch, sigmas, step.generator)
    negatives = draw(
        training_chains(step),
        net,
        tuple(batch.shape),
        step.generator,
        device=batch.device,
        progress=False,
    )
    return contrastive_divergence_loss(
        net(batch), net(negatives), float(step.options["energy_penalty"])
    )
