"""What ``pip install`` gets: every package folder is listed, and the built wheel installs and
runs the main job offline, from its own files (not the source checkout)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OFFLINE = {"http_proxy": "http://127.0.0.1:9", "https_proxy": "http://127.0.0.1:9"}


def test_every_package_folder_is_listed_in_pyproject():
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]
    assert "package-dir" not in config["setuptools"]  # each folder is named as its package
    listed = set(config["setuptools"]["packages"])
    tops = {name.split(".")[0] for name in listed}
    found = set()
    for top in tops:
        for init in (ROOT / top).rglob("__init__.py"):
            found.add(".".join(init.parent.relative_to(ROOT).parts))
    assert found == listed, {"missing": found - listed, "stale": listed - found}
    roots = {p.parent.name for p in ROOT.glob("*/__init__.py")} - {"tests"}
    assert roots == tops, roots ^ tops  # no package folder outside the list


def _clean_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user's shell: no network, no source checkout on the path, an
    empty cache, bundled plugins only."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.update(OFFLINE, GENEVAL_CACHE=str(tmp_path / "cache"), GENEVAL_LOAD_PLUGINS="")
    env.update(PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1", OMP_NUM_THREADS="1")
    return env


def _check(args: list[str | Path], cwd: Path, env: dict[str, str]) -> str:
    done = subprocess.run(
        [str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def test_built_wheel_installs_and_runs_the_main_job_offline(tmp_path):
    """``python -m build`` (sdist, then the wheel from the sdist) gives a wheel that carries the
    bundled data and checkpoints; installed into a fresh venv without its dependencies
    (they come from this environment's site-packages, added as a plain path) it runs
    ``geneval run --model ddpm --metrics fid,kid`` offline, importing geneval from the venv."""
    pytest.importorskip("build")
    env = _clean_env(tmp_path)
    dist = tmp_path / "dist"
    # --no-isolation: the build backend (setuptools) comes from this environment, offline.
    _check([sys.executable, "-m", "build", "--no-isolation", "--outdir", dist, ROOT], ROOT, env)
    wheels = sorted(dist.glob("geneval-*.whl"))
    assert len(wheels) == 1, wheels
    assert len(sorted(dist.glob("geneval-*.tar.gz"))) == 1
    with zipfile.ZipFile(wheels[0]) as wheel:
        names = set(wheel.namelist())
    assert any(n.startswith("geneval_plugins/models/diffusion/") and n.endswith(".safetensors")
               for n in names), "the bundled DDPM checkpoint is not in the wheel"  # fmt: skip
    assert any(n.startswith("geneval_reference_stats/") and n.endswith(".npz") for n in names)
    assert not any(n.startswith("tests/") for n in names)

    venv = tmp_path / "venv"
    _check([sys.executable, "-m", "venv", venv], tmp_path, env)
    python = venv / "bin" / "python"
    _check([python, "-m", "pip", "install", "--no-deps", "--no-index", wheels[0]], tmp_path, env)
    # The dependencies: this environment's site-packages as a plain path line (its own .pth
    # files, among them the editable install of the checkout, are not processed). Added after
    # the install, so that pip never sees this environment's packages.
    site = Path(
        _check(
            [python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, env
        ).strip()  # fmt: skip
    )
    (site / "geneval-test-dependencies.pth").write_text(
        sysconfig.get_path("purelib") + "\n", encoding="utf-8"
    )

    work = tmp_path / "work"
    work.mkdir()
    where = _check([python, "-c", "import geneval; print(geneval.__file__)"], work, env).strip()
    assert Path(where).resolve().is_relative_to(venv.resolve()), where

    out = _check([venv / "bin" / "geneval", "run", "--model", "ddpm", "--metrics", "fid,kid"],
                 work, env)  # fmt: skip
    values = table_values(out)
    assert "kid" in values, out
    assert 0.0 < values["fid"] < 50.0, out


def table_values(out: str) -> dict[str, float]:
    """The ``metric value`` rows of the report table on stdout (first row of each metric)."""
    values: dict[str, float] = {}
    for line in out.splitlines():
        words = line.split()
        if len(words) >= 2 and words[0] not in values:
            try:
                values[words[0]] = float(words[1])
            except ValueError:
                continue
    return values
