"""The FID Inception-v3 network: the 2015-12-05 TensorFlow graph as ported to PyTorch.

Module names follow the published ``pt_inception-2015-12-05-6726825d.pth`` key layout
(``Conv2d_1a_3x3.conv.weight``, ``Mixed_5b.branch1x1.bn.running_mean``, …, ``fc.weight``),
which is also the layout of torch-fidelity's ``weights-inception-2015-12-05-6726825d.pth``.
The graph differs from torchvision's Inception-v3 in the ways the TF graph does: average
pools inside the Inception blocks exclude the zero padding from the average, and the last
block (``Mixed_7c``) pools its fourth branch with a max instead of an average. The classifier
has 1008 outputs; ``logits_unbiased`` is the fc layer without its bias (as the TF graph's
``softmax`` input feeding the original Inception Score code).

:meth:`FIDInceptionV3.fold_batchnorm` folds every BatchNorm (eps = 0.001) into the preceding
convolution, which removes one pass over each activation at inference.

References
----------
.. [1] C. Szegedy et al., "Rethinking the Inception Architecture for Computer Vision",
   CVPR 2016.
.. [2] M. Heusel et al., "GANs Trained by a Two Time-Scale Update Rule Converge to a Local
   Nash Equilibrium", NeurIPS 2017 (the TTUR FID code that fixed this graph).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from geneval_plugins.extractors.inception.dimensions import NUM_CLASSES, POOL_DIM, SPATIAL_CHANNELS

BN_EPS = 0.001


class ConvBN(nn.Module):
    """Convolution without bias, BatchNorm (eps 0.001) and ReLU; ``fold()`` merges the BN."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **kwargs) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **kwargs)
        self.bn: nn.Module = nn.BatchNorm2d(cout, eps=BN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)

    @torch.no_grad()
    def fold(self) -> None:
        """Merge ``bn(conv(x))`` into one conv: ``W' = W γ/√(σ²+ε)``, ``b' = β − μ γ/√(σ²+ε)``."""
        bn = self.bn
        if not isinstance(bn, nn.BatchNorm2d):
            return
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)
        conv = self.conv
        weight = conv.weight.double() * scale.view(-1, 1, 1, 1)
        bias = bn.bias.double() - bn.running_mean.double() * scale
        conv.weight.copy_(weight.to(conv.weight.dtype))
        conv.bias = nn.Parameter(bias.to(conv.weight.dtype), requires_grad=False)
        self.bn = nn.Identity()


def _tf_avg_pool(x: torch.Tensor) -> torch.Tensor:
    """3×3 stride-1 average pool that ignores the zero padding, as TensorFlow's."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 block (Mixed_5b–5d): 1×1, 5×5, double 3×3 and pooled branches."""

    def __init__(self, cin: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 64, 1)
        self.branch5x5_1 = ConvBN(cin, 48, 1)
        self.branch5x5_2 = ConvBN(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, padding=1)
        self.branch_pool = ConvBN(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)


class InceptionB(nn.Module):
    """Grid reduction 35→17 (Mixed_6a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3 = ConvBN(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = ConvBN(cin, 64, 1)
        self.branch3x3dbl_2 = ConvBN(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = ConvBN(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        return torch.cat([self.branch3x3(x), b3, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (Mixed_6b–6e)."""

    def __init__(self, cin: int, c7: int) -> None:
        super().__init__()
        self.branch1x1 = ConvBN(cin, 192, 1)
        self.branch7x7_1 = ConvBN(cin, c7, 1)
        self.branch7x7_2 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = ConvBN(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = ConvBN(cin, c7, 1)
        self.branch7x7dbl_2 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = ConvBN(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = ConvBN(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = ConvBN(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_1x1(x)[0]

    def forward_with_1x1(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's output and its 1×1 branch (``branch1x1``, after BatchNorm and ReLU)."""
        b1 = self.branch1x1(x)
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        d = self.branch7x7dbl_1(x)
        for layer in (
            self.branch7x7dbl_2,
            self.branch7x7dbl_3,
            self.branch7x7dbl_4,
            self.branch7x7dbl_5,
        ):
            d = layer(d)
        bp = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([b1, b7, d, bp], 1), b1


class InceptionD(nn.Module):
    """Grid reduction 17→8 (Mixed_7a)."""

    def __init__(self, cin: int) -> None:
        super().__init__()
        self.branch3x3_1 = ConvBN(cin, 192, 1)
        self.branch3x3_2 = ConvBN(192, 320, 3, stride=2)
        self.branch7x7x3_1 = ConvBN(cin, 192, 1)
        self.branch7x7x3_2 = ConvBN(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = ConvBN(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = ConvBN(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        return torch.cat([b3, b7, F.max_pool2d(x, 3, stride=2)], 1)


class InceptionE(nn.Module):
    """8×8 block with split 3×3 branches (Mixed_7b average-pooled, Mixed_7c max-pooled)."""

    def __init__(self, cin: int, *, max_pool: bool) -> None:
        super().__init__()
        self.max_pool = max_pool
        self.branch1x1 = ConvBN(cin, 320, 1)
        self.branch3x3_1 = ConvBN(cin, 384, 1)
        self.branch3x3_2a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = ConvBN(cin, 448, 1)
        self.branch3x3dbl_2 = ConvBN(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = ConvBN(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = ConvBN(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = ConvBN(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)
        d = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        d = torch.cat([self.branch3x3dbl_3a(d), self.branch3x3dbl_3b(d)], 1)
        # The TF graph's last block max-pools here (an quirk of the 2015 graph, kept for FID).
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), b3, d, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """The FID Inception-v3: input (N, 3, 299, 299) in ``[-1, 1]`` → pool3 (2048) and logits."""

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = ConvBN(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = ConvBN(32, 32, 3)
        self.Conv2d_2b_3x3 = ConvBN(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = ConvBN(64, 80, 1)
        self.Conv2d_4a_3x3 = ConvBN(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(POOL_DIM, NUM_CLASSES)

    def pool_features(self, x: torch.Tensor) -> torch.Tensor:
        """The 2048-d average-pooled output of ``Mixed_7c`` (the "pool3" layer of FID)."""
        return self.pool_and_spatial(x)[0]

    def pool_and_spatial(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """pool3 (N, 2048) and the sFID spatial features (N, 2023) in one forward pass.

        The spatial features are the TF graph's ``mixed_6/conv:0``, first 7 channels, in the
        TF layout (N, 17, 17, 7) flattened row-major: :func:`spatial_features`.
        """
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))
        x = F.max_pool2d(x, 3, stride=2)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))
        x = F.max_pool2d(x, 3, stride=2)
        for block in (
            self.Mixed_5b,
            self.Mixed_5c,
            self.Mixed_5d,
            self.Mixed_6a,
            self.Mixed_6b,
            self.Mixed_6c,
        ):
            x = block(x)
        x, branch = self.Mixed_6d.forward_with_1x1(x)
        spatial = spatial_features(branch)
        for block in (self.Mixed_6e, self.Mixed_7a, self.Mixed_7b, self.Mixed_7c):
            x = block(x)
        return x.mean(dim=(2, 3), dtype=torch.float32), spatial

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"pool": (N, 2048), "spatial": (N, 2023), "logits_unbiased": pool·Wᵀ,
        "logits": pool·Wᵀ + b}``, all from one forward pass."""
        pool, spatial = self.pool_and_spatial(x)
        unbiased = pool @ self.fc.weight.T
        return {
            "pool": pool,
            "spatial": spatial,
            "logits_unbiased": unbiased,
            "logits": unbiased + self.fc.bias,
        }

    def fold_batchnorm(self) -> FIDInceptionV3:
        """Fold every BatchNorm into its convolution (inference only); returns ``self``."""
        for module in self.modules():
            if isinstance(module, ConvBN):
                module.fold()
        return self


def spatial_features(branch: torch.Tensor) -> torch.Tensor:
    """The sFID features of ``Mixed_6d.branch1x1``'s output (N, 192, 17, 17): its first
    :data:`SPATIAL_CHANNELS` channels in TensorFlow's NHWC order, flattened, float32 (N, 2023).

    Which tensor this is: the ADM evaluator (``guided-diffusion/evaluations/evaluator.py``)
    reads ``mixed_6/conv:0`` of the 2015-12-05 graph, keeps ``[..., :7]`` of it (NHWC) and
    reshapes each image's (17, 17, 7) block to one row.

    * Block: the graph names its Inception blocks ``mixed``, ``mixed_1``, …, ``mixed_10``, in
      the order of the PyTorch port's ``Mixed_5b``, ``5c``, ``5d`` (35×35), ``6a`` (reduction),
      ``6b``, ``6c``, ``6d``, ``6e`` (17×17), ``7a`` (reduction), ``7b``, ``7c``: ``mixed_6`` is
      ``Mixed_6d`` (not ``Mixed_6e``, an off-by-one of some ports). The conversion that made
      the published weights maps ``mixed_6/conv/{conv2d_params,batchnorm}`` to
      ``Mixed_6d.branch1x1.{conv,bn}``.
    * Op: each layer of the graph is a name scope ``…/conv`` holding ``Conv2D`` (weights
      ``conv2d_params``) and ``batchnorm``; the op named by the scope itself, whose output
      ``conv:0`` is, is the layer's last op, the ReLU. So ``mixed_6/conv:0`` is
      ``relu(bn(conv(x)))`` of ``Mixed_6d.branch1x1``: 192 channels on the 17×17 grid, of
      which the first 7 give 7 · 17 · 17 = 2023 features.
    """
    head = branch[:, :SPATIAL_CHANNELS]
    return head.permute(0, 2, 3, 1).reshape(head.shape[0], -1).float()


def empty_network() -> FIDInceptionV3:
    """An uninitialised :class:`FIDInceptionV3` on the CPU (no random init; load weights next)."""
    with torch.device("meta"):
        model = FIDInceptionV3()
    model = model.to_empty(device="cpu")
    for name, buffer in model.named_buffers():
        if name.endswith("num_batches_tracked"):
            buffer.zero_()
    return model


def load_published_state_dict(
    model: FIDInceptionV3, state_dict: Mapping[str, torch.Tensor]
) -> None:
    """Load a state dict in the published key layout, with or without ``num_batches_tracked``.

    Raises ``KeyError`` naming the first missing or unexpected key when the layout differs.
    """
    expected = {k for k in model.state_dict() if not k.endswith("num_batches_tracked")}
    given = {k for k in state_dict if not k.endswith("num_batches_tracked")}
    missing, unexpected = sorted(expected - given), sorted(given - expected)
    if missing or unexpected:
        what = f"missing {missing[0]!r}" if missing else f"unexpected {unexpected[0]!r}"
        raise KeyError(f"not the FID Inception key layout ({what})")
    model.load_state_dict({k: v for k, v in state_dict.items() if k in expected}, strict=False)
