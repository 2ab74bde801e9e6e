"""``geneval compare A.json B.json [...]``: metrics of runs side by side, and regressions.

The first report is the base; every further report is compared with it, metric by metric.
A change counts as a **regression** when it goes in the worse direction (the report's
``metric_info`` says which way is better) by more than

* the two runs' uncertainties combined, ``√(u_A² + u_B²)``, for a metric that reports one
  (KID's ``std``, a likelihood's ``std_err``) in both runs;
* ``rtol · |A|`` otherwise (FID reports none), ``rtol`` = 5 % by default;

and a metric that the base computed and a later run failed to compute is a regression too.
Notes say when the runs differ in what makes numbers comparable: sample counts (FID and KID
are biased by n), extractor weights, resize conventions or the reference.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geneval.errors import InputError
from geneval.explain import direction
from geneval.report import fmt, printable

DEFAULT_RTOL = 0.05


def load_report(path: str | Path) -> dict[str, Any]:
    """A geneval report JSON; a missing file, invalid JSON or anything that is not a geneval
    report (no ``geneval_version`` and ``metrics`` mapping of results with a ``value``) is an
    :class:`InputError` naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"report {path} does not exist") from None
    except IsADirectoryError:
        raise InputError(f"report {path} is a directory, not a JSON report") from None
    except UnicodeDecodeError:
        raise InputError(
            f"report {path} is not UTF-8 text (expected a geneval JSON report)"
        ) from None
    except OSError as exc:
        raise InputError(f"report {path}: {exc.strerror}") from None
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"report {path} is not JSON ({exc})".splitlines()[0]) from None
    metrics = data.get("metrics") if isinstance(data, dict) else None
    if (
        not isinstance(data, dict)
        or "geneval_version" not in data
        or not isinstance(metrics, dict)
        or not all(isinstance(r, dict) and "value" in r for r in metrics.values())
    ):
        raise InputError(
            f"{path} is not a geneval report (expected the JSON of `geneval run --json`)"
        )
    return data


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


@dataclass
class Comparison:
    """The result of :func:`compare_reports`."""

    names: list[str]
    rows: list[MetricRow]
    notes: list[str]
    rtol: float

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


def _direction(reports: Sequence[Mapping[str, Any]], name: str, registry: Any) -> bool | None:
    for report in reversed(reports):
        higher = _info(report, name).get("higher_is_better")
        if higher is not None:
            return bool(higher)
    if registry is not None and name in registry.items("metric"):
        higher = getattr(registry.metric(name), "higher_is_better", None)
        return None if higher is None else bool(higher)
    return None


def _spread(report: Mapping[str, Any], name: str, registry: Any) -> tuple[str | None, Any]:
    field_name = _info(report, name).get("uncertainty")
    if field_name is None and "metric_info" not in report and registry is not None:
        if name in registry.items("metric"):
            field_name = getattr(registry.metric(name), "uncertainty", None)
    if field_name is None:
        return None, None
    return field_name, report["metrics"].get(name, {}).get(field_name)


def _finite(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool) and math.isfinite(x)


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
        threshold = math.sqrt(spreads[0] ** 2 + spreads[1] ** 2)
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
        (("config", "reference"), "references", "the numbers measure different things"),
    )
    for name, report in zip(names[1:], reports[1:], strict=True):
        for path, what, why in checks:
            a, b = describe(base, *path), describe(report, *path)
            if a != b:
                notes.append(f"{what} differ: {a} in {base_name}, {b} in {name} ({why})")
        extractors_a = describe(base, "config", "extractors") or {}
        extractors_b = describe(report, "config", "extractors") or {}
        for metric in sorted(set(extractors_a) & set(extractors_b)):
            for key in ("name", "weights_sha256", "resize"):
                a, b = extractors_a[metric].get(key), extractors_b[metric].get(key)
                if a != b:
                    notes.append(
                        f"{metric}: extractor {key} differs ({a} in {base_name}, {b} in "
                        f"{name}): the values are not comparable"
                    )
    return notes


def compare_reports(
    reports: Sequence[Mapping[str, Any]],
    names: Sequence[str],
    *,
    rtol: float = DEFAULT_RTOL,
    registry: Any = None,
) -> Comparison:
    """Compare every report with the first (see the module docstring).

    ``registry`` (optional) supplies the direction and uncertainty field of metrics whose
    reports predate ``metric_info``.
    """
    if len(reports) < 2:
        raise InputError("compare needs at least two reports")
    base = reports[0]
    order = list(base["metrics"]) + list(base.get("errors", {}))
    for report in reports[1:]:
        order += [m for m in (*report["metrics"], *report.get("errors", {})) if m not in order]
    rows = []
    for name in dict.fromkeys(order):
        higher = _direction(reports, name, registry)
        base_result = base["metrics"].get(name)
        base_value = base_result["value"] if base_result else None
        row = MetricRow(name, higher, base_value)
        spread_name, base_spread = _spread(base, name, registry)
        for report in reports[1:]:
            result = report["metrics"].get(name)
            if result is None or not _finite(result.get("value")):
                failed = name in report.get("errors", {})
                change = Change(value=None)
                if failed and _finite(base_value):
                    change.regression = True
                    change.reason = f"failed: {report['errors'][name]}"
                else:
                    change.reason = "failed" if failed else "not computed"
                row.changes.append(change)
                continue
            if not _finite(base_value):
                row.changes.append(Change(value=float(result["value"]), reason="no base value"))
                continue
            _, spread = _spread(report, name, registry)
            row.changes.append(
                judge(
                    float(base_value),
                    float(result["value"]),
                    higher,
                    spreads=(base_spread, spread),
                    spread_name=spread_name,
                    rtol=rtol,
                )
            )
        rows.append(row)
    return Comparison(list(names), rows, _comparability_notes(names, reports), rtol)


def _signed(x: float | None) -> str:
    if x is None:
        return "—"
    return ("+" if x > 0 else "") + fmt(x)


def to_text(comparison: Comparison) -> str:
    """The comparison as a plain-text table, then notes and the verdict."""
    names = comparison.names
    header = ["metric", "better", *names, *(f"Δ {n}" for n in names[1:]), "verdict"]
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
                fmt(row.base),
                *(fmt(c.value) for c in row.changes),
                *(_signed(c.delta) for c in row.changes),
                "; ".join(verdicts),
            ]
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    numeric = set(range(2, len(header) - 1))
    lines = []
    for j, r in enumerate(rows):
        cells = [
            f"{c:>{widths[i]}}" if i in numeric else f"{c:<{widths[i]}}" for i, c in enumerate(r)
        ]
        lines.append("  ".join(cells).rstrip())
        if j == 0:
            lines.append("  ".join("-" * w for w in widths))
    lines.append("")
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
    return printable("\n".join(lines) + "\n")
