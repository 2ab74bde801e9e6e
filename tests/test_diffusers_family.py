"""The ``diffusers`` model family on tiny pipelines written by ``save_pretrained`` in the test
(tests/diffusers_fixtures.py): every image geneval draws equals the pipeline's own PIL output
for the same generators, conditioning, scheduler swaps, reports and safe loading."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

from diffusers import DDIMScheduler, DiffusionPipeline  # noqa: E402

import geneval  # noqa: E402
from geneval.errors import InputError  # noqa: E402
from geneval.generators import balanced_labels  # noqa: E402
from geneval.sources import load_array_file, sample_block_seed  # noqa: E402
from tests.diffusers_fixtures import (  # noqa: E402
    BUILDERS,
    DIT_NUM_CLASSES,
    build_pickled_only,
)

STEPS = 2


@pytest.fixture(scope="module")
def pipelines(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("pipelines")
    return {name: build(root / name) for name, build in BUILDERS.items()}


def _load(folder: Path) -> Any:
    pipe = DiffusionPipeline.from_pretrained(str(folder), use_safetensors=True)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _pil_arrays(images: list[Any]) -> np.ndarray:
    """The pipeline's PIL output as uint8 NHWC: the reference route."""
    return np.stack([np.asarray(image) for image in images])


def _generators(n: int, seed: int) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(sample_block_seed(seed, j)) for j in range(n)]


def _sample(run_cli, folder: Path, out: Path, n: int, *args: Any) -> tuple[np.ndarray, dict]:
    result = run_cli(
        "sample", "--model", f"diffusers:{folder}", "-n", n, "-o", out, "--steps", STEPS,
        "--quiet", *args,
    )  # fmt: skip
    assert result.code == 0, result.err
    _, carried = load_array_file(out)
    return np.load(out)["images"], carried


@pytest.mark.parametrize("kind", ["ddpm", "ddim", "pndm", "ldm"])
def test_unconditional_samples_equal_the_pipeline_s_own_pil_output(
    kind, pipelines, run_cli, tmp_path
):
    """geneval's images (``output_type="np"``, quantised to 8 bits) are the pipeline's PIL
    images, called directly with one generator per image seeded sha256(seed, index)."""
    n, seed = 3, 5
    ours, _ = _sample(run_cli, pipelines[kind], tmp_path / "s.npz", n, "--seed", seed,
                      "--batch-size", n)  # fmt: skip
    pipe = _load(pipelines[kind])
    direct = pipe(batch_size=n, generator=_generators(n, seed), num_inference_steps=STEPS,
                  output_type="pil")  # fmt: skip
    np.testing.assert_array_equal(ours, _pil_arrays(direct.images))
    # image i depends on the seed and i only: another model-call size draws the same images
    # (up to float32 rounding of the batched network, at most one 8-bit level)
    small, _ = _sample(run_cli, pipelines[kind], tmp_path / "t.npz", n, "--seed", seed,
                       "--batch-size", 1)  # fmt: skip
    assert np.abs(small.astype(int) - ours.astype(int)).max() <= 1
    assert (small == ours).mean() > 0.99


def test_score_sde_ve_is_drawn_per_block(pipelines, run_cli, tmp_path):
    """NCSN++'s corrector couples the images of a batch, so each block gets one generator
    seeded sha256(seed, first index), as the bundled families do."""
    n, seed = 3, 2
    ours, _ = _sample(run_cli, pipelines["score-sde-ve"], tmp_path / "s.npz", n, "--seed", seed)
    pipe = _load(pipelines["score-sde-ve"])
    generator = torch.Generator().manual_seed(sample_block_seed(seed, 0))
    direct = pipe(batch_size=n, generator=generator, num_inference_steps=STEPS, output_type="pil")
    np.testing.assert_array_equal(ours, _pil_arrays(direct.images))


def test_dit_is_class_conditional_with_balanced_labels(pipelines, run_cli, tmp_path):
    n, seed = 7, 3
    ours, carried = _sample(
        run_cli, pipelines["dit"], tmp_path / "s.npz", n, "--seed", seed,
        "--opt", "model.guidance_scale=1.5",
    )  # fmt: skip
    labels = balanced_labels(n, DIT_NUM_CLASSES, seed)
    assert carried["labels"].tolist() == labels.tolist()
    pipe = _load(pipelines["dit"])
    direct = pipe(class_labels=labels.tolist(), guidance_scale=1.5, generator=_generators(n, seed),
                  num_inference_steps=STEPS, output_type="pil")  # fmt: skip
    np.testing.assert_array_equal(ours, _pil_arrays(direct.images))
    labels_file = tmp_path / "labels.txt"
    labels_file.write_text("4\n1\n")
    _, carried = _sample(run_cli, pipelines["dit"], tmp_path / "l.npz", 3, "--labels", labels_file)
    assert carried["labels"].tolist() == [4, 1, 4]
    labels_file.write_text("5\n")
    bad = run_cli("sample", "--model", f"diffusers:{pipelines['dit']}", "-n", 2, "-o",
                  tmp_path / "b.npz", "--labels", labels_file)  # fmt: skip
    assert bad.code == 2 and "outside the model's classes [0, 5)" in bad.err


def test_text_to_image_draws_from_the_prompts_and_keeps_them(pipelines, run_cli, tmp_path):
    n, seed = 3, 1
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a cat\na dog\n")
    ours, carried = _sample(
        run_cli, pipelines["text-to-image"], tmp_path / "s.npz", n, "--seed", seed,
        "--prompts", prompts, "--opt", "model.guidance_scale=3",
        "--opt", "model.negative_prompt=a dog",
    )  # fmt: skip
    expected_prompts = ["a photo of a cat", "a dog", "a photo of a cat"]
    assert carried["captions"] == expected_prompts
    pipe = _load(pipelines["text-to-image"])
    direct = pipe(prompt=expected_prompts, guidance_scale=3.0, negative_prompt=["a dog"] * n,
                  generator=_generators(n, seed), num_inference_steps=STEPS,
                  output_type="pil")  # fmt: skip
    np.testing.assert_array_equal(ours, _pil_arrays(direct.images))
    missing = run_cli("sample", "--model", f"diffusers:{pipelines['text-to-image']}", "-n", 2,
                      "-o", tmp_path / "m.npz")  # fmt: skip
    assert missing.code == 2 and "give --prompts FILE" in missing.err


def test_scheduler_swap_equals_from_config(pipelines, run_cli, tmp_path):
    n, seed = 2, 0
    ours, _ = _sample(run_cli, pipelines["ddpm"], tmp_path / "s.npz", n, "--sampler", "ddim")
    pipe = _load(pipelines["ddpm"])
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    direct = pipe(batch_size=n, generator=_generators(n, seed), num_inference_steps=STEPS,
                  output_type="pil")  # fmt: skip
    np.testing.assert_array_equal(ours, _pil_arrays(direct.images))
    for kind, sampler, message in [
        ("ddpm", "euler", "needs a pipeline that scales its input"),
        ("score-sde-ve", "ddim", "drives its own ScoreSdeVeScheduler"),
        ("ddpm", "nope", "--sampler nope: model diffusers:"),
    ]:
        result = run_cli("sample", "--model", f"diffusers:{pipelines[kind]}", "-n", 2, "-o",
                         tmp_path / "x.npz", "--sampler", sampler, "--force")  # fmt: skip
        assert result.code == 2, result.err
        assert message in result.err, (message, result.err)
    swapped = run_cli("sample", "--model", f"diffusers:{pipelines['ldm']}", "-n", 2, "-o",
                      tmp_path / "e.npz", "--sampler", "euler", "--steps", 2)  # fmt: skip
    assert swapped.code == 0, swapped.err  # LDMPipeline scales its input: Euler is allowed


def test_run_scores_the_pipeline_and_reports_its_settings(pipelines, run_cli, tmp_path):
    """``geneval run --model diffusers:FOLDER``, the same pipeline object given to
    ``evaluate``, and the ``.npz`` ``geneval sample`` wrote score the same FID."""
    folder, n = pipelines["ddim"], 12
    settings = dict(num_samples=n, steps=STEPS, seed=4, cache=False)
    by_name = geneval.evaluate(None, "digits:train", "fid", model=f"diffusers:{folder}", **settings)
    by_object = geneval.evaluate(_load(folder), "digits:train", "fid", **settings)
    _sample(run_cli, folder, tmp_path / "s.npz", n, "--seed", 4)
    by_file = geneval.evaluate(str(tmp_path / "s.npz"), "digits:train", "fid", cache=False)
    value = by_file["metrics"]["fid"]["value"]
    assert by_name["metrics"]["fid"]["value"] == pytest.approx(value, rel=1e-9)
    assert by_object["metrics"]["fid"]["value"] == pytest.approx(value, rel=1e-9)
    config = by_name["config"]
    assert config["model"] == "diffusers" and config["checkpoint"] == str(folder)
    details = config["model_details"]
    assert details["pipeline"] == "DDIMPipeline" and details["scheduler"] == "DDIMScheduler"
    assert details["scheduler_config"]["num_train_timesteps"] == 100
    assert details["dtype"] == "fp32"
    assert config["sample_options"] == {"dtype": "fp32", "eta": 0.0}
    assert by_object["config"]["checkpoint"] is None
    result = run_cli("run", "--model", f"diffusers:{folder}", "--num-samples", 4, "--steps", 2)
    assert result.code == 2 and "names no training set: use --reference" in result.err
    result = run_cli("run", "--model", "diffusers", "--reference", "digits:train")
    assert result.code == 2 and "no bundled checkpoint: give --checkpoint" in result.err
    result = run_cli("run", "--model", f"diffusers:{folder}", "--reference", "digits:train",
                     "--precision", "fp16", "--num-samples", 2, "--device", "cpu")  # fmt: skip
    assert result.code == 2 and "fp16" in result.err and "CUDA" in result.err


def test_loading_refuses_pickles_and_foreign_code(pipelines, run_cli, tmp_path):
    pickled = build_pickled_only(tmp_path / "pickled")
    result = run_cli("sample", "--model", f"diffusers:{pickled}", "-n", 1, "-o", tmp_path / "p.npz")
    assert result.code == 2
    assert "diffusion_pytorch_model.bin: pickled weights, which geneval never loads" in result.err
    custom = tmp_path / "custom"
    shutil.copytree(pipelines["ddpm"], custom)
    index = json.loads((custom / "model_index.json").read_text())
    (custom / "model_index.json").write_text(json.dumps({**index, "_class_name": "MyPipeline"}))
    result = run_cli("sample", "--model", f"diffusers:{custom}", "-n", 1, "-o", tmp_path / "c.npz")
    assert result.code == 2 and "'MyPipeline' is not a diffusers pipeline" in result.err
    (custom / "model_index.json").write_text(json.dumps({**index, "unet": ["my_pkg", "Net"]}))
    result = run_cli("sample", "--model", f"diffusers:{custom}", "-n", 1, "-o", tmp_path / "c.npz")
    assert result.code == 2 and "names my_pkg.Net; geneval builds only classes of" in result.err
    with pytest.raises(InputError, match="neither a folder nor a hub id"):
        geneval.evaluate(None, "digits:train", model="diffusers:not a/valid id!", num_samples=2)
    afile = tmp_path / "model.safetensors"
    afile.write_bytes(b"")
    with pytest.raises(InputError, match="a diffusers pipeline is a folder"):
        geneval.evaluate(None, "digits:train", model=f"diffusers:{afile}", num_samples=2)


def test_hub_ids_resolve_from_the_cache_offline(pipelines, tmp_path, run_cli):
    """``--model diffusers:OWNER/NAME`` with ``HF_HUB_OFFLINE=1`` reads the Hugging Face cache
    (its ``models--OWNER--NAME/snapshots/REV`` layout), and an id not in it is exit 2."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--geneval-tests--tiny-ddim"
    shutil.copytree(pipelines["ddim"], repo / "snapshots" / revision)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    env.pop("HUGGINGFACE_HUB_CACHE", None)
    common = ["-n", "2", "--steps", "2", "--quiet"]
    ok = subprocess.run(
        [sys.executable, "-m", "geneval", "sample", "--model",
         "diffusers:geneval-tests/tiny-ddim", "-o", str(tmp_path / "a.npz"), *common],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    _, _ = _sample(run_cli, pipelines["ddim"], tmp_path / "b.npz", 2)
    np.testing.assert_array_equal(
        np.load(tmp_path / "a.npz")["images"], np.load(tmp_path / "b.npz")["images"]
    )
    missing = subprocess.run(
        [sys.executable, "-m", "geneval", "sample", "--model", "diffusers:nobody/nothing",
         "-o", str(tmp_path / "c.npz"), *common],
        env=env, capture_output=True, text=True, cwd=tmp_path,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "HF_HUB_OFFLINE=1 with the pipeline in the cache" in missing.stderr


def test_plugins_listing_names_the_samplers(run_cli):
    result = run_cli("plugins", "--verbose")
    assert "samplers: pipeline (default), ddpm, ddim, pndm, dpm-solver++" in result.out


@pytest.mark.slow
def test_sharded_run_draws_what_one_process_draws(pipelines, tmp_path, geneval_exe):
    """``geneval run --nproc 2``: each rank draws its own images, each with its own generator
    seeded by the seed and the image's index, so the scores equal one process's (the float64
    sums are all-reduced; only their order of addition differs)."""
    images = np.random.default_rng(0).integers(0, 256, (40, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "ref.npz", images=images)
    common = [
        "run", "--model", f"diffusers:{pipelines['ddim']}", "--reference",
        str(tmp_path / "ref.npz"), "--metrics", "fid,kid", "--num-samples", "16",
        "--steps", "2", "--sample-batch-size", "4", "--no-cache", "--quiet",
        "--extractor", "digits-cnn", "--opt",
        "kid.subset_size=8",
    ]  # fmt: skip
    reports = {}
    for label, extra in (("one", []), ("two", ["--nproc", "2", "--oversubscribe"])):
        out = tmp_path / f"{label}.json"
        done = subprocess.run(
            [*geneval_exe, *common, *extra, "--json", str(out)],
            capture_output=True, text=True, cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        reports[label] = json.loads(out.read_text())["metrics"]
    for metric in ("fid", "kid"):
        assert reports["two"][metric]["value"] == pytest.approx(
            reports["one"][metric]["value"], rel=1e-9, abs=1e-12
        )


def test_bf16_runs_the_pipeline_in_bfloat16(pipelines, tmp_path, run_cli):
    """``--precision bf16`` (or ``--opt model.dtype=bf16``) samples in bfloat16: the images
    are those of the pipeline cast to bfloat16 and called with the same generators, and the
    report says so; a pipeline whose own code cannot return bfloat16 images is exit 2."""
    n, seed = 3, 0
    report = geneval.evaluate(
        None, "digits:train", "fid", model=f"diffusers:{pipelines['dit']}", num_samples=n,
        steps=STEPS, precision="bf16", cache=False, seed=seed,
    )  # fmt: skip
    assert report["config"]["model_details"]["dtype"] == "bf16"
    assert report["config"]["sample_options"]["dtype"] == "bf16"
    from geneval_plugins.models.diffusers_pipelines.pipeline_model import load_pipeline_model

    model = load_pipeline_model(str(pipelines["dit"]), device=torch.device("cpu"))
    labels = balanced_labels(n, DIT_NUM_CLASSES, seed)
    ours = model.sample(n, batch_size=n, generator=_generators(n, seed), steps=STEPS,
                        labels=labels, dtype="bf16", guidance_scale=4.0)  # fmt: skip
    pipe = _load(pipelines["dit"]).to(dtype=torch.bfloat16)
    direct = pipe(class_labels=labels.tolist(), generator=_generators(n, seed),
                  num_inference_steps=STEPS, output_type="np")  # fmt: skip
    np.testing.assert_array_equal(
        (ours.permute(0, 2, 3, 1).numpy() * 255).round(), (direct.images * 255).round()
    )
    refused = run_cli("sample", "--model", f"diffusers:{pipelines['ddim']}", "-n", 2, "-o",
                      tmp_path / "x.npz", "--opt", "model.dtype=bf16", "--steps", 2)  # fmt: skip
    assert refused.code == 2 and "DDIMPipeline cannot return bfloat16 images" in refused.err
