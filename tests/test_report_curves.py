"""Curves in reports: a metric field holding a curve is kept whole in the JSON, summarised
in the text reports, drawn as an inline SVG in the HTML report (its points read back from
the SVG), and drawn for every run on one plot by ``geneval compare``; metrics that declare
``report_panel = "neighbours"`` are shown within the nearest-neighbour panel."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
import torch

import geneval
from geneval.api import EXPLANATORY_ATTRIBUTES, Metric, Need
from geneval.plugin import hookimpl
from geneval.report.compare import compare_reports, load_report
from geneval.report.compare import to_html as compare_html
from geneval.report.compare import to_text as compare_text
from geneval.report.curves import MAX_POINTS, describe, is_curve, svg_plot
from geneval.report.explain import metric_info
from geneval.report.formats import to_json, to_markdown, to_table
from geneval.report.gates import evaluate_gates, parse_gate
from geneval.report.html import panel_metrics, to_html
from geneval.runner import Evaluation, RunConfig
from tests.html_checks import check_self_contained


def _curve(n: int, *, power: float, ranges: bool = True) -> dict:
    recall = np.linspace(0, 1, n)
    curve = {
        "x": recall.tolist(),
        "y": (1 - recall**power).tolist(),
        "x_label": "recall",
        "y_label": "precision",
    }
    if ranges:
        curve.update(x_range=[0.0, 1.0], y_range=[0.0, 1.0])
    return curve


def _svgs(page: str) -> list[ET.Element]:
    """Every ``<svg>`` of a page, parsed as XML (the plots are well-formed markup)."""
    return [ET.fromstring(m) for m in re.findall(r"<svg .*?</svg>", page, flags=re.S)]


def _points(svg: ET.Element) -> dict[str, list[tuple[float, float]]]:
    """The data points of each series of a plot, mapped back from pixels through the plot
    area and the axis ranges the SVG declares."""
    area = next(e for e in svg.iter("rect") if e.get("class") == "plot-area")
    left, top = float(area.get("x")), float(area.get("y"))
    width, height = float(area.get("width")), float(area.get("height"))
    x0, x1 = map(float, svg.get("data-x-range").split())
    y0, y1 = map(float, svg.get("data-y-range").split())
    out: dict[str, list[tuple[float, float]]] = {}
    for line in svg.iter("polyline"):
        for pair in line.get("points").split():
            px, py = map(float, pair.split(","))
            x = x0 + (px - left) / width * (x1 - x0)
            y = y0 + (1 - (py - top) / height) * (y1 - y0)
            out.setdefault(line.get("data-series"), []).append((x, y))
    return out


def _report(curve: dict, value: float = 0.5) -> dict:
    return {
        "geneval_version": geneval.__version__,
        "config": {"samples": "s.npz", "reference": "r.npz", "seed": 0, "device": "cpu"},
        "inputs": {"samples": {"count": 10}, "reference": {"count": 10}},
        "metrics": {"prd": {"value": value, "f_beta": value, "curve": curve}},
        "metric_info": {
            "prd": {"higher_is_better": True, "interpretation": "PRD", "uncertainty": None}
        },
        "gates": [],
        "passed": True,
    }


def _close(got: list[tuple[float, float]], curve: dict) -> None:
    """Points read back equal the curve's to the SVG's pixel rounding (3 decimals)."""
    expected = np.column_stack([curve["x"], curve["y"]])
    assert np.asarray(got).shape == expected.shape
    np.testing.assert_allclose(np.asarray(got), expected, atol=2e-5)


@pytest.mark.parametrize("ranges", [True, False])
def test_svg_holds_the_curve_points(ranges):
    curve = _curve(57, power=2.5, ranges=ranges)
    svg = _svgs(svg_plot([("prd", curve)], title="prd.curve"))
    assert len(svg) == 1
    _close(_points(svg[0])["prd"], curve)
    declared = svg[0].get("data-x-range"), svg[0].get("data-y-range")
    assert declared == ("0.0 1.0", "0.0 1.0")  # the ranges, or the data span [0, 1]
    labels = [t.text for t in svg[0].iter("text")]
    assert "recall" in labels and "precision" in labels


def test_data_span_axes_and_breaks():
    """Without declared ranges the axes span the data; a null point breaks the line."""
    curve = {"x": [2.0, 3.0, 4.0, 5.0], "y": [10.0, None, 30.0, 50.0]}
    assert is_curve(curve)
    svg = _svgs(svg_plot([("m", curve)]))[0]
    assert svg.get("data-x-range") == "2.0 5.0" and svg.get("data-y-range") == "10.0 50.0"
    lines = list(svg.iter("polyline"))
    assert [len(line.get("points").split()) for line in lines] == [1, 2]
    got = _points(svg)["m"]
    np.testing.assert_allclose(got, [(2, 10), (4, 30), (5, 50)], atol=1e-3)


def test_long_curves_are_thinned_with_their_ends():
    curve = _curve(5 * MAX_POINTS + 3, power=1.0)
    got = _points(_svgs(svg_plot([("c", curve)]))[0])["c"]
    assert len(got) == MAX_POINTS
    np.testing.assert_allclose([got[0], got[-1]], [(0, 1), (1, 0)], atol=2e-5)


@pytest.mark.parametrize(
    "value",
    [
        {"x": [0, 1], "y": [1]},  # lengths differ
        {"x": [0], "y": [1]},  # one point
        {"x": [0, "a"], "y": [1, 2]},
        {"x": [0, 1], "y": [None, None]},  # no finite point
        {"x": [True, False], "y": [1, 2]},
        [0, 1],
        {"y": [0, 1]},
    ],
)
def test_what_is_not_a_curve(value):
    assert not is_curve(value)


def test_html_report_draws_the_curve_and_stays_self_contained():
    curve = _curve(101, power=3.0)
    page = to_html(_report(curve))
    _, text = check_self_contained(page)
    assert "Curves" in text and "prd.curve: 101 points, precision vs recall." in text
    (svg,) = _svgs(page)
    _close(_points(svg)["prd"], curve)


def test_curve_labels_are_escaped():
    curve = _curve(5, power=1.0) | {"x_label": "<b>r</b>", "y_label": "p\x1b[31m"}
    page = to_html(_report(curve))
    assert "<b>r</b>" not in page and "&lt;b&gt;r&lt;/b&gt;" in page
    assert "\x1b" not in page


def test_text_reports_json_and_gates_accept_a_curve_field():
    curve = _curve(1001, power=2.0)
    report = _report(curve)
    assert json.loads(to_json(report))["metrics"]["prd"]["curve"] == curve
    assert "curve=1001 points, precision vs recall" in to_table(report)
    assert "curve=1001 points, precision vs recall" in to_markdown(report)
    assert describe({"x": [0, 1], "y": [0, 1]}) == "2 points"
    verdicts = evaluate_gates([parse_gate("prd.curve>0"), parse_gate("prd<0.4")], report["metrics"])
    assert verdicts[0]["failed"] and verdicts[0]["reason"] == (
        "prd.curve is not a number (a gate reads a number)"
    )
    assert verdicts[1] == {"expr": "prd<0.4", "source": "--fail-if", "failed": False, "value": 0.5}


def test_compare_draws_both_runs_curves(tmp_path: Path):
    a, b = _curve(201, power=2.0), _curve(151, power=0.5)
    paths = []
    for name, curve, value in (("a.json", a, 0.6), ("b.json", b, 0.4)):
        path = tmp_path / name
        path.write_text(to_json(_report(curve, value)))
        paths.append(path)
    reports = [load_report(p) for p in paths]
    comparison = compare_reports(reports, ["a.json", "b.json"])
    assert [(m, f, [n for n, _ in s]) for m, f, s in comparison.curves] == [
        ("prd", "curve", ["a.json", "b.json"])
    ]
    page = compare_html(comparison)
    _, text = check_self_contained(page)
    (svg,) = _svgs(page)
    points = _points(svg)
    _close(points["a.json"], a)
    _close(points["b.json"], b)
    colours = {line.get("data-series"): line.get("stroke") for line in svg.iter("polyline")}
    assert colours["a.json"] != colours["b.json"]
    legend = [t.text for t in svg.iter("text") if t.get("class") == "legend"]
    assert legend == ["a.json", "b.json"]
    assert "REGRESSION" in text  # 0.6 → 0.4, higher is better, beyond rtol 5 %
    assert "prd.curve of a.json, b.json." in text
    # the text form is unchanged by curves
    assert "regressions: prd in b.json" in compare_text(comparison)


def test_compare_draws_a_curve_only_one_run_has():
    with_curve, without = _report(_curve(11, power=1.0)), _report(_curve(11, power=1.0))
    del without["metrics"]["prd"]["curve"]
    comparison = compare_reports([without, with_curve], ["old", "new"])
    assert [[n for n, _ in s] for _, _, s in comparison.curves] == [["new"]]
    assert set(_points(_svgs(compare_html(comparison))[0])) == {"new"}


# -- the nearest-neighbour panel ---------------------------------------------------------------


class _Copies(Metric):
    """Share of samples within 0.1 % of the mean reference norm of a reference feature
    vector (a memorisation score), declared to be shown with the neighbour panel."""

    name = "copies-test"
    higher_is_better = False
    interpretation = "share of samples that sit on a reference feature vector"
    needs = (Need("features", "samples"), Need("features", "reference"))
    options: dict = {}
    fields: dict = {}
    uncertainty = None
    report_panel = "neighbours"

    def compute(self, inputs):
        x = inputs.features("samples").double()
        y = inputs.features("reference").double()
        nearest = torch.cdist(x, y).min(dim=1).values
        scale = float(y.norm(dim=1).mean())  # float32 features of 8-bit images: not exact
        return {"value": float((nearest < 1e-3 * scale).double().mean())}


class _Plugins:
    __name__ = "curves_plugins"

    @hookimpl
    def geneval_register_metrics(self, register):
        register(_Copies())


def test_report_panel_is_an_explanatory_attribute():
    assert "report_panel" in EXPLANATORY_ATTRIBUTES["metric"]
    info = metric_info(
        {"copies-test": _Copies(), "fid": geneval.plugins.get_registry().metric("fid")}
    )
    assert info["copies-test"]["report_panel"] == "neighbours"
    assert info["fid"]["report_panel"] is None


def test_panel_metrics_shown_within_the_neighbour_panel(add_plugin, tmp_path):
    """A run with neighbours: the panel metric's score sits in the neighbour section, above
    the rows of samples and their nearest reference images; other metrics stay out of it."""
    add_plugin(_Plugins())
    from geneval_plugins.datasets.digits import DigitsDataset

    samples = DigitsDataset().load("train").images[:40]  # every sample is a reference image
    evaluation = Evaluation(
        RunConfig(
            metrics=["copies-test", "fid"], samples=samples.numpy(), reference="digits:train",
            grid=4, neighbours=3, device="cpu", seed=0,
        )
    )  # fmt: skip
    report = evaluation.execute()
    assert report["metrics"]["copies-test"]["value"] == 1.0
    assert report["metric_info"]["copies-test"]["report_panel"] == "neighbours"
    assert panel_metrics(report) == ["copies-test"]
    page = to_html(report, evaluation.visuals)
    check_self_contained(page)
    section = page.split("<h2>Nearest reference images</h2>", 1)[1].split("<h2>", 1)[0]
    scores, rows = section.split("For each of the first 3 samples", 1)
    assert "Memorisation and novelty scores" in scores
    assert '<b>copies-test</b></td><td class="num">1.0000</td>' in scores
    assert "<b>fid</b>" not in section and rows.count("near copy") == 3


def test_panel_scores_without_neighbour_images():
    """A run without a neighbour panel (no visuals) still shows the panel's scores in the
    section, and a failed panel metric as ERROR with its message."""
    report = _report(_curve(3, power=1.0))
    report["metrics"]["copies-test"] = {"value": 0.25}
    report["errors"] = {"other-test": "boom"}
    for name in ("copies-test", "other-test"):
        report["metric_info"][name] = {"higher_is_better": False, "report_panel": "neighbours"}
    page = to_html(report, None)
    section = page.split("<h2>Nearest reference images</h2>", 1)[1].split("<h2>", 1)[0]
    assert "0.2500" in section and "ERROR" in section and "boom" in section
    assert panel_metrics(report) == ["copies-test", "other-test"]
    del report["metric_info"]["copies-test"], report["metric_info"]["other-test"]
    assert "Nearest reference images" not in to_html(report, None)


def test_compare_command_writes_the_curves_page(tmp_path: Path, run_cli):
    a, b = _curve(21, power=2.0), _curve(31, power=0.5)
    for name, curve in (("a.json", a), ("b.json", b)):
        (tmp_path / name).write_text(to_json(_report(curve)))
    page = tmp_path / "compare.html"
    args = ["compare", tmp_path / "a.json", tmp_path / "b.json", "--html", page]
    result = run_cli(*args)
    assert result.code == 0, result.err
    points = _points(_svgs(page.read_text())[0])
    _close(points["a.json"], a)
    _close(points["b.json"], b)
    # an existing page is replaced only with --force, with one line naming it
    again = run_cli(*args)
    assert again.code == 2 and len(again.err_lines) == 1 and "compare.html" in again.err
    assert run_cli(*args, "--force").code == 0
