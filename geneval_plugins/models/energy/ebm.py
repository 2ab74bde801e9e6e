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
size (:class:`ConvEnergy`). A checkpoint that keeps its replay buffer also offers ``replay``
(chains continued from the buffer, as Du & Mordatch generate).

On long chains: a ``cd`` energy is shaped only where its short training chains went, and
chains much longer than those drift to a few modes (Nijkamp et al. 2020). A one-level ``dsm``
energy is fitted only near the smoothed data as well: on digits, chains started at noisy
held-out digits drift away from them (FID 7.4 after 200 steps, 12.7 after 1000 at a quarter
of the step), which is why the bundled energy is noise-conditional and annealed.

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

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from geneval.plugin import (
    Checkpoint,
    InputError,
    Option,
    SampledModel,
    SupportsAnnealing,
    SupportsEnergy,
    TrainableFamily,
    TrainingStep,
    draw,
    hookimpl,
    training_options,
)
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
from geneval_plugins.models.score_matching import denoising_score_matching_loss, noise_condition
from geneval_plugins.models.score_samplers import AnnealedLangevinSampler
from geneval_plugins.models.unet import sinusoidal_embedding

if TYPE_CHECKING:
    from geneval_plugins.models.energy.annealing import EnergyPath

#: Training objectives of the ``ebm`` family.
OBJECTIVES = ("cd", "dsm")
#: Sampler names accepted by ``sample(sampler=...)``; ``annealed-langevin`` needs a
#: noise-conditional energy (``noise_levels`` > 1).
EBM_SAMPLERS = ("langevin", "replay", "annealed-langevin")
#: Width of the sinusoidal embedding of the noise level of a noise-conditional energy.
CONDITION_EMBEDDING = 32
#: Where Langevin chains start: the Gaussian fitted to the data, or uniform noise.
CHAIN_STARTS = ("gaussian", "uniform")
#: Largest number of principal directions of the chain-start Gaussian.
MAX_START_RANK = 256


def downsamplings(image_size: tuple[int, int]) -> int:
    """Stride-2 convolutions of :class:`ConvEnergy`: max(1, ⌊log₂ min(H, W)⌋ − 1).

    8×8 → 2 (8 → 4 → 2), 16×16 → 3, 32×32 → 4: the last feature map is about 2×2.
    """
    side = max(1, min(image_size))
    return max(1, int(math.log2(side)) - 1)


class ConvEnergy(nn.Module):
    """A convolutional energy network E_θ: (N, C, H, W) → (N,) whose depth follows the image size.

    Inputs in [0, 1] are mapped to [−1, 1]; two 3×3 convolutions at full resolution, then
    :func:`downsamplings` stride-2 3×3 convolutions (channels c, 2c, 4c, 4c …), each followed
    by SiLU, and a linear read-out give one scalar per image. SiLU keeps ∇ₓE smooth, as
    Langevin dynamics needs. With ``spectral_norm`` every layer's weight is divided by its
    largest singular value (one power iteration per forward pass; Miyato et al. 2018).

    With ``sigmas`` (σ_1 > … > σ_L) the network is noise-conditional, E_θ(x, σ) = f_θ(x, c(σ))/σ:
    c(σ) is log σ mapped to [0, 999] (:func:`noise_condition`), embedded sinusoidally, and a
    small MLP of it scales and shifts every convolution's output (FiLM; Perez et al. 2018);
    the 1/σ output scaling gives the score −∇ₓE the scale of NCSNv2's (Song & Ermon 2020,
    technique 3).

    The buffers ``start_mean`` (D,), ``start_factor`` (D, r) and ``start_noise`` (a scalar s)
    hold a Gaussian fitted to the training images (:meth:`fit_start`), N(mean, F Fᵀ + s² I)
    with F the top r = min(D, 256) principal directions scaled by the square roots of their
    variances; Langevin chains may start from it (:meth:`initial_states`) instead of uniform
    noise.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: int = 32,
        image_size: tuple[int, int] = (8, 8),
        spectral_norm: bool = False,
        sigmas: Sequence[float] = (),
    ) -> None:
        super().__init__()
        norm: Callable[[nn.Module], nn.Module] = (
            nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        )
        c = channels
        layers: list[nn.Module] = [
            norm(nn.Conv2d(in_channels, c, 3, padding=1)),
            nn.SiLU(),
            norm(nn.Conv2d(c, c, 3, padding=1)),
            nn.SiLU(),
        ]
        h, w = int(image_size[0]), int(image_size[1])
        width = c
        for i in range(downsamplings((h, w))):
            out = c * min(2 ** (i + 1), 4)
            layers += [norm(nn.Conv2d(width, out, 3, stride=2, padding=1)), nn.SiLU()]
            width, h, w = out, (h + 1) // 2, (w + 1) // 2
        layers.append(nn.Flatten())
        self.body = nn.Sequential(*layers)
        self.readout = norm(nn.Linear(width * h * w, 1))
        self.conditional = len(sigmas) > 0
        if self.conditional:
            levels = [float(v) for v in sigmas]
            if len(levels) < 2 or any(b >= a for a, b in zip(levels, levels[1:], strict=False)):
                raise ValueError(f"noise levels must decrease and be at least two, got {levels}")
            self.register_buffer("sigmas", torch.tensor(levels))
            widths = [m.out_channels for m in self.body if isinstance(m, nn.Conv2d)]
            self.film_widths = widths
            self.film = nn.Sequential(
                nn.Linear(CONDITION_EMBEDDING, 2 * CONDITION_EMBEDDING),
                nn.SiLU(),
                nn.Linear(2 * CONDITION_EMBEDDING, 2 * sum(widths)),
            )
        self.image_shape = (int(in_channels), int(image_size[0]), int(image_size[1]))
        dim = math.prod(self.image_shape)
        self.register_buffer("start_mean", torch.zeros(dim))
        self.register_buffer("start_factor", torch.zeros(dim, min(dim, MAX_START_RANK)))
        self.register_buffer("start_noise", torch.zeros(()))

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float | None = None) -> torch.Tensor:
        """E_θ(x), shape (N,); for a noise-conditional network E_θ(x, σ) (``sigma`` a scalar or
        (N,); ``None``: the smallest level σ_L)."""
        if not self.conditional:
            return self.readout(self.body(2 * x - 1)).squeeze(-1)
        levels = self.sigmas.to(x.dtype)
        sigma = levels[-1] if sigma is None else torch.as_tensor(sigma, dtype=x.dtype)
        sigma = sigma.to(x.device).expand(x.shape[0]) if sigma.ndim == 0 else sigma.to(x.device)
        condition = noise_condition(sigma, float(levels[0]), float(levels[-1]))
        film = self.film(sinusoidal_embedding(condition, CONDITION_EMBEDDING).to(x.dtype))
        scales = iter(film.split([2 * w for w in self.film_widths], dim=1))
        h = 2 * x - 1
        for layer in self.body:
            h = layer(h)
            if isinstance(layer, nn.Conv2d):
                gain, shift = next(scales).chunk(2, dim=1)
                h = h * (1 + gain[:, :, None, None]) + shift[:, :, None, None]
        return self.readout(h).squeeze(-1) / sigma

    @torch.no_grad()
    def fit_start(self, images: torch.Tensor, noise: float = 0.0) -> None:
        """Fit the chain-start Gaussian to ``images`` (mean and top principal directions),
        widened by isotropic noise of standard deviation ``noise``.

        The covariance is computed in float64; its eigenvectors with the r largest eigenvalues
        λ give F = V_r diag(√λ_r).
        """
        self.start_noise.fill_(float(noise))
        flat = images.flatten(1).to(torch.float64)
        mean = flat.mean(0)
        centred = flat - mean
        cov = centred.T @ centred / max(flat.shape[0] - 1, 1)
        values, vectors = torch.linalg.eigh(cov)
        rank = self.start_factor.shape[1]
        top = values.flip(0)[:rank].clamp_min(0).sqrt()
        self.start_mean.copy_(mean)
        self.start_factor.copy_(vectors.flip(1)[:, :rank] * top)

    def initial_states(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` draws mean + F z + s ε, z ~ N(0, I_r), ε ~ N(0, I_D), as (n, C, H, W)."""
        device = generator.device
        z = torch.randn((n, self.start_factor.shape[1]), generator=generator, device=device)
        x = self.start_mean + z.to(self.start_factor) @ self.start_factor.T
        if float(self.start_noise) > 0:
            eps = torch.randn(x.shape, generator=generator, device=device).to(x)
            x = x + self.start_noise * eps
        return x.reshape(n, *self.image_shape)


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
    smoothed density p_s (see the module docstring), restricted to that box. log Z of a deep
    energy is intractable, so ``log_z``/``log_prob`` are not offered.
    """

    family = "ebm"
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
                    "annealed-langevin needs a noise-conditional energy (trained with "
                    "noise_levels > 1)"
                )
            return AnnealedEnergyLangevin(net.sigmas.tolist(), **settings)

        self.factories = {"langevin": langevin, "replay": replay, "annealed-langevin": annealed}
        # the replay sampler uses the Langevin settings
        self.config["sampling"] = {
            **self.config["sampling"],
            "replay": self.config["sampling"]["langevin"],
        }

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


class EBMFamily(TrainableFamily):
    """Family ``ebm``: convolutional energy trained by CD with Langevin chains, or by DSM."""

    name = "ebm"
    dataset = "digits"
    samplers = EBM_SAMPLERS
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
    capabilities = (SupportsEnergy, SupportsAnnealing)
    default_steps = 3000
    bundled_file = "ebm-digits.safetensors"
    arch_options = ("channels", "spectral_norm", "noise_levels", "sigma_max", "dsm_sigma")

    def architecture(self, options: Mapping[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """Channels, spectral norm, the data range the chains are clamped to, and the noise
        levels σ_1 > … > σ_L = dsm_sigma of a noise-conditional energy."""
        low, high = float(images.min()), float(images.max())
        if not low < high:
            raise InputError("model ebm: the training images are all one value")
        arch = {**super().architecture(options, images), "data_range": [low, high]}
        levels = int(options["noise_levels"])
        arch["sigmas"] = []
        if levels > 1:
            if options["objective"] != "dsm":
                raise InputError("--opt noise_levels > 1 needs --opt objective=dsm")
            sigma_min = float(options["dsm_sigma"])
            sigma_max = float(options["sigma_max"]) or max_pairwise_distance(images)
            if not sigma_max > sigma_min:
                raise InputError(
                    f"--opt sigma_max={sigma_max:g}: must be above dsm_sigma ({sigma_min:g})"
                )
            arch["sigmas"] = geometric_sigmas(sigma_max, sigma_min, levels).tolist()
        return arch

    def build_network(
        self, arch: Mapping[str, Any], image_shape: tuple[int, int, int]
    ) -> ConvEnergy:
        """The :class:`ConvEnergy` for ``image_shape``."""
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

    def _chains(self, step: TrainingStep) -> LangevinSampler | ReplayBufferSampler:
        langevin = langevin_sampler(langevin_settings(step.options, step.arch, sampling=False))
        if "buffer" not in step.state:
            return langevin
        return ReplayBufferSampler(
            langevin, step.state["buffer"], reinit=float(step.options["reinit_fraction"])
        )

    def initial_state(
        self, net: nn.Module, data: torch.Tensor, step: TrainingStep
    ) -> dict[str, torch.Tensor]:
        """A replay buffer of uniform noise when ``buffer_size`` > 0 (objective ``cd``)."""
        size = int(step.options["buffer_size"])
        if step.options["objective"] != "cd" or size == 0:
            return {}
        sampler = langevin_sampler(langevin_settings(step.options, step.arch, sampling=False))
        shape = (size, *data.shape[1:])
        return {"buffer": sampler.init(net, shape, step.generator, data.device)}

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """The ``cd`` loss with this step's negative chains, or the ``dsm`` loss."""
        noise = float(step.options["data_noise"])
        if noise > 0:
            jitter = torch.randn(
                batch.shape, generator=step.generator, device=step.generator.device
            )
            batch = batch + noise * jitter.to(batch)
        if step.options["objective"] == "dsm":
            levels = step.arch.get("sigmas") or [float(step.options["dsm_sigma"])]
            sigmas = torch.tensor(levels, dtype=batch.dtype, device=batch.device)
            return denoising_score_matching_loss(energy_score(net), batch, sigmas, step.generator)
        negatives = draw(
            self._chains(step),
            net,
            tuple(batch.shape),
            step.generator,
            device=batch.device,
            progress=False,
        )
        return contrastive_divergence_loss(
            net(batch), net(negatives), float(step.options["energy_penalty"])
        )

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """Langevin (walk-jump for ``dsm``) with the ``sample_*`` settings (default: the
        training chains'); for a noise-conditional energy, annealed Langevin by default with
        ε from NCSNv2 technique 4 unless ``sample_step_size`` is set."""
        settings = {"langevin": langevin_settings(options, arch, sampling=True)}
        sigmas = arch.get("sigmas") or []
        if not sigmas:
            return {"sampler": "langevin", **settings}
        steps = int(options["sample_steps"] or options["langevin_steps"])
        eps = float(options["sample_step_size"]) or ncsnv2_step_size(
            float(sigmas[0] / sigmas[1]), steps, float(sigmas[-1])
        )
        annealed = {"eps": eps, "steps_per_level": steps, "denoise": True}
        return {"sampler": "annealed-langevin", "annealed-langevin": annealed, **settings}

    def make_model(self, net: nn.Module, checkpoint: Checkpoint, device: torch.device) -> EBMModel:
        """The EBM around the energy network (with the replay buffer when it was kept)."""
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
    register(EBMFamily())
