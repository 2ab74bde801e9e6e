"""The loaded model and the training objective of the ``vae`` family
(:mod:`~geneval_plugins.models.latent.vae`, where the family registers without torch; the
networks are :mod:`~geneval_plugins.models.latent.networks`', the decoders
:mod:`~geneval_plugins.models.latent.decoders`').

* :func:`gaussian_kl` and :func:`vae_loss` — the closed-form KL to the prior and the negative
  β-weighted ELBO with one reparameterised draw per image (Kingma & Welling 2014; Higgins et
  al. 2017);
* :class:`PriorSampler` — z ~ p(z), then the decoder's mean image or a draw from p(x | z), under
  the family's sampler names (:data:`~geneval_plugins.models.latent.vae.SAMPLERS`);
* :class:`VAEModel` — the loaded model: ``sample``, ``encode``, ``decode``, ``elbo`` and the
  proposal interface of importance sampling (``log_joint``, ``sample_posterior``,
  ``sample_prior``; Burda et al. 2016).

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

from geneval.plugin import InputError, Option, SampledModel, TrainingStep
from geneval_plugins.models.latent.decoders import (
    BERNOULLI_BINARIZATION,
    decoder_draw,
    decoder_log_likelihood,
    decoder_mean,
)
from geneval_plugins.models.latent.networks import VAENetwork
from geneval_plugins.models.latent.vae import DECODER_MEAN, DECODER_SAMPLE, DECODER_SPACES, NAME

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


def vae_loss(net: VAENetwork, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
    """−L_β averaged over the batch: one reparameterised draw per image (Kingma & Welling
    2014, eq. 10), the KL in closed form, weighted by β (Higgins et al. 2017, eq. 4)."""
    mean, log_var = net.encoder(batch)
    noise = torch.randn(mean.shape, generator=step.generator, device=step.generator.device)
    z = mean + torch.exp(0.5 * log_var) * noise.to(mean)
    reconstruction = decoder_log_likelihood(str(step.arch["decoder"]), net.decoder(z), batch)
    kl = gaussian_kl(mean, log_var)
    return (float(step.options["beta"]) * kl - reconstruction).mean()


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
    """A loaded VAE (see :mod:`~geneval_plugins.models.latent.vae` for what it offers)."""

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
            DECODER_MEAN: lambda **kw: PriorSampler(draw=False, **kw),
            DECODER_SAMPLE: lambda **kw: PriorSampler(draw=True, **kw),
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
