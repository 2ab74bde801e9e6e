"""Load a diffusers pipeline safely and sample it as a geneval model (``geneval[diffusers]``).

Loading (:func:`load_pipeline_model`) checks, before any weight is read:

* the folder's ``model_index.json`` names a pipeline class of diffusers, and every component
  a class of diffusers or transformers: nothing else is ever imported (no ``custom_pipeline``,
  no remote code; ``trust_remote_code`` stays false);
* every component with weights holds ``.safetensors``: one with only pickled weights
  (``.bin``, ``.pt``, ``.pth``, ``.ckpt``) is an :class:`InputError` naming the file, and the
  pipeline is then read with ``use_safetensors=True``.

A hub id is resolved by diffusers' own rules and cache (``HF_HUB_OFFLINE=1`` reads the cache
only); its ``model_index.json`` is fetched and checked first, then the snapshot with
safetensors weights only.

Sampling (:class:`DiffusersModel`): the pipeline is called with ``output_type="np"``, one
``torch.Generator`` per image, and the images (NHWC floats in [0, 1]) become NCHW. geneval then
quantises them to 8-bit levels, round(255·x)/255, which is what the pipeline's own PIL output
holds (diffusers' ``numpy_to_pil`` rounds 255·x the same way).
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import DiffusionPipeline

from geneval.plugin import InputError, Option, ProbabilityFlowSDE, quote
from geneval_plugins.models.diffusers_pipelines.schedulers import SCALED_INPUT, SCHEDULERS

#: Weight files that unpickle when loaded: never read.
PICKLED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
#: The libraries whose classes a pipeline's components may name.
LIBRARIES = ("diffusers", "transformers")
#: ``model.dtype`` (and ``--precision``) → the pipeline's dtype.
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
#: Pipelines whose images depend on the rest of their batch: ``ScoreSdeVePipeline``'s
#: corrector step size averages gradient and noise norms over the whole batch (score_sde's
#: own ``LangevinCorrector`` does the same). They are drawn with one generator per block, as
#: the bundled families are, so a sharded run still draws what one process draws.
BATCH_COUPLED = frozenset({"ScoreSdeVePipeline"})
#: Pipelines whose η > 0 would draw from torch's global random state (their scheduler step is
#: not given the generator): they offer no ``eta`` option.
UNSEEDED_ETA = frozenset({"LDMPipeline"})
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


# -- loading -------------------------------------------------------------------------------------


def load_pipeline_model(checkpoint: str, *, device: torch.device) -> DiffusersModel:
    """The pipeline at ``checkpoint`` (a ``save_pretrained`` folder or a hub id), checked as
    the module docstring says, as a :class:`DiffusersModel` on ``device``."""
    folder = pipeline_folder(checkpoint)
    check_weights(folder, check_index(folder, checkpoint))
    try:
        with quiet_diffusers():
            pipe = DiffusionPipeline.from_pretrained(
                str(folder), use_safetensors=True, trust_remote_code=False
            )
    except (OSError, ValueError, TypeError) as exc:
        raise InputError(f"--checkpoint {quote(checkpoint)}: {_first_line(exc)}") from None
    return diffusers_model(pipe, device=device, origin=checkpoint)


@contextmanager
def quiet_diffusers() -> Iterator[None]:
    """diffusers' log lines and progress bars off (geneval reports progress and problems
    itself), restored afterwards."""
    logging = diffusers.utils.logging
    verbosity = logging.get_verbosity()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        logging.enable_progress_bar()


def pipeline_folder(checkpoint: str) -> Path:
    """A local folder of the pipeline: ``checkpoint`` itself, or the hub snapshot diffusers
    resolves for the id (its ``model_index.json`` checked before any weight is fetched)."""
    path = Path(checkpoint).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(
                f"--checkpoint {quote(path)}: a diffusers pipeline is a folder written by "
                "save_pretrained (with model_index.json), or a hub id"
            )
        return path
    if not _HUB_ID.match(checkpoint):
        raise InputError(f"--checkpoint {quote(checkpoint)} is neither a folder nor a hub id")
    from huggingface_hub import hf_hub_download

    try:
        index = Path(hf_hub_download(checkpoint, "model_index.json"))
    except Exception as exc:  # offline without a cached copy, unknown id, network error
        raise InputError(
            f"--checkpoint {quote(checkpoint)}: cannot read its model_index.json from the "
            f"Hugging Face hub or cache ({type(exc).__name__}: {_first_line(exc)}); offline, "
            "set HF_HUB_OFFLINE=1 with the pipeline in the cache (HF_HOME)"
        ) from None
    check_index(index.parent, checkpoint)
    try:
        return Path(DiffusionPipeline.download(checkpoint, use_safetensors=True))
    except (OSError, ValueError) as exc:
        raise InputError(
            f"--checkpoint {quote(checkpoint)}: {_first_line(exc)} (geneval loads safetensors "
            "weights only)"
        ) from None


def check_index(folder: Path, checkpoint: str) -> dict[str, Any]:
    """The pipeline's ``model_index.json``, once its pipeline class is one of diffusers and
    each component's class one of :data:`LIBRARIES`; anything else is an :class:`InputError`."""
    path = folder / "model_index.json"
    if not path.is_file():
        raise InputError(
            f"--checkpoint {quote(checkpoint)}: not a diffusers pipeline (no model_index.json)"
        )
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{quote(path)}: not JSON ({_first_line(exc)})") from None
    name = index.get("_class_name") if isinstance(index, dict) else None
    pipeline_class = getattr(diffusers, name, None) if isinstance(name, str) else None
    if not (isinstance(pipeline_class, type) and issubclass(pipeline_class, DiffusionPipeline)):
        raise InputError(
            f"{quote(path)}: _class_name {name!r} is not a diffusers pipeline (geneval loads no "
            "custom pipeline and no remote code)"
        )
    for key, value in index.items():
        if key.startswith("_") or not isinstance(value, list | tuple):
            continue
        if len(value) != 2:
            raise InputError(f"{quote(path)}: component {key!r} is not [library, class]")
        library, class_name = value
        if library is None and class_name is None:
            continue
        if library not in LIBRARIES or not isinstance(class_name, str):
            raise InputError(
                f"{quote(path)}: component {key!r} names {library}.{class_name}; geneval builds "
                f"only classes of {' and '.join(LIBRARIES)} (no custom or remote code)"
            )
        if not hasattr(importlib.import_module(library), class_name):
            raise InputError(
                f"{quote(path)}: component {key!r}: {library} has no class {class_name}"
            )
    return index


def check_weights(folder: Path, index: Mapping[str, Any]) -> None:
    """Refuse a component whose folder holds pickled weights and no safetensors, naming the
    file (see the module docstring)."""
    for key, value in index.items():
        sub = folder / key
        if key.startswith("_") or not isinstance(value, list | tuple) or not sub.is_dir():
            continue
        files = sorted(p for p in sub.iterdir() if p.is_file())
        if any(p.suffix == ".safetensors" for p in files):
            continue
        pickled = [p for p in files if p.suffix in PICKLED_SUFFIXES]
        if pickled:
            raise InputError(
                f"{quote(pickled[0])}: pickled weights, which geneval never loads; save the "
                "pipeline with save_pretrained(..., safe_serialization=True)"
            )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# -- sampling ------------------------------------------------------------------------------------


def _image_shape(pipe: Any) -> tuple[int, int, int] | None:
    """(C, H, W) of the pipeline's images, from its denoiser's sample size and its
    autoencoder's scale; ``None`` when the configs do not say (known after the first draw)."""
    denoiser = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    autoencoder = getattr(pipe, "vae", None) or getattr(pipe, "vqvae", None)
    try:
        size = denoiser.config.sample_size
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        if autoencoder is None:
            return (int(denoiser.config.in_channels), height, width)
        scale = 2 ** (len(autoencoder.config.block_out_channels) - 1)
        return (int(autoencoder.config.out_channels), height * scale, width * scale)
    except (AttributeError, TypeError, IndexError):
        return None


class DiffusersModel:
    """A diffusers pipeline as a :class:`~geneval.plugin.GenerativeModel` (see the module
    docstring and :mod:`~geneval_plugins.models.diffusers_pipelines.family`).

    It takes one generator per image (``per_sample_generators``), except the pipelines of
    :data:`BATCH_COUPLED`; a pipeline whose ``__call__`` takes ``class_labels`` is
    class-conditional (``num_classes``: its named classes, else the transformer's
    ``num_embeds_ada_norm``), one that takes ``prompt`` draws from text (``takes_prompts``).
    ``sample_options`` are ``dtype`` and those of ``guidance_scale``, ``eta`` and
    ``negative_prompt`` the pipeline takes, with the pipeline's own defaults.
    """

    def __init__(self, pipe: Any, *, device: torch.device, origin: str) -> None:
        self.per_sample_generators = type(pipe).__name__ not in BATCH_COUPLED
        self.pipe = pipe.to(device)
        self.pipe.set_progress_bar_config(disable=True)
        self.device = device
        self.origin = origin
        self._own_scheduler = pipe.scheduler
        self._schedulers: dict[str, Any] = {}
        self._dtype = next((k for k, v in DTYPES.items() if v == pipe.dtype), str(pipe.dtype))
        self._parameters = inspect.signature(type(pipe).__call__).parameters
        try:
            self._code = inspect.getsource(type(pipe))
        except (OSError, TypeError):
            self._code = ""
        options: dict[str, Option] = {
            "dtype": Option(
                "fp32", "dtype the pipeline runs in (fp16: CUDA only)", choices=tuple(DTYPES)
            )
        }
        guidance = self._parameters.get("guidance_scale")
        if guidance is not None:
            options["guidance_scale"] = Option(
                float(guidance.default), "classifier-free guidance scale (1: none)", low=0.0
            )
        if "eta" in self._parameters and type(pipe).__name__ not in UNSEEDED_ETA:
            options["eta"] = Option(0.0, "DDIM η (0: deterministic)", low=0.0)
        if "negative_prompt" in self._parameters:
            options["negative_prompt"] = Option("", "negative prompt of the guidance ('': none)")
        self.sample_options = options
        if "class_labels" in self._parameters:
            # the named classes (DiT's id2label: 1000 for ImageNet); the label table may hold
            # more rows (DiTPipeline uses row 1000 as the unconditional one)
            named = set(getattr(pipe, "labels", {}).values())
            table = int(pipe.transformer.config.num_embeds_ada_norm)
            self.num_classes = len(named) if named else table
        if "prompt" in self._parameters:
            self.takes_prompts = True
        self.image_shape = _image_shape(pipe)
        self.config: dict[str, Any] = {
            "family": "diffusers",
            "default_sampler": "pipeline",
            "report": self._report(self._own_scheduler),
        }

    def _report(self, scheduler: Any) -> dict[str, Any]:
        report = {
            "pipeline": type(self.pipe).__name__,
            "checkpoint": self.origin,
            "scheduler": type(scheduler).__name__,
            "scheduler_config": dict(scheduler.config),
            "dtype": self._dtype,
        }
        if "safety_checker" in getattr(self.pipe, "components", {}):
            present = self.pipe.components["safety_checker"] is not None
            report["safety_checker"] = "on" if present else "off"
        return report

    def scheduler(self, sampler: str | None) -> Any:
        """The scheduler of ``sampler`` (``None`` or ``pipeline``: the pipeline's own), built
        once from the pipeline's scheduler config; a swap the pipeline cannot run is a
        :class:`ValueError` (see :mod:`~geneval_plugins.models.diffusers_pipelines.schedulers`)."""
        if sampler is None or sampler == "pipeline":
            return self._own_scheduler
        if sampler not in SCHEDULERS:
            raise ValueError(
                f"unknown sampler {sampler!r}: choose from pipeline, {', '.join(SCHEDULERS)}"
            )
        name = type(self.pipe).__name__
        if "scheduler.step(" not in self._code:
            raise ValueError(
                f"{name} drives its own {type(self._own_scheduler).__name__}: it takes no "
                "other sampler"
            )
        if sampler in SCALED_INPUT and not (
            "scale_model_input" in self._code and "init_noise_sigma" in self._code
        ):
            raise ValueError(
                f"sampler {sampler} needs a pipeline that scales its input by the scheduler's σ, "
                f"which {name} does not (choose ddpm, ddim, pndm, dpm-solver++, unipc or deis)"
            )
        if sampler not in self._schedulers:
            class_name, extra = SCHEDULERS[sampler]
            scheduler_class = getattr(diffusers, class_name)
            self._schedulers[sampler] = scheduler_class.from_config(
                self._own_scheduler.config, **extra
            )
        return self._schedulers[sampler]

    def sample(
        self,
        n: int,
        *,
        batch_size: int,
        generator: torch.Generator | Sequence[torch.Generator],
        sampler: str | None = None,
        steps: int | None = None,
        labels: torch.Tensor | None = None,
        prompts: Sequence[str] | None = None,
        **options: Any,
    ) -> torch.Tensor:
        """``n`` images, float32 NCHW in [0, 1] on ``device``, from one pipeline call
        (``batch_size`` is the caller's block size: one call per block)."""
        dtype = str(options.pop("dtype", "fp32"))
        if dtype == "fp16" and self.device.type != "cuda":
            raise ValueError("dtype fp16 (--precision fp16) needs CUDA; use bf16 or fp32")
        if dtype != self._dtype:
            with quiet_diffusers():
                self.pipe.to(dtype=DTYPES[dtype])
            self._dtype = dtype
        scheduler = self.scheduler(sampler)
        self.pipe.scheduler = scheduler
        self.config["report"] = self._report(scheduler)
        kwargs: dict[str, Any] = {"output_type": "np", "generator": generator}
        if isinstance(generator, Sequence):
            kwargs["generator"] = list(generator)
        if "batch_size" in self._parameters:
            kwargs["batch_size"] = n
        if steps is not None:
            if "num_inference_steps" not in self._parameters:
                raise ValueError(f"{type(self.pipe).__name__} takes no --steps")
            kwargs["num_inference_steps"] = int(steps)
        if labels is not None:
            kwargs["class_labels"] = [int(v) for v in labels.tolist()]
        if prompts is not None:
            kwargs["prompt"] = list(prompts)
        negative = options.pop("negative_prompt", "")
        if negative:
            kwargs["negative_prompt"] = [str(negative)] * n
        kwargs.update(options)
        try:
            with torch.inference_mode():
                out = self.pipe(**kwargs)
        except TypeError as exc:  # the pipeline's own .numpy() of a bfloat16 tensor
            if self._dtype != "bf16" or "BFloat16" not in str(exc):
                raise
            raise ValueError(
                f"{type(self.pipe).__name__} cannot return bfloat16 images (its own numpy "
                "conversion refuses them): use fp16 on CUDA, or fp32"
            ) from None
        images = np.asarray(out.images, dtype=np.float32)
        if images.ndim != 4 or images.shape[0] != n:
            raise RuntimeError(f"{type(self.pipe).__name__} returned images of {images.shape}")
        tensor = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().clamp_(0.0, 1.0)
        shape = (int(tensor.shape[1]), int(tensor.shape[2]), int(tensor.shape[3]))
        self.image_shape = shape
        return tensor.to(self.device)


# -- the variational bound of pixel-space ε-prediction DDPMs -------------------------------------


def offers_elbo(pipe: Any) -> bool:
    """Whether the pipeline is a pixel-space DDPM whose bound geneval computes: an unconditional
    ``UNet2DModel`` predicting ε (``prediction_type="epsilon"``, as many output channels as
    input ones: no learned variance), no autoencoder, and a scheduler with a β schedule
    (``betas``) of as many steps as it was trained with."""
    unet = getattr(pipe, "unet", None)
    scheduler = getattr(pipe, "scheduler", None)
    if unet is None or type(unet).__name__ != "UNet2DModel" or scheduler is None:
        return False
    if getattr(pipe, "vae", None) is not None or getattr(pipe, "vqvae", None) is not None:
        return False
    config = scheduler.config
    betas = getattr(scheduler, "betas", None)
    return (
        config.get("prediction_type", "epsilon") == "epsilon"
        and isinstance(betas, torch.Tensor)
        and betas.ndim == 1
        and betas.numel() == int(config.get("num_train_timesteps", -1))
        and int(unet.config.out_channels) == int(unet.config.in_channels)
    )


class DiffusersDDPMModel(DiffusersModel):
    """A pixel-space ε-prediction DDPM pipeline (:func:`offers_elbo`) with the variational bound
    of the bundled ``ddpm`` (capability ``elbo``, for the ``nll`` metric): the same code,
    :func:`~geneval_plugins.models.gaussian_diffusion.image_elbo`, on the
    pipeline's trained β schedule (its own scheduler's ``betas``, whatever ``--sampler`` swaps
    in) and its UNet; and, for a linear schedule, the probability-flow ODE of its VP SDE
    (capability ``probability_flow``, for ``ode_ll``), as the bundled ``ddpm`` offers it.

    Ho et al. (2020), eq. 5: L_T + Σ_{t=2}^T KL(q(x_{t−1}|x_t, x_0) ‖ p_θ(x_{t−1}|x_t)) + L_0
    with the discretised Gaussian decoder of eq. 13, data x ∈ [0, 1] mapped to 2x − 1 as the
    pipeline's output (x/2 + 1/2) implies. diffusers counts timesteps 0..T−1 where the bound
    counts 1..T: the UNet is called with t − 1.
    """

    likelihood_space = "discrete-8bit"

    def __init__(self, pipe: Any, *, device: torch.device, origin: str) -> None:
        super().__init__(pipe, device=device, origin=origin)
        from geneval_plugins.models.elbo_options import ELBO_OPTIONS
        from geneval_plugins.models.gaussian_diffusion import GaussianDiffusion

        self.elbo_options = ELBO_OPTIONS
        #: the trained schedule as the pipeline made it (float32 in diffusers)
        self.trained_betas = pipe.scheduler.betas.detach().cpu()
        self.diffusion = GaussianDiffusion(self.trained_betas.to(torch.float64))

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        unet = self.pipe.unet
        return unet(x.to(unet.dtype), (t - 1).to(x.device)).sample.to(x.dtype)

    @cached_property
    def probability_flow(self) -> ProbabilityFlowSDE | None:
        """The VP SDE of the pipeline's trained β schedule when it is linear
        (:func:`~geneval_plugins.models.gaussian_diffusion.linear_vp_sde`), else ``None``."""
        from geneval_plugins.models.gaussian_diffusion import linear_vp_sde

        return linear_vp_sde(self.trained_betas)

    def flow_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s_θ(x, t) = −ε_θ(x, (T − 1)·t)/√(1 − α(t)²) for x in [−1, 1] and continuous t (N,):
        the UNet counts timesteps 0..T − 1, so t ∈ [0, 1] maps to (T − 1)·t, as score_sde's
        ``get_score_fn`` labels the DDPM checkpoints it ships; differentiable in x."""
        from geneval_plugins.models.gaussian_diffusion import vp_score

        sde = self.probability_flow
        if sde is None:
            raise InputError("diffusers: this pipeline's schedule has no probability-flow SDE")
        unet = self.pipe.unet
        label = t.to(x.dtype) * (self.diffusion.num_timesteps - 1)
        eps = unet(x.to(unet.dtype), label.to(x.device)).sample.to(x.dtype)
        return vp_score(eps, t, sde)

    @torch.no_grad()
    def elbo(
        self,
        x: torch.Tensor,
        *,
        generator: torch.Generator,
        timesteps: int = 100,
        variance: str = "fixedsmall",
        bins: int = 256,
    ) -> torch.Tensor:
        """ELBO in nats of each image ``x`` in [0, 1] (see the class docstring); ``timesteps``
        KL strata (0: all T − 1 terms), ``variance`` σ_t² = β̃_t or β_t, ``bins`` decoder
        levels."""
        from geneval_plugins.models.gaussian_diffusion import image_elbo

        if x.ndim != 4 or (self.image_shape and tuple(x.shape[1:]) != self.image_shape):
            raise InputError(
                f"diffusers elbo: images of shape {tuple(x.shape)} do not match the model's "
                f"{self.image_shape}"
            )
        return image_elbo(
            self.diffusion,
            self._eps,
            x,
            generator,
            device=self.device,
            variance=variance,
            timesteps=timesteps,
            bins=bins,
        )


# -- the probability flow of score-predicting VE pipelines (NCSN++) ----------------------------


def offers_ve_score(pipe: Any) -> bool:
    """Whether the pipeline is a pixel-space VE score model whose probability flow geneval
    solves: a ``UNet2DModel`` with the Fourier noise-level embedding (NCSN++: it is called with
    σ and returns the score, its output divided by σ) driven by a ``ScoreSdeVeScheduler``,
    with no autoencoder."""
    unet = getattr(pipe, "unet", None)
    scheduler = getattr(pipe, "scheduler", None)
    if unet is None or type(unet).__name__ != "UNet2DModel" or scheduler is None:
        return False
    if getattr(pipe, "vae", None) is not None or getattr(pipe, "vqvae", None) is not None:
        return False
    return (
        type(scheduler).__name__ == "ScoreSdeVeScheduler"
        and unet.config.get("time_embedding_type") == "fourier"
        and int(unet.config.out_channels) == int(unet.config.in_channels)
    )


class DiffusersScoreVEModel(DiffusersModel):
    """A pixel-space NCSN++ pipeline (:func:`offers_ve_score`) with the probability-flow ODE of
    its VE SDE (capability ``probability_flow``, for ``ode_ll``): σ(t) = σ_min(σ_max/σ_min)^t
    from its scheduler's ``sigma_min`` and ``sigma_max`` (Song et al. 2021, App. B), data in
    [0, 1] as the pipeline outputs them, and the score s_θ(x, σ(t)) = ``unet(x, σ(t))``, as
    ``ScoreSdeVeScheduler`` drives it."""

    def __init__(self, pipe: Any, *, device: torch.device, origin: str) -> None:
        super().__init__(pipe, device=device, origin=origin)
        config = pipe.scheduler.config
        self.probability_flow = ProbabilityFlowSDE(
            "ve",
            sigma_min=float(config["sigma_min"]),
            sigma_max=float(config["sigma_max"]),
            eps=1e-5,
            t_end=1.0,
        )

    def flow_score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """s_θ(x, σ(t)) for x (N, C, H, W) in [0, 1] space and continuous t (N,); differentiable
        in x."""
        sde = self.probability_flow
        sigma = sde.marginal_std(t.to(x.dtype))
        unet = self.pipe.unet
        return unet(x.to(unet.dtype), sigma.to(x.device)).sample.to(x.dtype)


def diffusers_model(pipe: Any, *, device: torch.device, origin: str) -> DiffusersModel:
    """The geneval model of ``pipe``: a :class:`DiffusersDDPMModel` when it offers the bound
    (:func:`offers_elbo`), a :class:`DiffusersScoreVEModel` for an NCSN++ pipeline
    (:func:`offers_ve_score`), else a :class:`DiffusersModel`."""
    if offers_elbo(pipe):
        kind: type[DiffusersModel] = DiffusersDDPMModel
    elif offers_ve_score(pipe):
        kind = DiffusersScoreVEModel
    else:
        kind = DiffusersModel
    return kind(pipe, device=device, origin=origin)
