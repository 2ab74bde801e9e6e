"""Independent CLIP references for the CLIP extractor tests: open_clip and clean-fid.

open_clip (``open_clip_torch``) implements OpenAI's CLIP independently of ``transformers``
(OpenAI's own ``clip/model.py`` layout: fused ``in_proj`` attention, ``visual.proj``,
``text_projection`` as (width, embed) matrices). A random open_clip model with the sizes of a
``ClipArchitecture`` is converted here to ``transformers``' key layout, the layout of the
published ``model.safetensors`` files, so that geneval's extractor (``transformers``) and
open_clip run the same weights.

The tokenizer files are rebuilt from the BPE list open_clip ships
(``bpe_simple_vocab_16e6.txt.gz``, OpenAI's), exactly as the Hugging Face repositories hold
them: their sha256 equal the digests the extractor declares.

clean-fid's ``clip_vit_b_32`` imports OpenAI's ``clip`` package and loads its JIT model from
the network; :func:`fake_openai_clip` installs a ``clip`` module whose ``load`` returns an
object whose ``encode_image`` is the open_clip model's, so that clean-fid's own code runs
(its preprocessing, data loading, statistics and FID) on the same random weights offline.
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import sys
import types
from pathlib import Path

import torch

from geneval_plugins.extractors.clip import VIT_B32, ClipArchitecture

#: A small CLIP in the published layout (ViT-B/32's, narrower and shallower), for fast tests.
TINY = dataclasses.replace(
    VIT_B32,
    name="clip-tiny",
    image_size=64,
    patch_size=16,
    vision_width=128,
    vision_layers=2,
    text_width=128,
    text_layers=2,
    embed_dim=64,
)


def open_clip_model(arch: ClipArchitecture, seed: int = 0) -> torch.nn.Module:
    """A float32 open_clip ``CLIP`` (QuickGELU) of ``arch``'s sizes, every tensor perturbed by
    seeded noise (layer-norm scales and biases too), in eval mode."""
    from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(seed)
    model = CLIP(
        arch.embed_dim,
        vision_cfg=CLIPVisionCfg(
            layers=arch.vision_layers,
            width=arch.vision_width,
            patch_size=arch.patch_size,
            image_size=arch.image_size,
            head_width=64,
        ),
        text_cfg=CLIPTextCfg(
            context_length=arch.context_length,
            vocab_size=arch.vocab_size,
            width=arch.text_width,
            heads=max(1, arch.text_width // 64),
            layers=arch.text_layers,
        ),
        quick_gelu=True,
    )
    generator = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            scale = 0.02 if p.ndim > 1 or "ln" not in name else 0.1
            p.add_(torch.randn(p.shape, generator=generator) * scale)
    return model.float().eval().requires_grad_(False)


def _blocks(hf: dict, sd: dict, source: str, target: str) -> None:
    layers = {k[len(source) :].split(".")[0] for k in sd if k.startswith(source)}
    for i in sorted(layers, key=int):
        s, t = f"{source}{i}.", f"{target}{i}."
        for kind in ("weight", "bias"):
            q, k, v = sd[f"{s}attn.in_proj_{kind}"].chunk(3, dim=0)
            hf[f"{t}self_attn.q_proj.{kind}"] = q
            hf[f"{t}self_attn.k_proj.{kind}"] = k
            hf[f"{t}self_attn.v_proj.{kind}"] = v
            hf[f"{t}self_attn.out_proj.{kind}"] = sd[f"{s}attn.out_proj.{kind}"]
            hf[f"{t}layer_norm1.{kind}"] = sd[f"{s}ln_1.{kind}"]
            hf[f"{t}layer_norm2.{kind}"] = sd[f"{s}ln_2.{kind}"]
            hf[f"{t}mlp.fc1.{kind}"] = sd[f"{s}mlp.c_fc.{kind}"]
            hf[f"{t}mlp.fc2.{kind}"] = sd[f"{s}mlp.c_proj.{kind}"]


def to_transformers_layout(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The open_clip model's tensors under ``transformers``' ``CLIPModel`` names (the
    published ``model.safetensors`` layout), contiguous copies."""
    sd = model.state_dict()
    hf: dict[str, torch.Tensor] = {"logit_scale": sd["logit_scale"]}
    hf["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    hf["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    _blocks(hf, sd, "transformer.resblocks.", "text_model.encoder.layers.")
    for kind in ("weight", "bias"):
        hf[f"text_model.final_layer_norm.{kind}"] = sd[f"ln_final.{kind}"]
        hf[f"vision_model.pre_layrnorm.{kind}"] = sd[f"visual.ln_pre.{kind}"]
        hf[f"vision_model.post_layernorm.{kind}"] = sd[f"visual.ln_post.{kind}"]
    hf["text_projection.weight"] = sd["text_projection"].T
    hf["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    hf["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    hf["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    _blocks(hf, sd, "visual.transformer.resblocks.", "vision_model.encoder.layers.")
    hf["visual_projection.weight"] = sd["visual.proj"].T
    return {k: v.detach().clone().contiguous() for k, v in hf.items()}


def save_weights(model: torch.nn.Module, path: Path) -> Path:
    """Save the open_clip model in the published layout as safetensors at ``path``."""
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(to_transformers_layout(model), str(path))
    return path


def write_tokenizer_files(folder: Path) -> tuple[Path, Path]:
    """``vocab.json`` and ``merges.txt`` of OpenAI's CLIP, rebuilt from open_clip's BPE list
    as the Hugging Face repositories store them (compact JSON; a ``#version`` line)."""
    import open_clip
    from open_clip.tokenizer import bytes_to_unicode

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]  # as open_clip's SimpleTokenizer reads it
    byte_chars = list(bytes_to_unicode().values())
    vocab = byte_chars + [c + "</w>" for c in byte_chars] + ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    folder.mkdir(parents=True, exist_ok=True)
    vocab_path, merges_path = folder / "vocab.json", folder / "merges.txt"
    encoder = {token: i for i, token in enumerate(vocab)}
    vocab_path.write_bytes(
        json.dumps(encoder, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    )
    header = "#version: 0.2 - Trained by `huggingface/tokenizers`\n"
    merges_path.write_bytes((header + "\n".join(merges) + "\n").encode("utf-8"))
    return vocab_path, merges_path


class _OpenAIModel:
    """What clean-fid's ``CLIP_fx`` uses of OpenAI's model: ``eval`` and ``encode_image``."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model

    def eval(self) -> _OpenAIModel:
        return self

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x)


def fake_openai_clip(model: torch.nn.Module) -> types.ModuleType:
    """A ``clip`` module whose ``load(name, device)`` returns ``(model, None)`` with the open_clip
    ``model``'s ``encode_image`` (see the module docstring); put it in ``sys.modules``."""
    module = types.ModuleType("clip")
    module.load = lambda name, device="cpu", **_: (_OpenAIModel(model), None)  # type: ignore[attr-defined]
    return module


def install_fake_openai_clip(monkeypatch, model: torch.nn.Module) -> None:
    """Install :func:`fake_openai_clip` and drop a previously imported
    ``cleanfid.clip_features`` so that it binds the fake."""
    monkeypatch.setitem(sys.modules, "clip", fake_openai_clip(model))
    monkeypatch.delitem(sys.modules, "cleanfid.clip_features", raising=False)
