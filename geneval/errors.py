"""Error types that map onto the CLI's exit codes (DESIGN §3).

* :class:`InputError` — bad usage or bad input: one line naming the culprit, exit code 2.
* :class:`PluginError` — a metric or model plugin raised: reported, exit code 3.
"""

from __future__ import annotations


class InputError(Exception):
    """Bad usage or bad input. The message is one line that names the culprit (exit code 2)."""


class PluginError(Exception):
    """A plugin raised while computing; wraps the original exception (exit code 3)."""


def warn(message: str) -> None:
    """Print a one-line warning on stderr (``geneval: warning: ...``)."""
    import sys

    print(f"geneval: warning: {message}".splitlines()[0], file=sys.stderr)
