"""Benchmark the bundled digits DDPM: the embedded default run, and DDIM-50 vs ancestral-1000.

1. Times ``geneval run --model ddpm --metrics fid,kid --quiet`` end to end (a fresh process:
   start-up, model loading, 1000 samples with the checkpoint's default sampler, digits-cnn
   features, FID and KID against ``digits:train``). Target: under 60 s on a 2-core CPU.
2. Samples 1000 images with DDIM (50 steps, η = 0) and with ancestral sampling (1000 steps,
   σ_t² = β_t) from the same checkpoint, and prints each one's time and FID(digits-cnn) against
   ``digits:train`` (float64, eigenvalue route), with their ratios.

Usage::

    OMP_NUM_THREADS=2 python bench/bench_ddpm.py [--num-samples 1000] [--skip-cli]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from model_run_timing import time_model_run

from geneval.plugins import get_registry
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.metrics.sample_quality.fid import frechet_distance


def _features(images: torch.Tensor) -> np.ndarray:
    extractor = get_registry().extractor("digits-cnn").load(device=torch.device("cpu"))
    return extractor(torch.round(images * 255) / 255)["features"].double().numpy()


def _fid(features: np.ndarray, reference: np.ndarray) -> float:
    mu1, mu2 = features.mean(0), reference.mean(0)
    s1, s2 = np.cov(features, rowvar=False), np.cov(reference, rowvar=False)
    return float(frechet_distance(mu1, s1, mu2, s2))


def bench_samplers(num_samples: int, batch_size: int) -> dict[str, dict[str, float]]:
    """Time and FID of DDIM-50 and ancestral-1000 samples of the bundled checkpoint."""
    model = get_registry().model("ddpm").load(None, device=torch.device("cpu"))
    reference = _features(DigitsDataset().load("train").images)
    out = {}
    for label, sampler, steps in (("ddim-50", "ddim", 50), ("ancestral-1000", "ancestral", None)):
        gen = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        images = model.sample(
            num_samples, batch_size=batch_size, generator=gen, sampler=sampler, steps=steps
        )
        elapsed = time.perf_counter() - start
        out[label] = {"seconds": elapsed, "fid": _fid(_features(images), reference)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--skip-cli", action="store_true", help="skip the end-to-end CLI run")
    args = parser.parse_args()
    print(f"torch threads: {torch.get_num_threads()}")
    if not args.skip_cli:
        cli = time_model_run("ddpm", args.num_samples)
        print(
            f"geneval run --model ddpm --metrics fid,kid: {cli['seconds']:.1f} s "
            f"(target < 60 s; {cli['seconds'] / 60:.2f}× the target), "
            f"fid {cli['fid']:.3f}, kid {cli['kid']:.5f}"
        )
    runs = bench_samplers(args.num_samples, args.batch_size)
    for label, r in runs.items():
        print(f"{label:>15}: {r['seconds']:7.1f} s  FID(digits-cnn vs digits:train) {r['fid']:.3f}")
    ddim, anc = runs["ddim-50"], runs["ancestral-1000"]
    print(
        f"ddim-50 / ancestral-1000: time {ddim['seconds'] / anc['seconds']:.3f}×, "
        f"FID {ddim['fid'] / anc['fid']:.3f}×"
    )


if __name__ == "__main__":
    main()
