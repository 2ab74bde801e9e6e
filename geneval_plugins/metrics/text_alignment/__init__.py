"""``text_alignment`` (being written)."""

from __future__ import annotations
