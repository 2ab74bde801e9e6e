"""Transcriptions of the two FD∞ references and of Chong & Forsyth's IS∞, for the tests.

* ``mchong6/FID_IS_infinity`` (MIT), ``score_infinity.py``: ``calculate_FID_infinity_path``
  and ``calculate_IS_infinity_path`` from the point where the activations are in hand (the
  Inception pass is not part of the maths), with ``numpy_calculate_frechet_distance`` and
  ``calculate_inception_score`` as written there.
* ``layer6ai-labs/dgm-eval`` (MIT), ``dgm_eval/metrics/fd.py``: ``compute_FD_infinity`` with
  ``compute_statistics`` and ``compute_FD_with_stats``.

Both are unseeded upstream. To draw the same subsets as geneval, the random source is a
parameter here, everything else is as upstream:

* mchong6 calls ``np.random.shuffle(activations)`` once per N, in place, then takes the first
  N rows. ``shuffle`` replaces that call; :func:`replaying_shuffle` gives a shuffle that, at
  the i-th call, puts the rows in the order ``original[order_i]`` (a permutation of the
  array, as a shuffle is), so that its first N rows are geneval's i-th subset.
* dgm-eval calls ``rng = np.random.default_rng()`` and ``rng.choice(reps2, N,
  replace=False)`` once per N. ``rng`` replaces the generator; :class:`ReplayingChoice`
  answers the i-th ``choice`` with ``reps2[rows_i]``.

``linalg.sqrtm(..., disp=False)`` is called without ``disp`` (deprecated in scipy 1.17,
removed in 1.18); with ``disp=False`` it returned the same matrix and an error estimate
that the code ignored.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy import linalg
from sklearn.linear_model import LinearRegression

# -- mchong6/FID_IS_infinity, score_infinity.py ------------------------------------------------


def numpy_calculate_frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Numpy implementation of the Frechet Distance (score_infinity.py, as written)."""
    mu1 = np.atleast_1d(mu1)
    mu2 = np.atleast_1d(mu2)

    sigma1 = np.atleast_2d(sigma1)
    sigma2 = np.atleast_2d(sigma2)

    assert mu1.shape == mu2.shape, "Training and test mean vectors have different lengths"
    assert sigma1.shape == sigma2.shape, "Training and test covariances have different dimensions"

    diff = mu1 - mu2

    # Product might be almost singular
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))

    # Numerical error might give slight imaginary component
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Imaginary component {m}")
        covmean = covmean.real

    tr_covmean = np.trace(covmean)

    return diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean


def calculate_inception_score(pred, num_splits=1):
    """score_infinity.py's IS of softmax probabilities ``pred``, as written."""
    scores = []
    for index in range(num_splits):
        pred_chunk = pred[
            index * (pred.shape[0] // num_splits) : (index + 1) * (pred.shape[0] // num_splits),
            :,
        ]
        kl_inception = pred_chunk * (
            np.log(pred_chunk) - np.log(np.expand_dims(np.mean(pred_chunk, 0), 0))
        )
        kl_inception = np.mean(np.sum(kl_inception, 1))
        scores.append(np.exp(kl_inception))
    return np.mean(scores), np.std(scores)


def calculate_FID_infinity_path(  # noqa: N802 (the reference's name)
    fake_act, real_m, real_s, min_fake=5000, num_points=15, shuffle=np.random.shuffle
):
    """``calculate_FID_infinity_path`` after its activations are computed; ``shuffle``
    replaces ``np.random.shuffle``."""
    num_fake = len(fake_act)
    assert num_fake > min_fake, (
        "number of fake data must be greater than the minimum point for extrapolation"
    )

    fids = []

    # Choose the number of images to evaluate FID_N at regular intervals over N
    fid_batches = np.linspace(min_fake, num_fake, num_points).astype("int32")

    # Evaluate FID_N
    for fid_batch_size in fid_batches:
        # sample with replacement
        shuffle(fake_act)
        fid_activations = fake_act[:fid_batch_size]
        m, s = np.mean(fid_activations, axis=0), np.cov(fid_activations, rowvar=False)
        FID = numpy_calculate_frechet_distance(m, s, real_m, real_s)  # noqa: N806
        fids.append(FID)
    fids = np.array(fids).reshape(-1, 1)

    # Fit linear regression
    reg = LinearRegression().fit(1 / fid_batches.reshape(-1, 1), fids)
    fid_infinity = reg.predict(np.array([[0]]))[0, 0]

    return fid_infinity


def calculate_IS_infinity_path(  # noqa: N802 (the reference's name)
    logits, min_fake=5000, num_points=15, shuffle=np.random.shuffle
):
    """``calculate_IS_infinity_path`` after its (softmax) ``logits`` are computed;
    ``shuffle`` replaces ``np.random.shuffle``."""
    num_fake = len(logits)
    assert num_fake > min_fake, (
        "number of fake data must be greater than the minimum point for extrapolation"
    )

    IS = []  # noqa: N806

    # Choose the number of images to evaluate FID_N at regular intervals over N
    IS_batches = np.linspace(min_fake, num_fake, num_points).astype("int32")  # noqa: N806

    # Evaluate IS_N
    for IS_batch_size in IS_batches:  # noqa: N806
        # sample with replacement
        shuffle(logits)
        IS_logits = logits[:IS_batch_size]  # noqa: N806
        IS.append(calculate_inception_score(IS_logits)[0])
    IS = np.array(IS).reshape(-1, 1)  # noqa: N806

    # Fit linear regression
    reg = LinearRegression().fit(1 / IS_batches.reshape(-1, 1), IS)
    IS_infinity = reg.predict(np.array([[0]]))[0, 0]  # noqa: N806

    return IS_infinity


def replaying_shuffle(original: np.ndarray, orders: Sequence[np.ndarray]) -> Callable:
    """A stand-in for ``np.random.shuffle`` whose i-th call rewrites the array (in place, as a
    shuffle does) as ``original[orders[i]]``; ``orders[i]`` is a full permutation of the rows
    whose first N entries are the i-th subset."""
    calls = iter(orders)

    def shuffle(array: np.ndarray) -> None:
        array[...] = original[next(calls)]

    return shuffle


# -- layer6ai-labs/dgm-eval, dgm_eval/metrics/fd.py --------------------------------------------


def compute_statistics(reps):
    """Compute necessary statistics from representtions"""
    mu = np.mean(reps, axis=0)
    sigma = np.cov(reps, rowvar=False)
    mu = np.atleast_1d(mu)
    sigma = np.atleast_2d(sigma)
    return mu, sigma


def compute_FD_with_stats(mu1, mu2, sigma1, sigma2, eps=1e-6):  # noqa: N802
    """fd.py's Fréchet distance, as written (``disp`` dropped, see the module)."""
    assert mu1.shape == mu2.shape, "Training and test mean vectors have different lengths"
    assert sigma1.shape == sigma2.shape, "Training and test covariances have different dimensions"

    diff = mu1 - mu2
    # Product might be almost singular
    covmean = linalg.sqrtm(sigma1.dot(sigma2))
    if not np.isfinite(covmean).all():
        offset = np.eye(sigma1.shape[0]) * eps
        covmean = linalg.sqrtm((sigma1 + offset).dot(sigma2 + offset))

    # Numerical error might give slight imaginary component
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            m = np.max(np.abs(covmean.imag))
            raise ValueError(f"Imaginary component {m}")
        covmean = covmean.real

    tr_covmean = np.trace(covmean)

    mean_term = diff.dot(diff)
    tr1, tr2 = np.trace(sigma1), np.trace(sigma2)
    cov_term = tr1 + tr2 - 2 * tr_covmean

    return mean_term + cov_term


def compute_FD_infinity(reps1, reps2, num_points=15, rng=None):  # noqa: N802
    """fd.py's ``compute_FD_infinity``; ``rng`` replaces ``np.random.default_rng()`` (and the
    progress bar is left out)."""
    fds = []

    # Choose the number of images to evaluate FID_N at regular intervals over N
    fd_batches = np.linspace(min(5000, max(len(reps2) // 10, 2)), len(reps2), num_points).astype(
        "int32"
    )
    mu1, sigma1 = compute_statistics(reps1)

    # Evaluate FD_N
    rng = np.random.default_rng() if rng is None else rng
    for fd_batch_size in fd_batches:
        # sample, replacement allowed for different sample sizes
        fd_activations = rng.choice(reps2, fd_batch_size, replace=False)
        mu2, sigma2 = compute_statistics(fd_activations)
        fds.append(compute_FD_with_stats(mu1, mu2, sigma1, sigma2, eps=1e-6))
    fds = np.array(fds).reshape(-1, 1)

    # Fit linear regression
    reg = LinearRegression().fit(1 / fd_batches.reshape(-1, 1), fds)
    fd_infinity = reg.predict(np.array([[0]]))[0, 0]

    return fd_infinity


class ReplayingChoice:
    """A stand-in for ``np.random.default_rng()`` whose i-th ``choice(a, size,
    replace=False)`` returns ``a[rows[i]]`` (``rows[i]`` of length ``size``)."""

    def __init__(self, rows: Sequence[np.ndarray]) -> None:
        self._rows = iter(rows)

    def choice(self, a: np.ndarray, size: int, replace: bool = True) -> np.ndarray:
        assert replace is False
        rows = next(self._rows)
        assert len(rows) == size
        return a[rows]
