"""Benchmark ``frechet_distance`` (Cholesky + eigenvalues) against scipy ``sqrtm`` on 2048-d stats.

The statistics are the moments of two random feature sets (n × 2048, full rank), as a real
FID run produces. The reference is the classic float64 route of pytorch-fid and TTUR:
``scipy.linalg.sqrtm(Σ₁Σ₂)``, real part, trace. Prints both times (best of ``--repeat``), the
ratio (above 1: geneval is faster; target ≥ 10×) and the relative difference of the values.

Usage::

    python bench/bench_frechet.py [--dim 2048] [--repeat 3] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy.linalg
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.device import resolve_device  # noqa: E402
from geneval_plugins.metrics.sample_quality.fid import frechet_distance  # noqa: E402


def sqrtm_fid(mu1: np.ndarray, s1: np.ndarray, mu2: np.ndarray, s2: np.ndarray) -> float:
    """The scipy ``sqrtm`` route (pytorch-fid's ``calculate_frechet_distance`` without retries)."""
    covmean = scipy.linalg.sqrtm(s1 @ s2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))


def moments(n: int, dim: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mix = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    x = np.abs(rng.standard_normal((n, dim)) @ mix)  # ReLU-like, correlated features
    return x.mean(axis=0), np.cov(x, rowvar=False)


def best_time(fn, repeat: int) -> tuple[float, float]:
    times, value = [], 0.0
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--samples", type=int, default=4096)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    mu1, s1 = moments(args.samples, args.dim, 0)
    mu2, s2 = moments(args.samples, args.dim, 1)
    stats = [torch.from_numpy(a).to(device) for a in (mu1, s1, mu2, s2)]
    print(
        f"{args.dim}-d statistics from {args.samples} samples; device {device}; "
        f"torch threads {torch.get_num_threads()}"
    )
    t_ours, ours = best_time(lambda: frechet_distance(*stats), args.repeat)
    t_ref, ref = best_time(lambda: sqrtm_fid(mu1, s1, mu2, s2), args.repeat)
    print(f"  geneval frechet_distance  {t_ours:8.3f} s   {ours:.10f}")
    print(f"  scipy sqrtm               {t_ref:8.3f} s   {ref:.10f}")
    print(
        f"  ratio sqrtm / geneval: {t_ref / t_ours:.1f}×   relative difference "
        f"{abs(ours - ref) / abs(ref):.2e}"
    )


if __name__ == "__main__":
    main()
