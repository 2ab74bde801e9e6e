"""The HTML report (``--html PATH``): one self-contained file a person can open anywhere.

Everything is inside the file: styles inline, images as ``data:`` URIs (one PNG per grid,
:mod:`geneval.report.grids`), no script, no font, no link to anything outside. A
Content-Security-Policy of ``default-src 'none'`` (inline styles and ``data:`` images
allowed) makes the browser refuse any other load should one slip in. Every string of the
report is HTML-escaped, its control characters and undecodable bytes shown as escapes.

The page holds the verdict, the metrics (value, uncertainty, which way is better, what the
number means, warnings), the gates with their source, a grid of the first samples and one of
the first reference images, the curves metrics report (:mod:`geneval.report.curves`, drawn
as inline SVG), the nearest-neighbour panel (the memorisation check) with the scores of the
metrics that declare ``report_panel = "neighbours"`` (memorisation and novelty scores), the
real-vs-real baseline when the run computed one, and the configuration, provenance, inputs,
versions and timings.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from geneval.report.curves import describe as describe_curve
from geneval.report.curves import report_curves, svg_plot
from geneval.report.formats import (
    baseline_caption,
    baseline_rows,
    feature_space_notes,
    fmt,
    info,
    metric_rows,
    report_notes,
    setup_lines,
    uncertainty,
)
from geneval.report.grids import data_uri, image_grid, png_bytes
from geneval.report.visuals import NEAR_COPY, Visuals
from geneval.text import printable, visible

CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222;
       padding: 0 1em; line-height: 1.4; }
h1 { margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
.verdict { display: inline-block; padding: 0.2em 0.8em; border-radius: 0.3em; font-weight: bold; }
.passed { background: #d9f2d9; color: #135f13; }
.failed { background: #f8d7d7; color: #8a1111; }
.grids { display: flex; flex-wrap: wrap; gap: 2em; }
figure { margin: 0; }
figcaption { font-size: 0.9em; color: #555; max-width: 40em; }
img { image-rendering: pixelated; }
.copy { background: #fff3cd; }
.curves { display: flex; flex-wrap: wrap; gap: 2em; }
.small { font-size: 0.9em; color: #555; }
code { font-size: 0.95em; }
"""


def _e(value: Any) -> str:
    """``value`` as HTML text: one :func:`geneval.text.visible` line (control characters,
    which HTML forbids, and undecodable bytes shown as escapes), HTML-escaped."""
    return html.escape(visible(value), quote=True)


def _img(images: Sequence[torch.Tensor], alt: str, columns: int | None = None) -> str:
    uri = data_uri(png_bytes(image_grid(images, columns)))
    return f'<img src="{uri}" alt="{_e(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], numeric: set[int]) -> str:
    """An HTML table of already escaped cells."""
    out = ["<table>", "<tr>" + "".join(f"<th>{_e(h)}</th>" for h in header) + "</tr>"]
    for row in rows:
        cells = "".join(
            f'<td class="num">{cell}</td>' if i in numeric else f"<td>{cell}</td>"
            for i, cell in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    out.append("</table>")
    return "\n".join(out)


def _metrics(report: Mapping[str, Any]) -> str:
    header, rows = metric_rows(report)
    cells = []
    for row in rows:
        name = row[0]
        meaning = info(report, name).get("interpretation") or ""
        middle = [_e(cell) for cell in row[1:-1]]  # value, unit, uncertainty, better
        cells.append([f"<b>{_e(name)}</b>", *middle, _e(meaning), _e(row[-1])])
    titles = [*header[:-1], "what it means", header[-1]]
    numeric = {1} | ({titles.index("uncertainty")} if "uncertainty" in titles else set())
    parts = ["<h2>Metrics</h2>", _table(titles, cells, numeric=numeric)]
    spaces = feature_space_notes(report)
    if spaces:
        parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in spaces) + "</ul>")
    notes = report_notes(report)
    if notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>")
    return "\n".join(parts)


def _baseline(report: Mapping[str, Any]) -> str:
    caption = baseline_caption(report)
    if not caption:
        return ""
    parts = ["<h2>Real-vs-real baseline</h2>", f"<p>{_e(caption)}</p>"]
    rows = [[f"<b>{_e(a)}</b>", _e(b), _e(c)] for a, b, c in baseline_rows(report)]
    if rows:
        parts.append(_table(("metric", "samples", "held-out"), rows, numeric={1, 2}))
    return "\n".join(parts)


def _gates(report: Mapping[str, Any]) -> str:
    gates = report.get("gates", [])
    if not gates:
        return "<h2>Gates</h2><p>No gates were set.</p>"
    rows = []
    for gate in gates:
        verdict = "FAILED" if gate["failed"] else "passed"
        css = "failed" if gate["failed"] else "passed"
        if gate.get("reason"):
            verdict += f" ({gate['reason']})"
        rows.append(
            [
                f"<code>{_e(gate['expr'])}</code>",
                _e(gate.get("source", "")),
                _e(fmt(gate.get("value"))),
                f'<span class="verdict {css}">{_e(verdict)}</span>',
            ]
        )
    return "<h2>Gates</h2>\n" + _table(("gate", "source", "value", "verdict"), rows, {2})


def _grids(visuals: Visuals | None) -> str:
    if visuals is None:
        return ""
    figures = []
    for role, label in (("samples", "samples"), ("reference", "reference images")):
        images = getattr(visuals, role)
        total = getattr(visuals, f"{role}_total")
        if images:
            of = f" of {total}" if total is not None else ""
            caption = f"The first {len(images)}{of} {label}."
            figures.append(
                f"<figure>{_img(images, f'grid of {label}')}"
                f"<figcaption>{_e(caption)}</figcaption></figure>"
            )
        elif role in visuals.notes:
            figures.append(f"<p>{_e(visuals.notes[role])}.</p>")
    if not figures:
        return ""
    return '<h2>Samples and reference</h2>\n<div class="grids">' + "".join(figures) + "</div>"


def _curves(report: Mapping[str, Any]) -> str:
    """One figure per curve a metric reported (:func:`geneval.report.curves.report_curves`)."""
    found = report_curves(report)
    if not found:
        return ""
    figures = []
    for name, key, curve in found:
        caption = f"{name}.{key}: {describe_curve(curve)}."
        plot = svg_plot([(name, curve)], title=f"{name}.{key}")
        figures.append(f"<figure>{plot}<figcaption>{_e(caption)}</figcaption></figure>")
    return '<h2>Curves</h2>\n<div class="curves">' + "".join(figures) + "</div>"


#: The ``report_panel`` a metric declares to be shown with the nearest-neighbour panel.
NEIGHBOURS_PANEL = "neighbours"


def panel_metrics(report: Mapping[str, Any], panel: str = NEIGHBOURS_PANEL) -> list[str]:
    """The metrics of the report (computed or failed) whose ``metric_info.report_panel`` is
    ``panel``, in the report's order."""
    names = [*report.get("metrics", {}), *report.get("errors", {})]
    return [name for name in names if info(report, name).get("report_panel") == panel]


def _panel_scores(report: Mapping[str, Any]) -> str:
    """The scores of the metrics shown with the neighbour panel (memorisation and novelty),
    as a table: value, uncertainty, direction and meaning."""
    names = panel_metrics(report)
    if not names:
        return ""
    rows = []
    for name in names:
        result = report.get("metrics", {}).get(name)
        if result is None:
            value, spread = "ERROR", report.get("errors", {}).get(name, "")
        else:
            value, spread = fmt(result.get("value")), uncertainty(report, name, result)
        higher = info(report, name).get("higher_is_better")
        better = "?" if higher is None else ("higher" if higher else "lower")
        meaning = info(report, name).get("interpretation") or ""
        rows.append([f"<b>{_e(name)}</b>", _e(value), _e(spread), _e(better), _e(meaning)])
    table = _table(("metric", "value", "uncertainty", "better", "what it means"), rows, {1, 2})
    return (
        '<div class="panel-scores"><h3>Memorisation and novelty scores</h3>\n'
        "<p>Scores of how far the samples copy the reference, beside the nearest "
        "reference images they summarise.</p>\n" + table + "</div>"
    )


def _neighbours(visuals: Visuals | None, report: Mapping[str, Any] | None = None) -> str:
    scores = _panel_scores(report or {})
    if visuals is None or not visuals.neighbours:
        note = visuals.notes.get("neighbours") if visuals is not None else None
        if not note and not scores:
            return ""
        text = f"<p>{_e(note)}.</p>" if note else ""
        return f"<h2>Nearest reference images</h2>\n{scores}{text}"
    typical = visuals.typical_distance
    intro = (
        f"For each of the first {len(visuals.neighbours)} samples, the closest reference "
        f"images in the run's feature space ({visuals.space}), nearest first, with their "
        "Euclidean distance. A sample that is a copy of a reference image sits at distance "
        "about 0."
    )
    if typical is not None:
        intro += (
            f" For scale: a reference image is typically {fmt(typical)} from its nearest other "
            f"reference image (median); rows closer than {NEAR_COPY:g} of that are marked."
        )
    rows = []
    for row in visuals.neighbours:
        near = typical is not None and row.distances[0] < NEAR_COPY * typical
        cells = [
            f"{_img([row.sample], f'sample {row.sample_index}')}"
            f"<div class='small'>sample {row.sample_index}"
            + ("<br><b>near copy</b>" if near else "")
            + "</div>"
        ]
        for index, distance, image in zip(row.indices, row.distances, row.images, strict=True):
            cells.append(
                f"{_img([image], f'reference image {index}')}"
                f"<div class='small'>#{index}<br>d = {_e(fmt(distance))}</div>"
            )
        css = ' class="copy"' if near else ""
        rows.append(f"<tr{css}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    k = len(visuals.neighbours[0].indices)
    header = "<tr><th>sample</th>" + "".join(f"<th>{i + 1}.</th>" for i in range(k)) + "</tr>"
    return (
        f"<h2>Nearest reference images</h2>\n{scores}<p>{_e(intro)}</p>\n"
        f"<table>{header}{''.join(rows)}</table>"
    )


def _extractor_cell(entry: Mapping[str, Any]) -> str:
    """The extractor a metric ran with, or, where a source's own features array served it
    (``features_from``), those files; both when each side came from its own place."""
    parts = [str(entry["name"])] if entry.get("name") else []
    parts += [f"{role}: {what}" for role, what in (entry.get("features_from") or {}).items()]
    return "; ".join(parts) or "none"


def _config(report: Mapping[str, Any]) -> str:
    config = report.get("config", {})
    rows = [
        [_e(key), _e(value)]
        for key, value in config.items()
        if key != "extractors" and not isinstance(value, Mapping)
    ]
    parts = ["<h2>Configuration and provenance</h2>"]
    parts.append("<ul>" + "".join(f"<li>{_e(line)}</li>" for line in setup_lines(report)) + "</ul>")
    parts.append(_table(("setting", "value"), rows, numeric=set()))
    extractors = config.get("extractors") or {}
    if extractors:
        rows = [
            [
                _e(metric),
                _e(_extractor_cell(entry)),
                _e(entry.get("resize")),
                f"<code>{_e(entry.get('weights_sha256'))}</code>",
            ]
            for metric, entry in extractors.items()
        ]
        header = ("metric", "extractor", "resize", "weights sha256")
        parts.append(_table(header, rows, numeric=set()))
    inputs = report.get("inputs", {})
    if inputs:
        rows = [
            [_e(role), _e(entry.get("description")), _e(fmt(entry.get("count")))]
            for role, entry in inputs.items()
        ]
        parts.append(_table(("input", "source", "images"), rows, numeric={2}))
    versions = report.get("versions") or {"geneval": report.get("geneval_version")}
    rows = [[_e(name), _e(version)] for name, version in versions.items()]
    parts.append(_table(("software", "version"), rows, numeric=set()))
    timings = report.get("timings", {})
    if timings:
        rows = [[_e(step), _e(f"{seconds:.2f} s")] for step, seconds in timings.items()]
        parts.append("<h2>Timings</h2>\n" + _table(("step", "time"), rows, numeric={1}))
    return "\n".join(parts)


def to_html(report: Mapping[str, Any], visuals: Visuals | None = None) -> str:
    """The report as one self-contained HTML page (see the module docstring)."""
    config = report.get("config", {})
    title = f"geneval report: {config.get('samples')}"
    if config.get("reference"):
        title += f" vs {config['reference']}"
    passed = report.get("passed", not report.get("errors"))
    verdict = (
        '<span class="verdict passed">PASSED</span>'
        if passed
        else '<span class="verdict failed">FAILED</span>'
    )
    body = [
        f"<h1>{_e(title)}</h1>",
        f"<p>{verdict}</p>",
        _metrics(report),
        _gates(report),
        _curves(report),
        _grids(visuals),
        _neighbours(visuals, report),
        _baseline(report),
        _config(report),
    ]
    page = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_STYLE}</style>",
        "</head>",
        "<body>",
        *[part for part in body if part],
        "</body>",
        "</html>",
        "",
    ]
    return printable("\n".join(page))
