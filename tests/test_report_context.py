"""Numbers with their context: units, the feature space of published numbers, what a
likelihood run scored, summarised details that keep the terminal table within 120 columns,
and ``compare`` recognising a statistics file by the source its provenance names."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import geneval
from geneval.api import Metric, Need
from geneval.plugin import hookimpl
from geneval.plugins import get_registry
from geneval.report.compare import compare_reports, reference_identity, to_text
from geneval.report.explain import metric_info
from geneval.report.formats import (
    TABLE_WIDTH,
    details,
    feature_space_notes,
    summarize,
    to_json,
    to_markdown,
    to_table,
)
from tests.fake_plugins import CountingExtractor, CountingLoaded

DIGITS_FID_NOTE = (
    "digits-cnn fid: comparable only with other digits-cnn fid values, not with published fid "
    "numbers (computed on inception-v3-fid features)"
)


def _table_block(text: str) -> list[str]:
    """The setup lines and the metrics table of a terminal report (up to the blank line that
    follows the table)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("metric "))
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return lines[:end]


def _row_text(block: list[str], metric: str) -> str:
    """A metric's row with its continuation lines joined by single spaces."""
    start = next(i for i, line in enumerate(block) if line.startswith(f"{metric} "))
    parts = [block[start]]
    for line in block[start + 1 :]:
        if not line.startswith(" "):
            break
        parts.append(line.strip())
    return " ".join(parts)


# -- summarised details ------------------------------------------------------------------------


def test_summarize_lists_strings_and_mappings():
    values = [i / 10 for i in range(200)]
    assert summarize(values) == "200 values, 0.0000…19.9000"
    assert summarize([[1, 2, 3]] * 20) == "20×3 values, 1…3"
    assert summarize([1.0, float("nan"), 3.0, 4.0, 5.0]) == "5 values, 1.0000…5.0000, 1 NaN"
    assert summarize([1.0, 2.5]) == "[1.0000, 2.5000]"  # short lists stay whole
    names = [f"img_{i:03d}.png" for i in range(200)]
    assert summarize(names) == "[img_000.png, … (200 in all)]"
    scores = [{"bandwidth": 0.1 * i, "log_likelihood": -float(i)} for i in range(10)]
    assert summarize(scores) == "10 entries of bandwidth, log_likelihood"
    long = "x" * 100
    assert summarize(long) == "x" * 39 + "…" and len(summarize(long)) == 40
    assert summarize({"a": 1, "b": 0.5}) == "{a=1, b=0.5000}"
    many = {f"factor_{i}": float(i) for i in range(8)}
    shown = summarize(many)
    assert shown.startswith("8 entries: factor_0, factor_1") and len(shown) <= 40
    assert summarize("") == '""' and summarize([]) == "[]" and summarize(None) == "—"


def test_details_skip_a_unit_field_that_repeats_the_declared_unit():
    report = {"metric_info": {"psnr": {"unit": "dB", "uncertainty": "std"}}}
    result = {"value": 30.0, "std": 1.0, "n": 200, "unit": "dB", "names": ["a.png"] * 200}
    assert details(report, "psnr", result) == "n=200, names=[a.png, … (200 in all)]"
    other = {"metric_info": {"psnr": {"unit": "dB", "uncertainty": "std"}}}
    assert "unit=bits" in details(other, "psnr", {**result, "unit": "bits"})


def test_psnr_ssim_on_two_folders_of_200_images_fit_120_columns(run_cli, tmp_path):
    """The acceptance run: psnr and ssim of two folders of 200 PNGs. Every setup and table
    line fits 120 columns; the names and per-image values are summarised in the table and
    kept whole in the JSON."""
    from PIL import Image

    rng = np.random.default_rng(0)
    originals = rng.integers(0, 256, (200, 16, 16, 3), dtype=np.uint8)
    noise = rng.integers(-20, 21, originals.shape)
    recon = np.clip(originals.astype(int) + noise, 0, 255).astype(np.uint8)
    for folder, images in (("samples", recon), ("reference", originals)):
        (tmp_path / folder).mkdir()
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / folder / f"image_{i:04d}.png")
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", tmp_path / "samples", "--reference", tmp_path / "reference",
        "--metrics", "psnr,ssim", "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    block = _table_block(res.out)
    assert all(len(line) <= TABLE_WIDTH for line in block), max(block, key=len)
    report = json.loads(out.read_text())
    psnr = report["metrics"]["psnr"]
    assert len(psnr["names"]) == 200 and len(psnr["per_image"]) == 200  # the JSON keeps all
    # independent reference: PSNR of each pair in float64, mean over the pairs
    mse = ((recon.astype(np.float64) - originals) / 255.0) ** 2
    expected = np.mean(10 * np.log10(1.0 / mse.reshape(200, -1).mean(axis=1)))
    assert psnr["value"] == pytest.approx(expected, rel=1e-9)
    header = block[block.index(next(line for line in block if line.startswith("metric ")))]
    assert header.split() == ["metric", "value", "unit", "uncertainty", "better", "details"]
    row = _row_text(block, "psnr")
    assert row.split()[1:3] == [f"{psnr['value']:.4f}", "dB"]
    assert "names=[image_0000.png, … (200 in all)]" in row
    assert "unit=dB" not in row  # the unit column says it
    ssim = _row_text(block, "ssim")
    assert ssim.split()[1] == f"{report['metrics']['ssim']['value']:.4f}"
    assert "names=[image_0000.png, … (200 in all)]" in ssim
    markdown = to_markdown(report)
    assert "image_0199.png" not in markdown and "(200 in all)" in markdown


# -- units --------------------------------------------------------------------------------------


def _likelihood_report() -> dict:
    registry = get_registry()
    info = metric_info({name: registry.metric(name) for name in ("is_ll", "nll", "fid")})
    return {
        "geneval_version": "0",
        "config": {"samples": "a/", "reference": "b/", "device": "cpu", "seed": 0},
        "inputs": {"samples": {"count": 10}, "reference": {"count": 10}},
        "metrics": {
            "is_ll": {"value": -95.25, "std_err": 1.5, "n": 10},
            "nll": {"value": 1.125, "std_err": 0.25, "n": 10, "unit": "bits/dim"},
            "fid": {"value": 3.5},
        },
        "metric_info": info,
        "errors": {},
    }


def test_metrics_declare_units_and_every_report_shows_them():
    report = _likelihood_report()
    info = report["metric_info"]
    assert info["is_ll"]["unit"] == "nats/image" and info["nll"]["unit"] == "bits/dim"
    assert info["fid"]["unit"] is None
    assert info["fid"]["feature_space"] == "inception-v3-fid"
    assert info["nll"]["reads"] == ["reference", "model"]
    block = _table_block(to_table(report))
    header = next(line for line in block if line.startswith("metric "))
    assert header.split()[:4] == ["metric", "value", "unit", "uncertainty"]
    assert _row_text(block, "is_ll").split()[1:3] == ["-95.2500", "nats/image"]
    assert _row_text(block, "nll").split()[1:3] == ["1.1250", "bits/dim"]
    assert "unit=" not in _row_text(block, "nll")
    fid = _row_text(block, "fid")
    assert fid.split()[1:3] == ["3.5000", "lower"]  # no unit: the cell is empty
    markdown = to_markdown(report).splitlines()
    assert "| metric | value | unit | uncertainty | better | meaning | details |" in markdown
    assert any(
        line.startswith("| nll | 1.1250 | bits/dim | ± 0.2500 (std_err) |") for line in markdown
    )
    from geneval.report.html import to_html

    page = to_html(report)
    assert "<th>unit</th>" in page and "<td>nats/image</td>" in page


def test_reports_without_units_keep_their_columns():
    report = _likelihood_report()
    for entry in report["metric_info"].values():
        entry.pop("unit")
    header = next(line for line in to_table(report).splitlines() if line.startswith("metric"))
    assert header.split() == ["metric", "value", "uncertainty", "better", "details"]


# -- likelihood runs ---------------------------------------------------------------------------


def test_likelihood_run_says_what_was_scored(run_cli, tmp_path):
    out = tmp_path / "ll.json"
    res = run_cli(
        "run", "--model", "rbm", "--reference", "digits:test", "--metrics", "ll",
        "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    assert report["inputs"]["samples"]["count"] == 0  # nothing was drawn
    lines = res.out.splitlines()
    assert not any(line.startswith("samples:") for line in lines)
    assert "reference: digits:test (270 images) scored under model:rbm" in lines
    assert "model: rbm (checkpoint: bundled)" in lines
    ll = next(line for line in lines if line.startswith("ll "))
    value = report["metrics"]["ll"]["value"]
    assert ll.split()[1:3] == [f"{value:.4f}", "nats/image"]
    # an independent reference: the bundled RBM's exact log p of the same images
    from geneval_plugins.datasets.digits import DigitsDataset

    model = get_registry().model("rbm").load(None, device=torch.device("cpu"))
    images = DigitsDataset().load("test").images
    assert value == pytest.approx(float(model.log_prob(images).double().mean()), rel=1e-9)


def test_setup_line_names_the_metrics_that_scored_the_reference():
    report = _likelihood_report()
    report["config"].update(model="rbm", samples="model:rbm", sampler="gibbs")
    report["metric_info"]["kde"] = {"reads": ["samples", "reference"]}
    report["metrics"]["kde"] = {"value": 1.0}
    lines = to_table(report).splitlines()
    assert "samples: model:rbm (10 images)" in lines
    assert "reference: b/ (10 images) scored under model:rbm by is_ll, nll" in lines


# -- feature spaces ------------------------------------------------------------------------------


def test_digits_cnn_fid_says_it_is_not_an_inception_fid(run_cli, tmp_path):
    out = tmp_path / "r.json"
    res = run_cli(
        "run", "--samples", "digits:val", "--reference", "digits:train", "--metrics", "fid",
        "--json", out, "--markdown", tmp_path / "r.md", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    explained = next(i for i, line in enumerate(lines) if line.startswith("fid (lower is better)"))
    assert lines[explained + 1] == DIGITS_FID_NOTE  # with what the number means
    report = json.loads(out.read_text())
    assert report["config"]["extractors"]["fid"]["feature_space"] == "digits-cnn"
    assert report["metric_info"]["fid"]["feature_space"] == "inception-v3-fid"
    assert f"- {DIGITS_FID_NOTE}" in (tmp_path / "r.md").read_text().splitlines()
    from geneval.report.html import to_html

    assert f"<li>{DIGITS_FID_NOTE}</li>" in to_html(report)
    # the same report as if its features were Inception's: nothing to say
    report["config"]["extractors"]["fid"].update(name="inception-v3-fid", feature_space=None)
    assert feature_space_notes(report) == []


class _PortLoaded(CountingLoaded):
    name = "port"


class _Port(CountingExtractor):
    """The counting extractor's features under another name, declaring its space."""

    name = "port"
    feature_space = "counting"

    def load(self, *, device, weights=None, resize=None):
        return _PortLoaded(self.calls)


class _SpacedMean(Metric):
    name = "spaced-mean"
    higher_is_better = False
    interpretation = "Mean of the sample features."
    needs = (Need("features", "samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None
    unit = "feature units"
    feature_space = "counting"

    def compute(self, inputs):
        return {"value": float(inputs.features("samples").double().mean())}


class _SlotsMean:
    """A third-party metric written before units: slots, every older optional attribute
    declared, no ``unit`` or ``feature_space``."""

    __slots__ = ()
    name = "slots-mean"
    higher_is_better = False
    interpretation = "Mean of the sample features."
    needs = (Need("features", "samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None
    min_samples = None
    allows_infinite_value = False

    def needs_for(self, options):
        return self.needs

    def compute(self, inputs):
        return {"value": float(inputs.features("samples").double().mean())}


class _Plugins:
    __name__ = "context_plugins"

    @hookimpl
    def geneval_register_extractors(self, register):
        register(CountingExtractor())
        register(_Port())

    @hookimpl
    def geneval_register_metrics(self, register):
        register(_SpacedMean())
        register(_SlotsMean())


def test_feature_space_is_the_extractors_declaration_not_its_name(add_plugin, tmp_path):
    add_plugin(_Plugins())
    images = torch.rand((6, 3, 4, 4), generator=torch.Generator().manual_seed(0))
    expected = float(torch.nn.functional.adaptive_avg_pool2d(images, 2).double().mean())
    for extractor, noted in (("port", False), ("counting", False)):
        report = geneval.evaluate(images, None, ["spaced-mean", "slots-mean"], extractor=extractor)
        assert report["metrics"]["spaced-mean"]["value"] == pytest.approx(expected, rel=1e-6)
        assert report["config"]["extractors"]["spaced-mean"]["feature_space"] == "counting"
        assert bool(feature_space_notes(report)) is noted
    # a third-party metric without the new declarations registers, runs and has no unit
    assert report["metric_info"]["slots-mean"]["unit"] is None
    assert report["metric_info"]["slots-mean"]["feature_space"] is None
    assert report["metric_info"]["spaced-mean"]["unit"] == "feature units"
    report["config"]["extractors"]["spaced-mean"].update(name="foreign", feature_space="foreign")
    assert feature_space_notes(report) == [
        "foreign spaced-mean: comparable only with other foreign spaced-mean values, not with "
        "published spaced-mean numbers (computed on counting features)"
    ]


def test_several_metrics_in_one_foreign_space_share_one_note():
    registry = get_registry()
    report = {
        "config": {
            "extractors": {
                m: {"name": "digits-cnn", "feature_space": "digits-cnn"}
                for m in ("fid", "kid", "is")
            }
        },
        "metrics": {"fid": {"value": 1.0}, "kid": {"value": 0.1}, "is": {"value": 5.0}},
        "metric_info": metric_info({m: registry.metric(m) for m in ("fid", "kid", "is")}),
    }
    assert feature_space_notes(report) == [
        "digits-cnn fid, kid and is: comparable only with other digits-cnn fid, kid and is "
        "values, not with published ones (computed on inception-v3-fid features)"
    ]
    features = {"name": None, "features_from": {"samples": "the features array of a.npz"}}
    report["config"]["extractors"] = {"fid": features}
    report["metrics"] = {"fid": {"value": 1.0}}
    assert feature_space_notes(report) == [
        "fid on the features array of a.npz: comparable only with fid values on the same "
        "features, not with published fid numbers (computed on inception-v3-fid features)"
    ]


# -- compare --------------------------------------------------------------------------------------


def test_compare_knows_a_statistics_file_by_its_provenance(run_cli, tmp_path):
    stats = tmp_path / "train-stats.npz"
    geneval.stats("digits:train", stats)
    runs = {"stats.json": str(stats), "dataset.json": "digits:train", "test.json": "digits:test"}
    for name, reference in runs.items():
        report = geneval.evaluate("digits:val", reference, ["fid"])
        (tmp_path / name).write_text(to_json(report))
    by_file = json.loads((tmp_path / "stats.json").read_text())
    by_name = json.loads((tmp_path / "dataset.json").read_text())
    assert by_file["inputs"]["reference"]["statistics_of"] == "digits:train"
    assert reference_identity(by_file) == reference_identity(by_name) == "digits:train"
    a, b = by_file["metrics"]["fid"]["value"], by_name["metrics"]["fid"]["value"]
    assert a == pytest.approx(b, rel=1e-6)
    same = run_cli("compare", tmp_path / "stats.json", tmp_path / "dataset.json")
    assert same.code == 0, same.err
    assert "references differ" not in same.out
    other = run_cli("compare", tmp_path / "stats.json", tmp_path / "test.json")
    assert (
        f"note: references differ: {stats} (statistics of digits:train) in stats.json, "
        "digits:test in test.json (the numbers measure different things)"
    ) in other.out.splitlines()


def test_compare_notes_units_that_differ():
    def report(unit: str) -> dict:
        return {
            "geneval_version": "0",
            "metrics": {"m": {"value": 1.0}},
            "metric_info": {"m": {"higher_is_better": True, "uncertainty": None, "unit": unit}},
        }

    notes = compare_reports([report("nats/image"), report("bits/dim")], ["a", "b"]).notes
    assert notes == [
        "m: units differ (nats/image in a, bits/dim in b): the values are not comparable"
    ]
    same = compare_reports([report("dB"), report("dB")], ["a", "b"])
    assert same.notes == []
    lines = to_text(same).splitlines()
    assert lines[0].split() == ["metric", "better", "unit", "a", "b", "Δ", "b", "verdict"]
    assert lines[2].split() == ["m", "higher", "dB", "1.0000", "1.0000", "0.0000", "same"]


def test_compare_imports_no_heavy_library(tmp_path):
    """``geneval compare`` with the bundled plugins loaded (a report without ``metric_info``
    sends it to the registry for directions) imports neither torch nor numpy."""
    full = {
        "geneval_version": "0",
        "config": {"reference": "digits:train"},
        "inputs": {"samples": {"count": 10}},
        "metrics": {"fid": {"value": 3.0}, "kid": {"value": 0.01, "std": 0.002}},
        "metric_info": {"fid": {"higher_is_better": False, "uncertainty": None, "unit": None}},
    }
    bare = {key: value for key, value in full.items() if key != "metric_info"}
    (tmp_path / "a.json").write_text(json.dumps(full))
    (tmp_path / "b.json").write_text(json.dumps(bare))
    code = f"""
import contextlib, io, json, sys
from geneval.cli import main
out = io.StringIO()
with contextlib.redirect_stdout(out):
    try:
        main(["compare", {str(tmp_path / "a.json")!r}, {str(tmp_path / "b.json")!r}])
    except SystemExit as exc:
        code = exc.code
heavy = sorted(m for m in ("torch", "numpy", "scipy", "sklearn", "PIL") if m in sys.modules)
print(json.dumps({{"code": code, "heavy": heavy, "out": out.getvalue()}}))
"""
    env = {**__import__("os").environ, "GENEVAL_LOAD_PLUGINS": ""}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["code"] == 0, done.stderr
    assert "kid     lower" in found["out"]  # the direction came from the registry
    assert found["heavy"] == [], f"imported by compare: {found['heavy']}"


def test_plugins_listing_shows_units_and_feature_spaces(run_cli):
    listed = json.loads(run_cli("plugins", "--json", "--verbose").out)["plugins"]
    detail = {(r["kind"], r["name"]): r["detail"] for r in listed}
    assert detail["metric", "nll"]["unit"] == "bits/dim"
    assert detail["metric", "kde"]["unit"] == "nats/image"
    assert detail["metric", "fid"]["unit"] is None
    assert detail["metric", "precision"]["feature_space"] == "vgg16"
    assert detail["extractor", "digits-cnn"]["feature_space"] == "digits-cnn"
    text = run_cli("plugins", "--verbose").out.splitlines()
    nll = text.index(next(line for line in text if line.split()[:2] == ["metric", "nll"]))
    assert "    unit: bits/dim" in text[nll : nll + 4]
    fid = text.index(next(line for line in text if line.split()[:2] == ["metric", "fid"]))
    assert "    published numbers use inception-v3-fid features" in text[fid : fid + 4]
