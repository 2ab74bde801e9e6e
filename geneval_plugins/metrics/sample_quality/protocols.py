"""The ``protocol`` option of ``is``, ``precision`` and ``recall``: whose arithmetic to follow.

``geneval`` (default)
    geneval's own conventions (``docs/contracts.md`` §7): the Inception Score over 10 parts
    after a seeded shuffle; precision and recall on VGG-16 features, decided as exact
    arithmetic decides them.
``adm``
    the ADM evaluator of Dhariwal & Nichol 2021 (``openai/guided-diffusion``,
    ``evaluations/evaluator.py``), which the class-conditional ImageNet papers (ADM, DiT, SiT,
    REPA, VAR, MAR) report: the Inception Score over consecutive parts of
    :data:`ADM_SPLIT_SIZE` samples in their order, and precision/recall of its
    ``ManifoldEstimator`` (k = 3, squared distances in float16 with a float32 fallback) on the
    FID Inception's pool features (:data:`ADM_EXTRACTOR`), which this protocol prefers: the
    extractor rule still lets ``--extractor``, the reference dataset's extractor or a
    statistics file's choose another, and a features or logits array serves as given.

The ADM evaluator's score reads ``softmax(pool_3 · W)`` with ``W`` the weight of the graph's
``softmax/logits/MatMul`` (2048 × 1008, no bias, all 1008 classes kept): the
``logits_unbiased`` output of inception-v3-fid, whose ``fc.weight`` is that ``W`` transposed.
Its arithmetic is float32 (the TF softmax, numpy's float32 logs and means); geneval's is
float64, which differs from it by about 1e-7 relative.

References
----------
.. [1] P. Dhariwal, A. Nichol, "Diffusion Models Beat GANs on Image Synthesis", NeurIPS 2021,
   and its evaluation code ``guided-diffusion/evaluations/evaluator.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from geneval.plugin import Need, Option

#: The accepted values of the ``protocol`` option; the first is the default.
PROTOCOL_CHOICES = ("geneval", "adm")
#: Samples per part of the ADM evaluator's Inception Score (``split_size=5000``).
ADM_SPLIT_SIZE = 5000
#: The extractor whose outputs the ADM evaluator reads: the 2015-12-05 Inception graph
#: (``pool_3`` for precision/recall, ``softmax/logits/MatMul`` without bias for the score).
ADM_EXTRACTOR = "inception-v3-fid"


def protocol_option(what: str) -> Option:
    """The ``protocol`` option, its help naming ``what`` the ADM protocol changes."""
    return Option(
        PROTOCOL_CHOICES[0],
        f"geneval (docs/contracts.md §7) or adm (the ADM evaluator of guided-diffusion: {what})",
        choices=PROTOCOL_CHOICES,
    )


def protocol_needs(needs: tuple[Need, ...], options: Mapping[str, Any]) -> tuple[Need, ...]:
    """``needs`` as declared, or under ``protocol=adm`` the same kinds and sources with
    :data:`ADM_EXTRACTOR` as the preferred extractor (not required: a features or logits
    array, ``--extractor`` or the reference's extractor still serve, by the extractor rule)."""
    if options.get("protocol") != "adm":
        return tuple(needs)
    return tuple(Need(need.kind, need.source, extractor=ADM_EXTRACTOR) for need in needs)
