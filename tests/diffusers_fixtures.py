"""Tiny, randomly initialised diffusers pipelines written to disk, for fast offline CPU tests.

Nothing can be downloaded in the tests, so each ``build_<kind>(folder)`` function here builds a
deterministic (``torch.manual_seed`` before every model) pipeline out of tiny components and writes
it with ``save_pretrained(folder, safe_serialization=True)``; the folder loads back with
``DiffusionPipeline.from_pretrained(folder, use_safetensors=True)`` and samples two images in well
under a second on a CPU with 2-4 inference steps. The weights are random, so the images are noise;
the fixtures test loading, calling conventions, seeding and output plumbing, not image quality.

Every pipeline here produces float32 images in [0, 1] of shape (N, 8, 8, 3) with
``output_type="np"`` and accepts ``generator`` as a list of one ``torch.Generator`` per image
(the initial noise of image i comes from generator i). ``output_type="pt"`` gives an (N, 3, 8, 8)
tensor for ddpm, ddim, dit and text-to-image, but pndm, score-sde-ve and ldm ignore it and return
the numpy array anyway. What each ``__call__`` takes besides ``generator``, ``num_inference_steps``
and ``output_type`` (diffusers 0.42; passing an unknown keyword to ddpm, ddim or dit raises
TypeError):

- ``ddpm``: ``batch_size``.
- ``ddim``: ``batch_size``, ``eta``, ``use_clipped_model_output``.
- ``pndm`` and ``score-sde-ve``: ``batch_size`` (and ``**kwargs``, silently ignored, so an ``eta``
  passed to them is dropped without an error). The PNDM scheduler here has ``skip_prk_steps=True``:
  with the default ``False`` (as in google/ddpm-* checkpoints) PNDM needs >= 4 inference steps.
  Score SDE VE runs ``correct_steps + 1`` (here 2) unet calls per inference step, and its
  Langevin corrector sets the step size from norms averaged over the batch, so an image depends
  on the other images in its batch: image 1 of a batch seeded [0, 1] differs from the image of
  a batch of one seeded [1] (every other pipeline here gives the same image). Untrained, it
  returns mostly clamped (0 or 1) pixels.
- ``ldm``: ``batch_size``, ``eta`` (``**kwargs`` ignored). The generator only draws the initial
  latents: the scheduler step gets none, so ``eta > 0`` draws from torch's global RNG.
- ``dit``: ``class_labels`` (a list of ints; the batch size is its length; no ``batch_size``),
  ``guidance_scale`` (default 4.0). The pipeline hard-codes the null class for classifier-free
  guidance as label 1000, so the transformer's label table has ``num_embeds_ada_norm=1000``
  classes, as in the published DiT checkpoints, although only five are named: ``id2label``
  ``{0: "a", ..., 4: "e"}`` is written into ``model_index.json`` (``save_pretrained`` does not
  record it) and comes back as ``pipe.labels == {"a": 0, ..., "e": 4}``. The class count a loader
  should sample from is therefore ``len(set(pipe.labels.values()))`` (5), not
  ``pipe.transformer.config.num_embeds_ada_norm`` (1000). ``build_dit(folder,
  num_embeds_ada_norm=5)`` builds the variant whose table holds just the five classes; it only
  runs with ``guidance_scale <= 1`` (IndexError otherwise). The transformer learns sigma
  (``out_channels = 2 * in_channels``) and the pipeline drops the sigma half.
- ``text-to-image``: a ``StableDiffusionPipeline``: ``prompt`` (str or list; the batch size is its
  length times ``num_images_per_prompt``), ``negative_prompt``, ``guidance_scale`` (default 7.5),
  ``eta``, ``height``/``width`` (default 8 = unet sample_size 4 x vae_scale_factor 2; must be
  multiples of 8). Its scheduler step does get the generator list, so ``eta > 0`` stays seeded.
  The tokenizer is a CLIP BPE tokenizer built offline from a hand-written vocabulary of the 256
  byte symbols (with and without ``</w>``) plus a few merged words; unknown text falls back to
  bytes, so any prompt tokenizes.

``build_pickled_only`` writes a DDPM pipeline with ``safe_serialization=False`` (the unet has only
``diffusion_pytorch_model.bin``), for testing that a loader refuses pickled weights.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from diffusers import (
    AutoencoderKL,
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DiTPipeline,
    DiTTransformer2DModel,
    LDMPipeline,
    PNDMPipeline,
    PNDMScheduler,
    ScoreSdeVePipeline,
    ScoreSdeVeScheduler,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet2DModel,
    VQModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

SEED = 0
IMAGE_SIZE = 8
NUM_TRAIN_TIMESTEPS = 100
DIT_LABELS = {0: "a", 1: "b", 2: "c", 3: "d", 4: "e"}
# The ``id2label`` a loaded DiT pipeline knows; its ``labels`` attribute maps name -> id.
DIT_NUM_CLASSES = len(DIT_LABELS)

_BLOCKS = (8, 16)
_GROUPS = 4


def _unet(sample_size: int = IMAGE_SIZE, channels: int = 3, **kwargs: object) -> UNet2DModel:
    """A two-level UNet2DModel without attention in the down/up blocks, freshly seeded."""
    torch.manual_seed(SEED)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=channels,
        out_channels=channels,
        block_out_channels=_BLOCKS,
        layers_per_block=1,
        norm_num_groups=_GROUPS,
        attention_head_dim=8,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        **kwargs,
    )


def _autoencoder_kwargs(latent_channels: int) -> dict[str, object]:
    """Shared settings of the tiny VQ and KL autoencoders: 8x8 images <-> 4x4 latents."""
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
        "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
        "block_out_channels": _BLOCKS,
        "layers_per_block": 1,
        "latent_channels": latent_channels,
        "norm_num_groups": _GROUPS,
        "sample_size": IMAGE_SIZE,
    }


def _vae(latent_channels: int = 4) -> AutoencoderKL:
    torch.manual_seed(SEED)
    return AutoencoderKL(**_autoencoder_kwargs(latent_channels))


def _save(pipe: object, folder: Path, *, safe: bool = True) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pipe.save_pretrained(folder, safe_serialization=safe)  # type: ignore[attr-defined]
    return folder


def build_ddpm(folder: Path) -> Path:
    """DDPMPipeline, 3x8x8 images, DDPMScheduler(num_train_timesteps=100)."""
    pipe = DDPMPipeline(
        unet=_unet(), scheduler=DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    )
    return _save(pipe, folder)


def build_ddim(folder: Path) -> Path:
    """DDIMPipeline, 3x8x8 images, DDIMScheduler(num_train_timesteps=100)."""
    pipe = DDIMPipeline(
        unet=_unet(), scheduler=DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    )
    return _save(pipe, folder)


def build_pndm(folder: Path) -> Path:
    """PNDMPipeline, 3x8x8 images, PNDMScheduler(num_train_timesteps=100, skip_prk_steps=True).

    With the default ``skip_prk_steps=False`` (the published google/ddpm-* PNDM configs),
    ``set_timesteps`` fails for fewer than 4 inference steps; skipping the Runge-Kutta warm-up
    (as Stable Diffusion's PNDM config does) works for any step count.
    """
    scheduler = PNDMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS, skip_prk_steps=True)
    pipe = PNDMPipeline(unet=_unet(), scheduler=scheduler)
    return _save(pipe, folder)


def build_score_sde_ve(folder: Path) -> Path:
    """ScoreSdeVePipeline (NCSN++ style: Fourier noise-level embedding), 3x8x8 images."""
    unet = _unet(time_embedding_type="fourier")
    scheduler = ScoreSdeVeScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS, sigma_min=0.01, sigma_max=1.0, correct_steps=1
    )
    return _save(ScoreSdeVePipeline(unet=unet, scheduler=scheduler), folder)


def build_ldm(folder: Path) -> Path:
    """LDMPipeline: VQModel (8x8 images <-> 3x4x4 latents) + latent UNet + DDIMScheduler."""
    torch.manual_seed(SEED)
    vqvae = VQModel(**_autoencoder_kwargs(3), num_vq_embeddings=32)
    pipe = LDMPipeline(
        vqvae=vqvae,
        unet=_unet(sample_size=IMAGE_SIZE // 2),
        scheduler=DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS),
    )
    return _save(pipe, folder)


def build_dit(folder: Path, *, num_embeds_ada_norm: int = 1000) -> Path:
    """DiTPipeline: 1-layer DiT on 4x4x4 latents (learned sigma) + AutoencoderKL, 5 named classes.

    ``num_embeds_ada_norm`` must stay 1000 for classifier-free guidance (``guidance_scale > 1``,
    the default), because DiTPipeline uses label 1000 as the null class.
    """
    torch.manual_seed(SEED)
    transformer = DiTTransformer2DModel(
        sample_size=IMAGE_SIZE // 2,
        patch_size=2,
        in_channels=4,
        out_channels=8,
        num_layers=1,
        num_attention_heads=2,
        attention_head_dim=8,
        num_embeds_ada_norm=num_embeds_ada_norm,
    )
    pipe = DiTPipeline(
        transformer=transformer,
        vae=_vae(latent_channels=4),
        scheduler=DDIMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS),
        id2label=DIT_LABELS,
    )
    folder = _save(pipe, folder)
    # save_pretrained does not record id2label (it is not a registered module); the published
    # checkpoints carry it in model_index.json, from which from_pretrained passes it to __init__.
    index_path = folder / "model_index.json"
    index = json.loads(index_path.read_text())
    index["id2label"] = {str(k): v for k, v in DIT_LABELS.items()}
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
    return folder


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode character table."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


_WORDS = ("a", "cat", "dog", "photo", "of")


def _clip_tokenizer() -> CLIPTokenizer:
    """A CLIP BPE tokenizer from a hand-written vocab.json / merges.txt (no download)."""
    symbols = list(_bytes_to_unicode().values())
    vocab_list = symbols + [s + "</w>" for s in symbols]
    merges: list[str] = []
    for word in _WORDS:
        # Merge left to right: "c a" -> "ca", then "ca t</w>" -> "cat</w>".
        pieces = list(word[:-1]) + [word[-1] + "</w>"]
        while len(pieces) > 1:
            merged = pieces[0] + pieces[1]
            rule = f"{pieces[0]} {pieces[1]}"
            if rule not in merges:
                merges.append(rule)
            if merged not in vocab_list:
                vocab_list.append(merged)
            pieces = [merged, *pieces[2:]]
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: i for i, token in enumerate(vocab_list)}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (Path(tmp) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        return CLIPTokenizer.from_pretrained(tmp, model_max_length=77)


def build_text_to_image(folder: Path) -> Path:
    """StableDiffusionPipeline: tiny CLIP text encoder, cross-attention UNet, KL VAE, 8x8 images."""
    tokenizer = _clip_tokenizer()
    torch.manual_seed(SEED)
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=1000,
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=2,
            max_position_embeddings=77,
            projection_dim=32,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )
    torch.manual_seed(SEED)
    unet = UNet2DConditionModel(
        sample_size=IMAGE_SIZE // 2,
        in_channels=4,
        out_channels=4,
        block_out_channels=_BLOCKS,
        layers_per_block=1,
        norm_num_groups=_GROUPS,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=2,
    )
    scheduler = DDIMScheduler(
        num_train_timesteps=NUM_TRAIN_TIMESTEPS,
        beta_schedule="scaled_linear",
        beta_start=0.00085,
        beta_end=0.012,
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    pipe = StableDiffusionPipeline(
        vae=_vae(latent_channels=4),
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    return _save(pipe, folder)


def build_pickled_only(folder: Path) -> Path:
    """The DDPM pipeline of ``build_ddpm`` saved with pickled weights only (``.bin``)."""
    pipe = DDPMPipeline(
        unet=_unet(), scheduler=DDPMScheduler(num_train_timesteps=NUM_TRAIN_TIMESTEPS)
    )
    return _save(pipe, folder, safe=False)


BUILDERS: dict[str, Callable[[Path], Path]] = {
    "ddpm": build_ddpm,
    "ddim": build_ddim,
    "pndm": build_pndm,
    "score-sde-ve": build_score_sde_ve,
    "ldm": build_ldm,
    "dit": build_dit,
    "text-to-image": build_text_to_image,
}
