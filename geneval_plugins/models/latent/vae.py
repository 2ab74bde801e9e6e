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

This module registers the family without importing torch; the loaded model
(:class:`~geneval_plugins.models.latent.vae_model.VAEModel`) and the training objective live in
:mod:`~geneval_plugins.models.latent.vae_model`, which the family's hooks import.

References
----------
.. [1] D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014.
.. [2] I. Higgins et al., "β-VAE: Learning basic visual concepts with a constrained variational
   framework", ICLR 2017.
.. [3] Y. Burda, R. Grosse, R. Salakhutdinov, "Importance weighted autoencoders", ICLR 2016.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    Option,
    SupportsDecode,
    SupportsELBO,
    SupportsEncode,
    SupportsLatentProposal,
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
    from geneval_plugins.models.latent.networks import VAENetwork
    from geneval_plugins.models.latent.vae_model import VAEModel

NAME = "vae"
#: Sampler names (:data:`SAMPLER_NAMES`); the first is the default: the decoder's mean image
#: of z ~ p(z), or an image drawn from p(x | z).
SAMPLERS = SAMPLER_NAMES[NAME]
DECODER_MEAN, DECODER_SAMPLE = SAMPLERS
#: Names of the decoders (``--opt decoder=``) and the likelihood space of each
#: (:mod:`~geneval_plugins.models.latent.decoders`).
DECODER_SPACES = {"bernoulli": "binary", "logistic": "discrete-8bit"}
#: ``--opt decoder=``: ``auto`` picks ``bernoulli`` for binary training images, else
#: ``logistic``.
DECODERS = ("auto", *DECODER_SPACES)


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
        from geneval_plugins.models.latent.networks import MIN_SIDE

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
        """Encoder and decoder for ``image_shape``
        (:class:`~geneval_plugins.models.latent.networks.VAENetwork`)."""
        from geneval_plugins.models.latent.networks import VAENetwork

        return VAENetwork(
            image_shape,
            latent_dim=int(arch["latent_dim"]),
            channels=int(arch["channels"]),
            hidden=int(arch["hidden"]),
            outputs_per_channel=1 if arch["decoder"] == "bernoulli" else 2,
        )

    def loss(self, net: nn.Module, batch: torch.Tensor, step: TrainingStep) -> torch.Tensor:
        """−L_β averaged over the batch: one reparameterised draw per image (Kingma & Welling
        2014, eq. 10), the KL in closed form, weighted by β (Higgins et al. 2017, eq. 4); see
        :func:`~geneval_plugins.models.latent.vae_model.vae_loss`."""
        from geneval_plugins.models.latent.vae_model import vae_loss

        return vae_loss(net, batch, step)

    def sampling(
        self, options: Mapping[str, Any], arch: Mapping[str, Any], data: torch.Tensor
    ) -> dict[str, Any]:
        """The default sampler; neither sampler has settings."""
        return {"sampler": options["sampler"], **{name: {} for name in SAMPLERS}}

    def make_model(self, net: nn.Module, checkpoint: Checkpoint, device: torch.device) -> VAEModel:
        """The VAE around the trained network
        (:class:`~geneval_plugins.models.latent.vae_model.VAEModel`)."""
        from geneval_plugins.models.latent.vae_model import VAEModel

        return VAEModel(net, checkpoint.config, image_shape=checkpoint.image_shape, device=device)


@hookimpl
def geneval_register_models(register) -> None:
    """Register the ``vae`` family."""
    register(VAEFamily())
