"""The README's Use section runs as written, in an empty folder, from the bundled data."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "<!-- readme:use -->"


def use_commands() -> list[str]:
    """The shell lines of the code block that follows the ``readme:use`` marker."""
    lines = README.read_text(encoding="utf-8").splitlines()
    start = lines.index(MARKER) + 1
    assert lines[start].startswith("```")
    end = lines.index("```", start + 1)
    text = "\n".join(lines[start + 1 : end]).replace("\\\n", " ")
    return [line for line in text.splitlines() if line.strip()]


def test_use_section_names_no_placeholder_path():
    """Every file a command reads is bundled or written by an earlier command."""
    written: set[str] = set()
    for command in use_commands():
        words = shlex.split(command)
        assert words[0] == "geneval", command
        for flag in ("-o", "--json", "--html", "--markdown", "--junit"):
            if flag in words:
                written.add(words[words.index(flag) + 1])
        for flag in ("--samples", "--reference", "--checkpoint"):
            if flag in words:
                value = words[words.index(flag) + 1]
                assert value in written or value.startswith("digits"), (command, value)
        if words[1] == "compare":
            assert all(w in written for w in words[2:] if not w.startswith("-")), command


@pytest.mark.slow
def test_use_section_runs_as_written(tmp_path):
    """Each command of the Use section exits 0 in an empty folder, offline, and writes what
    the text says it writes."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["GENEVAL_CACHE"] = str(tmp_path / "cache")
    env.update(http_proxy="http://127.0.0.1:9", https_proxy="http://127.0.0.1:9")
    work = tmp_path / "work"
    work.mkdir()
    for command in use_commands():
        done = subprocess.run(
            ["bash", "-c", command], cwd=work, env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{command}\n{done.stdout}\n{done.stderr}"
        if command.startswith("geneval plugins"):
            assert "samplers: ddim (default)" in done.stdout
        if " --baseline " in command:
            assert "baseline: held-out digits:test" in done.stdout
    for name in ("samples.npz", "train-stats.npz", "run.json", "report.html", "report.md",
                 "report-grid.png", "report.xml", "fast.json", "my-rbm.safetensors"):  # fmt: skip
        assert (work / name).is_file(), name
    report = json.loads((work / "run.json").read_text())
    assert report["metric_info"]["fid"]["higher_is_better"] is False
