"""The DINOv2 extractors against the official architecture, torch-fidelity and dgm-eval's pipeline.

Random weights in the official key layout stand in for the published files (which cannot be
downloaded here); the official architecture comes from :mod:`tests.dinov2_reference`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import torch
import torchvision.transforms as T
from PIL import Image
from torch import nn

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.extractors.dinov2 import (
    VITL14,
    DinoV2,
    DinoV2Architecture,
    LoadedDinoV2,
    build_network,
    official_pos_embed,
)
from geneval_plugins.extractors.imagenet import IMAGENET_MEAN, IMAGENET_STD, preprocess_imagenet
from tests.dinov2_reference import official_vision_transformer
from tests.inception_fixtures import photo_crops, to_float_batch

CPU = torch.device("cpu")
FEATURE_TOL = 1e-5  # max |ours − official| over max |official|
TINY = DinoV2Architecture("dinov2-tiny", "dinov2_tiny", embed_dim=64, depth=2, num_heads=4)


@pytest.fixture(scope="session")
def vits(pytestconfig: pytest.Config) -> ModuleType:
    return official_vision_transformer(pytestconfig.cache)


def randomise(model: nn.Module, seed: int) -> dict[str, torch.Tensor]:
    """Deterministic random weights for an official DINOv2 model; returns its state dict."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("gamma"):  # LayerScale
                p.copy_(0.2 + 0.8 * torch.rand(p.shape, generator=gen))
            elif name in ("pos_embed", "cls_token", "mask_token"):
                p.copy_(0.5 * torch.randn(p.shape, generator=gen))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.02 * torch.randn(p.shape, generator=gen))
            else:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
    return {k: v.clone() for k, v in model.state_dict().items()}


def official_model(vits: ModuleType, arch: DinoV2Architecture, seed: int = 0) -> nn.Module:
    """The official backbone as ``hubconf.py`` builds it (518 px, LayerScale 1, flat blocks)."""
    model = vits.DinoVisionTransformer(
        img_size=518,
        patch_size=14,
        embed_dim=arch.embed_dim,
        depth=arch.depth,
        num_heads=arch.num_heads,
        mlp_ratio=4,
        init_values=1.0,
        ffn_layer="mlp",
        block_chunks=0,
    ).eval()
    randomise(model, seed)
    return model


def _rel(ours: torch.Tensor, ref: torch.Tensor) -> float:
    return ((ours - ref).abs().max() / ref.abs().max()).item()


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    """Three photo crops, 96×128, float [0, 1] on the 8-bit grid."""
    return to_float_batch(photo_crops(3, seed=5, sizes=((96, 128),)))


def test_registered_with_their_contract() -> None:
    registry = get_registry()
    for name, dim in (("dinov2-vitl14", 1024), ("dinov2-vitb14", 768)):
        ext = registry.extractor(name)
        assert isinstance(ext, DinoV2) and ext.name == name
        assert dict(ext.outputs) == {"cls": dim} and ext.feature_output == "cls"
        assert ext.logits_output is None and ext.resize_options == ("dgm-eval", "tf1")
    weights = VITL14.weights
    assert weights.filename == "dinov2_vitl14_pretrain.pth"
    assert weights.env == "GENEVAL_DINOV2_VITL14_WEIGHTS"
    assert weights.url == (
        "https://dl.fbaipublicfiles.com/dinov2/dinov2_vitl14/dinov2_vitl14_pretrain.pth"
    )


def test_position_embedding_equals_official_interpolation(vits: ModuleType) -> None:
    from timm.layers import resample_abs_pos_embed

    model = official_model(vits, TINY)
    pos_embed = model.pos_embed.detach()
    with torch.no_grad():
        official = model.interpolate_pos_encoding(torch.zeros(1, 257, 64), 224, 224)
    ours = official_pos_embed(pos_embed, 16)
    assert ours.shape == (1, 257, 64)
    assert torch.equal(ours, official)
    assert torch.equal(official_pos_embed(ours, 16), ours)  # already at the grid: unchanged
    # timm's resampling (target size, antialiased) is a different embedding altogether.
    timm_pe = resample_abs_pos_embed(pos_embed, (16, 16), num_prefix_tokens=1)
    assert _rel(timm_pe, official) > 0.3


def test_backbone_equals_official_forward(vits: ModuleType) -> None:
    model = official_model(vits, TINY, seed=1)
    ours = build_network(model.state_dict(), embed_dim=64, depth=2, num_heads=4)
    x = torch.randn(4, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = model(x)
        out = ours(x)
    assert out.shape == (4, 64)
    assert ref.std(dim=0).mean() > 0.05 * ref.abs().mean()  # features differ between inputs
    assert _rel(out, ref) <= FEATURE_TOL


def test_tf1_convention_equals_torch_fidelity(
    vits: ModuleType, images: torch.Tensor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from torch_fidelity.feature_extractor_dinov2 import FeatureExtractorDinoV2

    network = official_model(vits, TINY, seed=3)
    monkeypatch.setattr(torch.hub, "load", lambda *args, **kwargs: network)
    reference = FeatureExtractorDinoV2("dinov2-vit-b-14", ["dinov2"])
    with torch.no_grad():
        (ref,) = reference((images * 255).round().to(torch.uint8))
    loaded = LoadedDinoV2(
        network,
        name="dinov2-tiny",
        dim=64,
        device=CPU,
        convention="tf1",
        weights_sha256="",
        weights_path=None,
    )
    ours = loaded(images)["cls"]
    assert torch.equal(ours, ref)


def _dgm_eval_inputs(images: torch.Tensor) -> torch.Tensor:
    """dgm-eval's DINOv2 transform, image by image: PIL bicubic resize, to_tensor, normalize."""
    transform = T.Compose(
        [
            T.Resize((224, 224), T.InterpolationMode.BICUBIC),
            T.ToTensor(),
            T.Normalize(np.array(IMAGENET_MEAN), np.array(IMAGENET_STD)),
        ]
    )
    u8 = (images * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    return torch.stack([transform(Image.fromarray(im)) for im in u8])


def test_dgm_eval_convention_equals_its_pipeline(vits: ModuleType, images: torch.Tensor) -> None:
    expected = _dgm_eval_inputs(images)
    assert torch.equal(preprocess_imagenet(images, "dgm-eval"), expected)
    network = official_model(vits, TINY, seed=4)
    loaded = LoadedDinoV2(
        network,
        name="dinov2-tiny",
        dim=64,
        device=CPU,
        convention="dgm-eval",
        weights_sha256="",
        weights_path=None,
    )
    grey = images[:1].mean(dim=1, keepdim=True)
    with torch.no_grad():
        assert torch.equal(loaded(images)["cls"], network(expected))
        assert torch.equal(loaded(grey)["cls"], loaded(grey.expand(-1, 3, -1, -1))["cls"])
    with pytest.raises(InputError, match="N, 1 or 3"):
        loaded(torch.zeros(1, 2, 8, 8))


def _hub_cache(tmp_path: Path, filename: str, state: dict[str, torch.Tensor]) -> Path:
    checkpoints = tmp_path / "torch_home" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / filename)
    return checkpoints / filename


def test_weights_are_found_loaded_and_identified(
    vits: ModuleType,
    images: torch.Tensor,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "cache"))
    model = official_model(vits, TINY, seed=5)
    path = _hub_cache(tmp_path, TINY.weights.filename, model.state_dict())
    monkeypatch.setenv("TORCH_HOME", str(path.parents[2]))
    monkeypatch.delenv("GENEVAL_DINOV2_TINY_WEIGHTS", raising=False)
    extractor = DinoV2(TINY)
    loaded = extractor.load(device=CPU)  # from the torch hub cache; default convention
    assert loaded.convention == "dgm-eval" and loaded.weights_path == path
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    with torch.no_grad():
        expected = model(preprocess_imagenet(images, "dgm-eval"))
    assert _rel(loaded(images)["cls"], expected) <= FEATURE_TOL
    env_copy = tmp_path / "env.pth"
    env_copy.write_bytes(path.read_bytes())
    monkeypatch.setenv("GENEVAL_DINOV2_TINY_WEIGHTS", str(env_copy))
    assert extractor.load(device=CPU, resize="tf1").weights_path == env_copy
    assert extractor.load(device=CPU, weights=path).weights_path == path
    with pytest.raises(InputError, match="--resize clean: extractor dinov2-tiny accepts"):
        extractor.load(device=CPU, resize="clean")


def test_wrong_layout_is_one_line(vits: ModuleType, tmp_path: Path) -> None:
    state = official_model(vits, TINY).state_dict()
    del state["blocks.1.ls2.gamma"]
    bad = tmp_path / "bad.pth"
    torch.save(state, bad)
    with pytest.raises(InputError, match="not the official ViT-64/2 key layout") as err:
        DinoV2(TINY).load(device=CPU, weights=bad)
    assert "\n" not in str(err.value) and str(bad) in str(err.value)
    with pytest.raises(InputError, match="no pos_embed"):
        build_network({}, embed_dim=64, depth=2, num_heads=4)


@pytest.mark.slow
def test_vitl14_in_the_published_layout_equals_official(
    vits: ModuleType, images: torch.Tensor, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "cache"))
    model = official_model(vits, VITL14, seed=6)
    state = model.state_dict()
    # The published file's layout: flat blocks, a 37×37 (518 px) position embedding.
    assert state["pos_embed"].shape == (1, 1370, 1024) and "mask_token" in state
    assert "blocks.23.ls2.gamma" in state and len(state) == 5 + 24 * 14 + 2
    path = _hub_cache(tmp_path, "dinov2_vitl14_pretrain.pth", state)
    del state
    monkeypatch.setenv("TORCH_HOME", str(path.parents[2]))
    monkeypatch.delenv("GENEVAL_DINOV2_VITL14_WEIGHTS", raising=False)
    for convention in ("dgm-eval", "tf1"):
        loaded = get_registry().extractor("dinov2-vitl14").load(device=CPU, resize=convention)
        ours = loaded(images)["cls"]
        with torch.no_grad():
            ref = model(preprocess_imagenet(images, convention))
        assert ours.shape == (3, 1024)
        assert ref.std(dim=0).mean() > 0.05 * ref.abs().mean()
        assert _rel(ours, ref) <= FEATURE_TOL, convention


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(vits: ModuleType, images: torch.Tensor) -> None:
    model = official_model(vits, TINY, seed=7)
    network = build_network(model.state_dict(), embed_dim=64, depth=2, num_heads=4)
    kw = {"name": "dinov2-tiny", "dim": 64, "weights_sha256": "", "weights_path": None}
    for convention in ("dgm-eval", "tf1"):
        cpu = LoadedDinoV2(network, device=CPU, convention=convention, **kw)(images)["cls"]
        gpu_net = build_network(model.state_dict(), embed_dim=64, depth=2, num_heads=4).cuda()
        cuda = torch.device("cuda")
        gpu = LoadedDinoV2(gpu_net, device=cuda, convention=convention, **kw)(images)["cls"]
        assert _rel(gpu.cpu(), cpu) <= 1e-4
