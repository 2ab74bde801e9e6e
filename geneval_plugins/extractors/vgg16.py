"""Extractor ``vgg16``: VGG-16 ``fc2`` activations, the features of precision and recall.

Kynkäänniemi et al. (2019) and torch-fidelity's ``prc`` measure precision and recall on the
4096-d output of VGG-16's second fully connected layer after its ReLU (``fc2_relu``). This
extractor is torchvision's VGG-16 (``torchvision.models.vgg16``) with torchvision's published
ImageNet weights ``vgg16-397923af.pth``, its classifier cut after ``fc2``, and torch-fidelity's
input convention (``tf1``): 8-bit levels, TensorFlow 1.x bilinear resize to 224×224, ImageNet
normalisation (see :mod:`geneval_plugins.extractors.imagenet`).

Outputs, from float images in ``[0, 1]`` (N, 1 or 3, H, W) of any size:

* ``fc2_relu`` (4096) — ``relu(fc2)``, the ``features`` (torch-fidelity's ``prc`` layer);
* ``fc2`` (4096) — the same before the ReLU.

The weights are found as :mod:`geneval_plugins.extractors.weights` describes:
``--extractor-weights``, ``$GENEVAL_VGG16_WEIGHTS``, the torch hub checkpoint cache (where
torchvision itself keeps the file), then the published URL; read with
``torch.load(weights_only=True)``; their sha256 is recorded as ``weights_sha256``.

References
----------
.. [1] K. Simonyan, A. Zisserman, "Very Deep Convolutional Networks for Large-Scale Image
   Recognition", ICLR 2015.
.. [2] T. Kynkäänniemi et al., "Improved Precision and Recall Metric for Assessing Generative
   Models", NeurIPS 2019.
.. [3] A. Obukhov et al., torch-fidelity 0.4, ``feature_extractor_vgg16.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from geneval.plugin import InputError, WeightsFile, file_sha256, hookimpl, quote
from geneval_plugins.extractors.imagenet import as_rgb_batch, preprocess_imagenet
from geneval_plugins.extractors.weights import find, load_state_dict

if TYPE_CHECKING:
    import torch
    from torch import nn

NAME = "vgg16"
#: The one input convention (torch-fidelity's); also the only ``--resize`` value accepted.
CONVENTION = "tf1"
FEATURE_DIM = 4096
OUTPUTS = {"fc2_relu": FEATURE_DIM, "fc2": FEATURE_DIM}
WEIGHTS = WeightsFile(
    name=NAME,
    what="VGG-16 weights",
    filename="vgg16-397923af.pth",
    url="https://download.pytorch.org/models/vgg16-397923af.pth",
    env="GENEVAL_VGG16_WEIGHTS",
    # torchvision's VGG16_Weights.IMAGENET1K_V1: the file name's sha256 prefix (torchvision
    # checks the same prefix); no full digest is published.
    sha256="397923af",
)


def find_vgg16_weights(weights: Path | str | None = None, *, download: bool = True) -> Path:
    """The weights file: ``weights``, ``$GENEVAL_VGG16_WEIGHTS``, the hub cache, the URL."""
    return find(WEIGHTS, weights, download=download)


def load_vgg16_fc2(path: Path, device: torch.device) -> nn.Module:
    """torchvision's VGG-16 with the weights at ``path``, its classifier cut after ``fc2``.

    The network maps normalised 224×224 images to ``fc2`` (before the ReLU), as
    torch-fidelity's ``FeatureExtractorVGG16`` after it deletes ``classifier[4:]``. A file in
    another key layout is an :class:`InputError` naming it.
    """
    import torch
    import torchvision  # imported on use: it costs a second at start

    state = load_state_dict(path, "VGG-16 weights")
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        network = torchvision.models.vgg16(weights=None)
    try:
        network.load_state_dict(state, assign=True)
    except RuntimeError as exc:
        raise InputError(
            f"VGG-16 weights {quote(path)}: not torchvision's vgg16 key layout "
            f"({exc})".splitlines()[0]
        ) from None
    network.classifier = network.classifier[:4]  # fc1, relu, dropout, fc2
    return network.eval().requires_grad_(False).to(device)


class LoadedVGG16:
    """VGG-16 on a device, called on image batches (see the module docstring)."""

    name = NAME
    outputs = OUTPUTS
    convention = CONVENTION

    def __init__(
        self, network: nn.Module, *, device: torch.device, weights_sha256: str, weights_path: Path
    ) -> None:
        self.network = network
        self.device = device
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"fc2_relu", "fc2"}`` float32 (N, 4096) on the extractor's device."""
        import torch

        x = as_rgb_batch(images, NAME).to(self.device)
        with torch.inference_mode():
            fc2 = self.network(preprocess_imagenet(x, CONVENTION))
        return {"fc2_relu": torch.relu(fc2), "fc2": fc2}


class VGG16:
    """The ``vgg16`` extractor plugin."""

    name = NAME
    outputs = OUTPUTS
    feature_output = "fc2_relu"
    logits_output = None
    resize_options = (CONVENTION,)
    published_weights = (WEIGHTS,)

    def load(
        self, *, device: torch.device, weights: Path | None = None, resize: str | None = None
    ) -> LoadedVGG16:
        """Find and load the weights on ``device``; ``resize`` may only be ``tf1`` (fixed)."""
        import torch

        if resize not in (None, CONVENTION):
            raise InputError(
                f"--resize {resize}: extractor {NAME} has a fixed input convention ({CONVENTION})"
            )
        path = find_vgg16_weights(weights)
        device = torch.device(device)
        return LoadedVGG16(
            load_vgg16_fc2(path, device),
            device=device,
            weights_sha256=file_sha256(path),
            weights_path=path,
        )


@hookimpl
def geneval_register_extractors(register) -> None:
    register(VGG16())
