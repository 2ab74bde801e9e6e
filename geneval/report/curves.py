"""Curves in reports: a metric field that holds a curve, drawn as an inline SVG plot.

A metric result may carry a **curve** in any field (docs/contracts.md §5): a JSON object

```json
{"x": [0.0, 0.5, 1.0], "y": [1.0, 0.8, 0.1],
 "x_label": "recall", "y_label": "precision",
 "x_range": [0, 1], "y_range": [0, 1]}
```

``x`` and ``y`` are lists of numbers of the same length (at least 2; a ``null`` breaks the
line); ``x_label``, ``y_label`` (strings) and ``x_range``, ``y_range`` (two increasing finite
numbers: fixed axes) are optional, the axes otherwise spanning the data. The JSON report
keeps the curve whole, the text reports summarise it (``1001 points, precision vs recall``),
the HTML report draws it (:func:`svg_plot`) and ``geneval compare`` draws the curves of one
field of every run on one plot.

The SVG holds no script, no style sheet and no link: plain elements whose attributes give
the plot area (``<rect class="plot-area">``), the axis ranges (``data-x-range``,
``data-y-range``) and one ``<polyline class="curve">`` per run and unbroken piece, its
points in pixels. Only the standard library is imported.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

from geneval.text import visible

#: The keys a curve must hold.
CURVE_KEYS = ("x", "y")
#: Points drawn per curve at most; a longer curve is thinned to evenly spaced points (the
#: first and last kept).
MAX_POINTS = 2000
#: Size of the SVG and margins of its plot area, in pixels.
WIDTH, HEIGHT = 420, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 44
#: One colour per run (cycled).
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2")
#: Ticks per axis.
TICKS = 5


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _range(value: Any) -> tuple[float, float] | None:
    """A ``[low, high]`` pair of finite numbers with low < high, or ``None``."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    if not all(_number(v) and math.isfinite(v) for v in value):
        return None
    low, high = float(value[0]), float(value[1])
    return (low, high) if low < high else None


def is_curve(value: Any) -> bool:
    """Whether ``value`` is a curve (see the module docstring): a mapping whose ``x`` and
    ``y`` are lists of numbers or nulls of one length ≥ 2, holding at least one finite
    point."""
    if not isinstance(value, Mapping):
        return False
    x, y = value.get("x"), value.get("y")
    if not isinstance(x, list | tuple) or not isinstance(y, list | tuple):
        return False
    if len(x) != len(y) or len(x) < 2:
        return False
    if not all(v is None or _number(v) for v in (*x, *y)):
        return False
    return any(_finite_pair(a, b) for a, b in zip(x, y, strict=True))


def _finite_pair(a: Any, b: Any) -> bool:
    return a is not None and b is not None and math.isfinite(a) and math.isfinite(b)


def curve_fields(result: Mapping[str, Any]) -> list[str]:
    """The fields of one metric result that hold a curve, in the result's order."""
    return [key for key, value in result.items() if is_curve(value)]


def describe(curve: Mapping[str, Any]) -> str:
    """A curve in a few words: ``"1001 points, precision vs recall"``."""
    text = f"{len(curve['x'])} points"
    x_label, y_label = curve.get("x_label"), curve.get("y_label")
    if isinstance(x_label, str) and isinstance(y_label, str) and x_label and y_label:
        text += f", {y_label} vs {x_label}"
    return text


def _thinned(n: int) -> list[int]:
    """Indices of at most :data:`MAX_POINTS` evenly spaced points of ``n``, ends kept."""
    if n <= MAX_POINTS:
        return list(range(n))
    step = (n - 1) / (MAX_POINTS - 1)
    return sorted({round(i * step) for i in range(MAX_POINTS)})


def _axis(curves: Sequence[Mapping[str, Any]], key: str) -> tuple[float, float]:
    """The axis range of ``key`` (``x``/``y``): the first curve's declared range, else the
    finite data's span (a single value widened by ±0.5)."""
    for curve in curves:
        declared = _range(curve.get(f"{key}_range"))
        if declared is not None:
            return declared
    values = [
        float(v)
        for curve in curves
        for v in curve[key]
        if v is not None and math.isfinite(float(v))
    ]
    low, high = min(values), max(values)
    if low == high:
        return low - 0.5, high + 0.5
    return low, high


def _label(curves: Sequence[Mapping[str, Any]], key: str) -> str:
    for curve in curves:
        label = curve.get(f"{key}_label")
        if isinstance(label, str) and label:
            return label
    return key


def _e(value: Any) -> str:
    return html.escape(visible(value), quote=True)


def _tick(value: float) -> str:
    return f"{value:.3g}"


def pixel(
    value: float, axis: tuple[float, float], start: float, length: float, *, flip: bool = False
) -> float:
    """``value`` on ``axis`` (low, high) as a pixel coordinate: ``start + length · t`` with
    ``t = (value − low) / (high − low)`` (``1 − t`` with ``flip``, for the y axis)."""
    t = (value - axis[0]) / (axis[1] - axis[0])
    return start + length * ((1 - t) if flip else t)


def svg_plot(series: Sequence[tuple[str, Mapping[str, Any]]], *, title: str = "") -> str:
    """An inline SVG drawing each ``(name, curve)`` of ``series`` as a line on shared axes,
    with a legend when there are several (see the module docstring for what it holds).

    Points outside the axis ranges are drawn on the plot area's border; null or non-finite points
    break the line. ``series`` must hold at least one curve (:func:`is_curve`). The SVG
    refers to nothing (no namespace URL: HTML parses inline ``<svg>`` without one)."""
    curves = [curve for _, curve in series]
    x_axis, y_axis = _axis(curves, "x"), _axis(curves, "y")
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    out = [
        f'<svg width="{WIDTH}" height="{HEIGHT}" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{_e(title)}" '
        f'data-x-range="{x_axis[0]!r} {x_axis[1]!r}" data-y-range="{y_axis[0]!r} {y_axis[1]!r}">',
        f"<title>{_e(title)}</title>" if title else "",
        f'<rect class="plot-area" x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" '
        'fill="#fff" stroke="#999"/>',
    ]
    for i in range(TICKS):
        fx = x_axis[0] + (x_axis[1] - x_axis[0]) * i / (TICKS - 1)
        fy = y_axis[0] + (y_axis[1] - y_axis[0]) * i / (TICKS - 1)
        px = pixel(fx, x_axis, LEFT, plot_w)
        py = pixel(fy, y_axis, TOP, plot_h, flip=True)
        out.append(
            f'<line x1="{px:.2f}" y1="{TOP}" x2="{px:.2f}" y2="{TOP + plot_h}" stroke="#eee"/>'
            f'<text x="{px:.2f}" y="{TOP + plot_h + 14}" font-size="11" '
            f'text-anchor="middle">{_e(_tick(fx))}</text>'
            f'<line x1="{LEFT}" y1="{py:.2f}" x2="{LEFT + plot_w}" y2="{py:.2f}" stroke="#eee"/>'
            f'<text x="{LEFT - 4}" y="{py + 4:.2f}" font-size="11" '
            f'text-anchor="end">{_e(_tick(fy))}</text>'
        )
    out.append(
        f'<text x="{LEFT + plot_w / 2:.1f}" y="{HEIGHT - 8}" font-size="12" '
        f'text-anchor="middle">{_e(_label(curves, "x"))}</text>'
        f'<text x="14" y="{TOP + plot_h / 2:.1f}" font-size="12" text-anchor="middle" '
        f'transform="rotate(-90 14 {TOP + plot_h / 2:.1f})">{_e(_label(curves, "y"))}</text>'
    )
    for k, (name, curve) in enumerate(series):
        colour = PALETTE[k % len(PALETTE)]
        pieces: list[list[str]] = [[]]
        for i in _thinned(len(curve["x"])):
            a, b = curve["x"][i], curve["y"][i]
            if not _finite_pair(a, b):
                pieces.append([])
                continue
            px = min(max(pixel(float(a), x_axis, LEFT, plot_w), LEFT), LEFT + plot_w)
            py = min(max(pixel(float(b), y_axis, TOP, plot_h, flip=True), TOP), TOP + plot_h)
            pieces[-1].append(f"{px:.3f},{py:.3f}")
        for piece in pieces:
            if piece:
                out.append(
                    f'<polyline class="curve" data-series="{_e(name)}" fill="none" '
                    f'stroke="{colour}" stroke-width="2" stroke-opacity="0.8" '
                    f'points="{" ".join(piece)}"/>'
                )
        if len(series) > 1:
            y = TOP + plot_h - 8 - 16 * (len(series) - 1 - k)  # lower left, as PRD plots
            out.append(
                f'<line x1="{LEFT + 8}" y1="{y - 4}" x2="{LEFT + 26}" y2="{y - 4}" '
                f'stroke="{colour}" stroke-width="3"/>'
                f'<text class="legend" x="{LEFT + 30}" y="{y}" font-size="11">{_e(name)}</text>'
            )
    out.append("</svg>")
    return "".join(part for part in out if part)


def report_curves(report: Mapping[str, Any]) -> list[tuple[str, str, Mapping[str, Any]]]:
    """``(metric, field, curve)`` of every curve among a report's metric results."""
    found = []
    for name, result in (report.get("metrics") or {}).items():
        if isinstance(result, Mapping):
            found += [(name, key, result[key]) for key in curve_fields(result)]
    return found


#: The Content-Security-Policy of a page holding only inline styles, images and SVG.
PAGE_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"
_PAGE_STYLE = (
    "body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; "
    "color: #222; padding: 0 1em; line-height: 1.4; }\n"
    "table { border-collapse: collapse; margin: 0.6em 0; }\n"
    "th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: left; }\n"
    "th { background: #f4f4f4; }\n"
    "td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }\n"
    ".curves { display: flex; flex-wrap: wrap; gap: 2em; }\n"
    "figure { margin: 0; } figcaption { font-size: 0.9em; color: #555; }\n"
    ".regression { background: #f8d7d7; }\n"
)


def html_page(title: str, body: Sequence[str]) -> str:
    """A self-contained HTML page: ``title`` (escaped) and the already escaped ``body``
    parts, under :data:`PAGE_CSP` (nothing outside the page is ever loaded)."""
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{PAGE_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{_e(title)}</title>",
        f"<style>{_PAGE_STYLE}</style>",
        "</head>",
        "<body>",
        f"<h1>{_e(title)}</h1>",
    ]
    return "\n".join([*head, *[part for part in body if part], "</body>", "</html>", ""])
