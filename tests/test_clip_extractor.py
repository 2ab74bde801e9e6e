"""The CLIP extractors against open_clip on the same random weights, OpenAI's preprocessing,
the safetensors-only rule and the weights lookup order.

Most tests use a small CLIP in the published key layout (same code path, smaller sizes); one
test loads the full published ViT-B/32 architecture and the L/14 ones are marked slow.
"""

from __future__ import annotations

import dataclasses
import hashlib
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geneval.plugin import InputError
from geneval_plugins.extractors import clip as C
from tests.clip_reference import TINY, open_clip_model, save_weights, write_tokenizer_files

CAPTIONS = [
    "a photo of a cat",
    "Two dogs, playing in the snow!",
    "an astronaut riding a horse on the moon, 4k, trending on artstation",
    "x",
]
CPU = torch.device("cpu")


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory):
    """(open_clip model, weights path, tokenizer folder) of the small CLIP."""
    folder = tmp_path_factory.mktemp("clip-tiny")
    model = open_clip_model(TINY, seed=3)
    path = save_weights(model, folder / "model.safetensors")
    write_tokenizer_files(folder)
    return model, path, folder


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Empty torch hub and Hugging Face caches, no weights variables, no network URL."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    for file in (TINY.weights, C.VOCAB, C.MERGES):
        monkeypatch.delenv(file.env, raising=False)
    dead = "http://127.0.0.1:9/{repo}/resolve/{revision}/{file}"
    monkeypatch.setattr(C, "_HF", dead)
    tokenizer = tuple(
        (dataclasses.replace(f, url=dead.format(repo="x", revision="y", file=n)), n)
        for f, n in C.TOKENIZER_FILES
    )
    monkeypatch.setattr(C, "TOKENIZER_FILES", tokenizer)
    return tmp_path


def test_tokenizer_files_are_the_published_ones(tiny) -> None:
    """The rebuilt vocab.json/merges.txt have the declared (published) sha256 and sizes."""
    _, _, folder = tiny
    for file, name in C.TOKENIZER_FILES:
        data = (folder / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == file.sha256
        assert len(data) == file.size


def test_image_features_equal_open_clip(tiny) -> None:
    model, path, _ = tiny
    loaded = C.ClipExtractor(TINY).load(device=CPU, weights=path)
    images = torch.rand(5, 3, 48, 80, generator=torch.Generator().manual_seed(0))
    ours = loaded(images)["image_embeds"]
    assert ours.shape == (5, TINY.embed_dim) and ours.dtype == torch.float32
    with torch.no_grad():
        theirs = model.encode_image(C.preprocess_clip(images, "openai", TINY.image_size))
    assert rel(ours, theirs) < 1e-5
    # raw, not normalised
    assert not torch.allclose(ours.norm(dim=1), torch.ones(5), atol=1e-3)
    assert loaded.convention == "openai"
    assert loaded.weights_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_text_features_and_tokens_equal_open_clip(tiny) -> None:
    import open_clip

    model, path, folder = tiny
    loaded = C.ClipExtractor(TINY).load(device=CPU, weights=path)
    ids, mask = loaded.tokenize(CAPTIONS)
    reference = open_clip.tokenizer.SimpleTokenizer()(CAPTIONS)  # (n, 77), EOT then zeros
    for row, ref in zip(ids, reference, strict=True):
        n = int((ref != 0).sum())
        assert row[:n].tolist() == ref[:n].tolist()
        assert (row[n:] == 49407).all()  # padded with <|endoftext|>
    ours = loaded.encode_text(CAPTIONS, batch_size=3)  # two batches, padded differently
    assert ours.shape == (len(CAPTIONS), TINY.embed_dim) and ours.device.type == "cpu"
    with torch.no_grad():
        theirs = model.encode_text(reference)
    assert rel(ours, theirs) < 1e-5
    for a, b in zip(ours, theirs, strict=True):
        assert rel(a, b) < 1e-5
    # the tokenizer files were found beside the weights file
    assert loaded.tokenizer_files == (folder / "vocab.json", folder / "merges.txt")


def test_long_captions_are_cut_to_77_tokens_as_torchmetrics(tiny) -> None:
    """torchmetrics' CLIPScore cuts the ids to 77 columns (losing the end-of-text token):
    the embedding is the text tower's at the cut ids, pooled at their highest id."""
    model, path, _ = tiny
    loaded = C.ClipExtractor(TINY).load(device=CPU, weights=path)
    long = " ".join(f"word{i}" for i in range(60))
    ids, _ = loaded.tokenize([long, "short"])
    assert ids.shape == (2, 77)
    full = loaded.tokenizer()([long], return_tensors="pt")["input_ids"][0]
    assert len(full) > 77 and ids[0].tolist() == full[:77].tolist()
    ours = loaded.encode_text([long])
    with torch.no_grad():
        theirs = model.encode_text(ids[:1])  # open_clip pools at argmax too
    assert rel(ours, theirs) < 1e-5


@pytest.mark.parametrize("shape", [(32, 32), (40, 64), (300, 200), (224, 224), (57, 300)])
def test_openai_preprocessing_equals_torchvision_on_pil(shape: tuple[int, int]) -> None:
    """OpenAI's ``_transform``: Resize(n, BICUBIC), CenterCrop(n), ToTensor, Normalize on the
    PIL image; bit for bit on the 8-bit levels."""
    import torchvision.transforms as T

    transform = T.Compose(
        [
            T.Resize(224, interpolation=T.InterpolationMode.BICUBIC),
            T.CenterCrop(224),
            lambda im: im.convert("RGB"),
            T.ToTensor(),
            T.Normalize(C.CLIP_MEAN, C.CLIP_STD),
        ]
    )
    rng = np.random.default_rng(sum(shape))
    arrays = rng.integers(0, 256, size=(2, *shape, 3), dtype=np.uint8)
    reference = torch.stack([transform(Image.fromarray(a)) for a in arrays])
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    ours = C.preprocess_clip(images, "openai", 224)
    assert ours.shape == reference.shape
    assert torch.allclose(ours, reference, rtol=0, atol=2e-6)


@pytest.mark.parametrize("shape", [(32, 32), (64, 100), (256, 256)])
def test_clean_fid_preprocessing_equals_clean_fid(shape, monkeypatch) -> None:
    """clean-fid's ``img_preprocess_clip`` + ``ToTensor() * 255`` + ``CLIP_fx`` normalisation."""
    import torchvision

    from tests.clip_reference import install_fake_openai_clip

    captured: list[torch.Tensor] = []

    class Capture(torch.nn.Module):
        def encode_image(self, x: torch.Tensor) -> torch.Tensor:
            captured.append(x.clone())
            return x.flatten(1)[:, :4]

    install_fake_openai_clip(monkeypatch, Capture())
    from cleanfid.clip_features import CLIP_fx, img_preprocess_clip

    rng = np.random.default_rng(shape[0])
    arrays = rng.integers(0, 256, size=(2, *shape, 3), dtype=np.uint8)
    to_tensor = torchvision.transforms.ToTensor()
    batch = torch.stack([to_tensor(np.array(img_preprocess_clip(a))) * 255 for a in arrays])
    CLIP_fx(device="cpu")(batch)
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    ours = C.preprocess_clip(images, "clean-fid", 224)
    assert torch.equal(ours, captured[0])
    # the two conventions differ by float32 round-off only
    assert torch.allclose(ours, C.preprocess_clip(images, "openai", 224), rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape", [(40, 64), (300, 200), (336, 336), (57, 301)])
def test_cmmd_preprocessing_equals_the_cmmd_reference(shape: tuple[int, int]) -> None:
    """google-research/cmmd: ``_center_crop_and_resize`` (the centred square, then PIL bicubic),
    ``/ 255``, ``_resize_bicubic`` (torch bicubic to the same size), then
    ``CLIPImageProcessor(do_normalize=True, do_center_crop=False, do_resize=False,
    do_rescale=False)``."""
    from transformers import CLIPImageProcessor

    def center_crop_and_resize(im: Image.Image, size: int) -> Image.Image:  # io_util.py
        w, h = im.size
        side = min(w, h)
        top, left = (h - side) // 2, (w - side) // 2
        im = im.crop((left, top, left + side, top + side))
        return im.resize((size, size), resample=Image.BICUBIC)

    rng = np.random.default_rng(shape[1])
    arrays = rng.integers(0, 256, size=(2, *shape, 3), dtype=np.uint8)
    batch = np.stack(
        [np.asarray(center_crop_and_resize(Image.fromarray(a), 336)) for a in arrays]
    ).astype(np.float32)
    batch = batch / 255.0
    resized = torch.nn.functional.interpolate(
        torch.from_numpy(batch.transpose(0, 3, 1, 2)), size=(336, 336), mode="bicubic"
    )
    processor = CLIPImageProcessor()
    reference = processor(
        images=list(resized.permute(0, 2, 3, 1).numpy()),
        do_normalize=True,
        do_center_crop=False,
        do_resize=False,
        do_rescale=False,
        return_tensors="pt",
    )["pixel_values"]
    images = torch.from_numpy(arrays).permute(0, 3, 1, 2).float() / 255
    ours = C.preprocess_clip(images, "cmmd", 336)
    assert ours.shape == reference.shape == (2, 3, 336, 336)
    assert torch.allclose(ours, reference.float(), rtol=0, atol=1e-6)
    if shape[0] == shape[1]:
        assert torch.allclose(ours, C.preprocess_clip(images, "openai", 336), rtol=0, atol=1e-6)


def test_torchscript_and_pickle_files_are_refused(tiny, tmp_path: Path) -> None:
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    pt = tmp_path / "ViT-B-32.pt"
    torch.jit.save(scripted, str(pt))
    with pytest.raises(InputError, match="TorchScript/pickle archive.*can run code") as info:
        C.ClipExtractor(TINY).load(device=CPU, weights=pt)
    assert "\n" not in str(info.value)
    pickled = tmp_path / "state.bin"
    torch.save({"a": torch.zeros(2)}, pickled)
    with pytest.raises(InputError, match="TorchScript/pickle archive"):
        C.ClipExtractor(TINY).load(device=CPU, weights=pickled)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}")
    with pytest.raises(InputError, match="is not a safetensors file"):
        C.ClipExtractor(TINY).load(device=CPU, weights=junk)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello, these are not weights\n")
    with pytest.raises(InputError, match="notes.safetensors is not a safetensors file$"):
        C.ClipExtractor(TINY).load(device=CPU, weights=text)


def test_a_safetensors_header_length_starting_like_a_pickle_is_read(tmp_path: Path) -> None:
    """A header length whose first byte is 0x80 (the pickle opcode) is still safetensors."""
    from safetensors.torch import save_file

    path = tmp_path / "w.safetensors"
    for k in range(400):
        save_file({"a": torch.arange(3.0)}, str(path), metadata={"pad": "x" * k})
        if path.read_bytes()[0] == 0x80:
            break
    else:
        pytest.fail("no header length starting with 0x80 was produced")
    state = C.read_safetensors(path, "weights")
    assert torch.equal(state["a"], torch.arange(3.0))


def test_weights_of_another_architecture_are_refused(tiny) -> None:
    _, path, _ = tiny
    with pytest.raises(InputError, match=r"image size 64, not 224: not CLIP ViT-B/32 weights"):
        C.ClipExtractor(C.VIT_B32).load(device=CPU, weights=path)
    accepted = r"--resize tf1: extractor clip-tiny accepts openai, clean-fid, cmmd"
    with pytest.raises(InputError, match=accepted):
        C.ClipExtractor(TINY).load(device=CPU, weights=path, resize="tf1")


def test_cli_exits_2_with_one_line_on_a_torchscript_file(run_cli, tmp_path: Path) -> None:
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(tmp_path / "ViT-B-32.pt"))
    images = np.random.default_rng(0).integers(0, 256, (4, 16, 16, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", images)
    np.save(tmp_path / "b.npy", images[::-1])
    result = run_cli(
        "run",
        "--samples",
        tmp_path / "a.npy",
        "--reference",
        tmp_path / "b.npy",
        "--metrics",
        "fid",
        "--extractor",
        "clip-vit-b32",
        "--extractor-weights",
        tmp_path / "ViT-B-32.pt",
        "--quiet",
    )
    assert result.code == 2
    assert len(result.err_lines) == 1
    assert "TorchScript/pickle archive" in result.err and "ViT-B-32.pt" in result.err


def _serve(folder: Path):
    handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(  # noqa: E731
        *a, directory=str(folder), **k
    )
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_weights_lookup_order(tiny, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--extractor-weights, the variable, the torch hub cache, the Hugging Face hub cache
    (pinned revision first), then the published URL (downloaded into the torch hub cache)."""
    _, path, _ = tiny
    plugin = C.ClipExtractor(TINY)
    file = TINY.weights
    data = path.read_bytes()

    def put(p: Path) -> Path:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    snapshots = isolated / "hf" / "models--openai--clip-vit-base-patch32" / "snapshots"
    other = put(snapshots / "0000aaaa" / "model.safetensors")
    assert plugin.find_weights(download=False) == other
    pinned = put(snapshots / TINY.revision / "model.safetensors")
    assert plugin.find_weights(download=False) == pinned
    torch_cached = put(isolated / "torch" / "hub" / "checkpoints" / file.filename)
    assert file.filename == "clip-vit-base-patch32.safetensors"
    assert plugin.find_weights(download=False) == torch_cached
    env = put(isolated / "env.safetensors")
    monkeypatch.setenv(file.env, str(env))
    assert file.env == "GENEVAL_CLIP_TINY_WEIGHTS"
    assert plugin.find_weights(download=False) == env
    explicit = put(isolated / "explicit.safetensors")
    assert plugin.find_weights(explicit, download=False) == explicit
    with pytest.raises(InputError, match="does not exist"):
        plugin.find_weights(isolated / "missing.safetensors", download=False)

    # nothing anywhere: the published URL, downloaded atomically into the torch hub cache
    monkeypatch.delenv(file.env)
    torch_cached.unlink()
    for p in (other, pinned):
        p.unlink()
    served = isolated / "served"
    put(served / "openai/clip-vit-base-patch32/resolve" / TINY.revision / "model.safetensors")
    server = _serve(served)
    try:
        monkeypatch.setattr(
            C,
            "_HF",
            f"http://127.0.0.1:{server.server_port}/{{repo}}/resolve/{{revision}}/{{file}}",
        )
        assert plugin.architecture.weights.url.endswith(f"{TINY.revision}/model.safetensors")
        found = plugin.find_weights()
    finally:
        server.shutdown()
    assert found == torch_cached and found.read_bytes() == data


def test_tokenizer_lookup(tiny, isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The tokenizer files: beside the weights, the variables, the torch hub cache, the Hugging
    Face hub cache; read only when captions are encoded."""
    model, path, folder = tiny
    lone = isolated / "lone" / "model.safetensors"
    lone.parent.mkdir()
    lone.write_bytes(path.read_bytes())
    loaded = C.ClipExtractor(TINY).load(device=CPU, weights=lone)
    assert loaded.tokenizer_files is None  # not looked for by loading
    with pytest.raises(InputError, match="CLIP tokenizer vocabulary clip-vocab.json not found"):
        loaded.encode_text(["a cat"])
    snapshot = isolated / "hf" / "models--openai--clip-vit-base-patch32" / "snapshots" / "c0ffee"
    hf_files = write_tokenizer_files(snapshot)
    loaded.tokenizer_files = None
    with torch.no_grad():
        expected = model.encode_text(__import__("open_clip").tokenizer.SimpleTokenizer()(["a cat"]))
    assert rel(loaded.encode_text(["a cat"]), expected) < 1e-5
    assert loaded.tokenizer_files == hf_files
    checkpoints = isolated / "torch" / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    for file, name in C.TOKENIZER_FILES:
        (checkpoints / file.filename).write_bytes((folder / name).read_bytes())
    found = [C.find_file(f, "openai/x", "r", n, download=False) for f, n in C.TOKENIZER_FILES]
    assert found == [checkpoints / "clip-vocab.json", checkpoints / "clip-merges.txt"]
    monkeypatch.setenv("GENEVAL_CLIP_VOCAB", str(folder / "vocab.json"))
    assert C.find_file(C.VOCAB, "openai/x", "r", "vocab.json") == folder / "vocab.json"


def test_plugin_declarations() -> None:
    from geneval.plugins import get_registry

    names = {"clip-vit-b32": 512, "clip-vit-l14": 768, "clip-vit-l14-336": 768}
    for name, dim in names.items():
        plugin = get_registry().extractor(name)
        assert plugin.outputs == {"image_embeds": dim}
        assert plugin.feature_output == "image_embeds" and plugin.logits_output is None
        assert plugin.resize_options == ("openai", "clean-fid", "cmmd")
        assert plugin.text_encoder is True
        weights, vocab, merges = plugin.published_weights
        assert weights.url.endswith("/model.safetensors") and "/resolve/" in weights.url
        assert (vocab, merges) == (C.VOCAB, C.MERGES)
    assert C.VIT_L14_336.config().vision_config.image_size == 336


def _published_architecture_check(arch: C.ClipArchitecture, tmp_path: Path) -> None:
    model = open_clip_model(arch, seed=11)
    path = save_weights(model, tmp_path / "model.safetensors")
    write_tokenizer_files(tmp_path)
    loaded = C.ClipExtractor(arch).load(device=CPU, weights=path, resize="clean-fid")
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        theirs = model.encode_image(C.preprocess_clip(images, "clean-fid", arch.image_size))
        text = model.encode_text(__import__("open_clip").tokenizer.SimpleTokenizer()(CAPTIONS))
    assert rel(loaded(images)["image_embeds"], theirs) < 1e-5
    assert rel(loaded.encode_text(CAPTIONS), text) < 1e-5
    assert loaded.convention == "clean-fid"


def test_published_vit_b32(tmp_path: Path) -> None:
    """The full published ViT-B/32 architecture, random weights."""
    _published_architecture_check(C.VIT_B32, tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("arch", [C.VIT_L14, C.VIT_L14_336], ids=lambda a: a.name)
def test_published_vit_l14(arch: C.ClipArchitecture, tmp_path: Path) -> None:
    _published_architecture_check(arch, tmp_path)


def test_missing_transformers_names_the_extra(tiny, monkeypatch: pytest.MonkeyPatch) -> None:
    _, path, _ = tiny
    monkeypatch.setitem(__import__("sys").modules, "transformers", None)
    with pytest.raises(
        InputError, match=r"need the transformers package: pip install geneval\[clip\]"
    ):
        C.ClipExtractor(TINY).load(device=CPU, weights=path)
