"""Processes that die with their parent, and SIGTERM treated as SIGINT (issue 21, item 3).

* SIGTERM to ``geneval run --nproc 2`` leaves no process and no output within 10 s; so does
  SIGKILL to the launcher (its ranks end with it).
* SIGTERM to ``geneval sample -o FOLDER`` (and to a plain ``run``) is exit 143, one line,
  and leaves the folder as it was: no staging folder, the earlier samples untouched.
* A staging folder a killed run left behind is recognised, named truthfully and removed by
  the next ``--force``.
* In-process: SIGTERM raises :class:`Terminated`; renames in a commit are not cut in half; the
  launcher forwards the signal, kills ranks that do not end, and maps their exit statuses.

The subprocess tests use bundled models (the ranks of ``--nproc`` load only installed
plugins) and wait on CPU time, not wall time, so that a loaded machine does not fail them.
"""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from geneval.interrupts import (
    EXIT_TERMINATED,
    Terminated,
    signals_deferred,
    sigterm_raises,
)
from geneval.io import SAMPLES_MANIFEST, STAGING_PREFIX

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads /proc to follow the ranks"
)


# -- helpers -----------------------------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GENEVAL_LOAD_PLUGINS="", GENEVAL_CACHE=str(tmp_path / "cache"), OMP_NUM_THREADS="1")
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    return env


def _stat_fields(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its reaper does not)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def _cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    if fields is None:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields = _stat_fields(int(entry.name))
            if fields is not None and int(fields[1]) == pid and fields[0] not in ("Z", "X"):
                found.append(int(entry.name))
    return sorted(found)


def _start(args: list[str], tmp_path: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "geneval", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(tmp_path),
        cwd=tmp_path,
        start_new_session=True,  # a signal the test sends reaches only whom it names
    )


def _wait_for(condition, limit: float, process: subprocess.Popen[str]) -> None:
    start = time.monotonic()
    while not condition():
        if process.poll() is not None:
            raise AssertionError(f"geneval ended early: {process.communicate()}")
        if time.monotonic() - start > limit:
            raise AssertionError("timed out waiting for geneval to get busy")
        time.sleep(0.1)


def _wait_ranks_busy(process: subprocess.Popen[str], count: int, cpu: float) -> list[int]:
    """The launcher's ranks, once ``count`` of them each used ``cpu`` seconds of CPU (past
    importing torch and joining the group: sampling)."""
    ranks: list[int] = []

    def busy() -> bool:
        ranks[:] = _children(process.pid)
        return len(ranks) == count and all(_cpu_seconds(pid) >= cpu for pid in ranks)

    _wait_for(busy, 240.0, process)
    return ranks


def _gone_within(pids: list[int], seconds: float) -> list[int]:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.05)
    return [pid for pid in pids if _alive(pid)]


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry below ``folder`` (hidden ones included) with its content's sha256."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def _kill_all(process: subprocess.Popen[str], pids: list[int]) -> None:
    for pid in [process.pid, *pids]:
        if _alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
    process.communicate()


NPROC_RUN = ["run", "--model", "ddpm", "--num-samples", "1000000", "--metrics", "fid"]
NPROC_RUN += ["--nproc", "2", "--oversubscribe", "--json", "report.json", "--html", "report.html"]
NPROC_RUN += ["--quiet"]


# -- the launcher and its ranks ----------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_to_the_launcher_leaves_no_rank_and_no_output(tmp_path, signum):
    """The acceptance test: the ranks are sampling; a signal to the launcher alone (not its
    process group) ends every rank within 10 s, and no report is written, then or later."""
    process = _start(NPROC_RUN, tmp_path)
    ranks: list[int] = []
    try:
        ranks = _wait_ranks_busy(process, 2, cpu=4.0)
        process.send_signal(signum)
        left = _gone_within([process.pid, *ranks], 10.0)
        assert left == [], f"still running 10 s after {signum.name}: {left}"
        _, stderr = process.communicate(timeout=10)
    finally:
        _kill_all(process, ranks)
    if signum == signal.SIGTERM:
        assert process.returncode == EXIT_TERMINATED, stderr
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert "geneval: terminated" in lines and "Traceback" not in stderr
    time.sleep(1.0)  # a rank that outlived its launcher would write its report about now
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == []


# -- a single process --------------------------------------------------------------------------


@pytest.mark.slow
def test_sigterm_to_run_is_exit_143_one_line_and_writes_nothing(tmp_path):
    process = _start(
        ["run", "--model", "ddpm", "--metrics", "fid", "--num-samples", "1000000",
         "--json", "report.json", "--quiet"],
        tmp_path,
    )  # fmt: skip
    try:
        _wait_for(lambda: _cpu_seconds(process.pid) >= 6.0, 240.0, process)
        process.send_signal(signal.SIGTERM)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        _kill_all(process, [])
    assert process.returncode == EXIT_TERMINATED, stderr
    assert [line for line in stderr.splitlines() if line.strip()] == ["geneval: terminated"]
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "cache") == []


def _sample(folder: Path, n: int, tmp_path: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "geneval", "sample", "--model", "vae", "-n", str(n), "-o",
         str(folder), "--quiet", *extra],
        capture_output=True, text=True, env=_env(tmp_path), timeout=300, check=False,
    )  # fmt: skip


def _staging(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name.startswith(STAGING_PREFIX))


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_a_signal_while_sample_writes_its_folder(tmp_path, signum):
    """SIGTERM while the PNGs are being written: exit 143, one line, the folder exactly as
    it was. SIGKILL cannot be handled: the staging folder it leaves is recognised as
    geneval's (not "geneval did not write"), and the next --force removes it."""
    folder = tmp_path / "samples"
    first = _sample(folder, 3, tmp_path)
    assert first.returncode == 0, first.stderr
    before = _snapshot(folder)
    process = _start(
        ["sample", "--model", "vae", "-n", "3000", "-o", folder, "--force", "--quiet"], tmp_path
    )
    try:
        _wait_for(lambda: any(len(os.listdir(s)) >= 20 for s in _staging(folder)), 240.0, process)
        process.send_signal(signum)
        _, stderr = process.communicate(timeout=30)
    finally:
        _kill_all(process, [])
    if signum == signal.SIGTERM:
        assert process.returncode == EXIT_TERMINATED, stderr
        assert [line for line in stderr.splitlines() if line.strip()] == ["geneval: terminated"]
        assert _snapshot(folder) == before
        return
    left = _staging(folder)
    assert len(left) == 1 and {k: v for k, v in _snapshot(folder).items() if "/" not in k and
                               not k.startswith(STAGING_PREFIX)} == before  # fmt: skip
    refused = _sample(folder, 2, tmp_path)
    assert refused.returncode == 2
    line = refused.stderr.strip()
    assert left[0].name in line and "interrupted" in line and "did not write" not in line
    replaced = _sample(folder, 2, tmp_path, "--force")
    assert replaced.returncode == 0, replaced.stderr
    assert sorted(os.listdir(folder)) == sorted(["000000.png", "000001.png", SAMPLES_MANIFEST])


# -- in-process: the handlers ------------------------------------------------------------------


def test_sigterm_raises_terminated_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(Terminated), sigterm_raises():
        signal.raise_signal(signal.SIGTERM)
        time.sleep(5)  # pragma: no cover - the handler raises before this returns
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_commit_is_not_cut_by_a_signal():
    """A signal during a commit takes effect right after it: every rename done, then
    Terminated (or KeyboardInterrupt for SIGINT)."""
    done = []
    with pytest.raises(Terminated), sigterm_raises():
        with signals_deferred():
            signal.raise_signal(signal.SIGTERM)
            done.append("first rename")
            signal.raise_signal(signal.SIGINT)
            done.append("second rename")
    assert done == ["first rename", "second rename"]
    with pytest.raises(KeyboardInterrupt), signals_deferred():
        signal.raise_signal(signal.SIGINT)
        done.append("third rename")
    assert done[-1] == "third rename"


def test_the_cli_maps_sigterm_to_exit_143_and_one_line(run_cli, monkeypatch):
    """Whatever the command was doing, SIGTERM is one line and exit 143, like SIGINT's 130."""
    import geneval.cli as cli

    def plugins_then_sigterm(*args, **kwargs):
        signal.raise_signal(signal.SIGTERM)
        time.sleep(5)  # pragma: no cover

    monkeypatch.setattr(cli, "get_registry", plugins_then_sigterm)
    res = run_cli("plugins")
    assert res.code == EXIT_TERMINATED
    assert res.err_lines == ["geneval: terminated"] and res.out == ""


_RANK_SCRIPT = """
import signal, sys, time
from geneval.interrupts import end_with_parent, sigterm_raises, Terminated
with sigterm_raises():
    end_with_parent(int(sys.argv[1]), grace_s=float(sys.argv[2]))
    if sys.argv[3] == "stuck":  # as in a collective: this thread runs no Python code
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    print("ready", flush=True)
    try:
        time.sleep(1000)
    except Terminated:
        print("terminated", flush=True)
        sys.exit(143)
"""

_PARENT_SCRIPT = """
import os, subprocess, sys
child = subprocess.Popen(
    [sys.executable, "-c", sys.argv[1], str(os.getpid()), *sys.argv[2:4]],
    stdout=open(sys.argv[4], "w"),
)
print(child.pid, flush=True)
sys.stdin.read()
"""


@pytest.mark.parametrize("state", ["running", "stuck"])
def test_a_rank_ends_when_its_launcher_is_killed(tmp_path, state):
    """SIGKILL to the parent: the child gets SIGTERM (Linux's parent-death signal, or the
    poll) and ends through Terminated, its ``finally`` blocks run; a child whose main thread
    cannot run Python (stuck in a collective) ends by itself after the grace period."""
    log = tmp_path / "child.log"
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT_SCRIPT, _RANK_SCRIPT, "1.0", state, str(log)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    child = int(parent.stdout.readline())
    try:
        deadline = time.monotonic() + 60
        while "ready" not in log.read_text() and time.monotonic() < deadline:
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        assert _gone_within([child], 5.0) == [], "the child outlived its parent"
    finally:
        if _alive(child):
            os.kill(child, signal.SIGKILL)
        parent.stdout.close()
        parent.stdin.close()
    expected = ["ready", "terminated"] if state == "running" else ["ready"]
    assert log.read_text().split() == expected


def test_the_poll_ends_a_process_whose_parent_is_already_gone(monkeypatch):
    """The poll is what ends a process whose launcher died before the death signal was set
    (and the only means off Linux): SIGTERM to itself, then, after the grace period, exit 143
    at once (run here in the test's thread, with the two system calls recorded)."""
    import geneval.interrupts as interrupts

    sent = []
    monkeypatch.setattr(interrupts.os, "kill", lambda pid, signum: sent.append((pid, signum)))
    monkeypatch.setattr(interrupts.os, "_exit", lambda code: sent.append(("exit", code)))
    interrupts._watch_parent(os.getppid() + 1_000_000, 0.01)
    monkeypatch.undo()
    assert sent == [(os.getpid(), signal.SIGTERM), ("exit", EXIT_TERMINATED)]


# -- in-process: the launcher ------------------------------------------------------------------


class _FakeRank:
    """A rank process that ends on a signal after ``delay`` seconds, or never (``None``)."""

    def __init__(self, delay: float | None) -> None:
        self.delay, self.code, self.signals, self.killed = delay, None, [], False
        self.at: float | None = None

    def poll(self):
        if self.code is None and self.at is not None and time.monotonic() >= self.at:
            self.code = 128 + self.signals[0]
        return self.code

    def send_signal(self, signum):
        self.signals.append(int(signum))
        if self.delay is not None and self.at is None:
            self.at = time.monotonic() + self.delay

    def kill(self):
        self.killed, self.code = True, -9

    def wait(self):
        return self.poll()


@pytest.mark.parametrize(
    "exc, signum", [(Terminated, signal.SIGTERM), (KeyboardInterrupt, signal.SIGINT)]
)
def test_the_launcher_forwards_the_signal_and_kills_stuck_ranks(monkeypatch, exc, signum):
    import geneval.launch as launch

    monkeypatch.setattr(launch, "STOP_GRACE_S", 0.3)
    ranks = [_FakeRank(0.0), _FakeRank(None)]  # rank 1 is stuck in a collective
    started = iter(ranks)
    monkeypatch.setattr(launch.subprocess, "Popen", lambda *a, **k: next(started))

    def interrupted(procs):
        raise exc()

    monkeypatch.setattr(launch, "_wait", interrupted)
    with pytest.raises(exc):
        launch.run_ranks(["run"], 2)
    assert [r.signals for r in ranks] == [[signum], [signum]]
    assert ranks[0].code == 128 + signum and not ranks[0].killed
    assert ranks[1].killed


def test_the_verdict_of_ranks_ended_by_a_signal(tmp_path, capsys):
    from geneval.launch import _verdict

    logs = [tmp_path / f"{r}.err" for r in range(2)]
    for log in logs:
        log.write_text("geneval: terminated\n")
    assert _verdict([143, 143], 0, logs) == 143  # the whole process group got SIGTERM
    assert _verdict([130, 130], 0, logs) == 130
    assert capsys.readouterr().err == ""
    assert _verdict([0, 143], 1, logs) == 3  # someone terminated rank 1 alone
    assert capsys.readouterr().err == "geneval: error: rank 1 was killed by signal SIGTERM\n"
