"""Resize conventions against their references: torch-fidelity, a closed form, clean-fid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cleanfid.resize import make_resizer
from torch_fidelity.interpolate_compat_tensorflow import (
    interpolate_bilinear_2d_like_tensorflow1x as tf1_reference,
)

from geneval.errors import InputError
from geneval_plugins.extractors.resize import (
    DEFAULT_RESIZE,
    RESIZE_CONVENTIONS,
    check_convention,
    pil_bicubic_weights,
    quantize_to_uint8_levels,
    resize_bicubic_pil,
    resize_bicubic_pil_uint8,
    resize_bilinear_tf1,
    resize_bilinear_torch,
    resize_for_inception,
)
from tests.inception_fixtures import photo_crops, to_float_batch

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics

# Input sizes: CIFAR-like upsampling, odd non-square, identity, downsampling.
SIZES = ((32, 32), (57, 83), (299, 299), (480, 360))
PIXEL_TOL = 1e-5 * 255  # 1e-5 of the [0, 1] scale, on 8-bit pixel values


def _uint8_images(size: tuple[int, int], count: int = 2) -> np.ndarray:
    return np.stack(photo_crops(count, seed=sum(size), sizes=(size,)))


def test_conventions_live_in_one_tuple() -> None:
    assert RESIZE_CONVENTIONS == ("tf1", "pytorch-fid", "clean")
    assert DEFAULT_RESIZE == "tf1"
    assert check_convention(None) == "tf1"
    for name in RESIZE_CONVENTIONS:
        assert check_convention(name) == name
    with pytest.raises(InputError, match="bicubic"):
        check_convention("bicubic")
    with pytest.raises(InputError, match="tf1, pytorch-fid, clean"):
        resize_for_inception(torch.zeros(1, 3, 8, 8), "antialias")


@pytest.mark.parametrize("size", SIZES)
def test_tf1_matches_torch_fidelity(size: tuple[int, int]) -> None:
    x = torch.from_numpy(_uint8_images(size)).permute(0, 3, 1, 2).float()
    ours = resize_bilinear_tf1(x, (299, 299))
    ref = tf1_reference(x, size=(299, 299), align_corners=False)
    assert ours.shape == (2, 3, 299, 299)
    assert (ours - ref).abs().max().item() <= PIXEL_TOL


def _bilinear_half_pixel_reference(image: np.ndarray, out: tuple[int, int]) -> np.ndarray:
    """Closed form of bilinear resizing with half-pixel centres (align_corners=False), float64."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5, 0.0)
        lo = np.minimum(np.floor(src).astype(int), n_in - 1)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, src - lo

    y0, y1, wy = axis(image.shape[-2], out[0])
    x0, x1, wx = axis(image.shape[-1], out[1])
    rows = image[..., y0, :] * (1 - wy)[:, None] + image[..., y1, :] * wy[:, None]
    return rows[..., x0] * (1 - wx) + rows[..., x1] * wx


@pytest.mark.parametrize("size", SIZES)
def test_pytorch_fid_bilinear_matches_closed_form(size: tuple[int, int]) -> None:
    x = to_float_batch(list(_uint8_images(size)))
    ours = resize_bilinear_torch(x, (299, 299))
    ref = _bilinear_half_pixel_reference(x.double().numpy(), (299, 299))
    assert np.abs(ours.numpy() - ref).max() <= 1e-5
    # The full convention: pytorch-fid scales the resized [0, 1] image to [-1, 1].
    full = resize_for_inception(x, "pytorch-fid")
    assert np.abs(full.numpy() - (2 * ref - 1)).max() <= 2e-5


@pytest.mark.parametrize("size", SIZES)
def test_clean_matches_clean_fid_resizer(size: tuple[int, int]) -> None:
    images = _uint8_images(size)
    resizer = make_resizer("PIL", False, "bicubic", (299, 299))
    ref = np.stack([resizer(im) for im in images]).transpose(0, 3, 1, 2)
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float()
    ours = resize_bicubic_pil(x, (299, 299)).clamp(0, 255).numpy()
    assert np.abs(ours - ref).max() <= PIXEL_TOL
    full = resize_for_inception(x / 255.0, "clean").numpy()
    assert np.abs(full - (ref - 128) / 128).max() <= PIXEL_TOL / 128


def _pil_bicubic_8bit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Pillow's own 8-bit bicubic resize, width first then height (one axis per call)."""
    from PIL import Image

    height, width = size
    im = Image.fromarray(image)
    if width != im.width:
        im = im.resize((width, im.height), Image.BICUBIC)
    if height != im.height:
        im = im.resize((width, height), Image.BICUBIC)
    return np.asarray(im)


@pytest.mark.parametrize("size", [*SIZES, (224, 224), (300, 200), (17, 500)])
def test_pil_bicubic_uint8_equals_pillow_bit_for_bit(size: tuple[int, int]) -> None:
    from PIL import Image

    photos = _uint8_images(size)
    noise = np.random.default_rng(sum(size)).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    images = np.concatenate([photos, noise])  # noise overshoots: clipping is exercised
    ours = resize_bicubic_pil_uint8(
        torch.from_numpy(images).permute(0, 3, 1, 2).float(), (224, 224)
    )
    assert ours.dtype == torch.float32 and ours.shape == (3, 3, 224, 224)
    for image, result in zip(images, ours.permute(0, 2, 3, 1).numpy(), strict=True):
        np.testing.assert_array_equal(result, _pil_bicubic_8bit(image, (224, 224)))
        if size[0] == size[1] or size[0] < 224:
            # One call, Pillow's own choice of pass order: the same whenever it starts with
            # the width (always for square images and up to Pillow 12).
            expected = np.asarray(Image.fromarray(image).resize((224, 224), Image.BICUBIC))
            np.testing.assert_array_equal(result, expected)


def test_pil_bicubic_weights_are_normalised_and_identity_at_same_size() -> None:
    for n_in, n_out in ((32, 299), (480, 299), (299, 299), (7, 3)):
        w = pil_bicubic_weights(n_in, n_out)
        assert w.shape == (n_out, n_in)
        np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(pil_bicubic_weights(10, 10), np.eye(10))


def test_tf1_quantises_floats_to_8bit_levels() -> None:
    levels = torch.arange(256, dtype=torch.float32).view(1, 1, 16, 16)
    assert torch.equal(quantize_to_uint8_levels(levels / 255.0), levels)
    off_grid = torch.tensor([0.0, 0.3 / 255, 0.7 / 255, 1.2, -0.1]).view(1, 1, 1, 5)
    assert quantize_to_uint8_levels(off_grid).flatten().tolist() == [0.0, 0.0, 1.0, 255.0, 0.0]
    # tf1 on the full pipeline equals torch-fidelity's uint8 input path: (resize(u8) - 128) / 128.
    u8 = torch.from_numpy(_uint8_images((57, 83))).permute(0, 3, 1, 2)
    ref = tf1_reference(u8.float(), size=(299, 299), align_corners=False)
    ours = resize_for_inception(u8.float() / 255.0, "tf1")
    assert (ours - (ref - 128) / 128).abs().max().item() <= 1e-6


@pytest.mark.parametrize("convention", RESIZE_CONVENTIONS)
def test_batched_equals_one_by_one(convention: str) -> None:
    x = to_float_batch(list(_uint8_images((40, 50), count=3)))
    batch = resize_for_inception(x, convention)
    singles = torch.cat([resize_for_inception(x[i : i + 1], convention) for i in range(3)])
    assert batch.shape == (3, 3, 299, 299) and batch.dtype == torch.float32
    assert (batch - singles).abs().max().item() <= 1e-6


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("convention", RESIZE_CONVENTIONS)
def test_resize_on_cuda_matches_cpu(convention: str) -> None:
    x = to_float_batch(list(_uint8_images((57, 83))))
    cpu = resize_for_inception(x, convention)
    gpu = resize_for_inception(x.cuda(), convention)
    assert gpu.device.type == "cuda"
    assert (gpu.cpu() - cpu).abs().max().item() <= 1e-5
