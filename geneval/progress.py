"""Progress bars for long loops: shown on a terminal, silent under ``--quiet`` or without a TTY."""

from __future__ import annotations

import sys

from tqdm.auto import tqdm

from geneval.text import visible

_quiet = False


def set_quiet(quiet: bool) -> None:
    """Silence (``True``) or allow (``False``) every progress bar of this process."""
    global _quiet
    _quiet = quiet


def progress_enabled() -> bool:
    """Whether a progress bar should be drawn: not quiet and stderr is a terminal."""
    return not _quiet and sys.stderr.isatty()


def progress_bar(total: int | None = None, desc: str | None = None, unit: str = "it") -> tqdm:
    """A tqdm bar on stderr that is disabled under ``--quiet`` or when stderr is not a TTY.

    Use as a context manager and call ``update(k)``.
    """
    return tqdm(
        total=total,
        desc=None if desc is None else visible(desc),  # a path's ESC never reaches the terminal
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
