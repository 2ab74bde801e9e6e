"""Quality gates: ``--fail-if "fid>30"``, ``[tool.geneval.gates]`` and ``--gates FILE.toml``.

A gate is ``NAME OP NUMBER`` with ``OP`` one of ``<``, ``<=``, ``>``, ``>=``; ``NAME`` is a
metric (its ``value``) or ``metric.field`` (e.g. ``kid.std``). The run fails (exit 1) when a
gate's expression holds. Gate files hold a list::

    fail-if = ["fid>30", "kid>0.01"]

in a TOML file given by ``--gates``, or under ``[tool.geneval.gates]`` of a ``pyproject.toml``.
"""

from __future__ import annotations

import math
import operator
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from geneval.errors import InputError

_OPS: dict[str, Callable[[float, float], bool]] = {
    "<=": operator.le,
    ">=": operator.ge,
    "<": operator.lt,
    ">": operator.gt,
}
_GATE = re.compile(
    r"^\s*(?P<metric>[a-z0-9_-]+)(?:\.(?P<field>[a-z0-9_]+))?\s*"
    r"(?P<op><=|>=|<|>)\s*"
    r"(?P<number>[-+]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|inf|infinity|nan))\s*$"
)


@dataclass(frozen=True)
class Gate:
    """One parsed gate expression."""

    expr: str
    metric: str
    field: str
    op: str
    threshold: float
    origin: str  # where it came from: "--fail-if", a file path

    def holds(self, value: float) -> bool:
        """True when the expression holds, i.e. the gate fails; NaN always fails."""
        if math.isnan(value):
            return True
        return _OPS[self.op](value, self.threshold)


def parse_gate(expr: str, *, origin: str = "--fail-if") -> Gate:
    """Parse ``"fid>30"``; a malformed expression is an :class:`InputError`."""
    match = _GATE.match(expr)
    if match is None:
        raise InputError(
            f"{origin}: malformed gate {expr!r} (expected e.g. 'fid>30' or 'kid.std<=0.01')"
        )
    threshold = float(match["number"])
    if not math.isfinite(threshold):
        raise InputError(f"{origin}: gate {expr!r} has a threshold that is not a finite number")
    return Gate(
        expr=expr.strip(),
        metric=match["metric"],
        field=match["field"] or "value",
        op=match["op"],
        threshold=threshold,
        origin=origin,
    )


def _gate_list(table: Any, origin: str) -> list[Gate]:
    if not isinstance(table, Mapping):
        raise InputError(f"{origin}: gates must be a table with a 'fail-if' list")
    unknown = set(table) - {"fail-if"}
    if unknown:
        raise InputError(
            f"{origin}: unknown gate key(s) {', '.join(sorted(unknown))} (use fail-if)"
        )
    exprs = table.get("fail-if", [])
    if not isinstance(exprs, list) or not all(isinstance(e, str) for e in exprs):
        raise InputError(f"{origin}: 'fail-if' must be a list of strings")
    return [parse_gate(e, origin=origin) for e in exprs]


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise InputError(f"gates file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"gates file {path} is not UTF-8 text ({exc.reason})") from None
    except (tomllib.TOMLDecodeError, OSError) as exc:
        raise InputError(f"gates file {path} is not valid TOML ({exc})".splitlines()[0]) from None


def gates_from_file(path: str | Path) -> list[Gate]:
    """Gates of a ``--gates`` TOML file (top-level ``fail-if``, or ``[tool.geneval.gates]``)."""
    path = Path(path)
    data = _read_toml(path)
    table = data.get("tool", {}).get("geneval", {}).get("gates") if "tool" in data else data
    return _gate_list(table if table is not None else {}, str(path))


def gates_from_pyproject(folder: str | Path = ".") -> list[Gate]:
    """Gates under ``[tool.geneval.gates]`` of ``folder/pyproject.toml`` (none if absent)."""
    path = Path(folder) / "pyproject.toml"
    if not path.is_file():
        return []
    table = _read_toml(path).get("tool", {}).get("geneval", {}).get("gates")
    return [] if table is None else _gate_list(table, f"{path} [tool.geneval.gates]")


def check_gate_metrics(gates: Iterable[Gate], metrics: Mapping[str, Any]) -> None:
    """Refuse, before a run, a gate on a metric the run does not compute or on a field the
    metric does not declare (``metrics``: name → Metric plugin)."""
    for gate in gates:
        metric = metrics.get(gate.metric)
        if metric is None:
            raise InputError(
                f"{gate.origin}: gate {gate.expr!r} is on metric {gate.metric!r}, which this run "
                f"does not compute (--metrics {','.join(sorted(metrics))})"
            )
        fields = getattr(metric, "fields", None)
        # every report of a metric also holds the options it ran with
        declared = None if fields is None else {*fields, *getattr(metric, "options", {})}
        if gate.field != "value" and declared is not None and gate.field not in declared:
            known = ", ".join(["value", *sorted(declared)])
            raise InputError(
                f"{gate.origin}: gate {gate.expr!r}: metric {gate.metric} has no field "
                f"{gate.field!r} (fields: {known})"
            )


def check_gate_fields(gates: Iterable[Gate], results: Mapping[str, Mapping[str, Any]]) -> None:
    """After the metrics ran, before anything is written: refuse a gate on a field that a
    metric without declared fields did not report (a typo, not a failed gate)."""
    for gate in gates:
        result = results.get(gate.metric)
        if result is not None and gate.field not in result:
            known = ", ".join(sorted(k for k in result if k != "warnings"))
            raise InputError(
                f"{gate.origin}: gate {gate.expr!r}: metric {gate.metric} reported no field "
                f"{gate.field!r} (fields: {known})"
            )


def evaluate_gates(
    gates: Iterable[Gate], results: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Evaluate each gate on the metric results: ``[{"expr", "failed", "value", ...}]``.

    A gate whose metric or field is missing from the results (the metric raised, or it
    reports no such field) counts as failed and says why.
    """
    verdicts = []
    for gate in gates:
        entry: dict[str, Any] = {"expr": gate.expr, "source": gate.origin}
        result = results.get(gate.metric)
        value = None if result is None else result.get(gate.field)
        if not isinstance(value, int | float):
            entry.update(failed=True, value=None, reason=f"{gate.metric}.{gate.field} not computed")
        else:
            entry.update(failed=gate.holds(float(value)), value=float(value))
        verdicts.append(entry)
    return verdicts


def apply_gates(report: dict[str, Any], gates: Iterable[Gate]) -> bool:
    """Judge ``report`` by ``gates``: sets ``report["gates"]`` (the verdicts) and
    ``report["passed"]`` (no gate failed and no metric raised); returns whether a gate failed.

    A gate on a field that a metric without declared fields did not report is an
    :class:`InputError` (checked before anything is written).
    """
    gates = list(gates)
    check_gate_fields(gates, report["metrics"])
    verdicts = evaluate_gates(gates, report["metrics"])
    failed = any(v["failed"] for v in verdicts)
    report["gates"] = verdicts
    report["passed"] = not failed and not report["errors"]
    return failed
