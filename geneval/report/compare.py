"""``geneval compare A.json B.json [...]``: metrics of runs side by side, and regressions.

The first report is the base; every further report is compared with it, metric by metric.
A change counts as a **regression** when it goes in the worse direction (the report's
``metric_info`` says which way is better) by more than

* the two runs' uncertainties combined, ``√(u_A² + u_B²)``, for a metric that reports one
  (KID's ``std``, a likelihood's ``std_err``) in both runs;
* ``rtol · |A|`` otherwise (FID reports none), ``rtol`` = 5 % by default;

and a metric that the base computed and a later run failed to compute, lacks, or reports
without a finite value (null, NaN, a string ...) is a regression too: a gate never passes on
a number it could not read. Each report's structure is checked first (:func:`check_report`):
a report of the wrong structure, or a ``higher_is_better`` that is not a JSON boolean, is an
:class:`InputError` naming the file and the key.
Notes say when the runs differ in what makes numbers comparable: sample counts (FID and KID
are biased by n), extractor weights, resize conventions, units or the reference (a statistics
file counts as the source its provenance names: one made by ``geneval stats digits:train`` is
the reference ``digits:train``).

A metric field that holds a curve (:mod:`geneval.report.curves`, e.g. the PRD curve of
``prd``) is collected from every run that reports it; :func:`to_html` draws the runs' curves
of each such field on one plot, beside the table.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.errors import InputError
from geneval.io import read_small_text
from geneval.report.curves import curve_fields, html_page, svg_plot
from geneval.report.explain import direction
from geneval.report.formats import fmt
from geneval.text import printable, quote, visible

if TYPE_CHECKING:
    from geneval.plugins import Registry

DEFAULT_RTOL = 0.05


#: The largest report file read: a geneval JSON report is a few kB to a few MB.
MAX_REPORT_BYTES = 64 << 20


def load_report(path: str | Path) -> dict[str, Any]:
    """A geneval report JSON, validated by :func:`check_report`; a missing file, a file that
    is not a regular file, larger than :data:`MAX_REPORT_BYTES`, not UTF-8, invalid (or too
    deeply nested) JSON, or anything that is not a geneval report is an :class:`InputError`
    naming the file."""
    path = Path(path)
    shown = quote(path)
    text = read_small_text(
        path, shown=f"report {shown}", kind="a JSON report", limit=MAX_REPORT_BYTES
    )
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(visible(f"report {shown} is not JSON ({exc})")) from None
    except RecursionError:
        raise _not_a_report(shown, "JSON nested too deeply") from None
    return check_report(data, shown)


def _not_a_report(origin: str, why: str) -> InputError:
    return InputError(
        f"{origin} is not a geneval report ({why}; expected the JSON of `geneval run --json`)"
    )


def check_report(data: Any, origin: str) -> dict[str, Any]:
    """Check the structure ``geneval compare`` reads from a report, and return it.

    A report is a JSON object with ``geneval_version`` and ``metrics``, an object of results,
    each an object with a ``value`` (any value: one that is not a finite number counts as not
    computed). ``errors``, when present, maps metric names to messages; ``metric_info`` maps
    metric names to objects whose ``higher_is_better`` is ``true``, ``false`` or ``null`` and
    whose ``uncertainty`` is a field name or ``null``; ``config.extractors`` maps metric names
    to objects. Anything else is an :class:`InputError` naming ``origin`` and the key.
    """
    if not isinstance(data, dict):
        raise _not_a_report(origin, f"a JSON {_json_type(data)}, not an object")
    if "geneval_version" not in data:
        raise _not_a_report(origin, "no geneval_version")
    metrics = data.get("metrics")
    if not isinstance(metrics, dict):
        raise _not_a_report(origin, f"metrics is a JSON {_json_type(metrics)}, not an object")
    for name, result in metrics.items():
        if not isinstance(result, dict) or "value" not in result:
            raise _not_a_report(origin, f"metrics.{quote(name)} is not an object with a value")
    errors = data.get("errors")
    if errors is not None and (
        not isinstance(errors, dict) or not all(isinstance(e, str) for e in errors.values())
    ):
        raise _not_a_report(origin, "errors is not an object of messages")
    info = data.get("metric_info")
    if info is not None and not isinstance(info, dict):
        raise _not_a_report(origin, f"metric_info is a JSON {_json_type(info)}, not an object")
    for name, entry in (info or {}).items():
        key = f"metric_info.{quote(name)}"
        if entry is None:
            continue
        if not isinstance(entry, dict):
            raise _not_a_report(origin, f"{key} is a JSON {_json_type(entry)}, not an object")
        higher = entry.get("higher_is_better")
        if higher is not None and not isinstance(higher, bool):
            raise InputError(
                f"{origin}: {key}.higher_is_better must be true, false or null, found "
                f"{_json_type(higher)} {_shown(higher)}"
            )
        uncertainty = entry.get("uncertainty")
        if uncertainty is not None and not isinstance(uncertainty, str):
            raise InputError(
                f"{origin}: {key}.uncertainty must be a field name or null, found "
                f"{_json_type(uncertainty)} {_shown(uncertainty)}"
            )
    config = data.get("config")
    if config is not None and not isinstance(config, dict):
        raise _not_a_report(origin, f"config is a JSON {_json_type(config)}, not an object")
    extractors = (config or {}).get("extractors")
    if extractors is not None and (
        not isinstance(extractors, dict)
        or not all(isinstance(e, dict | None) for e in extractors.values())
    ):
        raise _not_a_report(origin, "config.extractors is not an object of objects")
    return data


def _json_type(value: Any) -> str:
    """The JSON type of a parsed value: object, array, string, number, boolean or null."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    return {dict: "object", list: "array", str: "string"}.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    """A short, one-line rendering of a JSON value for a message (containers by type)."""
    if isinstance(value, dict | list):
        return f"of {len(value)} items"
    text = repr(value) if isinstance(value, str) else str(value)
    return visible(text if len(text) <= 40 else text[:37] + "...")


@dataclass
class Change:
    """One metric of one later run against the base."""

    value: float | None
    delta: float | None = None
    threshold: float | None = None
    basis: str = ""  # what the threshold is: "std", "std_err", "rtol 5%"
    regression: bool = False
    reason: str = ""


@dataclass
class MetricRow:
    """One metric across the runs."""

    name: str
    higher_is_better: bool | None
    base: float | None
    changes: list[Change] = field(default_factory=list)
    unit: str | None = None  # the unit the reports declare for the value (the latest one)


@dataclass
class Comparison:
    """The result of :func:`compare_reports`."""

    names: list[str]
    rows: list[MetricRow]
    notes: list[str]
    rtol: float
    #: ``(metric, field, [(run name, curve), ...])`` for each curve field some run reports
    curves: list[tuple[str, str, list[tuple[str, Mapping[str, Any]]]]] = field(default_factory=list)

    @property
    def regressions(self) -> list[str]:
        """``"metric in NAME"`` for each regression."""
        return [
            f"{row.name} in {name}"
            for row in self.rows
            for name, change in zip(self.names[1:], row.changes, strict=True)
            if change.regression
        ]


def _info(report: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    return (report.get("metric_info") or {}).get(name) or {}


def _direction(
    reports: Sequence[Mapping[str, Any]], name: str, registry: Registry | None
) -> bool | None:
    for report in reversed(reports):
        higher = _info(report, name).get("higher_is_better")
        if higher is not None:
            return bool(higher)
    if registry is not None and name in registry.items("metric"):
        higher = registry.metric(name).higher_is_better
        return None if higher is None else bool(higher)
    return None


def _unit(reports: Sequence[Mapping[str, Any]], name: str) -> str | None:
    """The unit of metric ``name``'s value, as the latest report that declares one says."""
    for report in reversed(reports):
        unit = _info(report, name).get("unit")
        if isinstance(unit, str) and unit:
            return unit
    return None


def _spread(
    report: Mapping[str, Any], name: str, registry: Registry | None
) -> tuple[str | None, Any]:
    field_name = _info(report, name).get("uncertainty")
    if field_name is None and "metric_info" not in report and registry is not None:
        if name in registry.items("metric"):
            field_name = registry.metric(name).uncertainty
    if field_name is None:
        return None, None
    return field_name, report["metrics"].get(name, {}).get(field_name)


def _number(x: Any) -> float | None:
    """``x`` as a finite float, or ``None`` for anything else (null, NaN, ±inf, a string, a
    boolean, a container, an integer beyond float64)."""
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    try:
        number = float(x)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _finite(x: Any) -> bool:
    return _number(x) is not None


def _errors(report: Mapping[str, Any]) -> Mapping[str, str]:
    return report.get("errors") or {}


def judge(
    base: float,
    value: float,
    higher_is_better: bool | None,
    *,
    spreads: tuple[Any, Any],
    spread_name: str | None,
    rtol: float,
) -> Change:
    """Whether ``value`` is a regression from ``base`` (see the module docstring)."""
    delta = value - base
    if spread_name and _finite(spreads[0]) and _finite(spreads[1]):
        threshold = math.hypot(float(spreads[0]), float(spreads[1]))  # no overflow in squares
        basis = f"combined {spread_name}"
    else:
        threshold = rtol * abs(base)
        basis = f"rtol {rtol:g}"
    change = Change(value=value, delta=delta, threshold=threshold, basis=basis)
    if higher_is_better is None:
        change.reason = "direction unknown"
        return change
    worse = -delta if higher_is_better else delta
    if worse > threshold:
        change.regression = True
        change.reason = f"worse by {fmt(abs(delta))} > {fmt(threshold)} ({basis})"
    elif worse > 0:
        change.reason = f"worse within {basis}"
    elif delta != 0:
        change.reason = "better"
    else:
        change.reason = "same"
    return change


def _comparability_notes(names: Sequence[str], reports: Sequence[Mapping[str, Any]]) -> list[str]:
    notes = []
    base_name, base = names[0], reports[0]

    def describe(report: Mapping[str, Any], *path: str) -> Any:
        node: Any = report
        for key in path:
            node = node.get(key) if isinstance(node, Mapping) else None
        return node

    checks = (
        (("inputs", "samples", "count"), "sample counts", "estimates such as FID depend on n"),
    )
    for name, report in zip(names[1:], reports[1:], strict=True):
        for path, what, why in checks:
            a, b = describe(base, *path), describe(report, *path)
            if a != b:
                notes.append(f"{what} differ: {a} in {base_name}, {b} in {name} ({why})")
        if reference_identity(base) != reference_identity(report):
            notes.append(
                f"references differ: {_reference_shown(base)} in {base_name}, "
                f"{_reference_shown(report)} in {name} (the numbers measure different things)"
            )
        for metric in sorted(set(base["metrics"]) & set(report["metrics"])):
            a, b = _info(base, metric).get("unit"), _info(report, metric).get("unit")
            if a and b and a != b:
                notes.append(
                    f"{metric}: units differ ({a} in {base_name}, {b} in {name}): the values "
                    "are not comparable"
                )
        extractors_a = describe(base, "config", "extractors") or {}
        extractors_b = describe(report, "config", "extractors") or {}
        for metric in sorted(set(extractors_a) & set(extractors_b)):
            for key in ("name", "weights_sha256", "resize"):
                a = (extractors_a[metric] or {}).get(key)
                b = (extractors_b[metric] or {}).get(key)
                if a != b:
                    notes.append(
                        f"{metric}: extractor {key} differs ({a} in {base_name}, {b} in "
                        f"{name}): the values are not comparable"
                    )
    return notes


def reference_identity(report: Mapping[str, Any]) -> Any:
    """What a report's reference is, for comparing runs: the source a statistics file was
    computed from, as its provenance records it (``inputs.reference.statistics_of``: a file
    made by ``geneval stats digits:train`` is ``digits:train``), else ``config.reference``."""
    entry = (report.get("inputs") or {}).get("reference")
    made_from = entry.get("statistics_of") if isinstance(entry, Mapping) else None
    if isinstance(made_from, str) and made_from:
        return made_from
    config = report.get("config")
    return config.get("reference") if isinstance(config, Mapping) else None


def _reference_shown(report: Mapping[str, Any]) -> str:
    """The reference as a note names it: ``train.npz (statistics of digits:train)``."""
    config = report.get("config")
    given = config.get("reference") if isinstance(config, Mapping) else None
    identity = reference_identity(report)
    return str(given) if identity == given else f"{given} (statistics of {identity})"


def compare_reports(
    reports: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    rtol: float = DEFAULT_RTOL,
    registry: Registry | None = None,
) -> Comparison:
    """Compare every report with the first (see the module docstring).

    Each report is checked by :func:`check_report` (named by ``names``). A metric the base
    computed (a finite value) is a regression in a later run that failed it, lacks it, or
    gives a value that is not a finite number (null, NaN, a string ...). ``rtol`` must be a
    finite number ≥ 0. ``registry`` (optional) supplies the direction and uncertainty field of
    metrics whose reports predate ``metric_info``.
    """
    if len(reports) < 2:
        raise InputError("compare needs at least two reports")
    if len(names) != len(reports):
        raise InputError(f"compare: {len(reports)} reports but {len(names)} names")
    if not (isinstance(rtol, int | float) and math.isfinite(rtol) and rtol >= 0):
        raise InputError(f"rtol {rtol!r}: expected a finite number ≥ 0")
    for report, name in zip(reports, names, strict=True):
        check_report(report, quote(name))
    base = reports[0]
    order = list(base["metrics"]) + list(_errors(base))
    for report in reports[1:]:
        order += [m for m in (*report["metrics"], *_errors(report)) if m not in order]
    rows = []
    for name in dict.fromkeys(order):
        higher = _direction(reports, name, registry)
        base_result = base["metrics"].get(name)
        base_value = _number(base_result["value"]) if base_result else None
        row = MetricRow(name, higher, base_value, unit=_unit(reports, name))
        spread_name, base_spread = _spread(base, name, registry)
        for report in reports[1:]:
            result = report["metrics"].get(name)
            value = _number(result["value"]) if result is not None else None
            if value is None:
                row.changes.append(_not_computed(name, report, result, base_value))
                continue
            if base_value is None:
                row.changes.append(Change(value=value, reason="no base value"))
                continue
            _, spread = _spread(report, name, registry)
            row.changes.append(
                judge(
                    base_value,
                    value,
                    higher,
                    spreads=(base_spread, spread),
                    spread_name=spread_name,
                    rtol=rtol,
                )
            )
        rows.append(row)
    notes = _comparability_notes(names, reports)
    return Comparison(list(names), rows, notes, rtol, comparison_curves(reports, names))


def comparison_curves(
    reports: Sequence[Mapping[str, Any]], names: Sequence[str]
) -> list[tuple[str, str, list[tuple[str, Mapping[str, Any]]]]]:
    """``(metric, field, [(name, curve), ...])`` for every metric field that holds a curve
    in at least one report (:func:`geneval.report.curves.is_curve`), the runs in the order
    given, fields in order of first appearance."""
    found: dict[tuple[str, str], list[tuple[str, Mapping[str, Any]]]] = {}
    for report, name in zip(reports, names, strict=True):
        for metric, result in report["metrics"].items():
            for key in curve_fields(result):
                found.setdefault((metric, key), []).append((name, result[key]))
    return [(metric, key, series) for (metric, key), series in found.items()]


def _not_computed(
    name: str, report: Mapping[str, Any], result: Mapping[str, Any] | None, base: float | None
) -> Change:
    """A later run without a finite value of metric ``name``: a regression when the base
    computed one, whatever the reason (the metric failed, is missing, or its value is null,
    NaN, infinite or not a number)."""
    failed = _errors(report).get(name)
    if failed is not None:
        why = f"failed: {visible(failed)}"
    elif result is None:
        why = "missing"
    else:
        why = f"value {_shown(result['value'])} is not a finite number"
    if base is None:
        return Change(value=None, reason="failed" if failed is not None else "not computed")
    return Change(value=None, regression=True, reason=why)


def _signed(x: float | None) -> str:
    if x is None:
        return "—"
    return ("+" if x > 0 else "") + fmt(x)


def _table(comparison: Comparison) -> tuple[list[list[str]], set[int]]:
    """The comparison table: header row then one row per metric, and the numeric columns."""
    names = [visible(name) for name in comparison.names]  # a file name stays in its column
    units = any(row.unit for row in comparison.rows)  # a unit column where some metric has one
    header = ["metric", "better", *(["unit"] if units else []), *names]
    header += [*(f"Δ {n}" for n in names[1:]), "verdict"]
    first_number = 3 if units else 2
    rows = [header]
    for row in comparison.rows:
        verdicts = [
            f"{'REGRESSION' if c.regression else c.reason}"
            + (f" in {n}" if len(names) > 2 else "")
            + (f" ({c.reason})" if c.regression else "")
            for n, c in zip(names[1:], row.changes, strict=True)
        ]
        rows.append(
            [
                row.name,
                {True: "higher", False: "lower", None: "?"}[row.higher_is_better],
                *([visible(row.unit or "")] if units else []),
                fmt(row.base),
                *(fmt(c.value) for c in row.changes),
                *(_signed(c.delta) for c in row.changes),
                "; ".join(verdicts),
            ]
        )
    return rows, set(range(first_number, len(header) - 1))


def _closing_lines(comparison: Comparison) -> list[str]:
    """The notes and the verdict that follow the table."""
    lines = []
    for row in comparison.rows:
        if row.higher_is_better is None:
            lines.append(f"note: {row.name}: {direction(None)}, so no change is flagged")
    lines += [f"note: {note}" for note in comparison.notes]
    regressions = comparison.regressions
    if regressions:
        lines.append(f"regressions: {', '.join(regressions)}")
    else:
        lines.append(
            "no regression (a change in the worse direction beyond the combined uncertainty, "
            f"or beyond rtol {comparison.rtol:g} where a metric reports none)"
        )
    return lines


def to_text(comparison: Comparison) -> str:
    """The comparison as a plain-text table (with a unit column where some metric declares a
    unit), then notes and the verdict."""
    rows, numeric = _table(comparison)
    header = rows[0]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for j, r in enumerate(rows):
        cells = [
            f"{c:>{widths[i]}}" if i in numeric else f"{c:<{widths[i]}}" for i, c in enumerate(r)
        ]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
    lines += _closing_lines(comparison)
    return printable("\n".join(lines) + "\n")


def to_html(comparison: Comparison) -> str:
    """The comparison as one self-contained HTML page: the table (regressions marked), the
    notes and verdict, and for every curve field the runs' curves drawn on one plot
    (:func:`geneval.report.curves.svg_plot`, one colour per run, with a legend)."""
    rows, numeric = _table(comparison)
    header, body = rows[0], rows[1:]
    out = ["<table>", "<tr>" + "".join(f"<th>{_h(h)}</th>" for h in header) + "</tr>"]
    for row, metric in zip(body, comparison.rows, strict=True):
        css = ' class="regression"' if any(c.regression for c in metric.changes) else ""
        cells = "".join(
            f'<td class="num">{_h(c)}</td>' if i in numeric else f"<td>{_h(c)}</td>"
            for i, c in enumerate(row)
        )
        out.append(f"<tr{css}>{cells}</tr>")
    out.append("</table>")
    parts = ["<h2>Metrics</h2>", "\n".join(out)]
    parts.append(
        "<ul>" + "".join(f"<li>{_h(x)}</li>" for x in _closing_lines(comparison)) + "</ul>"
    )
    if comparison.curves:
        figures = []
        for metric, key, series in comparison.curves:
            runs = ", ".join(name for name, _ in series)
            caption = f"{metric}.{key} of {runs}."
            plot = svg_plot(series, title=f"{metric}.{key}")
            figures.append(f"<figure>{plot}<figcaption>{_h(caption)}</figcaption></figure>")
        parts.append('<h2>Curves</h2>\n<div class="curves">' + "".join(figures) + "</div>")
    title = "geneval compare: " + " vs ".join(comparison.names)
    return printable(html_page(title, parts))


def _h(value: Any) -> str:
    """``value`` as escaped HTML text on one line."""
    import html

    return html.escape(visible(value), quote=True)
