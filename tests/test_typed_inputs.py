"""Typed inputs: latents, labels, factors and paired reconstructions reach metrics from array
files, folders and a model with ``encode``/``decode``; each producer runs once per run."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from geneval.api import ImageSet, Need
from geneval.plugin import hookimpl
from geneval.run.inputs import PRODUCERS
from tests.fake_plugins import FakePlugins, ToySet


class LatentClassMeans:
    """value = Σ_c mean latent of class c (first latent dimension); reports the counts seen."""

    name = "latent-means"
    higher_is_better = False
    interpretation = "test metric"
    needs = (Need("latents", "samples"), Need("labels", "samples"))
    options: dict = {}
    fields = {"n": "rows", "dim": "latent dimension"}
    uncertainty = None

    def compute(self, inputs):
        z, y = inputs.latents("samples").double(), inputs.labels("samples")
        value = sum(float(z[y == c, 0].mean()) for c in torch.unique(y))
        return {"value": value, "n": int(z.shape[0]), "dim": int(z.shape[1])}


class LatentNorm:
    name = "latent-norm"
    higher_is_better = False
    interpretation = "test metric"
    needs = (Need("latents", "samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        return {"value": float(inputs.latents("samples").double().norm())}


class FactorSum:
    name = "factor-sum"
    higher_is_better = False
    interpretation = "test metric"
    needs = (Need("factors", "samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        return {"value": float(inputs.factors("samples").sum())}


class PairedMSE:
    name = "paired-mse"
    higher_is_better = False
    interpretation = "test metric"
    needs = (Need("reconstructions"),)
    options: dict = {}
    fields = {"n": "pairs"}
    uncertainty = None

    def compute(self, inputs):
        pairs = inputs.reconstructions()
        diff = pairs.reconstructions.double() - pairs.originals.double()
        return {"value": float((diff**2).mean()), "n": int(diff.shape[0])}


class PairedMaxError(PairedMSE):
    name = "paired-max"

    def compute(self, inputs):
        pairs = inputs.reconstructions()
        diff = pairs.reconstructions.double() - pairs.originals.double()
        return {"value": float(diff.abs().max()), "n": int(diff.shape[0])}


class ToyAutoencoder:
    """encode: 2×2 average pooling of a 1×6×6 image (9-d); decode: nearest upsampling."""

    image_shape = (1, 6, 6)
    device = torch.device("cpu")
    config: dict = {}
    encode_calls: list[int] = []

    def sample(self, n, *, batch_size, generator, sampler=None, steps=None):
        return torch.rand((n, *self.image_shape), generator=generator)

    def encode(self, images):
        self.encode_calls.append(int(images.shape[0]))
        return F.avg_pool2d(images, 2).flatten(1)

    def decode(self, latents):
        return F.interpolate(latents.view(-1, 1, 3, 3), scale_factor=2, mode="nearest")


class ToyAutoencoderFamily:
    name = "toy-ae"
    dataset = "toyset"
    samplers = ("uniform",)
    train_options: dict = {}
    capabilities: tuple = ()

    def load(self, checkpoint, *, device):
        return ToyAutoencoder()

    def train(self, data, **kwargs):  # pragma: no cover - not trainable
        raise NotImplementedError


class FactorSet:
    name = "factorset"
    splits = ("train",)
    default_split = "train"
    default_extractor = "counting"

    def load(self, split):
        g = torch.Generator().manual_seed(3)
        factors = torch.randint(0, 4, (20, 2), generator=g)
        return ImageSet(images=torch.rand((20, 1, 6, 6), generator=g), factors=factors)


class TypedPlugins:
    __name__ = "typed_plugins"

    @hookimpl
    def geneval_register_metrics(self, register):
        for metric in (
            LatentClassMeans(),
            LatentNorm(),
            FactorSum(),
            PairedMSE(),
            PairedMaxError(),
        ):
            register(metric)

    @hookimpl
    def geneval_register_models(self, register):
        register(ToyAutoencoderFamily())

    @hookimpl
    def geneval_register_datasets(self, register):
        register(FactorSet())


@pytest.fixture
def plugins(add_plugin) -> None:
    add_plugin(FakePlugins())
    add_plugin(TypedPlugins())
    ToyAutoencoder.encode_calls = []


@pytest.fixture
def produced(monkeypatch) -> list[tuple[str, str]]:
    """Every produce() call of the run, as (kind, source)."""
    calls: list[tuple[str, str]] = []
    for producer in PRODUCERS.values():
        original = producer.produce

        def counting(key, run, original=original):
            calls.append((key.kind, key.source))
            return original(key, run)

        monkeypatch.setattr(producer, "produce", counting)
    return calls


def _report(run_cli, tmp_path: Path, *args: str) -> dict:
    out = tmp_path / f"r{len(list(tmp_path.glob('r*.json')))}.json"
    res = run_cli("run", *args, "--json", out, "--quiet")
    assert res.code == 0, res.err
    return json.loads(out.read_text())


def test_latents_labels_factors_from_an_array_file(plugins, produced, run_cli, tmp_path):
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((30, 4)).astype(np.float32)
    labels = np.repeat(np.arange(3), 10)
    factors = rng.integers(0, 5, (30, 2))
    path = tmp_path / "z.npz"
    np.savez(path, latents=latents, labels=labels, factors=factors)  # no images at all
    report = _report(
        run_cli, tmp_path, "--samples", path, "--metrics", "latent-means,latent-norm,factor-sum"
    )
    metrics = report["metrics"]
    expected = sum(latents[labels == c, 0].astype(np.float64).mean() for c in range(3))
    assert metrics["latent-means"]["value"] == pytest.approx(expected, rel=1e-12)
    assert metrics["latent-means"]["n"] == 30 and metrics["latent-means"]["dim"] == 4
    assert metrics["latent-norm"]["value"] == pytest.approx(
        np.linalg.norm(latents.astype(np.float64)), rel=1e-9
    )
    assert metrics["factor-sum"]["value"] == factors.sum()
    assert sorted(produced) == [
        ("factors", "samples"),
        ("labels", "samples"),
        ("latents", "samples"),
    ]


def test_factors_from_a_dataset(plugins, run_cli, tmp_path):
    report = _report(run_cli, tmp_path, "--samples", "factorset", "--metrics", "factor-sum")
    assert report["metrics"]["factor-sum"]["value"] == float(
        FactorSet().load("train").factors.sum()
    )


def test_reconstructions_paired_by_index_from_arrays(plugins, produced, run_cli, tmp_path):
    rng = np.random.default_rng(1)
    originals = rng.integers(0, 256, (12, 6, 6, 3), dtype=np.uint8)
    noisy = np.clip(originals.astype(int) + rng.integers(-9, 10, originals.shape), 0, 255).astype(
        np.uint8
    )
    np.save(tmp_path / "orig.npy", originals)
    np.save(tmp_path / "rec.npy", noisy)
    report = _report(
        run_cli, tmp_path, "--samples", tmp_path / "rec.npy", "--reference", tmp_path / "orig.npy",
        "--metrics", "paired-mse,paired-max",
    )  # fmt: skip
    diff = (noisy.astype(np.float64) - originals) / 255
    assert report["metrics"]["paired-mse"]["value"] == pytest.approx((diff**2).mean(), rel=1e-6)
    assert report["metrics"]["paired-max"]["value"] == pytest.approx(np.abs(diff).max(), rel=1e-6)
    assert produced.count(("reconstructions", "samples")) == 1  # once for both metrics


def _folder(root: Path, names: list[str], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(root / name)
    return root


def test_reconstructions_paired_by_sorted_relative_path(plugins, run_cli, tmp_path):
    names = ["a/1.png", "a/2.png", "b.png"]
    rec = _folder(tmp_path / "rec", names, 1)
    orig = _folder(tmp_path / "orig", names, 2)
    report = _report(
        run_cli, tmp_path, "--samples", rec, "--reference", orig, "--metrics", "paired-mse"
    )
    expected = np.mean(
        [
            ((np.asarray(Image.open(rec / n), np.float64) - np.asarray(Image.open(orig / n))) / 255)
            ** 2
            for n in sorted(names)
        ]
    )
    assert report["metrics"]["paired-mse"]["value"] == pytest.approx(expected, rel=1e-6)
    other = _folder(tmp_path / "other", ["a/1.png", "a/3.png", "b.png"], 3)
    res = run_cli("run", "--samples", rec, "--reference", other, "--metrics", "paired-mse")
    assert res.code == 2 and "'a/2.png' has no counterpart" in res.err_lines[0]
    fewer = _folder(tmp_path / "fewer", ["a/1.png", "a/2.png"], 4)
    res = run_cli("run", "--samples", rec, "--reference", fewer, "--metrics", "paired-mse")
    assert res.code == 2 and "counts differ" in res.err_lines[0]


def test_a_model_encodes_and_reconstructs_the_reference(plugins, produced, run_cli, tmp_path):
    report = _report(
        run_cli, tmp_path, "--model", "toy-ae", "--reference", "toyset:test",
        "--metrics", "latent-means,latent-norm,paired-mse,paired-max", "--batch-size", "16",
    )  # fmt: skip
    data = ToySet().load("test")
    latents = F.avg_pool2d(data.images, 2).flatten(1).double()
    expected = sum(float(latents[data.labels == c, 0].mean()) for c in torch.unique(data.labels))
    assert report["metrics"]["latent-means"]["value"] == pytest.approx(expected, rel=1e-6)
    assert report["metrics"]["latent-means"]["n"] == 40
    rec = F.interpolate(F.avg_pool2d(data.images, 2), scale_factor=2, mode="nearest")
    mse = float(((rec.double() - data.images.double()) ** 2).mean())
    assert report["metrics"]["paired-mse"]["value"] == pytest.approx(mse, rel=1e-6)
    # latents once (3 batches of 16) and reconstructions once (3 more): each producer ran once
    assert ToyAutoencoder.encode_calls == [16, 16, 8, 16, 16, 8]
    assert produced.count(("latents", "samples")) == 1
    assert produced.count(("reconstructions", "samples")) == 1
    assert report["inputs"]["samples"]["count"] == 0  # no metric looked at samples: none drawn


def test_missing_typed_inputs_are_named(plugins, run_cli, tmp_path):
    path = tmp_path / "z.npz"
    np.savez(path, latents=np.zeros((5, 2), np.float32))
    res = run_cli("run", "--samples", path, "--metrics", "latent-means")
    assert res.code == 2 and "carry no labels" in res.err_lines[0]
    np.savez(path, latents=np.zeros((5, 2), np.float32), labels=np.zeros(4, int))
    res = run_cli("run", "--samples", path, "--metrics", "latent-means")
    assert res.code == 2 and "disagree on the number of rows" in res.err_lines[0]
    np.savez(path, latents=np.zeros((5, 2), np.float32), factors=np.full((5, 2), 0.5))
    res = run_cli("run", "--samples", path, "--metrics", "factor-sum")
    assert res.code == 2 and "factors must be integers" in res.err_lines[0]


class SecondExtractor:
    """A second counting extractor (features: per-channel means, 3-d)."""

    name = "second"
    outputs = {"mean": 3}
    feature_output = "mean"
    logits_output = None
    resize_options = ()

    def __init__(self) -> None:
        self.calls: list[int] = []

    def load(self, *, device, weights=None, resize=None):
        calls = self.calls

        class Loaded:
            name = "second"
            outputs = {"mean": 3}
            convention = "channel-mean"
            weights_sha256 = "1" * 64

            def __call__(self, images):
                calls.append(int(images.shape[0]))
                rgb = images if images.shape[1] == 3 else images.repeat(1, 3, 1, 1)
                return {"mean": rgb.mean(dim=(2, 3))}

        return Loaded()


class SecondFeatureMean:
    """Mean of the samples' features from the extractor it prefers (``second``)."""

    name = "second-mean"
    higher_is_better = False
    interpretation = "test metric"
    needs = (Need("features", "samples", extractor="second"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        return {"value": float(inputs.features("samples").double().mean())}


class SecondPlugins:
    __name__ = "second_plugins"

    def __init__(self) -> None:
        self.extractor = SecondExtractor()

    @hookimpl
    def geneval_register_extractors(self, register):
        register(self.extractor)

    @hookimpl
    def geneval_register_metrics(self, register):
        register(SecondFeatureMean())


def test_two_extractors_each_run_once_per_batch(add_plugin, run_cli, tmp_path):
    first = FakePlugins()
    second = SecondPlugins()
    add_plugin(first)
    add_plugin(second)
    samples = tmp_path / "s.npy"
    images = np.random.default_rng(0).integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    np.save(samples, images)
    # feat-mean has no preference: the run's default is the samples' --extractor-less rule,
    # here forced by naming the reference dataset's extractor; second-mean prefers `second`.
    report = _report(
        run_cli, tmp_path, "--samples", samples, "--reference", "toyset",
        "--metrics", "feat-mean,feat-dist,second-mean", "--batch-size", "16",
    )  # fmt: skip
    extractors = report["config"]["extractors"]
    assert extractors["feat-mean"]["name"] == extractors["feat-dist"]["name"] == "counting"
    assert extractors["second-mean"]["name"] == "counting"  # the dataset's extractor wins
    assert first.extractor.calls == [16, 14, 16, 16, 8]  # samples, then the reference (40)
    assert second.extractor.calls == []


def test_a_metric_preference_names_its_extractor_when_nothing_else_does(
    add_plugin, run_cli, tmp_path
):
    first = FakePlugins()
    second = SecondPlugins()
    add_plugin(first)
    add_plugin(second)
    samples = tmp_path / "s.npy"
    images = np.random.default_rng(0).integers(0, 256, (30, 6, 6, 3), dtype=np.uint8)
    np.save(samples, images)
    reference = tmp_path / "r.npy"
    np.save(reference, images[:20])
    report = _report(
        run_cli, tmp_path, "--samples", samples, "--reference", reference,
        "--metrics", "feat-mean,second-mean", "--batch-size", "16", "--extractor", "counting",
    )  # fmt: skip
    assert report["config"]["extractors"]["second-mean"]["name"] == "counting"  # explicit wins
    report = _report(
        run_cli, tmp_path, "--samples", samples, "--reference", reference,
        "--metrics", "second-mean", "--batch-size", "16",
    )  # fmt: skip
    assert report["config"]["extractors"]["second-mean"]["name"] == "second"
    assert second.extractor.calls == [16, 14]  # once per batch over the samples
    expected = images.astype(np.float64).mean() / 255
    assert report["metrics"]["second-mean"]["value"] == pytest.approx(expected, rel=1e-6)
