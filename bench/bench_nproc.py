"""``geneval run --nproc N`` scaling: wall time and FID of one run sharded over N processes.

Two folders of ``--num-images`` PNG photo crops (128×128, from scikit-image's photos) are
compared with ``geneval run --samples A --reference B --metrics fid --nproc N`` (Inception,
tf1 resize, no feature cache), each N of ``--nproc`` in a fresh process timed from start to
exit, as a user runs it. Prints, per N, the wall time, images per second (both folders), the
speed-up over the first N, and the FID with its relative difference from the first N's: the
shards' moments merge by Chan et al.'s pairwise update, so the values agree to float64
summation order (≪ 1e-6 relative; ``docs/contracts.md`` §12). The goal: close to N-fold on N
cores while extraction dominates the start-up.

On ``--device cuda`` each rank takes the GPU ``LOCAL_RANK``, so N is capped at the number of
GPUs (an N beyond it is skipped with a note); on one GPU only N = 1 runs there, and the CPU
ranks give the scaling.

Inception weights are the real file when it is in the torch hub cache (or given with
``--weights``), else deterministic random weights in the published key layout.

Usage::

    python bench/bench_nproc.py [--device cpu|cuda] [--num-images 256] [--nproc 1,2,4]
        [--batch-size 32] [--weights PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_precision import weights_file  # noqa: E402
from tests.inception_fixtures import photo_crops, write_png_folder  # noqa: E402


def run_once(
    folders: list[Path], weights: Path, device: str, nproc: int, batch: int, out: Path
) -> tuple[float, float | None, str]:
    """Seconds, FID (None on failure) and the error tail of one ``geneval run --nproc``."""
    command = [
        sys.executable,
        "-m",
        "geneval",
        "run",
        "--samples",
        str(folders[0]),
        "--reference",
        str(folders[1]),
        "--metrics",
        "fid",
        "--extractor",
        "inception-v3-fid",
        "--extractor-weights",
        str(weights),
        "--device",
        device,
        "--nproc",
        str(nproc),
        "--batch-size",
        str(batch),
        "--no-cache",
        "--quiet",
        "--force",
        "--json",
        str(out),
    ]
    if nproc > (os.cpu_count() or 1):
        command.append("--oversubscribe")
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, check=False)
    seconds = time.perf_counter() - start
    if done.returncode not in (0, 1) or not out.is_file():
        lines = (done.stderr or done.stdout).strip().splitlines()
        return seconds, None, lines[-1] if lines else f"exit {done.returncode}"
    report = json.loads(out.read_text())
    return seconds, float(report["metrics"]["fid"]["value"]), ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num-images", type=int, default=256, help="per folder")
    parser.add_argument("--nproc", default="1,2,4", help="comma-separated process counts")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    counts = [int(c) for c in args.nproc.split(",") if c.strip()]
    if not counts or min(counts) < 1 or args.num_images < 2:
        parser.error("--nproc needs counts ≥ 1 and --num-images ≥ 2")
    gpus = 0
    if args.device.startswith("cuda"):
        import torch

        gpus = torch.cuda.device_count()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        weights, what = weights_file(args.weights, workdir)
        n = args.num_images
        folders = [
            write_png_folder(workdir / "a", photo_crops(n, seed=1, sizes=((128, 128),))),
            write_png_folder(workdir / "b", photo_crops(n, seed=2, sizes=((128, 128),))),
        ]
        print(f"geneval run --nproc N --device {args.device}: {n} + {n} 128×128 PNGs, fid; {what}")
        print(f"cores {os.cpu_count()}; batch {args.batch_size}")
        head = f"{'N':>3s} {'seconds':>9s} {'images/s':>9s} {'speed-up':>9s}"
        print(f"  {head} {'fid':>14s} {'vs first':>9s}")
        first: tuple[float, float] | None = None
        for count in counts:
            if gpus and count > gpus:
                print(f"  {count:3d} skipped: {gpus} GPU(s), one per rank")
                continue
            seconds, value, error = run_once(
                folders, weights, args.device, count, args.batch_size, workdir / f"{count}.json"
            )
            if value is None:
                print(f"  {count:3d} {seconds:9.2f} failed: {error}")
                continue
            first = first or (seconds, value)
            print(
                f"  {count:3d} {seconds:9.2f} {2 * n / seconds:9.1f} {first[0] / seconds:8.2f}× "
                f"{value:14.8f} {abs(value - first[1]) / abs(first[1]):9.1e}"
            )


if __name__ == "__main__":
    main()
