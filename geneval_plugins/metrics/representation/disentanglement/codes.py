"""Latents and ground-truth factors for the disentanglement metrics: reading, checking,
splitting, histogram discretisation and discrete mutual information.

Conventions follow disentanglement_lib (``evaluation/metrics/utils.py``): latents are
discretised per dimension into ``num_bins`` equal-width bins between its minimum and maximum
(``np.digitize`` against ``np.histogram``'s left edges, so values 1..num_bins), and mutual
information and entropies are scikit-learn's ``mutual_info_score`` in nats.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Option

if TYPE_CHECKING:
    import numpy as np
    import torch

#: disentanglement_lib's default sizes (``config/unsupervised_study_v1/metric_configs``).
NUM_TRAIN = 10_000
NUM_TEST = 5_000
NUM_BINS = 20


def num_train_option(default: int = NUM_TRAIN) -> Option:
    """The ``num_train`` option: rows fitted on (capped by the rows given)."""
    return Option(default, "training rows (fewer rows given: 2/3 of them)", low=2)


def num_test_option(default: int = NUM_TEST) -> Option:
    """The ``num_test`` option: rows scored on (capped by the rows given)."""
    return Option(default, "test rows (fewer rows given: the remaining 1/3)", low=1)


NUM_BINS_OPTION = Option(NUM_BINS, "equal-width histogram bins per latent dimension", low=2)

#: Fields every array-based disentanglement metric reports.
CODE_FIELDS: dict[str, str] = {
    "num_train": "rows used to fit (or to estimate the mutual information)",
    "num_factors": "ground-truth factors scored (constant factors are left out)",
    "num_latents": "latent dimensions",
}
TEST_FIELD = {"num_test": "rows used to score"}


@dataclass
class Codes:
    """Latents (n, D) float64 and integer factors (n, K) int64, rows shuffled by the seed."""

    latents: np.ndarray
    factors: np.ndarray
    warnings: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return self.latents.shape[0]

    def rows(self, start: int, stop: int) -> Codes:
        """Rows ``start:stop`` (sharing the warnings list)."""
        return Codes(self.latents[start:stop], self.factors[start:stop], self.warnings)


def _as_2d(x: torch.Tensor) -> torch.Tensor:
    return x.unsqueeze(1) if x.ndim == 1 else x


def check_factors(factors: torch.Tensor | np.ndarray, metric: str) -> np.ndarray:
    """Integer factors (n, K) int64; an :class:`InputError` naming a non-integer column."""
    import torch

    f = _as_2d(torch.as_tensor(factors))
    if f.ndim != 2:
        raise InputError(f"{metric}: factors must be (n, K), got {tuple(f.shape)}")
    if f.dtype == torch.bool:
        f = f.long()
    if f.is_floating_point():
        bad = ~torch.isfinite(f) | (f != f.round())
        if bad.any():
            column = int(bad.any(dim=0).nonzero()[0])
            raise InputError(
                f"{metric}: factor {column} holds non-integer values; factors must be "
                "integer indices of discrete values"
            )
    elif f.is_complex():
        raise InputError(f"{metric}: factors must be integers, got {f.dtype}")
    return f.to(torch.int64).cpu().numpy()


def read_codes(inputs: MetricInputs, metric: str) -> Codes:
    """The latents and factors of the samples, checked and shuffled with ``inputs.seed``.

    One-line :class:`InputError` for: missing latents or factors, a row count mismatch, non-integer
    factors, non-finite latents. Rows are shuffled so that a split of ordered input (a dataset
    grid) still draws every factor value into both parts.
    """
    import numpy as np
    import torch

    try:
        latents = _as_2d(torch.as_tensor(inputs.latents("samples")))
    except KeyError:
        raise InputError(
            f"{metric} needs latents (an .npz with 'latents', or --model with encode)"
        ) from None
    try:
        raw_factors = inputs.factors("samples")
    except KeyError:
        raise InputError(
            f"{metric} needs ground-truth factors beside the latents "
            "(an .npz with 'factors', or a dataset with factors)"
        ) from None
    factors = check_factors(raw_factors, metric)
    if latents.ndim != 2 or latents.shape[1] == 0:
        raise InputError(f"{metric}: latents must be (n, D), got {tuple(latents.shape)}")
    if latents.shape[0] != factors.shape[0]:
        raise InputError(
            f"{metric}: {latents.shape[0]} latent rows but {factors.shape[0]} factor rows"
        )
    if not torch.isfinite(latents).all():
        raise InputError(f"{metric}: the latents hold non-finite values")
    order = np.random.default_rng(int(inputs.seed)).permutation(latents.shape[0])
    return Codes(latents.double().cpu().numpy()[order], factors[order])


def drop_constant_factors(fit: Codes, *others: Codes, metric: str) -> list[Codes]:
    """Leave out the factors that are constant over the rows of ``fit`` (they have no entropy
    to explain and no classes to predict), in ``fit`` and ``others``, with a warning; an
    :class:`InputError` when none is left."""
    import numpy as np

    varying = np.array([np.unique(col).size > 1 for col in fit.factors.T], dtype=bool)
    if not varying.any():
        raise InputError(f"{metric}: every factor is constant over the {fit.n} rows used")
    if varying.all():
        return [fit, *others]
    dropped = ", ".join(str(i) for i in np.flatnonzero(~varying))
    fit.warnings.append(f"factor(s) {dropped} constant over the {fit.n} rows used: left out")
    return [Codes(c.latents, c.factors[:, varying], fit.warnings) for c in (fit, *others)]


def split_sizes(n: int, num_train: int, num_test: int) -> tuple[int, int]:
    """Rows for training and testing: the defaults when ``n`` covers both, else ``n`` split
    2:1 (``⌈2n/3⌉`` and the rest), each part capped at its default."""
    if n >= num_train + num_test:
        return num_train, num_test
    two_thirds = math.ceil(2 * n / 3)
    return min(num_train, two_thirds), min(num_test, n - two_thirds)


def split(codes: Codes, num_train: int, num_test: int, metric: str) -> tuple[Codes, Codes]:
    """Training and test rows (see :func:`split_sizes`), factors constant in training left
    out (:func:`drop_constant_factors`); at least 2 and 1 rows."""
    train, test = split_sizes(codes.n, num_train, num_test)
    if train < 2 or test < 1:
        raise InputError(f"{metric}: needs at least 3 rows of latents and factors, got {codes.n}")
    fit, score = drop_constant_factors(
        codes.rows(0, train), codes.rows(train, train + test), metric=metric
    )
    return fit, score


def require(metric: str, *, latents: int, factors: int, codes: Codes) -> None:
    """An :class:`InputError` unless there are at least that many latents and factors."""
    if codes.latents.shape[1] < latents:
        raise InputError(
            f"{metric}: needs at least {latents} latent dimensions, got {codes.latents.shape[1]}"
        )
    if codes.factors.shape[1] < factors:
        raise InputError(
            f"{metric}: needs at least {factors} non-constant factors, got {codes.factors.shape[1]}"
        )


def histogram_discretize(latents: np.ndarray, num_bins: int) -> np.ndarray:
    """Bin index (1..num_bins) of each value in ``num_bins`` equal-width bins per dimension.

    ``np.digitize(z, np.histogram(z, num_bins)[1][:-1])`` per column, as disentanglement_lib's
    ``_histogram_discretize`` (the maximum lands in the last bin).
    """
    import numpy as np

    out = np.empty(latents.shape, dtype=np.int64)
    for i, column in enumerate(latents.T):
        out[:, i] = np.digitize(column, np.histogram_bin_edges(column, num_bins)[:-1])
    return out


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information (D, K) in nats between discrete codes (n, D) and factors (n, K).

    ``I(z_i; v_j)`` of the empirical joint distribution (scikit-learn's
    ``mutual_info_score``).
    """
    import numpy as np
    from sklearn.metrics import mutual_info_score

    return np.array(
        [[mutual_info_score(f, c) for f in factors.T] for c in codes.T], dtype=np.float64
    ).reshape(codes.shape[1], factors.shape[1])


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy (K,) in nats of each discrete factor (``I(v; v)``)."""
    import numpy as np
    from sklearn.metrics import mutual_info_score

    return np.array([mutual_info_score(f, f) for f in factors.T], dtype=np.float64)


@contextmanager
def collected_warnings(into: list[str]) -> Iterator[None]:
    """Collect the estimators' warnings (e.g. convergence) as one-line strings, once each."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        line = str(w.message).splitlines()[0].strip()
        if line and line not in into:
            into.append(line)


def describe(fit: Codes, test: Codes | None = None) -> dict[str, Any]:
    """The sizes every metric records, and the warnings gathered so far (if any)."""
    out: dict[str, Any] = {"num_train": fit.n}
    if test is not None:
        out["num_test"] = test.n
    out.update(num_factors=fit.factors.shape[1], num_latents=fit.latents.shape[1])
    if fit.warnings:
        out["warnings"] = list(fit.warnings)
    return out
