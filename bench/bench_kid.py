"""Benchmark KID on features against torch-fidelity's ``kid``, side by side, same draws.

Both tools get the same float32 feature arrays (non-negative like pooled ReLU activations)
in one process on one device, and the same subsets: geneval's ``rng=torch-fidelity``
(``numpy.random.RandomState(2020)``, ``choice(n, m, replace=False)`` per subset and set) is
torch-fidelity's own sequence.

1. geneval: :func:`kernel_inception_distance` on the route :func:`kid_route` picks — the
   full kernel matrices once, in row blocks reduced against the subsets' indicator columns
   (``blocks``), or the subsets of a chunk gathered into one batched product (``subsets``);
   float32 inner products and kernel, float64 sums;
2. torch-fidelity: ``kid_features_to_metric`` with its defaults (one subset at a time, numpy,
   float32 throughout).

Each is timed ``--repeat`` times, best time kept, as wall-clock time and as the CPU time of
the process. Prints the times, the ratios (torch-fidelity time / geneval time; above 1 means
geneval is faster) and the values side by side, with the float64 value of the same subsets as
the arbiter (``--check`` subsets recomputed in float64 by explicit sums). Goal: ≥ 1×.

Usage::

    python bench/bench_kid.py [--n 5000] [--dim 2048] [--subsets 100] [--subset-size 1000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_prc import best_time, features  # noqa: E402
from geneval_plugins.metrics.sample_quality.kid import (  # noqa: E402
    kernel_inception_distance,
    kid_route,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=5000, help="features per set")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--subsets", type=int, default=100)
    parser.add_argument("--subset-size", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()

    from torch_fidelity.metric_kid import kid_features_to_metric

    device = torch.device(args.device)
    samples = features(args.n, args.dim, 1, 0.02).to(device)
    reference = features(args.n, args.dim, 2, 0.0).to(device)
    print(
        f"{args.n} × {args.n} features of {args.dim}-d, {args.subsets} subsets of "
        f"{args.subset_size}, device {device}, {torch.get_num_threads()} threads, route "
        f"{kid_route(args.n, args.n, args.dim, args.subsets, min(args.subset_size, args.n))}"
    )
    wall_ours, cpu_ours, ours = best_time(
        lambda: kernel_inception_distance(
            samples,
            reference,
            subsets=args.subsets,
            subset_size=args.subset_size,
            generator=np.random.RandomState(2020),
        ),
        args.repeat,
    )
    wall_ref, cpu_ref, ref = best_time(
        lambda: kid_features_to_metric(
            samples.cpu(),
            reference.cpu(),
            kid_subsets=args.subsets,
            kid_subset_size=args.subset_size,
            verbose=False,
        ),
        args.repeat,
    )
    exact = kernel_inception_distance(
        samples.double(),
        reference.double(),
        subsets=args.subsets,
        subset_size=args.subset_size,
        generator=np.random.RandomState(2020),
    )
    print("               wall (s)   CPU (s)   KID (mean, std)")
    print(f"geneval        {wall_ours:8.2f}  {cpu_ours:8.2f}   {ours.value:.10g}  {ours.std:.6g}")
    print(
        f"torch-fidelity {wall_ref:8.2f}  {cpu_ref:8.2f}   "
        f"{ref['kernel_inception_distance_mean']:.10g}  {ref['kernel_inception_distance_std']:.6g}"
    )
    print(f"float64        {'':8}  {'':8}   {exact.value:.10g}  {exact.std:.6g}")
    print(f"ratio          {wall_ref / wall_ours:7.2f}×  {cpu_ref / cpu_ours:7.2f}×")
    for name, value in (
        ("geneval", ours.value),
        ("torch-fidelity", ref["kernel_inception_distance_mean"]),
    ):
        print(f"{name}: {abs(value / exact.value - 1):.2e} relative from float64")


if __name__ == "__main__":
    main()
