"""Deviation of the reduced extraction precisions (tf32, bf16) from fp32, on the same images.

The FID Inception (``inception-v3-fid``, tf1 resize, loaded as a run loads it) extracts the
same ``--num-images`` photo crops (128×128, from scikit-image's photos) once per precision mode,
each mode entered through :func:`geneval.precision.precision_mode` as ``--precision`` enters it:

* ``fp32``: IEEE float32 (on CUDA, TF32 switched off);
* ``tf32`` (CUDA only; skipped on a CPU): TF32 tensor cores for convolutions and products;
* ``bf16``: bfloat16 autocast.

For each reduced mode it prints, on the 2048-d pool3 features ``y`` against the fp32 ones
``y₃₂``:

* ``max_rel = max |y − y₃₂| / max |y₃₂|`` and ``rms_rel = ‖y − y₃₂‖ / ‖y₃₂‖``, the deviations a
  run reports (``docs/contracts.md`` §12);
* ``mean_rel = mean |y − y₃₂| / mean |y₃₂|``;
* the FID between the fp32 features' statistics and the mode's (0 for identical features): the
  error a reduced mode adds to a FID; for scale, the FID between two disjoint halves of the
  fp32 features is printed too;
* images per second of the extraction (resize + network), best of ``--repeat``.

Inception weights are the real file when it is in the torch hub cache (or given with
``--weights``), else deterministic random weights in the published key layout (the deviations
then describe that network, not the published one). The goal: bf16 and tf32 FID deviations
well below the run-to-run spread of FID at the same n; use fp32 for published numbers.

Usage::

    python bench/bench_precision.py [--device auto|cpu|cuda] [--num-images 1000]
        [--batch-size 100] [--repeat 1] [--weights PATH]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.device import resolve_device  # noqa: E402
from geneval.feature_stats import FeatureStatistics  # noqa: E402
from geneval.plugins import get_registry  # noqa: E402
from geneval.precision import precision_mode  # noqa: E402
from geneval_plugins.extractors.inception import WEIGHTS_FILENAME  # noqa: E402
from geneval_plugins.extractors.weights import hub_checkpoint_dir  # noqa: E402
from geneval_plugins.metrics.sample_quality.fid import frechet_distance  # noqa: E402
from tests.inception_fixtures import (  # noqa: E402
    photo_crops,
    random_inception_state_dict,
    to_float_batch,
)

EXTRACTOR = "inception-v3-fid"


def weights_file(weights: Path | None, workdir: Path) -> tuple[Path, str]:
    """The real weights (``weights`` or the hub cache's), else random ones written to
    ``workdir``; returns the path and a description."""
    real = weights or (hub_checkpoint_dir() / WEIGHTS_FILENAME)
    if real.is_file():
        return real, f"real weights {real}"
    path = workdir / WEIGHTS_FILENAME
    torch.save(random_inception_state_dict(), path)
    return path, "random weights in the published layout (no real file in the hub cache)"


def extract(
    extractor, batches: list[torch.Tensor], mode: str, device: torch.device
) -> torch.Tensor:
    """The pool3 features (n × 2048, float32, on the CPU) of ``batches`` in ``mode``."""
    out = []
    with precision_mode(mode, device):
        for batch in batches:
            out.append(extractor(batch)["pool"].float().cpu())
    if device.type == "cuda":
        torch.cuda.synchronize()
    return torch.cat(out)


def timed(extractor, batches, mode: str, device: torch.device, repeat: int):
    """(best seconds over ``repeat``, features of the last run)."""
    best, features = float("inf"), None
    for _ in range(repeat):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        features = extract(extractor, batches, mode, device)
        best = min(best, time.perf_counter() - start)
    assert features is not None
    return best, features


def fid(a: torch.Tensor, b: torch.Tensor) -> float:
    """FID between the statistics of two feature sets (float64; the n × n route when n ≤ d)."""
    sa, sb = FeatureStatistics.from_features(a), FeatureStatistics.from_features(b)
    return frechet_distance(
        sa.mean,
        sa.cov,
        sb.mean,
        sb.cov,
        factor1=sa.covariance_factor(),
        factor2=sb.covariance_factor(),
    )


def deviations(y: torch.Tensor, ref: torch.Tensor) -> dict[str, float]:
    """``max_rel``, ``rms_rel`` and ``mean_rel`` of ``y`` against ``ref`` (float64)."""
    y, ref = y.double(), ref.double()
    diff = (y - ref).abs()
    return {
        "max_rel": float(diff.max() / ref.abs().max()),
        "rms_rel": float(torch.linalg.norm(y - ref) / torch.linalg.norm(ref)),
        "mean_rel": float(diff.mean() / ref.abs().mean()),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--num-images", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    if args.num_images < 4 or args.batch_size < 1 or args.repeat < 1:
        parser.error("--num-images must be ≥ 4, --batch-size and --repeat ≥ 1")
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    modes = ["fp32", "tf32", "bf16"] if device.type == "cuda" else ["fp32", "bf16"]
    with tempfile.TemporaryDirectory() as tmp:
        path, what = weights_file(args.weights, Path(tmp))
        extractor = (
            get_registry().extractor(EXTRACTOR).load(device=device, weights=path, resize="tf1")
        )
        images = to_float_batch(photo_crops(args.num_images, seed=1, sizes=((128, 128),)))
        batches = list(images.split(args.batch_size))
        name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
        print(f"device {device} ({name}); torch threads {torch.get_num_threads()}; {what}")
        print(f"{args.num_images} 128×128 photo crops, batch {args.batch_size}, tf1 resize")
        if device.type != "cuda":
            print("tf32 needs a CUDA device: skipped")
        extract(extractor, batches[:1], "fp32", device)  # warm-up (kernels, cuDNN plans)
        results = {mode: timed(extractor, batches, mode, device, args.repeat) for mode in modes}
        _, ref = results["fp32"]
        half = args.num_images // 2
        scale = fid(ref[:half], ref[half:])
        print(f"FID between the two halves of the fp32 features (for scale): {scale:.6g}")
        head = f"{'mode':6s} {'images/s':>9s} {'max_rel':>9s} {'rms_rel':>9s} {'mean_rel':>9s}"
        print(f"{head} {'FID vs fp32':>12s}")
        for mode in modes:
            seconds, y = results[mode]
            rate = args.num_images / seconds
            if mode == "fp32":
                print(f"{mode:6s} {rate:9.1f} {'-':>9s} {'-':>9s} {'-':>9s} {'-':>12s}")
                continue
            dev = deviations(y, ref)
            print(
                f"{mode:6s} {rate:9.1f} {dev['max_rel']:9.2e} {dev['rms_rel']:9.2e} "
                f"{dev['mean_rel']:9.2e} {fid(ref, y):12.4e}"
            )


if __name__ == "__main__":
    main()
