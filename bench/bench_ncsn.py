"""Benchmark the bundled digits NCSN: sampling time per 1000 samples for both samplers.

1. Times ``geneval run --model ncsn --metrics fid,kid --quiet`` end to end in a fresh process
   (start-up, loading, 1000 samples with the checkpoint's default sampler, digits-cnn features,
   FID and KID against ``digits:train``). Target: about a minute on a 2-core CPU.
2. Samples 1000 images with annealed Langevin and with predictor–corrector, each with the
   checkpoint's default settings, and prints the time, the number of network evaluations, the
   FID(digits-cnn) against ``digits:train`` and the held-out floor (``digits:test`` vs
   ``digits:train``), and the ratio of the sampling CPU time to that of the same number of
   bare network forward passes (the samplers' own overhead). Wall and CPU time are both
   printed: on a shared machine the CPU time is the steadier number.

Usage::

    OMP_NUM_THREADS=2 python bench/bench_ncsn.py [--num-samples 1000] [--skip-cli]
"""

from __future__ import annotations

import argparse
import time

import torch
from model_run_timing import time_model_run

from geneval.plugins import get_registry
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.metrics.sample_quality.fid import frechet_distance
from geneval_plugins.models.diffusion.ncsn import NCSNFamily


def _moments(extractor, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    f = extractor(torch.round(images * 255) / 255)["features"].double()
    return f.mean(0), torch.cov(f.T)


def bench_samplers(num_samples: int) -> None:
    """Time and FID of each sampler at the checkpoint's default settings."""
    device = torch.device("cpu")
    model = NCSNFamily().load(None, device=device)
    extractor = get_registry().extractor("digits-cnn").load(device=device)
    digits = DigitsDataset()
    train = _moments(extractor, digits.load("train").images)
    floor = frechet_distance(*_moments(extractor, digits.load("test").images), *train)
    levels = len(model.sigmas)
    x = torch.rand(num_samples, *model.image_shape)
    with torch.no_grad():
        model.score(x, 0.1)
        start = time.process_time()
        for _ in range(3):
            model.score(x, 0.1)
        forward = (time.process_time() - start) / 3
    print(
        f"held-out floor FID(test, train) = {floor:.3f}; L = {levels} levels; "
        f"one forward of {num_samples} images: {forward:.3f} s CPU"
    )
    for name in NCSNFamily.samplers:
        sampler = model.make_sampler(name)
        evals = sampler.num_score_evaluations()
        g = torch.Generator().manual_seed(0)
        start, start_cpu = time.perf_counter(), time.process_time()
        samples = model.sample(num_samples, batch_size=num_samples, generator=g, sampler=name)
        seconds = time.perf_counter() - start
        cpu = time.process_time() - start_cpu
        fid = frechet_distance(*_moments(extractor, samples), *train)
        scale = 1000 / num_samples
        print(
            f"{name:18s} {sampler}\n    per 1000 samples: {seconds * scale:.2f} s wall, "
            f"{cpu * scale:.2f} s CPU; {evals} network evaluations; CPU time / bare "
            f"forwards = {cpu / (evals * forward):.2f}; FID = {fid:.3f} "
            f"({fid / floor:.2f}x floor)"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=1000)
    parser.add_argument("--skip-cli", action="store_true")
    args = parser.parse_args()
    bench_samplers(args.num_samples)
    if not args.skip_cli:
        result = time_model_run("ncsn", args.num_samples)
        print(
            f"geneval run --model ncsn --metrics fid,kid: {result['seconds']:.1f} s wall, "
            f"{result['cpu_seconds']:.1f} s CPU, fid = {result['fid']:.3f}, "
            f"kid = {result['kid']:.5f}"
        )


if __name__ == "__main__":
    main()
