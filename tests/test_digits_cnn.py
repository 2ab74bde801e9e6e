"""The ``digits-cnn`` extractor, its shipped weights and the shipped ``digits`` statistics."""

from __future__ import annotations

import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import save_file

from geneval.api import FeatureExtractor, LoadedExtractor
from geneval.errors import InputError
from geneval.feature_stats import load_stats
from geneval.plugins import Registry
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.extractors.digits_cnn import DigitsCNNExtractor, shipped_weights_path
from geneval_plugins.extractors.digits_cnn_network import DigitsCNN, to_network_input
from geneval_reference_stats import shipped_stats_path
from tests.shipped_artefacts import assert_stats_current

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics

CPU = torch.device("cpu")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def extractor():
    return DigitsCNNExtractor().load(device=CPU)


@pytest.fixture(scope="module")
def digits():
    data = DigitsDataset()
    return {split: data.load(split) for split in ("train", "val", "test")}


def test_registered_as_default_extractor_of_digits(monkeypatch):
    monkeypatch.setenv("GENEVAL_LOAD_PLUGINS", "")  # bundled plugins only
    registry = Registry()
    registry.load_entry_points()
    dataset = registry.dataset("digits")
    plugin = registry.extractor(dataset.default_extractor)
    assert plugin.name == "digits-cnn"
    assert isinstance(plugin, FeatureExtractor)
    assert plugin.feature_output == "features" and plugin.logits_output == "logits"
    assert plugin.resize_options == ()


def test_test_split_accuracy_at_least_97_percent(extractor, digits):
    test = digits["test"]
    predicted = extractor(test.images)["logits"].argmax(dim=1)
    accuracy = (predicted == test.labels).double().mean().item()
    assert accuracy >= 0.97, accuracy


def test_output_names_shapes_and_types(extractor, digits):
    assert isinstance(extractor, LoadedExtractor)
    out = extractor(digits["val"].images[:7])
    assert set(out) == {"features", "logits"} == set(extractor.outputs)
    assert out["features"].shape == (7, 128) and out["logits"].shape == (7, 10)
    assert all(v.dtype == torch.float32 for v in out.values())
    assert (out["features"] >= 0).all()  # taken after the ReLU
    # The logits are the head applied to the features (no hidden layer in between).
    head = extractor.network.head
    torch.testing.assert_close(out["logits"], out["features"] @ head.weight.T + head.bias)


def test_batch_independence(extractor, digits):
    images = digits["val"].images[:32]
    whole = extractor(images)["features"]
    parts = torch.cat([extractor(images[i : i + 5])["features"] for i in range(0, 32, 5)])
    torch.testing.assert_close(whole, parts, rtol=1e-5, atol=1e-6)


def test_three_channel_grey_equals_one_channel(extractor, digits):
    grey = digits["val"].images[:16]
    one, three = extractor(grey), extractor(grey.repeat(1, 3, 1, 1))
    for key in one:
        torch.testing.assert_close(one[key], three[key], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("factor", [2, 4])
def test_nearest_upsampled_digit_gives_same_features(extractor, digits, factor):
    small = digits["val"].images[:16]
    large = torch.nn.functional.interpolate(small, scale_factor=factor, mode="nearest")
    assert large.shape[-1] == 8 * factor
    a, b = extractor(small), extractor(large)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-5)


def test_preprocessing_matches_pil_luma_and_box_resize():
    # PIL's "L" conversion is ITU-R 601 luma; BOX resampling is the area average.
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(3, 24, 24, 3), dtype=np.uint8)
    expected = np.stack(
        [
            np.asarray(
                Image.fromarray(im).convert("L").resize((8, 8), Image.Resampling.BOX),
                dtype=np.float64,
            )
            for im in rgb
        ]
    )
    images = torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255
    ours = to_network_input(images)[:, 0].double().numpy() * 255
    # PIL rounds to integers twice (after the luma and after the resize).
    np.testing.assert_allclose(ours, expected, atol=1.0)
    assert np.abs(ours - expected).mean() < 0.5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_runs_on_the_chosen_device(extractor, digits):
    cuda = DigitsCNNExtractor().load(device=torch.device("cuda"))
    images = digits["val"].images[:32]
    out = cuda(images)
    assert all(v.device.type == "cuda" for v in out.values())
    expected = extractor(images)
    for key in out:
        torch.testing.assert_close(out[key].cpu(), expected[key], rtol=1e-3, atol=1e-3)


def test_bad_input_is_refused(extractor):
    with pytest.raises(InputError, match="digits-cnn"):
        extractor(torch.zeros(2, 2, 8, 8))
    with pytest.raises(InputError, match="digits-cnn"):
        extractor(torch.zeros(8, 8))
    with pytest.raises(InputError, match="--resize"):
        DigitsCNNExtractor().load(device=CPU, resize="tf1")


def test_shipped_weights_sha256(extractor):
    path = shipped_weights_path()
    assert path.is_file() and path.stat().st_size < 400_000
    assert extractor.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with safe_open(str(path), framework="pt") as handle:
        record = json.loads(handle.metadata()["config"])
    assert record["geneval_extractor"] == "digits-cnn"
    assert record["accuracy"]["test"] >= 0.97


def test_weights_are_safetensors_only(tmp_path):
    state = DigitsCNN().state_dict()
    pickled = tmp_path / "weights.pt"
    torch.save(state, pickled)
    with pytest.raises(InputError, match="safetensors"):
        DigitsCNNExtractor().load(device=CPU, weights=pickled)
    wrong = tmp_path / "wrong.safetensors"
    save_file({"conv1.weight": torch.zeros(3, 3)}, str(wrong))
    with pytest.raises(InputError, match="do not fit"):
        DigitsCNNExtractor().load(device=CPU, weights=wrong)
    with pytest.raises(InputError, match="does not exist"):
        DigitsCNNExtractor().load(device=CPU, weights=tmp_path / "missing.safetensors")


def test_explicit_weights_path_is_used(tmp_path, digits):
    torch.manual_seed(1)
    net = DigitsCNN().eval()
    path = tmp_path / "random.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    loaded = DigitsCNNExtractor().load(device=CPU, weights=path)
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    images = digits["val"].images[:4]
    with torch.no_grad():
        features, logits = net(images)
    out = loaded(images)
    torch.testing.assert_close(out["features"], features)
    torch.testing.assert_close(out["logits"], logits)


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_shipped_reference_stats_are_current(extractor, digits, split):
    path = shipped_stats_path("digits", split, "digits-cnn")
    assert path is not None, f"geneval_reference_stats/digits-{split}-digits-cnn.npz is missing"
    stats = load_stats(path)
    features = extractor(digits[split].images)["features"].double().numpy()
    assert_stats_current(stats, features)
    assert stats.meta["extractor"] == "digits-cnn"
    assert stats.meta["output"] == "features"
    assert stats.meta["weights_sha256"] == extractor.weights_sha256
    assert stats.meta["resize"] == extractor.convention


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_artefact_tolerances_hold_across_machines_and_catch_stale_files(extractor, digits, split):
    """Other CPUs move float32 features by about 1e-4 relative: that must pass the artefact
    check; a 1e-2 change (a stale file) must not."""
    stats = load_stats(shipped_stats_path("digits", split, "digits-cnn"))
    features = extractor(digits[split].images)["features"].double()
    noise = torch.randn(
        features.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )
    assert_stats_current(stats, (features * (1 + 1e-4 * noise)).numpy())
    with pytest.raises(AssertionError):
        assert_stats_current(stats, (features * (1 + 1e-2 * noise)).numpy())


def _training_script():
    spec = importlib.util.spec_from_file_location(
        "train_digits_cnn", ROOT / "scripts" / "train_digits_cnn.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_random_shift_moves_each_image_by_at_most_one_pixel():
    random_shift = _training_script().random_shift
    images = torch.rand(64, 1, 8, 8) + 0.1  # strictly positive, so zero fill is visible
    shifted = random_shift(images, torch.Generator().manual_seed(0))
    padded = torch.nn.functional.pad(images, (1, 1, 1, 1))
    offsets = set()
    for i in range(images.shape[0]):
        matches = [
            (dy, dx)
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
            if torch.equal(shifted[i, 0], padded[i, 0, 1 + dy : 9 + dy, 1 + dx : 9 + dx])
        ]
        assert len(matches) == 1
        offsets.add(matches[0])
    assert len(offsets) == 9  # every offset drawn among 64 images
    again = random_shift(images, torch.Generator().manual_seed(0))
    assert torch.equal(shifted, again)
