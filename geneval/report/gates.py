"""Quality gates: ``--fail-if "fid>30"``, ``[tool.geneval.gates]`` and ``--gates FILE.toml``.

A gate is ``NAME OP NUMBER`` with ``OP`` one of ``<``, ``<=``, ``>``, ``>=``; ``NAME`` is a
metric (its ``value``) or ``metric.field`` (e.g. ``kid.std``). The run fails (exit 1) when a
gate's expression holds. Gate files hold a list::

    fail-if = ["fid>30", "kid>0.01"]

in a TOML file given by ``--gates``, or under ``[tool.geneval.gates]`` of a ``pyproject.toml``.
A ``--gates`` file may also be a ``pyproject.toml``: then its ``[tool.geneval.gates]`` is read,
with any top-level ``fail-if``; a ``--gates`` file without any ``fail-if`` is refused, so that
a mistyped table never passes silently.

Reading is one place (:func:`_read_toml`, :func:`_table`): a file that is not UTF-8, not
valid TOML, too large or too deeply nested, a ``tool``, ``tool.geneval`` or
``tool.geneval.gates`` that is not a table, or a ``fail-if`` that is not a list of strings is
an :class:`InputError` naming the file and the key.

A gate fails when its expression holds, and also whenever the number it reads is missing or
not a finite number: a NaN, a field that is ±inf, null, a string or a boolean never passes.
The one exception is a metric's ``value`` of ±inf, which the runner lets through only for a
metric that declares ``allows_infinite_value`` (PSNR of identical images); it is compared as
the number it is.
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

from geneval.api import Metric
from geneval.errors import InputError
from geneval.io import read_small_text
from geneval.text import quote, visible

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
        """True when the expression holds, i.e. the gate fails; NaN always fails, and so does
        ±inf in any field but ``value`` (see the module docstring)."""
        if math.isnan(value) or (math.isinf(value) and self.field != "value"):
            return True
        return _OPS[self.op](value, self.threshold)


def parse_gate(expr: str, *, origin: str = "--fail-if") -> Gate:
    """Parse ``"fid>30"``; a malformed expression is an :class:`InputError`."""
    if not isinstance(expr, str):
        raise InputError(
            f"{quote(origin)}: a gate must be a string such as 'fid>30', found "
            f"{type(expr).__name__}"
        )
    match = _GATE.match(expr)
    if match is None:
        raise InputError(
            f"{quote(origin)}: malformed gate {expr!r} (expected e.g. 'fid>30' or 'kid.std<=0.01')"
        )
    threshold = float(match["number"])
    if not math.isfinite(threshold):
        raise InputError(
            f"{quote(origin)}: gate {expr!r} has a threshold that is not a finite number"
        )
    return Gate(
        expr=expr.strip(),
        metric=match["metric"],
        field=match["field"] or "value",
        op=match["op"],
        threshold=threshold,
        origin=origin,
    )


def parse_gates(expressions: str | Iterable[str], *, origin: str = "fail_if") -> list[Gate]:
    """Parse one gate expression (``"fid>30"``) or several (``["fid>30", "kid>0.01"]``), as
    the Python API's ``fail_if=`` takes them: a string is one gate, never its characters.
    Anything but a string or an iterable of strings is an :class:`InputError` naming
    ``origin``."""
    if isinstance(expressions, str):
        return [parse_gate(expressions, origin=origin)]
    if isinstance(expressions, bytes | Mapping) or not isinstance(expressions, Iterable):
        raise InputError(
            f"{quote(origin)}: expected a gate such as 'fid>30' or a list of them, found "
            f"{type(expressions).__name__}"
        )
    return [parse_gate(expr, origin=origin) for expr in expressions]


#: The largest TOML file read for gates (a pyproject.toml is a few kB).
MAX_TOML_BYTES = 4 << 20


def _fail_if(value: Any, origin: str, key: str) -> list[Gate]:
    """A ``fail-if`` list of gate strings."""
    if not isinstance(value, list) or not all(isinstance(e, str) for e in value):
        found = type(value).__name__ if not isinstance(value, list) else "a list holding "
        if isinstance(value, list):
            found += ", ".join(sorted({type(e).__name__ for e in value if not isinstance(e, str)}))
        raise InputError(f"{quote(origin)}: '{key}' must be a list of strings, found {found}")
    return [parse_gate(e, origin=origin) for e in value]


def _gate_list(table: Any, origin: str, where: str = "gates") -> list[Gate]:
    if not isinstance(table, Mapping):
        raise InputError(
            f"{quote(origin)}: {where} must be a table with a 'fail-if' list, found "
            f"{type(table).__name__}"
        )
    unknown = set(table) - {"fail-if"}
    if unknown:
        names = ", ".join(quote(k) for k in sorted(unknown))
        raise InputError(f"{quote(origin)}: unknown gate key(s) {names} (use fail-if)")
    return _fail_if(table.get("fail-if", []), origin, "fail-if")


def _read_toml(path: Path, what: str) -> dict[str, Any]:
    """The one TOML reader of gates: every way a file can be unreadable is an
    :class:`InputError` naming it."""
    shown = f"{what} {quote(path)}"
    text = read_small_text(path, shown=shown, kind="a TOML file", limit=MAX_TOML_BYTES)
    try:
        return tomllib.loads(text)
    except ValueError as exc:  # TOMLDecodeError, and an integer too long to convert
        reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InputError(f"{shown} is not valid TOML ({visible(reason)})") from None
    except RecursionError:
        raise InputError(f"{shown} is not valid TOML (nested too deeply)") from None


def _table(data: Mapping[str, Any], keys: tuple[str, ...], origin: str) -> Any:
    """The value at ``data[k1][k2]...``, or ``None`` where a key is absent; a level on the way
    that is not a table is an :class:`InputError` naming the file and the key."""
    node: Any = data
    for depth, key in enumerate(keys):
        if not isinstance(node, Mapping):
            where = ".".join(keys[:depth])
            raise InputError(
                f"{quote(origin)}: '{where}' must be a table, found {type(node).__name__}"
            )
        node = node.get(key)
        if node is None:
            return None
    return node


def gates_from_file(path: str | Path) -> list[Gate]:
    """Gates of a ``--gates`` TOML file: its top-level ``fail-if``, and ``[tool.geneval.gates]``
    where it has one (a ``pyproject.toml`` given as the gates file). A file with neither is
    an :class:`InputError`, as is any key of the wrong type."""
    path = Path(path)
    data = _read_toml(path, "gates file")
    origin = str(path)
    table = _table(data, ("tool", "geneval", "gates"), origin)
    if "tool" not in data and data:
        return _gate_list(data, origin)  # a plain gates file: fail-if and nothing else
    if table is None and "fail-if" not in data:
        raise InputError(
            f"gates file {quote(path)} has neither a top-level 'fail-if' nor a "
            "[tool.geneval.gates] table"
        )
    gates = _fail_if(data["fail-if"], origin, "fail-if") if "fail-if" in data else []
    if table is not None:
        gates += _gate_list(table, origin, "[tool.geneval.gates]")
    return gates


def gates_from_pyproject(folder: str | Path = ".") -> list[Gate]:
    """Gates under ``[tool.geneval.gates]`` of ``folder/pyproject.toml`` (none if absent)."""
    path = Path(folder) / "pyproject.toml"
    if not path.is_file():
        return []
    origin = f"{path} [tool.geneval.gates]"
    table = _table(_read_toml(path, "pyproject file"), ("tool", "geneval", "gates"), str(path))
    return [] if table is None else _gate_list(table, origin)


def check_gate_metrics(gates: Iterable[Gate], metrics: Mapping[str, Metric]) -> None:
    """Refuse, before a run, a gate on a metric the run does not compute or on a field the
    metric does not declare (``metrics``: name → Metric plugin)."""
    for gate in gates:
        metric = metrics.get(gate.metric)
        if metric is None:
            raise InputError(
                f"{gate.origin}: gate {gate.expr!r} is on metric {gate.metric!r}, which this run "
                f"does not compute (--metrics {','.join(sorted(metrics))})"
            )
        # every report of a metric also holds the options it ran with
        declared = {*metric.fields, *metric.options}
        if gate.field != "value" and gate.field not in declared:
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


def _float(value: int | float) -> float:
    """A number as a float; an integer beyond float64 becomes ±inf (and so fails its gate)."""
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def evaluate_gates(
    gates: Iterable[Gate], results: Mapping[str, Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Evaluate each gate on the metric results: ``[{"expr", "failed", "value", ...}]``.

    A gate whose metric or field is missing from the results (the metric raised, or it
    reports no such field), or whose number is not a finite number (see the module
    docstring), counts as failed and says why.
    """
    verdicts = []
    for gate in gates:
        entry: dict[str, Any] = {"expr": gate.expr, "source": gate.origin}
        result = results.get(gate.metric)
        value = None if result is None else result.get(gate.field)
        if isinstance(value, bool) or not isinstance(value, int | float):
            why = "not computed" if value is None else "is not a number (a gate reads a number)"
            entry.update(failed=True, value=None, reason=f"{gate.metric}.{gate.field} {why}")
        else:
            number = _float(value)
            entry.update(failed=gate.holds(number), value=number)
            if math.isnan(number) or (math.isinf(number) and gate.field != "value"):
                entry["reason"] = f"{gate.metric}.{gate.field} is not a finite number"
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
