"""Benchmark the likelihood estimators: ``kde`` against scikit-learn, and AIS runs per second.

1. ``kde``: the Parzen-window log-likelihood of ``--num-test`` images under ``--num-samples``
   kernel centres of 784 values (digits upsampled to 28×28 with a little noise), σ given, timed
   against scikit-learn's ``KernelDensity(kernel="gaussian", bandwidth=σ)`` ``fit`` +
   ``score_samples`` in the same process, both as scikit-learn ships it (tree pruning, whose
   log-space bounds lose precision at small σ in many dimensions) and with ``leaf_size = n``
   (one leaf: every kernel summed exactly). Prints the times, the ratios (scikit-learn time /
   geneval time; the goal is ≥ 5× on a CPU for 5000 × 5000) and the largest per-image
   differences. ``--memory`` instead scores 10 000 × 10 000 images of 3×32×32 and prints the
   peak resident memory, which stays bounded by the blocks (inputs + ~64 MiB of distances).
2. AIS: annealed importance sampling of log Z with the default 14 501-β schedule (or
   ``--num-betas``) on the bundled ``rbm`` and ``grbm`` (Gibbs kernels), for 100 and 1000 runs in
   one batch, and on the bundled ``ebm`` (MALA in [0, 1]^64 from a truncated Gaussian base; one
   float64 energy gradient of the convolutional network per β, so ``--ebm-betas``, default 201,
   keeps it short on a CPU) for 100 runs; prints runs per second (and run·β-steps per second,
   which does not depend on the schedule's length).

Usage::

    OMP_NUM_THREADS=2 python bench/bench_likelihood.py [--num-samples 5000] [--num-test 5000]
        [--sigma 0.2] [--num-betas 14501] [--ebm-betas 201] [--ais-models rbm,grbm,ebm]
        [--skip-kde] [--skip-ais] [--memory]
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.neighbors import KernelDensity

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.plugins import get_registry  # noqa: E402
from geneval_plugins.metrics.likelihood.ais import (  # noqa: E402
    ais_log_weights,
    annealing_schedule,
    partition_estimate,
)
from geneval_plugins.metrics.likelihood.kde import parzen_log_likelihoods  # noqa: E402


def digit_images(n: int, side: int, seed: int) -> torch.Tensor:
    """``n`` digits upsampled to side×side, plus N(0, 0.05²) noise, clipped to [0, 1]."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.from_numpy(load_digits().data / 16.0).float().reshape(-1, 1, 8, 8)
    x = x[torch.randint(len(x), (n,), generator=gen)]
    x = torch.nn.functional.interpolate(x, size=(side, side), mode="bilinear", align_corners=False)
    return (x + 0.05 * torch.randn(x.shape, generator=gen)).clamp(0, 1)


def bench_kde(num_samples: int, num_test: int, sigma: float) -> None:
    samples = digit_images(num_samples, 28, seed=0)
    test = digit_images(num_test, 28, seed=1)
    start = time.perf_counter()
    ours = parzen_log_likelihoods(samples, test, [sigma])[0].numpy()
    ours_s = time.perf_counter() - start
    s = samples.reshape(num_samples, -1).double().numpy()
    t = test.reshape(num_test, -1).double().numpy()
    print(f"kde: {num_samples} samples × {num_test} test images of {s.shape[1]} values, σ={sigma}")
    print(f"  geneval kde                      {ours_s:8.2f} s   mean {ours.mean():.10f}")
    for label, kwargs in (("default tree", {}), ("leaf_size = n", {"leaf_size": num_samples})):
        start = time.perf_counter()
        ref = KernelDensity(kernel="gaussian", bandwidth=sigma, **kwargs).fit(s).score_samples(t)
        ref_s = time.perf_counter() - start
        rel = abs(ours.mean() / ref.mean() - 1)
        print(
            f"  sklearn KernelDensity {label:13s} {ref_s:8.2f} s   mean {ref.mean():.10f}   "
            f"ratio {ref_s / ours_s:6.1f}×   max|Δ| {np.abs(ours - ref).max():.2e}   "
            f"rel Δmean {rel:.1e}"
        )


def bench_kde_memory() -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    gen = torch.Generator().manual_seed(0)
    samples = torch.rand(10000, 3, 32, 32, generator=gen)
    test = torch.rand(10000, 3, 32, 32, generator=gen)
    inputs = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    parzen_log_likelihoods(samples, test, [0.5])
    elapsed = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"kde memory: 10000 × 10000 images of 3×32×32 in {elapsed:.1f} s; peak RSS "
        f"{before:.0f} MiB at start, {inputs:.0f} MiB with the inputs, {peak:.0f} MiB peak "
        f"(+{peak - inputs:.0f} MiB for the computation)"
    )


def _time_ais(path_factory, betas: np.ndarray, runs: int) -> tuple[float, float]:
    path = path_factory()
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    with torch.no_grad():
        log_w = ais_log_weights(path, betas, num_runs=runs, generator=gen)
    elapsed = time.perf_counter() - start
    return elapsed, partition_estimate(log_w, path.log_z_base).log_z


def bench_ais(num_betas: int, ebm_betas: int, models: list[str]) -> None:
    """AIS runs per second on each bundled model's own path (``annealing_path``): Gibbs
    kernels for the RBM and GRBM, MALA in the data box for the deep EBM."""
    from geneval_plugins.datasets.digits import DigitsDataset

    registry = get_registry()
    cpu = torch.device("cpu")
    images = DigitsDataset().load("train").images
    print("AIS: piecewise schedule, runs in one batch")
    for name in models:
        model = registry.model(name).load(None, device=cpu)
        is_ebm = name == "ebm"
        schedule = annealing_schedule("piecewise", ebm_betas if is_ebm else num_betas)
        kernel = "MALA, box" if is_ebm else "Gibbs"
        label = f"{name} ({kernel})"
        for runs in (100,) if is_ebm else (100, 1000):
            seconds, log_z = _time_ais(lambda m=model: m.annealing_path(images), schedule, runs)
            exact = f"   exact {model.log_z():.3f}" if hasattr(model, "log_z") else ""
            print(
                f"  {label:18s} {len(schedule):6d} βs M={runs:5d}  {seconds:8.2f} s   "
                f"{runs / seconds:9.2f} runs/s   "
                f"{runs * (len(schedule) - 1) / seconds:12.0f} run·β-steps/s   "
                f"log Ẑ = {log_z:.3f}{exact}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-samples", type=int, default=5000)
    parser.add_argument("--num-test", type=int, default=5000)
    parser.add_argument("--sigma", type=float, default=0.2)
    parser.add_argument("--num-betas", type=int, default=0)
    parser.add_argument("--ebm-betas", type=int, default=201)
    parser.add_argument("--ais-models", default="rbm,grbm,ebm", help="comma-separated")
    parser.add_argument("--skip-kde", action="store_true")
    parser.add_argument("--skip-ais", action="store_true")
    parser.add_argument("--memory", action="store_true")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.memory:
        bench_kde_memory()
        return
    if not args.skip_kde:
        bench_kde(args.num_samples, args.num_test, args.sigma)
    if not args.skip_ais:
        bench_ais(args.num_betas, args.ebm_betas, args.ais_models.split(","))


if __name__ == "__main__":
    main()
