"""The Python API: ``geneval.evaluate`` and the streaming ``geneval.Evaluator``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geneval
from geneval.plugins import get_registry
from geneval_plugins.datasets.digits import DigitsDataset


@pytest.fixture(scope="module")
def digit_folders(tmp_path_factory) -> dict[str, Path]:
    """Two folders of 8-bit PNG digits: 90 'samples' (the test split) and 120 'reference'."""
    root = tmp_path_factory.mktemp("digits")
    folders = {}
    for role, split, n in (("samples", "test", 90), ("reference", "val", 120)):
        images = DigitsDataset().load(split).images[:n, 0].numpy()
        folder = root / role
        folder.mkdir()
        for i, image in enumerate(np.round(images * 255).astype(np.uint8)):
            Image.fromarray(image).save(folder / f"{i:04d}.png")
        folders[role] = folder
    return folders


def _folder_batches(folder: Path, size: int):
    paths = sorted(folder.glob("*.png"))
    arrays = np.stack([np.asarray(Image.open(p)) for p in paths])[:, None]  # N, 1, 8, 8 uint8
    for start in range(0, len(arrays), size):
        yield torch.from_numpy(arrays[start : start + size])


OPTIONS = {"kid": {"subsets": 20, "subset_size": 50}, "is": {"splits": 3}}


def _cli_report(run_cli, tmp_path, samples, reference) -> dict:
    opts = ["--opt", "kid.subsets=20", "--opt", "kid.subset_size=50", "--opt", "is.splits=3"]
    res = run_cli(
        "run", "--samples", samples, "--reference", reference, "--extractor", "digits-cnn",
        "--metrics", "fid,kid,is", "--seed", "5", "--json", tmp_path / "cli.json", "--quiet",
        *opts,
    )  # fmt: skip
    assert res.code == 0, res.err
    return json.loads((tmp_path / "cli.json").read_text())["metrics"]


def test_evaluator_in_batches_of_seven_equals_the_command_line(digit_folders, run_cli, tmp_path):
    cli = _cli_report(run_cli, tmp_path, digit_folders["samples"], digit_folders["reference"])
    evaluator = geneval.Evaluator(
        ["fid", "kid", "is"],
        reference=digit_folders["reference"],
        extractor="digits-cnn",
        options=OPTIONS,
        seed=5,
    )
    for batch in _folder_batches(digit_folders["samples"], 7):
        evaluator.update(batch)
    assert evaluator.count == 90
    streamed = evaluator.compute()
    for name in ("fid", "kid", "is"):
        assert streamed[name]["value"] == pytest.approx(cli[name]["value"], rel=1e-6), name
    assert streamed["kid"]["std"] == pytest.approx(cli["kid"]["std"], rel=1e-6)


def test_compute_again_after_more_updates_equals_a_run_on_the_union(digit_folders, tmp_path):
    batches = list(_folder_batches(digit_folders["samples"], 7))
    evaluator = geneval.Evaluator(
        "fid,kid", reference="digits:train", options={"kid": OPTIONS["kid"]}, seed=2
    )
    for batch in batches[:6]:
        evaluator.update(batch)
    first = evaluator.compute()
    for batch in batches[6:]:
        evaluator.update(batch.float() / 255)  # float input in [0, 1] is the same images
    second = evaluator.compute()
    union = torch.cat(batches)
    fresh = geneval.evaluate(
        union, "digits:train", ["fid", "kid"], options={"kid": OPTIONS["kid"]}, seed=2
    )
    assert first["fid"]["value"] != second["fid"]["value"]
    for name in ("fid", "kid"):
        assert second[name]["value"] == pytest.approx(fresh["metrics"][name]["value"], rel=1e-6)
    assert fresh["config"]["extractor"] == "digits-cnn"  # the dataset's extractor
    evaluator.reset()
    with pytest.raises(geneval.InputError, match="no samples yet"):
        evaluator.compute()


def test_fid_only_keeps_running_sums_not_images(digit_folders):
    evaluator = geneval.Evaluator("fid", reference="digits:train")
    batch = next(_folder_batches(digit_folders["samples"], 30))
    evaluator.update(batch)
    held = evaluator.state_nbytes()
    for _ in range(20):
        evaluator.update(batch)
    assert evaluator.count == 21 * 30
    assert evaluator.state_nbytes() == held  # flat: no per-image storage
    assert held < 200_000  # Σx and Σxxᵀ of 128-d features in float64, nothing per image
    kid = geneval.Evaluator("kid", reference="digits:train")
    kid.update(batch)
    kid.update(batch)
    assert kid.state_nbytes() == 2 * 30 * 128 * 4  # KID keeps float32 features per sample


def test_evaluate_accepts_paths_tensors_arrays_and_models(digit_folders):
    registry = get_registry()
    test = registry.dataset("digits").load("test").images
    as_tensor = geneval.evaluate(test, "digits:train", "fid")
    eight_bit = (test.numpy() * 255).round().astype(np.uint8)
    as_array = geneval.evaluate(eight_bit.transpose(0, 2, 3, 1), "digits:train", "fid")  # NHWC
    as_float = geneval.evaluate(torch.from_numpy(eight_bit).float() / 255, "digits:train", "fid")
    as_name = geneval.evaluate("digits:test", "digits:train", ["fid"])  # shipped statistics
    assert as_tensor["metrics"]["fid"]["value"] == pytest.approx(
        as_name["metrics"]["fid"]["value"], rel=1e-6
    )
    assert as_array["metrics"]["fid"]["value"] == pytest.approx(
        as_float["metrics"]["fid"]["value"], rel=1e-9
    )
    model = registry.model("ddpm").load(None, device=torch.device("cpu"))
    by_object = geneval.evaluate(model, metrics="fid", reference="digits:train", num_samples=40)
    by_name = geneval.evaluate(model="ddpm", metrics="fid", num_samples=40)
    assert by_object["metrics"]["fid"]["value"] == pytest.approx(
        by_name["metrics"]["fid"]["value"], rel=1e-9
    )
    gated = geneval.evaluate("digits:test", "digits:train", "fid", fail_if=["fid>0.001"])
    assert gated["passed"] is False and gated["gates"][0]["source"] == "fail_if"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: geneval.evaluate("digits:test", "digits:train", "nosuch"), "nosuch"),
        (lambda: geneval.evaluate("digits:test", None, "fid"), "need a reference: use reference="),
        (
            lambda: geneval.evaluate(
                "digits:test", "digits:train", "kid", options={"kid": {"degree": 0}}
            ),
            "options['kid']['degree']=0",
        ),
        (lambda: geneval.evaluate(torch.rand(4, 2, 8, 8), "digits:train", "fid"), "channels"),
        (lambda: geneval.Evaluator("nll", reference="digits:train"), "needs a model"),
        (
            lambda: geneval.Evaluator("fid", reference="digits:train").update(torch.rand(2, 8, 8)),
            "shape",
        ),
        (
            lambda: geneval.Evaluator("fid", reference="digits:train").update(
                torch.full((2, 1, 8, 8), 2.0)
            ),
            "[0, 1]",
        ),
    ],
)
def test_bad_input_raises_input_error_in_python_terms(call, message):
    with pytest.raises(geneval.InputError) as err:
        call()
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "--" not in str(err.value)  # no command-line option named
