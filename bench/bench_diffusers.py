"""Benchmark scoring a diffusers pipeline: ``geneval run --model diffusers`` against the usual
route, the pipeline called in a loop, its images written as PNGs and scored by torch-fidelity.

A random-weight ``UNet2DModel`` with a ``DDIMScheduler`` (1000 training steps) is written with
``save_pretrained``: ``--size tiny`` (32×32, two resolutions; for a CPU) or ``--size cifar``
(the layout of ``google/ddpm-cifar10-32``, 35.7 M parameters; for a GPU). Both routes draw the
same ``--num-samples`` images (one generator per image, seeded as geneval seeds them) with
``--steps`` inference steps in calls of ``--batch-size`` images, and compute FID and IS with
the same Inception weights (the real file when it is in the torch hub cache, else random
weights in its layout) against the same folder of reference PNGs.

Timed, best of ``--repeat``:

1. ``bare``: the pipeline alone, called in a loop (``output_type="np"``), no scoring, and
   ``scoring only``: geneval scoring the same images from an ``.npz`` — together the floor;
   the goal is geneval within 5 % of it (on a GPU, sampling and extraction share the device,
   so the floor is their sum);
2. ``geneval``: ``geneval.evaluate(model="diffusers:FOLDER", reference=FOLDER,
   metrics=["fid", "is"], num_samples=N, steps=S)``, model loading included;
3. ``loop + torch-fidelity``: the pipeline in a loop, PNGs written, then
   ``torch_fidelity.calculate_metrics(fid=True, isc=True)``.

Prints the times, samples per second, the ratio (3)/(2) (above 1: geneval is faster) and
geneval's overhead over (1), with the metric values of both routes side by side.

Usage::

    python bench/bench_diffusers.py [--size tiny|cifar] [--num-samples 256] [--steps 10]
        [--batch-size 64] [--device auto|cpu|cuda] [--repeat 1]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import geneval  # noqa: E402
from geneval.device import resolve_device  # noqa: E402
from geneval.sources import sample_block_seed  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_fid import prepare_weights  # noqa: E402

SIZES = {
    "tiny": dict(
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    ),
    # google/ddpm-cifar10-32's UNet (Ho et al. 2020): 35.7 M parameters
    "cifar": dict(
        block_out_channels=(128, 256, 256, 256),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
    ),
}


def build_pipeline(folder: Path, size: str) -> int:
    """Write a random-weight DDIM pipeline of ``size``; returns its parameter count."""
    from diffusers import DDIMPipeline, DDIMScheduler, UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=32, in_channels=3, out_channels=3, **SIZES[size])
    DDIMPipeline(unet=unet, scheduler=DDIMScheduler(num_train_timesteps=1000)).save_pretrained(
        folder, safe_serialization=True
    )
    return sum(p.numel() for p in unet.parameters())


def reference_folder(folder: Path, n: int) -> Path:
    """``n`` smooth random 32×32 RGB PNGs (upsampled noise), the same for both routes."""
    folder.mkdir()
    rng = np.random.default_rng(1)
    low = rng.random((n, 4, 4, 3))
    for i, image in enumerate(low):
        big = np.kron(image, np.ones((8, 8, 1)))
        Image.fromarray((big * 255).round().astype(np.uint8)).save(folder / f"{i:06d}.png")
    return folder


def pipeline_images(folder: Path, n: int, steps: int, batch: int, device: torch.device):
    """The pipeline in a loop, one generator per image: yields uint8 NHWC blocks."""
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(str(folder), use_safetensors=True).to(device)
    pipe.set_progress_bar_config(disable=True)
    for first in range(0, n, batch):
        k = min(batch, n - first)
        gens = [
            torch.Generator(device=device).manual_seed(sample_block_seed(0, j))
            for j in range(first, first + k)
        ]
        out = pipe(batch_size=k, generator=gens, num_inference_steps=steps, output_type="np")
        yield (np.asarray(out.images) * 255).round().astype(np.uint8)


def bare(folder: Path, n: int, steps: int, batch: int, device: torch.device) -> None:
    for _ in pipeline_images(folder, n, steps, batch, device):
        pass
    if device.type == "cuda":
        torch.cuda.synchronize()


def geneval_route(folder, ref, n, steps, batch, device) -> dict[str, float]:
    report = geneval.evaluate(
        None,
        str(ref),
        ["fid", "is"],
        model=f"diffusers:{folder}",
        num_samples=n,
        steps=steps,
        sample_batch_size=batch,
        batch_size=batch,
        device=device,
        cache=False,
        extractor="inception-v3-fid",
        resize="tf1",
    )
    return {name: m["value"] for name, m in report["metrics"].items()}


def scoring_only(samples: Path, ref, batch, device) -> None:
    """geneval scoring images already drawn (an ``.npz``): the extraction and metrics alone."""
    geneval.evaluate(
        str(samples),
        str(ref),
        ["fid", "is"],
        batch_size=batch,
        device=device,
        cache=False,
        extractor="inception-v3-fid",
        resize="tf1",
    )


def loop_and_torch_fidelity(folder, ref, n, steps, batch, device, workdir: Path) -> dict:
    from torch_fidelity import calculate_metrics

    out_dir = Path(tempfile.mkdtemp(dir=workdir))
    index = 0
    for block in pipeline_images(folder, n, steps, batch, device):
        for image in block:
            Image.fromarray(image).save(out_dir / f"{index:06d}.png")
            index += 1
    metrics = calculate_metrics(
        input1=str(out_dir),
        input2=str(ref),
        cuda=device.type == "cuda",
        batch_size=batch,
        fid=True,
        isc=True,
        cache=False,
        verbose=False,
    )
    return {"fid": metrics["frechet_inception_distance"], "is": metrics["inception_score_mean"]}


def best(fn, repeat: int):
    times, result = [], None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=tuple(SIZES), default="tiny")
    parser.add_argument("--num-samples", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    device = resolve_device(args.device)
    n, steps, batch = args.num_samples, args.steps, args.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        weights = prepare_weights(None, work)
        params = build_pipeline(work / "pipe", args.size)
        ref = reference_folder(work / "ref", n)
        print(f"device {device}; UNet {args.size}, {params / 1e6:.1f} M parameters; {n} images, ")
        print(f"{steps} DDIM steps, batches of {batch}; Inception: {weights}")
        t_bare, _ = best(lambda: bare(work / "pipe", n, steps, batch, device), args.repeat)
        t_gen, ours = best(
            lambda: geneval_route(work / "pipe", ref, n, steps, batch, device), args.repeat
        )
        drawn = np.concatenate(list(pipeline_images(work / "pipe", n, steps, batch, device)))
        np.savez(work / "drawn.npz", images=drawn)
        t_score, _ = best(lambda: scoring_only(work / "drawn.npz", ref, batch, device), args.repeat)
        t_ref, theirs = best(
            lambda: loop_and_torch_fidelity(work / "pipe", ref, n, steps, batch, device, work),
            args.repeat,
        )
    rows = [
        ("bare pipeline", t_bare),
        ("geneval scoring only", t_score),
        ("geneval", t_gen),
        ("loop + torch-fidelity", t_ref),
    ]
    for label, seconds in rows:
        print(f"{label:<24} {seconds:8.2f} s  {n / seconds:8.1f} samples/s")
    print(f"ratio loop+torch-fidelity / geneval: {t_ref / t_gen:.2f}x")
    print(f"geneval over the bare pipeline: {100 * (t_gen / t_bare - 1):+.1f} %")
    floor = t_bare + t_score
    print(
        f"geneval over bare pipeline + scoring alone ({floor:.2f} s): "
        f"{100 * (t_gen / floor - 1):+.1f} %"
    )
    for name in ("fid", "is"):
        print(f"{name}: geneval {ours[name]:.6f}  torch-fidelity {theirs[name]:.6f}")


if __name__ == "__main__":
    main()
