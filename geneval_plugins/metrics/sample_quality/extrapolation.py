"""Extrapolation of a finite-sample score to infinitely many samples (``fd_inf``, ``is_inf``).

Chong & Forsyth (2020) observe that FID_N (and IS_N) computed on N samples is, to first
order, linear in 1/N: ``S_N = S_∞ + k/N``. They evaluate S_N on random subsets of the samples
for N on an evenly spaced grid from a minimum N to all n samples, fit a line against 1/N by
ordinary least squares and report its intercept (the value at 1/N = 0).

This module holds what the two metrics share:

* :func:`min_subset_size` and :func:`subset_sizes`: the N grid, as each reference builds it
  (``np.linspace(min_n, n, points).astype('int32')``);
* :func:`draw_subsets`: one seeded random subset per N, drawn independently for each N (the
  first N entries of a fresh permutation), as the references do;
* :func:`fit_inverse_n`: the least-squares line against 1/N, its intercept, slope and the
  standard error of the intercept;
* :func:`extrapolate`: the whole sequence, grid, subsets, one score per subset, the fit.

References
----------
.. [1] M. J. Chong, D. Forsyth, "Effectively Unbiased FID and Inception Score and where to
   find them", CVPR 2020; code ``mchong6/FID_IS_infinity``, ``score_infinity.py``.
.. [2] G. Stein et al., "Exposing flaws of generative model evaluation metrics and their
   unfair treatment of diffusion models", NeurIPS 2023; code ``layer6ai-labs/dgm-eval``,
   ``dgm_eval/metrics/fd.py`` (``compute_FD_infinity``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from geneval.plugin import InputError

if TYPE_CHECKING:
    import torch

#: The accepted values of the ``grid`` option; the first is the default.
GRID_CHOICES = ("dgm-eval", "mchong6")
GRID_HELP = (
    "minimum N of the grid: dgm-eval (min(5000, max(n // 10, 2))) or mchong6 (5000); "
    "both give 5000 from n = 50000 on"
)
#: The minimum N of Chong & Forsyth's code (``min_fake``).
MCHONG6_MIN_N = 5000


def min_subset_size(grid: str, n: int) -> int:
    """The smallest N of the grid for ``n`` samples.

    ``mchong6``: 5000 (``min_fake`` of ``calculate_FID_infinity_path``);
    ``dgm-eval``: ``min(5000, max(n // 10, 2))`` (``compute_FD_infinity``).
    """
    if grid == "mchong6":
        return MCHONG6_MIN_N
    if grid == "dgm-eval":
        return min(MCHONG6_MIN_N, max(n // 10, 2))
    raise InputError(f"unknown grid {grid!r} (one of {', '.join(GRID_CHOICES)})")


def subset_sizes(n: int, *, points: int, min_n: int, metric: str) -> list[int]:
    """``np.linspace(min_n, n, points).astype('int32')`` as a list: the N of each subset.

    The references' grid (both cast the evenly spaced values to int32, i.e. truncate).
    ``n`` must exceed ``min_n`` (as Chong & Forsyth's assertion), ``min_n`` be at least 2
    (a covariance needs two points) and ``points`` at least 3 (the fit's standard error needs
    a residual degree of freedom); otherwise an :class:`InputError` naming ``metric``.
    """
    import numpy as np

    if points < 3:
        raise InputError(f"{metric}: points must be at least 3, got {points}")
    if min_n < 2:
        raise InputError(f"{metric}: min_n must be at least 2, got {min_n}")
    if n <= min_n:
        raise InputError(
            f"{metric}: {n} samples are too few for the N grid from {min_n} to n "
            f"(need more than {min_n}; lower {metric}.min_n or use {metric}.grid=dgm-eval)"
        )
    return [int(s) for s in np.linspace(min_n, n, points).astype("int32")]


def draw_subsets(
    n: int, sizes: Sequence[int], generator: torch.Generator | None
) -> list[torch.Tensor]:
    """One random subset of ``range(n)`` per size: ``torch.randperm(n, generator)[:N]``.

    Each subset comes from a fresh permutation, drawn in the order of ``sizes`` from
    ``generator`` (a CPU ``torch.Generator``), so the subsets are independent across N, as in
    both references (a fresh ``np.random.shuffle`` or ``rng.choice(replace=False)`` per N).
    """
    import torch

    return [torch.randperm(n, generator=generator)[:size] for size in sizes]


@dataclass(frozen=True)
class InverseNFit:
    """Least-squares line ``S_N = intercept + slope / N`` and the intercept's standard error."""

    intercept: float
    slope: float
    std_err: float


def fit_inverse_n(sizes: Sequence[int], values: Sequence[float]) -> InverseNFit:
    """Ordinary least squares of ``values`` against ``x = 1/N``, in float64.

    With ``m`` points, ``x̄``, ``ȳ`` the means, ``Sxx = Σ(x − x̄)²``:
    ``slope = Σ(x − x̄)(y − ȳ) / Sxx``, ``intercept = ȳ − slope · x̄`` (what
    ``sklearn.linear_model.LinearRegression().fit(1/N, y).predict([[0]])`` and
    ``np.polyval(np.polyfit(1/N, y, 1), 0)`` return), and the standard error of the intercept
    ``s · √(1/m + x̄²/Sxx)`` with ``s² = Σ residual² / (m − 2)`` (the textbook OLS formula,
    e.g. ``scipy.stats.linregress``'s ``intercept_stderr``).
    """
    import numpy as np

    x = 1.0 / np.asarray(sizes, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    m = x.shape[0]
    if m < 3 or y.shape != x.shape:
        raise InputError(f"the 1/N fit needs at least 3 (N, value) pairs, got {m}")
    xc = x - x.mean()
    sxx = float(xc @ xc)
    if sxx <= 0:
        raise InputError("the 1/N fit needs at least two distinct N")
    slope = float(xc @ (y - y.mean())) / sxx
    intercept = float(y.mean() - slope * x.mean())
    residual = y - (intercept + slope * x)
    s2 = float(residual @ residual) / (m - 2)
    std_err = math.sqrt(s2 * (1.0 / m + float(x.mean()) ** 2 / sxx))
    return InverseNFit(intercept=intercept, slope=slope, std_err=std_err)


def extrapolate(
    n: int,
    score: Callable[[torch.Tensor], float],
    *,
    grid: str,
    points: int,
    min_n: int,
    metric: str,
    generator: torch.Generator | None,
    subsets: Sequence[torch.Tensor] | None = None,
) -> tuple[list[int], list[float], int, InverseNFit]:
    """``(sizes, values, min_n, fit)``: ``score`` of one random subset of ``range(n)`` per N
    of the grid (:func:`subset_sizes`; ``min_n`` 0 takes ``grid``'s rule,
    :func:`min_subset_size`), fitted against 1/N (:func:`fit_inverse_n`). ``subsets`` given
    replace the seeded draw (:func:`draw_subsets`) and must have the grid's sizes. A progress
    bar counts the N done."""
    import torch

    from geneval.plugin import progress_bar

    low = min_n if min_n else min_subset_size(grid, n)
    sizes = subset_sizes(n, points=points, min_n=low, metric=metric)
    if subsets is None:
        subsets = draw_subsets(n, sizes, generator)
    elif [len(r) for r in subsets] != sizes:
        raise InputError(f"{metric}: subsets must have the grid's sizes {sizes}")
    values = []
    with progress_bar(total=len(sizes), desc=metric, unit="N") as bar:
        for rows in subsets:
            values.append(float(score(torch.as_tensor(rows))))
            bar.update(1)
    return sizes, values, low, fit_inverse_n(sizes, values)
