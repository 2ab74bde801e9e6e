"""The ``digits-cnn`` network, its input conversion and its loaded form (imported by
:meth:`geneval_plugins.extractors.digits_cnn.DigitsCNNExtractor.load`, so that registering the
extractor imports no torch)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from geneval.plugin import InputError
from geneval_plugins.extractors.digits_cnn import (
    CONVENTION,
    FEATURE_DIM,
    IMAGE_SIZE,
    LUMA_601,
    NAME,
    NUM_CLASSES,
)


class DigitsCNN(nn.Module):
    """A LeNet-style classifier for 1×8×8 digits [1]_.

    ``conv(1→16) → ReLU → conv(16→32) → ReLU → maxpool 2 → conv(32→64) → ReLU → maxpool 2 →
    flatten (256) → linear(256→128) → ReLU`` gives the ``features``; dropout (training only)
    and ``linear(128→10)`` give the ``logits``. All convolutions are 3×3 with padding 1.

    References
    ----------
    .. [1] LeCun et al., "Gradient-based learning applied to document recognition", 1998.
    """

    def __init__(self, dropout: float = 0.3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(32, 64, kernel_size=3, padding=1)
        self.fc = nn.Linear(64 * 2 * 2, FEATURE_DIM)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate activations (N, 128), after the ReLU, of 1×8×8 inputs."""
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.max_pool2d(F.relu(self.conv3(x)), 2)
        return F.relu(self.fc(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(features, logits)`` of 1×8×8 inputs in ``[0, 1]``."""
        feats = self.features(x)
        return feats, self.head(self.dropout(feats))


def to_network_input(images: torch.Tensor) -> torch.Tensor:
    """Bring float ``[0, 1]`` NCHW images of any size to the network's 1×8×8 grey input.

    Three channels are combined with the BT.601 luma weights, ``Y = 0.299 R + 0.587 G +
    0.114 B``; a spatial size other than 8×8 is reduced by area averaging
    (``adaptive_avg_pool2d``), exact for integer downscale factors.

    Parameters
    ----------
    images
        Float tensor (N, C, H, W) with C in {1, 3}.

    Returns
    -------
    torch.Tensor
        Float32 tensor (N, 1, 8, 8) on the images' device.
    """
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(
            f"{NAME}: expected images of shape (N, 1 or 3, H, W), got {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise InputError(f"{NAME}: expected float images in [0, 1], got dtype {images.dtype}")
    x = images.to(torch.float32)
    if x.shape[1] == 3:
        weights = torch.tensor(LUMA_601, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        x = (x * weights).sum(dim=1, keepdim=True)
    if x.shape[-2:] != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.adaptive_avg_pool2d(x, IMAGE_SIZE)
    return x


def load_network(path: Path, device: torch.device) -> DigitsCNN:
    """Build :class:`DigitsCNN` on ``device`` from a safetensors file (never pickle)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{NAME}: weights file {path} does not exist")
    try:
        state = load_file(str(path), device=str(device))
    except (SafetensorError, OSError, ValueError) as exc:
        raise InputError(
            f"{NAME}: weights {path} are not a readable safetensors file ({exc})"
        ) from None
    net = DigitsCNN()
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "key or shape mismatch"
        raise InputError(f"{NAME}: weights {path} do not fit the network ({first})") from None
    return net.to(device).eval()


class LoadedDigitsCNN:
    """The ``digits-cnn`` network on its device; calling it returns ``features`` and ``logits``."""

    name = NAME
    outputs = {"features": FEATURE_DIM, "logits": NUM_CLASSES}
    convention = CONVENTION

    def __init__(self, network: DigitsCNN, weights_sha256: str, device: torch.device) -> None:
        self.network = network
        self.weights_sha256 = weights_sha256
        self.device = device

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"features": (N, 128), "logits": (N, 10)}`` float32 on the extractor's device."""
        x = to_network_input(images.to(self.device))
        features, logits = self.network(x)
        return {"features": features, "logits": logits}
