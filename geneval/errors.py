"""Errors and warnings, as the CLI and the Python API report them.

* :class:`InputError` — bad usage or bad input: one line naming the culprit (CLI exit 2).
  A user string in it (a path, an option value) is written through
  :func:`geneval.text.quote`, so that a line break or an escape sequence in it shows as an
  escape; the command line prints the message through :func:`geneval.text.visible` as well.
* :func:`warn` — a one-line caveat about the run (a statistics file of unknown provenance, a
  resized reference ...). Warnings are Python warnings of class :class:`GenevalWarning`;
  :func:`captured_warnings` collects them, and those of torch, PIL and the plugins, into the
  report rather than letting them interleave with the output.
* :func:`setting` and :func:`option_setting` — how a message names a setting: in the command
  line's terms (``--reference``, ``--opt kid.subset_size``) or, inside the Python API
  (:func:`surface`), in Python's (``reference=``, ``options['kid']['subset_size']``).
  This is the one place where the phrasing depends on the surface.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from contextvars import ContextVar

from geneval.text import visible


class InputError(Exception):
    """Bad usage or bad input. The message is one line that names the culprit (exit code 2)."""


class RankError(RuntimeError):
    """A step failed on another rank of a sharded run with an error that is not bad input
    (exit 3); raised by :func:`geneval.distributed.agree`."""


class GenevalWarning(UserWarning):
    """A caveat about a run's inputs or numbers, shown in its report."""


def warn(message: str) -> None:
    """Emit a one-line :class:`GenevalWarning` (collected into the report of the run). A line
    break or control character in it (from a path, say) is shown as an escape
    (:func:`geneval.text.visible`) rather than cutting the warning short."""
    warnings.warn(visible(message), GenevalWarning, stacklevel=2)


#: The surface a message speaks to: ``"cli"`` (the default) or ``"python"``.
SURFACES = ("cli", "python")
_SURFACE: ContextVar[str] = ContextVar("geneval_surface", default="cli")


@contextlib.contextmanager
def surface(name: str) -> Iterator[None]:
    """Inside the block, messages name settings in the terms of ``name``: ``"python"`` (the
    Python API: :func:`geneval.evaluate`, :class:`geneval.Evaluator`) or ``"cli"``. The
    surface is a context variable, so threads and nested calls each keep their own."""
    if name not in SURFACES:
        raise ValueError(f"unknown surface {name!r} (one of {', '.join(SURFACES)})")
    token = _SURFACE.set(name)
    try:
        yield
    finally:
        _SURFACE.reset(token)


def current_surface() -> str:
    """``"cli"`` or ``"python"``: the surface messages are phrased for now."""
    return _SURFACE.get()


def setting(name: str) -> str:
    """How a message names the run setting ``name`` (a keyword of :func:`geneval.evaluate`,
    e.g. ``reference``, ``batch_size``): ``--reference``, ``--batch-size`` on the command
    line; ``reference=``, ``batch_size=`` in Python."""
    if _SURFACE.get() == "python":
        return f"{name}="
    return "--" + name.replace("_", "-")


def option_setting(owner: str, key: str) -> str:
    """How a message names option ``key`` of metric (or ``model``) ``owner``:
    ``--opt kid.subset_size`` on the command line, ``options['kid']['subset_size']`` in
    Python (where :func:`geneval.evaluate` takes ``options={"kid": {"subset_size": ...}}``)."""
    if _SURFACE.get() == "python":
        return f"options[{owner!r}][{key!r}]"
    return f"--opt {owner}.{key}"


def _describe(record: warnings.WarningMessage) -> str:
    lines = str(record.message).strip().splitlines()
    text = lines[0] if lines else ""
    if issubclass(record.category, GenevalWarning) or not text:
        return text
    return f"{record.category.__name__}: {text}"


class WarningLog:
    """The warnings caught by :func:`captured_warnings`, as one-line strings."""

    def __init__(self, caught: list[warnings.WarningMessage]) -> None:
        self._caught = caught
        self._seen: set[str] = set()

    def drain(self) -> list[str]:
        """The warnings caught since the last call, in order, each distinct text once."""
        out = []
        for record in self._caught:
            text = _describe(record)
            if text and text not in self._seen:
                self._seen.add(text)
                out.append(text)
        self._caught.clear()
        return out


@contextlib.contextmanager
def captured_warnings() -> Iterator[WarningLog]:
    """Catch every warning raised inside the block (instead of printing it); read them with
    :meth:`WarningLog.drain`."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield WarningLog(caught)
