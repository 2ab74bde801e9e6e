"""``geneval references list``: the named references the installed plugins resolve.

A named reference is what ``--reference NAME[:SPLIT]`` means when NAME is neither a path nor
a dataset: published statistics of a benchmark, downloaded on first use into the cache. The
plugins declare theirs through the ``geneval_register_references`` hook
(:mod:`geneval.hookspecs`); this command lists them with the extractor and ``--resize``
convention each serves, the images' resolution, the URL and whether the file is already in
the cache. Nothing here imports torch, numpy or any other heavy library.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from geneval.errors import warn
from geneval.plugins import get_registry
from geneval.text import printable, visible

EXIT_OK = 0
FIELDS = ("name", "extractor", "convention", "resolution", "url", "path", "source")


def _row(reference: Any, plugin: str) -> dict[str, Any]:
    """One reference as a JSON-ready row; a missing field is ``None``."""
    row: dict[str, Any] = {field: getattr(reference, field, None) for field in FIELDS}
    path = row["path"]
    row["path"] = None if path is None else str(path)
    try:
        row["cached"] = path is not None and Path(path).is_file()
    except (OSError, ValueError):
        row["cached"] = False
    row["plugin"] = plugin
    return row


def collect_references() -> list[dict[str, Any]]:
    """Every named reference the installed plugins register, sorted by name, extractor,
    convention and resolution; a plugin whose hook fails is skipped with a warning."""
    registry = get_registry()
    rows: list[dict[str, Any]] = []
    hook = registry.pm.hook.geneval_register_references
    for impl in hook.get_hookimpls():
        found: list[dict[str, Any]] = []

        def register(ref: Any, found: list[dict[str, Any]] = found, plugin: str = impl.plugin_name):
            found.append(_row(ref, plugin))

        try:
            impl.function(register=register)
        except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the listing
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            warn(f"plugin {impl.plugin_name!r}: its named references were skipped ({message})")
            continue
        rows.extend(found)
    rows.sort(
        key=lambda r: (
            str(r["name"]),
            str(r["extractor"]),
            str(r["convention"]),
            r["resolution"] or 0,
        )
    )
    return rows


def references_table(rows: list[dict[str, Any]]) -> str:
    """The rows as aligned columns: reference, extractor, --resize, resolution, cached, URL."""
    header = ("reference", "extractor", "resize", "res", "cached", "url")
    cells = [
        (
            visible(r["name"]),
            visible(r["extractor"]),
            visible(r["convention"]),
            "" if r["resolution"] is None else str(r["resolution"]),
            "yes" if r["cached"] else "no",
            visible(r["url"]),
        )
        for r in rows
    ]
    widths = [max([len(h)] + [len(c[i]) for c in cells]) for i, h in enumerate(header)]
    lines = [
        "  ".join(f"{value:<{width}}" for value, width in zip(line, widths, strict=True)).rstrip()
        for line in [header, *cells]
    ]
    return printable("\n".join(lines))


@click.group()
def references() -> None:
    """Named references (--reference NAME[:SPLIT]): published statistics of benchmarks."""


@references.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def references_list(as_json: bool) -> int:
    """Every named reference with its extractor, --resize convention, resolution, URL and
    whether it is in the cache ($GENEVAL_CACHE/reference_stats)."""
    rows = collect_references()
    if as_json:
        click.echo(json.dumps({"references": rows}, indent=2))
    else:
        click.echo(references_table(rows))
    return EXIT_OK
