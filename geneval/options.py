"""Typed ``KEY=VALUE`` options.

``--opt METRIC.KEY=VALUE`` sets a metric option, ``--opt KEY=VALUE`` a training option.

A value is typed from the declared default: bool, int, float or str. The declared defaults are
the single source of truth for both the Python API and the CLI.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from geneval.errors import InputError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def parse_value(raw: str, default: Any, *, where: str) -> Any:
    """Convert ``raw`` to the type of ``default``.

    An :class:`InputError` naming ``where`` when it cannot be converted.
    """
    if isinstance(default, bool):
        low = raw.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise InputError(f"{where}={raw}: expected true or false")
    if isinstance(default, int):
        try:
            return int(raw)
        except ValueError:
            raise InputError(f"{where}={raw}: expected an integer") from None
    if isinstance(default, float):
        try:
            return float(raw)
        except ValueError:
            raise InputError(f"{where}={raw}: expected a number") from None
    if default is None:
        for convert in (int, float):
            try:
                return convert(raw)
            except ValueError:
                pass
    return raw


def split_assignment(text: str, *, flag: str = "--opt") -> tuple[str, str]:
    """``"a.b=c"`` → ``("a.b", "c")``; an :class:`InputError` when there is no ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{flag} {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def parse_options(
    assignments: Iterable[str],
    defaults: Mapping[str, Any],
    *,
    owner: str,
    flag: str = "--opt",
    prefix: str = "",
) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings against ``defaults``; unknown keys are an :class:`InputError`.

    ``prefix`` is shown before each key in messages (``kid.`` for ``--opt kid.subsets=...``).
    """
    out: dict[str, Any] = {}
    for text in assignments:
        key, raw = split_assignment(text, flag=flag)
        if key not in defaults:
            known = ", ".join(sorted(defaults)) or "none"
            raise InputError(
                f"{flag} {prefix}{key}: {owner} has no option {key!r} (options: {known})"
            )
        out[key] = parse_value(raw, defaults[key], where=f"{flag} {prefix}{key}")
    return out


def parse_metric_options(
    assignments: Iterable[str], metrics: Mapping[str, Any]
) -> dict[str, dict[str, Any]]:
    """Parse ``METRIC.KEY=VALUE`` strings for the requested ``metrics`` (name → Metric).

    Returns the full option set of each metric: its declared defaults updated with the parsed
    values.
    """
    chosen: dict[str, list[str]] = {name: [] for name in metrics}
    for text in assignments:
        key, raw = split_assignment(text)
        metric, dot, option = key.partition(".")
        if not dot or not option:
            raise InputError(f"--opt {text!r}: expected METRIC.KEY=VALUE")
        if metric not in metrics:
            requested = ", ".join(metrics) or "none"
            raise InputError(
                f"--opt {key}: metric {metric!r} is not requested (--metrics {requested})"
            )
        chosen[metric].append(f"{option}={raw}")
    result = {}
    for name, metric in metrics.items():
        options = dict(metric.defaults)
        for k, v in parse_options(
            chosen[name], metric.defaults, owner=f"metric {name}", prefix=f"{name}."
        ).items():
            options[k] = v
        result[name] = options
    return result
