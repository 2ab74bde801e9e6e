"""The README runs as written: the Use section in an empty folder (and again in the same
folder), the training example with the FID the README promises, and the Python quick-start in
an empty folder; all offline, from the bundled data."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
USE, TRAIN, PYTHON = "<!-- readme:use -->", "<!-- readme:train -->", "<!-- readme:python -->"
#: Options after which a command names a file it writes.
WRITES = ("-o", "--json", "--html", "--markdown", "--junit")
#: What the Use section writes (the text below it names each of these).
USE_OUTPUTS = ("samples.npz", "train-stats.npz", "run.json", "report.html", "report.md",
               "report-grid.png", "report.xml", "fast.npz", "fast.json")  # fmt: skip


def blocks(marker: str) -> list[str]:
    """The code blocks that follow ``marker`` in README.md, each as its text."""
    lines = README.read_text(encoding="utf-8").splitlines()
    found = []
    for at in (i for i, line in enumerate(lines) if line == marker):
        assert lines[at + 1].startswith("```"), marker
        end = lines.index("```", at + 2)
        found.append("\n".join(lines[at + 2 : end]) + "\n")
    assert found, f"README.md has no block marked {marker}"
    return found


def commands(marker: str) -> list[str]:
    """The shell lines of the code block that follows ``marker`` (continuations joined, a
    trailing ``# comment`` kept: bash ignores it)."""
    (text,) = blocks(marker)
    return [line for line in text.replace("\\\n", " ").splitlines() if line.strip()]


def offline_env(tmp: Path) -> dict[str, str]:
    """A user's shell with the environment active: this interpreter's ``geneval`` first on
    PATH, no network, an empty cache, bundled plugins only."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(GENEVAL_CACHE=str(tmp / "cache"), GENEVAL_LOAD_PLUGINS="")
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    env.pop("PYTHONPATH", None)
    return env


def run_commands(lines: list[str], work: Path, env: dict[str, str]) -> dict[str, str]:
    """Run each line with bash in ``work``; each must exit 0. Returns stdout by command."""
    out = {}
    for command in lines:
        done = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        out[command] = done.stdout
    return out


def first_value(out: str, metric: str) -> float:
    """The value of ``metric`` in the report table printed on stdout."""
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] == metric:
            try:
                return float(words[1])
            except ValueError:
                continue
    raise AssertionError(f"no {metric} row in\n{out}")


def test_use_and_train_sections_name_no_placeholder_path():
    """Every file a command reads is bundled or written by an earlier command, and every
    command that writes a file says ``--force``, so that the section runs again as written."""
    written: set[str] = set()
    for command in commands(USE) + commands(TRAIN):
        words = shlex.split(command, comments=True)
        assert words[0] == "geneval", command
        if any(flag in words for flag in WRITES):
            assert "--force" in words, command
        for flag in WRITES:
            if flag in words:
                written.add(words[words.index(flag) + 1])
        for flag in ("--samples", "--reference", "--checkpoint"):
            if flag in words:
                value = words[words.index(flag) + 1]
                assert value in written or value.startswith("digits"), (command, value)
        if words[1] == "compare":
            assert all(w in written for w in words[2:] if not w.startswith("-")), command
    assert {name for name in USE_OUTPUTS if "-grid" not in name} <= written


def check_use_outputs(work: Path, out: dict[str, str]) -> None:
    for name in USE_OUTPUTS:
        assert (work / name).is_file(), name
    for command, stdout in out.items():
        if command.startswith("geneval plugins"):
            assert "samplers: ddim (default)" in stdout
        if " --baseline " in command:
            assert "baseline: held-out digits:test" in stdout
    run = json.loads((work / "run.json").read_text())
    assert run["metric_info"]["fid"]["higher_is_better"] is False
    # the bundled DDPM's 1000 samples come close to the digits (FID ≈ 2 with digits-cnn);
    # 10 DDIM steps instead of 50 cost little
    assert 0.0 < run["metrics"]["fid"]["value"] < 12.0
    fast = json.loads((work / "fast.json").read_text())
    assert 0.0 < fast["metrics"]["fid"]["value"] < 30.0


@pytest.fixture(scope="module")
def use_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """An empty folder in which the Use section ran once; its stdout by command."""
    tmp = tmp_path_factory.mktemp("readme-use")
    work = tmp / "work"
    work.mkdir()
    return work, run_commands(commands(USE), work, offline_env(tmp))


def test_use_section_runs_as_written(use_folder):
    """Each command of the Use section exits 0 in an empty folder, offline, and writes what
    the text says it writes."""
    work, out = use_folder
    check_use_outputs(work, out)


@pytest.mark.slow
def test_use_section_runs_again_in_the_same_folder(use_folder):
    """Running the Use section a second time in the same folder replaces its outputs."""
    work, _ = use_folder
    before = {name: (work / name).stat().st_mtime_ns for name in USE_OUTPUTS}
    out = run_commands(commands(USE), work, offline_env(work.parent))
    check_use_outputs(work, out)
    after = {name: (work / name).stat().st_mtime_ns for name in USE_OUTPUTS}
    assert all(after[name] > before[name] for name in USE_OUTPUTS), (before, after)


def stated_fid_range() -> tuple[float, float]:
    """The FID range the README promises for its training example ("FID between A and B")."""
    text = " ".join(README.read_text(encoding="utf-8").split())
    found = re.search(r"expect an FID between ([\d.]+) and ([\d.]+)", text)
    assert found, "README.md states no FID range for the training example"
    return float(found[1]), float(found[2])


@pytest.mark.slow
def test_train_section_reaches_the_stated_fid(tmp_path):
    """The training example runs as written, offline, and its FID lies in the stated range."""
    low, high = stated_fid_range()
    work = tmp_path / "work"
    work.mkdir()
    out = run_commands(commands(TRAIN), work, offline_env(tmp_path))
    scored = [stdout for command, stdout in out.items() if " --checkpoint " in command]
    assert len(scored) == 1
    fid = first_value(scored[0], "fid")
    assert low <= fid <= high, (fid, low, high)
    assert (work / "my-rbm.safetensors").is_file() and (work / "my-rbm-grid.png").is_file()


def test_python_quick_start_runs_as_written(tmp_path):
    """Each Python block of the quick-start runs as written in an empty folder, offline, and
    prints the FID it promises."""
    first, loop = blocks(PYTHON)
    outputs = []
    for number, code in enumerate((first, loop)):
        work = tmp_path / f"empty-{number}"
        work.mkdir()
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=work,
            env=offline_env(tmp_path / f"home-{number}"),
            capture_output=True,
            text=True,
        )
        assert done.returncode == 0, f"{code}\n{done.stdout}\n{done.stderr}"
        assert sorted(p.name for p in work.iterdir()) == []  # it writes nothing
        outputs.append(done.stdout.split())
    fid, passed = outputs[0]
    assert 0.0 < float(fid) < 12.0 and passed == "True", outputs[0]
    steps = outputs[1]
    assert steps[0::2] == ["0", "1", "2"], steps
    # real digit images (of which digits:train is a part) against digits:train: a few units,
    # FID's bias at small n (the 270 held-out digits:test images give 3.6)
    assert all(0.0 < float(v) < 10.0 for v in steps[1::2]), steps
