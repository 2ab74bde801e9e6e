"""``clip_score``: closed forms, Hessel et al.'s per-pair clamp, torchmetrics' ``CLIPScore`` on
one random-weight ``transformers.CLIPModel``, and the metric's bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geneval.errors import InputError
from geneval_plugins.metrics.text_alignment.clip_score import (
    CAPTION_FEATURES,
    CLIPScore,
    clip_score,
)
from tests.stub_inputs import StubInputs, compute, metric_options


def _pairs(cosines: np.ndarray, d: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Image and caption embeddings of arbitrary lengths with the given cosines."""
    n = cosines.shape[0]
    basis = np.linalg.qr(rng.standard_normal((d, d)))[0]
    e1, e2 = basis[:, 0], basis[:, 1]
    sines = np.sqrt(1.0 - cosines**2)
    images = rng.uniform(0.5, 20.0, (n, 1)) * e1[None, :]
    texts = rng.uniform(0.5, 20.0, (n, 1)) * (cosines[:, None] * e1 + sines[:, None] * e2)
    return images, texts


def test_closed_form_with_per_pair_clamp():
    rng = np.random.default_rng(0)
    cosines = np.array([0.31, 0.25, -0.2, 0.05, 0.9, -0.6])
    images, texts = _pairs(cosines, 8, rng)
    per_pair = np.clip(cosines, 0.0, None)
    for w in (100.0, 2.5):
        result = clip_score(images, texts, w=w)
        assert result.value == pytest.approx(w * per_pair.mean(), rel=1e-12)
        assert result.std == pytest.approx(w * per_pair.std(ddof=1), rel=1e-12)
        assert result.std_err == pytest.approx(w * per_pair.std(ddof=1) / math.sqrt(6), rel=1e-12)
        assert result.n == 6 and result.n_clamped == 2
    one = clip_score(images[:1], texts[:1])
    assert one.value == pytest.approx(31.0, rel=1e-12) and one.std == 0.0


def test_bad_embeddings_are_input_errors():
    rng = np.random.default_rng(1)
    images, texts = _pairs(np.array([0.2, 0.3, 0.4]), 4, rng)
    with pytest.raises(InputError, match="3 images but 2 captions"):
        clip_score(images, texts[:2])
    with pytest.raises(InputError, match="one CLIP model"):
        clip_score(images, np.ones((3, 5)))
    with pytest.raises(InputError, match="w must be"):
        clip_score(images, texts, w=0.0)


def _vocabulary() -> dict[str, int]:
    """A byte-level vocabulary with no merges (every character is a token), in CLIP's layout."""
    from tokenizers import pre_tokenizers

    chars = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for suffix in ("", "</w>"):
        for c in chars:
            vocab[c + suffix] = len(vocab)
    return vocab


def _small_clip(seed: int, aligned: bool):
    """A random-weight ``CLIPModel`` (small config) and its ``CLIPProcessor``; with ``aligned``
    the two towers share a large final bias and one projection, so every image–caption
    cosine is positive (the case in which torchmetrics' clamp of the mean and the per-pair
    clamp agree)."""
    from transformers import (
        CLIPConfig,
        CLIPImageProcessor,
        CLIPModel,
        CLIPProcessor,
        CLIPTokenizer,
    )

    vocab = _vocabulary()
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    processor = CLIPProcessor(image_processor=images, tokenizer=tokenizer)
    layers = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2}
    config = CLIPConfig(
        text_config={
            **layers,
            "num_attention_heads": 4,
            "vocab_size": len(vocab),
            "max_position_embeddings": 77,
            "bos_token_id": 0,
            "eos_token_id": 1,
            "pad_token_id": 1,
        },
        vision_config={**layers, "num_attention_heads": 4, "image_size": 32, "patch_size": 8},
        projection_dim=16,
    )
    torch.manual_seed(seed)
    model = CLIPModel(config).eval()
    if aligned:
        with torch.no_grad():
            shared = torch.randn(32) * 1.2
            model.vision_model.post_layernorm.bias.copy_(shared)
            model.text_model.final_layer_norm.bias.copy_(shared)
            model.text_projection.weight.copy_(model.visual_projection.weight)
    return model, processor


class _Features(torch.nn.Module):
    """The CLIPModel with ``get_*_features`` returning the projected embeddings as a tensor
    (transformers 5 returns an output object, which torchmetrics 1.9 does not unwrap)."""

    def __init__(self, model) -> None:  # noqa: ANN001
        super().__init__()
        self.model = model
        self.config = model.config

    def get_image_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model.get_image_features(pixel_values).pooler_output

    def get_text_features(self, input_ids, attention_mask) -> torch.Tensor:  # noqa: ANN001
        return self.model.get_text_features(input_ids, attention_mask).pooler_output


CAPTIONS = [
    "a red cube on a table",
    "two dogs",
    "x",
    "a photo of a cat sitting on a mat in the sun",
    "an astronaut riding a horse",
    "blue",
]


def _embeddings(model, processor, images: torch.Tensor, captions: list[str]):  # noqa: ANN001
    """The model's image and text embeddings of the processor's pixels and tokens."""
    pixels = processor(images=list(images), return_tensors="pt")["pixel_values"]
    tokens = processor(text=captions, return_tensors="pt", padding=True)
    with torch.no_grad():
        wrapped = _Features(model)
        image = wrapped.get_image_features(pixels)
        text = wrapped.get_text_features(tokens["input_ids"], tokens["attention_mask"])
    return image, text


def test_equals_torchmetrics_clip_score():
    from torchmetrics.multimodal.clip_score import CLIPScore as TorchmetricsCLIPScore

    model, processor = _small_clip(seed=0, aligned=True)
    generator = torch.Generator().manual_seed(1)
    images = torch.randint(0, 256, (6, 3, 40, 48), dtype=torch.uint8, generator=generator)
    reference = TorchmetricsCLIPScore(model_name_or_path=lambda: (_Features(model), processor))
    with torch.no_grad():
        reference.update(list(images[:4]), CAPTIONS[:4])
        reference.update(list(images[4:]), CAPTIONS[4:])
    expected = float(reference.compute())
    image, text = _embeddings(model, processor, images, CAPTIONS)
    result = clip_score(image, text, w=100.0)
    assert result.n_clamped == 0  # the aligned towers: every cosine is positive
    assert 0.0 < expected < 100.0
    assert result.value == pytest.approx(expected, rel=1e-5)
    # Hessel et al.'s scale is the same number times 2.5 / 100
    assert clip_score(image, text, w=2.5).value == pytest.approx(expected / 40.0, rel=1e-5)


def test_negative_cosines_are_clamped_per_pair():
    # a random model: some cosines are negative; each pair is clamped (Hessel et al.), where
    # torchmetrics clamps the mean
    model, processor = _small_clip(seed=0, aligned=False)
    generator = torch.Generator().manual_seed(2)
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8, generator=generator)
    image, text = _embeddings(model, processor, images, CAPTIONS)
    cosines = torch.nn.functional.cosine_similarity(image.double(), text.double()).numpy()
    result = clip_score(image, text)
    assert result.n_clamped == int((cosines < 0).sum()) > 0
    assert result.value == pytest.approx(100.0 * np.clip(cosines, 0, None).mean(), rel=1e-6)


class _CaptionInputs(StubInputs):
    def caption_features(self, source: str) -> torch.Tensor:
        return self._get(CAPTION_FEATURES, source)


def _inputs(images: np.ndarray, texts: np.ndarray) -> _CaptionInputs:
    return _CaptionInputs(
        {
            ("features", "samples"): torch.from_numpy(images).float(),
            (CAPTION_FEATURES, "samples"): torch.from_numpy(texts).float(),
        }
    )


def test_metric_reports_scale_and_model():
    rng = np.random.default_rng(3)
    cosines = np.array([0.2, 0.35, 0.28, 0.3])
    images, texts = _pairs(cosines, 16, rng)
    metric = CLIPScore()
    result = compute(metric, _inputs(images, texts))
    assert result["value"] == pytest.approx(100.0 * cosines.mean(), rel=1e-5)
    assert result["std_err"] == pytest.approx(100.0 * cosines.std(ddof=1) / 2.0, rel=1e-4)
    assert result["n"] == 4 and result["n_clamped"] == 0
    assert result["model"] == "clip-vit-l14" and result["extractor"] == "clip-vit-l14"
    assert result["w"] == 100.0 and result["scale"] == "w = 100 (torchmetrics, diffusers)"
    hessel = compute(metric, _inputs(images, texts), w=2.5, extractor="clip-vit-b32")
    assert hessel["value"] == pytest.approx(2.5 * cosines.mean(), rel=1e-5)
    assert hessel["scale"] == "w = 2.5 (Hessel et al. 2021)" and hessel["model"] == "clip-vit-b32"
    assert set(result) - {"value", "w", "extractor"} == set(metric.fields)


def test_metric_bad_captions():
    rng = np.random.default_rng(4)
    images, texts = _pairs(np.array([0.2, 0.3, 0.4]), 8, rng)
    metric = CLIPScore()
    with pytest.raises(InputError) as mismatch:
        compute(metric, _inputs(images, texts[:2]))
    assert "3 sample images but 2 captions" in str(mismatch.value)
    assert "\n" not in str(mismatch.value)
    with pytest.raises(InputError) as missing:
        compute(metric, _inputs(images, np.zeros((0, 8))))
    message = str(missing.value)
    assert "no captions" in message and "--prompts" in message and "'captions'" in message
    assert "sidecar .txt" in message and "\n" not in message


def test_needs_require_a_clip_extractor():
    metric = CLIPScore()
    needs = metric.needs_for(metric_options(metric))
    assert {(n.kind, n.source) for n in needs} == {
        ("features", "samples"),
        (CAPTION_FEATURES, "samples"),
    }
    assert all(n.extractor == "clip-vit-l14" and n.extractor_required for n in needs)
    with pytest.raises(InputError, match="'digits-cnn' is not a CLIP extractor"):
        metric.needs_for(metric_options(metric, extractor="digits-cnn"))


def test_registered():
    from geneval.plugins import get_registry

    assert "clip_score" in get_registry().items("metric")
