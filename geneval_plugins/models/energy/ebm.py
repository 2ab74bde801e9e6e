"""Model family ``ebm``: a deep convolutional energy E_θ(x), p(x) ∝ exp(−E_θ(x)), Langevin sampled.

Training objectives (``--opt objective=``), both run by the core training loop
(:mod:`geneval.training`):

* ``dsm`` (default) — denoising score matching at one noise level s (Vincent 2011): the score
  −∇ₓE_θ is fitted to that of the smoothed data x + s·z, so exp(−E_θ) models the smoothed
  density p_s = p ∗ N(0, s²I) (the deep energy estimator of Saremi et al. 2018). No sampling
  is needed during training. Samples are drawn by *walk-jump* sampling (Saremi & Hyvärinen
  2019): Langevin chains on exp(−E_θ) (the smoothing connects the modes, so short chains
  mix between digits), then the empirical-Bayes jump x̂ = y − s²∇E_θ(y), Tweedie's posterior
  mean of the clean image.
* ``dsm`` with ``noise_levels`` L > 1 (the bundled checkpoint) — one noise-conditional energy
  E_θ(x, σ) for L geometric levels σ_1 > … > σ_L = ``dsm_sigma``, fitted at all of them at
  once (the multi-level objective of Song & Ermon 2019 with λ(σ) = σ², the score written as
  −∇ₓE_θ as Salimans & Ho 2021 compare). Samples come from annealed Langevin dynamics through
  the levels, ending with the Tweedie step at σ_L: the large levels carry chains between the
  digits, the small ones sharpen them. ``energy(x)`` is E_θ(x, σ_L), the density of the data
  smoothed by N(0, σ_L² I).
* ``cd`` — contrastive divergence with Langevin negative chains,
  L = mean E(x⁺) − mean E(x⁻) + α·mean(E(x⁺)² + E(x⁻)²) (Du & Mordatch 2019, §3.3, Eq. 6),
  chains clamped to the data range. With ``buffer_size=0`` every chain is short-run, so the
  sampler used at generation time is the one the energy was trained with (Nijkamp et al.
  2019); with a buffer, chains start from past chains (95 %) or fresh noise (5 %)
  (Du & Mordatch 2019, §3.1), and the buffer is part of the training state.

Chains start from a Gaussian fitted to the training images (widened by s for ``dsm``), or
from uniform noise (``chain_start=uniform``). The network optionally has spectral
normalisation on every layer (Miyato et al. 2018); its convolution stack follows the image
size (:class:`~geneval_plugins.models.energy.ebm_network.ConvEnergy`). A checkpoint that keeps
its replay buffer also offers ``replay`` (chains continued from the buffer, as Du & Mordatch
generate).

On long chains: a ``cd`` energy is shaped only where its short training chains went, and
chains much longer than those drift to a few modes (Nijkamp et al. 2020). A one-level ``dsm``
energy is fitted only near the smoothed data as well: on digits, chains started at noisy
held-out digits drift away from them (FID 7.4 after 200 steps, 12.7 after 1000 at a quarter
of the step), which is why the bundled energy is noise-conditional and annealed.

This module registers the family without importing torch: its options, its sampler names
(:data:`SAMPLERS`) and the hooks of the core training loop, which import the network
(:mod:`~geneval_plugins.models.energy.ebm_network`) and the samplers, loaded model and
training objectives (:mod:`~geneval_plugins.models.energy.ebm_model`) when the family trains
or loads.

References
----------
Du, Y. & Mordatch, I. (2019). Implicit generation and modeling with energy-based models.
NeurIPS. Nijkamp, E., Hill, M., Zhu, S.-C. & Wu, Y. N. (2019). Learning non-convergent
non-persistent short-run MCMC toward energy-based model. NeurIPS. Nijkamp, E., Hill, M., Han,
T., Zhu, S.-C. & Wu, Y. N. (2020). On the anatomy of MCMC-based maximum likelihood learning of
energy-based models. AAAI. Saremi, S., Mehrjou, A., Schölkopf, B. & Hyvärinen, A. (2018).
Deep energy estimator networks. arXiv:1805.08306. Saremi, S. & Hyvärinen, A. (2019). Neural
empirical Bayes. JMLR 20(181). Miyato, T. et al. (2018). Spectral normalization for generative
adversarial networks. ICLR. Vincent, P. (2011). A connection between score matching and
denoising autoencoders. Neural Computation 23(7). Song, Y. & Ermon, S. (2019). Generative
modeling by estimating gradients of the data distribution. NeurIPS. Salimans, T. & Ho, J.
(2021). Should EBMs model the energy or the score? ICLR EBM workshop. Perez, E. et al. (2018).
FiLM: visual reasoning with a general conditioning layer. AAAI.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    Option,
    SupportsAnnealing,
    SupportsEnergy,
    SupportsProbabilityFlow,
    TrainableFamily,
    TrainingStep,
    hookimpl,
    training_options,
)
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    import torch
    from torch import nn

    from geneval.plugin import Checkpoint
    from geneval_plugins.models.energy.ebm_model import EBMModel
    from geneval_plugins.models.energy.ebm_network import ConvEnergy

NAME = "ebm"
#: Training objectives of the ``ebm`` family.
OBJECTIVES = ("cd", "dsm")
#: Where Langevin chains start: the Gaussian fitted to the data, or uniform noise.
CHAIN_STARTS = ("gaussian", "uniform")
#: Sampler names accepted by ``sample(sampler=...)`` (:data:`SAMPLER_NAMES`), one constant
#: each: Langevin from the chain start (walk-jump for ``dsm``), the chains of the replay
#: buffer continued with the Langevin settings (a checkpoint that kept its buffer), and
#: annealed Langevin over the noise levels, which needs a noise-conditional energy
#: (``noise_levels`` > 1) and is then the default.
SAMPLERS = SAMPLER_NAMES[NAME]
LANGEVIN, REPLAY, ANNEALED_LANGEVIN = SAMPLERS


class EBMFamily(TrainableFamily):
    """Family ``ebm``: convolutional energy trained by CD with Langevin chains, or by DSM."""

    name = NAME
    dataset = "digits"
    samplers = SAMPLERS
    train_options = {
        **training_options(lr=1e-3, batch_size=128, ema_decay=0.0),
        "objective": Option(
            "dsm",
            "dsm (denoising score matching, walk-jump sampling) or cd (Langevin negatives)",
            choices=OBJECTIVES,
        ),
        "channels": Option(32, "channels of the first convolutions", low=1),
        "spectral_norm": Option(False, "spectral normalisation of every layer"),
        "buffer_size": Option(
            0, "replay buffer of past chains (0: every chain starts from noise)", low=0
        ),
        "reinit_fraction": Option(0.05, "share of chains restarted from noise", low=0.0, high=1.0),
        "chain_start": Option(
            "gaussian",
            "where Langevin chains start: a Gaussian fitted to the data, or uniform noise",
            choices=CHAIN_STARTS,
        ),
        "langevin_steps": Option(
            50, "Langevin steps of a chain (cd: the training chains; dsm: the walk)", low=1
        ),
        "step_size": Option(
            0.009,
            "Langevin step α on −∇E (dsm: about 0.1·dsm_sigma²; cd: e.g. 1 with noise_scale "
            "0.007, Du & Mordatch's large step with small noise)",
            low=0.0,
            low_exclusive=True,
        ),
        "noise_scale": Option(
            1.0, "Langevin noise scale c: the noise std per step is c·√(2α)", low=0.0
        ),
        "langevin_grad_clip": Option(0.0, "clip ∇E elementwise in Langevin (0: off)", low=0.0),
        "energy_penalty": Option(0.0, "α of the energy-magnitude penalty", low=0.0),
        "data_noise": Option(0.0, "std of Gaussian noise added to training images", low=0.0),
        "dsm_sigma": Option(
            0.3, "noise level s of the dsm objective and of the jump", low=0.0, low_exclusive=True
        ),
        "noise_levels": Option(
            1,
            "dsm noise levels: 1 = one level s (walk-jump sampling); L > 1 = a noise-conditional "
            "energy E(x, σ) over L geometric levels from sigma_max down to dsm_sigma, sampled by "
            "annealed Langevin (Song & Ermon 2019)",
            low=1,
        ),
        "sigma_max": Option(
            0.0,
            "largest noise level when noise_levels > 1 (0: the largest distance between two "
            "training images, Song & Ermon 2020 technique 1)",
            low=0.0,
        ),
        "sample_steps": Option(
            0, "Langevin steps of sampling, per level when annealed (0: langevin_steps)", low=0
        ),
        "sample_step_size": Option(
            0.0,
            "Langevin α of sampling (0: step_size; annealed: ε at the smallest level, 0 = "
            "NCSNv2 technique 4)",
            low=0.0,
        ),
        "sample_noise_scale": Option(0.0, "noise scale of sampling (0: noise_scale)", low=0.0),
    }
    # probability_flow: a VE SDE over the noise levels of a noise-conditional energy
    capabilities = (SupportsEnergy, SupportsAnnealing, SupportsProbabilityFlow)
    default_steps = 3000
    bundled_file = "ebm-digits.safetensors"
    arch_options = ("channels", "spectral_norm", "noise_levels", "sigma_max", "dsm_sigma")

    def architecture(self, options: Mapping[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """Channels, spectral norm, the data range the chains are clamped to, and the noise
        levels σ_1 > … > σ_L = dsm_sigma of a noise-conditional energy
        (:func:`~geneval_plugins.models.energy.ebm_model.conditional_sigmas`)."""
        low, high = float(images.min()), float(images.max())
        if not low < high:
            raise InputError("model ebm: the training images are all one value")
        arch = {**super().architecture(options, images), "data_range": [low, high]}
        levels = int(options["noise_levels"])
        arch["sigmas"] = []
        if levels > 1:
            if options["objective"] != "dsm":
                raise InputError("--opt noise_levels > 1 needs --opt objective=dsm")
            from geneval_plugins.models.energy.ebm_model import conditional_sigmas

            arch["sigmas"] = conditional_sigmas(options, images, levels)
        return arch

    def build_network(
        self, arch: Mapping[str, Any], image_shape: tuple[int, int, int]
    ) -> ConvEnergy:
        """The :class:`~geneval_plugins.models.energy.ebm_network.ConvEnergy` for
        ``image_shape``."""
        from geneval_plugins.models.energy.ebm_network import ConvEnergy

        return ConvEnergy(
            int(image_shape[0]),
            int(arch["channels"]),
            (int(image_shape[1]), int(image_shape[2])),
            spectral_norm=bool(arch["spectral_norm"]),
            sigmas=arch.get("sigmas", ()),
        )

    def initialise(
        self,
        net: nn.Module,
        data: torch.Tensor,
        options: Mapping[str, Any],
        generator: torch.Generator,
    ) -> None:
        """Fit the chain-start Gaussian to the training images (widened by s for ``dsm``)."""
        dsm = options["objective"] == "dsm"
        net.fit_start(data, noise=float(options["dsm_sigma"]) if dsm else 0.0)

    def initial_state(
        self, net: nn.Module, data: torch.Tensor, step: TrainingStep
    ) -> dict[str, torch.Tensor]:
        """A replay buffer of uniform noise when ``buffer_size`` > 0 (objective ``cd``)."""
        size = int(step.options["buffer_size"])
        if step.options["objective"] != "cd" or size == 0:
            return {}
        from geneval_plugins.models.energy.ebm_model import initial_buffer

        return {"buffer": initial_buffer(net, data, size, step)}

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """The ``cd`` loss with this step's negative chains, or the ``dsm`` loss
        (:func:`~geneval_plugins.models.energy.ebm_model.ebm_loss`)."""
        from geneval_plugins.models.energy.ebm_model import ebm_loss

        return ebm_loss(net, batch, step)

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """Langevin (walk-jump for ``dsm``) with the ``sample_*`` settings (default: the
        training chains'); for a noise-conditional energy, annealed Langevin by default with
        ε from NCSNv2 technique 4 unless ``sample_step_size`` is set. Each sampler stores
        what :data:`~geneval_plugins.models.energy.ebm_model.SAMPLER_SETTINGS` gives it."""
        from geneval_plugins.models.energy.ebm_model import SAMPLER_SETTINGS

        stored = {name: SAMPLER_SETTINGS[name](options, arch) for name in self.samplers}
        settings = {name: value for name, value in stored.items() if value is not None}
        default = ANNEALED_LANGEVIN if ANNEALED_LANGEVIN in settings else LANGEVIN
        return {"sampler": default, **settings}

    def make_model(self, net: nn.Module, checkpoint: Checkpoint, device: torch.device) -> EBMModel:
        """The EBM around the energy network (with the replay buffer when it was kept)."""
        from geneval_plugins.models.energy.ebm_model import EBMModel

        buffer = checkpoint.group("state").get("buffer")
        return EBMModel(
            net,
            checkpoint.config,
            image_shape=checkpoint.image_shape,
            device=device,
            buffer=None if buffer is None else buffer.to(device),
        )


@hookimpl
def geneval_register_models(register) -> None:
    """Register the ``ebm`` family."""
    register(EBMFamily())
