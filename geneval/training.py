"""Pieces every model family's training and sampling share: EMA weights, minibatches, batching."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
from torch import nn

from geneval.errors import InputError
from geneval.progress import progress_bar


def merge_train_options(
    family: str, defaults: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, Any]:
    """``defaults`` updated by ``options``; an unknown option is an :class:`InputError`."""
    unknown = set(options) - set(defaults)
    if unknown:
        raise InputError(
            f"--opt {sorted(unknown)[0]}: unknown training option of model {family} "
            f"(known: {', '.join(sorted(defaults))})"
        )
    return {**defaults, **options}


def total_training_steps(steps: int | None, default: int) -> int:
    """``steps`` (``--steps``), or the family's ``default`` when it is ``None``; must be ≥ 1."""
    total = default if steps is None else int(steps)
    if total < 1:
        raise InputError(f"--steps must be positive, got {total}")
    return total


class ExponentialMovingAverage:
    """Shadow weights θ̄ ← d·θ̄ + (1 − d)·θ after each optimiser step (Polyak averaging).

    As used for DDPM and NCSN sampling (Ho et al. 2020, App. B; Song & Ermon 2020, technique 5).
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must be in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow.parameters(), model.parameters(), strict=True):
            s.lerp_(p.detach(), 1.0 - self.decay)
        for s, b in zip(self.shadow.buffers(), model.buffers(), strict=True):
            s.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow.load_state_dict(state)


def minibatches(
    data: torch.Tensor, batch_size: int, generator: torch.Generator
) -> Iterator[torch.Tensor]:
    """Endless shuffled minibatches of ``data``: epochs without replacement, drawn with
    ``generator``."""
    n = data.shape[0]
    if n == 0:
        raise ValueError("no training data")
    while True:
        order = torch.randperm(n, generator=generator, device=generator.device).to(data.device)
        for start in range(0, n - batch_size + 1 if n >= batch_size else 1, batch_size):
            yield data[order[start : start + batch_size]]


@torch.no_grad()
def sample_in_batches(
    n: int,
    batch_size: int,
    draw: Callable[[int], torch.Tensor],
    *,
    desc: str = "sampling",
) -> torch.Tensor:
    """Call ``draw(k)`` for batches of at most ``batch_size`` until ``n`` samples exist.

    Shows a progress bar counted in samples.
    """
    if n < 1:
        raise ValueError(f"number of samples must be positive, got {n}")
    if batch_size < 1:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    out = []
    with progress_bar(total=n, desc=desc, unit="img") as bar:
        done = 0
        while done < n:
            k = min(batch_size, n - done)
            out.append(draw(k))
            done += k
            bar.update(k)
    return torch.cat(out)
