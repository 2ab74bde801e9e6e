"""Published weight files: how plugins declare them, where they are found, how they are fetched.

A plugin declares the published files its extractors and model families load as
:class:`WeightsFile` entries of their ``published_weights`` attribute (``docs/contracts.md``
§2). The core reads these declarations without importing torch: ``geneval weights
list|fetch|verify|path`` (:mod:`geneval.weights_command`) and the run's pre-flight, which
checks every file a run needs before anything heavy loads, and names all the missing ones at
once.

A file is looked up in this order (the first that is set decides):

1. the path given on the command line (``--extractor-weights [NAME=]PATH``) or to
   ``load(weights=...)``;
2. the environment variable the declaration names (e.g. ``GENEVAL_INCEPTION_WEIGHTS``);
3. the torch hub checkpoint cache, ``$TORCH_HOME/hub/checkpoints/<filename>`` (``$TORCH_HOME``
   defaults to ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch``, as in
   ``torch.hub.get_dir``);
4. the published URL, downloaded into that cache by :func:`fetch`.

A path named by 1 or 2 that does not exist is an error (no fallback). A download is streamed
into a temporary file beside its destination while its sha256 is computed; only a file whose
digest matches the declared ``sha256`` (a full 64-digit digest, or the prefix published in a
torch hub file name, which is then all that can be checked) and whose size matches the
declared ``size`` (when declared) is moved into place with :func:`os.replace`. A failed or
mismatching download leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from geneval.errors import InputError
from geneval.text import quote

#: A declared digest: 8 to 64 lower-case hex digits (a prefix, or the whole sha256).
_SHA256 = re.compile(r"^[0-9a-f]{8,64}$")
_NAME = re.compile(r"^[a-z0-9_-]+$")
_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")
#: Bytes read per step of a download or a hash.
CHUNK = 1 << 20
#: Seconds a download may wait for the server before it fails.
TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WeightsFile:
    """One published weights file, as a plugin declares it in ``published_weights``.

    ``name`` is what ``geneval weights fetch NAME`` takes (``[a-z0-9_-]+``; the bundled
    extractors use their own name); ``filename`` the file's name in the torch hub checkpoint
    cache; ``url`` where it is published; ``sha256`` its digest in lower-case hex: all 64
    digits, or a prefix of at least 8 (torch hub file names carry one) when the full digest
    is not published, in which case only the prefix is checked; ``None`` when no digest
    is published (nothing can then be checked, and listings say so); ``size`` its length in
    bytes when known; ``env`` the environment variable that may name the file; ``what`` how
    messages call it ("Inception weights"); ``option`` the command-line option that may name
    it.
    """

    name: str
    filename: str
    url: str
    env: str
    what: str
    sha256: str | None = None
    size: int | None = None
    option: str = "--extractor-weights"

    def __post_init__(self) -> None:
        for key, value, pattern in (
            ("name", self.name, _NAME),
            ("sha256", self.sha256, _SHA256),
            ("env", self.env, _ENV),
        ):
            if key == "sha256" and value is None:
                continue
            if not isinstance(value, str) or not pattern.match(value):
                raise ValueError(f"WeightsFile {key} {value!r} does not match {pattern.pattern}")
        if not self.filename or "/" in self.filename or self.filename in (".", ".."):
            raise ValueError(f"WeightsFile filename {self.filename!r} is not a file name")
        if self.size is not None and (not isinstance(self.size, int) or self.size <= 0):
            raise ValueError(f"WeightsFile size {self.size!r} is not a positive integer")

    @property
    def full_digest(self) -> bool:
        """Whether ``sha256`` is the whole digest (64 digits), not a prefix."""
        return self.sha256 is not None and len(self.sha256) == 64


@dataclass(frozen=True)
class Location:
    """Where a weights file is, or would be, found: ``path``, by ``how`` (``--extractor-weights``,
    the variable's name, or ``torch hub cache``), and whether it exists."""

    path: Path
    how: str
    exists: bool


@dataclass
class Declared:
    """A declared weights file and the plugins (``extractor NAME``, ``model NAME``) that load it."""

    file: WeightsFile
    users: list[str] = field(default_factory=list)
    distribution: str = ""


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch's rule,
    ``torch.hub._get_torch_home``)."""
    default = os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.environ.get("TORCH_HOME", default)))


def hub_checkpoint_dir() -> Path:
    """The torch hub checkpoint cache, ``<hub dir>/checkpoints``.

    The hub directory is ``torch.hub.get_dir()`` when torch is already imported (it honours
    ``torch.hub.set_dir``), else ``torch_home()/hub``, which is what torch would answer:
    listing weights never imports torch.
    """
    torch = sys.modules.get("torch")
    hub = getattr(torch, "hub", None) if torch is not None else None
    if hub is not None and hasattr(hub, "get_dir"):
        return Path(hub.get_dir()) / "checkpoints"
    return torch_home() / "hub" / "checkpoints"


def locate(file: WeightsFile, explicit: str | os.PathLike[str] | None = None) -> Location:
    """Where ``file`` is found by the order of the module docstring (1 to 3), without
    downloading; ``exists`` is ``False`` when it is nowhere (the path is then the hub cache's)
    or when the path named by the option or the variable does not exist."""
    for given, how in ((explicit, file.option), (os.environ.get(file.env), file.env)):
        if given:
            path = Path(given).expanduser()
            return Location(path, how, path.is_file())
    cached = hub_checkpoint_dir() / file.filename
    return Location(cached, "torch hub cache", cached.is_file())


def file_digest(path: Path, progress: Callable[[int], Any] | None = None) -> str:
    """The sha256 of the file at ``path`` in lower-case hex (read in 1 MiB chunks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return digest.hexdigest()


def digest_matches(file: WeightsFile, digest: str) -> bool:
    """Whether a file's full sha256 ``digest`` agrees with the declared one (or its prefix);
    always true when no digest is declared."""
    return file.sha256 is None or digest.lower().startswith(file.sha256)


def checked_digest_text(file: WeightsFile) -> str:
    """How the declared digest is checked, for messages and listings."""
    if file.sha256 is None:
        return "no published sha256 (not checked)"
    if file.full_digest:
        return f"sha256 {file.sha256}"
    return f"sha256 prefix {file.sha256} (the full digest is not published)"


def check_published(file: WeightsFile, digest: str, size: int, where: str, after: str = "") -> None:
    """An :class:`InputError` naming ``where`` (and ending with ``after``) when ``digest`` or
    ``size`` contradicts what ``file`` publishes (:func:`digest_matches`, ``file.size``)."""
    if not digest_matches(file, digest):
        raise InputError(
            f"{file.what} {where}: sha256 {digest} does not match the published "
            f"{checked_digest_text(file)}{after}"
        )
    if file.size is not None and size != file.size:
        raise InputError(f"{file.what} {where}: {size} bytes, not the published {file.size}{after}")


def _progress_bar(total: int | None, desc: str) -> Any:
    from geneval.progress import progress_bar  # tqdm: imported when a file is transferred

    return progress_bar(total=total, desc=desc, unit="B")


def download(file: WeightsFile, destination: Path, *, url: str | None = None) -> Path:
    """Download ``file`` from ``url`` (default: its ``url``) to ``destination``, atomically.

    The bytes go to a temporary file beside ``destination`` while their sha256 is computed;
    the file is moved into place (:func:`os.replace`) only when the digest (or its declared
    prefix) and the declared size match. Anything else (a network error, a mismatch, an
    interruption) removes the temporary file and raises; a mismatch or a network error is an
    :class:`InputError` naming the file. ``destination`` must not be anything but a regular
    file if it exists (it is replaced only then).
    """
    import urllib.request

    source = url or file.url
    if destination.is_symlink() or (destination.exists() and not destination.is_file()):
        raise InputError(f"{quote(destination)} exists and is not a regular file: not replaced")
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(
        prefix=f".{file.filename[:64]}.", suffix=".partial", dir=destination.parent
    )
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        received = 0
        with os.fdopen(fd, "wb") as out:
            try:
                response = urllib.request.urlopen(source, timeout=TIMEOUT_S)  # noqa: S310
            except Exception as exc:  # noqa: BLE001 - any failure to connect is one line
                raise InputError(f"download of {source} failed: {exc}".splitlines()[0]) from None
            with response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else file.size
                with _progress_bar(total, file.filename) as bar:
                    while True:
                        try:
                            chunk = response.read(CHUNK)
                        except Exception as exc:  # noqa: BLE001
                            message = f"download of {source} failed: {exc}"
                            raise InputError(message.splitlines()[0]) from None
                        if not chunk:
                            break
                        out.write(chunk)
                        digest.update(chunk)
                        received += len(chunk)
                        bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
        check_published(
            file,
            digest.hexdigest(),
            received,
            f"{file.filename} from {source}",
            "; nothing was written",
        )
        os.chmod(tmp, 0o644)
        os.replace(tmp, destination)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return destination


def find_weights(
    file: WeightsFile,
    weights: str | os.PathLike[str] | None = None,
    *,
    download_missing: bool = True,
) -> Path:
    """The file ``file`` by the order of the module docstring, downloading it into the torch
    hub cache when it is nowhere (unless ``download_missing`` is false).

    A path named by the option or the variable that does not exist, and a file that is
    nowhere and cannot be downloaded, are :class:`InputError` s; the latter's message names
    the ``geneval weights fetch`` command, the URL, the cache folder, the option and the
    variable (:func:`missing_message`).
    """
    found = locate(file, weights)
    if found.exists:
        return found.path
    if found.how != "torch hub cache":
        raise InputError(f"{found.how}: {file.what} file {quote(found.path)} does not exist")
    if not download_missing:
        raise InputError(missing_message([(file, "not in the torch hub cache")]))
    try:
        return download(file, found.path)
    except InputError as exc:
        raise InputError(missing_message([(file, str(exc))])) from None


def missing_message(missing: Sequence[tuple[WeightsFile, str]]) -> str:
    """One line naming every missing file (with why, and its URL), the ``geneval weights
    fetch`` command that fetches them all, the cache folder, the option and the variables."""
    parts = [
        f"{f.what} {f.filename} not found "
        f"({reason.replace(f'download of {f.url} failed', 'download failed')}; "
        f"published at {f.url})"
        for f, reason in missing
    ]
    names = " ".join(dict.fromkeys(f.name for f, _ in missing))
    envs = " or ".join(dict.fromkeys(f.env for f, _ in missing))
    them = "them" if len(missing) > 1 else "it"
    option = missing[0][0].option
    by_name = f"{option} NAME=PATH" if len(missing) > 1 else f"{option} PATH"
    return (
        f"{'; '.join(parts)}; fetch {them} with `geneval weights fetch {names}`, or put "
        f"{them} in {hub_checkpoint_dir()}, or pass {by_name}, or set {envs}"
    ).replace("\n", " ")


def preflight(
    needed: Iterable[tuple[WeightsFile, str | os.PathLike[str] | None]],
    *,
    download_missing: bool = True,
) -> list[Path]:
    """Check every weights file a run needs before anything loads: ``needed`` holds each file
    with the path given for it (or ``None``). Files that are nowhere are downloaded (unless
    ``download_missing`` is false); when any file is still missing afterwards, or a given
    path does not exist, one :class:`InputError` names them all. Returns the files' paths."""
    paths: list[Path] = []
    missing: list[tuple[WeightsFile, str]] = []
    wrong: list[str] = []
    seen: set[tuple[str, str]] = set()
    for file, given in needed:
        key = (file.name, str(given))
        if key in seen:
            continue
        seen.add(key)
        found = locate(file, given)
        if found.exists:
            paths.append(found.path)
        elif found.how != "torch hub cache":
            wrong.append(f"{found.how}: {file.what} file {quote(found.path)} does not exist")
        elif not download_missing:
            missing.append((file, "not in the torch hub cache"))
        else:
            try:
                paths.append(download(file, found.path))
            except InputError as exc:
                missing.append((file, str(exc)))
    if wrong or missing:
        raise InputError("; ".join([*wrong, *([missing_message(missing)] if missing else [])]))
    return paths


def declared_weights(registry: Any) -> dict[str, Declared]:
    """Every weights file the installed extractors, model families and metrics declare, by
    name.

    Two plugins may declare the same file (same name, same declaration); one name declared
    two different ways is an :class:`InputError` naming both users.
    """
    found: dict[str, Declared] = {}
    for kind in ("extractor", "model", "metric"):
        for name, item in sorted(registry.items(kind).items()):
            for file in getattr(item.obj, "published_weights", ()) or ():
                if not isinstance(file, WeightsFile):
                    continue
                entry = found.setdefault(
                    file.name, Declared(file, distribution=item.provider.distribution)
                )
                if entry.file != file:
                    raise InputError(
                        f"weights {file.name!r} are declared differently by {kind} {name} and "
                        f"{', '.join(entry.users)}"
                    )
                entry.users.append(f"{kind} {name}")
    return found


def weights_for(plugin: Any) -> tuple[WeightsFile, ...]:
    """The weights files a registered extractor, model family or metric declares (``()`` if
    none)."""
    declared = getattr(plugin, "published_weights", ()) or ()
    return tuple(f for f in declared if isinstance(f, WeightsFile))


def explicit_weights(
    given: str | os.PathLike[str] | Mapping[str, str | os.PathLike[str]] | None, name: str
) -> Path | None:
    """The path given for extractor ``name``: the mapping's entry, or the one plain path."""
    if given is None:
        return None
    if isinstance(given, Mapping):
        value = given.get(name)
        return None if value is None else Path(value)
    return Path(given)


__all__ = [
    "Declared",
    "Location",
    "WeightsFile",
    "declared_weights",
    "digest_matches",
    "download",
    "explicit_weights",
    "file_digest",
    "find_weights",
    "hub_checkpoint_dir",
    "locate",
    "missing_message",
    "preflight",
    "torch_home",
    "weights_for",
]
