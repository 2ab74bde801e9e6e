"""Declared, typed and bounded options: ``--opt METRIC.KEY=VALUE`` and ``--opt KEY=VALUE``.

Every option a metric (``Metric.options``) or a model family (``ModelFamily.train_options``)
accepts is declared once, as an :class:`Option`: its default, a one-line help, and its allowed
values (inclusive bounds, or a tuple of choices). That declaration is the single source of
truth: the CLI types ``--opt`` strings from it, the Python API checks keyword values against
it, ``geneval plugins --verbose`` lists it, and the plugin receives validated values only.

Typing follows the default's type: ``bool`` (true/false/yes/no/on/off/1/0), ``int``, ``float``
(finite unless the option says otherwise) or ``str``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from geneval.errors import InputError, option_setting
from geneval.text import quote

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class Option:
    """One declared option.

    Parameters
    ----------
    default
        The default value; its type (bool, int, float, str) types every value given.
    help
        One line: what the option does.
    low, high
        Inclusive bounds for numbers (``None``: unbounded on that side).
    low_exclusive, high_exclusive
        ``True`` makes ``low`` (``high``) a strict bound (``value > low``, ``value < high``).
    choices
        The allowed values of a string (or number) option.
    allow_nonfinite
        Accept ``nan``/``inf`` for a float option (refused by default).
    """

    default: Any
    help: str = ""
    low: float | None = None
    high: float | None = None
    low_exclusive: bool = False
    high_exclusive: bool = False
    choices: tuple[Any, ...] | None = None
    allow_nonfinite: bool = False

    @property
    def type(self) -> type:
        """The type values are converted to: that of the default."""
        return type(self.default)

    def describe_bounds(self) -> str:
        """The allowed values in words, e.g. ``>= 1``, ``in [0, 1]``, ``one of a, b``."""
        if self.choices is not None:
            return "one of " + ", ".join(str(c) for c in self.choices)
        low = (
            None if self.low is None else ("> " if self.low_exclusive else ">= ") + f"{self.low:g}"
        )
        high = (
            None
            if self.high is None
            else ("< " if self.high_exclusive else "<= ") + f"{self.high:g}"
        )
        if low and high:
            return f"{low} and {high}"
        return low or high or ""

    def convert(self, raw: Any, *, where: str) -> Any:
        """Convert ``raw`` (a CLI string or a Python value) to the option's type and check it.

        An :class:`InputError` naming ``where`` when it cannot be converted or is out of bounds.
        """
        value = _convert(raw, self.default, where=where)
        self.check(value, where=where)
        return value

    def check(self, value: Any, *, where: str) -> None:
        """Refuse ``value`` when it is outside the declared bounds or choices."""
        if self.choices is not None and value not in self.choices:
            raise InputError(f"{where}={_shown(value)}: expected {self.describe_bounds()}")
        if isinstance(value, float) and not math.isfinite(value) and not self.allow_nonfinite:
            raise InputError(f"{where}={_shown(value)}: expected a finite number")
        if isinstance(value, int | float) and not isinstance(value, bool):
            too_low = self.low is not None and (
                value <= self.low if self.low_exclusive else value < self.low
            )
            too_high = self.high is not None and (
                value >= self.high if self.high_exclusive else value > self.high
            )
            if too_low or too_high:
                raise InputError(f"{where}={_shown(value)}: expected {self.describe_bounds()}")


def _shown(value: Any) -> str:
    """A value as an error message shows it: as typed, or quoted when it holds line breaks or
    other unprintable characters (messages are one line; :func:`geneval.text.quote`)."""
    return quote(value)


def _convert(raw: Any, default: Any, *, where: str) -> Any:
    """``raw`` converted to the type of ``default``; strings are parsed as the CLI gives them."""
    is_number = isinstance(raw, int | float) and not isinstance(raw, bool)
    text = raw.strip() if isinstance(raw, str) else None
    if isinstance(default, bool):
        if isinstance(raw, bool):
            return raw
        if text is not None and text.lower() in _TRUE:
            return True
        if text is not None and text.lower() in _FALSE:
            return False
        raise InputError(f"{where}={_shown(raw)}: expected true or false")
    if isinstance(default, int):
        if is_number and float(raw).is_integer():
            return int(raw)
        try:
            return int(text)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            raise InputError(f"{where}={_shown(raw)}: expected an integer") from None
    if isinstance(default, float):
        if is_number:
            return float(raw)
        try:
            return float(text)  # type: ignore[arg-type]
        except (ValueError, TypeError):
            raise InputError(f"{where}={_shown(raw)}: expected a number") from None
    if isinstance(default, str):
        if text is None:
            raise InputError(f"{where}={_shown(raw)}: expected a string")
        return text
    if default is None and text is not None:  # untyped: a number if it parses as one
        for convert in (int, float):
            try:
                return convert(text)
            except ValueError:
                pass
        return text
    return raw


def declared_options(obj: object, attribute: str = "options") -> dict[str, Option]:
    """The :class:`Option` declarations of a plugin object: ``obj.options`` (a metric) or
    ``obj.train_options`` (a model family), a mapping of names to :class:`Option`.

    A declaration that is not an :class:`Option` is a ``TypeError`` naming the plugin and the
    option: plain default values carry no help, type or bounds.
    """
    options: dict[str, Option] = {}
    for name, option in getattr(obj, attribute).items():
        if not isinstance(option, Option):
            raise TypeError(
                f"{type(obj).__name__}.{attribute}[{name!r}] is a {type(option).__name__}, "
                "not a geneval Option"
            )
        options[name] = option
    return options


def split_assignment(text: str, *, flag: str = "--opt") -> tuple[str, str]:
    """``"a.b=c"`` → ``("a.b", "c")``; an :class:`InputError` when there is no ``=``."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InputError(f"{flag} {text!r}: expected KEY=VALUE")
    return key.strip(), value.strip()


def resolve_options(
    given: Mapping[str, Any],
    declared: Mapping[str, Option],
    *,
    owner: str,
    flag: str = "--opt",
    prefix: str = "",
) -> dict[str, Any]:
    """The full, validated option set: every declared default, updated by ``given``.

    ``given`` maps names to CLI strings or Python values. An unknown name, a value of the
    wrong type or a value out of bounds is an :class:`InputError` naming
    ``{flag} {prefix}{name}``.
    """
    out = {name: option.default for name, option in declared.items()}
    for key, raw in given.items():
        where = _option_name(flag, prefix, key)
        if key not in declared:
            known = ", ".join(sorted(declared)) or "none"
            raise InputError(f"{where}: {owner} has no option {key!r} (options: {known})")
        out[key] = declared[key].convert(raw, where=where)
    return out


def _option_name(flag: str, prefix: str, key: str) -> str:
    """How a message names option ``key``: ``--opt kid.subset_size`` on the command line, or
    ``options['kid']['subset_size']`` in the Python API (:func:`geneval.errors.option_setting`,
    for the options of a metric or the model, whose ``prefix`` is ``"OWNER."``)."""
    if flag == "--opt" and prefix.endswith("."):
        return option_setting(prefix[:-1], key)
    return f"{flag} {prefix}{key}"


def parse_assignments(assignments: Iterable[str], *, flag: str = "--opt") -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` (a later assignment wins)."""
    return dict(split_assignment(text, flag=flag) for text in assignments)


def parse_options(
    assignments: Iterable[str],
    declared: Mapping[str, Option],
    *,
    owner: str,
    flag: str = "--opt",
) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` strings against ``declared``: the full validated option set."""
    return resolve_options(
        parse_assignments(assignments, flag=flag), declared, owner=owner, flag=flag
    )


def parse_metric_options(
    assignments: Iterable[str] | Mapping[str, Mapping[str, Any]],
    metrics: Mapping[str, Any],
) -> dict[str, dict[str, Any]]:
    """Validated options of every requested metric.

    ``assignments`` are CLI strings ``METRIC.KEY=VALUE``, or (Python API) a mapping
    ``{metric: {key: value}}``. Returns, for each metric in ``metrics`` (name → Metric), its
    declared defaults updated with the given values.
    """
    chosen: dict[str, dict[str, Any]] = {name: {} for name in metrics}
    if isinstance(assignments, Mapping):
        for metric, values in assignments.items():
            if metric not in metrics:
                requested = ", ".join(metrics) or "none"
                raise InputError(f"options: metric {metric!r} is not requested ({requested})")
            if not isinstance(values, Mapping):
                raise InputError(f"options[{metric!r}]: expected a mapping of option values")
            chosen[metric].update(values)
    else:
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
            chosen[metric][option] = raw
    return {
        name: resolve_options(
            chosen[name],
            declared_options(metric),
            owner=f"metric {name}",
            prefix=f"{name}.",
        )
        for name, metric in metrics.items()
    }
