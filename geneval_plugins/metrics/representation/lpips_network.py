"""The LPIPS network: torchvision's AlexNet, VGG-16 or SqueezeNet 1.1 features, cut into the
stages whose activations LPIPS compares, and the v0.1 linear layers (Zhang et al. 2018).

Imported by :mod:`geneval_plugins.metrics.representation.lpips` when it computes; importing
this module imports torch and torchvision.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
import torchvision
from torch import nn

from geneval.plugin import InputError, quote
from geneval_plugins.extractors.weights import load_state_dict

#: The input shift and scale of the package's ``ScalingLayer`` (v0.1): the network sees
#: ``(x − shift) / scale`` for images ``x`` in [−1, 1].
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)
#: ``normalize_tensor``'s ε: a feature vector is divided by ``‖f‖₂ + ε``.
EPS = 1e-10


def _key_list(keys: object) -> str:
    """At most four of ``keys``, for a one-line message."""
    items = sorted(str(k) for k in keys)  # type: ignore[attr-defined]
    return ", ".join(items[:4]) + (f" and {len(items) - 4} more" if len(items) > 4 else "")


def load_backbone(builder: str, end: int, path: Path, what: str) -> nn.Sequential:
    """``torchvision.models.<builder>(weights=None).features[:end]`` with the weights at ``path``.

    The file is a state dict in torchvision's key layout (``features.*``, and optionally the
    ``classifier.*`` tensors it publishes, which LPIPS does not use), read with
    ``torch.load(weights_only=True)``. A missing ``features`` tensor, a key torchvision's
    architecture does not have, or a tensor of the wrong shape is an :class:`InputError`
    naming the file.
    """
    state = load_state_dict(path, what)
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        network = getattr(torchvision.models, builder)(weights=None)
    expected = network.state_dict()
    unknown = [k for k in state if k not in expected]
    features = {k: v for k, v in expected.items() if k.startswith("features.")}
    missing = [k for k in features if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
        for k, v in expected.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    not_float = [k for k in features if k in state and not state[k].is_floating_point()]
    problems = []
    if unknown:
        problems.append(f"unknown keys {_key_list(unknown)}")
    if missing:
        problems.append(f"missing keys {_key_list(missing)}")
    if wrong:
        problems.append(f"wrong shapes {_key_list(wrong)}")
    if not_float:
        problems.append(f"non-float tensors {_key_list(not_float)}")
    if problems:
        raise InputError(
            f"{what} {quote(path)}: not torchvision's {builder} key layout ({'; '.join(problems)})"
        )
    trunk = network.features[:end]
    trunk.load_state_dict(
        {k.removeprefix("features."): state[k].float() for k in features}, strict=False, assign=True
    )
    for name, tensor in (*trunk.named_parameters(), *trunk.named_buffers()):
        if tensor.is_meta:  # a layer past ``end`` cannot hold one: only ``features[:end]`` is kept
            raise InputError(f"{what} {quote(path)}: no tensor for features.{name}")
    return trunk


def load_linear_layers(path: Path, channels: tuple[int, ...], what: str) -> list[torch.Tensor]:
    """The v0.1 linear layers at ``path``: one weight vector (C_l,) float32 per stage.

    The file is the package's state dict: ``lin{l}.model.1.weight`` of shape (1, C_l, 1, 1)
    for every stage l (``NetLinLayer``: dropout, then a 1×1 convolution without bias), and
    nothing else. Anything else is an :class:`InputError` naming the file.
    """
    state = load_state_dict(path, what)
    expected = {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(channels)}
    problems = []
    unknown = [k for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    wrong = [
        f"{k} {tuple(state[k].shape)} (expected {shape})"
        for k, shape in expected.items()
        if k in state and tuple(state[k].shape) != shape
    ]
    if unknown:
        problems.append(f"unknown keys {_key_list(unknown)}")
    if missing:
        problems.append(f"missing keys {_key_list(missing)}")
    if wrong:
        problems.append(f"wrong shapes {_key_list(wrong)}")
    if not problems and not all(state[k].is_floating_point() for k in expected):
        problems.append("non-float tensors")
    if problems:
        raise InputError(
            f"{what} {quote(path)}: not the lpips package's v0.1 linear-layer layout "
            f"({'; '.join(problems)})"
        )
    return [state[k].float().reshape(-1) for k in expected]


class LPIPSNetwork(nn.Module):
    """LPIPS v0.1 of image pairs: ``d(x, y) = Σ_l (1 / H_l W_l) Σ_{h,w} w_l · (x̂_l − ŷ_l)²``.

    ``x̂_l`` is stage l's activation of the scaled input, unit-normalised along channels at
    each position (``f / (‖f‖₂ + 1e-10)``), and ``w_l`` the stage's linear weights (Zhang et
    al. 2018, eq. 1). The backbone runs in float32, as the ``lpips`` package's; the
    normalisation, the weighted squared differences and the spatial means are float64.
    """

    def __init__(
        self, trunk: nn.Sequential, cuts: tuple[int, ...], linear: list[torch.Tensor]
    ) -> None:
        super().__init__()
        if len(cuts) != len(linear):
            raise ValueError(f"{len(cuts)} stages but {len(linear)} linear layers")
        starts = (0, *cuts[:-1])
        self.stages = nn.ModuleList(trunk[a:b] for a, b in zip(starts, cuts, strict=True))
        for i, w in enumerate(linear):
            self.register_buffer(f"weight{i}", w.double())
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1))

    def weights(self) -> list[torch.Tensor]:
        """The linear weights (C_l,) float64 of every stage."""
        return [getattr(self, f"weight{i}") for i in range(len(self.stages))]

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """LPIPS (n,) float64 of pairs ``x``, ``y`` (n, 3, H, W) with pixels in [0, 1].

        The pixels are mapped to [−1, 1] (``2x − 1``, the package's ``normalize=True``) and
        scaled by the v0.1 ``ScalingLayer``, in float32; both images of every pair go through
        the backbone in one batch.
        """
        n = x.shape[0]
        h = torch.cat([x, y]).float()
        h = (2 * h - 1 - self.shift) / self.scale
        total = torch.zeros(n, dtype=torch.float64, device=h.device)
        for stage, w in zip(self.stages, self.weights(), strict=True):
            h = stage(h)
            f = h.double()
            f = f / (f.square().sum(dim=1, keepdim=True).sqrt_() + EPS)
            diff = (f[:n] - f[n:]).square_()
            total += torch.einsum("nchw,c->n", diff, w) / (diff.shape[2] * diff.shape[3])
            del f, diff
        return total


def build_network(
    builder: str,
    cuts: tuple[int, ...],
    channels: tuple[int, ...],
    paths: Mapping[str, Path],
    whats: Mapping[str, str],
    device: torch.device,
) -> LPIPSNetwork:
    """The network of one backbone, its weights read from ``paths["backbone"]`` and
    ``paths["linear"]``, in evaluation mode on ``device`` without gradients."""
    trunk = load_backbone(builder, cuts[-1], paths["backbone"], whats["backbone"])
    linear = load_linear_layers(paths["linear"], channels, whats["linear"])
    network = LPIPSNetwork(trunk, cuts, linear)
    return network.eval().requires_grad_(False).to(device)
