"""The plugin SDK (``geneval.plugin``, docs/contracts.md §2): a third-party package built on it
alone registers a metric that requires its own extractor, that extractor and a sample-only
model family, and they run end to end through ``geneval run``; ``register`` refuses an object
that lacks a required attribute, in one line, and the CLI carries on with the others; a
required extractor wins over the dataset's default and one that cannot be loaded is exit 2
naming the metric and the extractor."""

from __future__ import annotations

import ast
import importlib
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from geneval.plugins import get_registry, reset_registry

DISTRIBUTION = "geneval-sdk-demo"

#: The package, as a plugin author would write it: geneval is imported through the SDK only.
PLUGIN_SOURCE = '''
"""A third-party plugin written against geneval.plugin alone."""

import torch
import torch.nn.functional as F

from geneval.plugin import FeatureExtractor, InputError, Metric, Need, Option, hookimpl


class PooledGrey:
    """The loaded extractor: grey 2x2 average pooling, 4 features per image."""

    name = "sdk-pool"
    outputs = {"pool": 4}
    convention = "grey-pool-2x2"
    weights_sha256 = "0" * 64

    def __call__(self, images):
        grey = images.mean(dim=1, keepdim=True)
        return {"pool": F.adaptive_avg_pool2d(grey, 2).flatten(1)}


class PoolExtractor(FeatureExtractor):
    name = "sdk-pool"
    outputs = {"pool": 4}
    feature_output = "pool"
    logits_output = None
    resize_options = ()

    def load(self, *, device, weights=None, resize=None):
        return PooledGrey()


class BrokenExtractor(FeatureExtractor):
    """An extractor whose weights are missing."""

    name = "sdk-broken"
    outputs = {"pool": 4}
    feature_output = "pool"
    logits_output = None
    resize_options = ()

    def load(self, *, device, weights=None, resize=None):
        raise FileNotFoundError("weights file sdk-broken.pt is missing")


class PooledMean(Metric):
    """Mean of the samples' features of the extractor it requires."""

    name = "sdk-pooled-mean"
    higher_is_better = False
    interpretation = "Mean of the samples' pooled grey values."
    needs = (Need("features", "samples", extractor="sdk-pool", extractor_required=True),)
    options = {"scale": Option(1.0, "Multiply the mean by this factor.", low=0.0)}
    fields = {"dim": "feature dimension", "n": "number of samples"}
    uncertainty = None

    def compute(self, inputs, *, scale):
        features = inputs.features("samples")
        return {
            "value": float(features.double().mean()) * scale,
            "dim": int(features.shape[1]),
            "n": int(features.shape[0]),
        }


class NeedsBroken(PooledMean):
    name = "sdk-needs-broken"
    needs = (Need("features", "samples", extractor="sdk-broken", extractor_required=True),)


class NeedsAbsent(PooledMean):
    name = "sdk-needs-absent"
    needs = (Need("features", "samples", extractor="sdk-absent", extractor_required=True),)


class NoInterpretation:
    """Duck-typed, and missing its one-line interpretation: refused at registration."""

    name = "sdk-no-interpretation"
    higher_is_better = True
    needs = (Need("images", "samples"),)
    options = {}
    fields = {}
    uncertainty = None

    def compute(self, inputs):
        return {"value": 0.0}


class NoiseModel:
    image_shape = (1, 8, 8)
    device = torch.device("cpu")
    config = {"default_sampler": "uniform"}

    def sample(self, n, *, batch_size, generator, sampler=None, steps=None):
        return torch.rand((n, *self.image_shape), generator=generator)


class NoiseFamily:
    """A sample-only family that does not subclass: its optional attributes are filled in."""

    name = "sdk-noise"
    dataset = "digits"
    samplers = ("uniform",)

    def load(self, checkpoint, *, device):
        if checkpoint is not None:
            raise InputError("model sdk-noise has no checkpoints")
        return NoiseModel()


@hookimpl
def geneval_register_extractors(register):
    register(PoolExtractor())
    register(BrokenExtractor())


@hookimpl
def geneval_register_metrics(register):
    for metric in (PooledMean(), NeedsBroken(), NeedsAbsent(), NoInterpretation()):
        register(metric)


@hookimpl
def geneval_register_models(register):
    register(NoiseFamily())
'''


@pytest.fixture
def sdk_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The package written into ``tmp_path`` with its distribution metadata and entry point,
    importable and loaded through the ``geneval`` entry-point group like any installed one."""
    root = tmp_path / "site"
    package = root / "geneval_sdk_demo"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(PLUGIN_SOURCE)
    info = root / "geneval_sdk_demo-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {DISTRIBUTION}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text("[geneval]\nsdk-demo = geneval_sdk_demo\n")
    monkeypatch.syspath_prepend(str(root))
    importlib.invalidate_caches()
    monkeypatch.setenv("GENEVAL_LOAD_PLUGINS", DISTRIBUTION)
    reset_registry()
    yield package / "__init__.py"
    sys.modules.pop("geneval_sdk_demo", None)
    reset_registry()


def test_the_package_imports_geneval_only_through_the_sdk(sdk_package: Path) -> None:
    tree = ast.parse(sdk_package.read_text())
    modules = [node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)]
    modules += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert {m for m in modules if m.split(".")[0] == "geneval"} == {"geneval.plugin"}


def test_sdk_plugin_runs_end_to_end_and_its_required_extractor_wins(
    sdk_package: Path, run_cli, tmp_path: Path
) -> None:
    """The model samples; the reference is its dataset, digits, whose default extractor is
    digits-cnn: FID runs on digits-cnn and the SDK metric on the extractor it requires."""
    out = tmp_path / "report.json"
    res = run_cli(
        "run", "--model", "sdk-noise", "--num-samples", "24", "--metrics",
        "sdk-pooled-mean,fid", "--opt", "sdk-pooled-mean.scale=2", "--json", out, "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(out.read_text())
    assert report["config"]["reference"] == "digits:train"
    extractors = report["config"]["extractors"]
    assert extractors["sdk-pooled-mean"]["name"] == "sdk-pool"
    assert extractors["fid"]["name"] == "digits-cnn"
    result = report["metrics"]["sdk-pooled-mean"]
    assert result["dim"] == 4 and result["n"] == 24 and result["scale"] == 2.0
    # uniform noise pooled over 4x4 blocks: the mean is 0.5 (times the scale) within noise
    assert result["value"] == pytest.approx(1.0, abs=0.1)
    info = report["metric_info"]["sdk-pooled-mean"]
    assert info["interpretation"] == "Mean of the samples' pooled grey values."
    assert info["higher_is_better"] is False and info["uncertainty"] is None


def test_required_extractor_wins_over_the_extractor_option(sdk_package: Path, run_cli) -> None:
    res = run_cli(
        "run", "--samples", "digits:test", "--reference", "digits:train", "--metrics",
        "sdk-pooled-mean,fid", "--extractor", "digits-cnn", "--json", "-", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(res.out)
    assert report["config"]["extractors"]["sdk-pooled-mean"]["name"] == "sdk-pool"
    assert report["metrics"]["sdk-pooled-mean"]["dim"] == 4


def test_file_features_cannot_feed_a_metric_that_requires_its_extractor(
    sdk_package: Path, run_cli, tmp_path: Path
) -> None:
    """Features carried by an ``.npz`` are of an unknown space: a metric that requires the
    ``sdk-pool`` extractor refuses them (exit 2, one line) instead of measuring in them."""
    import numpy as np

    samples = tmp_path / "samples.npz"
    rng = np.random.default_rng(0)
    np.savez(
        samples,
        images=rng.integers(0, 256, (24, 8, 8, 1), dtype=np.uint8),
        features=rng.normal(size=(24, 4)),
    )
    res = run_cli(
        "run", "--samples", samples, "--reference", "digits:train", "--metrics",
        "sdk-pooled-mean", "--json", "-", "--quiet",
    )  # fmt: skip
    assert res.code == 2, res.err
    assert len(res.err_lines) == 1
    line = res.err_lines[0]
    assert "metric sdk-pooled-mean requires the sdk-pool extractor" in line
    assert "samples.npz" in line and "'features' array" in line


def test_sample_only_family_gets_the_defaults_and_refuses_training(
    sdk_package: Path, run_cli, tmp_path: Path
) -> None:
    from geneval.errors import GenevalWarning

    with pytest.warns(GenevalWarning, match="'sdk-no-interpretation' lacks the required"):
        family = get_registry().model("sdk-noise")
    assert family.train_options == {} and family.capabilities == () and family.arch_options == ()
    metric = get_registry().metric("sdk-pooled-mean")
    assert metric.min_samples is None and metric.allows_infinite_value is False
    assert metric.needs_for({"scale": 1.0}) == metric.needs
    res = run_cli(
        "train", "--model", "sdk-noise", "--dataset", "digits", "-o", tmp_path / "c.safetensors"
    )
    assert res.code == 2
    assert res.err_lines[-1].endswith("model sdk-noise cannot be trained (it only samples)")


def test_metric_without_interpretation_is_refused_in_one_line(sdk_package: Path) -> None:
    listed = subprocess.run(
        [sys.executable, "-m", "geneval", "plugins", "--json", "--verbose"],
        capture_output=True,
        text=True,
        check=False,
        env=_env_with(sdk_package.parent.parent),
    )
    assert listed.returncode == 0, listed.stderr
    lines = [line for line in listed.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, listed.stderr
    assert f"plugin 'sdk-demo' from distribution {DISTRIBUTION} 0.1.0: metric " in lines[0]
    assert "'sdk-no-interpretation' lacks the required attribute 'interpretation'" in lines[0]
    listing = json.loads(listed.stdout)
    names = {(row["kind"], row["name"]) for row in listing["plugins"]}
    assert ("metric", "sdk-no-interpretation") not in names
    detail = next(row["detail"] for row in listing["plugins"] if row["name"] == "sdk-pooled-mean")
    assert detail["needs"] == ["features of samples (requires extractor sdk-pool)"]
    assert {
        ("metric", "sdk-pooled-mean"),
        ("extractor", "sdk-pool"),
        ("model", "sdk-noise"),
        ("metric", "fid"),
    } <= names
    assert listing["failed"] == [
        {
            "entry_point": "sdk-demo",
            "distribution": DISTRIBUTION,
            "version": "0.1.0",
            "error": "metric 'sdk-no-interpretation' lacks the required attribute 'interpretation'",
        }
    ]


def _env_with(site: Path) -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


@pytest.mark.parametrize(
    ("metric", "named"),
    [
        ("sdk-needs-broken", "requires extractor sdk-broken, which failed to load"),
        ("sdk-needs-absent", "requires extractor sdk-absent, which is not installed"),
    ],
)
def test_required_extractor_that_cannot_load_is_exit_2(
    sdk_package: Path, run_cli, metric: str, named: str
) -> None:
    res = run_cli(
        "run", "--samples", "digits:test", "--reference", "digits:train", "--metrics",
        f"{metric},fid", "--quiet",
    )  # fmt: skip
    assert res.code == 2
    assert len(res.err_lines) == 1, res.err
    assert f"metric {metric} {named}" in res.err_lines[0]
    assert "Traceback" not in res.err


def test_need_refuses_a_required_extractor_without_a_name() -> None:
    from geneval.plugin import Need

    with pytest.raises(ValueError, match="extractor_required"):
        Need("features", extractor_required=True)


def test_the_sdk_imports_without_torch() -> None:
    code = (
        "import sys, geneval.plugin as p; "
        "assert 'torch' not in sys.modules, 'torch'; "
        "[getattr(p, n) for n in ('hookimpl', 'Metric', 'Need', 'Option', 'InputError')]; "
        "assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
