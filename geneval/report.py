"""Reports: JSON (docs/contracts.md §5), a terminal table, Markdown and JUnit XML."""

from __future__ import annotations

import json
import math
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

_DETAIL_SKIP = {"value", "warnings", "per_image"}


def printable(text: str) -> str:
    """``text`` with undecodable bytes of file names (lone surrogates) shown as escapes, so
    that it can be written as UTF-8 and printed on any terminal."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.4e}"
    return f"{value:.4f}"


def _rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    for name, result in report["metrics"].items():
        details = ", ".join(f"{k}={_fmt(v)}" for k, v in result.items() if k not in _DETAIL_SKIP)
        rows.append((name, _fmt(result["value"]), details))
    for name, message in report.get("errors", {}).items():
        rows.append((name, "ERROR", message))
    return rows


def to_json(report: Mapping[str, Any]) -> str:
    """The report as indented JSON (NaN/inf written as null)."""

    def clean(obj: Any) -> Any:
        if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
            return None
        if isinstance(obj, Mapping):
            return {str(k): clean(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple):
            return [clean(v) for v in obj]
        return obj

    return json.dumps(clean(report), indent=2) + "\n"


def _count(count: Any) -> str:
    return "count unknown" if count is None else f"{count} images"


def _header(report: Mapping[str, Any]) -> list[str]:
    cfg = report["config"]
    lines = [
        f"samples: {cfg['samples']} ({_count(report['inputs'].get('samples', {}).get('count'))})"
    ]
    if cfg.get("model"):
        sampler = cfg.get("sampler")
        steps = cfg.get("steps")
        extra = f", sampler {sampler}" if sampler else ""
        extra += f", {steps} steps" if steps else ""
        lines.append(f"model: {cfg['model']} (checkpoint: {cfg.get('checkpoint')}{extra})")
    if cfg.get("reference"):
        count = _count(report["inputs"].get("reference", {}).get("count"))
        lines.append(f"reference: {cfg['reference']} ({count})")
    if cfg.get("extractor"):
        lines.append(f"extractor: {cfg['extractor']} (resize: {cfg.get('resize')})")
    lines.append(f"device: {cfg['device']}, seed: {cfg['seed']}")
    return lines


def to_table(report: Mapping[str, Any]) -> str:
    """A plain-text table for the terminal."""
    rows = [("metric", "value", "details"), *_rows(report)]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    lines = _header(report) + [""]
    for i, (a, b, c) in enumerate(rows):
        lines.append(f"{a:<{w0}}  {b:>{w1}}  {c}".rstrip())
        if i == 0:
            lines.append(f"{'-' * w0}  {'-' * w1}  {'-' * 7}")
    for note in _notes(report):
        lines.append(f"note: {note}")
    for gate in report.get("gates", []):
        verdict = "FAILED" if gate["failed"] else "passed"
        lines.append(
            f"gate {gate['expr']}: {verdict}"
            + (f" ({gate['reason']})" if gate.get("reason") else "")
        )
    return printable("\n".join(lines) + "\n")


def _notes(report: Mapping[str, Any]) -> list[str]:
    """The run's warnings, then each metric's own, prefixed with its name."""
    notes = list(report.get("warnings", []))
    for name, result in report["metrics"].items():
        notes += [f"{name}: {w}" for w in result.get("warnings", [])]
    return notes


def to_markdown(report: Mapping[str, Any]) -> str:
    """A Markdown summary: the setup as a list, the metrics and gates as tables."""
    lines = ["# geneval report", ""]
    lines += [f"- {line}" for line in _header(report)]
    lines += ["", "| metric | value | details |", "|---|---:|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in _rows(report)]
    if report.get("gates"):
        lines += ["", "| gate | verdict |", "|---|---|"]
        for gate in report["gates"]:
            lines.append(f"| `{gate['expr']}` | {'FAILED' if gate['failed'] else 'passed'} |")
    notes = _notes(report)
    if notes:
        lines += ["", "Notes:", ""] + [f"- {note}" for note in notes]
    lines += ["", f"**{'passed' if report.get('passed') else 'FAILED'}**", ""]
    return printable("\n".join(lines))


def to_junit(report: Mapping[str, Any]) -> str:
    """JUnit XML: one testcase per gate, a ``failure`` for each failed gate.

    Metrics that raised are reported as ``error`` testcases; metric values are properties.
    """
    gates = report.get("gates", [])
    errors = report.get("errors", {})
    suite = ET.Element(
        "testsuite",
        name="geneval",
        tests=str(len(gates) + len(errors)),
        failures=str(sum(1 for g in gates if g["failed"])),
        errors=str(len(errors)),
        time=str(sum(report.get("timings", {}).values())),
    )
    props = ET.SubElement(suite, "properties")
    for name, result in report["metrics"].items():
        ET.SubElement(props, "property", name=name, value=repr(result["value"]))
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname="geneval.gates", name=gate["expr"])
        if gate["failed"]:
            message = gate.get("reason") or f"value {gate.get('value')} meets {gate['expr']}"
            failure = ET.SubElement(case, "failure", message=message)
            failure.text = message
    for name, message in errors.items():
        case = ET.SubElement(suite, "testcase", classname="geneval.metrics", name=name)
        ET.SubElement(case, "error", message=message)
    ET.indent(suite)
    return printable(ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n")
