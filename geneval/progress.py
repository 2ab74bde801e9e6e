"""Progress of long loops: a bar on a terminal, plain lines in logs, nothing under ``--quiet``.

* stderr is a terminal: a tqdm bar, redrawn in place and removed when the loop ends.
* stderr is not a terminal (CI logs, files, pipes, notebooks): plain lines on stderr, so that
  long work is visible in a log without filling it. A loop prints nothing during its first
  :data:`INTERVAL` seconds (short work stays silent, and a command's output is unchanged);
  after that, at most one line per :data:`INTERVAL` seconds across all open loops, with the
  count done, the rate (count / elapsed seconds) and the ETA ((total − done) / rate)::

      geneval: samples: 12000/50000 img (24%), 41.3 img/s, ETA 15m20s

  and a stage (an outermost loop) that ran for :data:`INTERVAL` seconds or more ends with one
  line, unless it was left by an exception (an error prints only its own line)::

      geneval: samples: done, 50000 img in 20m10s (41.3 img/s)

* ``--quiet`` (:func:`set_quiet`): nothing at all.

The object :func:`progress_bar` returns is used as a context manager, with ``update(k)``,
``n``, ``total``, ``set_postfix(...)``, ``set_description(...)`` and ``close()`` in either
case, so callers need not know which one they got.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from tqdm.auto import tqdm

from geneval.text import visible

#: Seconds between two progress lines without a terminal (and before a loop's first line).
INTERVAL = 30.0

_quiet = False
#: The clock of the progress lines (monotonic seconds); tests replace it.
_clock: Callable[[], float] = time.monotonic
#: When the last progress line of this process was printed (None: none yet).
_last_line: float | None = None
#: The line-printing loops now open, outermost first (weak: a loop never closed is forgotten
#: with its object).
_open: list[weakref.ref[LineProgress]] = []


def _open_loops() -> list[LineProgress]:
    """The loops still open, outermost first (forgetting those that were dropped unclosed)."""
    alive = [loop for ref in _open if (loop := ref()) is not None and not loop.closed]
    _open[:] = [weakref.ref(loop) for loop in alive]
    return alive


def set_quiet(quiet: bool) -> None:
    """Silence (``True``) or allow (``False``) every progress bar and line of this process."""
    global _quiet, _last_line
    _quiet = quiet
    _last_line = None
    _open.clear()


def progress_enabled() -> bool:
    """Whether a progress bar should be drawn: not quiet and stderr is a terminal.

    Without a terminal, :func:`progress_bar` prints plain lines instead (see the module).
    """
    return not _quiet and sys.stderr.isatty()


def duration_text(seconds: float) -> str:
    """A duration as ``45s``, ``12m05s`` or ``2h03m10s`` (rounded to the second)."""
    total = max(0, round(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def _amount(value: float, unit: str) -> str:
    """``value`` counted in ``unit``: bytes in decimal units (``3.2 MB``), else as a number."""
    if unit == "B":
        for prefix in ("", "k", "M", "G"):
            if abs(value) < 1000:
                return f"{value:.0f} {prefix}B" if not prefix else f"{value:.1f} {prefix}B"
            value /= 1000
        return f"{value:.1f} TB"
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class LineProgress:
    """Progress of one loop as plain lines on stderr (see the module for when lines appear).

    It offers the part of tqdm's interface that loops use: a context manager, ``update``,
    ``n``, ``total``, ``desc``, ``set_postfix``, ``set_postfix_str``, ``set_description``,
    ``write``, ``refresh``, ``reset``, ``clear`` and ``close``.
    """

    disable = False

    def __init__(self, total: int | None = None, desc: str | None = None, unit: str = "it"):
        self.total = total
        self.desc = desc or ""
        self.unit = unit
        self.n: int | float = 0
        self.postfix = ""
        self.start = _clock()
        self.closed = False
        self.outermost = not _open_loops()
        _open.append(weakref.ref(self))

    # -- the tqdm interface ----------------------------------------------------------------
    def __enter__(self) -> LineProgress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close(failed=exc_type is not None)

    def update(self, n: int | float = 1) -> None:
        """Add ``n`` to the count; print a line when one is due (see the module)."""
        global _last_line
        self.n += n
        if _quiet or self.closed:
            return
        now = _clock()
        if now - self.start < INTERVAL:
            return
        if _last_line is not None and now - _last_line < INTERVAL:
            return
        _last_line = now
        self._print(self.status(now))

    def set_postfix(
        self, ordered_dict: dict[str, Any] | None = None, refresh: bool = True, **kwargs: Any
    ) -> None:
        """Values shown after the count (``loss=0.031``), as tqdm's ``set_postfix``."""
        items = {**(ordered_dict or {}), **kwargs}
        self.postfix = ", ".join(f"{key}={value}" for key, value in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """The text shown after the count, as given."""
        self.postfix = str(s)

    def set_description(self, desc: str | None = None, refresh: bool = True) -> None:
        """Rename the loop."""
        self.desc = visible(desc) if desc else ""

    set_description_str = set_description

    def write(self, s: str, file: Any = None, end: str = "\n") -> None:
        """Print a message line (as ``tqdm.write``)."""
        if not _quiet:
            print(s, file=file or sys.stderr, end=end, flush=True)

    def refresh(self) -> None:
        """Nothing to redraw: lines are printed when they are due."""

    def clear(self) -> None:
        """Nothing to clear: lines stay in the log."""

    def reset(self, total: int | None = None) -> None:
        """Start counting again from zero (with a new ``total`` when given)."""
        self.n = 0
        self.start = _clock()
        if total is not None:
            self.total = total

    def close(self, *, failed: bool = False) -> None:
        """End the loop: an outermost loop that ran :data:`INTERVAL` seconds or more and
        counted something prints its closing line, unless it ``failed``."""
        if self.closed:
            return
        self.closed = True
        _open_loops()
        if _quiet or failed or not self.outermost or not self.n:
            return
        elapsed = _clock() - self.start
        if elapsed >= INTERVAL:
            rate = self.n / elapsed
            word = self._unit_word()
            count = _amount(self.n, self.unit) + (f" {word}" if word else "")
            done = f"done, {count} in {duration_text(elapsed)} ({self._rate_text(rate)})"
            self._print(f"{self.desc}: {done}" if self.desc else done)

    # -- the lines -------------------------------------------------------------------------
    def _unit_word(self) -> str:
        return "" if self.unit == "B" else self.unit

    def _rate_text(self, rate: float) -> str:
        if self.unit == "B":
            return f"{_amount(rate, 'B')}/s"
        return f"{rate:.3g} {self.unit}/s"

    def status(self, now: float) -> str:
        """The periodic line: count done (of the total), rate and ETA, then the postfix."""
        elapsed = max(now - self.start, 1e-9)
        rate = self.n / elapsed
        word = self._unit_word()
        if self.total:
            text = f"{_amount(self.n, self.unit)}/{_amount(self.total, self.unit)}"
            text += f" {word}" if word else ""
            eta = duration_text((self.total - self.n) / rate) if rate > 0 else "unknown"
            text += f" ({100 * self.n / self.total:.0f}%), {self._rate_text(rate)}, ETA {eta}"
        else:
            text = _amount(self.n, self.unit) + (f" {word}" if word else "")
            text += f", {self._rate_text(rate)}, {duration_text(elapsed)} so far"
        if self.postfix:
            text += f", {self.postfix}"
        return f"{self.desc}: {text}" if self.desc else text

    @staticmethod
    def _print(line: str) -> None:
        print(f"geneval: {line}", file=sys.stderr, flush=True)


def progress_bar(
    total: int | None = None, desc: str | None = None, unit: str = "it"
) -> tqdm | LineProgress:
    """Progress of a loop on stderr: a tqdm bar on a terminal, plain lines otherwise (at most
    one per :data:`INTERVAL` seconds, after the loop's first :data:`INTERVAL` seconds), nothing
    under ``--quiet``.

    Use as a context manager and call ``update(k)``.
    """
    shown = None if desc is None else visible(desc)  # a path's ESC never reaches the terminal
    if not _quiet and not sys.stderr.isatty():
        return LineProgress(total=total, desc=shown, unit=unit)
    return tqdm(
        total=total,
        desc=shown,
        unit=unit,
        disable=not progress_enabled(),
        file=sys.stderr,
        dynamic_ncols=True,
        leave=False,
    )


def note(message: str) -> None:
    """Print a one-line summary to stderr (e.g. a training run's final loss) unless quiet.

    Unlike a progress bar it stays on the screen and is written without a terminal as well.
    """
    if not _quiet:
        print(visible(message), file=sys.stderr, flush=True)
