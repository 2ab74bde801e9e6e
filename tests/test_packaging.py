"""Every Python package folder of the source tree is installed (pyproject.toml lists them)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


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
