"""The official DINOv2 architecture (facebookresearch/dinov2) as a test reference.

The official code is on PyPI as ``dinov2==0.0.1.dev2``, a snapshot whose metadata pins
``torch==2.0.0``, ``xformers==0.0.18`` and ``cuml-cu11``, so it cannot be a dependency of the
test extra (the install would fail or downgrade torch). Its model code itself needs only torch
(xformers is optional and off here), so the README's test command installs it without its
dependencies (``pip install --no-deps dinov2==0.0.1.dev2``). The tests that need it skip,
saying so, where it is not installed.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest

DINOV2_REQUIREMENT = "dinov2==0.0.1.dev2"


def official_vision_transformer(cache: pytest.Cache | None = None) -> ModuleType:
    """``dinov2.models.vision_transformer`` from the official code (see the module docstring)."""
    os.environ.setdefault("XFORMERS_DISABLED", "1")
    try:
        return importlib.import_module("dinov2.models.vision_transformer")
    except ImportError as exc:
        pytest.skip(
            f"the official DINOv2 code is not installed (pip install --no-deps "
            f"{DINOV2_REQUIREMENT}): {exc}"
        )
