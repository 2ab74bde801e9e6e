"""Samplers in one shape, one driver for all of them, and the sampling side of a loaded model.

Part of the plugin SDK (model families import it from :mod:`geneval.plugin`). A sampler —
ancestral or DDIM steps of a diffusion, annealed Langevin or predictor–corrector steps of a
score model, block Gibbs, Langevin or replay-buffer MCMC — is a small configuration object,
separate from the network, in the manner of diffusers' schedulers:

* ``set_steps(n)`` chooses the number of steps (what a step is depends on the sampler: a
  timestep, Langevin steps per noise level, a Gibbs sweep) and lays out ``schedule``, the
  points the chain visits, one per step;
* ``init(model, shape, generator, device)`` draws the chains' starting state;
* ``step(model, state, point, generator)`` makes one update at one point of the schedule;
* ``output(model, state)`` turns the final state into the result (e.g. the Tweedie-denoised
  image, or the conditional mean E[v | h] of a Gibbs chain).

``model`` is whatever the sampler drives: an ε-predictor, a score function, an energy, a
bipartite network. Invalid settings raise :class:`ValueError`. :func:`run_chain` is the one
driver (with a progress bar); :func:`draw` starts chains and returns their output;
:class:`SampledModel` gives every loaded model the same ``sample`` method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import torch

from geneval.errors import InputError
from geneval.progress import progress_bar
from geneval.training import sample_in_batches

#: The most steps (timesteps, sweeps, steps per level) a sampler may be given, by ``--steps``
#: or by an integer setting of a checkpoint's ``sampling`` config: schedules are laid out in
#: memory, one entry per step.
MAX_SAMPLER_STEPS = 100_000


@runtime_checkable
class Sampler(Protocol):
    """A sampler configuration (see the module docstring)."""

    schedule: Sequence[Any]

    def set_steps(self, steps: int) -> None: ...

    def init(
        self, model: Any, shape: tuple[int, ...], generator: torch.Generator, device: torch.device
    ) -> Any: ...

    def step(self, model: Any, state: Any, point: Any, generator: torch.Generator) -> Any: ...

    def output(self, model: Any, state: Any) -> torch.Tensor: ...


@torch.no_grad()
def run_chain(
    sampler: Sampler,
    model: Any,
    state: Any,
    generator: torch.Generator,
    *,
    progress: bool = True,
    desc: str = "sampling",
) -> Any:
    """Apply ``sampler.step`` at every point of ``sampler.schedule``, from ``state``.

    Returns the final state; a progress bar counts the steps when ``progress`` is true.
    """
    schedule = sampler.schedule
    with progress_bar(total=len(schedule) if progress else 0, desc=desc, unit="step") as bar:
        for point in schedule:
            state = sampler.step(model, state, point, generator)
            if progress:
                bar.update(1)
    return state


def draw(
    sampler: Sampler,
    model: Any,
    shape: tuple[int, ...],
    generator: torch.Generator,
    *,
    device: torch.device,
    progress: bool = True,
    desc: str = "sampling",
) -> torch.Tensor:
    """Start chains of ``shape`` with ``sampler.init``, run them, return ``sampler.output``."""
    state = sampler.init(model, shape, generator, device)
    state = run_chain(sampler, model, state, generator, progress=progress, desc=desc)
    return sampler.output(model, state)


def build_sampler(
    family: str,
    factories: Mapping[str, Callable[..., Sampler]],
    sampling: Mapping[str, Any],
    name: str | None,
    steps: int | None,
) -> Sampler:
    """The sampler ``name`` (``None``: ``sampling["sampler"]``) with the checkpoint's settings.

    ``factories[name](**sampling[name])`` makes it; ``steps`` then overrides its number of
    steps. An unknown name or an invalid setting is an :class:`InputError` naming the sampler.
    """
    chosen = name or str(sampling["sampler"])
    if chosen not in factories:
        raise InputError(f"--sampler {chosen}: model {family} offers {', '.join(factories)}")
    if steps is not None and not 1 <= int(steps) <= MAX_SAMPLER_STEPS:
        raise InputError(f"--steps {steps}: expected 1 to {MAX_SAMPLER_STEPS}")
    settings = sampling.get(chosen, {})
    if not isinstance(settings, Mapping):
        raise InputError(f"model {family}, sampler {chosen}: its settings are not a mapping")
    for key, value in settings.items():
        if isinstance(value, int) and not isinstance(value, bool) and value > MAX_SAMPLER_STEPS:
            raise InputError(
                f"model {family}, sampler {chosen}: {key}={value} is above "
                f"{MAX_SAMPLER_STEPS} (the most steps a sampler may take)"
            )
    try:
        sampler = factories[chosen](**dict(settings))
        if steps is not None:
            sampler.set_steps(int(steps))
    except (ValueError, TypeError, OverflowError) as exc:  # wrong, missing or mistyped settings
        first = (str(exc).splitlines() or [type(exc).__name__])[0][:160]
        raise InputError(f"model {family}, sampler {chosen}: {first}") from None
    return sampler


class SampledModel:
    """The sampling side every loaded model shares.

    A subclass sets ``family`` and ``factories`` (sampler name → factory taking the settings
    stored in the checkpoint's ``sampling`` config) and implements :meth:`sampler_target`
    (what the samplers drive) and :meth:`to_images` (the sampler output as images in
    ``[0, 1]``).
    """

    family: str = ""
    factories: Mapping[str, Callable[..., Sampler]] = {}

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        image_shape: tuple[int, ...],
        device: torch.device | str,
    ) -> None:
        self.config = dict(config)
        # the name the runner reports as the sampler used when --sampler is not given
        self.config.setdefault("default_sampler", self.config["sampling"]["sampler"])
        self.image_shape = tuple(int(v) for v in image_shape)
        self.device = torch.device(device)

    def make_sampler(self, sampler: str | None = None, steps: int | None = None) -> Sampler:
        """The named sampler (default: the checkpoint's) with the checkpoint's settings."""
        return build_sampler(self.family, self.factories, self.config["sampling"], sampler, steps)

    def sampler_target(self) -> Any:
        """What the samplers drive (an ε-predictor, a score, an energy, a bipartite network)."""
        raise NotImplementedError

    def state_shape(self, n: int) -> tuple[int, ...]:
        """The shape of ``n`` chains' state (default: ``(n, *image_shape)``)."""
        return (n, *self.image_shape)

    def to_images(self, output: torch.Tensor) -> torch.Tensor:
        """The sampler output as images in ``[0, 1]``, NCHW (default: clamped)."""
        return output.clamp(0.0, 1.0)

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

        ``sampler=None`` uses the checkpoint's default; ``steps`` overrides its number of
        steps. Every random draw comes from ``generator``.
        """
        chosen = self.make_sampler(sampler, steps)
        target = self.sampler_target()
        name = sampler or self.config["sampling"]["sampler"]

        def one_batch(k: int) -> torch.Tensor:
            out = draw(
                chosen, target, self.state_shape(k), generator, device=self.device, desc=name
            )
            return self.to_images(out).reshape(k, *self.image_shape).float()

        return sample_in_batches(n, batch_size, one_batch, desc=f"{self.family} sampling")
