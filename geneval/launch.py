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

GRACE_S = 30.0
EXIT_CODES = (0, 1, 2, 3)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (for the rendezvous of the ranks)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


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
        except BaseException:
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
            for proc in procs:
                proc.wait()
            raise
        return _verdict(codes, first_failed, logs)


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
            for proc in procs:
                if proc.poll() is None:
                    proc.terminate()
        time.sleep(0.05)


def _verdict(codes: list[int], first_failed: int | None, logs: list[Path]) -> int:
    """The launcher's exit code, printing the failing rank's line where rank 0 did not."""
    if all(code == codes[0] for code in codes) and codes[0] in EXIT_CODES:
        return codes[0]
    if first_failed is None:
        return max(codes)  # ranks ended with 0 and 1: a gate failed
    code = codes[first_failed]
    if code < 0:
        number = -code
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
