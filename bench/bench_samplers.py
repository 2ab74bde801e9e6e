"""Benchmark every bundled model family and sampler: samples per second at default settings.

For each registered family with a bundled checkpoint and each sampler it offers, draws
``--num-samples`` images in batches of ``--batch-size`` (the runner's default sampling batch
is 500) with the checkpoint's default number of steps, after one small warm-up call, and
prints the steps of one chain, the wall and CPU time, and samples per second. Samplers a
checkpoint cannot run (e.g. ``replay`` without a stored replay buffer) are listed as skipped.
Everything runs through the same driver (:func:`geneval.sampling.run_chain`),
so the numbers compare the samplers themselves.

Usage::

    OMP_NUM_THREADS=2 python bench/bench_samplers.py [--num-samples 500] [--batch-size 500]
        [--families ddpm,ncsn,rbm,grbm,ebm,vae]
"""

from __future__ import annotations

import argparse
import time

import torch

from geneval.errors import InputError
from geneval.plugins import get_registry

CPU = torch.device("cpu")


def bench(family_name: str, num_samples: int, batch_size: int) -> None:
    family = get_registry().model(family_name)
    model = family.load(None, device=CPU)
    for sampler in family.samplers:
        try:
            steps = len(model.make_sampler(sampler).schedule)
        except InputError as exc:
            print(f"{family_name:5s} {sampler:21s} skipped: {exc}")
            continue
        model.sample(2, batch_size=2, generator=torch.Generator().manual_seed(1), sampler=sampler)
        generator = torch.Generator().manual_seed(0)
        start, start_cpu = time.perf_counter(), time.process_time()
        model.sample(num_samples, batch_size=batch_size, generator=generator, sampler=sampler)
        wall, cpu = time.perf_counter() - start, time.process_time() - start_cpu
        print(
            f"{family_name:5s} {sampler:21s} {steps:6d} steps  {wall:7.2f} s wall "
            f"{cpu:7.2f} s CPU  {num_samples / wall:9.1f} samples/s"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--families", default="ddpm,ncsn,rbm,grbm,ebm,vae")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU")
    for name in args.families.split(","):
        bench(name.strip(), args.num_samples, args.batch_size)


if __name__ == "__main__":
    main()
