"""Benchmark what the HTML report adds to a run, and its neighbour search against scikit-learn.

1. A run of ``--samples`` noise images (64×64 RGB, incompressible: the worst case for PNG)
   against a reference of ``--reference`` images through ``digits-cnn`` (cheap, so the
   report's own cost shows), with and without the report's images (``--html``: grids of 64
   and the neighbour panel); prints both
   times, the report step and the HTML size.
2. :func:`geneval.report.neighbours.nearest_neighbours` (float32 ``torch.cdist`` blocks) of 8 and of
   256 queries against ``--ref-rows`` reference features of ``--dim`` dimensions, against
   scikit-learn's ``NearestNeighbors(algorithm="brute")`` on the same features, side by side;
   prints both times, the ratio (above 1: geneval faster) and whether the neighbours agree.

Usage::

    python bench/bench_report.py [--samples 10000] [--reference 2000] [--ref-rows 50000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.neighbors import NearestNeighbors

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.report.html import to_html  # noqa: E402
from geneval.report.neighbours import nearest_neighbours  # noqa: E402
from geneval.runner import Evaluation, RunConfig  # noqa: E402


def timed(fn, repeat: int = 1):
    best, value = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def bench_run(samples: int, reference: int) -> None:
    rng = np.random.default_rng(0)
    s = rng.integers(0, 256, size=(samples, 64, 64, 3), dtype=np.uint8)
    r = rng.integers(0, 256, size=(reference, 64, 64, 3), dtype=np.uint8)

    def run(pictures: bool):
        config = RunConfig(
            metrics=["fid", "kid"], samples=s, reference=r, extractor="digits-cnn",
            device="cpu", grid=64 if pictures else 0, neighbours=8 if pictures else 0,
            options={"kid": {"subsets": 10}}, cache=False,
        )  # fmt: skip
        evaluation = Evaluation(config)
        report = evaluation.execute()
        report["passed"] = True
        page = to_html(report, evaluation.visuals) if pictures else ""
        return report["timings"].get("report", 0.0), len(page.encode("utf-8"))

    plain, _ = timed(lambda: run(False))
    with_html, (report_step, size) = timed(lambda: run(True))
    print(f"run, {samples} samples vs {reference} reference (digits-cnn, fid+kid):")
    print(f"  without report images {plain:.2f} s, with --html {with_html:.2f} s")
    print(f"  report step (grids, neighbours) {report_step:.3f} s; HTML {size / 1e6:.2f} MB")


def bench_neighbours(rows: int, dim: int, repeat: int) -> None:
    rng = np.random.default_rng(1)
    reference = np.abs(rng.standard_normal((rows, dim))).astype(np.float32)
    tree = NearestNeighbors(n_neighbors=4, algorithm="brute")
    fit_time, _ = timed(lambda: tree.fit(reference), repeat)
    for q in (8, 256):
        queries = reference[rng.choice(rows, q, replace=False)] + 0.01
        ours_time, (_, ours) = timed(
            lambda queries=queries: nearest_neighbours(
                torch.from_numpy(queries), torch.from_numpy(reference), 4
            ),
            repeat,
        )
        ref_time, (_, theirs) = timed(lambda queries=queries: tree.kneighbors(queries), repeat)
        agree = float((ours.numpy() == theirs).mean())
        print(
            f"neighbours, {q} queries × {rows} × {dim}: geneval {ours_time:.3f} s, scikit-learn "
            f"{ref_time:.3f} s (+ fit {fit_time:.3f} s), ratio {ref_time / ours_time:.2f}, "
            f"same neighbours {agree:.1%}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--reference", type=int, default=2_000)
    parser.add_argument("--ref-rows", type=int, default=50_000)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_run(args.samples, args.reference)
    bench_neighbours(args.ref_rows, args.dim, args.repeat)


if __name__ == "__main__":
    main()
