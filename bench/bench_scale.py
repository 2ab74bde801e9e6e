"""Benchmark the scale features: extraction throughput, streaming memory, the GPU pipeline.

Three measurements, each printed side by side and written to ``--out`` (JSON):

``throughput`` (CPU or GPU)
    Images per second of one Inception extraction pass over a folder of PNG photo crops
    (decoding, resize to 299 with the ``tf1`` convention, the network; pool3 moments and the
    unbiased logits kept, as a FID + IS run needs), against torch-fidelity's extraction of the
    same folder with the same weights (``calculate_metrics(input1=..., isc=True)``, which runs
    the same network once per image), both timed in this process, best of ``--repeat``. Also
    the time of the same geneval pass when the feature cache holds it (a CI re-run).
``memory``
    The high-water mark of the resident memory (``VmHWM``) of a fresh process that runs
    ``geneval run --samples FOLDER --reference digits:train --extractor digits-cnn`` over
    folders of 10 000, 40 000 and 100 000 8×8 PNG digits, for ``fid`` (running float64 moments
    only: must stay flat) and ``fid,kid`` (float32 per-sample features kept: grows by
    n × 128 × 4 bytes), and of an Inception run (``fid``) over ``--inception-images`` 32×32
    PNGs (10 000 by default, against 64 reference images; about 15 minutes on 2 CPU cores).
``gpu`` (only where CUDA is available)
    Images per second of the full pipeline (folder of PNGs → decoding workers → uint8 pinned
    copies → resize on the GPU → Inception) against a bare batched Inception forward of the
    same batch size on inputs already on the GPU at 299×299, and their ratio (goal: ≥ 50 %),
    with the device name; in float32 (TF32 off) and in bf16.

Inception weights are the real file when it is in the torch hub cache (or ``--weights``),
else deterministic random weights in the published key layout (the cost does not depend on the
values).

Usage::

    python bench/bench_scale.py [throughput] [memory] [gpu] [--num-images 256]
        [--inception-images 10000] [--sizes 10000,40000,100000] [--out bench-scale.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_fid import best_time, prepare_weights  # noqa: E402
from geneval.api import Need  # noqa: E402
from geneval.device import resolve_device  # noqa: E402
from geneval.plugins import get_registry  # noqa: E402
from geneval.precision import precision_mode  # noqa: E402
from geneval.run import Run, run_config  # noqa: E402
from tests.inception_fixtures import photo_crops, write_png_folder  # noqa: E402

INCEPTION = "inception-v3-fid"

# -- throughput --------------------------------------------------------------------------------


def geneval_extract(
    folder: Path,
    device: torch.device,
    batch: int,
    cache: bool,
    precision: str = "fp32",
) -> int:
    """One pass as ``geneval run`` makes it, through the run's doors: pool3 running moments
    and unbiased logits per image (what FID + IS need), in the run's precision mode."""
    config = run_config(
        (),
        samples=str(folder),
        extractor=INCEPTION,
        resize="tf1",
        device=str(device),
        batch_size=batch,
        cache=cache,
        precision=precision,
    )
    needs = (Need("features", "samples", stats_ok=True), Need("logits", "samples"))
    run = Run(config, needs={"bench": needs})
    run.resolve("samples")
    run.plan()
    run.collect(("samples",))
    return int(next(iter(run.produce().values())).shape[0])


def torch_fidelity_extract(folder: Path, device: torch.device, batch: int) -> float:
    from torch_fidelity import calculate_metrics

    out = calculate_metrics(
        input1=str(folder),
        cuda=device.type == "cuda",
        batch_size=batch,
        isc=True,
        cache=False,
        verbose=False,
    )
    return float(out["inception_score_mean"])


def throughput(args, workdir: Path, device: torch.device) -> dict:
    n = args.num_images
    folder = write_png_folder(workdir / "photos", photo_crops(n, seed=1, sizes=((128, 128),)))
    t_ours, _ = best_time(
        lambda: geneval_extract(folder, device, args.batch_size, False), args.repeat
    )
    t_ref, _ = best_time(
        lambda: torch_fidelity_extract(folder, device, args.batch_size), args.repeat
    )
    os.environ["GENEVAL_CACHE"] = str(workdir / "cache")
    geneval_extract(folder, device, args.batch_size, True)  # fills the cache
    t_hit, _ = best_time(lambda: geneval_extract(folder, device, args.batch_size, True), 3)
    out = {
        "device": str(device),
        "images": n,
        "image_size": "128x128 PNG",
        "batch_size": args.batch_size,
        "torch_threads": torch.get_num_threads(),
        "geneval_images_per_s": n / t_ours,
        "torch_fidelity_images_per_s": n / t_ref,
        "ratio_geneval_over_torch_fidelity": t_ref / t_ours,
        "cache_hit_s": t_hit,
    }
    print(f"\nextraction throughput on {device} ({n} 128×128 PNGs, batch {args.batch_size}, "
          f"{torch.get_num_threads()} threads)")  # fmt: skip
    print(f"  geneval          {n / t_ours:8.2f} images/s  ({t_ours:.2f} s)")
    print(f"  torch-fidelity   {n / t_ref:8.2f} images/s  ({t_ref:.2f} s)")
    print(f"  ratio geneval / torch-fidelity: {t_ref / t_ours:.2f}×")
    print(f"  geneval from the feature cache: {t_hit:.3f} s for the same {n} images")
    return out


# -- memory ------------------------------------------------------------------------------------

CHILD = """
import sys, warnings
warnings.filterwarnings("ignore")
from geneval.runner import RunConfig, run_report
report = run_report(RunConfig(metrics=sys.argv[2].split(","), samples=sys.argv[1],
                            reference=sys.argv[3], extractor=sys.argv[4], cache=False,
                            workers=int(sys.argv[5])))
assert report["inputs"]["samples"]["count"] == int(sys.argv[6]), report["inputs"]
hwm = [l for l in open("/proc/self/status") if l.startswith("VmHWM")][0].split()[1]
print(int(hwm) * 1024)
"""


def digit_folder(folder: Path, count: int) -> Path:
    """``count`` 8×8 grey PNG digits: scikit-learn's digits with seeded noise, so no two
    files repeat."""
    from sklearn.datasets import load_digits

    digits = load_digits().images / 16.0
    rng = np.random.default_rng(count)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = digits[i % len(digits)] + rng.normal(0, 0.05, (8, 8))
        pixels = np.round(np.clip(image, 0, 1) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:06d}.png")
    return folder


def high_water(folder: Path, metrics: str, reference: str, extractor: str, count: int) -> int:
    """VmHWM (bytes) of a fresh process evaluating ``folder``."""
    env = dict(os.environ, GENEVAL_LOAD_PLUGINS="")
    res = subprocess.run(
        [sys.executable, "-c", CHILD, str(folder), metrics, reference, extractor, "2", str(count)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return int(res.stdout.strip().splitlines()[-1])


def memory(args, workdir: Path) -> dict:
    rows = []
    print("\nmemory high-water mark (VmHWM of the evaluating process)")
    print(f"  {'images':>8} {'extractor':>18} {'fid':>10} {'fid,kid':>10} {'kid rows':>10}")
    for count in args.sizes:
        folder = digit_folder(workdir / f"digits{count}", count)
        fid = high_water(folder, "fid", "digits:train", "digits-cnn", count)
        kid = high_water(folder, "fid,kid", "digits:train", "digits-cnn", count)
        rows.append(
            {"images": count, "extractor": "digits-cnn", "fid_bytes": fid, "fid_kid_bytes": kid}
        )
        print(f"  {count:>8} {'digits-cnn':>18} {fid / 2**20:>8.0f}Mi {kid / 2**20:>8.0f}Mi "
              f"{count * 128 * 4 / 2**20:>8.1f}Mi")  # fmt: skip
    if args.inception_images:
        count = args.inception_images
        folder = write_png_folder(
            workdir / "inception", photo_crops(count, seed=3, sizes=((32, 32),))
        )
        reference = write_png_folder(
            workdir / "inception-ref", photo_crops(64, seed=5, sizes=((32, 32),))
        )
        fid = high_water(folder, "fid", str(reference), INCEPTION, count)
        rows.append({"images": count, "extractor": INCEPTION, "fid_bytes": fid})
        print(f"  {count:>8} {INCEPTION:>18} {fid / 2**20:>8.0f}Mi")
    return {"rows": rows}


# -- GPU ---------------------------------------------------------------------------------------


def gpu(args, workdir: Path) -> dict:
    if not torch.cuda.is_available():
        print("\ngpu: no CUDA device here: not measured")
        return {"measured": False}
    device = torch.device("cuda")
    name = torch.cuda.get_device_name(device)
    n, batch = args.gpu_images, args.gpu_batch
    folder = write_png_folder(workdir / "gpu", photo_crops(n, seed=4, sizes=((256, 256),)))
    network = get_registry().extractor(INCEPTION).load(device=device, resize="tf1").network
    x = torch.rand(batch, 3, 299, 299, device=device) * 2 - 1
    x = x.contiguous(memory_format=torch.channels_last)
    calls = -(-n // batch)
    out: dict = {"measured": True, "device_name": name, "images": n, "batch_size": batch}
    print(f"\nGPU pipeline on {name} ({n} 256×256 PNGs, batch {batch})")
    for mode in ("fp32", "bf16"):

        def bare(mode: str = mode) -> None:
            with torch.inference_mode(), precision_mode(mode, device):
                for _ in range(calls):
                    network(x)

        geneval_extract(folder, device, batch, False, mode)  # warm-up: cuDNN, workers
        t_pipe, _ = best_time(
            lambda mode=mode: geneval_extract(folder, device, batch, False, mode), args.repeat
        )
        bare()
        t_bare, _ = best_time(bare, args.repeat)
        pipe, forward = n / t_pipe, calls * batch / t_bare
        out[mode] = {
            "pipeline_images_per_s": pipe,
            "bare_forward_images_per_s": forward,
            "fraction_of_bare": pipe / forward,
        }
        print(
            f"  {mode}: full pipeline (decode, uint8, pinned, resize, Inception) {pipe:9.1f} "
            f"img/s; bare forward {forward:9.1f} img/s; {pipe / forward:.0%} (goal ≥ 50 %)"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="*", default=["throughput", "memory", "gpu"])
    parser.add_argument("--num-images", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sizes", default="10000,40000,100000")
    parser.add_argument("--inception-images", type=int, default=10000)
    parser.add_argument("--gpu-images", type=int, default=5000)
    parser.add_argument("--gpu-batch", type=int, default=200)
    parser.add_argument("--weights", type=Path, default=None)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    args.sizes = [int(s) for s in args.sizes.split(",") if s]
    warnings.filterwarnings("ignore")
    results: dict = {"cpu_cores": len(os.sched_getaffinity(0)), "torch": torch.__version__}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        os.environ["GENEVAL_CACHE"] = str(workdir / "cache")
        results["weights"] = prepare_weights(args.weights, workdir)
        print(f"{results['weights']}; {results['cpu_cores']} CPU cores; torch {torch.__version__}")
        if "throughput" in args.what:
            results["throughput"] = throughput(args, workdir, resolve_device(args.device))
        if "memory" in args.what:
            results["memory"] = memory(args, workdir)
        if "gpu" in args.what:
            results["gpu"] = gpu(args, workdir)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
