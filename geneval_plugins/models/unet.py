"""A small conditional UNet shared by the diffusion and score-based families.

The network maps an image ``x`` (N, C, H, W) and one conditioning scalar per image
(the timestep ``t`` for DDPM, a noise level for NCSN) to a tensor of the same shape as ``x``.
The scalar enters through the sinusoidal embedding of Vaswani et al. (2017, §3.5) as used by
Ho et al. (2020, App. B), followed by an MLP; each residual block adds a projection of it
(the "wide ResNet" blocks with GroupNorm of Ho et al.). Resolutions are halved by strided
convolutions and restored by nearest-neighbour upsampling, with skip connections between
equal resolutions (Ronneberger et al. 2015). Sized for small images such as 8×8 digits.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from geneval.plugin import InputError


def sinusoidal_embedding(
    values: torch.Tensor, dim: int, max_period: float = 10000.0
) -> torch.Tensor:
    """Embed scalars as [sin(v·ω_k), cos(v·ω_k)] with ω_k = max_period^(−k/(dim/2)), k < dim/2.

    Vaswani et al. (2017), §3.5; Ho et al. (2020), App. B.
    """
    if dim % 2:
        raise ValueError(f"embedding dimension must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(
        -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=values.device) / half
    )
    args = values.float()[:, None] * freqs[None, :]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


def _groups(channels: int) -> int:
    for g in (8, 4, 2, 1):
        if channels % g == 0:
            return g
    return 1


class ResidualBlock(nn.Module):
    """GroupNorm → SiLU → conv, plus the embedding, → GroupNorm → SiLU → dropout → conv; skip."""

    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(in_ch), in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, out_ch)
        self.norm2 = nn.GroupNorm(_groups(out_ch), out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(F.silu(emb))[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return h + self.skip(x)


class ConditionalUNet(nn.Module):
    """UNet ε/score predictor ``f(x, c)`` with one residual block per level and a middle block.

    Parameters
    ----------
    in_channels
        Image channels (1 for digits).
    base_channels
        Channels at full resolution; level ``i`` has ``base_channels * channel_mults[i]``.
    channel_mults
        One entry per resolution; each level after the first halves the resolution.
    embedding_dim
        Width of the sinusoidal embedding of the conditioning scalar.
    dropout
        Dropout inside the residual blocks.
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mults: tuple[int, ...] = (1, 2, 2),
        embedding_dim: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embedding_dim = embedding_dim
        emb_hidden = embedding_dim * 4
        self.embed = nn.Sequential(
            nn.Linear(embedding_dim, emb_hidden), nn.SiLU(), nn.Linear(emb_hidden, emb_hidden)
        )
        chans = [base_channels * m for m in channel_mults]
        self.stem = nn.Conv2d(in_channels, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        prev = chans[0]
        for i, ch in enumerate(chans):
            self.down_blocks.append(ResidualBlock(prev, ch, emb_hidden, dropout))
            prev = ch
            if i < len(chans) - 1:
                self.downsamples.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.middle = ResidualBlock(prev, prev, emb_hidden, dropout)
        self.up_blocks = nn.ModuleList()
        for ch in reversed(chans):
            self.up_blocks.append(ResidualBlock(prev + ch, ch, emb_hidden, dropout))
            prev = ch
        self.out_norm = nn.GroupNorm(_groups(prev), prev)
        self.out = nn.Conv2d(prev, in_channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """Evaluate at images ``x`` (N, C, H, W) and conditioning scalars ``cond`` (N,)."""
        if cond.ndim == 0:
            cond = cond.expand(x.shape[0])
        emb = self.embed(sinusoidal_embedding(cond, self.embedding_dim))
        h = self.stem(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h = block(h, emb)
            skips.append(h)
            if i < len(self.downsamples):
                h = self.downsamples[i](h)
        h = self.middle(h, emb)
        for block in self.up_blocks:
            skip = skips.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), emb)
        return self.out(F.silu(self.out_norm(h)))


def auto_channel_mults(image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """UNet channel multipliers for an image size: one resolution per halving down to about 2.

    min(4, ⌊log₂ min(H, W)⌋) resolutions with multipliers (1, 2, 2, 2): 8×8 → (1, 2, 2)
    (8, 4, 2), 16×16 and larger → (1, 2, 2, 2) (as Ho et al. use for 32×32).
    """
    side = min(int(image_shape[-1]), int(image_shape[-2]))
    levels = min(4, max(1, int(math.log2(max(side, 1)))))
    return (1, 2, 2, 2)[:levels]


def parse_channel_mults(value: str, image_shape: tuple[int, ...]) -> tuple[int, ...]:
    """``"1,2,2"`` → (1, 2, 2); ``"auto"`` → :func:`auto_channel_mults`."""
    if value == "auto":
        return auto_channel_mults(image_shape)
    try:
        mults = tuple(int(v) for v in value.split(",") if v.strip())
    except ValueError:
        raise InputError(
            f"--opt channel_mults={value}: expected auto or integers like 1,2,2"
        ) from None
    if not mults or min(mults) < 1:
        raise InputError(f"--opt channel_mults={value}: expected positive integers")
    return mults


def unet_for(arch: Mapping[str, Any], image_shape: tuple[int, ...]) -> ConditionalUNet:
    """The ConditionalUNet an ``arch`` config (``base_channels``, ``channel_mults``,
    ``embedding_dim``, optional ``dropout``) describes."""
    return ConditionalUNet(
        in_channels=int(image_shape[0]),
        base_channels=int(arch["base_channels"]),
        channel_mults=tuple(int(m) for m in arch["channel_mults"]),
        embedding_dim=int(arch["embedding_dim"]),
        dropout=float(arch.get("dropout", 0.0)),
    )
