"""Safe text: user strings (paths, option values, folder names) as geneval shows them.

A path may hold any byte but ``/`` and NUL: a newline, a tab, an ESC that starts a terminal
escape sequence, a right-to-left override, or bytes that are not UTF-8 (which
:func:`os.fsdecode` turns into lone surrogates). None of them may cut a one-line message
short, reach a terminal raw, or make a report file malformed. Every character that
:meth:`str.isprintable` refuses (Unicode's "Other" and "Separator" categories but the ASCII
space: control and format characters, line and paragraph separators, lone surrogates,
unassigned code points) is therefore shown as its Python escape (``\\n``, ``\\x1b``,
``\\u202e``, ``\\udce9``):

* :func:`quote` — a user string inside a message: unchanged when every character is
  printable, else quoted as Python's ``repr`` writes it (so a backslash in it is unambiguous).
* :func:`visible` — any text as one line: each unprintable character escaped, nothing quoted;
  what the command line prints last, whatever a message holds.
* :func:`printable` — text of several lines (a table, a report file): each line made
  :func:`visible`, the line breaks kept.
* :func:`markdown_text`, :func:`markdown_code` — text inside a Markdown report (HTML,
  Markdown syntax and table pipes escaped), or a code span there.

Characters that XML 1.0 forbids (C0 controls but tab, LF and CR; lone surrogates; U+FFFE and
U+FFFF) are all unprintable, so :func:`visible` text is also safe in XML and HTML.
"""

from __future__ import annotations

import os
import re
from typing import Any

__all__ = ["markdown_code", "markdown_text", "printable", "quote", "size_text", "visible"]

# "_" is left alone: inside a word (as in most file names) it never emphasises.
_MARKDOWN_SPECIAL = re.compile(r"[\\`*\[\]<>&|~]")
_ASCII_PUNCTUATION = frozenset("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
_ENTITIES = {"<": "&lt;", ">": "&gt;", "&": "&amp;"}
# Text at the start of a list item or paragraph that would open a block instead (a heading,
# a nested list item): the marker, and for an ordered item the digits before it.
_BLOCK_START = re.compile(r"^(\s*)(?:([#+-])|(\d+)([.)]))")


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return os.fsdecode(value)
    return value if isinstance(value, str) else str(value)


def _escape(char: str) -> str:
    return repr(char)[1:-1]


def visible(value: Any) -> str:
    """``value`` as one printable line: every character that :meth:`str.isprintable` refuses
    (newline, tab, ESC and other control characters, format characters, line separators, lone
    surrogates of undecodable bytes) replaced by its Python escape, e.g. ``\\n``, ``\\x1b``,
    ``\\udce9``. Text that is already printable is returned unchanged, so applying it twice
    changes nothing."""
    text = _text(value)
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else _escape(c) for c in text)


def quote(value: Any) -> str:
    """A user string (a path, an option value) as a message shows it: as typed when every
    character is printable, else quoted by Python's ``repr`` (``'new\\nline'``), so that the
    message stays one line, no escape sequence reaches the terminal, and a backslash in the
    name is not confused with an escape. Paths (``os.PathLike``) and ``bytes`` are accepted."""
    text = _text(os.fspath(value) if isinstance(value, os.PathLike) else value)
    return text if text.isprintable() else repr(text)


def printable(text: str) -> str:
    """Text of several lines made safe to print or to write as UTF-8: each line
    :func:`visible` (control characters, a lone ``\\r`` and undecodable bytes escaped), the
    ``\\n`` line breaks kept."""
    if text.isprintable():
        return text
    return "\n".join(visible(line) for line in text.split("\n"))


def markdown_text(value: Any, *, line_start: bool = False) -> str:
    """``value`` as literal text inside a Markdown report (a table cell, a list item, a
    paragraph): one :func:`visible` line; ``<``, ``>`` and ``&`` as HTML entities, so no tag
    or entity of a folder name is interpreted; Markdown's emphasis, code, link and
    strikethrough characters and the table's ``|`` backslash-escaped; and a backslash doubled
    where it would otherwise escape what follows. With ``line_start`` (text that begins a list
    item or a paragraph), a leading ``#``, ``-``, ``+`` or ``1.`` is escaped too, so that the
    text never opens a heading or a list."""
    source = visible(value)

    def escape(match: re.Match[str]) -> str:
        char = match.group()
        if char == "\\":
            following = source[match.end() : match.end() + 1]
            return "\\\\" if following in _ASCII_PUNCTUATION and following else "\\"
        return _ENTITIES.get(char) or "\\" + char

    text = _MARKDOWN_SPECIAL.sub(escape, source)
    if not line_start:
        return text

    def unblock(match: re.Match[str]) -> str:
        indent, marker, number, delimiter = match.groups()
        return f"{indent}\\{marker}" if marker else f"{indent}{number}\\{delimiter}"

    return _BLOCK_START.sub(unblock, text, count=1)


def markdown_code(value: Any) -> str:
    """``value`` as a Markdown code span inside a table cell: one :func:`visible` line between
    enough backticks that none inside closes it (HTML inside a code span is shown, not
    interpreted), ``|`` escaped for the table."""
    text = visible(value).replace("|", "\\|")
    runs = [len(run) for run in re.findall(r"`+", text)]
    fence = "`" * (max(runs, default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def size_text(nbytes: float) -> str:
    """A byte count in words, in decimal units: ``512 bytes``, ``3.2 GB``, ``1.1 TB``."""
    value = float(nbytes)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"
