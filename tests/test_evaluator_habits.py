"""``geneval.Evaluator`` with the habits of torchmetrics users (docs/python-api.md).

Every number is checked against :func:`geneval.evaluate` (or the command line) on the same
images: the streamed reference, NHWC batches, ``input_range=(-1, 1)``, lists of PIL images
and of (C, H, W) tensors are other ways of handing over the same images, so they must give
the same values. Messages are checked word for word where a contract fixes them: NaN and
empty batches, and the Python phrasing of errors (``reference=``, ``options[...]``) against
the command line's (``--reference``, ``--opt``).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geneval
from geneval.errors import GenevalWarning, current_surface

METRICS = ["fid", "kid", "precision", "coverage"]
OPTIONS = {"kid": {"subsets": 10, "subset_size": 40}}
BATCH = 64  # the default batch_size: updates of this size cut the batches evaluate() cuts


@pytest.fixture(scope="module")
def digits() -> dict[str, torch.Tensor]:
    """Float32 (N, 1, 8, 8) digits in [0, 1]: 300 'real' (train) and 150 'fake' (test)."""
    from geneval_plugins.datasets.digits import DigitsDataset

    data = DigitsDataset()
    return {"real": data.load("train").images[:300], "fake": data.load("test").images[:150]}


def _streamed(real: torch.Tensor, fake: torch.Tensor, **settings) -> geneval.Evaluator:
    evaluator = geneval.Evaluator(
        METRICS, reference=None, extractor="digits-cnn", options=OPTIONS, seed=3, **settings
    )
    for start in range(0, len(real), BATCH):
        evaluator.update(real[start : start + BATCH], real=True)
    for start in range(0, len(fake), BATCH):
        evaluator.update(fake[start : start + BATCH])
    return evaluator


def _values(results: dict) -> dict[str, float]:
    return {name: results[name]["value"] for name in METRICS}


def _compute(evaluator: geneval.Evaluator) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GenevalWarning)  # small n: checked on its own below
        return evaluator.compute()


def test_streamed_reference_equals_evaluate(digits):
    evaluator = _streamed(digits["real"], digits["fake"])
    assert evaluator.streams_reference and evaluator.real_count == 300 and evaluator.count == 150
    streamed = _compute(evaluator)
    report = geneval.evaluate(
        digits["fake"], digits["real"], METRICS, extractor="digits-cnn", options=OPTIONS, seed=3
    )
    for name in METRICS:
        expected = report["metrics"][name]["value"]
        assert streamed[name]["value"] == pytest.approx(expected, rel=1e-9, abs=1e-12), name
    assert streamed["kid"]["std"] == pytest.approx(report["metrics"]["kid"]["std"], rel=1e-9)
    assert streamed["fid"]["value"] > 0.0  # two different splits: not a vacuous equality


def test_reset_real_features_false_keeps_the_streamed_reference(digits):
    keep = _streamed(digits["real"], digits["fake"], reset_real_features=False)
    first = _values(_compute(keep))
    keep.reset()
    assert keep.count == 0 and keep.real_count == 300
    keep.update(digits["fake"])
    assert _values(_compute(keep)) == first  # same reference, same samples: the same numbers

    forget = _streamed(digits["real"], digits["fake"])  # torchmetrics' default: True
    forget.reset()
    assert forget.real_count == 0
    forget.update(digits["fake"])
    with pytest.raises(geneval.InputError, match=r"no reference images yet .*real=True"):
        forget.compute()


def test_a_reference_given_at_construction_refuses_real_updates(digits):
    evaluator = geneval.Evaluator("fid", reference="digits:train")
    assert not evaluator.streams_reference
    with pytest.raises(geneval.InputError, match=r"update\(real=True\).*reference=None"):
        evaluator.update(digits["real"][:10], real=True)


def test_nhwc_tensors_and_arrays_equal_nchw(digits):
    fake = digits["fake"]
    eight_bit = (fake * 255).round().to(torch.uint8)
    values = []
    for batch in (
        eight_bit,
        eight_bit.permute(0, 2, 3, 1),  # NHWC tensor, a strided view
        eight_bit.permute(0, 2, 3, 1).numpy(),  # NHWC array
        eight_bit.float() / 255,  # float in [0, 1]: the same images
    ):
        evaluator = geneval.Evaluator(["fid", "kid"], reference="digits:train", options=OPTIONS)
        evaluator.update(batch)
        values.append((_compute(evaluator)["fid"]["value"], _compute(evaluator)["kid"]["value"]))
    for other in values[1:]:
        assert other == pytest.approx(values[0], rel=1e-12)


def test_input_range_minus_one_to_one_equals_the_mapped_input(digits):
    minus_one_to_one = digits["fake"] * 2 - 1
    mapped = (minus_one_to_one + 1) / 2  # x ↦ (x − low) / (high − low)
    ranged = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS, input_range=(-1, 1))
    plain = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS)
    ranged.update(minus_one_to_one)
    plain.update(mapped)
    assert float(minus_one_to_one.min()) < 0.0  # the input really uses [-1, 0)
    got, expected = _compute(ranged), _compute(plain)
    for name in ("fid", "kid"):
        assert got[name]["value"] == pytest.approx(expected[name]["value"], rel=1e-12)
    with pytest.raises(geneval.InputError, match=r"must lie in \[-1, 1\], found \[-1.0, 1.5\]"):
        ranged.update(torch.cat([minus_one_to_one[:2], torch.full((1, 1, 8, 8), 1.5)]))
    uint8 = (mapped * 255).round().to(torch.uint8)  # uint8 is v / 255 whatever the range
    ranged.reset()
    plain.reset()
    ranged.update(uint8)
    plain.update(uint8)
    assert _compute(ranged)["fid"]["value"] == _compute(plain)["fid"]["value"]


def test_normalize_is_torchmetrics_spelling_of_the_dtype_rule(digits):
    floats = geneval.Evaluator("fid", "digits:train", normalize=True)
    floats.update(digits["fake"])  # floats in [0, 1]: accepted, as by default
    uint8_only = geneval.Evaluator("fid", "digits:train", normalize=False)
    uint8_only.update((digits["fake"] * 255).round().to(torch.uint8))
    assert uint8_only.count == 150
    with pytest.raises(geneval.InputError, match="normalize=False takes uint8"):
        uint8_only.update(digits["fake"])
    with pytest.raises(geneval.InputError, match="normalize= and input_range="):
        geneval.Evaluator("fid", "digits:train", normalize=True, input_range=(-1, 1))


def test_a_list_of_pil_images_equals_a_tensor_and_the_folder(digits, tmp_path):
    eight_bit = (digits["fake"][:, 0].numpy() * 255).round().astype(np.uint8)  # N, 8, 8
    pil = [Image.fromarray(image) for image in eight_bit]  # mode "L"
    folder = tmp_path / "fake"
    folder.mkdir()
    for i, image in enumerate(pil):
        image.save(folder / f"{i:04d}.png")
    # image files' rule: an 8-bit grey image is read as RGB (three equal channels)
    rgb = torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image in pil]))
    chw = [torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1) for image in pil]
    values = []
    for batch in (pil, rgb, chw):
        evaluator = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS)
        for start in range(0, len(batch), BATCH):
            evaluator(batch[start : start + BATCH])  # __call__ is update
        assert evaluator.count == 150
        got = _compute(evaluator)
        values.append((got["fid"]["value"], got["kid"]["value"]))
    report = geneval.evaluate(folder, "digits:train", ["fid", "kid"], options=OPTIONS)
    from_folder = (report["metrics"]["fid"]["value"], report["metrics"]["kid"]["value"])
    for found in values:
        assert found == pytest.approx(from_folder, rel=1e-9)
    mixed = geneval.Evaluator("fid", "digits:train")
    mixed.update([Image.fromarray(eight_bit[0]), Image.new("RGB", (16, 16))])  # two sizes
    assert mixed.count == 2
    with pytest.raises(geneval.InputError, match=r"update: images\[1\]: expected a PIL image"):
        mixed.update([pil[0], "not an image"])


def test_compute_carries_the_small_n_warning_of_evaluate(digits):
    fake = digits["fake"][:50]
    report = geneval.evaluate(fake, "digits:train", ["fid", "kid"], options=OPTIONS)
    expected = report["metrics"]["fid"]["warnings"]
    assert expected == [
        "computed from 50 samples, fewer than 256 (the minimum of extractor digits-cnn): the "
        "estimate is unreliable and comparable only with runs at the same n"
    ]
    evaluator = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS)
    evaluator.update(fake)
    with pytest.warns(GenevalWarning, match="computed from 50 samples, fewer than 256"):
        results = evaluator.compute()
    assert results["fid"]["warnings"] == expected
    assert results["kid"]["warnings"] == report["metrics"]["kid"]["warnings"]
    assert results["fid"]["value"] == pytest.approx(report["metrics"]["fid"]["value"], rel=1e-9)
    enough = geneval.Evaluator("fid", "digits:train")
    enough.update(digits["real"])  # 300 ≥ 256: no warning
    assert "warnings" not in enough.compute()["fid"]


def test_fail_if_takes_a_string_or_a_list():
    one = geneval.evaluate("digits:test", "digits:train", "fid", fail_if="fid>0.001")
    assert one["passed"] is False and [g["expr"] for g in one["gates"]] == ["fid>0.001"]
    passing = geneval.evaluate("digits:test", "digits:train", "fid", fail_if="fid<0")
    assert passing["passed"] is True
    several = geneval.evaluate("digits:test", "digits:train", "fid", fail_if=["fid>0.001", "fid<0"])
    assert [g["failed"] for g in several["gates"]] == [True, False]
    with pytest.raises(geneval.InputError, match="fail_if.*expected a gate such as 'fid>30'"):
        geneval.evaluate("digits:test", "digits:train", "fid", fail_if=30)


def _cli_error(run_cli, *args) -> str:
    res = run_cli("run", *args, "--no-cache", "--json", "-")
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1, res.err
    return res.err_lines[0]


def test_nan_and_inf_are_named_with_their_place(run_cli, tmp_path):
    images = np.full((4, 1, 8, 8), 0.5, np.float32)
    images[2, 0, 3, 5] = np.nan
    evaluator = geneval.Evaluator("fid", "digits:train")
    with pytest.raises(geneval.InputError) as err:
        evaluator.update(torch.from_numpy(images))
    assert str(err.value) == "update: images contains NaN at index (2, 0, 3, 5) (image 2)"
    with pytest.raises(geneval.InputError) as err:
        evaluator.update(images.transpose(0, 2, 3, 1))  # NHWC: the index as given
    assert str(err.value) == "update: images contains NaN at index (2, 3, 5, 0) (image 2)"
    with pytest.raises(geneval.InputError, match=r"samples array contains NaN at index \(2, 0"):
        geneval.evaluate(images, "digits:train", "fid")
    path = tmp_path / "nan.npy"
    np.save(path, images)
    line = _cli_error(run_cli, "--samples", path, "--reference", "digits:train")
    assert line.endswith("contains NaN at index (2, 0, 3, 5) (image 2)") and "nan.npy" in line
    images[2, 0, 3, 5] = -np.inf
    with pytest.raises(geneval.InputError, match=r"contains -inf at index \(2, 0, 3, 5\)"):
        evaluator.update(images)
    assert evaluator.count == 0  # nothing of a refused batch was kept


def test_empty_batches_say_they_are_empty(run_cli, tmp_path):
    evaluator = geneval.Evaluator("fid", "digits:train")
    for empty in (torch.empty(0, 1, 8, 8), np.empty((0, 8, 8, 3), np.uint8)):
        with pytest.raises(geneval.InputError, match=r"^update: images is empty \(0 images"):
            evaluator.update(empty)
    with pytest.raises(geneval.InputError, match=r"^update: images is empty \(0 images\)$"):
        evaluator.update([])
    with pytest.raises(geneval.InputError, match=r"samples array is empty \(0 images"):
        geneval.evaluate(np.empty((0, 1, 8, 8), np.float32), "digits:train", "fid")
    path = tmp_path / "empty.npy"
    np.save(path, np.empty((0, 8, 8, 1), np.uint8))
    assert "is empty (0 images" in _cli_error(run_cli, "--samples", path)


def test_errors_speak_python_through_the_api_and_the_cli_through_the_cli(run_cli, tmp_path):
    with pytest.raises(geneval.InputError) as err:
        geneval.Evaluator("kid", "digits:train", options={"kid": {"subset_size": 0}})
    assert str(err.value).startswith("options['kid']['subset_size']=0: expected >= ")
    with pytest.raises(geneval.InputError) as err:
        geneval.evaluate("digits:test", "digits:train", "kid", options={"kid": {"nosuch": 1}})
    assert str(err.value).startswith("options['kid']['nosuch']: metric kid has no option")
    with pytest.raises(geneval.InputError, match="need a reference: use reference=$"):
        geneval.evaluate(torch.rand(5, 1, 8, 8), None, "fid")
    ambiguous = np.random.default_rng(1).random((4, 3, 8, 3)).astype(np.float32)
    with pytest.raises(geneval.InputError, match="state the layout with layout='nchw' or 'nhwc'"):
        geneval.Evaluator("fid", "digits:train").update(ambiguous)
    assert current_surface() == "cli"  # the API's phrasing ends with its call

    line = _cli_error(run_cli, "--samples", "digits:test", "--metrics", "kid", "--opt",
                      "kid.subset_size=0")  # fmt: skip
    assert "--opt kid.subset_size=0: expected >= " in line and "options[" not in line
    path = tmp_path / "samples.npy"
    np.save(path, np.zeros((5, 1, 8, 8), np.uint8))
    assert "need a reference: use --reference" in _cli_error(run_cli, "--samples", path)
    np.save(path, ambiguous)
    assert "--layout nchw|nhwc" in _cli_error(run_cli, "--samples", path)


def test_to_the_same_device_and_moving_a_filled_evaluator(digits):
    evaluator = geneval.Evaluator("fid", "digits:train", device="cpu")
    assert evaluator.to("cpu") is evaluator and evaluator.to(torch.device("cpu")) is evaluator
    assert evaluator.device == torch.device("cpu")
    evaluator.update(digits["fake"][:10])
    if torch.cuda.is_available():
        with pytest.raises(geneval.InputError, match=r"holds 10 images .*after reset\(\)"):
            evaluator.to("cuda")
    with pytest.raises(geneval.InputError, match="unknown device 'nosuchdevice'"):
        evaluator.to("nosuchdevice")
    assert evaluator.to("cpu:0") is evaluator  # one CPU device


def test_to_another_device_prepares_the_evaluator_there(digits, monkeypatch):
    """The move itself (extractors loaded again, the reference prepared again, the settings
    kept), exercised on a CPU-only machine by making the evaluator believe it is elsewhere."""
    evaluator = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS, seed=4)
    built = evaluator._run
    with monkeypatch.context() as patched:
        patched.setattr(geneval.Evaluator, "device", property(lambda self: torch.device("meta")))
        assert evaluator.to("cpu") is evaluator
    assert evaluator._run is not built and evaluator.device == torch.device("cpu")
    evaluator.update(digits["fake"])
    direct = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS, seed=4)
    direct.update(digits["fake"])
    moved, made = _compute(evaluator), _compute(direct)
    for name in ("fid", "kid"):
        assert moved[name]["value"] == made[name]["value"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_to_cuda_gives_the_numbers_of_an_evaluator_made_there(digits):
    moved = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS, device="cpu")
    moved.to("cuda")
    assert moved.device.type == "cuda"
    made = geneval.Evaluator(["fid", "kid"], "digits:train", options=OPTIONS, device="cuda")
    for evaluator in (moved, made):
        evaluator.update(digits["fake"])
    a, b = _compute(moved), _compute(made)
    for name in ("fid", "kid"):
        assert a[name]["value"] == pytest.approx(b[name]["value"], rel=1e-9)


def test_the_report_of_a_streamed_reference_names_it(digits, tmp_path: Path):
    evaluator = _streamed(digits["real"][:70], digits["fake"][:70])
    results = _compute(evaluator)
    assert set(results) == set(METRICS)
    assert json.dumps(results)  # plain JSON values, as evaluate()'s report


DDP_SCRIPT = """
import json, sys, warnings
import torch.distributed as dist
import geneval
from geneval_plugins.datasets.digits import DigitsDataset

warnings.simplefilter("ignore")
dist.init_process_group("gloo")
rank = dist.get_rank()
data = DigitsDataset()
real, fake = data.load("train").images[:200], data.load("test").images[:130]
ev = geneval.Evaluator(["fid", "kid"], reference=None, extractor="digits-cnn",
                       options={"kid": {"subsets": 10, "subset_size": 40}}, cache=False)
for images, cut, is_real in ((real, 120, True), (fake, 70, False)):
    shard = images[:cut] if rank == 0 else images[cut:]  # uneven, in rank order
    for start in range(0, len(shard), 25):
        ev.update(shard[start : start + 25], real=is_real)
json.dump(ev.compute(), open(f"{sys.argv[1]}/ddp{rank}.json", "w"))
dist.destroy_process_group()
"""


@pytest.mark.slow
def test_a_streamed_reference_inside_a_ddp_job_equals_one_process(digits, tmp_path):
    import os
    import subprocess
    import sys

    script = tmp_path / "ddp_stream.py"
    script.write_text(DDP_SCRIPT)
    env = dict(os.environ, GENEVAL_LOAD_PLUGINS="", OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    res = subprocess.run(
        [*launcher, str(script), str(tmp_path)], env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    ranks = [json.loads((tmp_path / f"ddp{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1]
    torch.set_num_threads(1)
    from geneval_plugins.datasets.digits import DigitsDataset

    data = DigitsDataset()
    real, fake = data.load("train").images[:200], data.load("test").images[:130]
    single = geneval.Evaluator(
        ["fid", "kid"], reference=None, extractor="digits-cnn", options=OPTIONS, cache=False
    )
    for images, cut, is_real in ((real, 120, True), (fake, 70, False)):
        for shard in (images[:cut], images[cut:]):  # the same batches, in rank order
            for start in range(0, len(shard), 25):
                single.update(shard[start : start + 25], real=is_real)
    expected = _compute(single)
    assert ranks[0]["fid"]["value"] == pytest.approx(expected["fid"]["value"], rel=1e-6)
    assert ranks[0]["kid"]["value"] == pytest.approx(expected["kid"]["value"], rel=1e-6)
    assert ranks[0]["fid"]["warnings"] == expected["fid"]["warnings"]
    assert [w.split(",")[0] for w in expected["fid"]["warnings"]] == [
        "computed from 130 samples",  # the counts of all ranks together
        "computed from 200 reference images",
    ]


GUIDE = Path(__file__).resolve().parents[1] / "docs" / "python-api.md"


def test_the_guide_shows_the_messages_the_code_gives_and_python_that_parses():
    text = GUIDE.read_text(encoding="utf-8")
    messages = []
    for call in (
        lambda: geneval.Evaluator("kid", "digits:train", options={"kid": {"subset_size": 0}}),
        lambda: geneval.evaluate(torch.rand(5, 1, 8, 8), None, "fid"),
        lambda: geneval.Evaluator("fid", "digits:train").update(torch.empty(0, 1, 8, 8)),
    ):
        with pytest.raises(geneval.InputError) as err:
            call()
        messages.append(str(err.value))
    assert f"`{messages[0]}`" in text
    assert f"`{messages[1]}`" in text
    assert f"`{messages[2]}`" in text
    blocks = text.split("```python\n")[1:]
    assert len(blocks) >= 3
    for block in blocks:  # the Lightning example too: parsed, not run (Lightning is optional)
        compile(block.split("```")[0], str(GUIDE), "exec")
