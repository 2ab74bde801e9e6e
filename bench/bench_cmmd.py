"""Benchmark ``cmmd`` against the numpy transcription of google-research/cmmd ``distance.py``.

Two measurements on L2-normalised float64 embeddings (``--dim``-d, 768 as CLIP ViT-L/14):

* geneval's blocked :func:`mmd_rbf` against the reference ``mmd`` (``tests/cmmd_reference.py``,
  full n × n kernel matrices: 8 n² bytes each, several alive at once) at ``--compare`` per
  side (default 10 000: 0.8 GB per matrix; 30 000 would need 7.2 GB per matrix). Prints both
  times, the ratio (above 1: geneval is faster; goal ≥ 5×) and the difference of the values.
* geneval alone at ``--samples`` per side (default 30 000 × 30 000): time and peak memory
  above the embeddings themselves (the process's peak resident set on the CPU, measured
  before the reference runs; ``torch.cuda.max_memory_allocated`` on a GPU).

Usage::

    python bench/bench_cmmd.py [--samples 30000] [--compare 10000] [--dim 768]
        [--device cpu|cuda] [--repeat 1]

A reduced run: ``--samples 6000 --compare 3000 --repeat 3``. On a shared machine, pin the
threads (``OMP_NUM_THREADS=1``) so that both sides run alike.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.device import resolve_device  # noqa: E402
from geneval_plugins.metrics.sample_quality.cmmd import mmd_rbf  # noqa: E402
from tests.cmmd_reference import mmd as reference_mmd  # noqa: E402


def embeddings(n: int, dim: int, seed: int, shift: float) -> np.ndarray:
    """``n`` unit-norm float64 rows, correlated as CLIP embeddings are (a shared mean
    direction plus noise); ``shift`` moves the mean direction."""
    rng = np.random.default_rng(seed)
    mean = np.ones(dim) / np.sqrt(dim)
    mean[: dim // 8] += shift
    x = rng.standard_normal((n, dim)) * 0.04 + mean
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def peak_rss_mib() -> float:
    """The process's peak resident set so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn, repeat: int = 1):  # noqa: ANN001, ANN201
    """The shortest wall time of ``repeat`` calls, and the value."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def main() -> None:
    """Run both measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=30_000)
    parser.add_argument("--compare", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=768)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeat", type=int, default=1, help="best of this many calls")
    args = parser.parse_args()
    device = resolve_device(args.device)
    print(f"device {device}, {torch.get_num_threads()} threads, dim {args.dim}")

    x = embeddings(args.samples, args.dim, 0, 0.0)
    y = embeddings(args.samples, args.dim, 1, 0.01)
    xt, yt = torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = peak_rss_mib()
    seconds, value = timed(lambda: mmd_rbf(xt, yt))
    if device.type == "cuda":
        torch.cuda.synchronize()
        extra = (torch.cuda.max_memory_allocated() - base) / 2**20
    else:
        extra = peak_rss_mib() - base
    inputs = 2 * x.nbytes / 2**20
    print(
        f"geneval {args.samples} x {args.samples}: {seconds:.2f} s, CMMD {value:.9f}, peak "
        f"memory above the embeddings {extra:.0f} MiB (embeddings {inputs:.0f} MiB)"
    )

    n = args.compare
    xs, ys = x[:n], y[:n]
    seconds_g, value_g = timed(lambda: mmd_rbf(xt[:n], yt[:n]), args.repeat)
    seconds_r, value_r = timed(lambda: reference_mmd(xs, ys), args.repeat)
    print(
        f"{n} x {n}: geneval {seconds_g:.2f} s, reference {seconds_r:.2f} s, "
        f"ratio {seconds_r / seconds_g:.1f}x; values {value_g:.12f} and {value_r:.12f}, "
        f"difference {abs(value_g - value_r):.2e}"
    )


if __name__ == "__main__":
    main()
