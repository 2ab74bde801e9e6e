"""Shared fixtures: bundled plugins only unless a test asks for more; in-process CLI calls."""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from geneval.plugins import Provider, get_registry, reset_registry


@pytest.fixture(autouse=True)
def _bundled_plugins_only(monkeypatch: pytest.MonkeyPatch):
    """Third-party plugins installed in the environment stay out of tests that don't ask."""
    monkeypatch.setenv("GENEVAL_LOAD_PLUGINS", "")
    reset_registry()
    yield
    reset_registry()


@pytest.fixture(autouse=True)
def _private_cache(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory):
    """Each test gets an empty ``$GENEVAL_CACHE``: no feature cache entry or file hash leaks
    between tests (or from the user's own cache)."""
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path_factory.mktemp("geneval-cache")))


@pytest.fixture
def add_plugin() -> Callable[[object], None]:
    """Register a plugin module/object into the process-wide registry, as a fake distribution."""

    def add(plugin: object, distribution: str = "geneval-tests") -> None:
        get_registry().add_plugin(
            plugin, Provider(distribution, "0.0.0", getattr(plugin, "__name__", "p"))
        )

    return add


@dataclass
class CliResult:
    code: int
    out: str
    err: str

    @property
    def err_lines(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.strip()]


@pytest.fixture
def run_cli(capsys: pytest.CaptureFixture[str]) -> Callable[..., CliResult]:
    """Call ``geneval ARGS`` in-process; returns exit code, stdout and stderr."""
    from geneval.cli import main

    def call(*args: str) -> CliResult:
        capsys.readouterr()
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        captured = capsys.readouterr()
        return CliResult(code, captured.out, captured.err)

    return call


@pytest.fixture
def geneval_exe() -> list[str]:
    """The command line that runs geneval in a subprocess with this interpreter."""
    return [sys.executable, "-m", "geneval"]
