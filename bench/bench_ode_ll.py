"""Benchmark ``ode_ll`` against score_sde's ``get_likelihood_fn`` on the bundled DDPM.

Both solve the probability-flow ODE of the bundled ``ddpm`` (VP SDE, β from 0.1 to 20) for the
same ``--num-images`` dequantised ``digits:test`` images with the same Rademacher probe, at
rtol = atol = ``--tol`` (score_sde's 1e-5 by default):

* the reference: the transcription of score_sde's ``likelihood.py`` in
  ``tests/score_sde_reference.py`` (scipy ``solve_ivp`` RK45 on the whole batch as one system,
  one Hutchinson vector-Jacobian product per evaluation, float32 network, numpy round trips);
* geneval: :func:`~geneval_plugins.metrics.likelihood.ode_ll.image_log_likelihoods` with the
  Hutchinson divergence (the same estimator), batched Dormand–Prince with one controller per
  image; and, for information, with the exact divergence (64 vector-Jacobian products per
  evaluation, batched as copies).

Prints images per second, the ratio (the goal is ≥ 2× the reference), the NFE and the largest
relative difference of the bits/dim of the two Hutchinson runs (equal to ~1e-4).

Usage::

    OMP_NUM_THREADS=2 python bench/bench_ode_ll.py [--num-images 16] [--tol 1e-5] [--exact]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    """Time both solvers on the same images, probe and tolerances; print the comparison."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=16)
    parser.add_argument("--tol", type=float, default=1e-5)
    parser.add_argument("--exact", action="store_true", help="also time the exact divergence")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from geneval_plugins.datasets.digits import DigitsDataset
    from geneval_plugins.metrics.likelihood.ode_ll import dequantize, image_log_likelihoods
    from geneval_plugins.metrics.likelihood.pf_ode import draw_probes
    from geneval_plugins.models.diffusion.ddpm import DDPMFamily
    from tests.score_sde_reference import vp_likelihood_bpd

    device = torch.device(args.device)
    model = DDPMFamily().load(None, device=device)
    images = DigitsDataset().load("test").images[: args.num_images].to(device)
    n, dims = images.shape[0], math.prod(images.shape[1:])
    print(
        f"bundled ddpm, {n} digits:test images, D = {dims}, rtol = atol = {args.tol:g}, "
        f"{torch.get_num_threads()} threads, {device}"
    )

    def ours(exact: bool) -> tuple[float, torch.Tensor, torch.Tensor]:
        start = time.perf_counter()
        ll, nfe = image_log_likelihoods(
            model,
            model.probability_flow,
            images,
            generator=torch.Generator().manual_seed(0),
            draws=1,
            exact=exact,
            probes=1,
            noise="rademacher",
            rtol=args.tol,
            atol=args.tol,
        )
        return time.perf_counter() - start, -ll / (dims * math.log(2)), nfe

    gen = torch.Generator().manual_seed(0)  # the draws image_log_likelihoods makes, in order
    y = dequantize(images, gen)
    probe = draw_probes((1, *images.shape), "rademacher", gen, device)[0]
    start = time.perf_counter()
    ref_bpd, _, ref_nfe = vp_likelihood_bpd(
        model.eps_model, 2 * y - 1, probe, rtol=args.tol, atol=args.tol
    )
    ref_time = time.perf_counter() - start
    hut_time, hut_bpd, hut_nfe = ours(exact=False)
    diff = float(((hut_bpd - ref_bpd.double().cpu()) / ref_bpd.double().cpu()).abs().max())
    print(
        f"score_sde (solve_ivp RK45): {ref_time:8.2f} s  {n / ref_time:7.3f} img/s  "
        f"NFE {ref_nfe} (shared)  bits/dim {float(ref_bpd.mean()):.4f}"
    )
    print(
        f"geneval hutchinson:         {hut_time:8.2f} s  {n / hut_time:7.3f} img/s  "
        f"NFE {float(hut_nfe.mean()):.0f} mean, {float(hut_nfe.max()):.0f} max  "
        f"bits/dim {float(hut_bpd.mean()):.4f}"
    )
    print(
        f"ratio (reference time / geneval time): {ref_time / hut_time:.2f}x  "
        f"(goal >= 2x); largest relative bits/dim difference {diff:.2e}"
    )
    if args.exact:
        ex_time, ex_bpd, ex_nfe = ours(exact=True)
        print(
            f"geneval exact divergence:   {ex_time:8.2f} s  {n / ex_time:7.3f} img/s  "
            f"NFE {float(ex_nfe.mean()):.0f} mean  bits/dim {float(ex_bpd.mean()):.4f}"
        )


if __name__ == "__main__":
    main()
