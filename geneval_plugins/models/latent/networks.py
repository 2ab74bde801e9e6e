"""The convolutional encoder and decoder of the ``vae`` family, sized by the image.

The layout follows the convolutional VAE of disentanglement_lib (Locatello et al. 2019,
Table 1, after Higgins et al. 2017): 4×4 convolutions of stride 2 with ReLU, channels
c, c, 2c, 2c, …, a hidden dense layer, and the mirror image with transposed convolutions in the
decoder. The number of stride-2 convolutions follows the image size (:func:`halvings`), so that
the last feature map is at most 4×4 whatever the size: 64×64 dSprites get the four
convolutions 32, 32, 64, 64 of disentanglement_lib, 8×8 digits one.

References
----------
.. [1] F. Locatello et al., "Challenging common assumptions in the unsupervised learning of
   disentangled representations", ICML 2019, Table 1 (convolutional encoder and decoder).
.. [2] I. Higgins et al., "β-VAE: Learning basic visual concepts with a constrained variational
   framework", ICLR 2017.
"""

from __future__ import annotations

import math

import torch
from torch import nn

#: The smallest image side the encoder accepts (one stride-2 convolution must leave a pixel).
MIN_SIDE = 2


def halvings(image_size: tuple[int, int]) -> int:
    """Stride-2 convolutions of :class:`ConvEncoder`: the least n ≥ 1 with ⌊min(H, W) / 2ⁿ⌋ ≤ 4.

    8×8 → 1 (8 → 4), 16×16 → 2, 32×32 → 3, 64×64 → 4 (64 → 4).
    """
    side = min(int(v) for v in image_size)
    n = 1
    while side // 2**n > 4:
        n += 1
    return n


def conv_channels(channels: int, count: int) -> list[int]:
    """Channels of the stride-2 convolutions: c, c, 2c, 2c, 2c, … (disentanglement_lib)."""
    return [channels * (1 if i < 2 else 2) for i in range(count)]


def feature_sizes(image_size: tuple[int, int], count: int) -> list[tuple[int, int]]:
    """The spatial size before each of ``count`` 4×4, stride-2, padding-1 convolutions, and
    after the last (each halves, rounding down)."""
    sizes = [(int(image_size[0]), int(image_size[1]))]
    for _ in range(count):
        h, w = sizes[-1]
        sizes.append((h // 2, w // 2))
    return sizes


class ConvEncoder(nn.Module):
    """q(z | x) = N(μ(x), diag σ²(x)): images (N, C, H, W) in [0, 1] → (μ, log σ²), each (N, L).

    Inputs are mapped to [−1, 1]; ``halvings`` 4×4 stride-2 convolutions with ReLU, a dense
    layer of ``hidden`` units with ReLU, and a dense read-out of 2L values.
    """

    def __init__(
        self, image_shape: tuple[int, int, int], latent_dim: int, channels: int, hidden: int
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        count = halvings((h, w))
        widths = conv_channels(channels, count)
        layers: list[nn.Module] = []
        previous = c
        for width in widths:
            layers += [nn.Conv2d(previous, width, 4, stride=2, padding=1), nn.ReLU()]
            previous = width
        fh, fw = feature_sizes((h, w), count)[-1]
        self.convolutions = nn.Sequential(*layers, nn.Flatten())
        self.dense = nn.Sequential(
            nn.Linear(previous * fh * fw, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent_dim)
        )
        self.latent_dim = int(latent_dim)

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(μ, log σ²) of q(z | x), each (N, L)."""
        out = self.dense(self.convolutions(2 * images - 1))
        return out[:, : self.latent_dim], out[:, self.latent_dim :]


class ConvDecoder(nn.Module):
    """p(x | z): latents (N, L) → ``outputs_per_channel``·C maps of the image size (the
    decoder's parameters: Bernoulli logits, or a logistic's mean and log-scale).

    The mirror of :class:`ConvEncoder`: a dense layer of ``hidden`` units with ReLU, a dense
    layer to the last feature map, then transposed 4×4 stride-2 convolutions (ReLU between)
    back to the encoder's sizes, odd ones included.
    """

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        channels: int,
        hidden: int,
        outputs_per_channel: int,
    ) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        count = halvings((h, w))
        widths = conv_channels(channels, count)
        self.sizes = feature_sizes((h, w), count)
        fh, fw = self.sizes[-1]
        self.first = (widths[-1], fh, fw)
        self.dense = nn.Sequential(
            nn.Linear(latent_dim, hidden),
            nn.ReLU(),
            nn.Linear(hidden, math.prod(self.first)),
            nn.ReLU(),
        )
        outs = [*reversed(widths[:-1]), c * int(outputs_per_channel)]
        ins = list(reversed(widths))
        self.transposed = nn.ModuleList(
            nn.ConvTranspose2d(i, o, 4, stride=2, padding=1) for i, o in zip(ins, outs, strict=True)
        )

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        """The decoder's output maps, (N, outputs_per_channel·C, H, W)."""
        x = self.dense(latents).reshape(latents.shape[0], *self.first)
        targets = list(reversed(self.sizes[:-1]))
        for i, (layer, size) in enumerate(zip(self.transposed, targets, strict=True)):
            x = layer(x, output_size=list(size))
            if i < len(self.transposed) - 1:
                x = torch.relu(x)
        return x


class VAENetwork(nn.Module):
    """Encoder and decoder of a VAE for images of ``image_shape`` (parameter names
    ``encoder.*`` and ``decoder.*``)."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        latent_dim: int,
        channels: int,
        hidden: int,
        outputs_per_channel: int,
    ) -> None:
        super().__init__()
        self.encoder = ConvEncoder(image_shape, latent_dim, channels, hidden)
        self.decoder = ConvDecoder(image_shape, latent_dim, channels, hidden, outputs_per_channel)
        self.image_shape = tuple(int(v) for v in image_shape)
        self.latent_dim = int(latent_dim)
