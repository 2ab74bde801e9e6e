"""Metric ``clip_score``: how well images match their captions in CLIP space.

``CLIP-S = mean_i w · max(cos(E_I,i, E_C,i), 0)`` over image–caption pairs, with the image
embedding ``E_I`` and the caption's text embedding ``E_C`` of one CLIP model (Hessel et al.
2021). ``w = 100`` by default, torchmetrics' ``CLIPScore`` and the diffusers documentation's
scale; ``w = 2.5`` is Hessel et al.'s. :func:`clip_score` computes it from embeddings.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.clip_space import (
    check_clip_extractor,
    extractor_option,
    l2_normalised,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray

#: torchmetrics' default model, ``openai/clip-vit-large-patch14``.
DEFAULT_EXTRACTOR = "clip-vit-l14"
#: torchmetrics' and the diffusers documentation's scale (Hessel et al. use 2.5).
DEFAULT_W = 100.0
#: The input kind of the text embeddings of a source's captions.
CAPTION_FEATURES = "caption_features"
#: How to give captions, for the error of a run without them.
HOW_TO_CAPTION = (
    "give one caption per image: --prompts FILE (one prompt per line) for a text-to-image "
    "--model, an .npz with a 'captions' array beside 'images', or a folder with a sidecar "
    ".txt per image (a.png and a.txt)"
)


@dataclass(frozen=True)
class CLIPScoreResult:
    """The mean score over pairs, the spread of the per-pair scores, and the pair counts."""

    value: float
    std: float
    std_err: float
    n: int
    n_clamped: int


def clip_score(
    image_embeddings: ArrayLike,
    text_embeddings: ArrayLike,
    *,
    w: float = DEFAULT_W,
    device: torch.device | str | None = None,
) -> CLIPScoreResult:
    """CLIP score of paired image and caption embeddings (row i of each is pair i).

    ``sᵢ = w · max(cos(E_I,i, E_C,i), 0)`` with ``cos(a, b) = aᵀb / (‖a‖ ‖b‖)``, in float64;
    ``value = mean sᵢ``, ``std`` the sample standard deviation of the ``sᵢ`` (``ddof = 1``,
    0 for one pair) and ``std_err = std / √n``.

    Parameters
    ----------
    image_embeddings, text_embeddings
        Raw (unnormalised) CLIP embeddings (n, d) of the images and of their captions, by the
        same CLIP model's image and text towers.
    w
        The scale: 100 (torchmetrics, diffusers) or 2.5 (Hessel et al. 2021).
    device
        Where to compute; default the device of ``image_embeddings`` when it is a tensor.

    Returns
    -------
    CLIPScoreResult
        ``value``, ``std``, ``std_err``, ``n``, and ``n_clamped``, the pairs whose cosine was
        negative and counted as 0.

    Notes
    -----
    Hessel et al. clamp each pair's cosine at 0 (their ``clipscore.py``:
    ``w * np.clip(cos, 0, None)``, then the mean), as here. torchmetrics' ``CLIPScore``
    averages ``100 · cos`` over pairs and clamps the mean at 0 instead; the two agree when
    no pair has a negative cosine (``n_clamped == 0``, the rule for a trained CLIP model on
    real captions, whose cosines lie around 0.2 to 0.35).

    References
    ----------
    .. [1] J. Hessel, A. Holtzman, M. Forbes, R. Le Bras, Y. Choi, "CLIPScore: A
       Reference-free Evaluation Metric for Image Captioning", EMNLP 2021.
    .. [2] A. Radford et al., "Learning Transferable Visual Models From Natural Language
       Supervision", ICML 2021.
    """
    import torch

    if device is None:
        device = (
            image_embeddings.device
            if isinstance(image_embeddings, torch.Tensor)
            else torch.device("cpu")
        )
    device = torch.device(device)
    if not (w > 0 and w < float("inf")):
        raise InputError(f"clip_score: w must be a positive number, got {w}")
    images = l2_normalised(image_embeddings, what="clip_score: image embeddings", device=device)
    texts = l2_normalised(text_embeddings, what="clip_score: caption embeddings", device=device)
    if images.shape[0] != texts.shape[0]:
        raise InputError(
            f"clip_score: {images.shape[0]} images but {texts.shape[0]} captions; each image "
            "needs exactly one caption"
        )
    if images.shape[1] != texts.shape[1]:
        raise InputError(
            f"clip_score: image embeddings are {images.shape[1]}-d but caption embeddings "
            f"{texts.shape[1]}-d: both must come from one CLIP model"
        )
    cosine = (images * texts).sum(dim=1)
    scores = w * cosine.clamp_min(0.0)
    n = int(scores.shape[0])
    std = float(scores.std(correction=1)) if n > 1 else 0.0
    return CLIPScoreResult(
        value=float(scores.mean()),
        std=std,
        std_err=std / n**0.5,
        n=n,
        n_clamped=int((cosine < 0).sum()),
    )


def _needs(extractor: str) -> tuple[Need, ...]:
    """The sample images' embeddings and their captions' text embeddings, both by the CLIP
    ``extractor`` (required: neither ``--extractor`` nor a dataset's default replaces it)."""
    return (
        Need("features", "samples", extractor=extractor, extractor_required=True),
        Need(CAPTION_FEATURES, "samples", extractor=extractor, extractor_required=True),
    )


class CLIPScore:
    """The ``clip_score`` metric: :func:`clip_score` of the samples and their captions."""

    name = "clip_score"
    higher_is_better = True
    interpretation = (
        "mean over image–caption pairs of w · max(cosine of their CLIP embeddings, 0): how well "
        "the images match their prompts; w = 100 (torchmetrics) or 2.5 (Hessel et al.)"
    )
    options: Mapping[str, Option] = {
        "w": Option(
            DEFAULT_W,
            "the scale w: 100 as torchmetrics and the diffusers documentation, 2.5 as Hessel "
            "et al. 2021",
            low=0.0,
            low_exclusive=True,
        ),
        "extractor": extractor_option(DEFAULT_EXTRACTOR, "score the image–caption pairs"),
    }
    fields: Mapping[str, str] = {
        "std": "sample standard deviation of the per-pair scores",
        "std_err": "standard error of the mean score (std / √n)",
        "n": "number of image–caption pairs",
        "n_clamped": "pairs whose cosine was negative, counted as 0 (when 0, the value "
        "equals torchmetrics' CLIPScore at w = 100)",
        "model": "the CLIP model (extractor) whose image and text towers gave the embeddings",
        "scale": "the score's scale in words (w and whose convention it is)",
    }
    uncertainty = "std_err"
    min_samples = None
    feature_space = DEFAULT_EXTRACTOR  # torchmetrics' default openai/clip-vit-large-patch14

    def __init__(self) -> None:
        self.needs = _needs(DEFAULT_EXTRACTOR)

    def needs_for(self, options: Mapping[str, Any]) -> tuple[Need, ...]:
        """The needs of :func:`_needs` for the ``extractor`` option, which must be a CLIP
        extractor (:func:`~geneval_plugins.metrics.clip_space.check_clip_extractor`)."""
        return _needs(check_clip_extractor(self.name, options.get("extractor", DEFAULT_EXTRACTOR)))

    def compute(
        self,
        inputs: MetricInputs,
        *,
        w: float = DEFAULT_W,
        extractor: str = DEFAULT_EXTRACTOR,
    ) -> Mapping[str, Any]:
        """``{"value", "std", "std_err", "n", "n_clamped", "model", "scale"}`` from the
        extractor's raw image embeddings and its text embeddings of the captions."""
        images = inputs.features("samples")
        texts = inputs.caption_features("samples")
        if texts is None or texts.shape[0] == 0:
            raise InputError(f"clip_score: the samples have no captions; {HOW_TO_CAPTION}")
        if images.shape[0] != texts.shape[0]:
            raise InputError(
                f"clip_score: {images.shape[0]} sample images but {texts.shape[0]} captions; "
                "each image needs exactly one caption, in the images' order"
            )
        result = clip_score(images, texts, w=w, device=inputs.device)
        convention = {100.0: " (torchmetrics, diffusers)", 2.5: " (Hessel et al. 2021)"}
        return {
            "value": result.value,
            "std": result.std,
            "std_err": result.std_err,
            "n": result.n,
            "n_clamped": result.n_clamped,
            "model": extractor,
            "scale": f"w = {w:g}{convention.get(w, '')}",
        }


@hookimpl
def geneval_register_metrics(register) -> None:  # noqa: ANN001 - the host's callback
    register(CLIPScore())
