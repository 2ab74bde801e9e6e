"""``geneval compare``: side by side, deltas, regressions judged by direction and uncertainty."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

import geneval
from geneval.report.compare import compare_reports, judge
from geneval.report.formats import to_json
from geneval_plugins.datasets.digits import DigitsDataset


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """Reports of digits:val against digits:train (twice, identical) and of the same images
    with noise added (a deliberately regressed run)."""
    folder = tmp_path_factory.mktemp("reports")
    val = DigitsDataset().load("val").images.numpy()
    noisy = np.clip(val + np.random.default_rng(0).normal(0, 0.25, val.shape), 0, 1)
    runs = {
        "a.json": "digits:val",
        "b.json": "digits:val",
        "worse.json": noisy.astype(np.float32),
    }
    out = {}
    for name, samples in runs.items():
        report = geneval.evaluate(
            samples, "digits:train", ["fid", "kid", "is"], options={"kid": {"subsets": 10}}
        )
        (folder / name).write_text(to_json(report))
        out[name] = folder / name
    return out


def test_identical_runs_pass(run_cli, reports):
    res = run_cli("compare", reports["a.json"], reports["b.json"], "--fail-on-regression")
    assert res.code == 0, res.err
    lines = res.out.splitlines()
    assert lines[0].split() == ["metric", "better", "a.json", "b.json", "Δ", "b.json", "verdict"]
    fid = next(line for line in lines if line.startswith("fid "))
    assert fid.split()[1] == "lower" and fid.split()[-1] == "same"
    assert "no regression" in res.out


def test_regressed_run_is_flagged(run_cli, reports):
    a = json.loads(reports["a.json"].read_text())
    worse = json.loads(reports["worse.json"].read_text())
    res = run_cli("compare", reports["a.json"], reports["worse.json"], "--fail-on-regression")
    assert res.code == 1
    assert "regressions: fid in worse.json" in res.out
    fid = next(line for line in res.out.splitlines() if line.startswith("fid "))
    delta = worse["metrics"]["fid"]["value"] - a["metrics"]["fid"]["value"]
    assert delta > 0.05 * a["metrics"]["fid"]["value"]
    assert f"+{delta:.4f}" in fid and "REGRESSION" in fid and "rtol 0.05" in fid
    # without --fail-on-regression the verdict is printed, the exit code stays 0
    assert run_cli("compare", reports["a.json"], reports["worse.json"]).code == 0
    # the other way round it is an improvement
    back = run_cli("compare", reports["worse.json"], reports["a.json"], "--fail-on-regression")
    assert back.code == 0 and "no regression" in back.out


def test_three_reports_compare_with_the_first(run_cli, reports):
    res = run_cli("compare", reports["a.json"], reports["b.json"], reports["worse.json"])
    assert res.code == 0
    header = res.out.splitlines()[0].split()
    assert header.count("Δ") == 2 and "regressions: fid in worse.json" in res.out


@pytest.mark.parametrize(
    ("base", "value", "higher", "spreads", "flagged"),
    [
        (10.0, 10.6, False, (None, None), True),  # FID: 6 % worse > rtol 5 %
        (10.0, 10.4, False, (None, None), False),  # 4 % worse: within rtol
        (10.0, 9.0, False, (None, None), False),  # better
        (8.0, 7.5, True, (0.3, 0.4), False),  # IS: 0.5 worse = √(0.3² + 0.4²): not beyond
        (8.0, 7.4, True, (0.3, 0.4), True),  # 0.6 worse > 0.5
        (8.0, 8.9, True, (0.3, 0.4), False),  # better
        (0.010, 0.011, False, (None, 0.0), True),  # one std missing: rtol (10 % worse)
    ],
)
def test_judge(base, value, higher, spreads, flagged):
    change = judge(base, value, higher, spreads=spreads, spread_name="std", rtol=0.05)
    assert change.regression is flagged
    assert change.delta == pytest.approx(value - base)
    if spreads[0] is not None and spreads[1] is not None:
        assert change.threshold == pytest.approx(math.hypot(*spreads))
    else:
        assert change.threshold == pytest.approx(0.05 * abs(base))


def _report(metrics, errors=None, count=1000, info=None):
    return {
        "geneval_version": "0",
        "metrics": metrics,
        "errors": errors or {},
        "inputs": {"samples": {"count": count}},
        "metric_info": info
        or {
            "fid": {"higher_is_better": False, "uncertainty": None},
            "kid": {"higher_is_better": False, "uncertainty": "std"},
        },
    }


def test_failed_metric_and_null_std_and_sample_counts():
    a = _report({"fid": {"value": 3.0}, "kid": {"value": 0.010, "std": None}})
    b = _report(
        {"kid": {"value": 0.0104, "std": 0.001}}, errors={"fid": "RuntimeError: x"}, count=500
    )
    comparison = compare_reports([a, b], ["a", "b"])
    assert comparison.regressions == ["fid in b"]  # computed before, failed now
    kid = next(row for row in comparison.rows if row.name == "kid").changes[0]
    assert not kid.regression and kid.basis == "rtol 0.05"  # the base has no std: rtol
    assert any("sample counts differ" in note for note in comparison.notes)


def test_unknown_direction_is_not_flagged():
    a = _report({"x": {"value": 1.0}}, info={"x": {}})
    b = _report({"x": {"value": 100.0}}, info={"x": {}})
    comparison = compare_reports([a, b], ["a", "b"])
    assert comparison.regressions == []
    assert comparison.rows[0].changes[0].reason == "direction unknown"


def test_bad_input_is_one_line_exit_2(run_cli, reports, tmp_path):
    not_json = tmp_path / "x.json"
    not_json.write_text("{")
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"metrics": {"fid": 1}}))
    cases = {
        (tmp_path / "missing.json",): "does not exist",
        (not_json,): "is not JSON",
        (other,): "is not a geneval report",
        (tmp_path,): "is a directory",
    }
    for args, message in cases.items():
        res = run_cli("compare", reports["a.json"], *args)
        assert res.code == 2 and len(res.err_lines) == 1, res.err
        assert message in res.err and str(args[0]) in res.err
    res = run_cli("compare", reports["a.json"])
    assert res.code == 2 and "at least two" in res.err
    res = run_cli("compare", reports["a.json"], reports["b.json"], "--rtol", "-1")
    assert res.code == 2


def test_reports_without_metric_info_use_the_installed_plugins():
    """A report written before ``metric_info`` existed: direction and uncertainty field come
    from the installed metric plugins."""
    from geneval.plugins import get_registry

    a = _report({"kid": {"value": 0.010, "std": 0.001}, "is": {"value": 8.0, "std": 0.1}})
    b = _report({"kid": {"value": 0.013, "std": 0.001}, "is": {"value": 8.5, "std": 0.1}})
    for report in (a, b):
        del report["metric_info"]
    comparison = compare_reports([a, b], ["a", "b"], registry=get_registry())
    assert comparison.regressions == ["kid in b"]  # 0.003 worse > √2 · 0.001; IS improved
    kid = comparison.rows[0].changes[0]
    assert kid.basis == "combined std" and kid.threshold == pytest.approx(math.sqrt(2) * 0.001)
