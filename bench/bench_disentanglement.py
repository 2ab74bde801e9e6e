"""Time each disentanglement metric at disentanglement_lib's default sizes.

Array metrics (``mig``, ``modularity``, ``sap``, ``dci``, ``explicitness``) score 15 000 rows
(10 000 train + 5 000 test) of dsprites factors drawn i.i.d. against a 10-d representation:
the five standardised factors slightly mixed and noised, plus five noise latents. ``beta_vae``
(10 000 + 5 000 points of 64 pairs: 1.92 M images) and ``factor_vae`` (10 000 images for the
variances, then 15 000 batches of 64: 0.97 M images) render fresh dsprites images and encode
them with a fixed random linear encoder (4096 → 10). Prints the time and value of each metric.

``--fraction`` scales every size down for a quick look (1.0 = the defaults).

Usage::

    python bench/bench_disentanglement.py [--fraction 1.0] [--metrics mig,sap,...]
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.plugins import get_registry  # noqa: E402
from geneval_plugins.datasets.dsprites import DSpritesDataset  # noqa: E402
from tests.stub_inputs import StubInputs, compute  # noqa: E402

ARRAY_METRICS = ("mig", "modularity", "sap", "dci", "explicitness")
FRESH_METRICS = ("beta_vae", "factor_vae")


class LinearEncoder:
    """A fixed random linear map of the flattened 64×64 images to 10 latents."""

    def __init__(self, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(64 * 64, 10, generator=g) / 64.0

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        return images.flatten(1) @ self.weight


def array_inputs(rows: int) -> StubInputs:
    dataset = DSpritesDataset()
    g = torch.Generator().manual_seed(0)
    factors = dataset.sample_factors(rows, g)
    z = factors.double()
    z = (z - z.mean(0)) / z.std(0)
    mix = torch.eye(5, dtype=torch.float64) + 0.2 * torch.randn(
        5, 5, generator=g, dtype=torch.float64
    )
    latents = torch.cat(
        [
            z @ mix + 0.1 * torch.randn(rows, 5, generator=g, dtype=torch.float64),
            torch.randn(rows, 5, generator=g, dtype=torch.float64),
        ],
        dim=1,
    )
    return StubInputs({("latents", "samples"): latents, ("factors", "samples"): factors})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0)
    parser.add_argument("--metrics", default=",".join(ARRAY_METRICS + FRESH_METRICS))
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    registry = get_registry()
    size = lambda n: max(2, round(n * args.fraction))  # noqa: E731
    print(f"torch threads {torch.get_num_threads()}; sizes × {args.fraction:g}")
    arrays = array_inputs(size(15_000))
    fresh = StubInputs(model=LinearEncoder(), datasets={"reference": DSpritesDataset()})
    for name in args.metrics.split(","):
        metric = registry.metric(name)
        start = time.perf_counter()
        if name in FRESH_METRICS:
            options = {"num_train": size(10_000), "num_eval": size(5_000)}
            if name == "factor_vae":
                options["num_variance_estimate"] = size(10_000)
            result = compute(metric, fresh, **options)
        else:
            options = {"num_train": size(10_000)}
            if name not in ("mig", "modularity"):
                options["num_test"] = size(5_000)
            result = compute(metric, arrays, **options)
        elapsed = time.perf_counter() - start
        print(f"  {name:13s} {elapsed:8.1f} s   value {result['value']:.4f}")


if __name__ == "__main__":
    main()
