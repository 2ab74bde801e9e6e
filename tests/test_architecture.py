"""The core names no bundled plugin: plugin names appear in ``geneval/`` only in docstrings and
comments, never in code or in the strings it prints."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

CORE = Path(__file__).resolve().parent.parent / "geneval"
PLUGIN_WORDS = re.compile(r"inception|cifar|digits|ddpm|tf1", re.IGNORECASE)


def _docstring_lines(tree: ast.AST) -> set[int]:
    lines: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    lines.update(range(body[0].lineno, body[0].end_lineno + 1))
        # attribute docstrings (a string statement right after an assignment)
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            if isinstance(node.value.value, str):
                lines.update(range(node.lineno, node.end_lineno + 1))
    return lines


@pytest.mark.parametrize("path", sorted(CORE.glob("*.py")), ids=lambda p: p.name)
def test_core_code_names_no_plugin(path: Path) -> None:
    source = path.read_text(encoding="utf-8")
    docstrings = _docstring_lines(ast.parse(source))
    offenders = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE):
            continue
        if token.type == tokenize.STRING and token.start[0] in docstrings:
            continue
        if PLUGIN_WORDS.search(token.string):
            offenders.append(f"{path.name}:{token.start[0]}: {token.string}")
    assert not offenders, offenders


def test_loading_every_plugin_imports_no_heavy_library():
    """Plugins import scipy.stats, scikit-learn, scikit-image and the like on use, so that the
    command line starts in a second however many plugins are installed."""
    import subprocess
    import sys

    code = (
        "import sys; from geneval.plugins import get_registry; get_registry(); "
        "print(','.join(m for m in ('scipy.stats', 'scipy.optimize', 'sklearn', 'skimage', "
        "'timm', 'torchvision', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        env={**__import__("os").environ, "GENEVAL_LOAD_PLUGINS": ""},
    )  # fmt: skip
    assert out.stdout.strip() == "", out.stdout
