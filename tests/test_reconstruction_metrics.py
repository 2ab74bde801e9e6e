"""``psnr``, ``ssim`` and ``ms_ssim`` against scikit-image and pytorch-msssim on the same pairs.

Pairs are scikit-image's sample photos (colour and grey, even and odd sizes) against their
noisy, JPEG-compressed and blurred versions, as float64 arrays in [0, 1].
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
import pytorch_msssim
import torch
from PIL import Image
from skimage import data, filters
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from sklearn.datasets import load_digits

from geneval.api import PairedImages
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.representation.ms_ssim import MultiScaleStructuralSimilarity
from geneval_plugins.metrics.representation.psnr import PeakSignalNoiseRatio
from geneval_plugins.metrics.representation.ssim import StructuralSimilarity, ssim, window_taps
from tests.stub_inputs import StubInputs, compute

PHOTOS = ("astronaut", "camera", "chelsea")


def _jpeg(image: np.ndarray, quality: int = 20) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(np.round(image * 255).astype(np.uint8).squeeze()).save(
        buffer, format="JPEG", quality=quality
    )
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float64) / 255
    return decoded.reshape(image.shape)


def _distorted(name: str) -> tuple[np.ndarray, list[np.ndarray]]:
    """The photo (H, W, C) in [0, 1] and its noise, JPEG and blur distortions."""
    photo = getattr(data, name)().astype(np.float64) / 255
    if photo.ndim == 2:
        photo = photo[:, :, None]
    rng = np.random.default_rng(0)
    noisy = np.clip(photo + rng.normal(0.0, 0.08, photo.shape), 0.0, 1.0)
    blurred = filters.gaussian(photo, sigma=1.5, channel_axis=-1)
    return photo, [noisy, _jpeg(photo), blurred]


def _pairs(photo: np.ndarray, distortions: list[np.ndarray]) -> PairedImages:
    nchw = lambda a: torch.from_numpy(np.ascontiguousarray(a.transpose(2, 0, 1)))  # noqa: E731
    return PairedImages(
        reconstructions=torch.stack([nchw(d) for d in distortions]),
        originals=torch.stack([nchw(photo)] * len(distortions)),
    )


@pytest.fixture(scope="module", params=PHOTOS)
def photo_pairs(request) -> tuple[np.ndarray, list[np.ndarray], StubInputs]:
    photo, distortions = _distorted(request.param)
    return photo, distortions, StubInputs(reconstructions=_pairs(photo, distortions))


def test_psnr_equals_scikit_image(photo_pairs) -> None:
    photo, distortions, inputs = photo_pairs
    result = compute(PeakSignalNoiseRatio(), inputs)
    expected = [peak_signal_noise_ratio(photo, d, data_range=1.0) for d in distortions]
    np.testing.assert_allclose(result["per_image"], expected, rtol=0, atol=1e-6)
    assert result["value"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert result["std"] == pytest.approx(np.std(expected), abs=1e-6)
    assert result["identical"] == 0 and result["n"] == 3 and result["unit"] == "dB"


def test_ssim_equals_scikit_image_wang_settings(photo_pairs) -> None:
    photo, distortions, inputs = photo_pairs
    result = compute(StructuralSimilarity(), inputs)
    expected = [
        structural_similarity(
            photo,
            d,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )
        for d in distortions
    ]
    np.testing.assert_allclose(result["per_image"], expected, rtol=0, atol=1e-6)
    assert result["value"] == pytest.approx(np.mean(expected), abs=1e-6)
    assert result["win_size"] == 11


def test_ssim_scikit_image_defaults_as_options(photo_pairs) -> None:
    photo, distortions, inputs = photo_pairs
    result = compute(StructuralSimilarity(), inputs, gaussian_weights=False, sample_covariance=True)
    expected = [
        structural_similarity(photo, d, data_range=1.0, channel_axis=-1) for d in distortions
    ]
    np.testing.assert_allclose(result["per_image"], expected, rtol=0, atol=1e-6)
    assert result["win_size"] == 7


def test_ms_ssim_equals_pytorch_msssim(photo_pairs) -> None:
    _, _, inputs = photo_pairs
    # A 200×301 crop: odd sides at several scales exercise the padded average pooling, and
    # pytorch-msssim's float64 convolutions stay quick.
    full = inputs.reconstructions()
    pairs = PairedImages(full.reconstructions[..., :200, :301], full.originals[..., :200, :301])
    result = compute(MultiScaleStructuralSimilarity(), StubInputs(reconstructions=pairs))
    expected = pytorch_msssim.ms_ssim(
        pairs.reconstructions, pairs.originals, data_range=1.0, size_average=False
    )
    np.testing.assert_allclose(result["per_image"], expected.numpy(), rtol=0, atol=1e-5)
    # pytorch-msssim samples its window in float32; given the float64 window the two agree to
    # rounding.
    taps = torch.tensor(window_taps(11, gaussian_weights=True, sigma=1.5), dtype=torch.float64)
    window = taps.view(1, 1, 1, -1).repeat(pairs.originals.shape[1], 1, 1, 1)
    exact = pytorch_msssim.ms_ssim(
        pairs.reconstructions, pairs.originals, data_range=1.0, size_average=False, win=window
    )
    np.testing.assert_allclose(result["per_image"], exact.numpy(), rtol=0, atol=1e-12)


def test_psnr_identical_pairs_are_counted_not_averaged() -> None:
    x = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = x.clone()
    y[1] = (y[1] + 0.05).clamp(0, 1)
    y[3] = (y[3] - 0.1).clamp(0, 1)
    result = compute(PeakSignalNoiseRatio(), StubInputs(reconstructions=PairedImages(y, x)))
    finite = [peak_signal_noise_ratio(x[i].numpy(), y[i].numpy(), data_range=1.0) for i in (1, 3)]
    assert result["identical"] == 2 and result["n"] == 4
    assert result["value"] == pytest.approx(np.mean(finite), abs=1e-9)
    assert result["per_image"][0] == math.inf and result["per_image"][2] == math.inf
    assert any("2 identical" in w for w in result["warnings"])
    every = compute(PeakSignalNoiseRatio(), StubInputs(reconstructions=PairedImages(x, x)))
    assert every["value"] == math.inf and every["identical"] == 4
    assert any("every pair is identical" in w for w in every["warnings"])


def test_ssim_window_larger_than_digits_is_refused_unless_win_size_is_set() -> None:
    digits = torch.from_numpy(load_digits().images[:20] / 16.0).unsqueeze(1)
    noisy = (digits + 0.1 * torch.randn(digits.shape, generator=torch.Generator())).clamp(0, 1)
    inputs = StubInputs(reconstructions=PairedImages(noisy, digits))
    with pytest.raises(InputError, match="8×8, smaller than the 11×11 window") as info:
        compute(StructuralSimilarity(), inputs)
    assert "win_size" in str(info.value) and "\n" not in str(info.value)
    # A uniform 7×7 window with sample covariance is scikit-image's default.
    box = compute(
        StructuralSimilarity(), inputs, win_size=7, gaussian_weights=False, sample_covariance=True
    )
    expected = [
        structural_similarity(digits[i, 0].numpy(), noisy[i, 0].numpy(), data_range=1.0)
        for i in range(20)
    ]
    np.testing.assert_allclose(box["per_image"], expected, rtol=0, atol=1e-6)
    # A Gaussian window of 7 taps is truncated, as pytorch-msssim builds it.
    gauss = compute(StructuralSimilarity(), inputs, win_size=7)
    reference = pytorch_msssim.ssim(noisy, digits, data_range=1.0, win_size=7, size_average=False)
    np.testing.assert_allclose(gauss["per_image"], reference.numpy(), rtol=0, atol=1e-6)
    with pytest.raises(InputError, match="must be odd"):
        compute(StructuralSimilarity(), inputs, win_size=6)
    # window=full: scikit-image's reading of a Gaussian win_size (the whole 3.5σ Gaussian over
    # mirrored edges; win_size sets only the positions averaged).
    full = compute(StructuralSimilarity(), inputs, win_size=7, window="full")
    expected = [
        structural_similarity(
            digits[i, 0].numpy(),
            noisy[i, 0].numpy(),
            data_range=1.0,
            gaussian_weights=True,
            win_size=7,
            use_sample_covariance=False,
        )
        for i in range(20)
    ]
    np.testing.assert_allclose(full["per_image"], expected, rtol=0, atol=1e-12)
    assert full["window"] == "full" and gauss["window"] == "truncated"
    assert abs(full["value"] / gauss["value"] - 1) > 1e-4  # the conventions do differ


@pytest.mark.numerics
@pytest.mark.parametrize("win_size", [3, 5, 9, 11, 13, 15])
def test_ssim_full_window_equals_scikit_image_at_any_size(win_size: int) -> None:
    gen = torch.Generator().manual_seed(win_size)
    x = torch.rand(3, 3, 19, 23, dtype=torch.float64, generator=gen)
    y = (x + 0.2 * torch.rand(x.shape, dtype=torch.float64, generator=gen)).clamp(0, 1)
    ours = ssim(x, y, win_size=win_size, window="full", sample_covariance=True)
    expected = [
        structural_similarity(
            x[i].permute(1, 2, 0).numpy(),
            y[i].permute(1, 2, 0).numpy(),
            data_range=1.0,
            gaussian_weights=True,
            sigma=1.5,
            win_size=win_size,
            use_sample_covariance=True,
            channel_axis=-1,
        )
        for i in range(3)
    ]
    np.testing.assert_allclose(ours.numpy(), expected, rtol=0, atol=1e-12)
    with pytest.raises(InputError, match="window must be one of truncated, full"):
        ssim(x, y, window="skimage")


def test_ms_ssim_refuses_images_at_or_below_the_minimum_size() -> None:
    x = torch.rand(2, 3, 160, 200, dtype=torch.float64)
    with pytest.raises(InputError, match="smaller side above 160 px"):
        compute(MultiScaleStructuralSimilarity(), StubInputs(reconstructions=PairedImages(x, x)))
    y = torch.rand(2, 1, 161, 161, dtype=torch.float64)
    ok = compute(MultiScaleStructuralSimilarity(), StubInputs(reconstructions=PairedImages(y, y)))
    assert ok["value"] == pytest.approx(1.0, abs=1e-12)


def test_bad_pairs_and_options_are_input_errors() -> None:
    x = torch.rand(3, 1, 16, 16)
    mismatch = StubInputs(reconstructions=PairedImages(x[:2], x))
    for metric in (
        PeakSignalNoiseRatio(),
        StructuralSimilarity(),
        MultiScaleStructuralSimilarity(),
    ):
        with pytest.raises(InputError, match="differ in shape"):
            compute(metric, mismatch)
        with pytest.raises(InputError, match="data_range"):
            compute(metric, StubInputs(reconstructions=PairedImages(x, x)), data_range=0.0)
    bad = x.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(InputError, match="non-finite"):
        compute(PeakSignalNoiseRatio(), StubInputs(reconstructions=PairedImages(bad, x)))


def test_out_of_range_pixels_are_warned() -> None:
    x = torch.rand(2, 1, 16, 16, dtype=torch.float64)
    result = compute(PeakSignalNoiseRatio(), StubInputs(reconstructions=PairedImages(x * 2, x)))
    assert any("outside [0, data_range=1]" in w for w in result["warnings"])


def test_chunked_batches_equal_one_call() -> None:
    """The metric's memory-bounded chunks give the same per-image values as one batch."""
    g = torch.Generator().manual_seed(1)
    x = torch.rand(40, 3, 48, 40, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    result = compute(StructuralSimilarity(), StubInputs(reconstructions=PairedImages(y, x)))
    np.testing.assert_allclose(result["per_image"], ssim(y, x).numpy(), rtol=1e-12)


def test_registered() -> None:
    registry = get_registry()
    for name in ("psnr", "ssim", "ms_ssim"):
        metric = registry.metric(name)
        assert metric.higher_is_better and metric.uncertainty == "std"
        assert "per_image" in metric.fields


def _photo_crops() -> tuple[np.ndarray, np.ndarray]:
    """Originals and reconstructions (N, 192, 192, 3) uint8: crops of three photos, each
    distorted by noise, JPEG and blur, quantised to 8 bits as image files hold them."""
    originals, reconstructions = [], []
    for name in ("astronaut", "coffee", "chelsea"):
        photo, distortions = _distorted(name)
        crop = (slice(40, 232), slice(60, 252))
        for distorted in distortions:
            originals.append(photo[crop])
            reconstructions.append(distorted[crop])
    as_uint8 = lambda images: np.round(np.stack(images) * 255).astype(np.uint8)  # noqa: E731
    return as_uint8(originals), as_uint8(reconstructions)


@pytest.mark.slow
def test_through_geneval_run_on_folders_and_arrays_equals_scikit_image(run_cli, tmp_path):
    originals, reconstructions = _photo_crops()
    expected_psnr = [
        peak_signal_noise_ratio(o / 255, r / 255, data_range=1.0)
        for o, r in zip(originals, reconstructions, strict=True)
    ]
    expected_ssim = [
        structural_similarity(
            o / 255,
            r / 255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
            data_range=1.0,
            channel_axis=-1,
        )  # fmt: skip
        for o, r in zip(originals, reconstructions, strict=True)
    ]
    for name, images in (("orig", originals), ("rec", reconstructions)):
        np.save(tmp_path / f"{name}.npy", images)
        folder = tmp_path / name
        for i, image in enumerate(images):
            (folder / f"photo{i // 3}").mkdir(parents=True, exist_ok=True)
            Image.fromarray(image).save(folder / f"photo{i // 3}" / f"{i % 3}.png")
    for samples, reference in (("rec.npy", "orig.npy"), ("rec", "orig")):
        out = tmp_path / f"{samples}.json"
        res = run_cli(
            "run", "--samples", tmp_path / samples, "--reference", tmp_path / reference,
            "--metrics", "psnr,ssim,ms_ssim", "--json", out, "--quiet",
        )  # fmt: skip
        assert res.code == 0, res.err
        metrics = json.loads(out.read_text())["metrics"]
        np.testing.assert_allclose(metrics["psnr"]["per_image"], expected_psnr, rtol=1e-6)
        assert metrics["psnr"]["value"] == pytest.approx(np.mean(expected_psnr), rel=1e-6)
        np.testing.assert_allclose(metrics["ssim"]["per_image"], expected_ssim, rtol=1e-6)
        assert metrics["ssim"]["value"] == pytest.approx(np.mean(expected_ssim), rel=1e-6)
        assert 0.0 < metrics["ms_ssim"]["value"] < 1.0
