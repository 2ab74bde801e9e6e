"""Benchmark precision/recall on features against torch-fidelity's ``prc``, side by side.

Both tools get the same float32 feature arrays (non-negative like pooled ReLU activations,
two slightly different distributions) in one process on one device:

1. geneval: :func:`manifold_metrics` with ``{"precision": k, "recall": k}`` — one blocked
   k-NN pass per set (symmetric blocks only) and one pass over the sample × reference blocks
   whose row and column minima decide precision and recall (the near-ties measured again);
2. torch-fidelity: ``prc_features_to_metric`` with its defaults (``prc_batch_size=10000``,
   ``save_cpu_ram=False``: the full distance matrices, then ``kthvalue``).

Each is timed ``--repeat`` times, best time kept, as wall-clock time and as the CPU time of
the process (all threads; on a CPU shared with other jobs the wall-clock ratio is noisy, the
CPU-time ratio much less). Prints the times, the ratios (torch-fidelity time / geneval time;
above 1 means geneval is faster) and the values side by side (the counts must agree:
torch-fidelity rounds its fractions to float32). Goal: ≥ 2× on a CPU.

Usage::

    python bench/bench_prc.py [--n 10000] [--dim 2048] [--k 3] [--device cpu|cuda] [--repeat 2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval_plugins.metrics.sample_quality.manifold import manifold_metrics  # noqa: E402


def features(n: int, dim: int, seed: int, shift: float) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, dim, generator=gen) + shift).clamp_min_(0.0)


def best_time(fn, repeat: int) -> tuple[float, float, object]:
    """Best wall-clock and best process CPU time over ``repeat`` calls, and the last result."""
    best_wall, best_cpu, result = float("inf"), float("inf"), None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10000, help="features per set")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--k", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    from torch_fidelity.metric_prc import prc_features_to_metric

    device = torch.device(args.device)
    samples = features(args.n, args.dim, 1, 0.02).to(device)
    reference = features(args.n, args.dim, 2, 0.0).to(device)
    print(
        f"{args.n} × {args.n} features of {args.dim}-d, k={args.k}, device {device}, "
        f"{torch.get_num_threads()} threads"
    )

    wall_ours, cpu_ours, ours = best_time(
        lambda: manifold_metrics(samples, reference, {"precision": args.k, "recall": args.k}),
        args.repeat,
    )
    wall_ref, cpu_ref, ref = best_time(
        lambda: prc_features_to_metric(
            samples, reference, prc_neighborhood=args.k, verbose=False, save_cpu_ram=False
        ),
        args.repeat,
    )
    print("               wall (s)   CPU (s)")
    print(f"geneval        {wall_ours:8.2f}  {cpu_ours:8.2f}   {ours}")
    print(
        f"torch-fidelity {wall_ref:8.2f}  {cpu_ref:8.2f}   "
        f"precision {ref['precision']} recall {ref['recall']}"
    )
    print(f"ratio          {wall_ref / wall_ours:7.2f}×  {cpu_ref / cpu_ours:7.2f}×")
    for name in ("precision", "recall"):
        same = round(ours[name] * args.n) == round(ref[name] * args.n)
        print(f"{name}: {'same decisions' if same else 'DIFFERENT counts'}")


if __name__ == "__main__":
    main()
