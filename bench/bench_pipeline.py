"""Benchmark a whole ``geneval run`` against a bare batched forward of the same network.

The pipeline's overhead is everything that is not the convolution: decoding the PNG files,
the tf1 resize, the cache's file hashing, collation, the running statistics and the report.
Both sides use the same FID Inception network (the real weights when they are in the torch
hub cache, else deterministic random weights in the published layout: the cost does not
depend on the values), on the same device, threads and batch size:

1. pipeline: ``geneval run --samples FOLDER --reference STATS --metrics fid`` through the
   runner (the feature cache on, in a fresh ``$GENEVAL_CACHE``, as a first run finds it);
2. bare forward: the loaded network called on the same images, already decoded and resized
   to 299×299 channels-last float32 tensors in memory (not timed), batch after batch under
   ``torch.inference_mode``.

Prints the times and two ratios: the bare forward over the pipeline, and the network's
loading plus the bare forward (what a minimal script of one's own does) over the pipeline,
which also loads it (1 would be a pipeline that costs nothing beyond the network; goal
≥ 0.9); and, for the profile, the time of the tf1 resize of all the images on its own.
``--profile`` adds the pipeline's top functions by cumulative time.

Usage::

    python bench/bench_pipeline.py [--num-images 1000] [--size 128] [--batch-size 64]
        [--device auto|cpu|cuda] [--profile]
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_fid import prepare_weights  # noqa: E402
from geneval import stats  # noqa: E402
from geneval.device import resolve_device  # noqa: E402
from geneval.progress import set_quiet  # noqa: E402
from geneval.runner import RunConfig, run_report  # noqa: E402
from geneval_plugins.extractors.inception import InceptionV3FID  # noqa: E402
from geneval_plugins.extractors.resize import resize_for_inception  # noqa: E402
from tests.inception_fixtures import photo_crops, write_png_folder  # noqa: E402


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def pipeline(folder: Path, reference: Path, device: torch.device, batch_size: int) -> float:
    """FID of ``folder`` against ``reference`` as ``geneval run`` computes it."""
    report = run_report(
        RunConfig(
            metrics=["fid"],
            samples=str(folder),
            reference=str(reference),
            device=str(device),
            batch_size=batch_size,
        )
    )
    return report["metrics"]["fid"]["value"]


def bare_forward(network, batches: list[torch.Tensor], device: torch.device) -> torch.Tensor:
    """The network's pool features of every prepared batch, nothing else."""
    out = []
    with torch.inference_mode():
        for x in batches:
            out.append(network(x)["pool"])
    synchronize(device)
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--size", type=int, default=128, help="side of the PNG images")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    set_quiet(True)
    device = resolve_device(args.device)
    n, b = args.num_images, args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        what = prepare_weights(args.weights, workdir)
        os.environ["GENEVAL_CACHE"] = str(workdir / "cache")
        sizes = ((args.size, args.size),)
        images = photo_crops(n, seed=1, sizes=sizes)
        folder = write_png_folder(workdir / "samples", images)
        ref_folder = write_png_folder(workdir / "ref", photo_crops(64, seed=2, sizes=sizes))
        reference = workdir / "ref.npz"
        stats(str(ref_folder), output=reference, device=str(device))
        print(
            f"device {device}, {torch.get_num_threads()} threads; {n} PNG images of "
            f"{args.size}×{args.size}, batch {b}; {what}"
        )

        start = time.perf_counter()
        loaded = InceptionV3FID().load(device=device)
        t_load = time.perf_counter() - start
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float().div_(255.0)
        start = time.perf_counter()
        resized = [resize_for_inception(x[i : i + b].to(device), "tf1") for i in range(0, n, b)]
        synchronize(device)
        t_resize = time.perf_counter() - start
        batches = [r.contiguous(memory_format=torch.channels_last) for r in resized]
        bare_forward(loaded.network, batches[:1], device)  # warm-up (cuDNN autotuning)
        start = time.perf_counter()
        bare_forward(loaded.network, batches, device)
        t_bare = time.perf_counter() - start
        del batches, resized

        profiler = cProfile.Profile() if args.profile else None
        start = time.perf_counter()
        if profiler:
            profiler.enable()
        fid = pipeline(folder, reference, device, b)
        if profiler:
            profiler.disable()
        t_run = time.perf_counter() - start
    print(f"network load      {t_load:8.2f} s")
    print(f"bare forward      {t_bare:8.2f} s")
    print(f"geneval run       {t_run:8.2f} s   fid={fid:.6f} (load, decode, resize, forward, FID)")
    print(f"  tf1 resize alone {t_resize:7.2f} s")
    print(f"ratio bare forward / pipeline:          {t_bare / t_run:.3f}")
    print(f"ratio (load + bare forward) / pipeline: {(t_load + t_bare) / t_run:.3f} (goal ≥ 0.9)")
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(45)


if __name__ == "__main__":
    main()
