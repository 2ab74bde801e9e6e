"""Benchmark ``fd_infinity`` against Chong & Forsyth's ``calculate_FID_infinity_path`` maths.

Both compute FD∞ of ``--samples`` × ``--dim`` sample features against the statistics of as
many reference features, on the same subsets: geneval draws them with a seeded torch
generator, and the reference (transcribed in ``tests/fid_infinity_reference.py``, with its
``np.random.shuffle`` replaced by one that replays geneval's permutations) takes the same
ones. The reference computes each FD_N with ``np.cov`` and ``scipy.linalg.sqrtm(Σ_N Σ)``;
geneval with the reference's Cholesky factor computed once, a float64 covariance in chunks
and one symmetric eigenvalue problem per N. Prints both times (best of ``--repeat``), the
ratio (above 1: geneval is faster; goal ≥ 5× at 50 000 × 2048) and the relative difference
of the two FD∞. On float32 features the two differ by about 1e-8 relative: the reference
averages float32 activations in float32 (``np.mean``), geneval in float64; with
``--float64`` they agree to float64 round-off.

Usage::

    python bench/bench_fd_inf.py [--samples 50000] [--dim 2048] [--points 15]
        [--min-n 0] [--repeat 1] [--device cpu|cuda] [--float64]

``--min-n 0`` is the grid's rule (5000 from 50 000 samples on, as both references); a
reduced run needs a smaller one, e.g. ``--samples 3000 --dim 256 --min-n 300``.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.device import resolve_device  # noqa: E402
from geneval_plugins.metrics.sample_quality.extrapolation import (  # noqa: E402
    min_subset_size,
    subset_sizes,
)
from geneval_plugins.metrics.sample_quality.fd_inf import fd_infinity  # noqa: E402
from tests import fid_infinity_reference as ref  # noqa: E402


def features(n: int, dim: int, seed: int) -> np.ndarray:
    """ReLU-like, correlated float32 features (n × dim), as Inception's pool3 output."""
    rng = np.random.default_rng(seed)
    mix = (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)
    return np.abs(rng.standard_normal((n, dim), dtype=np.float32) @ mix)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--points", type=int, default=15)
    parser.add_argument("--min-n", type=int, default=0, help="0: the grid's rule")
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--float64", action="store_true", help="float64 features (the reference's means too)"
    )
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    print(f"device {device}; torch threads {torch.get_num_threads()}")
    samples = features(args.samples, args.dim, 0)
    reference = features(args.samples, args.dim, 1)
    if args.float64:
        samples = samples.astype(np.float64)
    mu, sigma = reference.mean(axis=0, dtype=np.float64), np.cov(reference, rowvar=False)
    n = args.samples
    min_n = args.min_n or min_subset_size("mchong6", n)
    sizes = subset_sizes(n, points=args.points, min_n=min_n, metric="bench")
    print(f"{n} × {args.dim} features; N grid {sizes[0]} … {sizes[-1]} ({len(sizes)} points)")

    def ours() -> object:
        generator = torch.Generator().manual_seed(args.seed)
        features_t = torch.from_numpy(samples).to(device)
        mu_t, sigma_t = torch.from_numpy(mu).to(device), torch.from_numpy(sigma).to(device)
        result = fd_infinity(
            features_t, mu_t, sigma_t, points=args.points, min_n=min_n, generator=generator
        )
        if device.type == "cuda":
            torch.cuda.synchronize()
        return result

    def theirs() -> float:
        generator = torch.Generator().manual_seed(args.seed)
        orders = [torch.randperm(n, generator=generator).numpy() for _ in sizes]
        shuffle = ref.replaying_shuffle(samples, orders)
        return ref.calculate_FID_infinity_path(
            samples.copy(), mu, sigma, min_fake=min_n, num_points=args.points, shuffle=shuffle
        )

    t_ours, result = best(ours, args.repeat)
    print(f"  geneval fd_infinity        {t_ours:9.2f}s  FD∞ {result.value:.10f}")
    t_ref, value = best(theirs, args.repeat)
    print(f"  mchong6 (sqrtm per N)      {t_ref:9.2f}s  FD∞ {value:.10f}")
    rel = abs(result.value - value) / abs(value)
    print(f"  ratio {t_ref / t_ours:.1f}×; FD∞ relative difference {rel:.1e}")


def best(fn, repeat: int):  # noqa: ANN001, ANN201
    """Best wall time of ``repeat`` calls, and the last value."""
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


if __name__ == "__main__":
    main()
