"""Output that explains itself: direction and meaning of every metric, warnings for too few
samples, KID without a meaningless std, the held-out baseline at the same n, help and the
verbose plugin listing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import geneval
from geneval.plugin import Need, hookimpl
from geneval.plugins import get_registry
from geneval.report.explain import minimum_samples
from geneval.runner import Evaluation, RunConfig
from geneval_plugins.datasets.digits import DigitsDataset
from geneval_plugins.extractors.digits_cnn import DigitsCNNExtractor
from geneval_plugins.metrics.sample_quality.kid import kernel_inception_distance
from tests.fake_plugins import FakePlugins, ToySet

SAMPLE_COUNT_NOTE = "fewer than"
#: Fewer KID subsets keep the default suite fast (the subsets' count changes no code path).
FAST_KID = {"kid": {"subsets": 5}}


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def _count_warnings(result: dict) -> list[str]:
    return [w for w in result.get("warnings", []) if SAMPLE_COUNT_NOTE in w]


def test_report_records_direction_meaning_and_uncertainty(run_cli, tmp_path):
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", "digits:val", "--reference", "digits:train",
        "--metrics", "fid,kid,is", "--opt", "kid.subsets=5", "--json", out,
        "--markdown", tmp_path / "r.md", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    info = report["metric_info"]
    assert info["fid"]["higher_is_better"] is False and info["fid"]["uncertainty"] is None
    assert info["kid"]["uncertainty"] == "std" and info["is"]["higher_is_better"] is True
    registry = get_registry()
    for name in ("fid", "kid", "is"):
        assert info[name]["interpretation"] == registry.metric(name).interpretation
    assert set(report["versions"]) == {"geneval", "python", "torch", "numpy"}
    # the terminal table and the Markdown say which way is better and what it means
    kid_row = next(line for line in res.out.splitlines() if line.startswith("kid "))
    std = report["metrics"]["kid"]["std"]
    assert f"± {std:.4f} (std)" in kid_row and " lower " in kid_row
    assert f"is (higher is better): {info['is']['interpretation']}" in res.out
    markdown = (tmp_path / "r.md").read_text()
    assert f"| fid | {report['metrics']['fid']['value']:.4f} |  | lower | Fréchet" in markdown


def test_few_samples_warn_and_the_default_count_does_not():
    """digits-cnn declares 256 (twice its 128 dimensions), replacing FID's and KID's 2048:
    20 samples warn for both metrics; 1000 samples (the embedded default's count) do not."""
    images = DigitsDataset().load("all").images
    few = geneval.evaluate(images[:20], "digits:train", ["fid", "kid"], options=FAST_KID)
    for name in ("fid", "kid"):
        notes = _count_warnings(few["metrics"][name])
        assert notes == [
            "computed from 20 samples, fewer than 256 (the minimum of extractor digits-cnn): "
            "the estimate is unreliable and comparable only with runs at the same n"
        ]
    enough = geneval.evaluate(images[:1000], "digits:train", ["fid", "kid"], options=FAST_KID)
    assert not any(_count_warnings(enough["metrics"][name]) for name in ("fid", "kid"))


def test_minimum_is_the_extractors_then_the_datasets_then_the_metrics():
    registry = get_registry()
    fid, is_metric = registry.metric("fid"), registry.metric("is")
    inception = registry.extractor("inception-v3-fid")
    digits_cnn = registry.extractor("digits-cnn")

    class Declares:
        name = "big"
        min_samples = 5000

    assert minimum_samples(fid, inception, []) == (2048, "the minimum of metric fid")
    assert minimum_samples(fid, digits_cnn, [Declares()])[0] == 256
    assert minimum_samples(fid, inception, [Declares()]) == (5000, "the minimum of dataset big")
    assert minimum_samples(is_metric, digits_cnn, []) == (None, "")  # IS declares none


def test_kid_reports_no_std_when_subsets_cannot_vary():
    """270 against 270 images: every subset is both whole sets, the std over subsets is
    round-off; it is reported as None with a note, the value as before."""
    val, test = DigitsDataset().load("val").images, DigitsDataset().load("test").images
    report = geneval.evaluate(val, test, ["kid"], extractor="digits-cnn", device="cpu")
    kid = report["metrics"]["kid"]
    assert kid["std"] is None and kid["subset_size"] == 270
    assert any("no std: the subsets cannot vary" in w for w in kid["warnings"])
    extractor = DigitsCNNExtractor().load(device=torch.device("cpu"))
    direct = kernel_inception_distance(
        extractor(val)["features"],
        extractor(test)["features"],
        generator=torch.Generator().manual_seed(0),
    )
    assert direct.std < 1e-9 * max(1.0, abs(direct.value))  # round-off, as the issue saw
    assert kid["value"] == pytest.approx(direct.value, rel=1e-4, abs=1e-6)
    one = geneval.evaluate(
        val[:100], test, ["kid"], extractor="digits-cnn", options={"kid": {"subsets": 1}}
    )
    assert one["metrics"]["kid"]["std"] is None
    varied = geneval.evaluate(val[:100], test, ["kid"], extractor="digits-cnn", device="cpu")
    assert varied["metrics"]["kid"]["std"] > 0


def test_baseline_scores_the_held_out_split_at_the_same_n():
    """1000 samples against digits:train with --baseline: digits:test (270 images) is scored
    against the same reference, and the samples too at n = 270; each equals a separate run
    on exactly those images."""
    images = DigitsDataset().load("all").images[:1000]
    report = geneval.evaluate(images, "digits:train", ["fid", "kid", "is"], options=FAST_KID)
    assert "baseline" not in report
    with_baseline = geneval.evaluate(
        images, "digits:train", ["fid", "kid", "is"], options=FAST_KID, baseline=True
    )
    section = with_baseline["baseline"]
    assert section["held_out"] == "digits:test" and section["n"] == 270
    for name in ("fid", "kid", "is"):  # the main numbers do not change
        assert with_baseline["metrics"][name]["value"] == report["metrics"][name]["value"]
    first = geneval.evaluate(images[:270], "digits:train", ["fid", "kid", "is"], options=FAST_KID)
    held = geneval.evaluate(
        DigitsDataset().load("test").images, "digits:train", ["fid", "kid", "is"], options=FAST_KID
    )
    for name in ("fid", "kid", "is"):
        pair = section["metrics"][name]
        assert pair["samples"]["value"] == pytest.approx(first["metrics"][name]["value"], rel=1e-9)
        assert pair["held_out"]["value"] == pytest.approx(held["metrics"][name]["value"], rel=1e-9)
    assert pair["held_out"]["std"] == pytest.approx(held["metrics"]["is"]["std"], rel=1e-9)


def test_baseline_reuses_the_reference_and_explains_when_impossible(fake, run_cli, tmp_path):
    """The reference is extracted once however the baseline is computed; a reference that is
    not a dataset with a held-out split says so."""
    config = RunConfig(
        metrics=["feat-dist", "feat-mean"], model="toy-noise", num_samples=30,
        reference="toyset:train", baseline=True, device="cpu",
    )  # fmt: skip
    report = Evaluation(config).execute()
    # samples 30 + reference 40 + held-out toyset:test at n = 30: nothing twice
    assert sum(fake.extractor.calls) == 30 + 40 + 30
    section = report["baseline"]
    assert section["held_out"] == "toyset:test" and section["n"] == 30
    assert set(section["metrics"]) == {"feat-dist", "feat-mean"}
    images = torch.rand((12, 3, 6, 6), generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "ref.npy", images.numpy())
    res = run_cli(
        "run", "--samples", tmp_path / "ref.npy", "--reference", tmp_path / "ref.npy",
        "--extractor", "counting", "--metrics", "feat-dist", "--baseline", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "baseline: no held-out split to compare with" in res.out


def test_bare_geneval_prints_help(run_cli):
    res = run_cli()
    assert res.code == 0 and res.out.startswith("Usage: geneval")
    for command in ("run", "compare", "stats", "plugins", "sample", "train"):
        assert f"  {command} " in res.out


def test_plugins_verbose_lists_options_direction_samplers(run_cli):
    res = run_cli("plugins", "--verbose")
    assert res.code == 0
    text = res.out
    assert "subset_size = 1000 (int, >= 2) — features per subset" in text
    assert "lower is better: unbiased squared MMD" in text
    assert "samplers: ddim (default), ancestral, ancestral-fixedsmall" in text
    assert "capabilities: elbo, probability_flow" in text
    listed = json.loads(run_cli("plugins", "--json", "--verbose").out)["plugins"]
    kid = next(r for r in listed if r["name"] == "kid")["detail"]
    assert kid["higher_is_better"] is False and kid["uncertainty"] == "std"
    assert kid["options"]["subsets"] == {
        "default": 100,
        "type": "int",
        "bounds": ">= 1",
        "help": "number of random subset pairs averaged",
    }
    ddpm = next(r for r in listed if r["name"] == "ddpm")["detail"]
    registry = get_registry()
    assert ddpm["samplers"] == list(registry.model("ddpm").samplers)
    assert ddpm["capabilities"] == ["elbo", "probability_flow"]
    plain = json.loads(run_cli("plugins", "--json").out)["plugins"]
    assert all(set(r) == {"kind", "name", "distribution", "version"} for r in plain)


def test_feature_space_follows_the_protocol_option():
    """precision/recall publish on VGG-16 by default and on the FID Inception network's
    features under protocol=adm (the ADM tables): metric_info records the run's one."""
    from geneval.report.explain import metric_info

    precision = get_registry().metric("precision")
    metrics = {"precision": precision}
    assert metric_info(metrics)["precision"]["feature_space"] == "vgg16"
    adm = {"precision": {"k": 3, "boundary": "closed", "protocol": "adm"}}
    assert metric_info(metrics, options=adm)["precision"]["feature_space"] == "inception-v3-fid"
    default = {"precision": {"k": 3, "boundary": "closed", "protocol": "geneval"}}
    assert metric_info(metrics, options=default)["precision"]["feature_space"] == "vgg16"


class _LogitMeanDistance:
    """‖μ_samples − μ_reference‖² of the counting extractor's second output, ``logit``."""

    name = "logit-dist"
    interpretation = "Squared distance between the means of a named output."
    higher_is_better = False
    needs = (
        Need("stats", "samples", output="logit"),
        Need("stats", "reference", output="logit"),
    )
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        a = inputs.stats("samples", output="logit").mean
        b = inputs.stats("reference", output="logit").mean
        return {"value": float(((a - b) ** 2).sum())}


class _LogitPlugin:
    __name__ = "logit_dist_plugin"

    @hookimpl
    def geneval_register_metrics(self, register):
        register(_LogitMeanDistance())


def test_baseline_scores_a_named_extractor_output(fake, add_plugin):
    """A metric on a named output (as sfid on Inception's spatial features) gets its
    held-out baseline from that output, not the feature output."""
    add_plugin(_LogitPlugin())
    config = RunConfig(
        metrics=["logit-dist"], model="toy-noise", num_samples=50,
        reference="toyset:train", baseline=True, device="cpu",
    )  # fmt: skip
    report = Evaluation(config).execute()
    section = report["baseline"]
    assert section["n"] == 40  # the held-out split's size: the samples' first 40 are scored
    pair = section["metrics"]["logit-dist"]
    extractor = fake.extractor.load(device="cpu")
    toyset = ToySet()
    reference = extractor(toyset.load("train").images)["logit"].double().mean(0)
    held = extractor(toyset.load("test").images)["logit"].double().mean(0)
    assert pair["held_out"]["value"] == pytest.approx(float(((held - reference) ** 2).sum()))
    assert pair["samples"]["value"] != report["metrics"]["logit-dist"]["value"]  # 40 of 50
