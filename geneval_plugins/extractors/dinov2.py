"""Extractors ``dinov2-vitl14`` and ``dinov2-vitb14``: the DINOv2 CLS token.

Stein et al. (2023, dgm-eval) and Karras et al. (2024, EDM2) report the Fréchet distance in
the feature space of DINOv2 ViT-L/14 (``fid`` with ``--extractor dinov2-vitl14`` is that
FD_DINOv2). The output ``cls`` is the final-LayerNorm CLS token, what the official
``torch.hub`` models return (1024-d for L/14, 768-d for B/14).

Architecture and weights
    The Vision Transformer is timm's ``VisionTransformer`` (pre-norm blocks with LayerScale,
    LayerNorm ε = 1e-6, exact GELU, fused attention) configured as the official DINOv2 hub
    models (patch 14, MLP ratio 4, no register tokens), built at 224×224 input. The published
    checkpoints (``dinov2_vitl14_pretrain.pth``, ``dinov2_vitb14_pretrain.pth``) use the official
    key layout, which is timm's but for the unused ``mask_token``, and carry a 37×37 position
    embedding (518 px). At load time it is brought to the 16×16 grid of a 224 px input exactly
    as the official ``interpolate_pos_encoding`` does at every forward pass
    (:func:`official_pos_embed`: bicubic, ``scale_factor = (16 + 0.1) / 37``, no antialiasing);
    timm's own resampling (target size, antialiased) differs from it by up to 82 % on the
    position embedding, so it is not used.
Preprocessing (``--resize``)
    ``dgm-eval`` (default) or ``tf1`` (torch-fidelity 0.4's ``dinov2-vit-*`` extractor); see
    :mod:`geneval_plugins.extractors.imagenet`. The convention is recorded in every report.
Weights lookup
    ``--extractor-weights``, ``$GENEVAL_DINOV2_VITL14_WEIGHTS`` (``…_VITB14_…``), the torch hub
    checkpoint cache, then the published URL; read with ``torch.load(weights_only=True)``.
    torch-fidelity can only load DINOv2 through ``torch.hub`` from the network; this
    extractor works offline with the file.

References
----------
.. [1] M. Oquab et al., "DINOv2: Learning Robust Visual Features without Supervision", TMLR
   2024; facebookresearch/dinov2, ``dinov2/models/vision_transformer.py`` and ``hubconf.py``.
.. [2] G. Stein et al., "Exposing flaws of generative model evaluation metrics and their
   unfair treatment of diffusion models", NeurIPS 2023.
.. [3] T. Karras et al., "Analyzing and Improving the Training Dynamics of Diffusion
   Models", CVPR 2024 (EDM2).
.. [4] R. Wightman, timm (PyTorch Image Models), ``timm/models/vision_transformer.py``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from geneval.plugin import InputError, WeightsFile, file_sha256, hookimpl
from geneval_plugins.extractors.imagenet import (
    IMAGENET_CONVENTIONS,
    IMAGENET_SIZE,
    as_rgb_batch,
    preprocess_imagenet,
)
from geneval_plugins.extractors.weights import find, load_state_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

PATCH_SIZE = 14
#: The ``--resize`` values; the first is the default.
CONVENTIONS = IMAGENET_CONVENTIONS
#: The official ``interpolate_pos_encoding`` adds this to the target grid in its scale factor.
POS_EMBED_OFFSET = 0.1
_URL = "https://dl.fbaipublicfiles.com/dinov2/{0}/{0}_pretrain.pth"


@dataclass(frozen=True)
class DinoV2Architecture:
    """One DINOv2 backbone: its size and where its published weights are found."""

    name: str  # the extractor's name, e.g. dinov2-vitl14
    hub_name: str  # the official hub entry, e.g. dinov2_vitl14
    embed_dim: int
    depth: int
    num_heads: int

    @property
    def weights(self) -> WeightsFile:
        """The published checkpoint (Meta publishes no digest for it: none is checked)."""
        return WeightsFile(
            name=self.name,
            what=f"DINOv2 {self.hub_name} weights",
            filename=f"{self.hub_name}_pretrain.pth",
            url=_URL.format(self.hub_name),
            env=f"GENEVAL_{self.hub_name.upper()}_WEIGHTS",
        )


VITL14 = DinoV2Architecture("dinov2-vitl14", "dinov2_vitl14", 1024, 24, 16)
VITB14 = DinoV2Architecture("dinov2-vitb14", "dinov2_vitb14", 768, 12, 12)
ARCHITECTURES = {a.name: a for a in (VITL14, VITB14)}


def official_pos_embed(pos_embed: torch.Tensor, grid: int) -> torch.Tensor:
    """The position embedding for a ``grid × grid`` patch input, as official DINOv2 computes it.

    The class-token entry is kept; the ``M × M`` patch entries are resampled with
    ``F.interpolate(mode="bicubic", scale_factor=(grid + 0.1) / M)`` (``align_corners=False``,
    no antialiasing) in float32, which gives a ``grid × grid`` output whose sampling positions
    follow the offset scale factor, not ``grid / M``. Unchanged when ``M == grid``.

    Parameters
    ----------
    pos_embed
        (1, 1 + M², D) as in the published checkpoints (M = 37).
    grid
        Patches per side of the input, ``224 // 14 = 16``.

    References
    ----------
    .. [1] facebookresearch/dinov2, ``DinoVisionTransformer.interpolate_pos_encoding``
       (``interpolate_offset=0.1``, ``interpolate_antialias=False`` for the hub models);
       facebookresearch/dino issue 8 on the offset.
    """
    import torch
    import torch.nn.functional as F

    n = pos_embed.shape[1] - 1
    side = int(math.sqrt(n))
    if pos_embed.ndim != 3 or pos_embed.shape[0] != 1 or side * side != n:
        raise InputError(
            f"DINOv2 pos_embed must be (1, 1 + M², D), got shape {tuple(pos_embed.shape)}"
        )
    if side == grid:
        return pos_embed
    dim = pos_embed.shape[-1]
    patches = pos_embed[:, 1:].float().reshape(1, side, side, dim).permute(0, 3, 1, 2)
    scale = (grid + POS_EMBED_OFFSET) / math.sqrt(n)
    resized = F.interpolate(patches, scale_factor=(scale, scale), mode="bicubic")
    if resized.shape[-2:] != (grid, grid):
        raise InputError(f"DINOv2 pos_embed resampled to {tuple(resized.shape[-2:])}, not {grid}")
    resized = resized.permute(0, 2, 3, 1).reshape(1, grid * grid, dim)
    return torch.cat([pos_embed[:, :1].float(), resized], dim=1).to(pos_embed.dtype)


def build_network(
    state: Mapping[str, torch.Tensor],
    *,
    embed_dim: int,
    depth: int,
    num_heads: int,
    image_size: int = IMAGENET_SIZE,
) -> nn.Module:
    """timm's ``VisionTransformer`` as the official DINOv2 backbone, weights from ``state``.

    ``state`` is in the official key layout (``cls_token``, ``pos_embed``, ``mask_token``,
    ``patch_embed.proj.*``, ``blocks.{i}.{norm1,attn.qkv,attn.proj,ls1.gamma,norm2,mlp.fc1,
    mlp.fc2,ls2.gamma}.*``, ``norm.*``); ``mask_token`` (used only in training) is dropped
    and ``pos_embed`` brought to the ``image_size / 14`` grid by :func:`official_pos_embed`.
    The network maps normalised ``image_size``² images to the normalised CLS token (N, D).
    A state in another layout is an :class:`InputError`.
    """
    import torch
    from timm.models.vision_transformer import VisionTransformer

    grid = image_size // PATCH_SIZE
    weights = {k: v for k, v in state.items() if k != "mask_token"}
    if "pos_embed" not in weights:
        raise InputError("DINOv2 weights: no pos_embed (not the official DINOv2 key layout)")
    weights["pos_embed"] = official_pos_embed(weights["pos_embed"], grid)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        network = VisionTransformer(
            img_size=image_size,
            patch_size=PATCH_SIZE,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            mlp_ratio=4.0,
            qkv_bias=True,
            init_values=1.0,
            num_classes=0,
            global_pool="token",
        )
    try:
        network.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        message = str(exc).replace("\n", " ").replace("\t", "")
        raise InputError(
            f"DINOv2 weights: not the official ViT-{embed_dim}/{depth} key layout ({message})"[:400]
        ) from None
    return network.eval().requires_grad_(False)


def load_dinov2_network(
    path: Path, architecture: DinoV2Architecture, device: torch.device
) -> nn.Module:
    """Read ``path`` (``weights_only=True``) and build ``architecture`` on ``device``."""
    state = load_state_dict(path, architecture.weights.what)
    try:
        network = build_network(
            state,
            embed_dim=architecture.embed_dim,
            depth=architecture.depth,
            num_heads=architecture.num_heads,
        )
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from None
    return network.to(device)


class LoadedDinoV2:
    """A DINOv2 backbone on a device, called on image batches (see the module docstring).

    ``network`` is any module mapping normalised 224×224 RGB images to (N, D): the one
    :func:`build_network` makes, or an official hub model.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        name: str,
        dim: int,
        device: torch.device,
        convention: str,
        weights_sha256: str,
        weights_path: Path | None,
    ) -> None:
        if convention not in CONVENTIONS:
            raise InputError(
                f"--resize {convention}: extractor {name} accepts {', '.join(CONVENTIONS)}"
            )
        self.network = network
        self.name = name
        self.outputs = {"cls": dim}
        self.device = device
        self.convention = convention
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"cls": (N, D) float32}`` on the extractor's device."""
        import torch

        x = as_rgb_batch(images, self.name).to(self.device)
        with torch.inference_mode():
            out = self.network(preprocess_imagenet(x, self.convention))
        return {"cls": out.float()}


class DinoV2:
    """A ``dinov2-*`` extractor plugin."""

    feature_output = "cls"
    logits_output = None
    resize_options = CONVENTIONS

    def __init__(self, architecture: DinoV2Architecture) -> None:
        self.architecture = architecture
        self.name = architecture.name
        self.outputs = {"cls": architecture.embed_dim}
        self.published_weights = (architecture.weights,)

    def find_weights(self, weights: Path | str | None = None, *, download: bool = True) -> Path:
        """The weights file: ``weights``, the variable, the torch hub cache, the URL."""
        return find(self.architecture.weights, weights, download=download)

    def load(
        self, *, device: torch.device, weights: Path | None = None, resize: str | None = None
    ) -> LoadedDinoV2:
        """Find and load the weights on ``device``; ``resize``: ``dgm-eval`` (default) or
        ``tf1``."""
        import torch

        convention = CONVENTIONS[0] if resize is None else resize
        if convention not in CONVENTIONS:
            raise InputError(
                f"--resize {resize}: extractor {self.name} accepts {', '.join(CONVENTIONS)}"
            )
        path = self.find_weights(weights)
        device = torch.device(device)
        return LoadedDinoV2(
            load_dinov2_network(path, self.architecture, device),
            name=self.name,
            dim=self.architecture.embed_dim,
            device=device,
            convention=convention,
            weights_sha256=file_sha256(path),
            weights_path=path,
        )


@hookimpl
def geneval_register_extractors(register) -> None:
    for architecture in ARCHITECTURES.values():
        register(DinoV2(architecture))
