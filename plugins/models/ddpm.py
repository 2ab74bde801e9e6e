"""Model family ``ddpm``: denoising diffusion probabilistic models (Ho et al. 2020).

A :class:`~geneval_plugins.models.unet.ConditionalUNet` predicts the noise ε of
x_t = √ᾱ_t·x_0 + √(1 − ᾱ_t)·ε from (x_t, t); it is trained with L_simple and EMA weights,
sampled by the samplers of :mod:`geneval_plugins.models.ddpm_samplers` (ancestral, DDIM), and
its variational bound (capability ``elbo``) comes from :mod:`geneval_plugins.models.diffusion`.
Images in ``[0, 1]`` are mapped to the model's data space ``[-1, 1]`` by x ↦ 2x − 1.

Checkpoints are safetensors files (see :mod:`geneval.checkpoint`) holding ``ema.*`` (the
weights used for sampling) and, unless training was told ``save_training_state=false``,
``net.*``, ``opt.*`` and ``rng.*`` for an exact resume. The bundled ``ddpm-digits.safetensors``
holds the EMA weights only: resuming from it restarts the optimiser from those weights.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020.
.. [2] J. Song, C. Meng, S. Ermon, "Denoising Diffusion Implicit Models", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geneval.api import ImageSet
from geneval.capabilities import SupportsELBO
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
from geneval_plugins.models.ddpm_samplers import (
    SAMPLERS,
    SKIPS,
    VARIANCES,
    make_sampler,
    run_sampler,
)
from geneval_plugins.models.diffusion import (
    SCHEDULES,
    EpsPredictor,
    GaussianDiffusion,
    negative_elbo,
)
from geneval_plugins.models.unet import ConditionalUNet

NAME = "ddpm"
BUNDLED_CHECKPOINT = "ddpm-digits.safetensors"
#: Training steps when ``train(steps=None)``.
DEFAULT_STEPS = 12000

#: Every training option with its default (typed ``--opt key=value`` of ``geneval train``).
TRAIN_DEFAULTS: dict[str, Any] = {
    "lr": 5e-4,
    "batch_size": 128,
    "warmup": 500,
    "grad_clip": 1.0,
    "ema_decay": 0.999,
    "base_channels": 16,
    "channel_mults": "1,2,2",
    "embedding_dim": 32,
    "dropout": 0.0,
    "schedule": "linear",
    "timesteps": 1000,
    "sampler": "ddim",
    "sampler_steps": 50,
    "ddim_eta": 0.0,
    "ddim_skip": "uniform",
    "checkpoint_every": 1000,
    "save_training_state": True,
}

#: The keys of a checkpoint's config that define the network.
_ARCH_KEYS = ("base_channels", "channel_mults", "embedding_dim", "dropout")


def _parse_mults(value: str | list[int] | tuple[int, ...]) -> tuple[int, ...]:
    if isinstance(value, str):
        try:
            mults = tuple(int(v) for v in value.split(",") if v.strip())
        except ValueError:
            raise InputError(
                f"ddpm option channel_mults={value!r} is not a comma list of ints"
            ) from None
    else:
        mults = tuple(int(v) for v in value)
    if not mults or min(mults) < 1:
        raise InputError(f"ddpm option channel_mults={value!r} needs positive integers")
    return mults


def _validate(config: Mapping[str, Any]) -> None:
    checks = [
        (config["schedule"] in SCHEDULES, f"schedule must be one of {', '.join(SCHEDULES)}"),
        (config["sampler"] in SAMPLERS, f"sampler must be one of {', '.join(SAMPLERS)}"),
        (config["ddim_skip"] in SKIPS, f"ddim_skip must be one of {', '.join(SKIPS)}"),
        (int(config["timesteps"]) >= 2, "timesteps must be at least 2"),
        (float(config["lr"]) > 0, "lr must be positive"),
        (int(config["batch_size"]) >= 1, "batch_size must be positive"),
        (0 <= float(config["ema_decay"]) < 1, "ema_decay must be in [0, 1)"),
        (float(config["ddim_eta"]) >= 0, "ddim_eta must be non-negative"),
        (int(config["checkpoint_every"]) >= 1, "checkpoint_every must be positive"),
    ]
    for ok, message in checks:
        if not ok:
            raise InputError(f"ddpm option: {message}")


def build_network(config: Mapping[str, Any]) -> ConditionalUNet:
    """The ε-predictor UNet of a config (sinusoidal timestep embedding, Ho et al. App. B)."""
    return ConditionalUNet(
        in_channels=int(config.get("channels", 1)),
        base_channels=int(config["base_channels"]),
        channel_mults=_parse_mults(config["channel_mults"]),
        embedding_dim=int(config["embedding_dim"]),
        dropout=float(config["dropout"]),
    )


class DDPMModel:
    """A loaded DDPM: an ε-predictor, its diffusion, and the samplers and bound built on them.

    Parameters
    ----------
    eps_model
        Any callable ``eps(x_t, t)`` with x_t in the data space [−1, 1] (N, C, H, W) and integer
        timesteps t (N,) in 1..T; usually the EMA copy of a :class:`ConditionalUNet`.
    diffusion
        The forward process (schedule).
    config
        The checkpoint's config (architecture, schedule, default sampler, training run).
    image_shape
        (C, H, W) of the images it samples.
    device
        Where ``eps_model`` lives and where samples are returned.

    Notes
    -----
    ``elbo(x, *, generator, timesteps=100, variance="fixedsmall", bins=256)`` is the
    :class:`~geneval.capabilities.SupportsELBO` capability used by the ``nll`` metric: for
    images ``x`` in ``[0, 1]`` (N, C, H, W) it returns a float64 tensor (N,) of the ELBO of each
    image in **nats**, −(L_T + Σ_{t≥2} L_{t−1} + L_0) (Ho et al. 2020, eq. 5), a lower bound on
    the log-probability of the 8-bit image (``likelihood_space = "discrete-8bit"``): the
    decoder L_0 is the discretised Gaussian of eq. 13 with ``bins`` levels. ``timesteps=0``
    sums the T − 1 KL terms exactly; K > 0 uses an unbiased stratified Monte-Carlo estimate
    with K network passes per image (see
    :func:`~geneval_plugins.models.diffusion.negative_elbo`). Every random draw comes from
    ``generator``.
    """

    likelihood_space = "discrete-8bit"
    #: The options ``elbo`` accepts (declared, so that metrics pass them without inspection).
    elbo_options = {
        "timesteps": Option(
            100, "KL terms per image: strata of an unbiased Monte-Carlo estimate; 0 = all T−1",
            low=0,
        ),
        "variance": Option(
            "fixedsmall", "σ_t² of p_θ in the bound: fixedsmall (β̃_t) or fixedlarge (β_t)",
            choices=VARIANCES,
        ),
        "bins": Option(256, "levels of the discretised decoder (256 for 8-bit images)", low=2),
    }

    def __init__(
        self,
        eps_model: EpsPredictor,
        diffusion: GaussianDiffusion,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, int, int] = (1, 8, 8),
        device: torch.device | str = "cpu",
    ) -> None:
        self.eps_model = eps_model
        self.diffusion = diffusion
        self.config = dict(config)
        self.image_shape = tuple(image_shape)
        self.device = torch.device(device)

    def _eps(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.eps_model(x, t.to(x.dtype) if isinstance(self.eps_model, nn.Module) else t)

    def make_sampler(self, sampler: str | None = None, steps: int | None = None):
        """The sampler named ``sampler`` (default: the config's), configured from the config."""
        name = sampler or self.config.get("sampler", "ddim")
        if name not in SAMPLERS:
            raise InputError(f"unknown ddpm sampler {name!r} (choose from {', '.join(SAMPLERS)})")
        if steps is None and name == "ddim":
            steps = int(self.config.get("sampler_steps", 100))
        try:
            return make_sampler(
                name,
                self.diffusion,
                steps=steps,
                eta=float(self.config.get("ddim_eta", 0.0)),
                skip=str(self.config.get("ddim_skip", "uniform")),
            )
        except ValueError as exc:
            raise InputError(f"ddpm sampler {name}: {exc}") from None

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
        """Draw ``n`` images in ``[0, 1]`` (N, C, H, W) on ``device`` with the named sampler.

        ``sampler=None`` uses the checkpoint's default (``config["sampler"]``); ``steps`` is the
        DDIM sub-sequence length (ancestral sampling always takes all T steps).
        """
        chosen = self.make_sampler(sampler, steps)

        def draw(k: int) -> torch.Tensor:
            x = run_sampler(
                chosen, self._eps, (k, *self.image_shape), generator=generator, device=self.device
            )
            return ((x + 1) / 2).clamp(0.0, 1.0)

        return sample_in_batches(n, batch_size, draw, desc="ddpm sampling")

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
        """ELBO in nats of each image ``x`` in ``[0, 1]`` (see the class Notes).

        ``variance``: σ_t² of p_θ, ``fixedlarge`` or ``fixedsmall`` (the tighter bound for an
        ε-predictor of the true posterior mean at small t).
        """
        if x.ndim != 4 or tuple(x.shape[1:]) != self.image_shape:
            raise InputError(
                f"ddpm elbo: images of shape {tuple(x.shape)} do not match the model's "
                f"{self.image_shape}"
            )
        if variance not in VARIANCES:
            raise InputError(f"ddpm elbo: variance must be one of {', '.join(VARIANCES)}")
        x0 = x.to(self.device, torch.float32) * 2 - 1
        bound = negative_elbo(
            self.diffusion, self._eps, x0, generator,
            variance=variance, timesteps=timesteps or None, bins=bins,
        )
        return -bound.total


class DDPMFamily:
    """The ``ddpm`` model family: loads checkpoints (or the bundled digits one) and trains."""

    name = NAME
    dataset = "digits"
    samplers = tuple(SAMPLERS)
    train_defaults = TRAIN_DEFAULTS
    train_options = {k: Option(v) for k, v in TRAIN_DEFAULTS.items()}
    capabilities = (SupportsELBO,)
    default_steps = DEFAULT_STEPS

    def bundled_checkpoint(self) -> Path:
        """Path of the checkpoint shipped with the package."""
        return Path(str(files("geneval_plugins.models").joinpath(BUNDLED_CHECKPOINT)))

    def load(self, checkpoint: Path | None, *, device: torch.device) -> DDPMModel:
        """Load ``checkpoint`` (``None``: the bundled digits DDPM), EMA weights, onto ``device``."""
        path = Path(checkpoint) if checkpoint is not None else self.bundled_checkpoint()
        tensors, config = load_checkpoint(path, model=NAME)
        ema = unprefixed("ema", tensors)
        if not ema:
            raise InputError(f"checkpoint {path} has no ema.* weights")
        net = build_network(config)
        load_weights(net, ema, path)
        net.to(device).eval()
        diffusion = GaussianDiffusion.from_schedule(config["schedule"], int(config["timesteps"]))
        shape = tuple(int(v) for v in config.get("image_shape", (1, 8, 8)))
        # the name the runner reports as the sampler used when --sampler is not given
        config.setdefault("default_sampler", config.get("sampler", SAMPLERS[0]))
        return DDPMModel(net, diffusion, config, image_shape=shape, device=device)

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
        """Train with L_simple (Ho et al. 2020, Algorithm 1) and write a checkpoint to ``output``.

        Adam with a linear learning-rate warm-up, gradient-norm clipping and EMA weights (Ho et al.
        App. B). Minibatches, timesteps and noise are drawn from generators seeded with ``seed``.
        A full checkpoint (EMA, raw weights, optimiser and random state) is written atomically
        every ``checkpoint_every`` steps; ``resume=True`` continues exactly from the one at
        ``output`` up to ``steps`` in total. ``save_training_state=false`` keeps only the EMA
        weights in the final file (what sampling needs).
        """
        merge_train_options(NAME, TRAIN_DEFAULTS, options)  # refuses unknown options
        total = total_training_steps(steps, DEFAULT_STEPS)
        output = Path(output)
        images = data.images
        if images.ndim != 4:
            raise InputError(
                f"ddpm training data must be NCHW images, got shape {tuple(images.shape)}"
            )

        state: dict[str, torch.Tensor] = {}
        if resume:
            if not output.is_file():
                raise InputError(f"--resume: checkpoint {output} does not exist")
            state, config = load_checkpoint(output, model=NAME)
            fixed = [k for k in (*_ARCH_KEYS, "schedule", "timesteps")
                     if k in options and options[k] != config.get(k)]
            if fixed:
                raise InputError(
                    f"--resume: option(s) {', '.join(fixed)} differ from checkpoint {output}"
                )
            config.update(options)
            done = int(config.get("trained_steps", 0))
            # the data order and the noise continue the original run
            seed = int(config.get("seed", seed))
        else:
            check_writable(output, force=force, what="checkpoint")
            config = {**TRAIN_DEFAULTS, **options}
            done = 0
        config.update(
            seed=int(seed),
            dataset=config.get("dataset", "digits"),
            image_shape=list(images.shape[1:]),
            channels=int(images.shape[1]),
        )
        _validate(config)
        if done >= total:
            raise InputError(f"--resume: checkpoint {output} already has {done} ≥ {total} steps")

        torch.manual_seed(seed)  # weight initialisation
        net = build_network(config).to(device)
        ema = ExponentialMovingAverage(net, decay=float(config["ema_decay"]))
        opt = torch.optim.Adam(net.parameters(), lr=float(config["lr"]))
        data_gen = torch.Generator().manual_seed(seed)
        noise_gen = torch.Generator(device=device).manual_seed(seed + 1)
        if state:
            _restore(state, net, ema, opt, noise_gen)
        diffusion = GaussianDiffusion.from_schedule(config["schedule"], int(config["timesteps"]))
        x_all = images.to(device, torch.float32) * 2 - 1
        batches = minibatches(x_all, int(config["batch_size"]), data_gen)
        for _ in range(done):  # replay the data order so a resumed run equals an unbroken one
            next(batches)

        warmup = int(config["warmup"])
        every = int(config["checkpoint_every"])
        net.train()
        with progress_bar(total=total, desc="ddpm training", unit="step") as bar:
            bar.update(done)
            for step in range(done + 1, total + 1):
                for group in opt.param_groups:
                    group["lr"] = float(config["lr"]) * min(1.0, step / max(warmup, 1))
                loss = diffusion.simple_loss(
                    lambda x, t: net(x, t.to(x.dtype)), next(batches), noise_gen
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if float(config["grad_clip"]) > 0:
                    nn.utils.clip_grad_norm_(net.parameters(), float(config["grad_clip"]))
                opt.step()
                ema.update(net)
                bar.update(1)
                bar.set_postfix(loss=f"{loss.item():.4f}")
                final = step == total
                if step % every == 0 or final:
                    config["trained_steps"] = step
                    keep_state = not final or bool(config["save_training_state"])
                    tensors = prefixed("ema", ema.state_dict())
                    if keep_state:
                        tensors.update(_training_state(net, opt, noise_gen))
                    save_checkpoint(output, tensors, config, model=NAME, force=True)
        return output


def _training_state(
    net: nn.Module, opt: torch.optim.Optimizer, noise_gen: torch.Generator
) -> dict[str, torch.Tensor]:
    tensors = prefixed("net", net.state_dict())
    names = dict(enumerate(n for n, _ in net.named_parameters()))
    for index, slot in opt.state_dict()["state"].items():
        for key, value in slot.items():
            value = torch.as_tensor(value).reshape(-1) if key == "step" else value
            tensors[f"opt.{names[index]}.{key}"] = value
    tensors["rng.noise"] = noise_gen.get_state()
    tensors["rng.global"] = torch.get_rng_state()  # dropout draws from the global generator
    return tensors


def _restore(
    state: Mapping[str, torch.Tensor],
    net: nn.Module,
    ema: ExponentialMovingAverage,
    opt: torch.optim.Optimizer,
    noise_gen: torch.Generator,
) -> None:
    ema.load_state_dict(unprefixed("ema", state))
    raw = unprefixed("net", state)
    # A file with EMA weights only (the bundled one) restarts the optimiser from those weights.
    net.load_state_dict(raw if raw else ema.state_dict())
    opt_state = unprefixed("opt", state)
    if raw and opt_state:
        index = {n: i for i, (n, _) in enumerate(net.named_parameters())}
        full = opt.state_dict()
        slots: dict[int, dict[str, torch.Tensor]] = {}
        for key, value in opt_state.items():
            pname, field = key.rsplit(".", 1)
            value = value.reshape(()) if field == "step" else value
            slots.setdefault(index[pname], {})[field] = value
        full["state"] = slots
        opt.load_state_dict(full)
    if "rng.noise" in state:
        noise_gen.set_state(state["rng.noise"])
    if "rng.global" in state:
        torch.set_rng_state(state["rng.global"])


@hookimpl
def geneval_register_models(register) -> None:
    register(DDPMFamily())
