"""Model family ``vae``: variational autoencoders (Kingma & Welling 2014), β-VAE (Higgins et
al. 2017).

p(x, z) = p(z) p(x | z) with p(z) = N(0, I_L) and a convolutional decoder p(x | z)
(:mod:`~geneval_plugins.models.latent.decoders`: Bernoulli for binary images, a discretised
logistic over 256 levels for grey or colour images); the encoder q(z | x) = N(μ(x), diag σ²(x))
(:mod:`~geneval_plugins.models.latent.networks`). Training maximises, by the core loop
(:mod:`geneval.training`), the β-weighted evidence lower bound

    L_β(x) = E_q[log p(x | z)] − β·KL(q(z | x) ‖ p(z)),

with one reparameterised draw z = μ + σ ⊙ ε per image and the KL in closed form
(½ Σ_l μ_l² + σ_l² − 1 − log σ_l²). β = 1 is the VAE; β > 1 trades reconstruction for a
factorised posterior (Higgins et al. 2017).

A loaded model offers:

* ``sample`` — z ~ p(z), then the decoder's mean image (sampler ``decoder-mean``, the default)
  or an image drawn from p(x | z) (``decoder-sample``);
* ``encode`` — the posterior mean μ(x) (:class:`~geneval.capabilities.SupportsEncode`);
  ``decode`` — the decoder's mean image (:class:`~geneval.capabilities.SupportsDecode`);
* ``elbo`` — L_1(x) in nats, a lower bound on log p(x) (:class:`~geneval.capabilities.
  SupportsELBO`, used by ``nll``);
* ``log_joint``, ``sample_posterior``, ``sample_prior`` — the proposal interface of importance
  sampling (:class:`~geneval.capabilities.SupportsLatentProposal`, used by ``is_ll``).

Log-likelihoods are probabilities of binarised images (``likelihood_space = "binary"``, the
Bernoulli decoder; ``binarization`` states the rule) or of 8-bit images (``"discrete-8bit"``,
the logistic decoder), summed in float64.

References
----------
.. [1] D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014.
.. [2] I. Higgins et al., "β-VAE: Learning basic visual concepts with a constrained variational
   framework", ICLR 2017.
.. [3] Y. Burda, R. Grosse, R. Salakhutdinov, "Importance weighted autoencoders", ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from geneval.plugin import (
    Checkpoint,
    InputError,
    Option,
    SampledModel,
    SupportsDecode,
    SupportsELBO,
    SupportsEncode,
    SupportsLatentProposal,
    TrainableFamily,
    TrainingStep,
    hookimpl,
    training_options,
)
from geneval_plugins.models.latent.decoders import (
    BERNOULLI_BINARIZATION,
    DECODER_SPACES,
    decoder_draw,
    decoder_log_likelihood,
    decoder_mean,
)
from geneval_plugins.models.latent.networks import MIN_SIDE, VAENetwork

NAME = "vae"
#: Sampler names; the first is the default.
SAMPLERS = ("decoder-mean", "decoder-sample")
#: ``--opt decoder=``: ``auto`` picks ``bernoulli`` for binary training images, else
#: ``logistic``.
DECODERS = ("auto", *DECODER_SPACES)
#: Latents decoded per network call in ``log_joint`` (bounds its memory).
DECODE_CHUNK = 4096
_LOG_2PI = math.log(2 * math.pi)


def gaussian_kl(mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, diag σ²) ‖ N(0, I)) = ½ Σ_l (μ_l² + σ_l² − 1 − log σ_l²), per row (Kingma &
    Welling 2014, App. B)."""
    return 0.5 * (mean.pow(2) + log_var.exp() - 1 - log_var).sum(-1)


def standard_normal_log_density(noise: torch.Tensor, log_var: torch.Tensor | None = None):
    """log N(z; μ, diag σ²) summed over the last axis, from ε = (z − μ)/σ and log σ²:
    −½ Σ_l (log 2π + log σ_l² + ε_l²); ``log_var=None`` is the standard normal."""
    total = _LOG_2PI + noise.pow(2)
    if log_var is not None:
        total = total + log_var
    return -0.5 * total.sum(-1)


class PriorSampler:
    """z ~ N(0, I), then the decoder's mean image, or (``draw``) an image drawn from p(x | z).

    A sampler of one step in the shape of :mod:`geneval.sampling`: it drives a
    :class:`VAEModel`.
    """

    def __init__(self, *, draw: bool = False) -> None:
        self.draw = bool(draw)
        self.schedule: tuple[int, ...] = (0,)

    def set_steps(self, steps: int) -> None:
        """Only one step exists: ``steps`` must be 1."""
        if int(steps) != 1:
            raise ValueError(f"a VAE draws its samples in one step (steps=1), got {steps}")

    def init(
        self, model: VAEModel, shape: tuple[int, ...], generator: torch.Generator, device
    ) -> torch.Tensor:
        """Latents z ~ N(0, I) of ``shape`` (n, L)."""
        return torch.randn(shape, generator=generator, device=device)

    def step(
        self, model: VAEModel, state: torch.Tensor, point: int, generator: torch.Generator
    ) -> torch.Tensor:
        """The images of the latents ``state``."""
        params = model.net.decoder(state)
        return (
            decoder_draw(model.decoder, params, generator)
            if self.draw
            else decoder_mean(model.decoder, params)
        )

    def output(self, model: VAEModel, state: torch.Tensor) -> torch.Tensor:
        """The images."""
        return state


class VAEModel(SampledModel):
    """A loaded VAE (see the module docstring for what it offers)."""

    family = NAME
    #: ``elbo`` takes no options beyond the generator (one posterior draw per image).
    elbo_options: Mapping[str, Option] = {}

    def __init__(
        self,
        net: VAENetwork,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, int, int],
        device: torch.device | str,
    ) -> None:
        super().__init__(config, image_shape=image_shape, device=device)
        self.net = net.to(self.device).eval()
        self.decoder = str(self.config["arch"]["decoder"])
        self.likelihood_space = DECODER_SPACES[self.decoder]
        self.binarization = BERNOULLI_BINARIZATION if self.decoder == "bernoulli" else None
        self.latent_dim = int(net.latent_dim)
        self.factories = {
            "decoder-mean": lambda **kw: PriorSampler(draw=False, **kw),
            "decoder-sample": lambda **kw: PriorSampler(draw=True, **kw),
        }

    def sampler_target(self) -> VAEModel:
        """The samplers decode with this model's network."""
        return self

    def state_shape(self, n: int) -> tuple[int, ...]:
        """Chains are latents, (n, L)."""
        return (n, self.latent_dim)

    def _images(self, images: torch.Tensor, what: str) -> torch.Tensor:
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise InputError(
                f"vae {what}: images of shape {tuple(images.shape)} do not match the model's "
                f"{self.image_shape}"
            )
        return images.to(self.device, torch.float32)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The posterior mean μ(x), (N, L)."""
        return self.net.encoder(self._images(images, "encode"))[0]

    @torch.no_grad()
    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's mean image of each latent, (N, C, H, W) in [0, 1]."""
        params = self.net.decoder(latents.to(self.device, torch.float32))
        return decoder_mean(self.decoder, params)

    @torch.no_grad()
    def elbo(self, images: torch.Tensor, *, generator: torch.Generator) -> torch.Tensor:
        """L_1(x) = log p(x | z) − KL(q(z | x) ‖ p(z)), z = μ + σ ⊙ ε one draw per image:
        an unbiased estimate of the ELBO in nats, float64, (N,)."""
        x = self._images(images, "elbo")
        mean, log_var = self.net.encoder(x)
        noise = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean)
        z = mean + torch.exp(0.5 * log_var) * noise
        params = self.net.decoder(z).to(torch.float64)
        reconstruction = decoder_log_likelihood(self.decoder, params, x.to(torch.float64))
        return reconstruction - gaussian_kl(mean.to(torch.float64), log_var.to(torch.float64))

    @torch.no_grad()
    def sample_posterior(
        self, images: torch.Tensor, k: int, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` draws z ~ q(z | x) per image, (K, N, L), and log q(z | x), (K, N) float64."""
        mean, log_var = self.net.encoder(self._images(images, "sample_posterior"))
        noise = torch.randn((k, *mean.shape), generator=generator, device=generator.device).to(mean)
        latents = mean + torch.exp(0.5 * log_var) * noise
        log_q = standard_normal_log_density(noise.to(torch.float64), log_var.to(torch.float64))
        return latents, log_q

    @torch.no_grad()
    def sample_prior(
        self, n: int, k: int, *, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``k`` draws z ~ N(0, I) for each of ``n`` images, (K, N, L), and log p(z), (K, N)."""
        latents = torch.randn((k, n, self.latent_dim), generator=generator, device=self.device)
        return latents, standard_normal_log_density(latents.to(torch.float64))

    @torch.no_grad()
    def log_joint(self, images: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        """log p(x, z) = log p(z) + log p(x | z) in float64, (K, N), for ``latents`` (K, N, L);
        decoded :data:`DECODE_CHUNK` latents at a time."""
        x = self._images(images, "log_joint")
        k, n, dim = latents.shape
        flat = latents.to(self.device, torch.float32).reshape(k * n, dim)
        parts = []
        for start in range(0, k * n, DECODE_CHUNK):
            index = torch.arange(start, min(start + DECODE_CHUNK, k * n), device=self.device)
            params = self.net.decoder(flat[index]).to(torch.float64)
            parts.append(decoder_log_likelihood(self.decoder, params, x[index % n].double()))
        log_prior = standard_normal_log_density(flat.to(torch.float64))
        return (log_prior + torch.cat(parts)).reshape(k, n)


class VAEFamily(TrainableFamily):
    """Family ``vae``: a convolutional (β-)VAE trained on the β-weighted ELBO."""

    name = NAME
    dataset = "digits"
    samplers = SAMPLERS
    train_options = {
        **training_options(lr=1e-3, batch_size=64),
        "latent_dim": Option(10, "dimensions L of the latent z", low=1),
        "channels": Option(32, "channels of the first convolutions (c, c, 2c, 2c, …)", low=1),
        "hidden": Option(256, "units of the dense hidden layer", low=1),
        "decoder": Option(
            "auto",
            "p(x|z): bernoulli (binary images), logistic (discretised, 256 levels), or auto "
            "(bernoulli when every training pixel is 0 or 1)",
            choices=DECODERS,
        ),
        "beta": Option(1.0, "β, the weight of the KL term (1: the VAE)", low=0.0),
        "sampler": Option(
            SAMPLERS[0], "default sampler stored in the checkpoint", choices=SAMPLERS
        ),
    }
    capabilities = (SupportsELBO, SupportsEncode, SupportsDecode, SupportsLatentProposal)
    default_steps = 5000
    bundled_file = "vae-digits.safetensors"
    arch_options = ("latent_dim", "channels", "hidden", "decoder")

    def architecture(self, options: Mapping[str, Any], images: torch.Tensor) -> dict[str, Any]:
        """The network's sizes; ``decoder=auto`` resolved from the training images."""
        if min(images.shape[-2:]) < MIN_SIDE:
            raise InputError(
                f"model vae: images of {tuple(images.shape[-2:])} pixels are too small "
                f"(at least {MIN_SIDE}×{MIN_SIDE})"
            )
        arch = super().architecture(options, images)
        if arch["decoder"] == "auto":
            binary = bool(((images == 0) | (images == 1)).all())
            arch["decoder"] = "bernoulli" if binary else "logistic"
        return arch

    def build_network(
        self, arch: Mapping[str, Any], image_shape: tuple[int, int, int]
    ) -> VAENetwork:
        """Encoder and decoder for ``image_shape``."""
        return VAENetwork(
            image_shape,
            latent_dim=int(arch["latent_dim"]),
            channels=int(arch["channels"]),
            hidden=int(arch["hidden"]),
            outputs_per_channel=1 if arch["decoder"] == "bernoulli" else 2,
        )

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """−L_β averaged over the batch: one reparameterised draw per image (Kingma & Welling
        2014, eq. 10), the KL in closed form, weighted by β (Higgins et al. 2017, eq. 4)."""
        mean, log_var = net.encoder(batch)
        noise = torch.randn(mean.shape, generator=step.generator, device=step.generator.device)
        z = mean + torch.exp(0.5 * log_var) * noise.to(mean)
        reconstruction = decoder_log_likelihood(str(step.arch["decoder"]), net.decoder(z), batch)
        kl = gaussian_kl(mean, log_var)
        return (float(step.options["beta"]) * kl - reconstruction).mean()

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """The default sampler; neither sampler has settings."""
        return {"sampler": options["sampler"], **{name: {} for name in SAMPLERS}}

    def make_model(self, net: nn.Module, checkpoint: Checkpoint, device: torch.device) -> VAEModel:
        """The VAE around the trained network."""
        return VAEModel(net, checkpoint.config, image_shape=checkpoint.image_shape, device=device)


@hookimpl
def geneval_register_models(register) -> None:
    register(VAEFamily())
