"""Sharded runs: batch-aligned shards, exact merges, errors every rank agrees on, and runs of
2 gloo ranks on the CPU (``geneval run --nproc 2`` and ``torchrun``) that equal one process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geneval.distributed import DistContext, shard_range
from geneval.feature_stats import FeatureStatistics
from geneval.run.passes import PassPlan, PassResult
from geneval.sources import ModelSource, sample_block_seed
from geneval_plugins.datasets.digits import DigitsDataset
from tests.fake_plugins import ToyNoiseModel

# -- shards ------------------------------------------------------------------------------------


@pytest.mark.parametrize("count", [1, 63, 64, 65, 300, 1000])
@pytest.mark.parametrize("unit", [1, 7, 64, 500])
@pytest.mark.parametrize("world", [1, 2, 3, 8])
def test_shards_are_whole_blocks_that_tile_the_source(count, unit, world):
    ranges = [shard_range(count, unit, r, world) for r in range(world)]
    assert ranges[0][0] == 0 and ranges[-1][1] == count
    for (_, stop), (start, _) in zip(ranges, ranges[1:], strict=False):
        assert stop == start  # contiguous, in rank order
    for start, stop in ranges:
        assert start % unit == 0  # every batch is a batch of the single-process pass
        assert stop == count or stop % unit == 0
    blocks = [-(-(stop - start) // unit) for start, stop in ranges]
    assert max(blocks) - min(blocks) <= 1


def test_model_shards_draw_the_samples_of_one_process():
    """Each block's generator depends only on (seed, first index): shards drawn separately, in
    any order, concatenate to the single-process samples."""
    source = ModelSource("model:toy", ToyNoiseModel(), 23, seed=5, batch_size=4)
    whole = torch.cat(list(source.batches(64, torch.device("cpu"), 0)))
    assert whole.shape == (23, 1, 6, 6)
    parts = {}
    for rank in (2, 0, 1):
        start, stop = shard_range(23, source.shard_unit(64), rank, 3)
        parts[rank] = list(source.batches(64, torch.device("cpu"), 0, start=start, stop=stop))
    sharded = torch.cat([b for r in range(3) for b in parts[r]])
    assert torch.equal(whole, sharded)
    # the first block is the model's draw with the derived seed, quantised to 8 bits
    g = torch.Generator().manual_seed(sample_block_seed(5, 0))
    first = ToyNoiseModel().sample(4, batch_size=4, generator=g)
    assert torch.equal(whole[:4], torch.round(first * 255) / 255)
    assert sample_block_seed(5, 0) != sample_block_seed(5, 4) != sample_block_seed(6, 0)
    assert 0 <= sample_block_seed(2**63 - 1, 10**12) < 2**63


def test_nproc_bad_usage_is_one_line(run_cli, monkeypatch):
    res = run_cli("run", "--samples", "digits:test", "--metrics", "fid", "--nproc", "0")
    assert res.code == 2 and len(res.err_lines) == 1 and "--nproc" in res.err
    monkeypatch.setenv("WORLD_SIZE", "2")  # as torchrun sets it
    res = run_cli("run", "--samples", "digits:test", "--metrics", "fid", "--nproc", "2")
    assert res.code == 2 and len(res.err_lines) == 1 and "torchrun" in res.err


def test_the_launcher_passes_codes_and_one_line_through(tmp_path, capsys):
    from geneval.cli import _without_nproc
    from geneval.launch import _verdict, rank_environment

    assert _without_nproc(["run", "--nproc", "2", "--seed", "3", "--nproc=4"]) == [
        "run",
        "--seed",
        "3",
    ]
    env = rank_environment(1, 3, 12345)
    assert (env["RANK"], env["LOCAL_RANK"], env["WORLD_SIZE"], env["MASTER_PORT"]) == (
        "1",
        "1",
        "3",
        "12345",
    )
    logs = [tmp_path / f"{r}.err" for r in range(3)]
    for log in logs:
        log.write_text("")
    assert _verdict([2, 2, 2], 0, logs) == 2  # agreed: rank 0 already printed its line
    assert _verdict([0, 1, 0], None, logs) == 1
    assert capsys.readouterr().err == ""
    logs[2].write_text("noise\ngeneval: error: rank 2: a plugin raised OSError: disk\n")
    assert _verdict([-15, 0, 3], 2, logs) == 3  # rank 0 was stopped after rank 2 failed
    assert capsys.readouterr().err == "geneval: error: rank 2: a plugin raised OSError: disk\n"
    assert _verdict([-15, -9, 0], 1, logs) == 3
    assert capsys.readouterr().err == "geneval: error: rank 1 was killed by signal SIGKILL\n"


# -- collectives in a real 2-rank gloo group ---------------------------------------------------


def _collectives_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from geneval.distributed import agree, context, gather_pass_result, gather_rows
    from geneval.errors import InputError

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    ctx = context()
    results: dict[str, object] = {"rank": ctx.rank, "world": ctx.world_size}
    # uneven shards: 5 rows on rank 0, 2 on rank 1 (rank 1 could also be empty)
    n = 5 if rank == 0 else 2
    rows = torch.arange(n * 3, dtype=torch.float32).reshape(n, 3) + 100 * rank
    results["rows"] = gather_rows(ctx, rows).tolist()
    feats = torch.randn(n, 3, generator=torch.Generator().manual_seed(rank), dtype=torch.float64)
    stats = FeatureStatistics(3).update(feats)
    local = PassResult(n, None, {("x", "f"): rows}, {"x": stats}, {(8, 8)} if rank else {(4, 4)})
    plan = PassPlan(outputs={"x": {"f"}}, moments={"x": "f"})
    merged = gather_pass_result(
        ctx, local, plan, {("x", "f"): 3}, description="t", device=torch.device("cpu")
    )
    results["count"] = merged.count
    results["sizes"] = sorted(merged.sizes)
    results["n"] = merged.moments["x"].n
    results["sum"] = merged.moments["x"].sum.tolist()
    results["sum_outer"] = merged.moments["x"].sum_outer.tolist()
    results["merged_rows"] = merged.outputs[("x", "f")].tolist()
    try:
        agree(ctx, InputError("image b.png is broken") if rank == 1 else None)
    except InputError as exc:
        results["agreed"] = [str(exc), getattr(exc, "shared", False)]
    Path(out, f"{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_two_gloo_ranks_merge_exactly_and_agree_on_errors(tmp_path):
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_collectives_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    expected_rows = (
        torch.arange(15, dtype=torch.float32).reshape(5, 3).tolist()
        + (torch.arange(6, dtype=torch.float32).reshape(2, 3) + 100).tolist()
    )
    feats = torch.cat(
        [
            torch.randn(n, 3, generator=torch.Generator().manual_seed(r), dtype=torch.float64)
            for r, n in ((0, 5), (1, 2))
        ]
    )
    for r in res:
        assert r["world"] == 2
        assert r["rows"] == expected_rows == r["merged_rows"]  # rank order, padding cut off
        assert r["count"] == 7 and r["n"] == 7
        assert r["sizes"] == [[4, 4], [8, 8]]
        np.testing.assert_allclose(r["sum"], feats.sum(0).numpy(), rtol=1e-15)
        np.testing.assert_allclose(r["sum_outer"], (feats.T @ feats).numpy(), rtol=1e-14)
        assert r["agreed"] == ["image b.png is broken", True]
    assert DistContext().world_size == 1 and not DistContext().distributed


# -- whole runs: 2 ranks against 1 process -----------------------------------------------------


def _digit_folder(folder: Path, split: str, count: int, offset: int = 0) -> Path:
    images = DigitsDataset().load(split).images[offset : offset + count, 0].numpy()
    folder.mkdir(parents=True)
    for i, image in enumerate(np.round(images * 255).astype(np.uint8)):
        Image.fromarray(np.repeat(image[:, :, None], 3, axis=2)).save(folder / f"{i:04d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> tuple[Path, Path]:
    """150 and 217 RGB PNG digits: neither a multiple of the batch (32) nor of 2 batches."""
    root = tmp_path_factory.mktemp("sharded")
    return (
        _digit_folder(root / "samples", "test", 150),
        _digit_folder(root / "reference", "train", 217),
    )


def _env(tmp_path: Path) -> dict[str, str]:
    """One thread per process on both sides: thread counts must not differ between runs."""
    env = dict(os.environ)
    env.update(GENEVAL_LOAD_PLUGINS="", OMP_NUM_THREADS="1", GENEVAL_CACHE=str(tmp_path))
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _geneval(args: list[str], env: dict[str, str], *, launcher: list[str] | None = None):
    command = (launcher or [sys.executable, "-m", "geneval"]) + [str(a) for a in args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def _assert_same_report(one: dict, two: dict) -> None:
    assert two["config"]["world_size"] == 2 and one["config"]["world_size"] == 1
    for role in one["inputs"]:
        assert two["inputs"][role]["count"] == one["inputs"][role]["count"]
    assert set(one["metrics"]) == set(two["metrics"])
    for name, result in one["metrics"].items():
        if name == "fid":
            assert two["metrics"][name]["value"] == pytest.approx(result["value"], rel=1e-6)
        else:  # per-sample features are the same bits, gathered in the same order
            assert two["metrics"][name] == result
        assert two["metrics"][name].get("n_samples") == result.get("n_samples")


FOLDER_ARGS = ["--metrics", "fid,kid,is", "--extractor", "digits-cnn", "--batch-size", "32"]
FOLDER_ARGS += ["--opt", "kid.subset_size=100", "--quiet", "--no-cache"]


def test_nproc_2_equals_one_process_on_folders(folders, tmp_path):
    samples, reference = folders
    env = _env(tmp_path)
    base = ["run", "--samples", samples, "--reference", reference, *FOLDER_ARGS]
    one = _geneval([*base, "--json", tmp_path / "one.json"], env)
    two = _geneval([*base, "--nproc", "2", "--json", tmp_path / "two.json"], env)
    assert one.returncode == 0, one.stderr
    assert two.returncode == 0, two.stderr
    assert two.stdout == one.stdout  # rank 0 alone printed, the same table
    _assert_same_report(
        json.loads((tmp_path / "one.json").read_text()),
        json.loads((tmp_path / "two.json").read_text()),
    )


@pytest.mark.slow
def test_torchrun_2_equals_one_process_and_reports_the_verdict(folders, tmp_path):
    samples, reference = folders
    env = _env(tmp_path)
    base = ["run", "--samples", samples, "--reference", reference, *FOLDER_ARGS]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    torchrun += ["-m", "geneval"]
    one = _geneval([*base, "--json", tmp_path / "one.json"], env)
    two = _geneval([*base, "--json", tmp_path / "two.json"], env, launcher=torchrun)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    one_report = json.loads((tmp_path / "one.json").read_text())
    _assert_same_report(one_report, json.loads((tmp_path / "two.json").read_text()))
    # a failed gate: torchrun exits 1 on its own terms, the report's `passed` is the verdict
    gate = ["--fail-if", f"fid<{one_report['metrics']['fid']['value'] + 1}"]
    failed = _geneval([*base, *gate, "--json", tmp_path / "g.json"], env, launcher=torchrun)
    assert failed.returncode != 0
    assert json.loads((tmp_path / "g.json").read_text())["passed"] is False


@pytest.mark.slow
def test_nproc_2_equals_one_process_on_a_model(tmp_path):
    env = _env(tmp_path)
    base = ["run", "--model", "ddpm", "--num-samples", "150", "--batch-size", "40"]
    base += ["--sampler", "ddim", "--steps", "10", "--metrics", "fid,kid,is", "--quiet"]
    base += ["--opt", "kid.subset_size=100"]
    one = _geneval([*base, "--json", tmp_path / "one.json"], env)
    two = _geneval([*base, "--nproc", "2", "--json", tmp_path / "two.json"], env)
    assert one.returncode == 0 and two.returncode == 0, two.stderr
    _assert_same_report(
        json.loads((tmp_path / "one.json").read_text()),
        json.loads((tmp_path / "two.json").read_text()),
    )
    # the samples themselves: `geneval sample` draws the blocks `run --model` draws
    sample = ["sample", "--model", "ddpm", "-n", "150", "--batch-size", "40", "--sampler"]
    sample += ["ddim", "--steps", "10", "-o", tmp_path / "s.npz", "--quiet"]
    assert _geneval(sample, env).returncode == 0
    again = ["run", "--samples", tmp_path / "s.npz", "--reference", "digits:train", "--quiet"]
    again += ["--metrics", "fid,kid,is"]
    again += ["--opt", "kid.subset_size=100", "--json", tmp_path / "f.json", "--batch-size", "40"]
    assert _geneval(again, env).returncode == 0
    from_file = json.loads((tmp_path / "f.json").read_text())["metrics"]
    one_metrics = json.loads((tmp_path / "one.json").read_text())["metrics"]
    assert from_file["fid"]["value"] == pytest.approx(one_metrics["fid"]["value"], rel=1e-6)
    assert from_file["kid"] == one_metrics["kid"] and from_file["is"] == one_metrics["is"]


@pytest.mark.slow
def test_a_bad_file_in_another_ranks_shard_is_one_line_exit_2(folders, tmp_path):
    samples, reference = folders
    broken = tmp_path / "broken"
    broken.mkdir()
    for path in sorted(samples.glob("*.png")):
        (broken / path.name).write_bytes(path.read_bytes())
    (broken / "0140.png").write_bytes(b"not a png")  # in the last batch: rank 1's shard
    env = _env(tmp_path)
    res = _geneval(
        ["run", "--samples", broken, "--reference", reference, *FOLDER_ARGS, "--nproc", "2"], env
    )
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "0140.png" in lines[0] and lines[0].startswith("geneval: error")


EVALUATOR_SCRIPT = """
import json, sys
import torch
import torch.distributed as dist
import geneval
from geneval_plugins.datasets.digits import DigitsDataset

dist.init_process_group("gloo")
rank, world = dist.get_rank(), dist.get_world_size()
images = DigitsDataset().load("test").images[:130]
opts = {"kid": {"subset_size": 50, "subsets": 20}, "is": {"splits": 3}}
ev = geneval.Evaluator(
    ["fid", "kid", "is"], reference=sys.argv[2], extractor="digits-cnn", options=opts, cache=False
)
shard = images[:70] if rank == 0 else images[70:]   # uneven, in rank order
for start in range(0, shard.shape[0], 25):
    ev.update(shard[start : start + 25])
out = ev.compute()
json.dump(out, open(f"{sys.argv[1]}/ddp{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_evaluator_inside_a_ddp_job_equals_one_process(folders, tmp_path):
    import geneval

    _, reference = folders
    script = tmp_path / "ddp_eval.py"
    script.write_text(EVALUATOR_SCRIPT)
    env = _env(tmp_path)
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    res = subprocess.run(
        [*command, str(script), str(tmp_path), str(reference)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr
    ranks = [json.loads((tmp_path / f"ddp{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    torch.set_num_threads(1)
    opts = {"kid": {"subset_size": 50, "subsets": 20}, "is": {"splits": 3}}
    single = geneval.Evaluator(
        ["fid", "kid", "is"], reference=str(reference), extractor="digits-cnn", options=opts
    )
    images = DigitsDataset().load("test").images[:130]
    for shard in (images[:70], images[70:]):  # the same batches, in rank order
        for start in range(0, shard.shape[0], 25):
            single.update(shard[start : start + 25])
    expected = single.compute()
    assert ranks[0]["fid"]["value"] == pytest.approx(expected["fid"]["value"], rel=1e-6)
    assert ranks[0]["fid"]["n_samples"] == expected["fid"]["n_samples"] == 130
    assert ranks[0]["kid"] == expected["kid"] and ranks[0]["is"] == expected["is"]
