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
import textwrap
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any

from geneval.report.curves import describe as describe_curve
from geneval.report.curves import is_curve
from geneval.text import markdown_code, markdown_text, printable, visible

_DETAIL_SKIP = {"value", "warnings", "per_image"}

#: The width the terminal table's lines are kept within: a long details cell continues on
#: further lines, indented to its column.
TABLE_WIDTH = 120
#: The narrowest details cell the table keeps, however wide its other columns are.
MIN_DETAILS_WIDTH = 24
#: Longest string a details cell shows of one field (longer ones are clipped with "…").
MAX_TEXT = 40
#: Lists of at most this many items are shown whole (when short); longer ones summarised.
MAX_LISTED = 4
ELLIPSIS = "…"


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


def unit(report: Mapping[str, Any], name: str) -> str:
    """The unit of metric ``name``'s value and uncertainty (``"nats/image"``), or ``""``."""
    declared = info(report, name).get("unit")
    return str(declared) if declared else ""


def clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` characters, the last one ``…`` when cut."""
    return text if len(text) <= limit else text[: max(0, limit - 1)] + ELLIPSIS


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _flat_numbers(value: Any) -> tuple[list[float], list[int]] | None:
    """The numbers of a (nested) list of numbers and its shape, or ``None`` when it holds
    anything else or is ragged."""
    if _is_number(value):
        return [value], []
    if not isinstance(value, list | tuple) or not value:
        return None
    parts = [_flat_numbers(item) for item in value]
    if any(part is None for part in parts):
        return None
    shapes = {tuple(part[1]) for part in parts if part is not None}
    if len(shapes) != 1:
        return None
    numbers = [x for part in parts if part is not None for x in part[0]]
    return numbers, [len(value), *next(iter(shapes))]


def summarize(value: Any, limit: int = MAX_TEXT) -> str:
    """One field's value as a short cell: numbers by :func:`fmt`; strings clipped to
    ``limit``; a short list whole, a longer list of numbers as ``"200 values, min…max"``
    (``"20×3 values, …"`` for a matrix; NaN left out of the range and counted), of strings
    as ``"[first, … (200 in all)]"``, of objects as ``"10 entries of key, key"``; a curve
    (:mod:`geneval.report.curves`) as ``"1001 points, precision vs recall"``; a mapping as
    ``{key=value, …}`` or, when long, ``"5 entries: key, key, …"``. The JSON report keeps
    every value whole."""
    if value is None or _is_number(value) or isinstance(value, bool):
        return fmt(value)
    if isinstance(value, str):
        return clip(value, limit) if value else '""'
    if is_curve(value):
        return clip(describe_curve(value), limit)
    if isinstance(value, Mapping):
        if not value:
            return "{}"
        whole = "{" + ", ".join(f"{k}={summarize(v, limit)}" for k, v in value.items()) + "}"
        if len(whole) <= limit:
            return whole
        return clip(f"{len(value)} entries: " + ", ".join(str(k) for k in value), limit)
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        whole = "[" + ", ".join(summarize(v, limit) for v in value) + "]"
        if len(value) <= MAX_LISTED and len(whole) <= limit:
            return whole
        numbers = _flat_numbers(value)
        if numbers is not None:
            found, shape = numbers
            size = "×".join(str(n) for n in shape)
            finite = [x for x in found if not math.isnan(x)]
            missing = len(found) - len(finite)
            text = f"{size} values"
            if finite:
                text += f", {fmt(min(finite))}{ELLIPSIS}{fmt(max(finite))}"
            return text + (f", {missing} NaN" if missing else "")
        if all(isinstance(v, Mapping) for v in value):
            keys = list(dict.fromkeys(str(k) for v in value for k in v))
            return clip(f"{len(value)} entries of " + ", ".join(keys), limit)
        first = summarize(value[0], max(8, limit // 2))
        return f"[{first}, {ELLIPSIS} ({len(value)} in all)]"
    return clip(str(value), limit)


def details(report: Mapping[str, Any], name: str, result: Mapping[str, Any]) -> str:
    """The metric's further fields and options, ``key=value`` separated by commas, each value
    summarised (:func:`summarize`: a list of 200 values is ``200 values, min…max``). A
    ``unit`` field that repeats the metric's declared unit is left out (the unit column
    shows it)."""
    skip = _DETAIL_SKIP | {info(report, name).get("uncertainty")}
    if unit(report, name) and result.get("unit") == unit(report, name):
        skip.add("unit")
    return ", ".join(f"{k}={summarize(v)}" for k, v in result.items() if k not in skip)


def has_units(report: Mapping[str, Any]) -> bool:
    """Whether any metric of the report declares a unit (the reports then show a unit
    column)."""
    return any(unit(report, name) for name in [*report["metrics"], *report.get("errors", {})])


def _rows(report: Mapping[str, Any]) -> list[tuple[str, str, str, str, str, str]]:
    """``(metric, value, unit, uncertainty, better, details)`` of each metric, then of each
    metric that failed (value ``ERROR``, its message as details)."""
    rows = []
    for name, result in report["metrics"].items():
        rows.append(
            (
                name,
                fmt(result["value"]),
                unit(report, name),
                uncertainty(report, name, result),
                better(report, name),
                details(report, name, result),
            )
        )
    for name, message in report.get("errors", {}).items():
        rows.append((name, "ERROR", unit(report, name), "", better(report, name), message))
    return rows


#: The columns of the metrics table; ``unit`` is shown only where some metric declares one.
METRIC_COLUMNS = ("metric", "value", "unit", "uncertainty", "better", "details")


def metric_rows(report: Mapping[str, Any]) -> tuple[tuple[str, ...], list[tuple[str, ...]]]:
    """The metrics table as its header and rows (:data:`METRIC_COLUMNS`, the unit column only
    where some metric declares a unit), as the terminal table, the Markdown and the HTML
    show it."""
    keep = [i for i, title in enumerate(METRIC_COLUMNS) if title != "unit" or has_units(report)]
    rows = [tuple(row[i] for i in keep) for row in _rows(report)]
    return tuple(METRIC_COLUMNS[i] for i in keep), rows


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


def scored_under_model(report: Mapping[str, Any]) -> list[str]:
    """The metrics (computed or failed) that score the reference images under the model
    itself (a likelihood, an ELBO): those whose ``metric_info`` says they read the model and
    the reference."""
    names = [*report["metrics"], *report.get("errors", {})]
    return [n for n in names if {"model", "reference"} <= set(info(report, n).get("reads") or ())]


def _reference_line(report: Mapping[str, Any], samples_drawn: bool) -> str:
    """``reference: digits:test (270 images)``, saying what a statistics file was computed
    from and, in a likelihood run, under which model the images were scored."""
    cfg = report["config"]
    entry = report.get("inputs", {}).get("reference", {})
    held = _count(entry.get("count"))
    made_from = entry.get("statistics_of")
    if made_from:
        held = f"statistics of {made_from}, {held}"
    line = f"reference: {cfg['reference']} ({held})"
    if cfg.get("model"):
        scored = scored_under_model(report)
        known = any("reads" in info(report, n) for n in report["metrics"])
        if scored or (not samples_drawn and not known):
            line += f" scored under {cfg['samples']}"
            if samples_drawn and scored:
                line += f" by {', '.join(scored)}"
    return line


def setup_lines(report: Mapping[str, Any]) -> list[str]:
    """The run's setup, one line each: the samples (left out when a model run drew none, its
    metrics scoring the reference under the model), the model, the reference, the extractor,
    features read from files, the device and seed."""
    cfg = report["config"]
    samples_count = report["inputs"].get("samples", {}).get("count")
    samples_drawn = not (cfg.get("model") and samples_count == 0)
    lines = []
    if samples_drawn:
        lines.append(f"samples: {cfg['samples']} ({_count(samples_count)})")
    if cfg.get("model"):
        sampler = cfg.get("sampler")
        steps = cfg.get("steps")
        extra = f", sampler {sampler}" if sampler and samples_drawn else ""
        extra += f", {steps} steps" if steps and samples_drawn else ""
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
        lines.append(_reference_line(report, samples_drawn))
    if cfg.get("extractor"):
        lines.append(f"extractor: {cfg['extractor']} (resize: {cfg.get('resize')})")
    from_files = {
        what
        for entry in (cfg.get("extractors") or {}).values()
        for what in ((entry or {}).get("features_from") or {}).values()
    }
    for what in sorted(from_files):
        lines.append(f"features: {what}")
    lines.append(f"device: {cfg['device']}, seed: {cfg['seed']}")
    return lines


def _aligned(rows: list[tuple[str, ...]], right: set[int], width: int | None = None) -> list[str]:
    """Rows as aligned text columns under a rule. With ``width``, a last cell too long for
    its row to fit ``width`` characters continues on further lines, indented to its column
    (at least :data:`MIN_DETAILS_WIDTH` characters of it on each line): nothing is cut."""
    rows = [tuple(visible(cell) for cell in row) for row in rows]  # one line per row
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    offset = sum(widths[:-1]) + 2 * (len(widths) - 1)
    budget = None if width is None else max(MIN_DETAILS_WIDTH, width - offset)
    if budget is not None:
        widths[-1] = min(widths[-1], budget)
    lines = []
    for j, row in enumerate(rows):
        last = [row[-1]]
        if budget is not None and len(row[-1]) > budget:
            last = textwrap.wrap(row[-1], budget, break_on_hyphens=False) or [""]
        cells = [
            f"{cell:>{widths[i]}}" if i in right else f"{cell:<{widths[i]}}"
            for i, cell in enumerate((*row[:-1], last[0]))
        ]
        lines.append("  ".join(cells).rstrip())
        lines += [" " * offset + piece for piece in last[1:]]
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    return lines


def to_table(report: Mapping[str, Any]) -> str:
    """A plain-text table for the terminal: the metrics with their unit, uncertainty and
    direction (details summarised, and continued on further lines so that every line fits
    :data:`TABLE_WIDTH` columns; the JSON keeps every value whole), what each means and, where
    a metric's features are not those of its published numbers, with which numbers it is
    comparable (:func:`feature_space_notes`), the baseline, notes and gates (with their
    source)."""
    header, rows = metric_rows(report)
    lines = setup_lines(report) + [""]
    lines += _aligned([header, *rows], right={1}, width=TABLE_WIDTH)
    explained = explanations(report) + feature_space_notes(report)
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


def feature_space_notes(report: Mapping[str, Any]) -> list[str]:
    """One line per feature space in which metrics were computed that publish their numbers
    in another (``metric_info.feature_space`` against the space of the extractor the report
    records, ``config.extractors``): ``"digits-cnn fid: comparable only with other digits-cnn
    fid values, not with published fid numbers (computed on inception-v3-fid features)"``.
    Features a source carried in its own file are named by that file."""
    extractors = (report.get("config") or {}).get("extractors") or {}
    groups: dict[tuple[str, str, bool], list[str]] = {}
    for name in report["metrics"]:
        canonical = info(report, name).get("feature_space")
        entry = extractors.get(name) or {}
        if not canonical or not entry:
            continue
        space = entry.get("feature_space") or entry.get("name")
        if space == canonical:
            continue
        if space:
            groups.setdefault((str(space), str(canonical), True), []).append(name)
        elif entry.get("features_from"):
            files = "; ".join(sorted(set(entry["features_from"].values())))
            groups.setdefault((files, str(canonical), False), []).append(name)
    notes = []
    for (space, canonical, named), names in groups.items():
        which = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"
        published = f"published {which} numbers" if len(names) == 1 else "published ones"
        if named:
            subject = f"{space} {which}"
            others = f"other {space} {which} values"
        else:
            subject = f"{which} on {space}"
            others = f"{which} values on the same features"
        notes.append(
            f"{subject}: comparable only with {others}, not with {published} (computed on "
            f"{canonical} features)"
        )
    return notes


def report_notes(report: Mapping[str, Any]) -> list[str]:
    """The run's warnings, then each metric's own, prefixed with its name, then the
    baseline's."""
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
    header, rows = metric_rows(report)
    header = (*header[:-1], "meaning", header[-1])
    lines += [
        "",
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---:" if title == "value" else "---" for title in header) + "|",
    ]
    for row in rows:
        meaning = info(report, row[0]).get("interpretation") or ""
        lines.append(_md_row((*row[:-1], meaning, row[-1])))
    spaces = feature_space_notes(report)
    if spaces:
        lines += [""] + [f"- {markdown_text(line, line_start=True)}" for line in spaces]
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
