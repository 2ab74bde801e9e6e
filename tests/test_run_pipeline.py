"""Every caller drives the same pipeline: the doors of :class:`geneval.run.Run`.

``geneval run``, ``geneval stats``, :func:`geneval.evaluate`, :class:`geneval.Evaluator` and
``--baseline`` are run on the fake plugin set with each door of ``Run`` wrapped by a counting
spy; the defaults of the command line and the Python API are :data:`geneval.DEFAULTS`; the
extraction and sampling batch sizes are both honoured.
"""

from __future__ import annotations

import inspect
from collections import Counter

import numpy as np
import pytest
import torch

import geneval
from geneval.errors import InputError
from geneval.run import DEFAULTS, Run
from geneval.sources import ModelSource, StreamSource
from tests import test_core_cli
from tests.fake_plugins import ToyNoiseModel

DOORS = ("resolve", "plan", "collect", "produce", "dispatch")

fake = test_core_cli.fake  # the fake plugin set, registered
arrays = test_core_cli.arrays  # 30 samples and 25 reference images, 6×6


@pytest.fixture
def doors(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts the calls of each door of every :class:`Run` (``resolve:samples`` etc. for
    ``resolve``, whose role is recorded too)."""
    calls: Counter[str] = Counter()

    def spy(name: str):
        original = getattr(Run, name)

        def wrapped(self, *args, **kwargs):
            calls[name] += 1
            if name == "resolve":
                calls[f"resolve:{args[0]}"] += 1
            return original(self, *args, **kwargs)

        return wrapped

    for name in DOORS:
        monkeypatch.setattr(Run, name, spy(name))
    return calls


ONE_RUN = {
    "resolve": 2,
    "resolve:samples": 1,
    "resolve:reference": 1,
    "plan": 1,
    "collect": 1,
    "produce": 1,
    "dispatch": 1,
}


def test_evaluate_drives_the_doors_once_each(fake, doors, arrays):
    report = geneval.evaluate(
        str(arrays["samples"]), str(arrays["reference"]), ["feat-mean", "feat-dist"],
        extractor="counting",
    )  # fmt: skip
    assert set(report["metrics"]) == {"feat-mean", "feat-dist"}
    assert dict(doors) == ONE_RUN


def test_cli_run_drives_the_same_doors(fake, doors, arrays, run_cli, tmp_path):
    res = run_cli(
        "run", "--samples", arrays["samples"], "--reference", arrays["reference"],
        "--metrics", "feat-mean,feat-dist", "--extractor", "counting", "--quiet",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert dict(doors) == ONE_RUN


def test_evaluator_drives_the_same_doors(fake, doors, arrays):
    """Made once (reference collected), then each compute collects the update() batches."""
    evaluator = geneval.Evaluator(
        ["feat-mean", "feat-dist"], str(arrays["reference"]), extractor="counting"
    )
    assert dict(doors) == {k: v for k, v in ONE_RUN.items() if k not in ("produce", "dispatch")}
    images = torch.from_numpy(np.load(arrays["samples"]))
    evaluator.update(images[:10])
    first = evaluator.compute()
    evaluator.update(images[10:])
    second = evaluator.compute()
    assert doors["collect"] == 3 and doors["produce"] == 2 and doors["dispatch"] == 2
    assert doors["resolve"] == 2 and doors["plan"] == 1  # prepared once
    assert first["feat-mean"]["value"] != second["feat-mean"]["value"]
    whole = geneval.evaluate(
        images, str(arrays["reference"]), ["feat-mean", "feat-dist"], extractor="counting"
    )
    assert second["feat-dist"]["value"] == pytest.approx(
        whole["metrics"]["feat-dist"]["value"], rel=1e-12
    )


def test_evaluator_samples_are_a_stream_source(fake, arrays, monkeypatch):
    """The update() batches are a source kind of their own, resolved like any other."""
    resolved = []
    original = Run.resolve

    def record(self, role):
        original(self, role)
        if role == "samples":
            resolved.append(self.state.source("samples").source)

    monkeypatch.setattr(Run, "resolve", record)
    geneval.Evaluator(["feat-mean"], extractor="counting")
    assert len(resolved) == 1 and isinstance(resolved[0], StreamSource)


def test_cli_stats_and_the_stats_function_drive_the_doors(fake, doors, arrays, run_cli, tmp_path):
    res = run_cli(
        "stats", arrays["samples"], "-o", tmp_path / "s.npz", "--extractor", "counting",
        "--features", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    cli_doors = dict(doors)
    assert cli_doors == {
        "resolve": 1, "resolve:samples": 1, "plan": 1, "collect": 1, "produce": 1
    }  # fmt: skip
    doors.clear()
    found = geneval.stats(str(arrays["samples"]), extractor="counting", features=True)
    assert dict(doors) == cli_doors
    with np.load(tmp_path / "s.npz") as written:
        assert np.array_equal(written["mu"], found.mu)
        assert np.array_equal(written["sigma"], found.sigma)
        assert np.array_equal(written["features"], found.features)
        assert int(written["n"]) == found.n == 30
    assert found.meta is not None and found.meta["extractor"] == "counting"


def test_stats_of_a_file_with_features_follow_the_features_rule(fake, tmp_path):
    """``geneval stats`` of a source that carries a ``features`` array follows the one rule of
    precomputed features: with no extractor, the moments are the array's (no image goes
    through an extractor); with an extractor, it is an InputError naming both."""
    rng = np.random.default_rng(3)
    path = tmp_path / "with-features.npz"
    images = rng.random((12, 3, 6, 6)).astype(np.float32)
    carried = rng.normal(size=(12, 5)).astype(np.float32)
    np.savez(path, images=images, features=carried)
    found = geneval.stats(str(path), features=True)
    assert found.n == 12 and found.meta is not None
    assert found.meta["features_from"] == str(path) and "extractor" not in found.meta
    x = carried.astype(np.float64)
    np.testing.assert_allclose(found.mu, x.mean(axis=0), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(found.sigma, np.cov(x, rowvar=False), rtol=1e-12, atol=1e-15)
    np.testing.assert_array_equal(found.features, carried)
    assert fake.extractor.calls == []
    with pytest.raises(InputError, match=r"with-features\.npz.*'features'.*extractor="):
        geneval.stats(str(path), extractor="counting", features=True)


def test_baseline_drives_the_doors_of_a_held_out_run(fake, doors, arrays, run_cli, tmp_path):
    """--baseline: the run, then a held-out run sharing its reference, through the doors."""
    out = tmp_path / "b.json"
    res = run_cli(
        "run", "--samples", arrays["samples"], "--reference", "toyset:train",
        "--metrics", "feat-mean,feat-dist", "--baseline", "--quiet", "--json", out,
    )  # fmt: skip
    assert res.code == 0, res.err
    assert doors["resolve:samples"] == 2 and doors["resolve:reference"] == 2
    assert doors["plan"] == 2 and doors["collect"] == 2 and doors["produce"] == 2
    assert doors["dispatch"] >= 3  # the run's, then each taking-part metric's held-out score
    import json

    baseline = json.loads(out.read_text())["baseline"]
    assert baseline["held_out"] == "toyset:test" and baseline["n"] == 30
    assert set(baseline["metrics"]) == {"feat-mean", "feat-dist"}


def test_defaults_are_one_table(fake):
    """The click options, evaluate() and Evaluator() read their defaults from DEFAULTS."""
    from geneval.cli import cli

    def click_default(command: str, option: str):
        params = {p.name: p for p in cli.commands[command].params}
        return params[option].default

    for option in ("num_samples", "seed", "precision", "layout", "device", "metrics"):
        assert click_default("run", option) == DEFAULTS[option], option
    assert click_default("stats", "batch_size") == DEFAULTS["batch_size"]
    for function in (geneval.evaluate, geneval.Evaluator):
        params = inspect.signature(function).parameters
        for name in ("seed", "precision", "layout", "device", "cache", "compile"):
            assert params[name].default == DEFAULTS[name], (function, name)
        assert params["metrics"].default == (DEFAULTS["metrics"],)
    assert inspect.signature(geneval.evaluate).parameters["num_samples"].default == 1000
    assert geneval.RunConfig(metrics=["fid"]).batch_size == DEFAULTS["batch_size"]
    assert geneval.RunConfig(metrics=["fid"]).sample_batch_size == DEFAULTS["sample_batch_size"]


@pytest.fixture
def drawn(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sample counts of the toy model's calls."""
    calls: list[int] = []
    original = ToyNoiseModel.sample

    def sample(self, n, *, batch_size, generator, sampler=None, steps=None):
        calls.append(n)
        return original(self, n, batch_size=batch_size, generator=generator)

    monkeypatch.setattr(ToyNoiseModel, "sample", sample)
    return calls


MODEL_RUN = ["run", "--model", "toy-noise", "--num-samples", "30", "--metrics", "feat-mean"]


def test_sampling_and_extraction_batch_sizes_are_both_honoured(fake, run_cli, drawn):
    """30 samples drawn 20 per model call, extracted 8 per extractor call."""
    res = run_cli(
        *MODEL_RUN, "--batch-size", "8", "--sample-batch-size", "20", "--extractor", "counting"
    )
    assert res.code == 0, res.err
    assert drawn == [20, 10]
    assert fake.extractor.calls == [8, 8, 4, 8, 2]


def test_batch_size_alone_still_sets_the_model_batch(fake, run_cli, drawn):
    """--batch-size without --sample-batch-size draws in blocks of that size too (as before)."""
    res = run_cli(*MODEL_RUN, "--batch-size", "8", "--extractor", "counting")
    assert res.code == 0, res.err
    assert drawn == [8, 8, 8, 6]


def test_model_source_yields_extraction_batches():
    source = ModelSource("m", ToyNoiseModel(), 7, seed=0, batch_size=5)
    sizes = [b.shape[0] for b in source.batches(2, torch.device("cpu"), 0)]
    assert sizes == [2, 2, 1, 2]
    whole = torch.cat(list(source.batches(0, torch.device("cpu"), 0)))
    assert torch.equal(whole, torch.cat(list(source.batches(2, torch.device("cpu"), 0))))
