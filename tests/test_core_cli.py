"""The core: plugin loading, runner, options, gates, reports, exit codes (docs/contracts.md)."""

from __future__ import annotations

import json
import os
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geneval.errors import GenevalWarning, InputError
from tests.fake_plugins import FakePlugins


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


@pytest.fixture
def arrays(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    samples = tmp_path / "samples.npy"
    np.save(samples, rng.integers(0, 256, size=(30, 6, 6, 3), dtype=np.uint8))
    reference = tmp_path / "reference.npz"
    np.savez(reference, images=rng.random((25, 3, 6, 6)).astype(np.float32))
    return {"samples": samples, "reference": reference}


def _sub_env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    return env


# -- plugins -----------------------------------------------------------------------------------


def test_third_party_plugin_listed_and_computed(geneval_exe, tmp_path):
    """A pip-installed package under tests/plugin_packages registers through entry points; a
    second one that raises on import is reported once and the CLI keeps working."""
    env = _sub_env(GENEVAL_LOAD_PLUGINS="geneval-demo-metric,geneval-broken-plugin")
    listed = subprocess.run(
        [*geneval_exe, "plugins", "--json"], capture_output=True, text=True, env=env, check=False
    )
    assert listed.returncode == 0, listed.stderr
    rows = json.loads(listed.stdout)["plugins"]
    demo = [r for r in rows if r["name"] == "mean-intensity"]
    assert demo == [
        {
            "kind": "metric",
            "name": "mean-intensity",
            "distribution": "geneval-demo-metric",
            "version": "1.2.3",
        }
    ]
    broken_lines = [line for line in listed.stderr.splitlines() if "geneval-broken-plugin" in line]
    assert len(broken_lines) == 1 and "broken on purpose" in broken_lines[0]

    images = np.random.default_rng(3).integers(0, 256, size=(12, 5, 5, 1), dtype=np.uint8)
    np.save(tmp_path / "x.npy", images)
    out = tmp_path / "r.json"
    ran = subprocess.run(
        [
            *geneval_exe,
            "run",
            "--samples",
            tmp_path / "x.npy",
            "--metrics",
            "mean-intensity",
            "--opt",
            "mean-intensity.scale=2",
            "--json",
            out,
            "--quiet",
        ],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    value = json.loads(out.read_text())["metrics"]["mean-intensity"]["value"]
    assert value == pytest.approx(2 * images.astype(np.float64).mean() / 255, rel=1e-6)


def _materialise_distribution(package_dir: Path, target: Path) -> None:
    """Make ``package_dir`` (a tests/plugin_packages project) importable from ``target`` with
    its entry points, without installing it into the environment: a ``.dist-info`` folder is
    all ``importlib.metadata`` needs."""
    import shutil
    import tomllib

    project = tomllib.loads((package_dir / "pyproject.toml").read_text())["project"]
    name, version = project["name"], project["version"]
    for pkg in package_dir.iterdir():
        if (pkg / "__init__.py").is_file():
            shutil.copytree(pkg, target / pkg.name)
    info = target / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = [f"{k} = {v}" for k, v in project["entry-points"]["geneval"].items()]
    (info / "entry_points.txt").write_text("[geneval]\n" + "\n".join(lines) + "\n")


def test_duplicate_metric_names_both_distributions(geneval_exe, tmp_path):
    """A second distribution registering an existing metric name is exit 2 naming both. (The
    clashing package is put on PYTHONPATH for this one process rather than installed, so it
    does not break the test environment's own geneval.)"""
    here = Path(__file__).parent / "plugin_packages" / "geneval-duplicate-fid"
    _materialise_distribution(here, tmp_path)
    env = _sub_env(
        GENEVAL_LOAD_PLUGINS="geneval-demo-metric,geneval-duplicate-fid", PYTHONPATH=str(tmp_path)
    )
    res = subprocess.run(
        [*geneval_exe, "plugins"], capture_output=True, text=True, env=env, check=False
    )
    assert res.returncode == 2
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1
    assert "geneval-demo-metric" in lines[0] and "geneval-duplicate-fid" in lines[0]
    assert "Traceback" not in res.stderr


def test_bad_plugin_name_is_skipped(add_plugin):
    from geneval.plugin import hookimpl
    from geneval.plugins import get_registry

    class Bad:
        name = "Not Valid"

    class Plugin:
        __name__ = "bad"

        @hookimpl
        def geneval_register_metrics(self, register):
            register(Bad())

    with pytest.warns(GenevalWarning, match="geneval-bad") as caught:
        add_plugin(Plugin(), distribution="geneval-bad")
    assert len(caught) == 1  # reported once
    assert "Not Valid" not in get_registry().items("metric")


def test_plugins_table_lists_bundled(run_cli):
    res = run_cli("plugins")
    assert res.code == 0
    assert any(line.split()[:2] == ["dataset", "digits"] for line in res.out.splitlines())


# -- runner ------------------------------------------------------------------------------------


def test_extractor_runs_once_per_input(fake, arrays):
    """Three metrics need the same extractor; it runs once over the samples and once over the
    reference (one batch each, since both fit in one batch)."""
    from geneval.runner import RunConfig, run_report

    report = run_report(
        RunConfig(
            metrics=["feat-mean", "feat-dist", "ref-count"],
            samples=str(arrays["samples"]),
            reference=str(arrays["reference"]),
            extractor="counting",
            batch_size=64,
        )
    )
    assert fake.extractor.calls == [30, 25]
    assert report["metrics"]["ref-count"]["value"] == 25.0
    samples = np.load(arrays["samples"]).astype(np.float64) / 255
    expected = samples.reshape(30, 2, 3, 2, 3, 3).mean(axis=(2, 4)).mean()
    assert report["metrics"]["feat-mean"]["value"] == pytest.approx(expected, rel=1e-5)


def test_extractor_batches(fake, arrays):
    from geneval.runner import RunConfig, run_report

    run_report(
        RunConfig(
            metrics=["feat-mean", "feat-dist"],
            samples=str(arrays["samples"]),
            reference=str(arrays["reference"]),
            extractor="counting",
            batch_size=8,
        )
    )
    assert fake.extractor.calls == [8, 8, 8, 6, 8, 8, 8, 1]


def test_model_run_uses_dataset_defaults_and_is_reproducible(fake, run_cli, tmp_path):
    out1, out2 = tmp_path / "a.json", tmp_path / "b.json"
    args = [
        "run",
        "--model",
        "toy-noise",
        "--num-samples",
        "50",
        "--metrics",
        "feat-mean,feat-dist",
        "--seed",
        "7",
        "--quiet",
    ]
    r1 = run_cli(*args, "--json", out1)
    r2 = run_cli(*args, "--json", out2)
    assert r1.code == 0 and r2.code == 0, r1.err
    a, b = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert a["metrics"] == b["metrics"]
    assert a["config"]["reference"] == "toyset:train"
    assert a["config"]["extractor"] == "counting"
    assert a["config"]["checkpoint"] == "bundled"
    assert a["inputs"]["reference"]["count"] == 40
    run_cli(*args[:-3], "--seed", "8", "--quiet", "--json", tmp_path / "c.json")
    assert json.loads((tmp_path / "c.json").read_text())["metrics"] != a["metrics"]


def test_sample_then_run_matches_model_run(fake, run_cli, tmp_path):
    """Model samples are quantised to 8 bits, so a saved-and-reloaded sample set scores the same."""
    assert (
        run_cli(
            "sample", "--model", "toy-noise", "-n", "20", "-o", tmp_path / "s.npz", "--seed", "3"
        ).code
        == 0
    )
    saved = np.load(tmp_path / "s.npz")["images"]
    assert saved.dtype == np.uint8 and saved.shape == (20, 6, 6, 1)
    assert (
        run_cli(
            "sample", "--model", "toy-noise", "-n", "20", "-o", tmp_path / "pngs", "--seed", "3"
        ).code
        == 0
    )
    pngs = sorted((tmp_path / "pngs").glob("*.png"))
    assert len(pngs) == 20
    assert np.array_equal(np.asarray(Image.open(pngs[4])), saved[4, :, :, 0])
    common = ["--metrics", "feat-mean", "--extractor", "counting", "--quiet"]
    direct = run_cli(
        "run",
        "--model",
        "toy-noise",
        "--num-samples",
        "20",
        "--seed",
        "3",
        "--json",
        tmp_path / "d.json",
        *common,
    )
    viafile = run_cli(
        "run", "--samples", tmp_path / "s.npz", "--json", tmp_path / "f.json", *common
    )
    viafolder = run_cli(
        "run", "--samples", tmp_path / "pngs", "--json", tmp_path / "g.json", *common
    )
    assert direct.code == viafile.code == viafolder.code == 0
    values = [
        json.loads((tmp_path / n).read_text())["metrics"]["feat-mean"]["value"]
        for n in ("d.json", "f.json", "g.json")
    ]
    assert values[0] == pytest.approx(values[1], abs=1e-7)
    assert values[0] == pytest.approx(values[2], abs=1e-7)
    again = run_cli("sample", "--model", "toy-noise", "-n", "20", "-o", tmp_path / "s.npz")
    assert again.code == 2 and "already exists" in again.err


def test_folder_source_converts_modes_and_mixed_sizes(fake, run_cli, tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 256, (6, 6), dtype=np.uint8), mode="L").save(folder / "a.png")
    Image.fromarray(rng.integers(0, 256, (6, 6, 4), dtype=np.uint8), mode="RGBA").save(
        folder / "b.png"
    )
    Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).convert("P").save(
        folder / "sub" / "c.bmp"
    )
    Image.fromarray(rng.integers(0, 256, (10, 4, 3), dtype=np.uint8)).save(folder / "d.JPG")
    (folder / "notes.txt").write_text("not an image")
    res = run_cli(
        "run",
        "--samples",
        folder,
        "--metrics",
        "feat-mean",
        "--extractor",
        "counting",
        "--json",
        tmp_path / "r.json",
        "--quiet",
    )
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "r.json").read_text())["inputs"]["samples"]["count"] == 4
    assert sum(fake.extractor.calls) == 4  # one call per same-size group


def test_reference_statistics_file(fake, run_cli, arrays, tmp_path):
    stats = tmp_path / "ref.npz"
    made = run_cli(
        "stats",
        arrays["reference"],
        "-o",
        stats,
        "--extractor",
        "counting",
        "--features",
        "--quiet",
    )
    assert made.code == 0, made.err
    base = ["run", "--samples", arrays["samples"], "--extractor", "counting", "--quiet"]
    direct = run_cli(
        *base,
        "--metrics",
        "feat-dist,ref-count",
        "--reference",
        arrays["reference"],
        "--json",
        tmp_path / "a.json",
    )
    cached = run_cli(
        *base,
        "--metrics",
        "feat-dist,ref-count",
        "--reference",
        stats,
        "--json",
        tmp_path / "b.json",
    )
    assert direct.code == cached.code == 0, cached.err
    a = json.loads((tmp_path / "a.json").read_text())["metrics"]
    b = json.loads((tmp_path / "b.json").read_text())["metrics"]
    assert a["feat-dist"]["value"] == pytest.approx(b["feat-dist"]["value"], rel=1e-9, abs=1e-12)
    assert a["ref-count"]["value"] == b["ref-count"]["value"] == 25
    # Without features, a metric needing per-sample reference features is refused.
    run_cli("stats", arrays["reference"], "-o", tmp_path / "plain.npz", "--extractor", "counting")
    res = run_cli(*base, "--metrics", "ref-count", "--reference", tmp_path / "plain.npz")
    assert res.code == 2 and len(res.err_lines) == 1


def test_stats_provenance_mismatch(fake, run_cli, arrays, tmp_path):
    from geneval.feature_stats import FeatureStatistics, make_meta, save_stats

    path = tmp_path / "other.npz"
    save_stats(
        path,
        FeatureStatistics.from_features(np.random.rand(10, 12)),
        make_meta(
            extractor="counting", output="feat", weights_sha256="f" * 64, convention="pool-2x2"
        ),
        force=False,
    )
    res = run_cli(
        "run",
        "--samples",
        arrays["samples"],
        "--reference",
        path,
        "--metrics",
        "feat-dist",
        "--extractor",
        "counting",
    )
    assert res.code == 2
    assert res.err_lines[-1].count("weights_sha256") == 2 and "f" * 64 in res.err_lines[-1]


# -- exit codes and errors ---------------------------------------------------------------------


def test_gate_exit_codes_and_reports(fake, run_cli, arrays, tmp_path):
    base = [
        "run",
        "--samples",
        arrays["samples"],
        "--reference",
        arrays["reference"],
        "--extractor",
        "counting",
        "--metrics",
        "feat-mean,ref-count",
        "--quiet",
    ]
    ok = run_cli(*base, "--fail-if", "ref-count<10", "--json", tmp_path / "ok.json")
    assert ok.code == 0
    report = json.loads((tmp_path / "ok.json").read_text())
    assert {"geneval_version", "config", "inputs", "metrics", "timings", "gates", "passed"} <= set(
        report
    )
    assert {"samples", "reference", "extractor", "resize", "seed", "device"} <= set(
        report["config"]
    )
    assert report["passed"] is True and report["gates"] == [
        {"expr": "ref-count<10", "source": "--fail-if", "failed": False, "value": 25.0}
    ]
    assert "gate ref-count<10 (from --fail-if): passed" in ok.out

    gates_file = tmp_path / "gates.toml"
    gates_file.write_text('fail-if = ["feat-mean>=0", "ref-count<=10"]\n')
    bad = run_cli(
        *base,
        "--fail-if",
        "ref-count>20",
        "--gates",
        gates_file,
        "--junit",
        tmp_path / "g.xml",
        "--markdown",
        tmp_path / "g.md",
        "--json",
        tmp_path / "g.json",
    )
    assert bad.code == 1
    suite = ET.parse(tmp_path / "g.xml").getroot()
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["ref-count>20", "feat-mean>=0", "ref-count<=10"]
    assert [c.find("failure") is not None for c in cases] == [True, True, False]
    sources = [c.find("properties/property[@name='source']").get("value") for c in cases]
    assert sources == ["--fail-if", str(gates_file), str(gates_file)]
    assert str(gates_file) in cases[1].find("failure").get("message")
    assert suite.get("failures") == "2"
    markdown = (tmp_path / "g.md").read_text()
    assert "| ref-count | 25" in markdown
    assert f"| `feat-mean>=0` | {gates_file} |" in markdown
    assert json.loads((tmp_path / "g.json").read_text())["passed"] is False

    again = run_cli(*base, "--json", tmp_path / "ok.json")
    assert again.code == 2 and "--force" in again.err
    forced = run_cli(*base, "--json", tmp_path / "ok.json", "--force")
    assert forced.code == 0


def test_pyproject_gates(fake, run_cli, arrays, tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.geneval.gates]\nfail-if = ["ref-count>20", "fid>30"]\n'
    )
    monkeypatch.chdir(tmp_path)
    res = run_cli(
        "run",
        "--samples",
        arrays["samples"],
        "--reference",
        arrays["reference"],
        "--extractor",
        "counting",
        "--metrics",
        "ref-count",
        "--quiet",
    )
    assert res.code == 1  # the fid gate does not apply: fid is not computed by this run
    assert "gate ref-count>20 (from pyproject.toml [tool.geneval.gates]): FAILED" in res.out


def test_plugin_raising_is_exit_3_and_others_report(fake, run_cli, arrays, tmp_path):
    res = run_cli(
        "run",
        "--samples",
        arrays["samples"],
        "--metrics",
        "boom,feat-mean",
        "--extractor",
        "counting",
        "--json",
        tmp_path / "r.json",
        "--quiet",
    )
    assert res.code == 3
    report = json.loads((tmp_path / "r.json").read_text())
    assert "feat-mean" in report["metrics"] and "boom" in report["errors"]
    assert "always fails" in report["errors"]["boom"]
    assert "Traceback" not in res.err


def _corrupt_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "corrupt"
    folder.mkdir()
    Image.fromarray(np.zeros((6, 6, 3), np.uint8)).save(folder / "good.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    return folder


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "empty",
        "corrupt",
        "shape",
        "dtype",
        "range",
        "metric",
        "optkey",
        "optvalue",
        "gate",
        "gatemetric",
        "resize",
        "device",
        "reference",
    ],
)
def test_usage_errors_are_one_line_exit_2(case, fake, run_cli, arrays, tmp_path):
    samples = arrays["samples"]
    extra: list[str] = []
    metrics = "feat-mean"
    if case == "missing":
        samples = tmp_path / "nowhere"
    elif case == "empty":
        samples = tmp_path / "empty"
        samples.mkdir()
    elif case == "corrupt":
        samples = _corrupt_folder(tmp_path)
    elif case == "shape":
        samples = tmp_path / "s.npy"
        np.save(samples, np.zeros((4, 5, 6, 7), np.uint8))
    elif case == "dtype":
        samples = tmp_path / "s.npy"
        np.save(samples, np.zeros((4, 6, 6, 3), np.int32))
    elif case == "range":
        samples = tmp_path / "s.npy"
        np.save(samples, np.full((4, 6, 6, 3), 1.5, np.float32))
    elif case == "metric":
        metrics = "feat-mean,no-such-metric"
    elif case == "optkey":
        extra = ["--opt", "feat-mean.nope=1"]
    elif case == "optvalue":
        metrics = "feat-mean,ref-count"
        extra = ["--opt", "ref-count.offset=1.5", "--reference", arrays["reference"]]
    elif case == "gate":
        extra = ["--fail-if", "feat-mean=>3"]
    elif case == "gatemetric":
        extra = ["--fail-if", "fid>3"]
    elif case == "resize":
        extra = ["--resize", "tf1"]
    elif case == "device":
        extra = ["--device", "tpu"]
    elif case == "reference":
        metrics = "feat-dist"
        extra = ["--reference", "no-such-dataset:train"]
    res = run_cli(
        "run", "--samples", samples, "--metrics", metrics, "--extractor", "counting", *extra
    )
    assert res.code == 2, (res.out, res.err)
    assert len(res.err_lines) == 1, res.err
    assert res.err_lines[0].startswith("geneval: error: ")
    assert "Traceback" not in res.err
    culprit = {
        "missing": "nowhere",
        "empty": "empty",
        "corrupt": "broken.png",
        "shape": "(4, 5, 6, 7)",
        "dtype": "int32",
        "range": "1.5",
        "metric": "no-such-metric",
        "optkey": "nope",
        "optvalue": "1.5",
        "gate": "feat-mean=>3",
        "gatemetric": "fid",
        "resize": "--resize",
        "device": "tpu",
        "reference": "no-such-dataset",
    }[case]
    assert culprit in res.err_lines[0]


def test_debug_shows_traceback(fake, run_cli, tmp_path):
    res = run_cli("run", "--samples", tmp_path / "nowhere", "--metrics", "feat-mean", "--debug")
    assert res.code == 2 and "Traceback" in res.err


def test_train_refuses_to_overwrite(fake, run_cli, tmp_path):
    ckpt = tmp_path / "m.safetensors"
    ckpt.write_bytes(b"keep me")
    res = run_cli("train", "--model", "toy-noise", "--dataset", "toyset", "-o", ckpt)
    assert res.code == 2 and "--force" in res.err
    assert ckpt.read_bytes() == b"keep me"


def test_deprecated_inception_weights_still_works_with_a_note(fake, run_cli, arrays, tmp_path):
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    res = run_cli(
        "run", "--samples", arrays["samples"], "--extractor", "counting", "--metrics",
        "feat-mean", "--inception-weights", weights, "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    notes = [*report.get("warnings", []), res.err]
    assert any("--inception-weights is deprecated: use --extractor-weights" in n for n in notes)


def test_gates_accept_the_options_every_report_holds():
    from geneval.plugins import get_registry
    from geneval.report.gates import check_gate_metrics, parse_gate

    kid = get_registry().metric("kid")
    check_gate_metrics([parse_gate("kid.degree>2")], {"kid": kid})
    check_gate_metrics([parse_gate("kid.subset_size<100")], {"kid": kid})
    with pytest.raises(InputError, match="no field 'nosuch'"):
        check_gate_metrics([parse_gate("kid.nosuch>2")], {"kid": kid})
