"""Metric ``lpips``: the learned perceptual distance of reconstructions to their originals.

LPIPS (Zhang et al. 2018) compares two images through the activations of an ImageNet
classifier: at each of its stages the activations are unit-normalised along channels, their
squared difference is weighted per channel by a linear layer fitted to human judgements of
similarity, and averaged over positions; the stages' averages are summed. This is the
``lpips`` package's ``LPIPS(net=..., version="0.1")`` called with ``normalize=True`` (images
in [0, 1] mapped to [−1, 1]), on the same weights:

* the backbone: torchvision's ImageNet weights of AlexNet (``alexnet-owt-7be5be79.pth``,
  the default ``net=alex``, as the package's), VGG-16 (``vgg16-397923af.pth``) or
  SqueezeNet 1.1 (``squeezenet1_1-b8a52dc0.pth``);
* the v0.1 linear layers the package ships (``lpips/weights/v0.1/{alex,vgg,squeeze}.pth``),
  published in richzhang/PerceptualSimilarity.

Each file is found in this order: the option naming it (``--opt lpips.weights=PATH`` for the
linear layers, ``--opt lpips.backbone_weights=PATH`` for the backbone), its environment
variable (``GENEVAL_LPIPS_ALEX_WEIGHTS`` …, ``GENEVAL_ALEXNET_WEIGHTS``,
``GENEVAL_VGG16_WEIGHTS``, ``GENEVAL_SQUEEZENET_WEIGHTS``), the torch hub checkpoint cache,
then (linear layers only) the installed ``lpips`` package's own file when its sha256 is the
published one, then the published URL, downloaded once into the hub cache. Weights are read
with ``torch.load(weights_only=True)``.

Pairs are formed by the runner (``docs/contracts.md`` §4: by index for arrays, by sorted
relative path for folders); grey images are repeated to three channels.

References
----------
.. [1] R. Zhang, P. Isola, A. A. Efros, E. Shechtman, O. Wang, "The Unreasonable
   Effectiveness of Deep Features as a Perceptual Metric", CVPR 2018.
.. [2] richzhang/PerceptualSimilarity, the ``lpips`` package 0.1.4 (BSD-2-Clause),
   ``lpips/lpips.py`` and ``lpips/pretrained_networks.py``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    MetricInputs,
    Need,
    Option,
    WeightsFile,
    file_sha256,
    find_weights,
    hookimpl,
    hub_checkpoint_dir,
    progress_bar,
    quote,
)
from geneval_plugins.extractors.vgg16 import WEIGHTS as VGG16_WEIGHTS
from geneval_plugins.metrics.representation.paired import (
    SUMMARY_FIELDS,
    read_pairs,
)

if TYPE_CHECKING:
    import torch

    from geneval_plugins.metrics.representation.lpips_network import LPIPSNetwork

NAME = "lpips"
#: The commit of richzhang/PerceptualSimilarity that added ``lpips/weights/v0.1/`` (files
#: unchanged since, and identical to those of the ``lpips`` 0.1.4 package).
LINEAR_COMMIT = "c33f89e9f46522a584cf41d8880eb0afa982708b"
LINEAR_URL = (
    "https://raw.githubusercontent.com/richzhang/PerceptualSimilarity/"
    f"{LINEAR_COMMIT}/lpips/weights/v0.1/{{net}}.pth"
)
LINEAR_OPTION = f"--opt {NAME}.weights"
BACKBONE_OPTION = f"--opt {NAME}.backbone_weights"


@dataclass(frozen=True)
class Backbone:
    """One LPIPS backbone: torchvision's builder, the ``features`` indices where its stages
    end (the package's ``slice1`` … in ``pretrained_networks.py``), their channel counts,
    the smallest image side it accepts, and its two weights files."""

    builder: str
    cuts: tuple[int, ...]
    channels: tuple[int, ...]
    min_side: int
    backbone: WeightsFile
    linear: WeightsFile


def _linear(net: str, sha256: str, size: int) -> WeightsFile:
    return WeightsFile(
        name=f"lpips-{net}",
        what=f"LPIPS v0.1 linear layers ({net})",
        filename=f"lpips-v0.1-{net}-{sha256[:8]}.pth",
        url=LINEAR_URL.format(net=net),
        env=f"GENEVAL_LPIPS_{net.upper()}_WEIGHTS",
        sha256=sha256,
        size=size,
        option=LINEAR_OPTION,
    )


BACKBONES: dict[str, Backbone] = {
    "alex": Backbone(
        builder="alexnet",
        cuts=(2, 5, 8, 10, 12),
        channels=(64, 192, 384, 256, 256),
        min_side=31,
        backbone=WeightsFile(
            name="alexnet",
            what="AlexNet weights",
            filename="alexnet-owt-7be5be79.pth",
            url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
            env="GENEVAL_ALEXNET_WEIGHTS",
            sha256="7be5be79",  # torchvision's file-name prefix; no full digest is published
            option=BACKBONE_OPTION,
        ),
        linear=_linear(
            "alex", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0", 6009
        ),
    ),
    "vgg": Backbone(
        builder="vgg16",
        cuts=(4, 9, 16, 23, 30),
        channels=(64, 128, 256, 512, 512),
        min_side=16,
        backbone=VGG16_WEIGHTS,  # the vgg16 extractor's file: one declaration, one download
        linear=_linear(
            "vgg", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868", 7289
        ),
    ),
    "squeeze": Backbone(
        builder="squeezenet1_1",
        cuts=(2, 5, 8, 10, 11, 12, 13),
        channels=(64, 128, 256, 384, 384, 512, 512),
        min_side=17,
        backbone=WeightsFile(
            name="squeezenet1_1",
            what="SqueezeNet 1.1 weights",
            filename="squeezenet1_1-b8a52dc0.pth",
            url="https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth",
            env="GENEVAL_SQUEEZENET_WEIGHTS",
            sha256="b8a52dc0",  # torchvision's file-name prefix; no full digest is published
            option=BACKBONE_OPTION,
        ),
        linear=_linear(
            "squeeze", "4a5350f23600cb79923ce65bb07cbf57dca461329894153e05a1346bd531cf76", 10811
        ),
    ),
}
NETS = tuple(BACKBONES)

#: Input elements (both images of the pairs) per chunk on a CPU and on a GPU. VGG-16's first
#: stage holds 64 channels at full resolution (~21× the input, twice inside the stage) and its
#: float64 copies twice that: about 100× the input's float32 bytes at the peak (1.7 GB for
#: the GPU's chunk).
CPU_CHUNK_ELEMENTS = 1 << 20
GPU_CHUNK_ELEMENTS = 1 << 22


def installed_package_file(file: WeightsFile, net: str) -> Path | None:
    """The installed ``lpips`` package's ``weights/v0.1/<net>.pth`` when it holds the
    published bytes (its sha256 is ``file``'s), else ``None``; the package is not imported."""
    import importlib.util

    try:
        spec = importlib.util.find_spec("lpips")
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "weights" / "v0.1" / f"{net}.pth"
        if path.is_file() and file.sha256 is not None and file_sha256(path) == file.sha256:
            return path
    return None


def locate_weights(file: WeightsFile, given: str, option: str, *, net: str = "") -> Path:
    """``file`` by the module's lookup order: ``given`` (the option's value, "" if unset), the
    variable ``file.env``, the torch hub cache, the installed ``lpips`` package's file (for
    linear layers: ``net`` set), then the published URL.

    A named file that does not exist, or one that is nowhere and cannot be downloaded, is an
    :class:`InputError` naming ``option``.
    """
    if given:
        path = Path(given).expanduser()
        if not path.is_file():
            raise InputError(f"{option}: {file.what} file {quote(path)} does not exist")
        return path
    if not os.environ.get(file.env) and not (hub_checkpoint_dir() / file.filename).is_file():
        local = installed_package_file(file, net) if net else None
        if local is not None:
            return local
    try:
        return find_weights(file)
    except InputError as exc:
        message = str(exc).replace(f"{file.option} PATH", f"{option}=PATH")
        raise InputError(message) from None


@lru_cache(maxsize=2)
def _network(
    net: str, linear: Path, linear_sha: str, backbone: Path, backbone_sha: str, device: str
) -> LPIPSNetwork:
    """The network on ``device``, kept for the next call with the same files (by digest)."""
    import torch

    from geneval_plugins.metrics.representation.lpips_network import build_network

    spec = BACKBONES[net]
    return build_network(
        spec.builder,
        spec.cuts,
        spec.channels,
        {"backbone": backbone, "linear": linear},
        {"backbone": spec.backbone.what, "linear": spec.linear.what},
        torch.device(device),
    )


def load_lpips(
    net: str = "alex",
    *,
    weights: str = "",
    backbone_weights: str = "",
    device: torch.device | str = "cpu",
) -> tuple[LPIPSNetwork, dict[str, str]]:
    """The LPIPS network of ``net`` on ``device`` and the sha256 of its two files
    (``{"linear_sha256", "backbone_sha256"}``), the files found as the module describes."""
    if net not in BACKBONES:
        raise InputError(f"{NAME}: net must be one of {', '.join(NETS)}, got {quote(net)}")
    spec = BACKBONES[net]
    linear = locate_weights(spec.linear, weights, LINEAR_OPTION, net=net)
    backbone = locate_weights(spec.backbone, backbone_weights, BACKBONE_OPTION)
    digests = {"linear_sha256": file_sha256(linear), "backbone_sha256": file_sha256(backbone)}
    network = _network(
        net,
        linear.resolve(),
        digests["linear_sha256"],
        backbone.resolve(),
        digests["backbone_sha256"],
        str(device),
    )
    return network, digests


def check_size(net: str, shape: tuple[int, ...] | torch.Size) -> None:
    """An :class:`InputError` when images of ``shape`` (…, H, W) are below the smallest side
    the backbone of ``net`` accepts (its last stage must keep at least one position)."""
    h, w = shape[-2:]
    low = BACKBONES[net].min_side
    if min(h, w) < low:
        raise InputError(
            f"{NAME}: images are {h}×{w}; net={net} needs both sides ≥ {low} px "
            "(resize the images, or choose another net)"
        )


def lpips_distance(
    x: torch.Tensor,
    y: torch.Tensor,
    network: LPIPSNetwork,
    *,
    chunk: int | None = None,
) -> torch.Tensor:
    """Per-pair LPIPS (n,) float64 of images ``x``, ``y`` (n, 1 or 3, H, W) in [0, 1].

    ``d(x, y) = Σ_l mean_{h,w} Σ_c w_{l,c} (x̂_{l,c,h,w} − ŷ_{l,c,h,w})²`` with ``x̂_l`` the
    channel-normalised activations of stage l of the backbone on ``(2x − 1 − shift)/scale``
    (Zhang et al. 2018, eq. 1; the ``lpips`` package's ``LPIPS.forward(x, y,
    normalize=True)``, v0.1). Computed in chunks of ``chunk`` pairs (default: memory-bounded)
    on the network's device; grey images are repeated to three channels.
    """
    import torch

    device = network.shift.device
    if chunk is None:
        budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else GPU_CHUNK_ELEMENTS
        chunk = max(1, budget // (2 * 3 * x.shape[-2] * x.shape[-1]))
    out = []
    with torch.inference_mode():
        for start in range(0, x.shape[0], chunk):
            a = x[start : start + chunk].to(device=device, dtype=torch.float32)
            b = y[start : start + chunk].to(device=device, dtype=torch.float32)
            if a.shape[1] == 1:
                a, b = a.expand(-1, 3, -1, -1), b.expand(-1, 3, -1, -1)
            out.append(network(a, b).cpu())
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.float64)


class LearnedPerceptualSimilarity:
    """``lpips``: mean LPIPS v0.1 over the (reconstruction, original) pairs."""

    name = NAME
    higher_is_better = False
    interpretation = (
        "perceptual distance of reconstructions to originals (LPIPS v0.1, Zhang et al. 2018): "
        "0 when identical"
    )
    needs = (Need("reconstructions", "samples"),)
    options: Mapping[str, Option] = {
        "net": Option(
            "alex", "backbone: alex (the lpips package's default), vgg or squeeze", choices=NETS
        ),
        "weights": Option(
            "", "the v0.1 linear-layer file of the net (default: looked up, see geneval weights)"
        ),
        "backbone_weights": Option(
            "", "torchvision's ImageNet weights of the net (default: looked up)"
        ),
    }
    fields: Mapping[str, str] = {
        **SUMMARY_FIELDS,
        "per_image": "LPIPS of each pair, in pair order",
        "std_err": "standard error of the mean over pairs (n − 1 denominator; NaN for one pair)",
        "linear_sha256": "sha256 of the linear-layer file used",
        "backbone_sha256": "sha256 of the backbone weights file used",
        "version": "LPIPS version of the linear layers (0.1)",
    }
    uncertainty = "std_err"
    #: Every file the metric may read (``geneval weights`` lists what plugins declare).
    published_weights = tuple(
        file for spec in BACKBONES.values() for file in (spec.linear, spec.backbone)
    )

    def compute(
        self, inputs: MetricInputs, *, net: str, weights: str, backbone_weights: str
    ) -> Mapping[str, Any]:
        """Mean, std, standard error and per-pair LPIPS; an :class:`InputError` for pairs of
        different shapes, images below the net's smallest side, non-finite pixels, or a
        weights file of the wrong layout."""
        import torch

        pairs = read_pairs(inputs, self.name)
        recon, orig = pairs.reconstructions, pairs.originals
        if recon.shape[1] not in (1, 3):
            raise InputError(f"{NAME}: expected 1 or 3 channels, got {recon.shape[1]}")
        check_size(net, recon.shape)
        network, digests = load_lpips(
            net, weights=weights, backbone_weights=backbone_weights, device=inputs.device
        )
        n = recon.shape[0]
        device = torch.device(inputs.device)
        budget = CPU_CHUNK_ELEMENTS if device.type == "cpu" else GPU_CHUNK_ELEMENTS
        step = max(1, budget // (2 * 3 * recon.shape[-2] * recon.shape[-1]))
        values, low, high = [], math.inf, -math.inf
        with progress_bar(total=n, desc=self.name, unit="img") as bar:
            for start in range(0, n, step):
                x = recon[start : start + step].to(device)
                y = orig[start : start + step].to(device)
                extremes = torch.stack([torch.stack(torch.aminmax(t)) for t in (x, y)])
                chunk_low, chunk_high = float(extremes[:, 0].min()), float(extremes[:, 1].max())
                if not (math.isfinite(chunk_low) and math.isfinite(chunk_high)):
                    raise InputError(f"{NAME}: the images hold non-finite values (NaN or inf)")
                low, high = min(low, chunk_low), max(high, chunk_high)
                values.append(lpips_distance(x, y, network, chunk=step))
                bar.update(x.shape[0])
        per = torch.cat(values).double()
        std_err = float(per.std() / math.sqrt(n)) if n > 1 else math.nan
        result: dict[str, Any] = {
            "value": float(per.mean()),
            "std": float(per.std(unbiased=False)) if n > 1 else 0.0,
            "std_err": std_err,
            "n": n,
            "per_image": [float(v) for v in per],
            "names": list(pairs.names) if pairs.names is not None else None,
            "version": "0.1",
            **digests,
        }
        if low < 0.0 or high > 1.0:
            result["warnings"] = [
                f"pixel values span [{low:.4g}, {high:.4g}], outside [0, 1]: LPIPS maps [0, 1] "
                "to the network's [-1, 1] and is not defined for other ranges"
            ]
        return result


@hookimpl
def geneval_register_metrics(register) -> None:
    register(LearnedPerceptualSimilarity())
