"""The observation models p(x | z) of the latent-variable families, and their conventions.

Two decoders, each a log-likelihood of images x in ``[0, 1]`` given the decoder network's
output, summed over the C·H·W pixels:

* :func:`bernoulli_log_likelihood` — each pixel is a Bernoulli variable of probability
  σ(ℓ) (Kingma & Welling 2014, App. C.1). Images are binarised first, x = [pixel > 0.5]
  (:data:`BERNOULLI_BINARIZATION`), so the result is the probability of the *binarised* image
  (likelihood space ``binary``);
* :func:`discretized_logistic_log_likelihood` — each pixel is one of ``bins`` levels
  k/(bins − 1), with the probability that a logistic variable of mean μ and scale s falls in
  the level's bin (Salimans et al. 2017, PixelCNN++ §2.1; Kingma et al. 2016, IAF §E): the edge
  bins extend to ±∞. Pixels are rounded to the nearest level first, so with ``bins = 256`` the
  result is the probability of the 8-bit image (likelihood space ``discrete-8bit``), the
  scale the ``nll`` metric reports in bits/dim and the DDPM's discretised Gaussian decoder
  (Ho et al. 2020, eq. 13) uses.

Both are exact log-probabilities (not densities), so a model's ELBO and importance-sampled
log-likelihood with either decoder are comparable with other models in the same space.

Their names and the likelihood space of each are
:data:`~geneval_plugins.models.latent.vae.DECODER_SPACES`, beside the option that chooses one
(read without torch when the family registers).

References
----------
.. [1] D. P. Kingma, M. Welling, "Auto-encoding variational Bayes", ICLR 2014.
.. [2] T. Salimans, A. Karpathy, X. Chen, D. P. Kingma, "PixelCNN++: Improving the PixelCNN
   with discretized logistic mixture likelihood and other modifications", ICLR 2017.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Pixels strictly above this value are 1 for the Bernoulli decoder.
BERNOULLI_THRESHOLD = 0.5
#: The Bernoulli decoder's binarisation rule, as a model states it (``binarization``).
BERNOULLI_BINARIZATION = "x = 1 where the pixel value (in [0, 1]) is > 0.5, else 0"
#: The smallest log-scale of the logistic decoder (PixelCNN++ uses −7).
MIN_LOG_SCALE = -7.0


def binarize(images: torch.Tensor) -> torch.Tensor:
    """[pixel > 0.5] as a float tensor of the images' dtype (:data:`BERNOULLI_BINARIZATION`)."""
    return (images > BERNOULLI_THRESHOLD).to(images.dtype)


def bernoulli_log_likelihood(logits: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """Σ_i x_i log σ(ℓ_i) + (1 − x_i) log(1 − σ(ℓ_i)) per image, x = binarize(images).

    ``logits`` and ``images`` are (..., C, H, W); the result has shape (...), in the logits'
    dtype.
    """
    target = binarize(images.to(logits.dtype))
    per_pixel = -F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    return per_pixel.flatten(-3).sum(-1)


def _log_sigmoid_difference(upper: torch.Tensor, lower: torch.Tensor) -> torch.Tensor:
    """log(σ(upper) − σ(lower)) for upper > lower, without cancellation in either tail.

    σ(b) − σ(a) = σ(−a) − σ(−b): the pair is mirrored so that both arguments are on the lower
    side (where log σ(x) ≈ x keeps its precision), then
    log(σ(b) − σ(a)) = log σ(b) + log(−expm1(log σ(a) − log σ(b))).
    """
    flip = (upper + lower) > 0
    b = torch.where(flip, -lower, upper)
    a = torch.where(flip, -upper, lower)
    log_b, log_a = F.logsigmoid(b), F.logsigmoid(a)
    return log_b + torch.log(-torch.expm1(log_a - log_b))


def discretized_logistic_log_likelihood(
    mean: torch.Tensor, log_scale: torch.Tensor, images: torch.Tensor, *, bins: int = 256
) -> torch.Tensor:
    """log P(x) per image under independent discretised logistics (PixelCNN++ eq. 2).

    With levels c_k = k/(bins − 1), half-width h = 1/(2(bins − 1)) and F the logistic CDF of
    mean μ and scale s = exp(log_scale) (clamped below at e^−7):

        P(c_k) = F(c_k + h) − F(c_k − h) for 0 < k < bins − 1,
        P(c_0) = F(c_0 + h),   P(c_{bins−1}) = 1 − F(c_{bins−1} − h).

    Pixels of ``images`` (in [0, 1]) are rounded to the nearest level. ``mean``,
    ``log_scale`` and ``images`` are (..., C, H, W); the result has shape (...), in the mean's
    dtype.
    """
    levels = bins - 1
    x = torch.round(images.to(mean.dtype).clamp(0, 1) * levels) / levels
    inv_scale = torch.exp(-log_scale.clamp_min(MIN_LOG_SCALE)).to(mean.dtype)
    half = 0.5 / levels
    upper = (x + half - mean) * inv_scale
    lower = (x - half - mean) * inv_scale
    interior = _log_sigmoid_difference(upper, lower)
    log_p = torch.where(
        x <= 0.0, F.logsigmoid(upper), torch.where(x >= 1.0, F.logsigmoid(-lower), interior)
    )
    return log_p.flatten(-3).sum(-1)


def sample_discretized_logistic(
    mean: torch.Tensor, log_scale: torch.Tensor, generator: torch.Generator, *, bins: int = 256
) -> torch.Tensor:
    """Draws of the discretised logistic: μ + s·log(u / (1 − u)), u ~ U(0, 1), rounded to the
    nearest of the ``bins`` levels in [0, 1]."""
    u = torch.rand(mean.shape, generator=generator, device=generator.device).to(mean)
    u = u.clamp(1e-6, 1 - 1e-6)
    x = mean + torch.exp(log_scale.clamp_min(MIN_LOG_SCALE)) * (torch.log(u) - torch.log1p(-u))
    levels = bins - 1
    return torch.round(x.clamp(0, 1) * levels) / levels


def decoder_log_likelihood(kind: str, params: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """log p(x | z) per image for the decoder ``kind`` from its parameter maps ``params``.

    ``bernoulli``: ``params`` are the logits (..., C, H, W); ``logistic``: the means and the
    log-scales stacked on the channel axis (..., 2C, H, W), 256 levels.
    """
    if kind == "bernoulli":
        return bernoulli_log_likelihood(params, images)
    mean, log_scale = params.chunk(2, dim=-3)
    return discretized_logistic_log_likelihood(mean, log_scale, images)


def decoder_mean(kind: str, params: torch.Tensor) -> torch.Tensor:
    """The image a decoder's parameters stand for: σ(logits), or the logistic's mean, in
    [0, 1]."""
    if kind == "bernoulli":
        return torch.sigmoid(params)
    return params.chunk(2, dim=-3)[0].clamp(0, 1)


def decoder_draw(kind: str, params: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """One image drawn from p(x | z): Bernoulli pixels, or discretised-logistic 8-bit levels."""
    if kind == "bernoulli":
        probabilities = torch.sigmoid(params)
        u = torch.rand(probabilities.shape, generator=generator, device=generator.device)
        return (u.to(probabilities) < probabilities).to(probabilities)
    mean, log_scale = params.chunk(2, dim=-3)
    return sample_discretized_logistic(mean, log_scale, generator)
