"""The ``inception-v3-fid`` extractor against pytorch-fid, torch-fidelity and clean-fid.

All three run the same deterministic random weights in the published key layout (see
``tests/inception_fixtures.py``), found through ``TORCH_HOME`` as the real file would be.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from cleanfid.resize import make_resizer
from pytorch_fid.inception import InceptionV3 as PytorchFidInception
from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

import geneval.cache
import geneval.weights
from geneval.cache import file_sha256
from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval.weights import WeightsFile
from geneval_plugins.extractors import inception as inception_plugin
from geneval_plugins.extractors.inception import (
    WEIGHTS_FILENAME,
    InceptionV3FID,
    LoadedInception,
    find_inception_weights,
    load_inception_network,
)
from geneval_plugins.extractors.resize import RESIZE_CONVENTIONS
from tests.inception_fixtures import (  # noqa: F401 - the *_fixture names register fixtures
    inception_weights_fixture,
    photo_crops,
    png_folders_fixture,
    to_float_batch,
    torch_home_fixture,
)

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics

FEATURE_TOL = 1e-4  # of the features' scale (max |feature|)
CPU = torch.device("cpu")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "geneval-cache"))


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three photo crops, 96×128, as float [0, 1] on the 8-bit grid."""
    return to_float_batch(photo_crops(3, seed=3, sizes=((96, 128),)))


def _close(ours: torch.Tensor, ref: torch.Tensor) -> float:
    """max |ours − ref| as a fraction of the reference features' scale."""
    return ((ours - ref).abs().max() / ref.abs().max()).item()


def test_registered_with_its_contract() -> None:
    ext = get_registry().extractor("inception-v3-fid")
    assert isinstance(ext, InceptionV3FID)
    assert ext.feature_output == "pool" and ext.logits_output == "logits_unbiased"
    assert ext.resize_options == RESIZE_CONVENTIONS
    assert dict(ext.outputs) == {
        "pool": 2048,
        "logits_unbiased": 1008,
        "logits": 1008,
        "spatial": 2023,
    }


def test_pool_features_match_pytorch_fid(torch_home: Path, images: torch.Tensor) -> None:
    loaded = InceptionV3FID().load(device=CPU, resize="pytorch-fid")
    ours = loaded(images)
    reference = PytorchFidInception([3]).eval()  # resizes with F.interpolate, scales to [-1, 1]
    with torch.no_grad():
        ref = reference(images)[0].flatten(1)
    assert ours["pool"].shape == (3, 2048) and ours["pool"].dtype == torch.float32
    assert ref.std(dim=0).mean() > 0.05 * ref.abs().mean()  # features differ between images
    assert _close(ours["pool"], ref) <= FEATURE_TOL


def test_features_and_logits_match_torch_fidelity(torch_home: Path, images: torch.Tensor) -> None:
    loaded = InceptionV3FID().load(device=CPU)  # default resize: tf1
    assert loaded.convention == "tf1"
    ours = loaded(images)
    reference = FeatureExtractorInceptionV3(
        "inception-v3-compat", ["2048", "logits_unbiased", "logits"]
    )
    with torch.no_grad():
        pool, unbiased, logits = reference((images * 255).round().to(torch.uint8))
    assert _close(ours["pool"], pool) <= FEATURE_TOL
    assert _close(ours["logits_unbiased"], unbiased) <= FEATURE_TOL
    assert _close(ours["logits"], logits) <= FEATURE_TOL


def test_clean_convention_matches_clean_fid_pipeline(
    torch_home: Path, images: torch.Tensor
) -> None:
    # clean-fid: PIL bicubic on float 8-bit values, clip, (x - 128) / 128, then the network.
    resizer = make_resizer("PIL", False, "bicubic", (299, 299))
    u8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    resized = torch.from_numpy(np.stack([resizer(im) for im in u8])).permute(0, 3, 1, 2)
    network = PytorchFidInception([3], resize_input=False, normalize_input=False).eval()
    with torch.no_grad():
        ref = network((resized - 128) / 128)[0].flatten(1)
    ours = InceptionV3FID().load(device=CPU, resize="clean")(images)
    assert _close(ours["pool"], ref) <= FEATURE_TOL


def test_batchnorm_folding_and_channels_last_keep_the_features(
    inception_weights: Path, images: torch.Tensor
) -> None:
    plain = load_inception_network(inception_weights, CPU, fold_batchnorm=False)
    folded = load_inception_network(inception_weights, CPU, fold_batchnorm=True)
    kw = {
        "device": CPU,
        "convention": "tf1",
        "weights_sha256": "",
        "weights_path": inception_weights,
    }
    a = LoadedInception(plain, **kw)(images[:1])
    b = LoadedInception(folded, **kw)(images[:1])
    for key in a:
        assert _close(b[key], a[key]) <= FEATURE_TOL
    assert torch.allclose(b["logits"], b["logits_unbiased"] + folded.fc.bias, atol=1e-5)


def test_grey_images_are_repeated_to_rgb(torch_home: Path, images: torch.Tensor) -> None:
    loaded = InceptionV3FID().load(device=CPU, resize="pytorch-fid")
    grey = images[:1].mean(dim=1, keepdim=True)
    assert torch.equal(loaded(grey)["pool"], loaded(grey.repeat(1, 3, 1, 1))["pool"])
    with pytest.raises(InputError, match="N, 1 or 3"):
        loaded(torch.zeros(1, 2, 8, 8))
    with pytest.raises(InputError, match="float"):
        loaded(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


def test_weights_lookup_order(
    inception_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(inception_weights.parents[2]))
    monkeypatch.delenv("GENEVAL_INCEPTION_WEIGHTS", raising=False)
    assert find_inception_weights() == inception_weights  # the torch hub cache
    env_copy = tmp_path / "env.pth"
    env_copy.write_bytes(inception_weights.read_bytes())
    monkeypatch.setenv("GENEVAL_INCEPTION_WEIGHTS", str(env_copy))
    assert find_inception_weights() == env_copy  # the variable beats the cache
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(inception_weights.read_bytes())
    assert find_inception_weights(explicit) == explicit  # --extractor-weights beats both
    with pytest.raises(InputError, match="--extractor-weights.*does not exist"):
        find_inception_weights(tmp_path / "missing.pth")
    monkeypatch.setenv("GENEVAL_INCEPTION_WEIGHTS", str(tmp_path / "nope.pth"))
    with pytest.raises(InputError, match="GENEVAL_INCEPTION_WEIGHTS"):
        find_inception_weights()


def test_download_into_hub_cache_then_clear_error_when_impossible(
    inception_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_home"))
    monkeypatch.delenv("GENEVAL_INCEPTION_WEIGHTS", raising=False)
    calls = []

    def fake_download(file: WeightsFile, destination: Path) -> Path:
        calls.append((file.url, file.sha256))
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes(inception_weights.read_bytes())
        return destination

    monkeypatch.setattr(geneval.weights, "download", fake_download)
    path = find_inception_weights()
    assert path == tmp_path / "empty_home" / "hub" / "checkpoints" / WEIGHTS_FILENAME
    assert calls == [(inception_plugin.WEIGHTS.url, "6726825d")]
    assert find_inception_weights() == path and len(calls) == 1  # cached now

    def offline(*args, **kwargs):
        raise InputError("download failed: network unreachable")

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "other_home"))
    monkeypatch.setattr(geneval.weights, "download", offline)
    with pytest.raises(InputError) as err:
        InceptionV3FID().load(device=CPU)
    message = str(err.value)
    assert "\n" not in message and "network unreachable" in message
    assert str(tmp_path / "other_home" / "hub" / "checkpoints") in message
    assert inception_plugin.WEIGHTS.url in message and "--extractor-weights" in message
    assert "geneval weights fetch inception-v3-fid" in message


def test_wrong_layout_is_an_input_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(InputError, match="not the FID Inception key layout"):
        load_inception_network(bad, CPU)
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="could not be read"):
        load_inception_network(junk, CPU)


def test_num_batches_tracked_keys_are_accepted(inception_weights: Path, tmp_path: Path) -> None:
    state = torch.load(inception_weights, weights_only=True)
    with_counters = dict(state)
    for key in [k for k in state if k.endswith(".bn.running_mean")]:
        with_counters[key.replace("running_mean", "num_batches_tracked")] = torch.tensor(0)
    path = tmp_path / "with_counters.pth"
    torch.save(with_counters, path)
    net = load_inception_network(path, CPU, fold_batchnorm=False)
    assert torch.equal(net.fc.weight, state["fc.weight"])


def test_weights_sha256_is_the_files_and_is_cached(
    inception_weights: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(geneval.cache, "RACY_NS", 0)  # record the file however fresh
    copy = tmp_path / "w.pth"
    copy.write_bytes(inception_weights.read_bytes())
    expected = hashlib.sha256(copy.read_bytes()).hexdigest()
    assert file_sha256(copy) == expected
    index = Path(os.environ["GENEVAL_CACHE"]) / "features" / "files.sqlite"
    assert index.is_file()  # the one file-hash index of sources and weights
    # A cached hash is not recomputed while the file's identity is unchanged ...
    real_sha256 = hashlib.sha256
    monkeypatch.setattr(geneval.cache.hashlib, "sha256", None)
    assert file_sha256(copy) == expected
    monkeypatch.setattr(geneval.cache.hashlib, "sha256", real_sha256)
    # ... and is when the file changes.
    copy.write_bytes(b"x" + copy.read_bytes()[1:])
    assert file_sha256(copy) == hashlib.sha256(copy.read_bytes()).hexdigest() != expected


def test_loaded_extractor_records_convention_and_sha(torch_home: Path) -> None:
    loaded = InceptionV3FID().load(device=CPU, resize="clean")
    assert loaded.convention == "clean"
    assert loaded.weights_sha256 == hashlib.sha256(loaded.weights_path.read_bytes()).hexdigest()
    with pytest.raises(InputError, match="--resize"):
        InceptionV3FID().load(device=CPU, resize="lanczos")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("convention", RESIZE_CONVENTIONS)
def test_cuda_features_match_cpu(torch_home: Path, images: torch.Tensor, convention: str) -> None:
    cpu = InceptionV3FID().load(device=CPU, resize=convention)(images)
    loaded = InceptionV3FID().load(device=torch.device("cuda"), resize=convention)
    gpu = loaded(images)  # CPU batch: pinned, copied without blocking, resized on the GPU
    assert gpu["pool"].device.type == "cuda"
    for key in cpu:
        assert _close(gpu[key].cpu(), cpu[key]) <= FEATURE_TOL


# -- End to end on PNG folders (slow) ---------------------------------------------------------
# geneval's side is the real command line, `geneval run --samples A --reference B`, in-process;
# the reference tools read the same folders themselves.


def _geneval_metrics(
    run_cli, weights: Path, folders: tuple[Path, Path], convention: str, out: Path
) -> dict[str, float]:
    n = len(list(folders[0].glob("*.png")))
    res = run_cli(
        "run",
        "--samples",
        folders[0],
        "--reference",
        folders[1],
        "--metrics",
        "fid,kid,is",
        "--resize",
        convention,
        "--inception-weights",
        weights,
        "--opt",
        "kid.subsets=1",
        "--opt",
        f"kid.subset_size={n}",
        "--opt",
        "is.splits=1",
        "--json",
        out,
        "--quiet",
    )
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    assert report["config"]["extractor"] == "inception-v3-fid"
    assert report["config"]["resize"] == convention
    return {name: m["value"] for name, m in report["metrics"].items()}


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_end_to_end_matches_torch_fidelity_tf1(
    torch_home: Path, png_folders: tuple[Path, Path], inception_weights: Path, run_cli, tmp_path
) -> None:
    from torch_fidelity import calculate_metrics

    ours = _geneval_metrics(run_cli, inception_weights, png_folders, "tf1", tmp_path / "r.json")
    ref = calculate_metrics(
        input1=str(png_folders[0]),
        input2=str(png_folders[1]),
        cuda=False,
        fid=True,
        kid=True,
        isc=True,
        kid_subsets=1,
        kid_subset_size=24,
        isc_splits=1,
        cache=False,
        verbose=False,
    )
    print("geneval", ours, "torch-fidelity", ref)
    assert ours["fid"] == pytest.approx(ref["frechet_inception_distance"], rel=1e-3)
    assert ours["kid"] == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-4)
    assert ours["is"] == pytest.approx(ref["inception_score_mean"], rel=1e-4)


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_end_to_end_fid_matches_pytorch_fid(
    torch_home: Path, png_folders: tuple[Path, Path], inception_weights: Path, run_cli, tmp_path
) -> None:
    from pytorch_fid.fid_score import calculate_fid_given_paths

    ours = _geneval_metrics(
        run_cli, inception_weights, png_folders, "pytorch-fid", tmp_path / "r.json"
    )
    ref = calculate_fid_given_paths(
        [str(p) for p in png_folders], batch_size=8, device="cpu", dims=2048, num_workers=0
    )
    print("geneval", ours["fid"], "pytorch-fid", ref)
    assert ours["fid"] == pytest.approx(ref, rel=1e-3)
