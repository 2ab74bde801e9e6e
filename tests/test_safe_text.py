"""Safe text (issue 21, "Injection and messages"): user strings with line breaks, escape
sequences, tabs, other control characters, undecodable bytes, HTML and Markdown reach every
output of geneval as visible, inert text.

* the command line's error, warning and info lines: exactly one line, escapes visible, no raw
  ESC byte (a newline in a path used to cut the error line short);
* the stdout table: one line per row, nothing unprintable;
* the Markdown report: no raw HTML of a folder name, the tables keep their columns;
* the JUnit XML: well-formed (it was not with a control character in a path);
* the HTML report: no raw control character.

The unit-level property tests fuzz :mod:`geneval.text` and the report renderers with any
Unicode text; the CLI tests run real folders and files with hostile names.
"""

from __future__ import annotations

import ast
import html
import json
import os
import re
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import click
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from geneval.errors import captured_warnings, warn
from geneval.plugin import hookimpl
from geneval.report.formats import to_junit, to_markdown, to_table
from geneval.report.html import to_html
from geneval.text import markdown_code, markdown_text, printable, quote, visible
from tests.fake_plugins import FakePlugins

#: Names a user (or an attacker who controls a folder) can give a file or folder on Linux.
HOSTILE = {
    "newline": "new\nline",
    "escape-sequences": "esc\x1b[2J\x1b]0;owned\x07\x1b[31mred",
    "tab-and-cr": "tab\tcr\rname",
    "other-controls": "bell\x07del\x7fc1\x85\x9b",
    "undecodable": os.fsdecode(b"caf\xe9\xff"),
    "bidi-and-separators": "\u202egnp.exe\u2028x\u2029y\u200b",
    "html": "<script>alert(1)<img src=x onerror=alert(2)>&amp;",  # no "/" in a name
    "markdown": "a|b`c`*d*_e_[l](x:y)![i](http:\\y)~~s~~",
    "everything": "x\n<b>|`\x1b[1m\udcff\t<i>&\u2028",
}

#: What XML 1.0 allows (https://www.w3.org/TR/xml/#charsets).
XML_CHAR = re.compile("[\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]*")

#: Any text, lone surrogates and control characters included.
ANY_TEXT = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
HOSTILE_TEXT = st.one_of(ANY_TEXT, st.sampled_from(sorted(HOSTILE.values())))


def _file_name_bytes(name: str) -> bytes:
    """The bytes of a file name as the OS has them (a surrogate that no undecodable byte
    gives, possible only through the Python API, as UTF-8 would carry it)."""
    try:
        return os.fsencode(name)
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


def _unmarkdown(text: str) -> str:
    """What a CommonMark renderer shows for inline text without markup: backslash escapes of
    ASCII punctuation and the three entities undone."""
    return re.sub(
        r"\\([!-/:-@\[-`{-~])|&(lt|gt|amp);",
        lambda m: m.group(1) or {"lt": "<", "gt": ">", "amp": "&"}[m.group(2)],
        text,
    )


def _cells(row: str) -> list[str]:
    """The cells of a Markdown table row, split on pipes that are not escaped (code spans
    included: GFM splits rows before inline parsing)."""
    assert row.startswith("|") and row.endswith("|"), row
    return re.split(r"(?<!\\)\|", row[1:-1])


def _check_markdown_tables(markdown: str) -> None:
    """Every table row has as many cells as its header, and no line is unprintable."""
    lines = markdown.split("\n")
    width = None
    for line in lines:
        assert line.isprintable(), repr(line)
        if line.startswith("|"):
            cells = _cells(line)
            width = len(cells) if width is None else width
            assert len(cells) == width, line
        else:
            width = None


def _outside_code_spans(markdown: str) -> str:
    return re.sub(r"(`+)(?:(?!\1).)+?\1", "", markdown)


# -- geneval.text ------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(HOSTILE_TEXT)
def test_quote_is_one_printable_line_that_reads_back_to_the_original(text):
    shown = quote(text)
    assert shown.isprintable() and "\n" not in shown
    if text.isprintable():
        assert shown == text
    else:
        assert ast.literal_eval(shown) == text  # unambiguous: a backslash is escaped too


@settings(max_examples=100, deadline=None)
@given(HOSTILE_TEXT)
def test_visible_is_one_printable_xml_safe_line(text):
    shown = visible(text)
    assert shown.isprintable()
    assert visible(shown) == shown
    assert XML_CHAR.fullmatch(shown)
    assert len(shown) <= 10 * len(text)  # bounded: \U0010ffff is the longest escape
    if text.isprintable():
        assert shown == text
    for char in set(text) - set(" ") - {c for c in text if c.isprintable()}:
        assert repr(char)[1:-1] in shown


@settings(max_examples=100, deadline=None)
@given(st.lists(HOSTILE_TEXT, max_size=4))
def test_printable_keeps_the_line_breaks_and_escapes_the_rest(lines):
    text = "\n".join(lines)
    out = printable(text)
    assert out.count("\n") == text.count("\n")
    assert all(line.isprintable() for line in out.split("\n"))


@settings(max_examples=150, deadline=None)
@given(HOSTILE_TEXT, st.booleans())
def test_markdown_text_renders_as_the_visible_text_and_opens_nothing(text, line_start):
    out = markdown_text(text, line_start=line_start)
    assert out.isprintable()
    assert "<" not in out and ">" not in out
    assert not re.search(r"(?<!\\)[|`*\[\]~]", out.replace("\\\\", "")), out
    assert _unmarkdown(out) == visible(text)
    if line_start:
        assert not re.match(r"\s*(#|[-+](\s|$)|\d+[.)])", out), out


@settings(max_examples=100, deadline=None)
@given(HOSTILE_TEXT)
def test_markdown_code_is_one_closed_code_span(text):
    out = markdown_code(text)
    assert out.isprintable()
    fence = re.match(r"`+", out).group()
    inner = out[len(fence) : -len(fence)]
    assert out.endswith(fence) and fence not in inner
    assert not re.search(r"(?<!\\)\|", inner)


def test_warn_keeps_a_path_with_a_line_break_whole():
    with captured_warnings() as caught:
        warn(f"statistics file {HOSTILE['everything']} has no provenance")
    (line,) = caught.drain()
    assert line.isprintable() and line.endswith("has no provenance")
    assert visible(HOSTILE["everything"]) in line


# -- the report renderers ----------------------------------------------------------------------


def _report(text: str) -> dict:
    """A report (docs/contracts.md §5) with ``text`` in every string a user or a plugin
    controls."""
    return {
        "geneval_version": "0.1.0",
        "config": {
            "samples": f"/data/{text}",
            "reference": f"{text}.npz",
            "extractor": "counting",
            "resize": text,
            "model": text,
            "checkpoint": f"{text}.pt",
            "seed": 0,
            "device": "cpu",
        },
        "inputs": {
            "samples": {"count": 3, "description": f"/data/{text}"},
            "reference": {"count": None, "description": text},
        },
        "metrics": {
            "feat-mean": {"value": 0.5, "std": 0.1, "mode": text, "warnings": [text]},
        },
        "metric_info": {
            "feat-mean": {"higher_is_better": True, "uncertainty": "std", "interpretation": text},
            "boom": {"higher_is_better": None, "uncertainty": None, "interpretation": None},
        },
        "errors": {"boom": f"RuntimeError: {text}"},
        "warnings": [f"image {text}: only the first frame was used", text],
        "timings": {"setup": 0.1},
        "gates": [
            {"expr": "feat-mean>=0", "source": f"{text}.toml", "failed": True, "value": 0.5},
            {
                "expr": "feat-mean.std<1",
                "source": "--fail-if",
                "failed": True,
                "reason": f"missing {text}",
            },
        ],
        "passed": False,
        "versions": {"geneval": "0.1.0", "numpy": text},
        "baseline": {
            "held_out": text,
            "n": 3,
            "metrics": {"feat-mean": {"samples": {"value": 1.0}, "held_out": {"value": 2.0}}},
            "skipped": {"boom": text},
        },
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(HOSTILE_TEXT)
def test_every_renderer_keeps_hostile_text_inert(text):
    report = _report(text)
    shown = visible(text)

    table = to_table(report)
    lines = table.split("\n")
    assert all(line.isprintable() for line in lines)
    assert sum(line.startswith("samples: ") for line in lines) == 1
    assert f"samples: /data/{shown} (3 images)" in lines
    assert len([line for line in lines if line.startswith("gate ")]) == 2

    markdown = to_markdown(report, grid_png=f"{text}-grid.png")
    _check_markdown_tables(markdown)
    assert "<" not in _outside_code_spans(markdown) and ">" not in _outside_code_spans(
        markdown
    ).replace("feat-mean>=0", "")
    assert f"- samples: /data/{markdown_text(text)} (3 images)" in markdown.split("\n")
    link = re.search(r"!\[[^\]]*\]\(([^)\s]*)\)", markdown)
    assert link and urllib.parse.unquote_to_bytes(link.group(1)) == _file_name_bytes(
        f"{text}-grid.png"
    )

    junit = to_junit(report)
    root = ET.fromstring(junit)  # well-formed
    sources = [p.get("value") for p in root.iter("property") if p.get("name") == "source"]
    assert sources == [f"{shown}.toml", "--fail-if"]
    assert root.find("testcase/error").get("message") == f"RuntimeError: {shown}"

    page = to_html(report)
    assert all(line.isprintable() for line in page.split("\n"))
    assert "<script" not in page.lower()
    assert html.escape(f"/data/{shown}", quote=True) in page


# -- the command line --------------------------------------------------------------------------


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def _folder(root: Path, name: str, *, garbage: bool = False) -> Path:
    folder = root / name
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6, 3), 40 * i, np.uint8)).save(folder / f"{i}.png")
    if garbage:
        (folder / "3.png").write_bytes(b"not a png\n\x1b[2J")
    return folder


def _one_clean_line(stream: str) -> str:
    """The only line of ``stream``, checked: one line, nothing unprintable, no raw ESC."""
    assert stream.endswith("\n") and stream.count("\n") == 1, repr(stream)
    assert "\x1b" not in stream and stream[:-1].isprintable(), repr(stream)
    return stream[:-1]


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_error_line_is_one_line_naming_the_whole_path(name, fake, run_cli, tmp_path):
    folder = _folder(tmp_path, name, garbage=True)
    res = run_cli(
        "run", "--samples", folder, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 2, res.err
    line = _one_clean_line(res.err)
    assert line.startswith("geneval: error: cannot read image ")
    assert visible(str(folder / "3.png")) in line  # the whole path, after any line break
    assert res.out == "" and not (tmp_path / "r.json").exists()


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_missing_path_error_is_one_line(name, fake, run_cli, tmp_path):
    res = run_cli("run", "--samples", tmp_path / name / "x.npy", "--metrics", "feat-mean")
    assert res.code == 2, res.err
    assert visible(name) in _one_clean_line(res.err)


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_every_report_of_a_hostile_folder_is_inert(name, fake, run_cli, tmp_path):
    folder = _folder(tmp_path, f"s-{name}")
    gates = tmp_path / f"g-{name}.toml"
    gates.write_text('fail-if = ["feat-mean>=0", "feat-mean<-1"]\n', encoding="utf-8")
    md, junit, page = tmp_path / f"r-{name}.md", tmp_path / "r.xml", tmp_path / "r.html"
    res = run_cli(
        "run", "--samples", folder, "--metrics", "feat-mean", "--extractor", "counting",
        "--gates", gates, "--markdown", md, "--junit", junit, "--html", page,
    )  # fmt: skip
    assert res.code == 1, res.err  # the first gate fails
    shown_folder, shown_gates = visible(str(folder)), visible(str(gates))

    # The table on stdout: one line per row, the folder named once, visibly.
    assert "\x1b" not in res.out and "\x1b" not in res.err
    lines = res.out.split("\n")
    assert all(line.isprintable() for line in lines), res.out
    assert f"samples: {shown_folder} (3 images)" in lines
    assert sum(shown_gates in line for line in lines if line.startswith("gate ")) == 2

    # Markdown: the folder as literal text, no HTML, tables intact, the grid link resolves.
    text = md.read_text(encoding="utf-8")
    _check_markdown_tables(text)
    assert "<script" not in text and "<img" not in text and "<b>" not in text
    assert f"- samples: {markdown_text(str(folder))} (3 images)" in text.split("\n")
    assert f"| {markdown_text(str(gates))} |" in text
    target = re.search(r"!\[[^\]]*\]\(([^)\s]*)\)", text).group(1)
    png = Path(os.fsdecode(urllib.parse.unquote_to_bytes(target)))
    assert (md.parent / png).is_file() and png.name == f"r-{name}-grid.png"

    # JUnit: well-formed, the gates file named visibly.
    root = ET.parse(junit).getroot()
    assert root.get("failures") == "1"
    sources = {p.get("value") for p in root.iter("property") if p.get("name") == "source"}
    assert sources == {shown_gates}

    # HTML: nothing unprintable, the folder escaped.
    content = page.read_text(encoding="utf-8")
    assert all(line.isprintable() for line in content.split("\n"))
    assert "<script" not in content.lower() and "<img src=x" not in content
    assert "<i>" not in content and "<b>|" not in content
    assert html.escape(shown_folder, quote=True) in content


def test_info_line_of_stats_names_a_hostile_output_visibly(fake, run_cli, tmp_path):
    folder = _folder(tmp_path, "s")
    out = tmp_path / f"{HOSTILE['everything']}.npz"
    res = run_cli("stats", folder, "-o", out, "--extractor", "counting")
    assert res.code == 0, res.err
    line = _one_clean_line(res.err)
    assert line.startswith("wrote ") and visible(str(out)) in line
    assert out.is_file()


class _WarningCommand:
    """A plugin whose command warns about a hostile path, then succeeds."""

    __name__ = "warning_command"

    @hookimpl
    def geneval_register_commands(self, register):
        @click.command("warn-about")
        @click.argument("path")
        def warn_about(path: str) -> int:
            warn(f"could not use {path}: skipped")
            return 0

        register(warn_about)


@pytest.mark.parametrize("name", HOSTILE.values(), ids=HOSTILE.keys())
def test_warning_line_is_one_visible_line(name, add_plugin, run_cli, tmp_path):
    add_plugin(_WarningCommand())
    res = run_cli("warn-about", str(tmp_path / name))
    assert res.code == 0, res.err
    line = _one_clean_line(res.err)
    assert line == f"geneval: warning: could not use {visible(str(tmp_path / name))}: skipped"


def test_json_report_keeps_the_exact_name(fake, run_cli, tmp_path):
    """The JSON report is data, not text for a terminal: it keeps the name exactly (JSON
    escapes control characters itself)."""
    folder = _folder(tmp_path, HOSTILE["escape-sequences"])
    res = run_cli(
        "run", "--samples", folder, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 0, res.err
    raw = (tmp_path / "r.json").read_text(encoding="utf-8")
    assert "\x1b" not in raw
    assert json.loads(raw)["config"]["samples"] == str(folder)


def test_compare_keeps_a_hostile_report_name_in_its_column(fake, run_cli, tmp_path):
    folder = _folder(tmp_path, "s")
    base = tmp_path / "base.json"
    res = run_cli(
        "run", "--samples", folder, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", base,
    )  # fmt: skip
    assert res.code == 0, res.err
    other = tmp_path / HOSTILE["everything"]
    other.write_bytes(base.read_bytes())
    res = run_cli("compare", base, other)
    assert res.code == 0, res.err
    lines = res.out.split("\n")
    assert "\x1b" not in res.out and all(line.isprintable() for line in lines)
    header = next(line for line in lines if line.startswith("metric"))
    assert visible(other.name) in header and header.split()[-1] == "verdict"
    assert lines[2].split()[0] == "feat-mean"  # header, rule, then the metric's row


@pytest.mark.slow  # a fresh interpreter imports torch: about 10 s on 2 busy cores
def test_error_bytes_on_a_real_stderr_are_one_clean_line(geneval_exe, tmp_path):
    """In a separate process, with stderr a pipe and an undecodable byte in the path: the
    bytes written hold no ESC, no second line, and decode as UTF-8."""
    import subprocess

    bad = os.fsencode(str(tmp_path)) + b"/esc\x1b[2J\nnew\xff/x.npy"
    proc = subprocess.run(
        [*geneval_exe, "run", "--samples", os.fsdecode(bad), "--metrics", "fid"],
        capture_output=True, timeout=120, env={**os.environ, "GENEVAL_LOAD_PLUGINS": ""},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == b""
    assert b"\x1b" not in proc.stderr and proc.stderr.count(b"\n") == 1, proc.stderr
    line = proc.stderr.decode("utf-8")
    assert line.startswith("geneval: error: ") and "esc\\x1b[2J\\nnew\\udcff" in line
