"""The report files of ``geneval run``, planned before the run and rendered after it.

Each requested report is an :class:`geneval.io.Output` with a renderer ``(report, visuals)
→ content``, so that every file is checked before the work starts and all are written
together, or none (:mod:`geneval.io`). A Markdown report written to a file gets its grid
image beside it, ``NAME-grid.png`` (the first samples left, the first reference images
right), planned as one more output; a renderer may return ``None`` when it has nothing to
write (no images to show).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from geneval.io import STDOUT, Content, Output
from geneval.report.formats import to_json, to_junit, to_markdown
from geneval.report.grids import image_grid, png_bytes, side_by_side
from geneval.report.html import to_html
from geneval.report.visuals import Visuals

Renderer = Callable[[Mapping[str, Any], Visuals | None], Content | None]


def grid_png_path(markdown: str | Path) -> Path:
    """Where the grid image of a Markdown report goes: ``report.md`` → ``report-grid.png``."""
    path = Path(markdown)
    return path.with_name(f"{path.stem}-grid.png")


def grid_png(visuals: Visuals | None) -> bytes | None:
    """The samples' grid, beside the reference's when it has images, as PNG bytes."""
    if visuals is None or not visuals.samples:
        return None
    picture = image_grid(visuals.samples)
    if visuals.reference:
        picture = side_by_side(picture, image_grid(visuals.reference))
    return png_bytes(picture)


def _markdown(png_name: str | None) -> Renderer:
    def render(report: Mapping[str, Any], visuals: Visuals | None) -> str:
        shown = png_name if png_name and visuals is not None and visuals.samples else None
        return to_markdown(report, grid_png=shown)

    return render


def planned_reports(paths: Mapping[str, Any]) -> list[tuple[Output, Renderer]]:
    """The outputs of ``paths`` (``json``, ``markdown``, ``junit``, ``html`` → a path, ``-``
    or ``None``) with their renderers, in that order, the Markdown grid image after them."""
    planned: list[tuple[Output, Renderer]] = []
    if paths.get("json") is not None:
        planned.append((Output(paths["json"], "--json file"), lambda r, v: to_json(r)))
    markdown = paths.get("markdown")
    png = None if markdown is None or str(markdown) == STDOUT else grid_png_path(markdown)
    if markdown is not None:
        planned.append((Output(markdown, "--markdown file"), _markdown(png.name if png else None)))
    if paths.get("junit") is not None:
        planned.append((Output(paths["junit"], "--junit file"), lambda r, v: to_junit(r)))
    if paths.get("html") is not None:
        planned.append((Output(paths["html"], "--html file"), to_html))
    if png is not None:
        planned.append((Output(png, "--markdown grid image"), lambda r, v: grid_png(v)))
    return planned
