"""Benchmark the ``ssim`` metric against scikit-image on the same batch of image pairs.

A batch of random 64×64 RGB images (``--batch`` 256) and noisy versions of them, float64 in
[0, 1]. The reference is ``skimage.metrics.structural_similarity(..., gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1.0, channel_axis=-1)`` called image by
image (it takes one image at a time); geneval's ``ssim`` metric runs through its ``compute``
(chunks, float64, on ``--device``). Prints both times (best of ``--repeat``), the throughput,
the ratio (target ≥ 5× on a CPU) and the largest difference of the per-image values.

Usage::

    python bench/bench_ssim.py [--batch 256] [--size 64] [--channels 3] [--repeat 3]
                               [--device cpu|cuda] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from skimage.metrics import structural_similarity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.api import PairedImages  # noqa: E402
from geneval.device import resolve_device  # noqa: E402
from geneval_plugins.metrics.representation.ssim import StructuralSimilarity  # noqa: E402
from tests.stub_inputs import StubInputs, compute  # noqa: E402


def best_time(fn, repeat: int):
    times, value = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - start)
    return min(times), value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--channels", type=int, default=3)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    g = torch.Generator().manual_seed(0)
    shape = (args.batch, args.channels, args.size, args.size)
    originals = torch.rand(shape, generator=g, dtype=torch.float64)
    noisy = (originals + 0.1 * torch.randn(shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    inputs = StubInputs(reconstructions=PairedImages(noisy, originals), device=device)
    metric = StructuralSimilarity()
    ref_x = originals.permute(0, 2, 3, 1).numpy()
    ref_y = noisy.permute(0, 2, 3, 1).numpy()

    def reference() -> list[float]:
        return [
            structural_similarity(
                x,
                y,
                gaussian_weights=True,
                sigma=1.5,
                use_sample_covariance=False,
                data_range=1.0,
                channel_axis=-1,
            )
            for x, y in zip(ref_x, ref_y, strict=True)
        ]

    print(
        f"{args.batch} pairs of {args.channels}×{args.size}×{args.size} float64 images; "
        f"device {device}; torch threads {torch.get_num_threads()}"
    )
    compute(metric, inputs)  # warm-up
    t_ours, ours = best_time(lambda: compute(metric, inputs)["per_image"], args.repeat)
    t_ref, ref = best_time(reference, args.repeat)
    diff = float(np.max(np.abs(np.array(ours) - np.array(ref))))
    print(f"  geneval ssim      {t_ours:8.3f} s   {args.batch / t_ours:9.0f} images/s")
    print(f"  scikit-image      {t_ref:8.3f} s   {args.batch / t_ref:9.0f} images/s")
    print(f"  ratio scikit-image / geneval: {t_ref / t_ours:.1f}×   max |Δ| {diff:.1e}")


if __name__ == "__main__":
    main()
