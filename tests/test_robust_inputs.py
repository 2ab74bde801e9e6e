"""Inputs that used to give a wrong number or a silent surprise now give the right number and
say what happened: image modes, output folders, non-finite metrics, statistics files without a
count or with partial provenance, resized references, animations, linked folders, warnings."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from geneval.api import Need
from geneval.io import SAMPLES_MANIFEST
from geneval.plugin import hookimpl
from geneval.sources import decode_image
from tests.fake_plugins import FakePlugins, ToyNoiseModel

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def _digits_uint8() -> np.ndarray:
    from geneval_plugins.datasets.digits import DigitsDataset

    images = DigitsDataset().load("test").images[:40, 0].numpy()  # 0..1 in steps of 1/16
    return np.round(images * 255).astype(np.uint8)


# -- image decoding ----------------------------------------------------------------------------


def test_sixteen_bit_greyscale_equals_eight_bit(run_cli, tmp_path):
    """A 16-bit PNG of value 257·v is the 8-bit image v: FID between the two folders is 0."""
    eight, sixteen = tmp_path / "eight", tmp_path / "sixteen"
    eight.mkdir()
    sixteen.mkdir()
    for i, image in enumerate(_digits_uint8()):
        Image.fromarray(image).save(eight / f"{i:03d}.png")
        Image.fromarray(image.astype(np.uint16) * 257).save(sixteen / f"{i:03d}.png")
    assert Image.open(sixteen / "000.png").mode.startswith("I")
    res = run_cli(
        "run", "--samples", sixteen, "--reference", eight, "--extractor", "digits-cnn",
        "--metrics", "fid", "--json", tmp_path / "r.json", "--quiet",
    )  # fmt: skip
    assert res.code == 0, res.err
    fid = json.loads((tmp_path / "r.json").read_text())["metrics"]["fid"]["value"]
    assert abs(fid) < 1e-6  # it was 406.8 when 16-bit pixels were clipped to white


@pytest.mark.parametrize(
    "mode, make, expected",
    [
        ("I;16", lambda a: Image.fromarray(a.astype(np.uint16) * 257), lambda a: a / 255),
        (
            "I;16B",
            lambda a: Image.frombytes("I;16B", (6, 6), (a.astype(">u2") * 257).tobytes()),
            lambda a: a / 255,
        ),
        ("I", lambda a: Image.fromarray(a.astype(np.int32) * 257, mode="I"), lambda a: a / 255),
        ("F", lambda a: Image.fromarray((a / 255).astype(np.float32)), lambda a: a / 255),
        ("LA", lambda a: Image.fromarray(np.stack([a, 255 - a], -1), mode="LA"), lambda a: a / 255),
        ("CMYK", lambda a: Image.fromarray(a).convert("CMYK"), lambda a: a / 255),
    ],
)
def test_every_mode_is_scaled_to_unit_range(mode, make, expected, tmp_path):
    a = np.arange(36, dtype=np.uint8).reshape(6, 6) * 7
    image = make(a)
    assert image.mode == mode
    path = tmp_path / "x.tiff"
    image.save(path)
    decoded = decode_image(path)
    pixels = decoded.pixels.double() / (255 if decoded.pixels.dtype == torch.uint8 else 1)
    for channel in pixels:
        np.testing.assert_allclose(channel.numpy(), expected(a.astype(np.float64)), atol=1e-6)


def test_palette_transparency_is_dropped(tmp_path):
    image = Image.fromarray(np.arange(36, dtype=np.uint8).reshape(6, 6) * 7).convert("P")
    image.info["transparency"] = 0
    image.save(tmp_path / "p.png")
    decoded = decode_image(tmp_path / "p.png").pixels
    assert decoded.shape == (3, 6, 6) and decoded.dtype == torch.uint8
    grey = np.asarray(Image.open(tmp_path / "p.png").convert("RGB"))[..., 0]
    np.testing.assert_array_equal(decoded[0].numpy(), grey)


# -- notes in the report -----------------------------------------------------------------------


def _table_notes(out: str) -> list[str]:
    return [line for line in out.splitlines() if line.startswith("note: ")]


def test_animated_images_and_resized_reference_are_noted(run_cli, tmp_path):
    folder = tmp_path / "anim"
    folder.mkdir()
    for i, image in enumerate(_digits_uint8()[:12]):
        frames = [Image.fromarray(image), Image.fromarray(255 - image)]
        frames[0].save(folder / f"{i:02d}.gif", save_all=True, append_images=frames[1:])
    big = tmp_path / "big.npy"
    np.save(big, np.kron(_digits_uint8(), np.ones((8, 8), np.uint8))[..., None])  # 64×64
    res = run_cli(
        "run", "--samples", folder, "--reference", big, "--extractor", "digits-cnn",
        "--metrics", "fid", "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "r.json").read_text())
    notes = report["warnings"]
    assert any("12 image file(s)" in n and "only the first frame" in n for n in notes), notes
    assert any("8×8" in n and "64×64" in n and "digits-cnn" in n for n in notes), notes
    metric_notes = report["metrics"]["fid"].get("warnings", [])
    assert len(_table_notes(res.out)) == len(notes) + len(metric_notes)
    assert "warning" not in res.err  # the notes are in the report, not between output lines


def test_plain_statistics_file_has_unknown_count_and_is_noted(fake, run_cli, tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 12))
    plain = tmp_path / "plain.npz"
    np.savez(plain, mu=x.mean(0), sigma=np.cov(x, rowvar=False))
    samples = tmp_path / "s.npy"
    np.save(samples, np.random.default_rng(1).integers(0, 256, (20, 6, 6, 3), dtype=np.uint8))
    res = run_cli(
        "run", "--samples", samples, "--reference", plain, "--extractor", "counting",
        "--metrics", "fid", "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["metrics"]["fid"]["n_reference"] is None  # it said 2
    assert report["inputs"]["reference"]["count"] is None
    assert "count unknown" in res.out and "(0 images)" not in res.out
    assert any("no provenance" in n for n in report["warnings"])


def test_partial_provenance_is_noted(fake, run_cli, tmp_path):
    x = np.random.default_rng(0).standard_normal((40, 12))
    partial = tmp_path / "partial.npz"
    meta = json.dumps({"extractor": "counting"})
    np.savez(partial, mu=x.mean(0), sigma=np.cov(x, rowvar=False), n=40, meta=np.array(meta))
    samples = tmp_path / "s.npy"
    np.save(samples, np.random.default_rng(1).integers(0, 256, (20, 6, 6, 3), dtype=np.uint8))
    res = run_cli(
        "run", "--samples", samples, "--reference", partial, "--metrics", "fid",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 0, res.err
    notes = json.loads((tmp_path / "r.json").read_text())["warnings"]
    assert any("does not record" in n and "resize (this run: pool-2x2)" in n for n in notes)


# -- non-finite metrics ------------------------------------------------------------------------


class NaNMetric:
    name = "nan-metric"
    higher_is_better = False
    interpretation = "always NaN"
    needs = (Need("images", "samples"),)
    options: dict = {}
    fields: dict = {}
    uncertainty = None

    def compute(self, inputs):
        return {"value": math.nan}


class NaNPlugin:
    __name__ = "nan_plugin"

    @hookimpl
    def geneval_register_metrics(self, register):
        register(NaNMetric())


def test_a_nan_metric_is_an_error_never_a_pass(fake, add_plugin, run_cli, tmp_path):
    add_plugin(NaNPlugin())
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((4, 6, 6, 3), np.uint8))
    res = run_cli(
        "run", "--samples", samples, "--metrics", "nan-metric,feat-mean", "--extractor",
        "counting", "--fail-if", "nan-metric>1", "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 3
    assert "nan-metric" in res.err_lines[0] and "non-finite" in res.err_lines[0]
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["passed"] is False and "nan-metric" in report["errors"]
    assert "feat-mean" in report["metrics"]  # the others are still reported
    assert report["gates"][0]["failed"] is True


# -- folders -----------------------------------------------------------------------------------


def test_symlinked_subfolders_are_followed_once(fake, run_cli, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6), 40 * i, np.uint8)).save(real / f"{i}.png")
    top = tmp_path / "top"
    top.mkdir()
    Image.fromarray(np.zeros((6, 6), np.uint8)).save(top / "own.png")
    (top / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(top, target_is_directory=True)  # a cycle must not loop
    res = run_cli(
        "run", "--samples", top, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert json.loads((tmp_path / "r.json").read_text())["inputs"]["samples"]["count"] == 4


def test_undecodable_folder_names_still_write_every_report(fake, run_cli, tmp_path):
    folder = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/caf\xe9"))
    folder.mkdir()
    for i in range(3):
        Image.fromarray(np.full((6, 6, 3), 50 * i, np.uint8)).save(folder / f"{i}.png")
    res = run_cli(
        "run", "--samples", folder, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", tmp_path / "r.json", "--markdown", tmp_path / "r.md",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert "caf\\udce9" in (tmp_path / "r.md").read_text(encoding="utf-8")
    assert json.loads((tmp_path / "r.json").read_text())["metrics"]["feat-mean"]["value"] >= 0


def test_sample_force_replaces_only_its_own_previous_output(fake, run_cli, tmp_path):
    out = tmp_path / "samples"
    first = run_cli("sample", "--model", "toy-noise", "-n", "6", "-o", out, "--quiet")
    assert first.code == 0, first.err
    assert len(list(out.glob("*.png"))) == 6 and (out / SAMPLES_MANIFEST).is_file()
    again = run_cli("sample", "--model", "toy-noise", "-n", "2", "-o", out, "--force", "--quiet")
    assert again.code == 0, again.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["000000.png", "000001.png", SAMPLES_MANIFEST]
    )
    counted = run_cli(
        "run", "--samples", out, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert counted.code == 0, counted.err
    assert json.loads((tmp_path / "r.json").read_text())["inputs"]["samples"]["count"] == 2


def test_sample_checks_its_folder_before_sampling(fake, run_cli, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(ToyNoiseModel, "sample", lambda self, *a, **k: calls.append(1))
    out = tmp_path / "taken"
    out.mkdir()
    (out / "mine.txt").write_text("keep", encoding="utf-8")
    res = run_cli("sample", "--model", "toy-noise", "-n", "2", "-o", out)
    assert res.code == 2 and "non-empty" in res.err and calls == []
    assert (out / "mine.txt").read_text(encoding="utf-8") == "keep"


def test_stdout_reports(fake, run_cli, tmp_path):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((4, 6, 6, 3), np.uint8))
    res = run_cli(
        "run", "--samples", samples, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", "-",
    )  # fmt: skip
    assert res.code == 0, res.err
    assert json.loads(res.out)["metrics"]["feat-mean"]["value"] == 0.0
    assert not (tmp_path / "-").exists() and not Path("-").exists()


def test_pyproject_that_is_not_utf8_is_one_line(fake, run_cli, tmp_path, monkeypatch):
    samples = tmp_path / "s.npy"
    np.save(samples, np.zeros((4, 6, 6, 3), np.uint8))
    (tmp_path / "pyproject.toml").write_bytes(b'[tool.geneval.gates]\nfail-if = ["\xff"]\n')
    monkeypatch.chdir(tmp_path)
    res = run_cli(
        "run", "--samples", samples, "--metrics", "feat-mean", "--extractor", "counting",
        "--json", tmp_path / "r.json",
    )  # fmt: skip
    assert res.code == 2 and len(res.err_lines) == 1, res.err
    assert "pyproject.toml" in res.err and "UTF-8" in res.err
    assert res.out == "" and not (tmp_path / "r.json").exists()


def _cpu_seconds(pid: int) -> float | None:
    """CPU time (user + system) a process has used so far, ``None`` where /proc is missing."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _wait_until_busy(process, cpu_seconds: float, wall_limit: float) -> None:
    """Wait until ``process`` has used ``cpu_seconds`` of CPU (a whole small run uses about 3 s,
    so it is then sampling whatever the machine's load), at most ``wall_limit`` seconds."""
    import time

    start = time.monotonic()
    while time.monotonic() - start < wall_limit and process.poll() is None:
        used = _cpu_seconds(process.pid)
        if used is None:  # no /proc: fall back to a generous wall-clock wait
            time.sleep(min(10.0, wall_limit))
            return
        if used >= cpu_seconds:
            return
        time.sleep(0.2)


@pytest.mark.parametrize("command", ["run", "sample"])
def test_interrupt_is_exit_130_and_writes_nothing(command, geneval_exe, tmp_path):
    """SIGINT in the middle of sampling: exit 130, one line, no partial output."""
    import signal
    import subprocess

    out = tmp_path / ("report.json" if command == "run" else "samples.npz")
    args = (
        ["run", "--model", "ddpm", "--metrics", "fid", "--num-samples", "1000000", "--json", out]
        if command == "run"
        else ["sample", "--model", "ddpm", "-n", "1000000", "-o", out]
    )
    env = {**os.environ, "GENEVAL_LOAD_PLUGINS": ""}
    process = subprocess.Popen(
        [*geneval_exe, *map(str, args), "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=tmp_path,
        # a test runner started in the background inherits SIGINT ignored; a user's shell
        # delivers it, so the child gets the default disposition back
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        _wait_until_busy(process, cpu_seconds=8.0, wall_limit=120.0)
        assert process.poll() is None, process.communicate()
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, (process.returncode, stderr)
    assert [line for line in stderr.splitlines() if line.strip()] == ["geneval: aborted"]
    assert stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == []
