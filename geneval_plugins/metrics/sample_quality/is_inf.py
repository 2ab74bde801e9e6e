"""Metric ``is_inf``: the Inception Score extrapolated to infinitely many samples (IS∞).

IS_N is biased by about ``k/N`` (Chong & Forsyth 2020): ``is_inf`` computes the Inception
Score (one split, :func:`~geneval_plugins.metrics.sample_quality.inception_score.
inception_score`) of random subsets of N samples, for N on the grid of
:mod:`~geneval_plugins.metrics.sample_quality.extrapolation`, fits a line in 1/N and reports
its intercept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.sample_quality.extrapolation import (
    GRID_CHOICES,
    GRID_HELP,
    extrapolate,
)

if TYPE_CHECKING:
    import numpy as np
    import torch


@dataclass(frozen=True)
class ISInfResult:
    """IS∞ (the intercept), its standard error, the slope, and the points of the fit."""

    value: float
    std_err: float
    slope: float
    sizes: list[int]
    is_n: list[float]
    min_n: int


def is_infinity(
    logits: torch.Tensor | np.ndarray,
    *,
    points: int = 15,
    grid: str = "dgm-eval",
    min_n: int = 0,
    generator: torch.Generator | None = None,
    subsets: Sequence[torch.Tensor] | None = None,
) -> ISInfResult:
    """IS∞: the Inception Score of N-sample subsets, fitted linearly in 1/N and extrapolated
    to 1/N = 0 (Chong & Forsyth 2020).

    For each N of ``np.linspace(min_n, n, points).astype('int32')``, IS_N is the score of a
    random subset of N rows in one split, ``exp(mean_x Σ_y p(y|x) (log p(y|x) − log p(y)))``
    with ``p(y|x) = softmax(logits)`` in float64 and ``p(y)`` the subset's mean; the
    least-squares line ``IS_N = IS∞ + slope/N`` gives ``value = IS∞`` and the standard error of
    its intercept.

    Parameters
    ----------
    logits
        (n, classes) classifier logits (for Inception, ``logits_unbiased``).
    points, grid, min_n, generator, subsets
        As in :func:`~geneval_plugins.metrics.sample_quality.fd_inf.fd_infinity`: the grid
        (``mchong6``'s smallest N is 5000, ``dgm-eval``'s rule ``min(5000, max(n // 10, 2))``
        is the default; they agree from n = 50 000 on), the subsets' generator, or the subsets
        themselves.

    Returns
    -------
    ISInfResult
        ``value`` (IS∞), ``std_err``, ``slope``, ``sizes``, ``is_n`` (IS_N at each N),
        ``min_n``.

    Notes
    -----
    Chong & Forsyth's ``calculate_IS_infinity`` applies ``calculate_inception_score(pred,
    num_splits=1)`` to float32 softmax outputs; here the softmax is float64 from the logits.
    On the same subsets and the same probabilities the results agree to float64 round-off.

    References
    ----------
    .. [1] M. J. Chong, D. Forsyth, "Effectively Unbiased FID and Inception Score and where
       to find them", CVPR 2020; ``mchong6/FID_IS_infinity``, ``score_infinity.py``.
    """
    import torch

    from geneval_plugins.metrics.sample_quality.inception_score import inception_score

    x = torch.as_tensor(logits)
    if x.ndim != 2:
        raise InputError(f"is_inf: logits must be (n, classes), got shape {tuple(x.shape)}")
    if not bool(torch.isfinite(x).all()):
        raise InputError("is_inf: logits contain non-finite values")
    n = x.shape[0]
    sizes, values, low, fit = extrapolate(
        n,
        lambda rows: inception_score(x[rows.to(x.device)], splits=1).value,
        grid=grid,
        points=points,
        min_n=min_n,
        metric="is_inf",
        generator=generator,
        subsets=subsets,
    )
    return ISInfResult(
        value=fit.intercept,
        std_err=fit.std_err,
        slope=fit.slope,
        sizes=sizes,
        is_n=values,
        min_n=low,
    )


class InceptionScoreInfinity:
    """The ``is_inf`` metric: IS extrapolated to infinite N over seeded random subsets."""

    name = "is_inf"
    higher_is_better = True
    needs = (Need("logits", "samples"),)
    interpretation = (
        "Inception Score extrapolated to infinitely many samples (intercept of IS_N against "
        "1/N); free of IS's 1/N bias, comparable across sample counts"
    )
    options: Mapping[str, Option] = {
        "points": Option(15, "number of N on the grid from min_n to n", low=3),
        "grid": Option(GRID_CHOICES[0], GRID_HELP, choices=GRID_CHOICES),
        "min_n": Option(0, "smallest N of the grid (0: the grid's rule)", low=0),
    }
    fields: Mapping[str, str] = {
        "std_err": "standard error of the fitted intercept",
        "slope": "slope of IS_N against 1/N",
        "sizes": "the N of each subset",
        "is_n": "IS_N of each subset",
        "n_samples": "number of samples",
    }
    uncertainty = "std_err"
    feature_space = "inception-v3-fid"  # the classifier of published scores

    def compute(
        self, inputs: MetricInputs, *, points: int, grid: str, min_n: int
    ) -> Mapping[str, Any]:
        """``{"value": IS∞, "std_err", "slope", "sizes", "is_n", "n_samples"}``; subsets
        drawn with a CPU torch generator seeded with ``inputs.seed``."""
        import torch

        logits = inputs.logits("samples").to(inputs.device)
        result = is_infinity(
            logits,
            points=points,
            grid=grid,
            min_n=min_n,
            generator=torch.Generator().manual_seed(int(inputs.seed)),
        )
        return {
            "value": result.value,
            "std_err": result.std_err,
            "slope": result.slope,
            "sizes": result.sizes,
            "is_n": result.is_n,
            "n_samples": int(logits.shape[0]),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(InceptionScoreInfinity())
