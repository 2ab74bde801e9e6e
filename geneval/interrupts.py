"""Signals: SIGTERM ends a command as SIGINT does, commits that a signal cannot cut in half,
and ranks of ``geneval run --nproc`` that end with their launcher.

* :func:`sigterm_raises` — while a command runs, SIGTERM raises :class:`Terminated` in the main
  thread, as SIGINT raises :class:`KeyboardInterrupt`: ``finally`` blocks run, so temporary
  files and staging folders are removed and nothing is written (exit 143 = 128 + 15). A second
  SIGTERM ends the process at once.
* :func:`signals_deferred` — a few renames that put several outputs in place are not cut in
  half by SIGINT or SIGTERM: a signal that arrives meanwhile takes effect right after them.
* :func:`end_with_parent` — a rank started by the launcher ends when the launcher dies, even
  by SIGKILL: Linux delivers SIGTERM on the parent's death (``PR_SET_PDEATHSIG``), and a
  thread polls the parent's pid on every system (and, should the rank be stuck in a
  collective, ends it :data:`PARENT_GRACE_S` seconds later).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator

#: Exit status of a command ended by SIGINT (128 + 2) and by SIGTERM (128 + 15).
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143

#: Environment variable naming the launcher's pid in the ranks it starts.
PARENT_ENV = "GENEVAL_LAUNCHER_PID"

#: Seconds a rank whose launcher died has to end by itself before it is ended at once.
PARENT_GRACE_S = 3.0
#: How often the parent's pid is polled.
PARENT_POLL_S = 0.2

_PR_SET_PDEATHSIG = 1


class Terminated(BaseException):  # noqa: N818 - named like KeyboardInterrupt, its sibling
    """Raised in the main thread when the process receives SIGTERM (see :func:`sigterm_raises`).

    A :class:`BaseException`, like :class:`KeyboardInterrupt`: ``except Exception`` does not
    swallow it, ``finally`` blocks run.
    """


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block, SIGTERM raises :class:`Terminated` in the main thread; a second SIGTERM
    ends the process at once. The previous handler is restored afterwards. Nothing changes
    outside the main thread or where SIGTERM is ignored (as ``nohup``-like parents may set)."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: object) -> None:
        if received:  # the exit is under way and takes too long: end now
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        received.append(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Within the block, SIGINT and SIGTERM are recorded, not acted on; on leaving it they are
    raised again, so that the handlers in force (:class:`KeyboardInterrupt`,
    :class:`Terminated`) act right after the block. For short commits only (a few renames)."""
    if not _main_thread():
        yield
        return
    pending: list[int] = []

    def record(signum: int, frame: object) -> None:
        pending.append(signum)

    previous: dict[int, object] = {}
    for signum in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(signum)
        if handler is not signal.SIG_IGN and handler is not None:
            previous[signum] = signal.signal(signum, record)
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)  # type: ignore[arg-type]
        for signum in dict.fromkeys(pending):
            signal.raise_signal(signum)


def _set_parent_death_signal(signum: int) -> None:
    """Ask Linux to send ``signum`` to this process when its parent dies (no-op elsewhere)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0)
    except (OSError, AttributeError):  # no libc.prctl: the poll below does the work
        pass


def _watch_parent(parent_pid: int, grace_s: float) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_S)
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signal.SIGTERM)  # the main thread's Terminated, where it can run
    time.sleep(grace_s)
    os._exit(EXIT_TERMINATED)  # stuck (in a collective ...): end without further ado


def end_with_parent(parent_pid: int, *, grace_s: float = PARENT_GRACE_S) -> None:
    """End this process when process ``parent_pid`` (its launcher) is no longer its parent.

    SIGTERM is sent at once (by the kernel on Linux, else by a polling thread); if the process
    is still there ``grace_s`` seconds later it exits with :data:`EXIT_TERMINATED` at once.
    """
    _set_parent_death_signal(signal.SIGTERM)
    watcher = threading.Thread(
        target=_watch_parent, args=(parent_pid, grace_s), name="geneval-parent", daemon=True
    )
    watcher.start()  # also covers a parent that died before the death signal was set


def parent_from_environment() -> int | None:
    """The launcher's pid that ``geneval run --nproc`` put in this rank's environment (removed
    from the environment, so that processes this one starts do not inherit it), or ``None``."""
    value = os.environ.pop(PARENT_ENV, None)
    try:
        return int(value) if value else None
    except ValueError:
        return None
