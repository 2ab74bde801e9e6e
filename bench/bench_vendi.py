"""Benchmark ``vendi_score`` against the ``vendi-score`` package, and its memory at full size.

Three measurements on ReLU-like ``--dim``-d features:

* geneval at ``--samples`` (default 50 000 × 2048): time and peak memory above the features
  themselves (the process's peak resident set on the CPU, measured first, before the
  package's kernel; ``torch.cuda.max_memory_allocated`` on a GPU). The d × d Gram form keeps
  it at ``O(d²)`` plus one chunk of rows.
* geneval against ``vendi_score.vendi.score_X`` (the package's default route: the n × n
  cosine kernel, 8 n² bytes, and a dense n × n eigensolver) at ``--compare`` samples (default
  10 000, 0.8 GB; 50 000 would need 20 GB), on float64 features (the package computes in the
  features' type). Prints both times, the ratio (above 1: geneval is faster; goal ≥ 10×)
  and the relative difference of the values.
* the package's own d × d route, ``score_dual``, at ``--samples``, for comparison.

Usage::

    python bench/bench_vendi.py [--samples 50000] [--compare 10000] [--dim 2048]
        [--device cpu|cuda]

A reduced run: ``--samples 5000 --compare 2000 --dim 256``.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.device import resolve_device  # noqa: E402
from geneval_plugins.metrics.sample_quality.vendi import vendi_score  # noqa: E402


def features(n: int, dim: int, seed: int) -> np.ndarray:
    """ReLU-like, correlated float32 features (n × dim)."""
    rng = np.random.default_rng(seed)
    mix = (rng.standard_normal((dim, dim)) / np.sqrt(dim)).astype(np.float32)
    return np.abs(rng.standard_normal((n, dim), dtype=np.float32) @ mix)


def peak_rss_mib() -> float:
    """The process's peak resident set so far (MiB; Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn):  # noqa: ANN001, ANN201
    """Wall time of one call, and its value."""
    start = time.perf_counter()
    value = fn()
    return time.perf_counter() - start, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50_000)
    parser.add_argument("--compare", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    from vendi_score import vendi

    device = resolve_device(args.device)
    print(f"device {device}; torch threads {torch.get_num_threads()}")
    x = features(args.samples, args.dim, 0)
    tensor = torch.from_numpy(x).to(device)
    base = peak_rss_mib()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t_full, v_full = timed(lambda: vendi_score(tensor, device=device))
    if device.type == "cuda":
        extra = (torch.cuda.max_memory_allocated() - tensor.nbytes) / 2**20
        where = "GPU memory above the features"
    else:
        extra = peak_rss_mib() - base
        where = "peak RSS above the features"
    print(
        f"geneval, {args.samples} × {args.dim}: {t_full:.2f}s, Vendi {v_full:.10f}; "
        f"{where}: {extra:.0f} MiB (features {x.nbytes / 2**20:.0f} MiB; an n × n float64 "
        f"kernel would be {8 * args.samples**2 / 2**30:.1f} GiB)"
    )

    n = args.compare
    x64 = x[:n].astype(np.float64)
    sub = torch.from_numpy(x[:n]).to(device)
    t_ours, ours = timed(lambda: vendi_score(sub, device=device))
    t_pkg, theirs = timed(lambda: vendi.score_X(x64))
    rel = abs(ours - theirs) / theirs
    print(f"n = {n}: geneval {t_ours:.2f}s ({ours:.10f}); vendi-score score_X {t_pkg:.2f}s")
    print(f"  ({theirs:.10f}); ratio {t_pkg / t_ours:.1f}×; relative difference {rel:.1e}")
    x64 = None  # free the copy before the full-size one
    full64 = x.astype(np.float64)
    t_dual, dual = timed(lambda: vendi.score_dual(full64))
    rel = abs(v_full - dual) / dual
    print(
        f"n = {args.samples}: vendi-score score_dual (its d × d route) {t_dual:.2f}s "
        f"({dual:.10f}); ratio {t_dual / t_full:.1f}×; relative difference {rel:.1e}"
    )


if __name__ == "__main__":
    main()
