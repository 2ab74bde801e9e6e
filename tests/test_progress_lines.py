"""Progress without a terminal: plain lines on stderr, at most one per 30 s, none when quiet.

Time is a fake clock (``geneval.progress._clock``), never real sleeping.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
import pytest

from geneval import progress
from geneval.progress import INTERVAL, LineProgress, duration_text, progress_bar, set_quiet

LINE = re.compile(
    r"^geneval: (?P<desc>[^:]+): (?P<n>\d+)/(?P<total>\d+) (?P<unit>\S+) \((?P<pct>\d+)%\), "
    r"(?P<rate>[0-9.e+-]+) \S+/s, ETA (?P<eta>\S+)"
)


class FakeClock:
    """A clock that moves only when told to (``step`` seconds per reading, if set)."""

    def __init__(self, step: float = 0.0) -> None:
        self.now = 1000.0
        self.step = step
        self.readings: list[float] = []

    def __call__(self) -> float:
        self.now += self.step
        self.readings.append(self.now)
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    fake = FakeClock()
    monkeypatch.setattr(progress, "_clock", fake)
    set_quiet(False)
    yield fake
    set_quiet(False)


def _lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith("geneval: ")]


def test_duration_text() -> None:
    assert duration_text(0) == "0s"
    assert duration_text(59.4) == "59s"
    assert duration_text(125) == "2m05s"
    assert duration_text(3600 + 3 * 60 + 10) == "1h03m10s"


def test_long_loop_prints_counted_lines_at_most_every_interval(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    total = 500
    with progress_bar(total=total, desc="samples", unit="img") as bar:
        assert isinstance(bar, LineProgress)  # stderr is captured: not a terminal
        for _ in range(total):
            clock.now += 1.0  # one image per second
            bar.update(1)
    lines = _lines(capsys.readouterr().err)
    periodic = [LINE.match(line) for line in lines[:-1]]
    assert all(periodic), lines
    # The first line comes at the first update 30 s after the start, then every 30 s: images
    # 30, 60, ..., 480 (one image per second, so n equals the seconds elapsed).
    assert [int(m["n"]) for m in periodic] == list(range(30, total, 30))
    for m in periodic:
        n = int(m["n"])
        assert int(m["total"]) == total and m["unit"] == "img" and m["desc"] == "samples"
        assert int(m["pct"]) == round(100 * n / total)
        assert float(m["rate"]) == pytest.approx(1.0)  # n images in n seconds
        assert m["eta"] == duration_text(total - n)  # (total − n) / rate
    assert lines[-1] == "geneval: samples: done, 500 img in 8m20s (1 img/s)"


def test_lines_are_throttled_by_wall_time_not_by_updates(
    clock: FakeClock, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stamps = []
    real_print = LineProgress._print

    def stamped(line: str) -> None:
        stamps.append(clock.now)
        real_print(line)

    monkeypatch.setattr(LineProgress, "_print", staticmethod(stamped))
    with progress_bar(total=10_000, desc="pass", unit="img") as bar:
        for step in range(10_000):
            clock.now += 0.37 if step % 7 else 4.1  # uneven batches
            bar.update(1)
    elapsed = clock.now - 1000.0
    periodic = stamps[:-1]  # the last one is the closing line
    assert len(periodic) >= 1
    assert periodic[0] - 1000.0 >= INTERVAL
    assert all(b - a >= INTERVAL for a, b in zip(periodic, periodic[1:], strict=False))
    assert len(periodic) <= elapsed // INTERVAL
    assert len(_lines(capsys.readouterr().err)) == len(stamps)


def test_short_loop_quiet_and_failed_loops_print_nothing(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with progress_bar(total=100, desc="short", unit="img") as bar:
        for _ in range(100):
            clock.now += 0.29  # 29 s in all: under the interval
            bar.update(1)
    assert capsys.readouterr().err == ""

    set_quiet(True)
    with progress_bar(total=100, desc="quiet", unit="img") as bar:
        for _ in range(100):
            clock.now += 10
            bar.update(1)
    assert capsys.readouterr().err == ""
    set_quiet(False)

    with pytest.raises(RuntimeError), progress_bar(total=100, desc="fails", unit="img") as bar:
        for _ in range(10):
            clock.now += 10
            bar.update(1)
        raise RuntimeError("broken")
    lines = _lines(capsys.readouterr().err)
    assert lines and all("done" not in line for line in lines)  # no closing line after an error


def test_nested_loops_share_the_throttle_and_only_the_stage_closes(
    clock: FakeClock, capsys: pytest.CaptureFixture[str]
) -> None:
    with progress_bar(total=4, desc="samples", unit="img") as outer:
        for _ in range(4):
            with progress_bar(total=100, desc="sampling", unit="step") as inner:
                for _ in range(100):
                    clock.now += 0.5  # 50 s per inner loop
                    inner.update(1)
            outer.update(1)
    lines = _lines(capsys.readouterr().err)
    # 200 s in all: at most 6 periodic lines, and one closing line for the outer stage only.
    assert 1 <= len(lines) - 1 <= 6
    assert lines[-1] == "geneval: samples: done, 4 img in 3m20s (0.02 img/s)"
    assert not any("sampling: done" in line for line in lines)


def test_bytes_and_unknown_total(clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
    with progress_bar(total=None, desc="stats.npz", unit="B") as bar:
        for _ in range(4):
            clock.now += 20
            bar.update(3_000_000)
    lines = _lines(capsys.readouterr().err)
    assert lines == [
        "geneval: stats.npz: 6.0 MB, 150.0 kB/s, 40s so far",
        "geneval: stats.npz: 12.0 MB, 150.0 kB/s, 1m20s so far",
        "geneval: stats.npz: done, 12.0 MB in 1m20s (150.0 kB/s)",
    ]


def test_terminal_gets_the_tqdm_bar(monkeypatch: pytest.MonkeyPatch) -> None:
    from tqdm.auto import tqdm

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True, raising=False)
    set_quiet(False)
    with progress_bar(total=3, desc="x") as bar:
        assert isinstance(bar, tqdm) and not bar.disable
    set_quiet(True)
    with progress_bar(total=3, desc="x") as bar:
        assert isinstance(bar, tqdm) and bar.disable
    set_quiet(False)


def test_postfix_and_interface(clock: FakeClock, capsys: pytest.CaptureFixture[str]) -> None:
    bar = progress_bar(total=10, desc="train", unit="step")
    clock.now += 31
    bar.set_postfix(loss="0.031", refresh=False)
    bar.update(5)
    assert bar.n == 5
    bar.close()
    bar.close()  # closing twice prints once
    assert _lines(capsys.readouterr().err) == [
        "geneval: train: 5/10 step (50%), 0.161 step/s, ETA 31s, loss=0.031",
        "geneval: train: done, 5 step in 31s (0.161 step/s)",
    ]


@pytest.mark.parametrize("quiet", [False, True])
def test_cli_run_without_terminal_prints_progress_lines(
    quiet: bool, run_cli, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A real command whose feature pass lasts 20 fake seconds per batch: lines on stderr
    (which is not a terminal under capture), at most one per 30 s; none under --quiet."""
    fake = FakeClock(step=10.0)  # every reading of the clock is 10 s later
    monkeypatch.setattr(progress, "_clock", fake)
    stamps: list[float] = []
    real_print = LineProgress._print

    def stamped(line: str) -> None:
        stamps.append(fake.now)
        real_print(line)

    monkeypatch.setattr(LineProgress, "_print", staticmethod(stamped))
    out = tmp_path / "digits.npz"
    args = ["stats", "digits:train", "-o", out, "--batch-size", "128", "--no-cache"]
    res = run_cli(*args, *(["--quiet"] if quiet else []))
    assert res.code == 0, res.err
    with np.load(out) as stats:
        assert int(stats["n"]) == 1257
    lines = _lines(res.err)
    lines = [line for line in lines if not line.startswith("geneval: warning")]
    if quiet:
        assert lines == []
        return
    # 1257 images in batches of 128: 10 updates, 10 s of fake time each, 100 s in all.
    periodic = [LINE.match(line) for line in lines[:-1]]
    assert periodic and all(periodic), lines
    assert lines[-1].startswith("geneval: ") and ": done, 1257 img in " in lines[-1]
    assert all(int(m["total"]) == 1257 and m["unit"] == "img" for m in periodic)
    times = stamps[: len(periodic)]
    assert all(b - a >= INTERVAL for a, b in zip(times, times[1:], strict=False))
    assert len(periodic) <= (fake.now - fake.readings[0]) // INTERVAL
