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


@pytest.mark.parametrize(
    "path", sorted(CORE.rglob("*.py")), ids=lambda p: p.relative_to(CORE).as_posix()
)
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


#: The pipeline's inner steps: they produce the numbers, and know nothing of how they are shown.
PIPELINE_STEPS = (
    "geneval.sources",
    "geneval.run.inputs",
    "geneval.run.passes",
    "geneval.run.collect",
)


def test_pipeline_steps_do_not_import_the_report_wing():
    """The dependency goes one way: the report wing (``geneval/report/``) reads what the
    pipeline produced, and importing the pipeline's inner steps loads none of its modules."""
    import subprocess
    import sys

    code = (
        f"import importlib, sys; [importlib.import_module(m) for m in {PIPELINE_STEPS!r}]; "
        "print(','.join(sorted(m for m in sys.modules if m.startswith('geneval.report'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout
    wing = {path.stem for path in (CORE / "report").glob("*.py")}
    assert {"formats", "html", "files", "visuals", "gates", "compare"} <= wing
    for name in PIPELINE_STEPS:
        path = CORE.parent.joinpath(*name.split(".")).with_suffix(".py")
        tree = ast.parse(path.read_text(encoding="utf-8"))
        imported: set[str] = set()  # at the top or inside a function
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                imported.add(node.module or "")
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
        assert not {m for m in imported if m.startswith("geneval.report")}, name


PLUGINS = CORE.parent / "geneval_plugins"
#: The bundled model families, each by the modules that are its own; every other module of
#: ``geneval_plugins/models/`` is shared (networks, score matching, noise levels, samplers).
MODEL_FAMILIES: dict[str, tuple[str, ...]] = {
    "ddpm": ("models/diffusion/ddpm*.py",),
    "diffusers": ("models/diffusers_pipelines/*.py",),
    "ncsn": ("models/diffusion/ncsn*.py",),
    "energy": ("models/energy/*.py",),
    "latent": ("models/latent/*.py",),
}


def _plugin_imports(path: Path) -> set[str]:
    """The ``geneval_plugins`` modules ``path`` imports, at the top, in a function or under
    ``TYPE_CHECKING``, as dotted names (``from a.b import c`` yields ``a.b`` and ``a.b.c``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.split(".")[0] == "geneval_plugins"}


def _module_file(name: str) -> Path | None:
    """The file of a dotted ``geneval_plugins`` module name, or ``None`` (a name in a module)."""
    base = CORE.parent.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _family_of(path: Path) -> str | None:
    relative = path.relative_to(PLUGINS)
    for family, patterns in MODEL_FAMILIES.items():
        if any(relative.match(pattern) for pattern in patterns):
            return family
    return None


def test_model_families_import_no_other_familys_modules():
    """A family depends on the shared modules of the models wing, never on another family's
    internals (the ebm once imported four diffusion modules, the ncsn the ddpm), and every
    import of a bundled plugin names a module that exists in the tree."""
    family_files = sorted(p for p in (PLUGINS / "models").rglob("*.py") if _family_of(p))
    assert {_family_of(p) for p in family_files} == set(MODEL_FAMILIES)
    crossings = []
    for path in family_files:
        for name in _plugin_imports(path):
            target = _module_file(name)
            if target is None:
                assert _module_file(name.rpartition(".")[0]), f"{path}: {name} does not exist"
                continue
            other = _family_of(target)
            if other is not None and other != _family_of(path):
                crossings.append(f"{path.relative_to(PLUGINS)} imports {name} ({other})")
    assert not crossings, crossings


def test_likelihood_metrics_hold_no_model_only_code():
    """Every module of the metrics wing is a metric's entry point or imported by one, and no
    model module imports the metrics wing: code only models use lives with the models (the
    AIS annealing paths are the energy models')."""
    import tomllib

    pyproject = tomllib.loads((CORE.parent / "pyproject.toml").read_text(encoding="utf-8"))
    entry_points = pyproject["project"]["entry-points"]["geneval"].values()
    metric_modules = {
        _module_file(name) for name in entry_points if name.startswith("geneval_plugins.metrics")
    }
    used_by_metrics = {
        _module_file(name) for path in metric_modules for name in _plugin_imports(path)
    }
    for path in sorted((PLUGINS / "metrics").rglob("*.py")):
        if path.name == "__init__.py":
            continue
        assert path in metric_modules | used_by_metrics, f"{path}: used by no metric"
    for path in sorted((PLUGINS / "models").rglob("*.py")):
        wrong = {n for n in _plugin_imports(path) if n.startswith("geneval_plugins.metrics")}
        assert not wrong, f"{path.relative_to(PLUGINS)} imports {sorted(wrong)}"


def test_bundled_plugins_import_only_the_sdk_and_their_own_package():
    """A bundled plugin is built as a third-party one would be: of the core it imports only
    the SDK, :mod:`geneval.plugin` (at the top, in a function or under ``TYPE_CHECKING``);
    everything else it imports is ``geneval_plugins``' own, a library, or the standard
    library."""
    offenders = []
    for path in sorted(PLUGINS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                if name.split(".")[0] == "geneval" and name != "geneval.plugin":
                    offenders.append(f"{path.relative_to(PLUGINS)}:{node.lineno}: {name}")
    assert not offenders, offenders


#: Libraries that take seconds to import: the command line's help and listing load none of them.
HEAVY_AT_START = ("torch", "numpy", "scipy", "sklearn", "PIL")


def test_cli_help_and_plugin_listing_import_no_heavy_library():
    """``geneval --help``, ``geneval run --help`` and ``geneval plugins`` run on the core's
    light modules: the commands import torch, numpy and the pipeline when they run. The
    plugins are left out (no entry point is installed in the child), so that this checks the
    core; the time of the whole start-up is measured by ``bench/bench_cli_startup.py``."""
    import json
    import subprocess
    import sys

    code = f"""
import contextlib, importlib.metadata, io, json, sys
importlib.metadata.entry_points = lambda **kw: ()  # an installation with no plugin
from geneval.cli import main
codes = []
for args in (["--help"], ["run", "--help"], ["stats", "--help"], ["plugins"], ["plugins", "-v"]):
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            main(args)
        except SystemExit as exc:
            codes.append(exc.code)
heavy = sorted(m for m in {HEAVY_AT_START!r} if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["codes"] == [0, 0, 0, 0, 0], out.stderr
    assert found["heavy"] == [], f"imported at start-up: {found['heavy']}"


#: Bundled model families whose entry-point modules still import torch when they register:
#: they subclass ``TrainableFamily`` / ``SampledModel`` and call ``training_options`` at class
#: definition, and the core's training toolkit (``geneval.training``, ``geneval.sampling``)
#: imports torch. Shrink this set as those modules become light; never grow it.
TORCH_AT_REGISTRATION: frozenset[str] = frozenset()


def test_cli_with_bundled_plugins_imports_no_heavy_library():
    """``geneval --help``, ``geneval plugins --verbose`` and ``geneval weights list`` with the
    bundled datasets, extractors and metrics loaded: their entry-point modules import torch,
    numpy, scipy, scikit-learn and PIL inside the functions that compute, load or draw, so
    registering them (names, options, needs, fields, weights files) imports none of those."""
    import json
    import subprocess
    import sys

    code = f"""
import contextlib, importlib.metadata, io, json, sys
real = importlib.metadata.entry_points
importlib.metadata.entry_points = lambda **kw: [
    ep for ep in real(**kw) if ep.name not in {sorted(TORCH_AT_REGISTRATION)!r}
]
from geneval.cli import main
codes, listing = [], io.StringIO()
weights = (["weights", "list"], ["weights", "list", "--json"])
for args in (["--help"], ["plugins", "--verbose"], *weights):
    with contextlib.redirect_stdout(listing):
        try:
            main(args)
        except SystemExit as exc:
            codes.append(exc.code)
heavy = sorted(m for m in {HEAVY_AT_START!r} if m in sys.modules)
print(json.dumps({{"codes": codes, "heavy": heavy, "listing": listing.getvalue()}}))
"""
    env = {**__import__("os").environ, "GENEVAL_LOAD_PLUGINS": ""}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["codes"] == [0, 0, 0, 0], out.stderr
    assert "pt_inception-2015-12-05-6726825d.pth" in found["listing"]  # geneval weights list
    assert "vgg16-397923af.pth" in found["listing"]
    for name in ("digits", "dsprites", "inception-v3-fid", "digits-cnn", "fid", "kid", "dci"):
        assert name in found["listing"], f"bundled plugin {name} not listed"
    assert found["heavy"] == [], f"imported at start-up: {found['heavy']}"


def test_sampler_names_are_one_table_shared_by_registration_and_implementation():
    """Each bundled family registers exactly its entry of ``SAMPLER_NAMES`` (default first),
    and the modules that build its samplers key their factories by the same names, in order."""
    from geneval.plugins import get_registry
    from geneval_plugins.models.diffusion.ddpm_samplers import SAMPLER_FACTORIES
    from geneval_plugins.models.energy.grbm_network import GRBMModel
    from geneval_plugins.models.energy.rbm_network import RBMModel
    from geneval_plugins.models.sampler_names import SAMPLER_NAMES
    from geneval_plugins.models.score_samplers import SAMPLERS as SCORE_SAMPLERS

    registry = get_registry()
    for name, names in SAMPLER_NAMES.items():
        assert tuple(registry.model(name).samplers) == names, name
    implemented = {
        "ddpm": tuple(SAMPLER_FACTORIES),
        "ncsn": tuple(SCORE_SAMPLERS),
        "rbm": tuple(RBMModel.factories),
        "grbm": tuple(GRBMModel.factories),
    }
    for name, keys in implemented.items():
        assert keys == SAMPLER_NAMES[name], name
