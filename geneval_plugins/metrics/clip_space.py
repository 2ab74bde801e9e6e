"""What the CLIP-space metrics (``cmmd``, ``clip_score``) share: the ``extractor`` option that
must name a CLIP extractor, and L2 normalisation of embeddings.

The rule for "a CLIP extractor" (:func:`check_clip_extractor`): an extractor whose name begins
with ``clip-`` (the bundled ``clip-vit-b32``, ``clip-vit-l14``, ``clip-vit-l14-336``; a
third-party CLIP-family extractor takes a name of that form). It is decided from the option
alone, before any plugin loads, so a wrong choice is refused at once. ``clip_score`` also
needs the text tower, which the run checks (``text_encoder = True``, docs/contracts.md §9).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geneval.plugin import InputError, Option

if TYPE_CHECKING:
    import numpy as np
    import torch

#: The prefix that marks an extractor as a CLIP model (its image and text towers).
CLIP_PREFIX = "clip-"


def extractor_option(default: str, purpose: str) -> Option:
    """The ``extractor`` option of a CLIP-space metric: a CLIP extractor's name."""
    return Option(
        default,
        f"the CLIP extractor whose embeddings {purpose} (a name starting {CLIP_PREFIX!r})",
    )


def is_clip_extractor(name: str) -> bool:
    """The rule of the module docstring: ``name`` starts ``clip-``."""
    return name.startswith(CLIP_PREFIX)


def check_clip_extractor(metric: str, name: str) -> str:
    """``name`` when it names a CLIP extractor (:func:`is_clip_extractor`), else an
    :class:`InputError` naming the metric and the extractor."""
    if not is_clip_extractor(name):
        raise InputError(
            f"{metric}: extractor {name!r} is not a CLIP extractor; {metric} is defined on CLIP "
            f"embeddings (--opt {metric}.extractor=clip-vit-b32|clip-vit-l14|clip-vit-l14-336)"
        )
    return name


def l2_normalised(x: torch.Tensor | np.ndarray, *, what: str, device: torch.device) -> torch.Tensor:
    """Rows of ``x`` (n, d) divided by their Euclidean norm, ``x / ‖x‖₂``, in float64 on
    ``device``; an :class:`InputError` naming ``what`` for a wrong shape, non-finite values
    or a zero row (whose direction is undefined)."""
    import torch

    t = torch.as_tensor(x).to(device=device, dtype=torch.float64)
    if t.ndim != 2 or t.shape[0] < 1 or t.shape[1] < 1:
        raise InputError(f"{what} must be (n, d) embeddings, got shape {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise InputError(f"{what} contain non-finite values")
    norms = torch.linalg.vector_norm(t, dim=1, keepdim=True)
    if bool((norms == 0).any()):
        row = int(torch.nonzero(norms[:, 0] == 0)[0, 0])
        raise InputError(f"{what}: row {row} is the zero vector, which has no direction")
    return t / norms
