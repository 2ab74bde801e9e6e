"""Random draws of the sample-quality metrics: geneval's seeded torch generator or torch-fidelity's.

Metrics that shuffle or subsample (``is`` splits, ``kid`` subsets) take an option ``rng``:

``geneval`` (default)
    a CPU ``torch.Generator`` seeded with the run's ``--seed``;
``torch-fidelity``
    ``numpy.random.RandomState(2020)``, torch-fidelity's generator with its default
    ``rng_seed``, drawn in torch-fidelity's order of calls (one ``permutation`` for the
    Inception Score; ``choice(n1)`` then ``choice(n2)`` per KID subset). A published
    torch-fidelity number is then reproduced to float round-off. The run's ``--seed`` is not
    used: torch-fidelity's default seed is what its published numbers used.

References
----------
.. [1] A. Obukhov et al., torch-fidelity 0.4, ``metric_isc.py`` and ``metric_kid.py``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import torch

    Shuffle = torch.Generator | np.random.RandomState | None

#: The accepted values of the ``rng`` option; the first is the default.
RNG_CHOICES = ("geneval", "torch-fidelity")
RNG_HELP = (
    "random draws: geneval (torch generator seeded with --seed) or torch-fidelity "
    "(numpy RandomState(2020) in its order of calls, to reproduce its numbers)"
)
#: torch-fidelity's default ``rng_seed``.
TORCH_FIDELITY_SEED = 2020

#: What the shuffling functions accept: a torch generator, a numpy RandomState, or nothing.


def run_generator(rng: str, seed: int) -> torch.Generator | np.random.RandomState:
    """The generator of the ``rng`` option: a torch generator seeded with ``seed``, or
    ``RandomState(2020)`` for ``torch-fidelity``."""
    import numpy as np
    import torch

    if rng == "torch-fidelity":
        return np.random.RandomState(TORCH_FIDELITY_SEED)
    if rng != "geneval":
        raise ValueError(f"unknown rng {rng!r} (one of {', '.join(RNG_CHOICES)})")
    return torch.Generator().manual_seed(int(seed))
