"""Any generator as the samples of a run (geneval/generators.py): the user's callable, module
or object, ``--model module.path:attribute``, conditioning and sample options."""

from __future__ import annotations

import itertools
import json
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import geneval
from geneval.errors import InputError
from geneval.generators import (
    GeneratorModel,
    balanced_labels,
    conditions,
    generated_images,
    parse_model,
    read_prompts,
    split_model_options,
)
from geneval.options import Option
from geneval.plugins import get_registry
from geneval.sources import load_array_file, sample_block_seed

_counter = itertools.count()

GENERATOR_MODULE = """
import torch


def draw(n, generator):
    # 8-bit grey digit-sized images: a noisy blob whose position the generator picks
    base = torch.rand(n, 1, 8, 8, generator=generator)
    return (base * 255).round().to(torch.uint8)


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = torch.nn.Parameter(torch.ones(()))

    def sample(self, n, generator=None):
        return draw(n, generator).float() / 255.0 * self.scale.detach()


net = Net()
"""


def _draw(n: int, generator: torch.Generator) -> torch.Tensor:
    base = torch.rand(n, 1, 8, 8, generator=generator)
    return (base * 255).round().to(torch.uint8)


@pytest.fixture
def generator_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A module of the user's own code in the working folder; returns its name."""
    name = f"user_generator_{next(_counter)}"
    (tmp_path / f"{name}.py").write_text(GENERATOR_MODULE)
    monkeypatch.chdir(tmp_path)
    return name


def _explicit_samples(n: int, seed: int, block: int) -> torch.Tensor:
    """The samples the run must draw, by hand: one call per block, each block's generator
    seeded with sample_block_seed(seed, first index)."""
    parts = []
    for first in range(0, n, block):
        g = torch.Generator().manual_seed(sample_block_seed(seed, first))
        parts.append(_draw(min(block, n - first), g))
    return torch.cat(parts)


def test_callable_module_and_cli_score_the_generator_s_own_images(generator_module, run_cli):
    """evaluate(samples=G), evaluate(model="mod:G"), an nn.Module and ``geneval run --model
    mod:G`` all score exactly the images G draws under the block seeds, which are scored here
    as a plain uint8 tensor."""
    n, seed, block = 300, 3, 128
    settings = dict(num_samples=n, seed=seed, sample_batch_size=block, cache=False)
    expected = geneval.evaluate(
        _explicit_samples(n, seed, block), "digits:train", "fid,kid", seed=seed, cache=False
    )
    by_callable = geneval.evaluate(_draw, "digits:train", "fid,kid", **settings)
    by_name = geneval.evaluate(
        None, "digits:train", "fid,kid", model=f"{generator_module}:draw", **settings
    )
    by_module = geneval.evaluate(
        None, "digits:train", "fid,kid", model=f"{generator_module}:net", **settings
    )
    for report in (by_callable, by_name, by_module):
        for metric in ("fid", "kid"):
            assert report["metrics"][metric]["value"] == pytest.approx(
                expected["metrics"][metric]["value"], rel=1e-9, abs=1e-12
            )
    with pytest.raises(InputError, match="a type is not a generator"):
        geneval.evaluate(None, "digits:train", "fid", model=f"{generator_module}:Net", **settings)
    result = run_cli(
        "run", "--model", f"{generator_module}:draw", "--reference", "digits:train",
        "--num-samples", n, "--seed", seed, "--sample-batch-size", block, "--no-cache",
        "--metrics", "fid", "--json", "-",
    )  # fmt: skip
    assert result.code == 0, result.err
    report = json.loads(result.out)
    assert report["metrics"]["fid"]["value"] == pytest.approx(
        expected["metrics"]["fid"]["value"], rel=1e-9
    )
    assert report["config"]["model"] == f"{generator_module}:draw"
    assert report["config"]["checkpoint"] is None


class ConditionalModel:
    """A class-conditional model that takes one generator per image and a ``scale`` sample
    option: image i is uniform noise times ``scale``, brightened by its class."""

    image_shape = (1, 8, 8)
    device = torch.device("cpu")
    config: Mapping[str, Any] = {"report": {"kind": "stub", "nested": {"a": 1}}}
    num_classes = 3
    per_sample_generators = True
    sample_options = {"scale": Option(1.0, "brightness", low=0.0, high=1.0)}

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def sample(self, n, *, batch_size, generator, sampler=None, steps=None, labels, scale):
        assert isinstance(generator, list) and len(generator) == n == len(labels)
        self.calls.append({"n": n, "labels": labels.clone(), "scale": scale})
        noise = torch.cat([torch.rand(1, 1, 8, 8, generator=g) for g in generator])
        return (noise * scale * 0.5 + labels.view(-1, 1, 1, 1) / 6.0).clamp(0, 1)


def _draw_all(model: Any, n: int, *, batch: int, **kw: Any) -> tuple[torch.Tensor, Any]:
    from geneval.generators import model_source

    source = model_source(model, "stub", n, seed=7, batch_size=batch, **kw)
    images = torch.cat(list(source.batches(0, torch.device("cpu"), 0)))
    return images, source


def test_per_sample_generators_and_labels_do_not_depend_on_the_batch_size():
    """With one generator per image and labels drawn for the whole run, sample i is the same
    whatever the model-call size; labels are balanced over the classes (counts differ by at
    most one) and travel with the samples."""
    small, source_small = _draw_all(ConditionalModel(), 10, batch=3)
    large, source_large = _draw_all(ConditionalModel(), 10, batch=8)
    assert torch.equal(small, large)
    labels = source_small.carried["labels"]
    assert torch.equal(labels, source_large.carried["labels"])
    assert torch.equal(labels, balanced_labels(10, 3, 7))
    counts = torch.bincount(labels, minlength=3)
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == 10
    # image i carries its label: its floor is label/6 before quantisation
    assert torch.all(small.flatten(1).min(1).values >= labels / 6.0 - 1 / 255)
    # another seed gives another order, the same balance
    other = balanced_labels(10, 3, 8)
    assert not torch.equal(other, labels)
    assert torch.equal(torch.bincount(other, minlength=3).sort().values, counts.sort().values)
    # a one-sample shard unit: a sharded run splits anywhere
    assert source_small.shard_unit(64) == 1


def test_labels_file_and_sample_options(tmp_path: Path):
    labels = tmp_path / "labels.txt"
    labels.write_text("2\n0\n\n1\n")
    model = ConditionalModel()
    _, source = _draw_all(model, 5, batch=5, labels=labels, options={"scale": "0.25"})
    assert source.carried["labels"].tolist() == [2, 0, 1, 2, 0]  # cycled to the count
    assert model.calls[0]["scale"] == 0.25
    np.save(tmp_path / "labels.npy", np.array([1, 1, 2]))
    _, source = _draw_all(ConditionalModel(), 4, batch=4, labels=tmp_path / "labels.npy")
    assert source.carried["labels"].tolist() == [1, 1, 2, 1]
    labels.write_text("0\n3\n")
    with pytest.raises(InputError, match=r"label 3 \(entry 2\) is outside the model's classes"):
        _draw_all(ConditionalModel(), 4, batch=4, labels=labels)
    labels.write_text("0\nfive\n")
    with pytest.raises(InputError, match="line 2: five is not an integer"):
        _draw_all(ConditionalModel(), 4, batch=4, labels=labels)
    with pytest.raises(InputError, match=r"model\.scale.*1"):
        _draw_all(ConditionalModel(), 4, batch=4, options={"scale": "2"})
    with pytest.raises(InputError, match="model.strength"):
        _draw_all(ConditionalModel(), 4, batch=4, options={"strength": "2"})
    with pytest.raises(InputError, match="--prompts: the model does not take text prompts"):
        _draw_all(ConditionalModel(), 4, batch=4, prompts=["a cat"])


def test_prompts_are_read_cycled_and_required(tmp_path: Path):
    text = tmp_path / "prompts.txt"
    text.write_text("a red cube\n\n  a blue ball  \n")
    assert read_prompts(text, 5) == ["a red cube", "a blue ball"] * 2 + ["a red cube"]
    jsonl = tmp_path / "prompts.jsonl"
    jsonl.write_text('{"id": 1, "prompt": "x"}\n{"prompt": "y"}\n')
    assert read_prompts(jsonl, 3) == ["x", "y", "x"]
    jsonl.write_text('{"id": 1, "caption": "x"}\n')
    with pytest.raises(InputError, match="line 1 has no string 'prompt'"):
        read_prompts(jsonl, 3)
    text.write_text("\n\n")
    with pytest.raises(InputError, match="holds no prompts"):
        read_prompts(text, 3)

    class TextModel:
        takes_prompts = True

    assert conditions(TextModel(), 2, seed=0, prompts=["p"]) == {"prompts": ["p", "p"]}
    with pytest.raises(InputError, match="give --prompts FILE"):
        conditions(TextModel(), 2, seed=0)
    with pytest.raises(InputError, match="--labels: the model is not class-conditional"):
        conditions(TextModel(), 2, seed=0, prompts=["p"], labels=[0])


def test_sample_writes_the_conditions_it_drew(tmp_path: Path, run_cli, monkeypatch):
    """``geneval sample`` of a conditional generator writes its labels beside the images, and
    the file reads back with the images and labels the run would score."""
    module = f"user_conditional_{next(_counter)}"
    (tmp_path / f"{module}.py").write_text(
        textwrap.dedent(
            """
            from tests.test_generators import ConditionalModel
            model = ConditionalModel()
            """
        )
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    out = tmp_path / "s.npz"
    result = run_cli(
        "sample", "--model", f"{module}:model", "-n", 7, "-o", out, "--seed", 7,
        "--opt", "model.scale=0.5", "--quiet",
    )  # fmt: skip
    assert result.code == 0, result.err
    images, carried = load_array_file(out)
    assert images.shape == (7, 1, 8, 8)
    assert carried["labels"].tolist() == balanced_labels(7, 3, 7).tolist()
    folder = run_cli("sample", "--model", f"{module}:model", "-n", 7, "-o", tmp_path / "pngs")
    assert folder.code == 2
    assert "conditioned on labels; write an .npz" in folder.err_lines[-1]
    bad = run_cli("sample", "--model", f"{module}:model", "-n", 2, "-o", out, "--force",
                  "--opt", "fid.x=1")  # fmt: skip
    assert bad.code == 2 and "takes model.KEY=VALUE only" in bad.err_lines[-1]


def test_captions_round_trip_through_an_npz(tmp_path: Path):
    from geneval.sample_files import carried_arrays

    path = tmp_path / "c.npz"
    arrays = carried_arrays({"captions": ["a dog", "ein Hund ü"], "labels": torch.tensor([1, 0])})
    np.savez(path, images=np.zeros((2, 4, 4, 3), np.uint8), **arrays)
    _, carried = load_array_file(path)
    assert carried["captions"] == ["a dog", "ein Hund ü"]
    assert carried["labels"].tolist() == [1, 0]
    np.savez(path, images=np.zeros((2, 4, 4, 3), np.uint8), captions=np.array(["one"]))
    with pytest.raises(InputError, match="disagree on the number of rows"):
        load_array_file(path)


def test_model_spec_forms_and_refusals(generator_module, run_cli):
    registry = get_registry()
    assert parse_model("ddpm", None, registry).family == "ddpm"
    spec = parse_model("ddpm:my.safetensors", None, registry)
    assert (spec.family, spec.checkpoint) == ("ddpm", "my.safetensors")
    assert parse_model("pkg.mod:gen", None, registry).target == "pkg.mod:gen"
    with pytest.raises(InputError, match="drop --checkpoint"):
        parse_model("ddpm:a.safetensors", "b.safetensors", registry)
    with pytest.raises(InputError, match="--checkpoint is for a model family"):
        parse_model("pkg.mod:gen", "b.safetensors", registry)
    with pytest.raises(InputError, match="not a model family"):
        parse_model("no such:thing", None, registry)
    for args, message in [
        (("--model", "no_such_module_xyz:draw"), "no module no_such_module_xyz"),
        (("--model", f"{generator_module}:missing"), "has no missing"),
        (("--model", f"{generator_module}:torch"), "a module is not a generator"),
        (("--model", f"{generator_module}:draw", "--sampler", "ddim"), "takes no --sampler"),
        (("--model", f"{generator_module}:draw", "--opt", "model.x=1"), "takes no sample options"),
        (("--samples", "digits:test", "--opt", "model.x=1"), "sample options are for --model"),
        (("--model", f"{generator_module}:draw", "--labels", "l.txt"), "not class-conditional"),
    ]:
        result = run_cli(
            "run", *args, "--reference", "digits:train", "--num-samples", 8, "--no-cache"
        )
        assert result.code == 2, (args, result.err)
        assert len(result.err_lines) == 1 or "warning" in result.err, result.err
        assert message in result.err, (message, result.err)


def test_generator_outputs_are_checked():
    assert torch.equal(
        generated_images(np.full((2, 4, 4, 3), 255, np.uint8), 2, what="G"), torch.ones(2, 3, 4, 4)
    )
    with pytest.raises(InputError, match=r"G returned values in \[-1, 1\]: .*\(x \+ 1\) / 2"):
        generated_images(torch.linspace(-1, 1, 2 * 3 * 16).view(2, 3, 4, 4), 2, what="G")
    with pytest.raises(InputError, match="G returned non-finite values"):
        generated_images(torch.full((2, 3, 4, 4), float("nan")), 2, what="G")
    with pytest.raises(InputError, match=r"asked for 3 images and returned shape \(2, 3, 4, 4\)"):
        generated_images(torch.zeros(2, 3, 4, 4), 3, what="G")
    with pytest.raises(InputError, match="returned a list"):
        generated_images([1, 2], 2, what="G")
    model = GeneratorModel(lambda n, g: torch.zeros(n, 3, 4 + n, 4), device=torch.device("cpu"),
                           name="G")  # fmt: skip
    model.sample(1, batch_size=1, generator=torch.Generator())
    with pytest.raises(InputError, match=r"G returned images of shape \(3, 6, 4\) after"):
        model.sample(2, batch_size=2, generator=torch.Generator())


def test_model_options_split_from_metric_options():
    metric, model = split_model_options(["kid.subset_size=10", "model.guidance_scale=4"])
    assert metric == ["kid.subset_size=10"] and model == {"guidance_scale": "4"}
    metric, model = split_model_options({"kid": {"subset_size": 10}, "model": {"eta": 0.5}})
    assert metric == {"kid": {"subset_size": 10}} and model == {"eta": 0.5}


def test_report_records_the_model_s_conditions_and_options(monkeypatch):
    report = geneval.evaluate(
        ConditionalModel(), "digits:train", "fid", num_samples=9, options={"model": {"scale": 0.5}},
        cache=False,
    )  # fmt: skip
    config = report["config"]
    assert config["sample_options"] == {"scale": 0.5}
    assert config["labels"] == "balanced over 3 classes (seeded)"
    assert config["model_details"] == {"kind": "stub", "nested": {"a": 1}}
    assert report["inputs"]["samples"]["count"] == 9


def test_diffusers_family_without_its_extra_names_the_extra(run_cli, monkeypatch, tmp_path):
    """The ``diffusers`` family registers without diffusers; using it without the extra is
    exit 2 naming ``geneval[diffusers]``."""
    import sys

    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    import geneval_plugins.models.diffusers_pipelines as package

    monkeypatch.delitem(
        sys.modules, "geneval_plugins.models.diffusers_pipelines.pipeline_model", raising=False
    )
    monkeypatch.delattr(package, "pipeline_model", raising=False)
    result = run_cli(
        "run", "--model", f"diffusers:{tmp_path}", "--reference", "digits:train",
        "--num-samples", 2,
    )  # fmt: skip
    assert result.code == 2
    assert "model diffusers needs diffusers: pip install 'diffusers>=0.30'" in result.err
    assert "geneval[diffusers]" in result.err


def test_prompts_that_are_not_utf8_are_refused(tmp_path: Path):
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"a cat\n\xff\xfe broken\n")
    with pytest.raises(InputError, match=r"is not UTF-8 text \(byte 6\)"):
        read_prompts(path, 2)


def test_evaluator_update_draws_from_a_generator():
    """``Evaluator.update(G, num_samples=N)`` draws N images under the block seeds of
    sample_block_seed(seed, samples held so far), scored exactly as those images."""
    seed, block = 2, 128
    by_generator = geneval.Evaluator(
        ["fid"], "digits:train", seed=seed, sample_batch_size=block, cache=False
    )
    by_images = geneval.Evaluator(["fid"], "digits:train", seed=seed, cache=False)
    by_generator.update(_draw, num_samples=300)
    by_images.update(_explicit_samples(300, sample_block_seed(seed, 0), block))
    assert by_generator.compute()["fid"]["value"] == pytest.approx(
        by_images.compute()["fid"]["value"], rel=1e-9
    )
    by_generator.update(_draw, num_samples=300)  # new images: seeded by the 300 held
    by_images.update(_explicit_samples(300, sample_block_seed(seed, 300), block))
    assert by_generator.count == 600
    assert by_generator.compute()["fid"]["value"] == pytest.approx(
        by_images.compute()["fid"]["value"], rel=1e-9
    )
    with pytest.raises(InputError, match="give num_samples= to draw from a generator"):
        by_generator.update(_draw)
    with pytest.raises(InputError, match="num_samples= is for a generator"):
        by_generator.update(torch.zeros(2, 1, 8, 8), num_samples=2)
