"""Benchmark FID + KID + IS from one Inception pass vs torch-fidelity, and FID vs pytorch-fid.

Both sides read the same two PNG folders (crops of scikit-image's photos) and run the same
Inception weights: the real ``pt_inception-2015-12-05-6726825d.pth`` when it is in the torch
hub cache (or given with ``--weights``), otherwise deterministic random weights in the same
key layout (the network's cost does not depend on the weights' values). Each tool is timed
from loading its network to the final numbers, ``--repeat`` times, best time kept:

1. geneval (tf1 resize) through its runner, as ``geneval run --samples A --reference B
   --metrics fid,kid,is`` (folder decoding included): one extraction of ``pool`` +
   ``logits_unbiased`` per folder, then FID, KID (100 subsets, subset size capped at the
   folder size) and IS (10 splits), vs
   ``torch_fidelity.calculate_metrics(fid=True, kid=True, isc=True)`` with the same options;
2. geneval (pytorch-fid resize) FID vs ``pytorch_fid.fid_score.calculate_fid_given_paths``.

Prints the times, the ratios (reference time / geneval time; above 1 means geneval is faster)
and the metric values side by side. Targets: ≥ 1.3× on a CPU, ≥ 2× on a GPU.

Usage::

    python bench/bench_fid.py [--num-images 100] [--device auto|cpu|cuda] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geneval.device import resolve_device  # noqa: E402
from geneval.runner import RunConfig, run_report  # noqa: E402
from geneval_plugins.extractors.inception import WEIGHTS_FILENAME  # noqa: E402
from geneval_plugins.extractors.weights import hub_checkpoint_dir  # noqa: E402
from tests.inception_fixtures import (  # noqa: E402
    TORCH_FIDELITY_FILE,
    photo_crops,
    random_inception_state_dict,
    write_png_folder,
)


def prepare_weights(weights: Path | None, workdir: Path) -> str:
    """Make both tools find the same weights through ``TORCH_HOME``; returns a description."""
    home = workdir / "torch_home"
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    real = weights or (hub_checkpoint_dir() / WEIGHTS_FILENAME)
    if real.is_file():
        os.symlink(real.resolve(), checkpoints / WEIGHTS_FILENAME)
        what = f"real weights {real}"
    else:
        torch.save(random_inception_state_dict(), checkpoints / WEIGHTS_FILENAME)
        what = "random weights in the published layout (no real file in the hub cache)"
    # torch-fidelity loads the same tensors under its own file name.
    os.symlink(checkpoints / WEIGHTS_FILENAME, checkpoints / TORCH_FIDELITY_FILE)
    os.environ["TORCH_HOME"] = str(home)
    os.environ.pop("GENEVAL_INCEPTION_WEIGHTS", None)
    return what


def geneval_all(folders: list[Path], device: torch.device, batch_size: int) -> dict[str, float]:
    """geneval as ``geneval run --samples A --reference B --metrics fid,kid,is`` runs it: one
    Inception pass per folder, then FID, KID and IS with their defaults (seed 0)."""
    report = run_report(
        RunConfig(
            metrics=["fid", "kid", "is"],
            samples=str(folders[0]),
            reference=str(folders[1]),
            resize="tf1",
            device=str(device),
            batch_size=batch_size,
            cache=False,  # every repeat extracts, as torch-fidelity's cache=False does
        )
    )
    return {name: m["value"] for name, m in report["metrics"].items()}


def geneval_fid(folders: list[Path], device: torch.device, batch_size: int) -> float:
    """geneval FID with the pytorch-fid resize convention, through the runner."""
    report = run_report(
        RunConfig(
            metrics=["fid"],
            samples=str(folders[0]),
            reference=str(folders[1]),
            resize="pytorch-fid",
            device=str(device),
            batch_size=batch_size,
            cache=False,  # every repeat extracts, as torch-fidelity's cache=False does
        )
    )
    return report["metrics"]["fid"]["value"]


def torch_fidelity_all(folders: list[Path], device: torch.device, batch_size: int, n: int) -> dict:
    from torch_fidelity import calculate_metrics

    out = calculate_metrics(
        input1=str(folders[0]),
        input2=str(folders[1]),
        cuda=device.type == "cuda",
        batch_size=batch_size,
        fid=True,
        kid=True,
        isc=True,
        kid_subset_size=min(1000, n),
        cache=False,
        verbose=False,
    )
    return {
        "fid": out["frechet_inception_distance"],
        "kid": out["kernel_inception_distance_mean"],
        "is": out["inception_score_mean"],
    }


def pytorch_fid_fid(folders: list[Path], device: torch.device, batch_size: int) -> float:
    from pytorch_fid.fid_score import calculate_fid_given_paths

    return calculate_fid_given_paths(
        [str(f) for f in folders],
        batch_size=batch_size,
        device=str(device),
        dims=2048,
        num_workers=min(4, os.cpu_count() or 1),
    )


def best_time(fn, repeat: int):
    """(best wall time over ``repeat`` runs, last result)."""
    times, result = [], None
    for _ in range(repeat):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        start = time.perf_counter()
        result = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return min(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=100, help="images per folder")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--weights", type=Path, default=None)
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        weights = prepare_weights(args.weights, workdir)
        n = args.num_images
        folders = [
            write_png_folder(workdir / "a", photo_crops(n, seed=1, sizes=((128, 128),))),
            write_png_folder(workdir / "b", photo_crops(n, seed=2, sizes=((128, 128),))),
        ]
        print(f"device: {device}; {n} images per folder (128×128 PNG); {weights}")
        print(f"torch threads: {torch.get_num_threads()}")
        t_ours, ours = best_time(lambda: geneval_all(folders, device, args.batch_size), args.repeat)
        t_tf, ref = best_time(
            lambda: torch_fidelity_all(folders, device, args.batch_size, n), args.repeat
        )
        print("\nFID + KID + IS from one pass (tf1 resize)")
        print(f"  geneval         {t_ours:8.2f} s   {ours}")
        print(f"  torch-fidelity  {t_tf:8.2f} s   {ref}")
        print(f"  ratio torch-fidelity / geneval: {t_tf / t_ours:.2f}×")
        t_ours_fid, fid = best_time(
            lambda: geneval_fid(folders, device, args.batch_size), args.repeat
        )
        t_pf, fid_ref = best_time(
            lambda: pytorch_fid_fid(folders, device, args.batch_size), args.repeat
        )
        print("\nFID (pytorch-fid resize)")
        print(f"  geneval         {t_ours_fid:8.2f} s   fid={fid:.6f}")
        print(f"  pytorch-fid     {t_pf:8.2f} s   fid={fid_ref:.6f}")
        print(f"  ratio pytorch-fid / geneval: {t_pf / t_ours_fid:.2f}×")


if __name__ == "__main__":
    main()
