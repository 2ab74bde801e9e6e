"""Model family ``ncsn``: noise-conditional score networks (Song & Ermon 2019, 2020).

A :class:`~geneval_plugins.models.unet.ConditionalUNet` f(x, c) becomes the score model

    s_θ(x, σ) = f(x, c(σ)) / σ,   c(σ) = 999 · (log σ − log σ_L) / (log σ_1 − log σ_L),

i.e. the NCSNv2 output scaling (Song & Ermon 2020, technique 3) with the network conditioned on
log σ mapped onto the timestep range [0, 999] its sinusoidal embedding is built for. It is
trained by denoising score matching with λ(σ) = σ² (:mod:`~geneval_plugins.models.score_matching`)
over geometric levels σ_1 > … > σ_L: σ_1 is the largest pairwise distance of the training data
(technique 1) and, unless given, L follows technique 2. Sampling uses the EMA weights
(technique 5) and the samplers of :mod:`~geneval_plugins.models.ncsn_samplers`.

Images stay in ``[0, 1]`` (the data space of Song & Ermon 2019); samples are clipped to it.
Checkpoints (see :mod:`geneval.checkpoint`) hold ``ema.*`` and, unless trained with
``save_training_state=false``, ``net.*``, ``opt.*`` and ``rng.*`` for an exact resume. The
bundled ``ncsn-digits.safetensors`` holds the EMA weights only.

References
----------
.. [1] Y. Song, S. Ermon, "Generative Modeling by Estimating Gradients of the Data
   Distribution", NeurIPS 2019.
.. [2] Y. Song, S. Ermon, "Improved Techniques for Training Score-Based Generative Models",
   NeurIPS 2020.
.. [3] Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential
   Equations", ICLR 2021.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geneval.api import ImageSet
from geneval.capabilities import SupportsScore
from geneval.checkpoint import load_checkpoint, load_weights, prefixed, save_checkpoint, unprefixed
from geneval.errors import InputError
from geneval.hookspecs import hookimpl
from geneval.io import check_writable
from geneval.options import Option
from geneval.progress import progress_bar
from geneval.training import (
    ExponentialMovingAverage,
    merge_train_options,
    minibatches,
    sample_in_batches,
    total_training_steps,
)
from geneval_plugins.models.ncsn_samplers import (
    SAMPLERS,
    STEPS_OPTION,
    build_sampler,
    geometric_sigmas,
    ncsnv2_step_size,
)
from geneval_plugins.models.score_matching import denoising_score_matching_loss
from geneval_plugins.models.unet import ConditionalUNet

NAME = "ncsn"
BUNDLED_CHECKPOINT = "ncsn-digits.safetensors"
#: Training steps when ``train(steps=None)``.
DEFAULT_STEPS = 10000
#: Largest value of the network's conditioning input c(σ) (reached at σ_1).
CONDITION_RANGE = 999.0

#: Every training option with its default (typed ``--opt key=value`` of ``geneval train``).
TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 1e-3,
    "batch_size": 128,
    "warmup": 200,
    "grad_clip": 1.0,
    "ema_decay": 0.999,
    "base_channels": 16,
    "channel_mults": "1,2,2",
    "embedding_dim": 32,
    "sigma_max": 0.0,  # 0: the largest pairwise distance of the training data (technique 1)
    "sigma_min": 0.01,
    "num_levels": 0,  # 0: from technique 2 for the data dimension
    "sampler": "annealed-langevin",
    "langevin_steps": 5,  # T, steps per level of annealed Langevin
    "langevin_eps": 0.0,  # 0: ε from technique 4 for T and the level ratio
    "pc_snr": 0.16,
    "pc_corrector_steps": 2,
    "checkpoint_every": 1000,
    "save_training_state": True,
}

#: Options fixed at the start of a run: a resumed run may not change them.
_FIXED_KEYS = (
    "base_channels", "channel_mults", "embedding_dim", "sigma_max", "sigma_min", "num_levels",
)


def max_pairwise_distance(x: torch.Tensor, chunk: int = 2048) -> float:
    """max_{i,j} ‖x_i − x_j‖₂ over the rows of ``x`` flattened (NCSNv2 technique 1), in float64."""
    flat = x.flatten(1).to(torch.float64)
    best = 0.0
    for start in range(0, flat.shape[0], chunk):
        best = max(best, float(torch.cdist(flat[start : start + chunk], flat).max()))
    return best


def level_ratio_for_dimension(dim: int) -> float:
    """γ = σ_{i−1}/σ_i solving Φ(√(2D)(γ−1) + 3γ) − Φ(√(2D)(γ−1) − 3γ) = ½ (NCSNv2 technique 2).

    Neighbouring perturbed distributions of D-dimensional data then overlap enough for
    annealed Langevin dynamics to pass from one to the next (Song & Ermon 2020, §3.2).
    """

    from scipy.optimize import brentq
    from scipy.special import ndtr

    def overlap(gamma: float) -> float:
        a = math.sqrt(2 * dim) * (gamma - 1)
        return float(ndtr(a + 3 * gamma) - ndtr(a - 3 * gamma)) - 0.5

    return float(brentq(overlap, 1.0 + 1e-9, 100.0))


def num_levels_for(sigma_max: float, sigma_min: float, dim: int) -> int:
    """L = ⌈1 + log(σ_1/σ_L)/log γ⌉ with γ of :func:`level_ratio_for_dimension` (technique 2)."""
    gamma = level_ratio_for_dimension(dim)
    return max(2, math.ceil(1 + math.log(sigma_max / sigma_min) / math.log(gamma)))


class NoiseConditionalScore(nn.Module):
    """s(x, σ) = f(x, c(σ))/σ with c(σ) = 999 (log σ − log σ_L)/(log σ_1 − log σ_L).

    ``net`` is any module ``net(x, cond)`` returning a tensor shaped like ``x`` (the UNet for
    images, a small MLP for toy data). The 1/σ output scaling is NCSNv2 technique 3; with
    λ(σ) = σ² the training target of f is −z, of unit scale at every level.
    """

    def __init__(self, net: nn.Module, sigma_max: float, sigma_min: float) -> None:
        super().__init__()
        self.net = net
        self.sigma_max = float(sigma_max)
        self.sigma_min = float(sigma_min)

    def condition(self, sigma: torch.Tensor) -> torch.Tensor:
        """c(σ): log σ mapped linearly so that σ_L ↦ 0 and σ_1 ↦ 999."""
        span = math.log(self.sigma_max) - math.log(self.sigma_min)
        return (torch.log(sigma) - math.log(self.sigma_min)) * (CONDITION_RANGE / span)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """The score estimate at ``x`` (N, ...) for noise levels ``sigma`` (scalar or (N,))."""
        sigma = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
        if sigma.ndim == 0:
            sigma = sigma.expand(x.shape[0])
        out = self.net(x, self.condition(sigma))
        return out / sigma.reshape(-1, *([1] * (x.ndim - 1)))


class ScoreMatchingTrainer:
    """Denoising-score-matching training loop for a :class:`NoiseConditionalScore` (any data shape).

    Adam with a linear learning-rate warm-up, gradient-norm clipping and EMA weights
    (Song & Ermon 2020, technique 5). Minibatches come from ``data_generator``; noise levels and
    noise from ``noise_generator``.
    """

    def __init__(
        self,
        model: NoiseConditionalScore,
        sigmas: torch.Tensor,
        *,
        lr: float,
        ema_decay: float,
        grad_clip: float,
        warmup: int,
    ) -> None:
        self.model = model
        self.sigmas = sigmas
        self.lr = lr
        self.grad_clip = grad_clip
        self.warmup = warmup
        self.ema = ExponentialMovingAverage(model, decay=ema_decay)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def step(self, step: int, batch: torch.Tensor, noise_generator: torch.Generator) -> float:
        """One optimiser step (``step`` counts from 1) on ``batch``; returns the loss."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr * min(1.0, step / max(self.warmup, 1))
        self.model.train()
        loss = denoising_score_matching_loss(self.model, batch, self.sigmas, noise_generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        self.ema.update(self.model)
        return float(loss.detach())

    def run(
        self,
        batches: Iterator[torch.Tensor],
        noise_generator: torch.Generator,
        *,
        start: int,
        stop: int,
        desc: str = "ncsn training",
        after_step: Callable[[int], None] | None = None,
    ) -> None:
        """Steps ``start + 1 … stop`` with a progress bar; ``after_step(step)`` after each."""
        with progress_bar(total=stop, desc=desc, unit="step") as bar:
            bar.update(start)
            for step in range(start + 1, stop + 1):
                loss = self.step(step, next(batches), noise_generator)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}")
                if after_step is not None:
                    after_step(step)

    def training_state(self, noise_generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Raw weights, Adam moments and the noise generator's state, as flat tensors."""
        tensors = prefixed("net", self.model.state_dict())
        names = dict(enumerate(n for n, _ in self.model.named_parameters()))
        for index, slot in self.optimizer.state_dict()["state"].items():
            for key, value in slot.items():
                value = torch.as_tensor(value)
                tensors[f"opt.{names[index]}.{key}"] = value.reshape(-1) if key == "step" else value
        tensors["rng.noise"] = noise_generator.get_state()
        return tensors

    def restore(self, state: Mapping[str, torch.Tensor], noise_generator: torch.Generator) -> None:
        """Load what :meth:`training_state` and ``ema.*`` saved (EMA only: restart Adam from it)."""
        self.ema.load_state_dict(unprefixed("ema", state))
        raw = unprefixed("net", state)
        self.model.load_state_dict(raw if raw else self.ema.state_dict())
        moments = unprefixed("opt", state)
        if raw and moments:
            index = {n: i for i, (n, _) in enumerate(self.model.named_parameters())}
            full = self.optimizer.state_dict()
            slots: dict[int, dict[str, torch.Tensor]] = {}
            for key, value in moments.items():
                pname, field = key.rsplit(".", 1)
                slots.setdefault(index[pname], {})[field] = (
                    value.reshape(()) if field == "step" else value
                )
            full["state"] = slots
            self.optimizer.load_state_dict(full)
        if "rng.noise" in state:
            noise_generator.set_state(state["rng.noise"])


def _parse_mults(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    try:
        if isinstance(value, str):
            mults = tuple(int(v) for v in value.split(",") if v.strip())
        else:
            mults = tuple(int(v) for v in value)
    except ValueError:
        raise InputError(
            f"ncsn option channel_mults={value!r} is not a comma list of ints"
        ) from None
    if not mults or min(mults) < 1:
        raise InputError(f"ncsn option channel_mults={value!r} needs positive integers")
    return mults


def build_score_model(config: Mapping[str, Any]) -> NoiseConditionalScore:
    """The UNet score model a config describes (architecture keys and σ_1, σ_L)."""
    net = ConditionalUNet(
        in_channels=int(config.get("channels", 1)),
        base_channels=int(config["base_channels"]),
        channel_mults=_parse_mults(config["channel_mults"]),
        embedding_dim=int(config["embedding_dim"]),
    )
    sigmas = config["sigmas"]
    return NoiseConditionalScore(net, sigma_max=float(sigmas[0]), sigma_min=float(sigmas[-1]))


def sampler_settings(config: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Options of each sampler as recorded in a checkpoint config (``langevin_*``, ``pc_*``)."""
    return {
        "annealed-langevin": {
            "eps": float(config["langevin_eps"]),
            "steps_per_level": int(config["langevin_steps"]),
        },
        "pc": {
            "snr": float(config["pc_snr"]),
            "corrector_steps": int(config["pc_corrector_steps"]),
        },
    }


class NCSNModel:
    """A loaded NCSN: the EMA score model, its noise levels and default sampler settings.

    Capabilities ``sample`` and ``score``: ``score(x, sigma)`` returns s_θ(x, σ) ≈ ∇ₓ log q_σ(x)
    for images ``x`` in the model's data space (``[0, 1]`` plus noise) on ``device``.
    """

    capabilities = frozenset({"sample", "score"})

    def __init__(
        self,
        score_model: NoiseConditionalScore,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        device: torch.device | str = "cpu",
    ) -> None:
        self.score_model = score_model
        self.config = dict(config)
        self.image_shape = tuple(image_shape)
        self.device = torch.device(device)
        self.sigmas = torch.tensor(self.config["sigmas"], dtype=torch.float64)

    @torch.no_grad()
    def score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """s_θ(x, σ) for images ``x`` (N, C, H, W) and noise level(s) ``sigma`` (scalar or (N,))."""
        x = x.to(self.device, torch.float32)
        return self.score_model(x, torch.as_tensor(sigma, dtype=torch.float32, device=self.device))

    def make_sampler(self, sampler: str | None = None, steps: int | None = None):
        """The sampler object named ``sampler`` (default: the config's) with the config's options.

        ``steps`` overrides the Langevin steps per noise level (T of annealed Langevin, the
        corrector steps M of predictor–corrector).
        """
        name = sampler or str(self.config["sampler"])
        if name not in SAMPLERS:
            raise InputError(f"unknown ncsn sampler {name!r} (choose from {', '.join(SAMPLERS)})")
        options = sampler_settings(self.config)[name]
        if steps is not None:
            options[STEPS_OPTION[name]] = int(steps)
        return build_sampler(name, options)

    @torch.no_grad()
    def sample(
        self,
        n: int,
        *,
        batch_size: int,
        generator: torch.Generator,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """Draw ``n`` images in ``[0, 1]`` (N, C, H, W) on ``device``.

        Each chain starts from the prior N(0, σ_1² I) of the VE SDE and is run through every
        level by the named sampler (``None``: the checkpoint's default, ``config["sampler"]``)
        with the checkpoint's settings; ``steps`` overrides the Langevin steps per level (T of
        annealed Langevin, the corrector steps M of predictor–corrector). The result is
        clipped to ``[0, 1]``. Every random draw comes from ``generator``.
        """
        chosen = self.make_sampler(sampler, steps)
        sigma_max = float(self.sigmas[0])

        def draw(k: int) -> torch.Tensor:
            shape = (k, *self.image_shape)
            x = sigma_max * torch.randn(shape, generator=generator, device=self.device)
            x = chosen.sample(self.score, x, self.sigmas, generator)
            return x.clamp(0.0, 1.0)

        return sample_in_batches(n, batch_size, draw, desc=f"ncsn {type(chosen).__name__}")


def _validate(config: Mapping[str, Any]) -> None:
    checks = [
        (config["sampler"] in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}"),
        (float(config["lr"]) > 0, "lr must be positive"),
        (int(config["batch_size"]) >= 1, "batch_size must be positive"),
        (0 <= float(config["ema_decay"]) < 1, "ema_decay must be in [0, 1)"),
        (float(config["sigma_min"]) > 0, "sigma_min must be positive"),
        (float(config["sigma_max"]) >= 0, "sigma_max must be >= 0 (0: from the data)"),
        (int(config["num_levels"]) >= 0, "num_levels must be >= 0 (0: technique 2)"),
        (int(config["langevin_steps"]) >= 1, "langevin_steps must be positive"),
        (float(config["langevin_eps"]) >= 0, "langevin_eps must be >= 0 (0: technique 4)"),
        (float(config["pc_snr"]) > 0, "pc_snr must be positive"),
        (int(config["pc_corrector_steps"]) >= 0, "pc_corrector_steps must be >= 0"),
        (int(config["checkpoint_every"]) >= 1, "checkpoint_every must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"ncsn option: {message}")


def _noise_schedule(config: dict[str, Any], images: torch.Tensor) -> None:
    """Fill in σ_1 (technique 1), L (technique 2), the levels and ε (technique 4)."""
    sigma_max = float(config["sigma_max"]) or max_pairwise_distance(images)
    sigma_min = float(config["sigma_min"])
    if not sigma_max > sigma_min:
        raise InputError(f"ncsn option: sigma_max {sigma_max} must exceed sigma_min {sigma_min}")
    dim = math.prod(images.shape[1:])
    levels = int(config["num_levels"]) or num_levels_for(sigma_max, sigma_min, dim)
    sigmas = geometric_sigmas(sigma_max, sigma_min, levels)
    config["sigmas"] = sigmas.tolist()
    if float(config["langevin_eps"]) == 0.0:
        gamma = float(sigmas[0] / sigmas[1])
        config["langevin_eps"] = ncsnv2_step_size(gamma, int(config["langevin_steps"]), sigma_min)


class NCSNFamily:
    """The ``ncsn`` model family: loads checkpoints (or the bundled digits one) and trains."""

    name = NAME
    dataset = "digits"
    samplers = tuple(SAMPLERS)
    train_defaults = TRAIN_DEFAULTS
    train_options = {k: Option(v) for k, v in TRAIN_DEFAULTS.items()}
    capabilities = (SupportsScore,)
    default_steps = DEFAULT_STEPS

    def bundled_checkpoint(self) -> Path:
        """Path of the checkpoint shipped with the package."""
        return Path(str(files("geneval_plugins.models").joinpath(BUNDLED_CHECKPOINT)))

    def load(self, checkpoint: Path | None, *, device: torch.device) -> NCSNModel:
        """Load ``checkpoint`` (``None``: the bundled digits NCSN), EMA weights, on ``device``."""
        path = Path(checkpoint) if checkpoint is not None else self.bundled_checkpoint()
        tensors, config = load_checkpoint(path, model=NAME)
        ema = unprefixed("ema", tensors)
        if not ema or "sigmas" not in config:
            raise InputError(f"checkpoint {path} has no ema.* weights or no noise levels")
        model = build_score_model(config)
        load_weights(model, ema, path)
        model.to(device).eval()
        shape = tuple(int(v) for v in config.get("image_shape", (1, 8, 8)))
        return NCSNModel(model, config, image_shape=shape, device=device)

    def train(
        self,
        data: ImageSet,
        *,
        output: Path,
        steps: int | None,
        device: torch.device,
        seed: int,
        resume: bool,
        force: bool,
        options: Mapping[str, Any],
    ) -> Path:
        """Train by denoising score matching with λ(σ) = σ² (Song & Ermon 2019, Eq. 6).

        Levels, minibatches and noise are drawn from generators seeded with ``seed``; the
        weights are initialised under ``seed``. A checkpoint (EMA weights, and unless
        ``save_training_state=false`` on the last write, raw weights, Adam moments and the
        random state) is written atomically every ``checkpoint_every`` steps; ``resume=True``
        continues exactly from the one at ``output`` up to ``steps`` in total.
        """
        merge_train_options(NAME, TRAIN_DEFAULTS, options)  # refuses unknown options
        total = total_training_steps(steps, DEFAULT_STEPS)
        output = Path(output)
        images = data.images
        if images.ndim != 4:
            raise InputError(
                f"ncsn training data must be NCHW images, got shape {tuple(images.shape)}"
            )

        state: dict[str, torch.Tensor] = {}
        if resume:
            if not output.is_file():
                raise InputError(f"--resume: checkpoint {output} does not exist")
            state, config = load_checkpoint(output, model=NAME)
            if not unprefixed("net", state):
                raise InputError(f"--resume: checkpoint {output} holds no training state")
            changed = [k for k in _FIXED_KEYS if k in options and options[k] != config.get(k)]
            if changed:
                raise InputError(f"--resume: option(s) {', '.join(changed)} cannot change")
            config.update(options)
            done = int(config.get("trained_steps", 0))
            seed = int(config.get("seed", seed))  # data order and noise continue the original run
        else:
            check_writable(output, force=force, what="checkpoint")
            config = {**TRAIN_DEFAULTS, **options}
            done = 0
            config.update(
                seed=int(seed),
                image_shape=list(images.shape[1:]),
                channels=int(images.shape[1]),
                num_images=int(images.shape[0]),
            )
            _validate(config)
            _noise_schedule(config, images)
        _validate(config)
        if done >= total:
            raise InputError(f"--resume: checkpoint {output} already has {done} >= {total} steps")

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)  # weight initialisation
            model = build_score_model(config).to(device)
        sigmas = torch.tensor(config["sigmas"], dtype=torch.float32, device=device)
        trainer = ScoreMatchingTrainer(
            model,
            sigmas,
            lr=float(config["lr"]),
            ema_decay=float(config["ema_decay"]),
            grad_clip=float(config["grad_clip"]),
            warmup=int(config["warmup"]),
        )
        data_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        if state:
            trainer.restore(state, noise_gen)
        batches = minibatches(images.to(device, torch.float32), int(config["batch_size"]), data_gen)
        for _ in range(done):  # replay the data order so a resumed run equals an unbroken one
            next(batches)

        every = int(config["checkpoint_every"])

        def save(step: int) -> None:
            final = step == total
            if step % every and not final:
                return
            config["trained_steps"] = step
            tensors = prefixed("ema", trainer.ema.state_dict())
            if not final or bool(config["save_training_state"]):
                tensors.update(trainer.training_state(noise_gen))
            save_checkpoint(output, tensors, config, model=NAME, force=True)

        trainer.run(batches, noise_gen, start=done, stop=total, after_step=save)
        return output


@hookimpl
def geneval_register_models(register) -> None:
    register(NCSNFamily())
