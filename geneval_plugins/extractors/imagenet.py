"""Input conventions of ImageNet-trained extractors (VGG-16, DINOv2): 224×224, ImageNet mean/std.

Two conventions, each reproducing one reference tool step by step, batched on the images'
device. Float images in ``[0, 1]`` are first brought to 8-bit levels (``round(255 x)``), since
both tools read 8-bit images.

``tf1``
    torch-fidelity's ``vgg16`` and ``dinov2-vit-*`` extractors: the 8-bit levels as float32,
    TensorFlow 1.x bilinear resize to 224 (:func:`~.resize.resize_bilinear_tf1`), then
    ``(x − 255 μ) / (255 σ)`` with torchvision's ``normalize``.
``dgm-eval``
    dgm-eval's DINOv2 encoder (Stein et al. 2023): torchvision ``Resize((224, 224),
    BICUBIC)`` of the 8-bit PIL image (:func:`~.resize.resize_bicubic_pil_uint8`, Pillow's
    fixed-point bicubic), ``ToTensor`` (``/ 255``), then ``(x − μ) / σ``.

``μ = (0.485, 0.456, 0.406)`` and ``σ = (0.229, 0.224, 0.225)`` are ImageNet's channel means
and standard deviations as torchvision publishes them.

References
----------
.. [1] A. Obukhov et al., torch-fidelity 0.4, ``feature_extractor_vgg16.py`` and
   ``feature_extractor_dinov2.py``.
.. [2] G. Stein et al., "Exposing flaws of generative model evaluation metrics and their
   unfair treatment of diffusion models", NeurIPS 2023 (dgm-eval, ``models/dinov2.py``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geneval.plugin import InputError
from geneval_plugins.extractors.resize import (
    quantize_to_uint8_levels,
    resize_bicubic_pil_uint8,
    resize_bilinear_tf1,
)

if TYPE_CHECKING:
    import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: The input side of the ImageNet networks.
IMAGENET_SIZE = 224
#: Every ImageNet input convention; DINOv2 accepts both, VGG-16 only ``tf1``.
IMAGENET_CONVENTIONS = ("dgm-eval", "tf1")


def _normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """torchvision's ``normalize`` (imported on use: torchvision costs a second at start)."""
    from torchvision.transforms.functional import normalize

    return normalize(images, mean, std)


def as_rgb_batch(images: torch.Tensor, name: str) -> torch.Tensor:
    """Check float images ``(N, 1 or 3, H, W)`` and repeat a grey channel to RGB."""
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise InputError(
            f"{name} expects images (N, 1 or 3, H, W), got shape {tuple(images.shape)}"
        )
    if not images.is_floating_point():
        raise InputError(f"{name} expects float images in [0, 1], got {images.dtype}")
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


def preprocess_imagenet(
    images: torch.Tensor, convention: str, size: int = IMAGENET_SIZE
) -> torch.Tensor:
    """The network input under ``convention`` (see the module docstring): float32 (N, 3, s, s).

    Parameters
    ----------
    images
        Float RGB images in ``[0, 1]``, (N, 3, H, W), any H and W, on the device to work on.
    convention
        ``tf1`` or ``dgm-eval``.
    size
        The output side, 224 for VGG-16 and DINOv2.
    """
    levels = quantize_to_uint8_levels(images)
    if convention == "tf1":
        # contiguous NCHW, as torch-fidelity's extractors feed their networks: the memory
        # format chooses the convolution's summation order
        resized = resize_bilinear_tf1(levels, (size, size)).contiguous()
        mean = tuple(255 * m for m in IMAGENET_MEAN)
        std = tuple(255 * s for s in IMAGENET_STD)
        return _normalize(resized, mean, std)
    if convention == "dgm-eval":
        resized = resize_bicubic_pil_uint8(levels, (size, size)) / 255
        return _normalize(resized, IMAGENET_MEAN, IMAGENET_STD)
    raise InputError(
        f"--resize {convention}: expected one of {', '.join(IMAGENET_CONVENTIONS)} "
        "for an ImageNet extractor"
    )


__all__ = [
    "IMAGENET_CONVENTIONS",
    "IMAGENET_MEAN",
    "IMAGENET_SIZE",
    "IMAGENET_STD",
    "as_rgb_batch",
    "preprocess_imagenet",
]
