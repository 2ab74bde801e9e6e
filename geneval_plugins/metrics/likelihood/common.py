"""What the likelihood metrics share: the per-image summary, bits/dim and input checks.

Every likelihood metric reports ``value``, the mean log-likelihood per image in nats in its
native ``space`` (see :mod:`geneval.capabilities`), with ``std_err`` (the standard error of
that mean over images), ``n`` and ``bits_per_dim`` on the common discrete 8-bit scale.

A density on [0, 1]^D converts to that scale by uniform dequantisation (Theis et al. 2016,
§3.1): for 8-bit x, log P(x) ≥ E_u[log p((x + u)/256)] − D·ln 256, u ~ U[0, 1)^D, so

    bits/dim = −(mean log p − D·ln 256) / (D·ln 2) = 8 − mean log p / (D·ln 2).

Strictly, the bound holds for the density evaluated at dequantised points; a density evaluated
on the pixel grid itself (as done here) can put arbitrarily high mass on the grid, so a
bits/dim of a density is only comparable to a discrete model's when the density was fitted to
dequantised data. A probability of binarised images is not converted: ``bits_per_dim`` is
``None`` and a warning says so.

References
----------
.. [1] L. Theis, A. van den Oord, M. Bethge, "A note on the evaluation of generative models",
   ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import LIKELIHOOD_SPACES, InputError

if TYPE_CHECKING:
    import torch

#: The fields every likelihood metric reports besides ``value`` (and its options).
LIKELIHOOD_FIELDS: Mapping[str, str] = {
    "std_err": "standard error of the mean log-likelihood over images (nats)",
    "bits_per_dim": "negative log-likelihood in bits/dim on the discrete 8-bit scale "
    "(a density is dequantised: −D·ln 256); null for the binary space",
    "n": "number of images evaluated",
    "space": "likelihood space of value: density, discrete-8bit or binary",
}

#: The one-line note a binary-space result carries instead of a bits/dim value.
BINARY_BITS_WARNING = (
    "bits_per_dim is not reported: a probability of binarised images has no 8-bit equivalent"
)


def bits_per_dim(mean_log_likelihood: float, space: str, dims: int) -> float | None:
    """The mean log-likelihood (nats per image) as bits/dim on the discrete 8-bit scale.

    ``discrete-8bit``: −ℓ / (D ln 2); ``density`` on [0, 1]^D: −(ℓ − D ln 256) / (D ln 2)
    (uniform dequantisation, Theis et al. 2016); ``binary``: ``None`` (not convertible).

    Parameters
    ----------
    mean_log_likelihood
        ℓ, the mean log-likelihood per image in nats.
    space
        One of :data:`geneval.capabilities.LIKELIHOOD_SPACES`.
    dims
        D = C·H·W of the images as given.
    """
    if space not in LIKELIHOOD_SPACES:
        raise ValueError(f"unknown likelihood space {space!r} ({', '.join(LIKELIHOOD_SPACES)})")
    if space == "binary":
        return None
    nats = mean_log_likelihood - (dims * math.log(256.0) if space == "density" else 0.0)
    return -nats / (dims * math.log(2.0))


def summarize_log_likelihoods(per_image: torch.Tensor, *, space: str, dims: int) -> dict[str, Any]:
    """``value``, ``std_err``, ``bits_per_dim``, ``n`` and ``space`` of per-image log-likelihoods.

    ``value`` = mean ℓ_i (float64), ``std_err`` = sd(ℓ_i) / √n with the n − 1 denominator
    (``nan`` for one image). A non-finite mean raises ``ValueError``: some image has zero
    likelihood under the model (e.g. a pixel outside its support).
    """
    mean, std_err = mean_with_std_err(per_image)
    if not math.isfinite(mean):
        raise ValueError(f"the mean log-likelihood is not finite ({mean})")
    return {
        "value": mean,
        "std_err": std_err,
        "bits_per_dim": bits_per_dim(mean, space, dims),
        "n": per_image.numel(),
        "space": space,
    }


def mean_with_std_err(per_image: torch.Tensor) -> tuple[float, float]:
    """The mean of per-image values in float64 and its standard error sd / √n, with the
    n − 1 denominator (``nan`` for one value)."""
    import torch

    values = per_image.detach().to(torch.float64).flatten().cpu()
    n = values.numel()
    std_err = float(values.std() / math.sqrt(n)) if n > 1 else float("nan")
    return float(values.mean()), std_err


def space_warnings(space: str) -> list[str]:
    """The one-line notes a result in ``space`` carries (the binary bits/dim note)."""
    return [BINARY_BITS_WARNING] if space == "binary" else []


def check_images(images: torch.Tensor, *, shape: tuple[int, ...], what: str, metric: str) -> None:
    """An :class:`InputError` unless ``images`` is a non-empty (N, *shape) batch."""
    if images.ndim != 1 + len(shape) or tuple(images.shape[1:]) != tuple(shape):
        raise InputError(
            f"{metric}: the {what} have shape {tuple(images.shape[1:])}, expected {tuple(shape)}"
        )
    if images.shape[0] == 0:
        raise InputError(f"{metric}: no {what}")


def first_images(images: torch.Tensor, max_images: int) -> torch.Tensor:
    """The first ``max_images`` images (all of them when ``max_images`` is 0)."""
    return images[:max_images] if max_images else images


def logmeanexp(values: torch.Tensor, dim: int) -> torch.Tensor:
    """log (1/K) Σ_k exp(v_k) along ``dim`` in float64, without overflow."""
    import torch

    values = values.to(torch.float64)
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])
