"""Reports: JSON (docs/contracts.md §5), a terminal table, Markdown and JUnit XML (the HTML
report is :mod:`geneval.report.html`).

Every string a user chose (paths, folder names, dataset specifications) and every string a
plugin returned reaches the table, the Markdown and the JUnit XML through
:mod:`geneval.text`: control characters, line breaks and undecodable bytes are shown as
escapes (a table row stays one row, no escape sequence reaches the terminal, the XML stays
well-formed), and the Markdown escapes HTML and its own syntax.
"""

from __future__ import annotations

import json
import math
import os
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from geneval.text import markdown_code, markdown_text, printable, visible

_DETAIL_SKIP = {"value", "warnings", "per_image"}


def fmt(value: Any) -> str:
    """A number as reports show it (4 decimals, or scientific when very small or large)."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if math.isnan(value) or math.isinf(value):
        return str(value)
    if value != 0 and (abs(value) < 1e-3 or abs(value) >= 1e6):
        return f"{value:.4e}"
    return f"{value:.4f}"


def info(report: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """What the report records about metric ``name`` (direction, interpretation, uncertainty
    field); empty for a report without ``metric_info``."""
    return report.get("metric_info", {}).get(name, {})


def uncertainty(report: Mapping[str, Any], name: str, result: Mapping[str, Any]) -> str:
    """``"±0.0610 (std)"``, ``"— (std)"`` when the metric reported none, or ``""``."""
    field = info(report, name).get("uncertainty")
    if not field:
        return ""
    value = result.get(field)
    return f"± {fmt(value)} ({field})" if value is not None else f"— ({field})"


def better(report: Mapping[str, Any], name: str) -> str:
    """``"higher"``, ``"lower"`` or ``"?"``: which way the metric improves."""
    higher = info(report, name).get("higher_is_better")
    return "?" if higher is None else ("higher" if higher else "lower")


def details(report: Mapping[str, Any], name: str, result: Mapping[str, Any]) -> str:
    """The metric's further fields and options, ``key=value`` separated by commas."""
    skip = _DETAIL_SKIP | {info(report, name).get("uncertainty")}
    return ", ".join(f"{k}={fmt(v)}" for k, v in result.items() if k not in skip)


def _rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for name, result in report["metrics"].items():
        rows.append(
            (
                name,
                fmt(result["value"]),
                uncertainty(report, name, result),
                better(report, name),
                details(report, name, result),
            )
        )
    for name, message in report.get("errors", {}).items():
        rows.append((name, "ERROR", "", better(report, name), message))
    return rows


def explanations(report: Mapping[str, Any]) -> list[str]:
    """One line per metric: its name, which way is better, and what the number means."""
    from geneval.report.explain import direction

    lines = []
    for name in [*report["metrics"], *report.get("errors", {})]:
        entry = info(report, name)
        if not entry:
            continue
        text = entry.get("interpretation") or "no interpretation given"
        lines.append(f"{name} ({direction(entry.get('higher_is_better'))}): {text}")
    return lines


def gate_line(gate: Mapping[str, Any]) -> str:
    """``fid>30 (from --fail-if): passed, value 3.17`` (or FAILED, and why)."""
    verdict = "FAILED" if gate["failed"] else "passed"
    source = f" (from {gate['source']})" if gate.get("source") else ""
    tail = f" ({gate['reason']})" if gate.get("reason") else f", value {fmt(gate.get('value'))}"
    return f"{gate['expr']}{source}: {verdict}{tail}"


def baseline_rows(report: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(metric, samples, held-out)`` rows of the baseline section, values with their
    uncertainty where the metric has one."""
    rows = []
    section = report.get("baseline") or {}
    for name, pair in section.get("metrics", {}).items():
        cells = []
        for side in ("samples", "held_out"):
            result = pair[side]
            spread = uncertainty(report, name, result)
            cells.append(fmt(result["value"]) + (f" {spread}" if spread else ""))
        rows.append((name, cells[0], cells[1]))
    return rows


def baseline_caption(report: Mapping[str, Any]) -> str | None:
    """One line introducing the baseline section (or saying why there is none)."""
    section = report.get("baseline")
    if not section:
        return None
    if "note" in section:
        return f"baseline: {section['note']}"
    return (
        f"baseline: held-out {section['held_out']} against the same reference, both it and "
        f"the samples at n={section['n']}"
    )


def baseline_notes(report: Mapping[str, Any]) -> list[str]:
    section = report.get("baseline") or {}
    notes = [f"{name}: no baseline ({why})" for name, why in section.get("skipped", {}).items()]
    notes += [f"{name}: baseline failed ({m})" for name, m in section.get("errors", {}).items()]
    return notes


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


def setup_lines(report: Mapping[str, Any]) -> list[str]:
    cfg = report["config"]
    lines = [
        f"samples: {cfg['samples']} ({_count(report['inputs'].get('samples', {}).get('count'))})"
    ]
    if cfg.get("model"):
        sampler = cfg.get("sampler")
        steps = cfg.get("steps")
        extra = f", sampler {sampler}" if sampler else ""
        extra += f", {steps} steps" if steps else ""
        checkpoint = cfg.get("checkpoint")
        held = f"checkpoint: {checkpoint}{extra}" if checkpoint else extra.lstrip(", ")
        lines.append(f"model: {cfg['model']}" + (f" ({held})" if held else ""))
        details = cfg.get("model_details") or {}
        settings = [f"{k} {v}" for k, v in details.items() if not isinstance(v, Mapping)]
        for key in ("labels", "prompts"):
            if cfg.get(key):
                settings.append(f"{key}: {cfg[key]}")
        if cfg.get("sample_options"):
            settings.append(
                "options " + ", ".join(f"{k}={v}" for k, v in cfg["sample_options"].items())
            )
        if settings:
            lines.append("  " + "; ".join(settings))
    if cfg.get("reference"):
        count = _count(report["inputs"].get("reference", {}).get("count"))
        lines.append(f"reference: {cfg['reference']} ({count})")
    if cfg.get("extractor"):
        lines.append(f"extractor: {cfg['extractor']} (resize: {cfg.get('resize')})")
    from_files = {
        what
        for entry in (cfg.get("extractors") or {}).values()
        for what in (entry.get("features_from") or {}).values()
    }
    for what in sorted(from_files):
        lines.append(f"features: {what}")
    lines.append(f"device: {cfg['device']}, seed: {cfg['seed']}")
    return lines


def _aligned(rows: list[tuple[str, ...]], right: set[int]) -> list[str]:
    rows = [tuple(visible(cell) for cell in row) for row in rows]  # one line per row
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = []
    for j, row in enumerate(rows):
        cells = [
            f"{cell:>{widths[i]}}" if i in right else f"{cell:<{widths[i]}}"
            for i, cell in enumerate(row)
        ]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def to_table(report: Mapping[str, Any]) -> str:
    """A plain-text table for the terminal: the metrics with their uncertainty and direction,
    what each means, the baseline, notes and gates (with their source)."""
    header = ("metric", "value", "uncertainty", "better", "details")
    lines = setup_lines(report) + [""]
    lines += _aligned([header, *_rows(report)], right={1})
    explained = explanations(report)
    if explained:
        lines += [""] + explained
    caption = baseline_caption(report)
    if caption:
        lines += ["", caption]
        rows = baseline_rows(report)
        if rows:
            lines += _aligned([("metric", "samples", "held-out"), *rows], right={1, 2})
    notes = report_notes(report)
    if notes:
        lines.append("")
    for note in notes:
        lines.append(f"note: {note}")
    for gate in report.get("gates", []):
        lines.append(f"gate {gate_line(gate)}")
    # A line break or an escape sequence in a path stays inside its own line, visibly.
    return "\n".join(visible(line) for line in lines) + "\n"


def report_notes(report: Mapping[str, Any]) -> list[str]:
    """The run's warnings, then each metric's own, prefixed with its name."""
    notes = list(report.get("warnings", []))
    for name, result in report["metrics"].items():
        notes += [f"{name}: {w}" for w in result.get("warnings", [])]
    return notes + baseline_notes(report)


def _file_name_bytes(name: str) -> bytes:
    """A file name's bytes: as the OS has them, or (for a surrogate no undecodable byte gives)
    as UTF-8 would carry it."""
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def _md_row(cells: tuple[Any, ...]) -> str:
    """A Markdown table row of literal text (HTML, Markdown syntax and pipes escaped)."""
    return "| " + " | ".join(markdown_text(c) for c in cells) + " |"


def to_markdown(report: Mapping[str, Any], grid_png: str | None = None) -> str:
    """A Markdown summary: the setup as a list, the metrics (value, uncertainty, direction,
    meaning), the baseline and the gates as tables, and the grid image ``grid_png`` (a path
    relative to the Markdown file) when there is one. Every string in it is literal text
    (:func:`geneval.text.markdown_text`): a folder name holding HTML or Markdown shows as
    typed and is never interpreted."""
    lines = ["# geneval report", ""]
    lines += [f"- {markdown_text(line, line_start=True)}" for line in setup_lines(report)]
    lines += [
        "",
        "| metric | value | uncertainty | better | meaning | details |",
        "|---|---:|---|---|---|---|",
    ]
    for name, value, spread, direction, extra in _rows(report):
        meaning = info(report, name).get("interpretation") or ""
        lines.append(_md_row((name, value, spread, direction, meaning, extra)))
    caption = baseline_caption(report)
    if caption:
        lines += ["", markdown_text(caption, line_start=True)]
        rows = baseline_rows(report)
        if rows:
            lines += ["", "| metric | samples | held-out |", "|---|---:|---:|"]
            lines += [_md_row(row) for row in rows]
    if report.get("gates"):
        lines += ["", "| gate | source | value | verdict |", "|---|---|---:|---|"]
        for gate in report["gates"]:
            verdict = "FAILED" if gate["failed"] else "passed"
            if gate.get("reason"):
                verdict += f" ({gate['reason']})"
            cells = (gate.get("source", ""), fmt(gate.get("value")), verdict)
            lines.append(f"| {markdown_code(gate['expr'])} {_md_row(cells)}")
    if grid_png:
        # The file name in the link, percent-encoded byte for byte (spaces, parentheses,
        # undecodable bytes and all).
        target = urllib.parse.quote(_file_name_bytes(grid_png))
        lines += ["", f"![The first samples (left) and reference images (right)]({target})"]
    notes = report_notes(report)
    if notes:
        lines += ["", "Notes:", ""]
        lines += [f"- {markdown_text(note, line_start=True)}" for note in notes]
    lines += ["", f"**{'passed' if report.get('passed') else 'FAILED'}**", ""]
    return printable("\n".join(lines))


def to_junit(report: Mapping[str, Any]) -> str:
    """JUnit XML: one testcase per gate, a ``failure`` for each failed gate; each gate's
    testcase names where it came from (a ``source`` property, and in the failure message).

    Metrics that raised are reported as ``error`` testcases; metric values are properties.
    Every name and message is :func:`geneval.text.visible` text, so characters XML 1.0
    forbids (control characters, lone surrogates of undecodable bytes) appear as escapes and
    the file stays well-formed.
    """
    x = visible
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
        ET.SubElement(props, "property", name=x(name), value=repr(result["value"]))
    for gate in gates:
        case = ET.SubElement(suite, "testcase", classname="geneval.gates", name=x(gate["expr"]))
        source = gate.get("source")
        if source:
            case_props = ET.SubElement(case, "properties")
            ET.SubElement(case_props, "property", name="source", value=x(source))
        if gate["failed"]:
            message = gate.get("reason") or f"value {gate.get('value')} meets {gate['expr']}"
            if source:
                message += f" (gate from {source})"
            failure = ET.SubElement(case, "failure", message=x(message))
            failure.text = x(message)
    for name, message in errors.items():
        case = ET.SubElement(suite, "testcase", classname="geneval.metrics", name=x(name))
        ET.SubElement(case, "error", message=x(message))
    ET.indent(suite)
    return printable(ET.tostring(suite, encoding="unicode", xml_declaration=True) + "\n")
