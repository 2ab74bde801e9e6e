"""``geneval weights list|fetch|verify|path``: the published weights files of the plugins.

Every extractor and model family declares the files it loads (``published_weights``, a tuple
of :class:`geneval.weights.WeightsFile`); this group lists them with their URL, sha256, size
and where the loader finds them (or would), fetches them into the torch hub checkpoint cache
(progress bar, digest check, atomic write), verifies a file placed by hand and prints where
one is looked for. Nothing here imports torch (:mod:`geneval.weights`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval.progress import set_quiet
from geneval.text import quote, visible
from geneval.weights import (
    Declared,
    check_published,
    checked_digest_text,
    declared_weights,
    download,
    file_digest,
    hub_checkpoint_dir,
    locate,
)

EXIT_OK = 0


def _declared() -> dict[str, Declared]:
    return declared_weights(get_registry())


def _choose(names: tuple[str, ...], everything: bool) -> list[Declared]:
    """The declarations named (each once, in order), or all of them with ``--all``."""
    declared = _declared()
    if everything and names:
        raise InputError("give weights NAMEs or --all, not both")
    if everything:
        return [declared[name] for name in sorted(declared)]
    if not names:
        raise InputError(
            f"name the weights to fetch, or use --all (available: {', '.join(sorted(declared))})"
        )
    return [_one(declared, name) for name in dict.fromkeys(names)]


def _one(declared: dict[str, Declared], name: str) -> Declared:
    if name not in declared:
        available = ", ".join(sorted(declared)) or "none declared by the installed plugins"
        raise InputError(f"unknown weights {quote(name)} (available: {available})")
    return declared[name]


def describe(entry: Declared) -> dict[str, Any]:
    """One weights file as a JSON-ready row: its declaration, its users and where it is."""
    file = entry.file
    where = locate(file)
    return {
        "name": file.name,
        "what": file.what,
        "filename": file.filename,
        "url": file.url,
        "sha256": file.sha256,
        "sha256_checked": (
            "none" if file.sha256 is None else "full" if file.full_digest else "prefix"
        ),
        "size": file.size,
        "env": file.env,
        "used_by": list(entry.users),
        "distribution": entry.distribution,
        "path": str(where.path),
        "found_by": where.how,
        "present": where.exists,
    }


@click.group()
def weights() -> None:
    """Published weights files of the extractors and models: list, fetch, verify, path."""


@weights.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def weights_list(as_json: bool) -> int:
    """Every published weights file: name, file, URL, sha256, size and where it is found."""
    rows = [describe(entry) for _, entry in sorted(_declared().items())]
    if as_json:
        listing = {"hub_checkpoints": str(hub_checkpoint_dir()), "weights": rows}
        click.echo(json.dumps(listing, indent=2))
        return EXIT_OK
    if not rows:
        click.echo("no installed plugin declares published weights")
        return EXIT_OK
    for row in rows:
        state = "present" if row["present"] else "missing"
        size = f"{row['size']} bytes" if row["size"] is not None else "size not published"
        digest = row["sha256"] or "not published"
        lines = [
            f"{row['name']}  ({row['what']}; {', '.join(row['used_by'])})",
            f"  file    {row['filename']}  ({size})",
            f"  url     {row['url']}",
            f"  sha256  {digest}"
            + {"prefix": "  (prefix only)", "none": "", "full": ""}[row["sha256_checked"]],
            f"  env     {row['env']}",
            f"  path    {row['path']}  ({state}; {row['found_by']})",
        ]
        for line in lines:
            click.echo(visible(line))
    return EXIT_OK


@weights.command("fetch")
@click.argument("names", nargs=-1)
@click.option("--all", "everything", is_flag=True, help="Fetch every declared weights file.")
@click.option("--force", is_flag=True, help="Download again a file already in the cache.")
@click.option("--quiet", is_flag=True, help="No progress bars or notes.")
def weights_fetch(names: tuple[str, ...], everything: bool, force: bool, quiet: bool) -> int:
    """Download weights files into the torch hub checkpoint cache, checking their sha256.

    Each file is written to a temporary file, checked, then moved into place: a failed or
    mismatching download leaves nothing behind. A file already in the cache is kept unless
    --force."""
    set_quiet(quiet)
    failed: list[str] = []
    for entry in _choose(names, everything):
        file = entry.file
        target = hub_checkpoint_dir() / file.filename
        where = locate(file)
        if where.how != "torch hub cache" and where.exists and not quiet:
            click.echo(visible(f"note: {file.env} names {where.path}, which is read first"))
        if target.is_file() and not target.is_symlink() and not force:
            if not quiet:
                click.echo(visible(f"{file.name}: already in {target} (--force fetches it again)"))
            continue
        if target.exists() or target.is_symlink():
            if not target.is_file() or target.is_symlink():
                failed.append(f"{file.name}: {quote(target)} is not a regular file, not replaced")
                continue
        try:
            download(file, target)
        except InputError as exc:
            failed.append(f"{file.name}: {exc}")
            continue
        if not quiet:
            click.echo(visible(f"{file.name}: {target} ({checked_digest_text(file)} checked)"))
    if failed:
        raise InputError("; ".join(failed))
    return EXIT_OK


@weights.command("verify")
@click.argument("name")
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--quiet", is_flag=True, help="No progress bar.")
def weights_verify(name: str, path: Path | None, quiet: bool) -> int:
    """Check a weights file (PATH, default: where the loader finds it): its sha256 and size
    against the published ones, and whether the loader finds it there."""
    set_quiet(quiet)
    file = _one(_declared(), name).file
    where = locate(file)
    target = where.path if path is None else path.expanduser()
    if not target.is_file():
        raise InputError(
            f"{file.what} {quote(target)} does not exist: run `geneval weights fetch {file.name}`"
        )
    from geneval.progress import progress_bar

    with progress_bar(total=target.stat().st_size, desc=file.filename, unit="B") as bar:
        digest = file_digest(target, bar.update)
    size = target.stat().st_size
    check_published(file, digest, size, quote(target))
    checked = checked_digest_text(file)
    click.echo(visible(f"{file.name}: {target}: sha256 {digest} ({checked}: ok)"))
    if where.exists and _same(where.path, target):
        click.echo(visible(f"{file.name}: the loader finds it ({where.how})"))
    else:
        click.echo(
            visible(
                f"{file.name}: the loader does not look there; it reads {where.path} "
                f"({where.how}): move the file there, set {file.env}={target}, or pass "
                f"{file.option} {file.name}={target}"
            )
        )
    return EXIT_OK


def _same(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or a.samefile(b)
    except OSError:
        return False


@weights.command("path")
@click.argument("name")
def weights_path(name: str) -> int:
    """Print where the loader finds weights NAME, or where it would put them once fetched."""
    file = _one(_declared(), name).file
    click.echo(visible(str(locate(file).path)))
    return EXIT_OK
