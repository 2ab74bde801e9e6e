"""The ``vgg16`` extractor against torch-fidelity's ``vgg16`` feature extractor."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
import torch
import torchvision
from torch_fidelity.interpolate_compat_tensorflow import (
    interpolate_bilinear_2d_like_tensorflow1x,
)

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.extractors import vgg16 as vgg16_plugin
from geneval_plugins.extractors.imagenet import preprocess_imagenet
from geneval_plugins.extractors.vgg16 import VGG16, find_vgg16_weights, load_vgg16_fc2
from tests.inception_fixtures import photo_crops, to_float_batch
from tests.vgg16_fixtures import (  # noqa: F401 - the *_fixture names register fixtures
    vgg16_home_fixture,
    vgg16_weights_fixture,
)

CPU = torch.device("cpu")
FEATURE_TOL = 1e-4  # of the features' scale (max |feature|)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "geneval-cache"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three photo crops, 96×128, float [0, 1] on the 8-bit grid."""
    return to_float_batch(photo_crops(3, seed=7, sizes=((96, 128),)))


def test_registered_with_its_contract() -> None:
    ext = get_registry().extractor("vgg16")
    assert isinstance(ext, VGG16)
    assert dict(ext.outputs) == {"fc2_relu": 4096, "fc2": 4096}
    assert ext.feature_output == "fc2_relu" and ext.logits_output is None
    assert ext.resize_options == ("tf1",)
    assert vgg16_plugin.WEIGHTS.filename == "vgg16-397923af.pth"
    assert vgg16_plugin.WEIGHTS.url == torchvision.models.VGG16_Weights.IMAGENET1K_V1.url
    assert vgg16_plugin.WEIGHTS.env == "GENEVAL_VGG16_WEIGHTS"


def test_preprocessing_is_torch_fidelitys(images: torch.Tensor) -> None:
    # torch-fidelity's FeatureExtractorVGG16.forward, step by step, on uint8 images.
    x = (images * 255).round().to(torch.uint8).to(torch.float32)
    x = interpolate_bilinear_2d_like_tensorflow1x(x, size=(224, 224), align_corners=False)
    x = torchvision.transforms.functional.normalize(
        x, (255 * 0.485, 255 * 0.456, 255 * 0.406), (255 * 0.229, 255 * 0.224, 255 * 0.225)
    )
    assert torch.equal(preprocess_imagenet(images, "tf1"), x)


def test_refuses_other_conventions_and_layouts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(InputError, match="--resize clean: extractor vgg16 has a fixed input"):
        VGG16().load(device=CPU, resize="clean")
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="not torchvision's vgg16 key layout") as err:
        load_vgg16_fc2(bad, CPU)
    assert "\n" not in str(err.value)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    monkeypatch.delenv("GENEVAL_VGG16_WEIGHTS", raising=False)
    with pytest.raises(InputError, match="vgg16-397923af.pth not found") as err:
        find_vgg16_weights(download=False)
    assert "GENEVAL_VGG16_WEIGHTS" in str(err.value) and vgg16_plugin.WEIGHTS.url in str(err.value)
    monkeypatch.setenv("GENEVAL_VGG16_WEIGHTS", str(tmp_path / "missing.pth"))
    with pytest.raises(InputError, match="GENEVAL_VGG16_WEIGHTS: VGG-16 weights file .* not exist"):
        find_vgg16_weights()


@pytest.mark.slow
def test_features_equal_torch_fidelity(
    vgg16_home: Path, vgg16_weights: Path, images: torch.Tensor
) -> None:
    from torch_fidelity.feature_extractor_vgg16 import FeatureExtractorVGG16

    loaded = get_registry().extractor("vgg16").load(device=CPU)  # found in the hub cache
    assert loaded.weights_path == vgg16_weights and loaded.convention == "tf1"
    assert loaded.weights_sha256 == hashlib.sha256(vgg16_weights.read_bytes()).hexdigest()
    ours = loaded(images)
    # torch-fidelity's default: torchvision's VGG16_Weights.IMAGENET1K_V1 from TORCH_HOME.
    reference = FeatureExtractorVGG16("vgg16", ["fc2", "fc2_relu"])
    with torch.no_grad():
        fc2, fc2_relu = reference((images * 255).round().to(torch.uint8))
    assert ours["fc2_relu"].shape == (3, 4096) and ours["fc2_relu"].dtype == torch.float32
    assert fc2_relu.std(dim=0).mean() > 0.05 * fc2_relu.abs().mean()  # differs between images
    scale = fc2.abs().max()
    assert (ours["fc2"] - fc2).abs().max() <= FEATURE_TOL * scale
    assert (ours["fc2_relu"] - fc2_relu).abs().max() <= FEATURE_TOL * scale
    grey = images[:1].mean(dim=1, keepdim=True)
    assert torch.equal(loaded(grey)["fc2"], loaded(grey.expand(-1, 3, -1, -1))["fc2"])
