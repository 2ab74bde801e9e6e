"""Benchmark ``frechet_distance`` against scipy ``sqrtm`` on 2048-d stats, full rank and singular.

Two regimes, side by side in one run:

* full rank: moments of two random feature sets of ``--samples`` × ``--dim`` (n > d), as a
  real FID run produces; geneval takes the Cholesky route.
* singular: ``--small`` × ``--dim`` feature sets (n ≤ d, so Σ has rank n − 1 < d); geneval
  is given the centred features (:func:`covariance_factor`, timed with it) and takes the
  small-side route, from one side (n × n matrix ``F₁Σ₂F₁ᵀ``) or both (singular values of
  ``F₁F₂ᵀ``). The d × d eigen fallback (no factors given) is timed for comparison, and so is
  the ``fid`` metric itself on statistics accumulated batch by batch
  (:class:`~geneval.feature_stats.FeatureStatistics`, which keep the rows while n ≤ d): the
  mean, the covariance and the factor taken from the kept rows, then the distance, as a run
  computes it.

The reference is the classic float64 route of pytorch-fid and TTUR:
``scipy.linalg.sqrtm(Σ₁Σ₂)``, real part, trace. Prints the times (best of ``--repeat``), the
ratio (above 1: geneval is faster; target ≥ 10×) and the relative difference of the values
from sqrtm's and from geneval's without factors (singular: the eigen fallback's).

Usage::

    python bench/bench_frechet.py [--dim 2048] [--samples 4096] [--small 500] [--repeat 3]
        [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.device import resolve_device  # noqa: E402
from geneval.feature_stats import FeatureStatistics  # noqa: E402
from geneval.plugins import get_registry  # noqa: E402
from geneval_plugins.metrics.sample_quality.fid import (  # noqa: E402
    covariance_factor,
    frechet_distance,
)


def sqrtm_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The scipy ``sqrtm`` route (pytorch-fid's ``calculate_frechet_distance`` without retries)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def features(n: int, dim: int, seed: int) -> np.ndarray:
    """ReLU-like, correlated features (n × dim)."""
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    return np.abs(rng.standard_normal((n, dim)) @ mix)


def best_time(fn: Callable[[], float], repeat: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


@dataclass
class _Inputs:
    """The inputs the ``fid`` metric reads: the two sides' statistics."""

    samples: FeatureStatistics
    reference: FeatureStatistics
    device: torch.device

    def stats(self, source: str) -> FeatureStatistics:
        return self.samples if source == "samples" else self.reference


def accumulated(x: torch.Tensor, batch: int = 100) -> FeatureStatistics:
    """The running statistics of ``x`` fed batch by batch, as a run's pass feeds them."""
    stats = FeatureStatistics(x.shape[1], device=x.device)
    for part in x.split(batch):
        stats.update(part)
    return stats


def regime(title: str, n: int, dim: int, repeat: int, device: torch.device) -> None:
    """Time geneval's routes and scipy ``sqrtm`` on one pair of feature sets; print a table."""
    x1, x2 = features(n, dim, 0), features(n, dim, 1)
    mu1, s1 = x1.mean(axis=0), np.cov(x1, rowvar=False)
    mu2, s2 = x2.mean(axis=0), np.cov(x2, rowvar=False)
    stats = [torch.from_numpy(a).to(device) for a in (mu1, s1, mu2, s2)]
    t1, t2 = (torch.from_numpy(x).to(device) for x in (x1, x2))
    print(f"{title}: {dim}-d statistics from {n} samples per side (rank {min(n - 1, dim)})")
    t_ref, ref = best_time(lambda: sqrtm_fid(mu1, s1, mu2, s2), repeat)
    rows: list[tuple[str, Callable[[], float]]] = [
        ("geneval, no factors", lambda: frechet_distance(*stats)),
    ]
    if n <= dim:
        rows += [
            (
                "geneval, features of side 1",
                lambda: frechet_distance(*stats, factor1=covariance_factor(t1)),
            ),
            (
                "geneval, features of both",
                lambda: frechet_distance(
                    *stats, factor1=covariance_factor(t1), factor2=covariance_factor(t2)
                ),
            ),
        ]
        metric = get_registry().metric("fid")
        inputs = _Inputs(accumulated(t1), accumulated(t2), device)
        rows += [("fid metric, rows kept", lambda: metric.compute(inputs)["value"])]
    head = f"{'route':30s} {'time':>9s} {'sqrtm/ours':>11s} {'value':>18s}"
    print(f"  {head} {'vs sqrtm':>9s} {'vs no factors':>13s}")
    print(f"  {'scipy sqrtm':30s} {t_ref:8.3f}s {'':11s} {ref:18.10f}")
    base = None
    for label, fn in rows:
        t, value = best_time(fn, repeat)
        base = value if base is None else base
        rel, rel_base = abs(value - ref) / abs(ref), abs(value - base) / abs(base)
        print(
            f"  {label:30s} {t:8.3f}s {t_ref / t:10.1f}× {value:18.10f} {rel:9.1e} {rel_base:13.1e}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=4096, help="per side, full-rank regime")
    parser.add_argument("--small", type=int, default=500, help="per side, singular regime")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    print(f"device {device}; torch threads {torch.get_num_threads()}")
    regime("full rank", args.samples, args.dim, args.repeat, device)
    regime("singular", args.small, args.dim, args.repeat, device)


if __name__ == "__main__":
    main()
