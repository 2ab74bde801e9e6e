"""The energy network of the ``ebm`` family (:mod:`~geneval_plugins.models.energy.ebm`, where the
family registers without torch): :class:`ConvEnergy`, a convolutional energy E_θ(x) whose depth
follows the image size (:func:`downsamplings`), optionally noise-conditional, E_θ(x, σ), with
FiLM layers (Perez et al. 2018) and spectral normalisation (Miyato et al. 2018), and the
Gaussian fitted to the training images that Langevin chains may start from.

References
----------
Miyato, T. et al. (2018). Spectral normalization for generative adversarial networks. ICLR.
Perez, E. et al. (2018). FiLM: visual reasoning with a general conditioning layer. AAAI.
Song, Y. & Ermon, S. (2020). Improved techniques for training score-based generative models.
NeurIPS.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from geneval_plugins.models.score_matching import noise_condition
from geneval_plugins.models.unet import sinusoidal_embedding

#: Width of the sinusoidal embedding of the noise level of a noise-conditional energy.
CONDITION_EMBEDDING = 32
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
