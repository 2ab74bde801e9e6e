"""Model family ``diffusers``: any Hugging Face diffusers pipeline as a generator.

``--model diffusers --checkpoint PATH_OR_HUB_ID`` (or ``--model diffusers:HUB_ID``) loads a
folder written by ``save_pretrained`` or a hub repository, which diffusers resolves through its
own cache and download rules (offline: ``HF_HUB_OFFLINE=1`` with a filled cache). The Python
API also adopts a pipeline object given as the samples (``evaluate(samples=pipe, ...)``).

Pipelines: unconditional ``DDPMPipeline``, ``DDIMPipeline``, ``PNDMPipeline``,
``ScoreSdeVePipeline`` (NCSN++, Song et al. 2021) and ``LDMPipeline`` (Rombach et al. 2022);
class-conditional ``DiTPipeline`` (Peebles & Xie 2023); text-to-image pipelines
(``StableDiffusionPipeline`` and those that take a ``prompt``).

Sampling: the pipeline's own scheduler is the default sampler (``pipeline``); ``--sampler``
swaps in another scheduler (:mod:`~geneval_plugins.models.diffusers_pipelines.schedulers`);
``--steps`` is ``num_inference_steps``. Each image gets its own generator, so its pixels depend
on the run's seed and its index only. ``--opt model.guidance_scale=…``, ``model.eta``,
``model.negative_prompt`` and ``model.dtype`` reach the pipeline where its ``__call__`` takes
them; ``--precision fp16|bf16`` runs it in that dtype (fp16 on CUDA only).

Loading is safe: weights load from safetensors only (``use_safetensors=True``); a component
with only pickled weights (``.bin``, ``.pt``, ``.ckpt``) is an input error naming the file;
no ``custom_pipeline``, no remote code, and only pipeline and component classes of diffusers
and transformers are built.

This module imports neither torch nor diffusers; the implementation is
:mod:`~geneval_plugins.models.diffusers_pipelines.pipeline_model` (``geneval[diffusers]``).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    ModelFamily,
    SupportsPerSampleGenerators,
    SupportsSampleOptions,
    hookimpl,
)
from geneval_plugins.models.sampler_names import SAMPLER_NAMES

if TYPE_CHECKING:
    import torch

    from geneval.plugin import GenerativeModel

NAME = "diffusers"


def _implementation() -> Any:
    try:
        from geneval_plugins.models.diffusers_pipelines import pipeline_model
    except ImportError as exc:
        missing = exc.name or "diffusers"
        raise InputError(
            f"model {NAME} needs {missing}: pip install 'diffusers>=0.30' 'transformers>=4.40' "
            "(the extra geneval[diffusers]: pip install '.[diffusers]' in the source folder)"
        ) from None
    return pipeline_model


class DiffusersFamily(ModelFamily):
    """Hugging Face diffusers pipelines (see the module docstring)."""

    name = NAME
    dataset = ""  # no bundled checkpoint: give --checkpoint and --reference
    samplers = SAMPLER_NAMES[NAME]
    capabilities = (SupportsPerSampleGenerators, SupportsSampleOptions)

    def load(self, checkpoint: Path | None, *, device: torch.device) -> GenerativeModel:
        """The pipeline at ``checkpoint`` (a ``save_pretrained`` folder or a hub id)."""
        if checkpoint is None:
            raise InputError(
                f"model {NAME} has no bundled checkpoint: give --checkpoint FOLDER_OR_HUB_ID "
                f"(or --model {NAME}:HUB_ID)"
            )
        return _implementation().load_pipeline_model(str(checkpoint), device=device)

    def adopt(self, obj: Any, *, device: torch.device) -> GenerativeModel | None:
        """A diffusers pipeline object as a model; anything else is not this family's."""
        module = type(obj).__module__ or ""
        if not module.startswith("diffusers.") or not hasattr(obj, "scheduler"):
            return None
        return _implementation().diffusers_model(obj, device=device, origin="object")


@hookimpl
def geneval_register_models(register: Any) -> None:
    """Register the ``diffusers`` family (neither torch nor diffusers is imported)."""
    register(DiffusersFamily())
