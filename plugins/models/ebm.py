"""Model family ``ebm``: a deep convolutional energy E_θ(x), p(x) ∝ exp(−E_θ(x)), Langevin sampled.

Training objectives (``--opt objective=``):

* ``cd`` (default) — contrastive divergence with short-run Langevin chains started from a
  replay buffer (95 %) or fresh uniform noise (5 %), and the energy-magnitude penalty
  L = mean E(x⁺) − mean E(x⁻) + α·mean(E(x⁺)² + E(x⁻)²)   (Du & Mordatch 2019, §3.3, Eq. 6).
* ``dsm`` — denoising score matching with the score s(x) = −∇ₓE(x) (Vincent 2011), which needs
  no sampling during training; the shared
  :func:`geneval_plugins.models.score_matching.denoising_score_matching_loss` is used.

Samples start from uniform noise in [0, 1] and run the :class:`LangevinSampler` stored in the
checkpoint's config (steps, step size, noise scale, gradient clip, clamp to [0, 1]).

References
----------
Du, Y. & Mordatch, I. (2019). Implicit generation and modeling with energy-based models.
NeurIPS. Nijkamp, E., Hill, M., Zhu, S.-C. & Wu, Y. N. (2019). Learning non-convergent
non-persistent short-run MCMC toward energy-based model. NeurIPS. Vincent, P. (2011). A
connection between score matching and denoising autoencoders. Neural Computation 23(7).
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from geneval.api import ImageSet
from geneval.checkpoint import load_checkpoint, load_weights, save_checkpoint
from geneval.errors import InputError
from geneval.hookspecs import hookimpl
from geneval.io import check_writable
from geneval.options import Option
from geneval.progress import progress_bar
from geneval.training import (
    merge_train_options,
    minibatches,
    sample_in_batches,
    total_training_steps,
)
from geneval_plugins.models.mcmc import LangevinSampler
from geneval_plugins.models.score_matching import denoising_score_matching_loss

#: Training objectives of the ``ebm`` family.
OBJECTIVES = ("cd", "dsm")
#: Sampler names accepted by ``sample(sampler=...)``; the first is the default.
EBM_SAMPLERS = ("langevin",)
#: The data range Langevin chains are clamped to and fresh chains are drawn from.
DATA_RANGE = (0.0, 1.0)


class ConvEnergy(nn.Module):
    """A small convolutional energy network E_θ: (N, C, 8, 8) → (N,).

    Inputs in [0, 1] are mapped to [−1, 1]; four 3×3 convolutions with SiLU (the last two with
    stride 2: 8→4→2) and a linear read-out give one scalar per image. SiLU keeps ∇ₓE smooth,
    as Langevin dynamics needs (Du & Mordatch 2019 use Swish-like smooth activations).
    """

    def __init__(self, in_channels: int = 1, channels: int = 32, image_size: int = 8) -> None:
        super().__init__()
        c = channels
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, c, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, c, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(c, 2 * c, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Conv2d(2 * c, 2 * c, 3, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
        )
        side = (image_size + 3) // 4
        self.readout = nn.Linear(2 * c * side * side, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """E_θ(x), shape (N,)."""
        return self.readout(self.body(2 * x - 1)).squeeze(-1)


class ReplayBuffer:
    """Past negative samples; each draw restarts a fraction of chains from uniform noise.

    Du & Mordatch (2019, §3.1): chains start from the buffer with probability 1 − ``reinit``
    and from fresh noise U[0, 1] otherwise; finished chains are written back in place.
    """

    def __init__(
        self, size: int, shape: tuple[int, ...], generator: torch.Generator, device: torch.device
    ) -> None:
        if size < 1:
            raise InputError(f"--opt buffer_size={size}: must be at least 1")
        self.generator = generator
        self.items = uniform_noise((size, *shape), generator, device)

    def draw(self, n: int, reinit: float) -> tuple[torch.Tensor, torch.Tensor]:
        """``n`` chain starts and the buffer indices they will be written back to."""
        index = torch.randint(
            self.items.shape[0], (n,), generator=self.generator, device=self.generator.device
        ).to(self.items.device)
        start = self.items[index]
        fresh = torch.rand(n, generator=self.generator, device=self.generator.device) < reinit
        fresh = fresh.to(start.device).reshape(n, *([1] * (start.ndim - 1)))
        noise = uniform_noise(tuple(start.shape), self.generator, start.device)
        return torch.where(fresh, noise, start), index

    def store(self, samples: torch.Tensor, index: torch.Tensor) -> None:
        """Write finished chains back to the slots they were drawn from."""
        self.items[index] = samples.detach()


def uniform_noise(
    shape: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """U[low, high]^shape over the data range, drawn with ``generator``."""
    low, high = DATA_RANGE
    draw = torch.rand(shape, generator=generator, device=generator.device)
    return (low + (high - low) * draw).to(device)


def contrastive_divergence_loss(
    energy_pos: torch.Tensor, energy_neg: torch.Tensor, penalty: float
) -> torch.Tensor:
    """mean E(x⁺) − mean E(x⁻) + α·mean(E(x⁺)² + E(x⁻)²)   (Du & Mordatch 2019, Eq. 6)."""
    regulariser = penalty * (energy_pos.pow(2).mean() + energy_neg.pow(2).mean())
    return energy_pos.mean() - energy_neg.mean() + regulariser


def energy_score(net: nn.Module, *, create_graph: bool) -> Any:
    """s(x, σ) = −∇ₓE_θ(x) (σ ignored: the energy is not noise-conditional), for DSM."""

    def score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(net(x).sum(), x, create_graph=create_graph)
        return -grad

    return score


def langevin_from_options(opts: Mapping[str, Any], *, sampling: bool) -> LangevinSampler:
    """The :class:`LangevinSampler` for training chains, or (``sampling``) for ``sample``."""
    prefix = "sample_" if sampling else ""
    clip = float(opts["grad_clip"])
    return LangevinSampler(
        steps=int(opts[f"{prefix}steps" if sampling else "langevin_steps"]),
        step_size=float(opts[f"{prefix}step_size"]),
        noise_scale=float(opts[f"{prefix}noise_scale"]),
        grad_clip=clip if clip > 0 else None,
        clamp=DATA_RANGE,
    )


class EBMModel:
    """A loaded deep EBM as a :class:`geneval.api.GenerativeModel`: ``sample`` and ``energy``.

    log Z of a deep energy is intractable, so ``log_z``/``log_prob`` are not offered.
    """

    def __init__(self, net: ConvEnergy, config: Mapping[str, Any], device: torch.device) -> None:
        self.net = net.to(device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.config = dict(config)
        self.device = device
        self.image_shape = tuple(self.config["image_shape"])
        self.capabilities = frozenset({"sample", "energy"})
        self._exact = copy.deepcopy(self.net).to(torch.float64)

    def sample(
        self,
        n: int,
        *,
        batch_size: int,
        generator: torch.Generator,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """``n`` samples in [0, 1]: Langevin chains from U[0, 1] noise (``steps`` overrides)."""
        sampler = sampler or EBM_SAMPLERS[0]
        if sampler not in EBM_SAMPLERS:
            raise InputError(f"--sampler {sampler!r}: choose from {', '.join(EBM_SAMPLERS)}")
        langevin = langevin_from_options(self.config, sampling=True)
        if steps is not None:
            if steps < 1:
                raise InputError(f"--steps {steps}: Langevin steps must be at least 1")
            langevin = LangevinSampler(
                steps=steps,
                step_size=langevin.step_size,
                noise_scale=langevin.noise_scale,
                grad_clip=langevin.grad_clip,
                clamp=langevin.clamp,
            )

        def draw(k: int) -> torch.Tensor:
            x = uniform_noise((k, *self.image_shape), generator, self.device)
            return langevin.run(self.net, x, generator)

        return sample_in_batches(n, batch_size, draw, desc="Langevin sampling")

    @torch.no_grad()
    def energy(self, images: torch.Tensor) -> torch.Tensor:
        """E_θ(x) of each image, computed in float64, shape (N,)."""
        return self._exact(images.to(self.device, torch.float64))


class EBMFamily:
    """Family ``ebm``: convolutional energy trained by CD with a replay buffer, or by DSM."""

    name = "ebm"
    dataset = "digits"
    samplers = EBM_SAMPLERS
    #: Training options (``--opt key=value``). Langevin during training: ``langevin_steps``
    #: steps of size ``step_size`` with noise std ``noise_scale·√(2·step_size)``, ∇E clipped
    #: elementwise to ``grad_clip`` (0 disables). ``sample_*``: the defaults ``sample`` uses.
    capabilities: tuple[type, ...] = ()

    @property
    def train_options(self) -> dict[str, Option]:
        return {k: Option(v) for k, v in self.train_defaults.items()}

    train_defaults: Mapping[str, Any] = {
        "objective": "cd",
        "channels": 32,
        "lr": 5e-4,
        "batch_size": 128,
        "buffer_size": 10000,
        "reinit_fraction": 0.05,
        "langevin_steps": 20,
        "step_size": 10.0,
        "noise_scale": 0.0011,
        "grad_clip": 0.01,
        "energy_penalty": 0.1,
        "data_noise": 0.005,
        "dsm_sigma": 0.1,
        "sample_steps": 100,
        "sample_step_size": 10.0,
        "sample_noise_scale": 0.0011,
    }
    default_steps = 3000

    @property
    def bundled_checkpoint(self) -> Path:
        """The checkpoint shipped with the package, ``ebm-digits.safetensors``."""
        return Path(__file__).with_name("ebm-digits.safetensors")

    def load(self, checkpoint: Path | None, *, device: torch.device) -> EBMModel:
        """Load ``checkpoint`` (``None``: the bundled one) onto ``device``."""
        path = self.bundled_checkpoint if checkpoint is None else Path(checkpoint)
        tensors, config = load_checkpoint(path, model=self.name)
        net = self.build(config)
        load_weights(net, tensors, path)
        return EBMModel(net, config, device)

    @staticmethod
    def build(config: Mapping[str, Any]) -> ConvEnergy:
        """The energy network described by ``config``."""
        shape = config["image_shape"]
        return ConvEnergy(int(shape[0]), int(config["channels"]), int(shape[-1]))

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
        """Train on ``data`` by CD with a replay buffer (or DSM); write a checkpoint to ``output``.

        ``resume`` restores the weights and step count from ``output`` and runs the remaining
        steps up to ``steps`` (optimiser moments and the replay buffer restart).
        """
        opts = merge_train_options(self.name, self.train_defaults, options)
        if opts["objective"] not in OBJECTIVES:
            raise InputError(
                f"--opt objective={opts['objective']!r}: choose from {', '.join(OBJECTIVES)}"
            )
        steps = total_training_steps(steps, self.default_steps)
        generator = torch.Generator(device=device).manual_seed(seed)
        if resume:
            tensors, config = load_checkpoint(output, model=self.name)
            opts = merge_train_options(self.name, self.train_defaults, {
                **config["train"]["options"], **options
            })
            net = self.build(config)
            net.load_state_dict(tensors)
            start = int(config["train"]["steps_done"])
        else:
            check_writable(output, force=force, what="checkpoint")
            config = {
                "family": self.name,
                "image_shape": list(data.images.shape[1:]),
                "channels": int(opts["channels"]),
            }
            with torch.random.fork_rng(devices=[]):  # nn.Module initialisers use the global RNG
                torch.manual_seed(seed)
                net = self.build(config)
            start = 0
        net = net.to(device).train()
        images = data.images.to(device)
        run_training(net, images, opts, steps=steps, start=start, generator=generator)
        config = {
            **config,
            **{k: opts[k] for k in ("sample_steps", "sample_step_size", "sample_noise_scale")},
            "grad_clip": float(opts["grad_clip"]),
            "train": {
                "seed": seed,
                "steps_done": max(steps, start),
                "options": opts,
                "examples": int(images.shape[0]),
                "device": str(device),
                "resumed_from": start if resume else None,
                "argv": sys.argv[1:],
            },
        }
        save_checkpoint(output, net.state_dict(), config, model=self.name, force=force or resume)
        return Path(output)


def run_training(
    net: ConvEnergy,
    images: torch.Tensor,
    opts: Mapping[str, Any],
    *,
    steps: int,
    start: int,
    generator: torch.Generator,
) -> None:
    """Adam steps ``start … steps−1`` on the ``cd`` or ``dsm`` objective (see module docstring)."""
    optimiser = torch.optim.Adam(net.parameters(), lr=float(opts["lr"]), betas=(0.0, 0.999))
    batch_size = int(opts["batch_size"])
    batches = minibatches(images, batch_size, generator)
    data_noise = float(opts["data_noise"])
    if opts["objective"] == "cd":
        langevin = langevin_from_options(opts, sampling=False)
        buffer = ReplayBuffer(
            int(opts["buffer_size"]), tuple(images.shape[1:]), generator, images.device
        )
    sigmas = torch.tensor([float(opts["dsm_sigma"])], device=images.device)
    with progress_bar(total=steps - start, desc="training ebm") as bar:
        for _ in range(start, steps):
            x_pos = next(batches)
            if data_noise > 0:
                noise = torch.randn(x_pos.shape, generator=generator, device=generator.device)
                x_pos = x_pos + data_noise * noise.to(x_pos.device)
            if opts["objective"] == "cd":
                start_x, index = buffer.draw(batch_size, float(opts["reinit_fraction"]))
                x_neg = langevin.run(net, start_x, generator)
                buffer.store(x_neg, index)
                loss = contrastive_divergence_loss(
                    net(x_pos), net(x_neg), float(opts["energy_penalty"])
                )
            else:
                loss = denoising_score_matching_loss(
                    energy_score(net, create_graph=True), x_pos, sigmas, generator
                )
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            bar.update(1)


@hookimpl
def geneval_register_models(register) -> None:
    register(EBMFamily())
