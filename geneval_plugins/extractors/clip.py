"""Extractors ``clip-vit-b32``, ``clip-vit-l14`` and ``clip-vit-l14-336``: OpenAI's CLIP.

The image output ``image_embeds`` is the projected image embedding, raw (not L2-normalised):
the Fréchet distance uses it as it is (``fid --extractor clip-vit-b32 --resize clean-fid`` is
clean-fid's CLIP-FID, ``compute_fid(..., model_name="clip_vit_b_32")``); CMMD and the CLIP
score normalise it themselves. The text side, :meth:`LoadedClip.encode_text`, gives the
projected text embeddings of captions (``text_encoder = True`` on the plugin).

Architecture
    ``transformers``' ``CLIPModel`` built from a ``CLIPConfig`` written here for each of the
    three published architectures (:data:`ARCHITECTURES`: ViT-B/32 at 224 px, ViT-L/14 at
    224 px and at 336 px; QuickGELU, LayerNorm ε = 1e-5, 64-d heads, a 77-token context and a
    49 408-token vocabulary, as OpenAI's ``clip/model.py`` ``build_model`` reads them off the
    weights). No configuration or code is downloaded. The text embedding is pooled at the
    highest token id of each sequence (the end-of-text token), as OpenAI's ``encode_text``
    and ``transformers`` with the published configurations (``eos_token_id = 2``) do.
Text
    ``transformers``' ``CLIPTokenizer`` (byte-level BPE; NFC, whitespace folding and lower
    case), as torchmetrics' ``CLIPScore`` and diffusers use it: ``<|startoftext|> …
    <|endoftext|>``, padded with ``<|endoftext|>``, cut to 77 tokens as torchmetrics cuts
    them (a longer caption then loses its end-of-text token). OpenAI's own tokenizer also
    applies ``ftfy.fix_text`` and HTML unescaping: captions with mojibake or HTML entities
    may tokenise differently; plain text tokenises identically (tested against open_clip).
Weights
    **safetensors only**: OpenAI's ``.pt`` files are TorchScript archives, which can run
    code, and are refused. The extractors read ``model.safetensors`` of the Hugging Face
    repositories ``openai/clip-vit-base-patch32`` (revision ``3d74acf9``),
    ``openai/clip-vit-large-patch14`` (``32bd6428``) and ``openai/clip-vit-large-patch14-336``
    (``ce19dc91``): the same weights in ``transformers``' key layout. Their sha256 is not
    declared (no digest of these files could be established offline), so a download is
    pinned by revision but not by digest. The tokenizer's ``vocab.json`` and ``merges.txt``
    (identical in the three repositories) are declared with their sha256; both equal the
    files rebuilt from the BPE list OpenAI ships with CLIP (``bpe_simple_vocab_16e6.txt.gz``).
Weights lookup
    ``--extractor-weights``, ``$GENEVAL_CLIP_VIT_B32_WEIGHTS`` (``…_L14_…``,
    ``…_L14_336_…``), the torch hub checkpoint cache (under the declared file name), the
    Hugging Face hub cache (``models--openai--<repo>/snapshots/<revision>/model.safetensors``,
    the pinned revision first), then the published URL. The tokenizer files are looked for
    beside the weights file first (a Hugging Face snapshot folder holds all three), then
    ``$GENEVAL_CLIP_VOCAB`` / ``$GENEVAL_CLIP_MERGES``, the torch hub cache, the Hugging Face
    hub cache and the published URL; they are read only when captions are encoded.
Preprocessing (``--resize``)
    ``openai`` (default)
        OpenAI's ``clip.load`` preprocessing of an image file: torchvision ``Resize(n,
        BICUBIC)`` of the 8-bit PIL image (the shorter side to ``n``, the longer to
        ``int(n · long / short)``; Pillow's fixed-point bicubic,
        :func:`~.resize.resize_bicubic_pil_uint8`), ``CenterCrop(n)`` (offsets
        ``int(round((h − n) / 2))``), ``ToTensor`` (``/ 255``), ``Normalize`` with CLIP's
        mean and std. Float images are first brought to 8-bit levels (``round(255 x)``),
        since OpenAI's pipeline reads 8-bit images: a float image off the 8-bit grid is
        quantised where OpenAI's code would never see it.
    ``clean-fid``
        clean-fid 0.1.35's ``clip_vit_b_32`` (``img_preprocess_clip`` and ``CLIP_fx``): the
        same resize and crop of the 8-bit image, kept as 8-bit levels, ``ToTensor() * 255``
        then ``/ 255`` and the same ``Normalize``. It equals ``openai`` but for the float32
        round trip ``(k / 255) · 255 / 255`` (at most one unit in the last place).
    ``cmmd``
        google-research/cmmd's ``io_util._center_crop_and_resize`` and ``embedding.py``: the
        largest centred square of the 8-bit image is cropped first (offsets
        ``(h − l) // 2``, ``l = min(h, w)``), then resized to ``n × n`` with Pillow's bicubic,
        ``/ 255`` and CLIP's mean and std (its later bicubic resize to ``n × n`` is the
        identity at that size). On square images it equals ``openai``; on others the two
        differ slightly (the crop offset is taken in input pixels before the resize, not in
        output pixels after it).
    clean-fid runs OpenAI's model in float16 on CUDA (``clip.load`` converts it); this
    extractor computes in float32 everywhere.

References
----------
.. [1] A. Radford et al., "Learning Transferable Visual Models From Natural Language
   Supervision", ICML 2021; openai/CLIP, ``clip/clip.py`` (``_transform``) and
   ``clip/model.py``.
.. [2] G. Parmar et al., "On Aliased Resizing and Surprising Subtleties in GAN Evaluation",
   CVPR 2022; clean-fid 0.1.35, ``cleanfid/clip_features.py`` and ``cleanfid/fid.py``.
.. [3] S. Jayasumana et al., "Rethinking FID: Towards a Better Evaluation Metric for Image
   Generation", CVPR 2024; google-research/google-research ``cmmd/io_util.py`` and
   ``cmmd/embedding.py``.
.. [4] T. Kynkäänniemi et al., "The Role of ImageNet Classes in Fréchet Inception Distance",
   ICLR 2023 (FD in CLIP space).
.. [5] Hugging Face ``transformers``, ``models/clip/modeling_clip.py``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    WeightsFile,
    file_sha256,
    hookimpl,
    hub_checkpoint_dir,
    quote,
)
from geneval_plugins.extractors.imagenet import as_rgb_batch
from geneval_plugins.extractors.resize import quantize_to_uint8_levels, resize_bicubic_pil_uint8
from geneval_plugins.extractors.weights import find

if TYPE_CHECKING:
    import torch
    from torch import nn

#: The ``--resize`` values; the first is the default.
CONVENTIONS = ("openai", "clean-fid", "cmmd")
#: CLIP's channel means and standard deviations (OpenAI's ``clip/clip.py``).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: Tokens per caption; longer ones are cut to this many, as torchmetrics' ``CLIPScore`` does.
CONTEXT_LENGTH = 77
VOCAB_SIZE = 49408
#: Captions encoded per forward pass of the text tower.
TEXT_BATCH = 256
#: Width of one attention head in every OpenAI CLIP (``build_model``: heads = width // 64).
HEAD_WIDTH = 64
_HF = "https://huggingface.co/{repo}/resolve/{revision}/{file}"
#: The pip command that installs what the CLIP extractors import.
INSTALL_HINT = "pip install geneval[clip]"
_TOKENIZER_REPO = "openai/clip-vit-base-patch32"
_TOKENIZER_REVISION = "3d74acf9a28c67741b2f4f2ea7635f0aaf6f0268"

VOCAB = WeightsFile(
    name="clip-vocab",
    filename="clip-vocab.json",
    url=_HF.format(repo=_TOKENIZER_REPO, revision=_TOKENIZER_REVISION, file="vocab.json"),
    env="GENEVAL_CLIP_VOCAB",
    what="CLIP tokenizer vocabulary",
    sha256="5047b556ce86ccaf6aa22b3ffccfc52d391ea4accdab9c2f2407da5b742d4363",
    size=862328,
)
MERGES = WeightsFile(
    name="clip-merges",
    filename="clip-merges.txt",
    url=_HF.format(repo=_TOKENIZER_REPO, revision=_TOKENIZER_REVISION, file="merges.txt"),
    env="GENEVAL_CLIP_MERGES",
    what="CLIP tokenizer merges",
    sha256="f526393189112391ce6f9795d4695f704121ce452c3aad1f5335cc41337eba85",
    size=524657,
)
#: The tokenizer files and their names in a Hugging Face snapshot.
TOKENIZER_FILES = ((VOCAB, "vocab.json"), (MERGES, "merges.txt"))


@dataclass(frozen=True)
class ClipArchitecture:
    """One OpenAI CLIP: its sizes and where its published weights are found.

    Heads are ``width // 64`` in both towers and MLPs are ``4 × width`` wide, as OpenAI's
    ``build_model`` derives them; :func:`architecture_of` reads the sizes off a state dict.
    """

    name: str  # the extractor's name, e.g. clip-vit-b32
    title: str  # e.g. ViT-B/32
    repo: str  # the Hugging Face repository, e.g. openai/clip-vit-base-patch32
    revision: str  # the pinned commit of that repository
    image_size: int
    patch_size: int
    vision_width: int
    vision_layers: int
    text_width: int
    text_layers: int
    embed_dim: int
    vocab_size: int = VOCAB_SIZE
    context_length: int = CONTEXT_LENGTH

    @property
    def weights(self) -> WeightsFile:
        """``model.safetensors`` of the pinned revision (no published digest: none checked)."""
        return WeightsFile(
            name=self.name,
            what=f"CLIP {self.title} weights",
            filename=f"{self.repo.split('/')[-1]}.safetensors",
            url=_HF.format(repo=self.repo, revision=self.revision, file="model.safetensors"),
            env=f"GENEVAL_{self.name.upper().replace('-', '_')}_WEIGHTS",
        )

    def sizes(self) -> dict[str, int]:
        """The sizes :func:`architecture_of` reads off a state dict, by name."""
        keys = (
            "image_size",
            "patch_size",
            "vision_width",
            "vision_layers",
            "text_width",
            "text_layers",
            "embed_dim",
            "vocab_size",
            "context_length",
        )
        return {k: getattr(self, k) for k in keys}

    def config(self) -> Any:
        """The ``transformers.CLIPConfig`` of this architecture (QuickGELU, ε = 1e-5)."""
        transformers = _import_transformers()
        text = {
            "vocab_size": self.vocab_size,
            "hidden_size": self.text_width,
            "intermediate_size": 4 * self.text_width,
            "num_hidden_layers": self.text_layers,
            "num_attention_heads": max(1, self.text_width // HEAD_WIDTH),
            "max_position_embeddings": self.context_length,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": self.embed_dim,
            # the published configurations: eos_token_id 2 selects pooling at the highest id
            "bos_token_id": 0,
            "eos_token_id": 2,
            "pad_token_id": 1,
        }
        vision = {
            "hidden_size": self.vision_width,
            "intermediate_size": 4 * self.vision_width,
            "num_hidden_layers": self.vision_layers,
            "num_attention_heads": max(1, self.vision_width // HEAD_WIDTH),
            "image_size": self.image_size,
            "patch_size": self.patch_size,
            "num_channels": 3,
            "hidden_act": "quick_gelu",
            "layer_norm_eps": 1e-5,
            "projection_dim": self.embed_dim,
        }
        return transformers.CLIPConfig(
            text_config=text, vision_config=vision, projection_dim=self.embed_dim
        )


VIT_B32 = ClipArchitecture(
    "clip-vit-b32",
    "ViT-B/32",
    "openai/clip-vit-base-patch32",
    _TOKENIZER_REVISION,
    image_size=224,
    patch_size=32,
    vision_width=768,
    vision_layers=12,
    text_width=512,
    text_layers=12,
    embed_dim=512,
)
VIT_L14 = ClipArchitecture(
    "clip-vit-l14",
    "ViT-L/14",
    "openai/clip-vit-large-patch14",
    "32bd64288804d66eefd0ccbe215aa642df71cc41",
    image_size=224,
    patch_size=14,
    vision_width=1024,
    vision_layers=24,
    text_width=768,
    text_layers=12,
    embed_dim=768,
)
VIT_L14_336 = ClipArchitecture(
    "clip-vit-l14-336",
    "ViT-L/14@336px",
    "openai/clip-vit-large-patch14-336",
    "ce19dc912ca5cd21c8a653c79e251e808ccabcd1",
    image_size=336,
    patch_size=14,
    vision_width=1024,
    vision_layers=24,
    text_width=768,
    text_layers=12,
    embed_dim=768,
)
ARCHITECTURES = {a.name: a for a in (VIT_B32, VIT_L14, VIT_L14_336)}


def _import_transformers() -> Any:
    """``transformers``, or an :class:`InputError` saying how to install it."""
    try:
        import transformers
    except ImportError:
        raise InputError(
            f"the CLIP extractors need the transformers package: {INSTALL_HINT}"
        ) from None
    return transformers


# ---------------------------------------------------------------------------------------------
# Finding files


def hf_hub_cache() -> Path:
    """The Hugging Face hub cache: ``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else
    ``$XDG_CACHE_HOME/huggingface/hub`` (``~/.cache/huggingface/hub``), as
    ``huggingface_hub.constants`` resolves it."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME", "~/.cache")
    home = os.environ.get("HF_HOME", os.path.join(xdg, "huggingface"))
    return Path(home).expanduser() / "hub"


def hf_cached(repo: str, revision: str, filename: str) -> Path | None:
    """``filename`` of ``repo`` in the Hugging Face hub cache, or ``None``.

    The layout is ``models--{owner}--{name}/snapshots/{commit}/{filename}``; the snapshot of
    ``revision`` is taken first, then any other snapshot in sorted order.
    """
    snapshots = hf_hub_cache() / f"models--{repo.replace('/', '--')}" / "snapshots"
    pinned = snapshots / revision / filename
    if pinned.is_file():
        return pinned
    if not snapshots.is_dir():
        return None
    for snapshot in sorted(snapshots.iterdir()):
        candidate = snapshot / filename
        if candidate.is_file():
            return candidate
    return None


def find_file(
    file: WeightsFile,
    repo: str,
    revision: str,
    hf_name: str,
    weights: str | os.PathLike[str] | None = None,
    *,
    beside: Path | None = None,
    download: bool = True,
) -> Path:
    """``file`` by the lookup order of the module docstring.

    ``weights`` (an explicit path) and the environment variable decide when set (a path that
    does not exist is an error); then ``beside / hf_name`` when ``beside`` is a folder; then
    the torch hub cache; then the Hugging Face hub cache (:func:`hf_cached`); then the
    published URL (:func:`geneval.plugin.find_weights`, unless ``download`` is false).
    """
    if weights is None and not os.environ.get(file.env):
        if beside is not None and (beside / hf_name).is_file():
            return beside / hf_name
        if not (hub_checkpoint_dir() / file.filename).is_file():
            cached = hf_cached(repo, revision, hf_name)
            if cached is not None:
                return cached
    return find(file, weights, download=download)


# ---------------------------------------------------------------------------------------------
# Reading the weights

#: How a file starts: zip archives (TorchScript and ``torch.save`` files) and pickles.
_ZIP_MAGIC = b"PK\x03\x04"
_PICKLE_MAGIC = b"\x80"


def read_safetensors(path: Path, what: str) -> dict[str, torch.Tensor]:
    """The tensors of the safetensors file ``path``, on the CPU.

    A safetensors file starts with its header's length (8 bytes, little-endian) and the
    header's JSON object (``{``). A file that does not is never deserialised: a zip archive
    (OpenAI's ``.pt`` files are TorchScript archives) or a pickle is refused as a file that
    can run code, anything else as not safetensors; a file that starts right but does not
    parse is refused too. Each is a one-line :class:`InputError` naming the file.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        with open(path, "rb") as handle:
            head = handle.read(9)
    except OSError as exc:
        raise InputError(f"{what} {quote(path)} could not be read ({exc})") from None
    if head[8:9] != b"{":
        if head.startswith(_ZIP_MAGIC) or head.startswith(_PICKLE_MAGIC):
            raise InputError(
                f"{what} {quote(path)} is a TorchScript/pickle archive (such as OpenAI's .pt "
                "files), which can run code: only safetensors files are read; use "
                "model.safetensors of the openai/clip-vit-* repositories on the Hugging Face hub"
            )
        raise InputError(f"{what} {quote(path)} is not a safetensors file")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        message = f"{what} {quote(path)} is not a safetensors file ({exc})"
        raise InputError(message.splitlines()[0]) from None


def _count_layers(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    """The number of ``{prefix}{i}.`` blocks in ``state``."""
    indices = {k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)}
    return len({i for i in indices if i.isdigit()})


def architecture_of(state: Mapping[str, torch.Tensor]) -> dict[str, int]:
    """The sizes of the CLIP in ``state`` (``transformers``' key layout), read off its shapes.

    Like OpenAI's ``build_model``: the patch size from the patch embedding, the image size
    from the number of positions, the widths from the layer norms, the depths from the layer
    indices, the embedding width from the projections. A state without these keys is an
    :class:`InputError`.
    """
    try:
        patch = state["vision_model.embeddings.patch_embedding.weight"]
        positions = state["vision_model.embeddings.position_embedding.weight"].shape[0]
        grid = round((positions - 1) ** 0.5)
        return {
            "image_size": int(patch.shape[-1]) * grid,
            "patch_size": int(patch.shape[-1]),
            "vision_width": int(patch.shape[0]),
            "vision_layers": _count_layers(state, "vision_model.encoder.layers."),
            "text_width": int(state["text_model.final_layer_norm.weight"].shape[0]),
            "text_layers": _count_layers(state, "text_model.encoder.layers."),
            "embed_dim": int(state["visual_projection.weight"].shape[0]),
            "vocab_size": int(state["text_model.embeddings.token_embedding.weight"].shape[0]),
            "context_length": int(
                state["text_model.embeddings.position_embedding.weight"].shape[0]
            ),
        }
    except KeyError as exc:
        raise InputError(
            f"no tensor {exc.args[0]}: not a CLIP state dict in transformers' key layout"
        ) from None


def build_clip_model(
    state: Mapping[str, torch.Tensor], architecture: ClipArchitecture
) -> nn.Module:
    """``transformers.CLIPModel`` of ``architecture`` holding the tensors of ``state``.

    ``state`` is in ``transformers``' key layout (``vision_model.*``, ``text_model.*``,
    ``visual_projection.weight``, ``text_projection.weight``, ``logit_scale``); saved
    ``position_ids`` buffers are ignored. Its sizes must be the architecture's, else an
    :class:`InputError` names the first that differs. The model is float32, in eval mode,
    without gradients, on the CPU.
    """
    import torch

    transformers = _import_transformers()
    found = architecture_of(state)
    for key, expected in architecture.sizes().items():
        if found[key] != expected:
            raise InputError(
                f"{key.replace('_', ' ')} {found[key]}, not {expected}: "
                f"not CLIP {architecture.title} weights"
            )
    weights = {k: v for k, v in state.items() if not k.endswith("position_ids")}
    with torch.device("meta"):  # no random initialisation: every tensor comes from the file
        model = transformers.CLIPModel(architecture.config())
    try:
        model.load_state_dict(weights, strict=True, assign=True)
    except RuntimeError as exc:
        message = str(exc).replace("\n", " ").replace("\t", "")
        raise InputError(
            f"not the transformers CLIP {architecture.title} key layout ({message})"[:400]
        ) from None
    # the position indices are buffers the file does not carry: made here, off the meta device
    for embeddings in (model.vision_model.embeddings, model.text_model.embeddings):
        count = embeddings.position_embedding.weight.shape[0]
        embeddings.position_ids = torch.arange(count).expand((1, -1))
    return model.float().eval().requires_grad_(False)


# ---------------------------------------------------------------------------------------------
# Preprocessing


def resized_shorter_side(height: int, width: int, size: int) -> tuple[int, int]:
    """torchvision ``Resize(size)``'s output (height, width): the shorter side becomes
    ``size``, the longer ``int(size · long / short)``."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def preprocess_clip(images: torch.Tensor, convention: str, size: int) -> torch.Tensor:
    """The CLIP network input under ``convention``: float32 (N, 3, size, size).

    Parameters
    ----------
    images
        Float RGB images in ``[0, 1]``, (N, 3, H, W), on the device to work on.
    convention
        ``openai``, ``clean-fid`` or ``cmmd`` (see the module docstring for each one's steps).
    size
        The network's input side (224 or 336).
    """
    import torch
    from torchvision.transforms.functional import normalize

    if convention not in CONVENTIONS:
        raise InputError(f"--resize {convention}: expected one of {', '.join(CONVENTIONS)}")
    levels = quantize_to_uint8_levels(images)
    height, width = levels.shape[-2:]
    if convention == "cmmd":  # the centred square first, then the resize
        side = min(height, width)
        top, left = (height - side) // 2, (width - side) // 2
        square = levels[..., top : top + side, left : left + side]
        cropped = resize_bicubic_pil_uint8(square, (size, size))
    else:  # the shorter side first, then the centre crop
        new_h, new_w = resized_shorter_side(height, width, size)
        resized = resize_bicubic_pil_uint8(levels, (new_h, new_w))
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        cropped = resized[..., top : top + size, left : left + size]
    x = cropped.contiguous().to(torch.float32) / 255
    if convention == "clean-fid":  # ToTensor() * 255 in its data set, / 255.0 in CLIP_fx
        x = x * 255 / 255.0
    return normalize(x, CLIP_MEAN, CLIP_STD)


# ---------------------------------------------------------------------------------------------
# The loaded extractor


def _read_tokenizer(vocab_path: Path, merges_path: Path) -> Any:
    """``transformers.CLIPTokenizer`` from a ``vocab.json`` and a ``merges.txt``.

    ``transformers`` 5 takes the vocabulary and the merges themselves; 4.x takes the two
    files' paths (its ``CLIPTokenizer`` is the Python BPE, with ``ftfy`` when installed).
    """
    import inspect

    transformers = _import_transformers()
    try:
        vocab = json.loads(vocab_path.read_text(encoding="utf-8"))
        lines = merges_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        message = f"CLIP tokenizer files could not be read ({exc})"
        raise InputError(message.splitlines()[0]) from None
    merges = [tuple(line.split()) for line in lines if line and not line.startswith("#version")]
    if not isinstance(vocab, dict) or any(len(m) != 2 for m in merges):
        raise InputError(
            f"{quote(vocab_path)} / {quote(merges_path)}: not a CLIP vocab.json and merges.txt"
        )
    tokenizer = transformers.CLIPTokenizer
    if "vocab_file" in inspect.signature(tokenizer.__init__).parameters:
        return tokenizer(vocab_file=str(vocab_path), merges_file=str(merges_path))
    return tokenizer(vocab=vocab, merges=merges)


class LoadedClip:
    """A CLIP on a device: called on image batches, and :meth:`encode_text` on captions.

    ``model`` is a ``transformers.CLIPModel`` (:func:`build_clip_model`). The tokenizer is
    read on the first call of :meth:`encode_text`, from ``tokenizer_files`` when given (the
    paths of ``vocab.json`` and ``merges.txt``), else by the lookup of the module docstring.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        architecture: ClipArchitecture,
        device: torch.device,
        convention: str,
        weights_sha256: str,
        weights_path: Path | None,
        tokenizer_files: tuple[Path, Path] | None = None,
    ) -> None:
        if convention not in CONVENTIONS:
            raise InputError(
                f"--resize {convention}: extractor {architecture.name} accepts "
                f"{', '.join(CONVENTIONS)}"
            )
        self.model = model
        self.architecture = architecture
        self.name = architecture.name
        self.outputs = {"image_embeds": architecture.embed_dim}
        self.device = device
        self.convention = convention
        self.weights_sha256 = weights_sha256
        self.weights_path = weights_path
        self.tokenizer_files = tokenizer_files
        self._tokenizer: Any = None

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"image_embeds": (N, D) float32}``: the raw projected image embeddings."""
        import torch

        x = as_rgb_batch(images, self.name).to(self.device)
        pixels = preprocess_clip(x, self.convention, self.architecture.image_size)
        with torch.inference_mode():
            pooled = self.model.vision_model(pixel_values=pixels).pooler_output
            out = self.model.visual_projection(pooled)
        return {"image_embeds": out.float()}

    def tokenizer(self) -> Any:
        """The CLIP tokenizer (``transformers.CLIPTokenizer``), read on first use."""
        if self._tokenizer is None:
            if self.tokenizer_files is None:
                beside = None if self.weights_path is None else self.weights_path.parent
                self.tokenizer_files = tuple(  # type: ignore[assignment]
                    find_file(file, _TOKENIZER_REPO, _TOKENIZER_REVISION, hf, beside=beside)
                    for file, hf in TOKENIZER_FILES
                )
            vocab, merges = self.tokenizer_files  # type: ignore[misc]
            self._tokenizer = _read_tokenizer(vocab, merges)
        return self._tokenizer

    def tokenize(self, texts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Token ids and attention mask (N, L ≤ 77) of ``texts``, padded to the longest.

        Each caption is ``<|startoftext|> … <|endoftext|>``, padded with ``<|endoftext|>``;
        a caption longer than 77 tokens is cut to its first 77 (its end-of-text token is then
        lost and the embedding pooled at its highest token id), as torchmetrics' ``CLIPScore``
        cuts them.
        """
        if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
            raise InputError("captions must be a sequence of strings")
        encoded = self.tokenizer()(list(texts), padding=True, return_tensors="pt")
        length = self.architecture.context_length
        return encoded["input_ids"][:, :length], encoded["attention_mask"][:, :length]

    def encode_text(self, texts: Sequence[str], batch_size: int = TEXT_BATCH) -> torch.Tensor:
        """The raw projected text embeddings (n, D) float32 on the CPU, in batches."""
        import torch

        texts = list(texts)
        out = torch.empty((len(texts), self.architecture.embed_dim), dtype=torch.float32)
        for start in range(0, len(texts), batch_size):
            ids, mask = self.tokenize(texts[start : start + batch_size])
            with torch.inference_mode():
                pooled = self.model.text_model(
                    input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
                ).pooler_output
                out[start : start + len(ids)] = self.model.text_projection(pooled).float().cpu()
        return out


class ClipExtractor:
    """A ``clip-*`` extractor plugin (see the module docstring)."""

    feature_output = "image_embeds"
    logits_output = None
    resize_options = CONVENTIONS
    #: It encodes captions too (:meth:`LoadedClip.encode_text`).
    text_encoder = True

    def __init__(self, architecture: ClipArchitecture) -> None:
        self.architecture = architecture
        self.name = architecture.name
        self.outputs = {"image_embeds": architecture.embed_dim}
        self.published_weights = (architecture.weights, VOCAB, MERGES)

    def find_weights(self, weights: Path | str | None = None, *, download: bool = True) -> Path:
        """The weights file by the lookup order of the module docstring."""
        a = self.architecture
        return find_file(
            a.weights, a.repo, a.revision, "model.safetensors", weights, download=download
        )

    def load(
        self, *, device: torch.device, weights: Path | None = None, resize: str | None = None
    ) -> LoadedClip:
        """Find and load the weights (safetensors only) on ``device``; ``resize``: ``openai``
        (default), ``clean-fid`` or ``cmmd``."""
        import torch

        convention = CONVENTIONS[0] if resize is None else resize
        if convention not in CONVENTIONS:
            raise InputError(
                f"--resize {resize}: extractor {self.name} accepts {', '.join(CONVENTIONS)}"
            )
        _import_transformers()
        path = self.find_weights(weights)
        state = read_safetensors(path, self.architecture.weights.what)
        try:
            model = build_clip_model(state, self.architecture)
        except InputError as exc:
            raise InputError(f"{quote(path)}: {exc}") from None
        del state
        device = torch.device(device)
        return LoadedClip(
            model.to(device),
            architecture=self.architecture,
            device=device,
            convention=convention,
            weights_sha256=file_sha256(path),
            weights_path=path,
        )


@hookimpl
def geneval_register_extractors(register) -> None:
    """Register ``clip-vit-b32``, ``clip-vit-l14`` and ``clip-vit-l14-336``."""
    for architecture in ARCHITECTURES.values():
        register(ClipExtractor(architecture))
