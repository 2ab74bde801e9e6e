"""The official DINOv2 architecture (facebookresearch/dinov2) as a test reference.

The official code is on PyPI as ``dinov2==0.0.1.dev2``, a snapshot whose metadata pins
``torch==2.0.0``, ``xformers==0.0.18`` and ``cuml-cu11``, so it cannot be a dependency of the
test extra (the install would fail or downgrade torch). Its model code itself needs only torch
(xformers is optional and off here), so the tests import it without its dependencies:

1. from an installed ``dinov2`` package if there is one (``pip install --no-deps
   dinov2==0.0.1.dev2``), else
2. from the pinned wheel, fetched once with ``pip download --no-deps`` into pytest's cache
   directory, checked against its sha256 and imported in place (a wheel is a zip archive,
   which Python imports from directly).

The tests that need it are skipped, saying why, when neither is possible (no registry).
"""

from __future__ import annotations

import hashlib
import importlib
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

DINOV2_REQUIREMENT = "dinov2==0.0.1.dev2"
DINOV2_WHEEL = "dinov2-0.0.1.dev2-py3-none-any.whl"
DINOV2_WHEEL_SHA256 = "d23754838b9d415233e1df1d5c2bf8f418d0e6654390f271ba46be389a5652cb"


def _fetch_wheel(folder: Path) -> Path:
    wheel = folder / DINOV2_WHEEL
    if not wheel.is_file():
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            "--dest",
            str(folder),
            DINOV2_REQUIREMENT,
        ]
        done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
        if done.returncode != 0 or not wheel.is_file():
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            pytest.skip(f"the official DINOv2 code ({DINOV2_REQUIREMENT}) is unavailable: {last}")
    digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
    if digest != DINOV2_WHEEL_SHA256:
        wheel.unlink()
        pytest.fail(f"{DINOV2_WHEEL}: sha256 {digest} is not the pinned {DINOV2_WHEEL_SHA256}")
    return wheel


def official_vision_transformer(cache: pytest.Cache) -> ModuleType:
    """``dinov2.models.vision_transformer`` from the official code (see the module docstring)."""
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    try:
        return importlib.import_module("dinov2.models.vision_transformer")
    except ImportError:
        pass
    wheel = _fetch_wheel(cache.mkdir("dinov2-official"))
    sys.path.append(str(wheel))
    importlib.invalidate_caches()
    return importlib.import_module("dinov2.models.vision_transformer")
