"""Benchmark the MCMC samplers of the energy-based families: steps per second at batch 1000.

1. Block Gibbs steps/s of the bundled ``rbm`` and ``grbm`` (1000 parallel chains), with the
   ratio against scikit-learn's ``BernoulliRBM.gibbs`` (the reference implementation of one
   Bernoulli–Bernoulli Gibbs step) loaded with the same weights.
2. Langevin steps/s of the bundled ``ebm`` (1000 parallel chains; one step is a forward and a
   backward pass of the energy network).
3. Optionally (``--cli``) the wall time of ``geneval run --model X --metrics fid,kid`` for each.

Usage::

    OMP_NUM_THREADS=2 python bench/bench_mcmc.py [--batch 1000] [--cli]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np
import torch
from model_run_timing import time_model_run
from sklearn.neural_network import BernoulliRBM as SklearnRBM

from geneval.sampling import run_chain
from geneval_plugins.models.energy.ebm import EBMFamily
from geneval_plugins.models.energy.grbm import GRBMFamily
from geneval_plugins.models.energy.mcmc import GibbsSampler
from geneval_plugins.models.energy.rbm import RBMFamily

CPU = torch.device("cpu")


def steps_per_second(run: Callable[[int], object], steps: int, repeats: int = 3) -> float:
    """Best of ``repeats`` timings of ``run(steps)``, as steps per second."""
    run(2)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run(steps)
        best = min(best, time.perf_counter() - start)
    return steps / best


def bench_gibbs(batch: int, steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    for family in (RBMFamily(), GRBMFamily()):
        model = family.load(None, device=CPU)
        start = model.net.initial_visible(batch, generator)
        rate = steps_per_second(
            lambda k, m=model, s=start: run_chain(
                GibbsSampler(steps=k), m.net, GibbsSampler.start(s), generator, progress=False
            ),
            steps,
        )
        print(
            f"{family.name:5s} Gibbs     {rate:9.1f} steps/s  (batch {batch}, "
            f"{model.net.n_visible}×{model.net.n_hidden})"
        )
        if family.name == "rbm":
            reference = SklearnRBM(n_components=model.net.n_hidden, random_state=0)
            reference.components_ = model.net.weight.detach().double().T.numpy().copy()
            reference.intercept_hidden_ = model.net.hidden_bias.detach().double().numpy()
            reference.intercept_visible_ = model.net.visible_bias.detach().double().numpy()
            reference.random_state_ = np.random.RandomState(0)
            v0 = start.double().numpy()

            def sklearn_run(k: int, v: np.ndarray = v0, rbm: SklearnRBM = reference) -> None:
                for _ in range(k):
                    v = rbm.gibbs(v)

            ref_rate = steps_per_second(sklearn_run, steps)
            print(
                f"rbm   sklearn   {ref_rate:9.1f} steps/s  (BernoulliRBM.gibbs, float64)"
                f"  ratio ours/sklearn {rate / ref_rate:.2f}"
            )


def bench_langevin(batch: int, steps: int) -> None:
    generator = torch.Generator().manual_seed(0)
    model = EBMFamily().load(None, device=CPU)
    base = model.make_sampler()
    default_steps = base.steps
    start = base.init(model.net, (batch, *model.image_shape), generator, CPU)

    def run(k: int) -> None:
        base.set_steps(k)
        run_chain(base, model.net, start, generator, progress=False)

    rate = steps_per_second(run, steps, repeats=2)
    print(
        f"ebm   Langevin  {rate:9.1f} steps/s  (batch {batch}; bundled default "
        f"{default_steps} steps → {default_steps / rate:.1f} s per {batch} samples)"
    )


def bench_cli() -> None:
    """End-to-end ``geneval run --model NAME --metrics fid,kid`` of each energy model."""
    for name in ("rbm", "grbm", "ebm"):
        result = time_model_run(name)
        print(f"geneval run --model {name} --metrics fid,kid: {result['seconds']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--gibbs-steps", type=int, default=200)
    parser.add_argument("--langevin-steps", type=int, default=20)
    parser.add_argument("--cli", action="store_true", help="also time geneval run for each model")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    bench_gibbs(args.batch, args.gibbs_steps)
    bench_langevin(args.batch, args.langevin_steps)
    if args.cli:
        bench_cli()


if __name__ == "__main__":
    main()
