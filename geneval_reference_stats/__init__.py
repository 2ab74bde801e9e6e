"""Shipped reference statistics (``.npz``), found by dataset, split and extractor name."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path


def shipped_stats_path(dataset: str, split: str, extractor: str) -> Path | None:
    """The shipped statistics file ``{dataset}-{split}-{extractor}.npz``, or ``None``."""
    candidate = files(__name__) / f"{dataset}-{split}-{extractor}.npz"
    path = Path(str(candidate))
    return path if path.is_file() else None
