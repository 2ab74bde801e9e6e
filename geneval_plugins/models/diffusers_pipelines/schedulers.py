"""The diffusers schedulers ``--sampler`` swaps into a pipeline, without torch or diffusers.

``pipeline`` keeps the pipeline's own scheduler; every other name is a diffusers scheduler
class built with ``from_config(pipeline.scheduler.config, **extra)``, so it inherits the
trained β schedule, the number of training steps and the prediction type.

A scheduler whose ``init_noise_sigma`` differs from 1 and whose ``scale_model_input`` is not
the identity (the Euler, Heun and LMS family, Karras et al. 2022's σ parameterisation) is right
only inside a pipeline that applies both: :data:`SCALED_INPUT` marks those, and the model
refuses them in a pipeline whose code applies neither (``DDPMPipeline``, ``DDIMPipeline``,
``PNDMPipeline``, ``DiTPipeline``), rather than sample from a wrong distribution.
"""

from __future__ import annotations

from geneval_plugins.models.sampler_names import SAMPLER_NAMES

#: sampler name → (diffusers scheduler class, extra ``from_config`` settings)
SCHEDULERS: dict[str, tuple[str, dict[str, object]]] = {
    # Ho et al. 2020
    "ddpm": ("DDPMScheduler", {}),
    # Song, Meng & Ermon 2021
    "ddim": ("DDIMScheduler", {}),
    # Liu et al. 2022, pseudo numerical methods
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),
    # Lu et al. 2022, DPM-Solver++ (2M)
    "dpm-solver++": ("DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}),
    # Zhao et al. 2023
    "unipc": ("UniPCMultistepScheduler", {}),
    # Zhang & Chen 2023
    "deis": ("DEISMultistepScheduler", {}),
    # Karras et al. 2022, Euler and Heun steps in σ; LMS
    "euler": ("EulerDiscreteScheduler", {}),
    "euler-ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "lms": ("LMSDiscreteScheduler", {}),
}
#: The schedulers that need the pipeline to scale its input (see the module docstring).
SCALED_INPUT = frozenset({"euler", "euler-ancestral", "heun", "lms"})

if ("pipeline", *SCHEDULERS) != SAMPLER_NAMES["diffusers"]:
    raise RuntimeError(
        f"diffusers schedulers {tuple(SCHEDULERS)} differ from SAMPLER_NAMES['diffusers']"
    )
