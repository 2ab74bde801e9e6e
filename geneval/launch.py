"""``geneval run --nproc N``: start N ranks on this machine and pass their verdict through.

torchrun turns any rank's failure into its own exit 1 and a page of output. ``--nproc`` starts
the ranks itself, as ``python -m geneval run ...`` with the variables torchrun would set
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``LOCAL_WORLD_SIZE``, ``MASTER_ADDR=127.0.0.1``, a free
``MASTER_PORT``) and, unless already set, ``OMP_NUM_THREADS`` = cores / N so the ranks do not
oversubscribe the CPU. Rank 0 prints and writes the reports; the launcher exits with geneval's
own codes (0, 1, 2, 3) and shows one-line errors:

* every rank ends with the same code (the usual case: errors are agreed on by all ranks, see
  :func:`geneval.distributed.agree`) — that code; rank 0 has already printed its line;
* otherwise the first rank that failed differently: its last error line and its code; a rank
  killed by a signal (out of memory ...) is exit 3 naming the rank and the signal.

A rank that fails alone leaves the others waiting in a collective; they are stopped
:data:`GRACE_S` seconds after the first failure.

The ranks live and die with the launcher:

* SIGTERM and SIGINT to the launcher are forwarded to the ranks (each ends as that signal
  ends a command: exit 143 or 130, nothing written); a rank still there
  :data:`STOP_GRACE_S` seconds later (stuck in a collective) is killed. The launcher then
  exits 143 or 130 itself.
* A rank ends when the launcher dies, even by SIGKILL (:func:`geneval.interrupts.end_with_parent`:
  a parent-death signal on Linux, a poll of the parent's pid elsewhere).
* ``--nproc`` is at most the cores this process may run on (:func:`check_nproc`), unless
  ``--oversubscribe`` is given.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from geneval.distributed import LAUNCHED_ENV
from geneval.errors import InputError
from geneval.interrupts import EXIT_INTERRUPTED, EXIT_TERMINATED, PARENT_ENV

GRACE_S = 30.0
#: Seconds the ranks have to end after a forwarded signal before they are killed.
STOP_GRACE_S = 3.0
EXIT_CODES = (0, 1, 2, 3)
#: Exit statuses of a rank that SIGINT or SIGTERM ended (see :mod:`geneval.interrupts`).
SIGNAL_EXITS = {EXIT_INTERRUPTED: signal.SIGINT, EXIT_TERMINATED: signal.SIGTERM}


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the rendezvous of the ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def check_nproc(nproc: int, *, oversubscribe: bool) -> None:
    """Refuse (exit 2) more ranks than the cores this process may run on, unless
    ``oversubscribe``: each rank is a whole Python process with its own copy of the models."""
    cores = _cores()
    if nproc > cores and not oversubscribe:
        raise InputError(
            f"--nproc {nproc}: at most {cores}, the CPU cores this process may use "
            "(--oversubscribe starts more ranks than cores)"
        )


def rank_environment(rank: int, nproc: int, port: int) -> dict[str, str]:
    """The environment of rank ``rank`` of ``nproc`` (torchrun's variables, one node)."""
    env = dict(os.environ)
    env.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        GROUP_RANK="0",
        WORLD_SIZE=str(nproc),
        LOCAL_WORLD_SIZE=str(nproc),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    env[LAUNCHED_ENV] = "1"
    env[PARENT_ENV] = str(os.getpid())
    env.setdefault("OMP_NUM_THREADS", str(max(1, _cores() // nproc)))
    return env


def _last_line(path: Path) -> str:
    try:
        lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return ""
    errors = [line for line in lines if line.startswith("geneval: error")]
    return (errors or lines or [""])[-1]


def run_ranks(argv: Sequence[str], nproc: int) -> int:
    """Run ``geneval ARGV`` as ``nproc`` ranks; returns the exit code (module docstring)."""
    port = free_port()
    logs: list[Path] = []
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="geneval-ranks-") as tmp:
        try:
            for rank in range(nproc):
                log = Path(tmp) / f"rank{rank}.err"
                logs.append(log)
                with open(log, "wb") as err:
                    procs.append(
                        subprocess.Popen(
                            [sys.executable, "-m", "geneval", *argv],
                            env=rank_environment(rank, nproc, port),
                            stdout=None if rank == 0 else subprocess.DEVNULL,
                            stderr=None if rank == 0 else err,
                        )
                    )
            codes, first_failed = _wait(procs)
        except BaseException as exc:
            # SIGINT, SIGTERM (Terminated) or an error here: the ranks end too, as that signal
            # ends them (nothing written), or by SIGKILL when they do not in time.
            stop = signal.SIGINT if isinstance(exc, KeyboardInterrupt) else signal.SIGTERM
            _stop(procs, stop)
            raise
        return _verdict(codes, first_failed, logs)


def _stop(procs: list[subprocess.Popen[bytes]], signum: int) -> None:
    """Send ``signum`` to the ranks still running, wait :data:`STOP_GRACE_S` seconds for them
    to end, then kill those that have not; returns once none is left."""
    for proc in procs:
        if proc.poll() is None:
            try:
                proc.send_signal(signum)
            except OSError:
                pass
    deadline = time.monotonic() + STOP_GRACE_S
    while time.monotonic() < deadline and any(proc.poll() is None for proc in procs):
        time.sleep(0.02)
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def _wait(procs: list[subprocess.Popen[bytes]]) -> tuple[list[int], int | None]:
    """Wait for every rank; returns their codes and the first rank that failed with a code
    other than 0 or 1 (``None`` if none did). The others are stopped :data:`GRACE_S` seconds
    after that failure."""
    first_failed: int | None = None
    failed_at = 0.0
    while True:
        codes = [proc.poll() for proc in procs]
        if first_failed is None:
            for rank, code in enumerate(codes):
                if code not in (None, 0, 1):
                    first_failed, failed_at = rank, time.monotonic()
                    break
        if all(code is not None for code in codes):
            return [int(code) for code in codes if code is not None], first_failed
        if first_failed is not None and time.monotonic() - failed_at > GRACE_S:
            _stop(procs, signal.SIGTERM)
        time.sleep(0.05)


def _verdict(codes: list[int], first_failed: int | None, logs: list[Path]) -> int:
    """The launcher's exit code, printing the failing rank's line where rank 0 did not."""
    if all(code == codes[0] for code in codes) and codes[0] in (*EXIT_CODES, *SIGNAL_EXITS):
        return codes[0]  # (every rank got the signal: a terminal's Ctrl-C, a process group's)
    if first_failed is None:
        return max(codes)  # ranks ended with 0 and 1: a gate failed
    code = codes[first_failed]
    if code < 0 or code in SIGNAL_EXITS:
        number = -code if code < 0 else int(SIGNAL_EXITS[code])
        name = signal.Signals(number).name if number in set(signal.Signals) else str(number)
        _echo(f"geneval: error: rank {first_failed} was killed by signal {name}")
        return 3
    if first_failed > 0:
        line = _last_line(logs[first_failed])
        if not line.startswith("geneval: error: rank"):
            line = f"geneval: error: rank {first_failed}: {line or f'exit code {code}'}"
        _echo(line)
    return code if code in EXIT_CODES else 3


def _echo(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
