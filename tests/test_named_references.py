"""Named references beyond CIFAR-10: clean-fid's published statistics by name, resolution and
convention; download from a local server, offline message, and ``geneval references list``."""

from __future__ import annotations

import functools
import hashlib
import http.server
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from geneval.errors import InputError
from geneval.plugin import hookimpl
from geneval_plugins.extractors.published_stats import (
    CLEANFID_MODES,
    MIRROR_ENV,
    PUBLISHED_STATS,
    PublishedStats,
    fetch_reference_stats,
    lookup,
)
from tests.fake_plugins import CountingExtractor
from tests.inception_fixtures import inception_weights_fixture, torch_home_fixture  # noqa: F401

INCEPTION = "inception-v3-fid"


def _cleanfid_readme_table() -> set[tuple[str, int, str, str]]:
    """(name, resolution, split, mode) of every row of clean-fid's own table of precomputed
    statistics, read from the installed distribution's description (its README)."""
    description = importlib.metadata.metadata("clean-fid").get_payload()  # type: ignore[attr-defined]
    rows = set()
    for line in description.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not re.fullmatch(r"[\d, ]+", cells[2]):
            continue
        name = re.search(r"`([^`]+)`", cells[1])
        split = re.search(r"`([^`]+)`", cells[3])
        modes = re.findall(r"`([^`]+)`", cells[5])
        assert name and split and modes, line
        for res in cells[2].split(","):
            for mode in modes:
                rows.add((name.group(1), int(res), split.group(1), mode))
    return rows


def _cleanfid_url(name: str, res: int, mode: str, split: str) -> str:
    """The URL clean-fid itself downloads, captured from ``get_reference_statistics``."""
    import cleanfid.features

    seen: list[str] = []

    def capture(local_folder: str, url: str) -> str:
        seen.append(url)
        raise LookupError("captured")

    original = cleanfid.features.check_download_url
    cleanfid.features.check_download_url = capture
    try:
        with pytest.raises(LookupError):
            cleanfid.features.get_reference_statistics(name, res, mode=mode, split=split)
    finally:
        cleanfid.features.check_download_url = original
    (url,) = seen
    return re.sub(r"(?<!:)//+", "/", url)  # clean-fid joins base/ and /file: one slash serves


def test_table_is_clean_fids_table_with_clean_fids_urls() -> None:
    published = _cleanfid_readme_table()
    assert ("ffhq", 256, "trainval70k", "legacy_tensorflow") in published  # the parse works
    assert len(published) == 53  # 17 rows of its table, by resolution and mode
    mode_to_convention = {mode: convention for convention, mode in CLEANFID_MODES.items()}
    ours = {}
    for (name, split, extractor, convention, res), entry in PUBLISHED_STATS.items():
        assert extractor == INCEPTION
        if entry.source == "TTUR":
            continue
        mode = CLEANFID_MODES[convention]
        assert entry.source == f"clean-fid ({mode} mode)"
        ours[(name, res, split, mode)] = entry
    # Every file clean-fid publishes is reachable, except the TF-mode CIFAR-10 train file,
    # which TTUR's file (the original TF code's) serves for tf1.
    assert set(ours) == published - {("cifar10", 32, "train", "legacy_tensorflow")}
    for (name, res, split, mode), entry in ours.items():
        assert entry.url == _cleanfid_url(name, res, mode, split)
        assert entry.resolution == res
    assert PUBLISHED_STATS[("cifar10", "train", INCEPTION, "tf1", 32)].source == "TTUR"
    for name, res, split, mode in published:
        assert (name, split, INCEPTION, mode_to_convention[mode], res) in PUBLISHED_STATS


def test_names_resolve_by_split_resolution_and_convention() -> None:
    key, entry = lookup("ffhq", "trainval70k", INCEPTION, "clean")
    assert key == ("ffhq", "trainval70k", INCEPTION, "clean", 1024)  # the native resolution
    assert entry.filename == "ffhq_clean_trainval70k_1024.npz"
    key, entry = lookup("FFHQ", "trainval70k,res=256", INCEPTION, "pytorch-fid")
    assert entry.filename == "ffhq_legacy_pytorch_trainval70k_256.npz"
    _, entry = lookup("lsun_church", "trainfull", INCEPTION, "clean")
    assert (
        entry.url == "https://www.cs.cmu.edu/~clean-fid/stats/lsun_church_clean_trainfull_256.npz"
    )
    _, entry = lookup("afhq_dog", "train", INCEPTION, "tf1")
    assert entry.filename == "afhq_dog_legacy_tensorflow_train_512.npz"
    assert lookup("imagenet", "val", INCEPTION, "clean") is None
    assert lookup("ffhq", "trainval", "dinov2-vitb14", "tf1") is None
    with pytest.raises(InputError, match=r"published: .*ffhq:trainval70k,res=256 \(--resize clean"):
        lookup("ffhq", "train", INCEPTION, "clean")  # FFHQ has no train split
    with pytest.raises(InputError, match=r"--resize tf1.*lsun_church:trainfull \(--resize clean\)"):
        lookup("lsun_church", "trainfull", INCEPTION, "tf1")  # published in clean mode only
    with pytest.raises(InputError, match="at 512 px"):
        lookup("ffhq", "trainval,res=512", INCEPTION, "clean")
    with pytest.raises(InputError, match="takes res=PIXELS"):
        lookup("ffhq", "trainval,size=256", INCEPTION, "clean")


def _stats_file(path: Path, seed: int = 0, dim: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal(dim)
    variances = rng.uniform(0.5, 2.0, dim)
    np.savez(path, mu=mu, sigma=np.diag(variances))
    return mu, variances


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path, list[str]]]:
    """A local HTTP server of a folder: (base URL, folder, paths requested)."""
    folder = tmp_path / "served"
    folder.mkdir()
    requested: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            requested.append(self.path)

    handler = functools.partial(Handler, directory=str(folder))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/stats/", folder, requested
    finally:
        httpd.shutdown()
        httpd.server_close()


class _PublishingExtractor(CountingExtractor):
    """The core tests' 12-d pooling extractor, with published statistics looked up in the
    table exactly as ``inception-v3-fid`` looks up its own."""

    def published_stats(self, dataset: str, split: str | None, convention: str) -> Path | None:
        return fetch_reference_stats(dataset, split or "train", self.name, "pool-2x2")


class _Plugin:
    __name__ = "publishing_plugin"

    @hookimpl
    def geneval_register_extractors(self, register) -> None:
        register(_PublishingExtractor())


def test_named_reference_is_downloaded_checked_and_used_by_a_run(
    server: tuple[str, Path, list[str]],
    add_plugin,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """A table entry served by a local HTTP server: the run downloads it into the cache,
    checks it and computes FID against it; the value is the closed form on the same moments."""
    base, folder, requested = server
    (folder / "stats").mkdir()
    served = folder / "stats" / "tinybench_train_8.npz"
    mu_r, var_r = _stats_file(served, seed=5, dim=12)
    key = ("tinybench", "train", "counting", "pool-2x2", 8)
    entry = PublishedStats("https://example.invalid/" + served.name, served.name, "test", dim=12)
    monkeypatch.setitem(PUBLISHED_STATS, key, entry)
    monkeypatch.setenv(MIRROR_ENV, base)
    add_plugin(_Plugin())
    images = np.random.default_rng(2).integers(0, 256, size=(40, 8, 8, 3), dtype=np.uint8)
    samples = tmp_path / "samples.npy"
    np.save(samples, images)
    res = run_cli(
        "run", "--samples", samples, "--reference", "tinybench:train", "--metrics", "fid",
        "--extractor", "counting", "--device", "cpu", "--json", "-",
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(res.out)
    cached = Path(os.environ["GENEVAL_CACHE"]) / "reference_stats" / served.name
    assert cached.read_bytes() == served.read_bytes()
    assert cached.with_name(served.name + ".sha256").read_text().split()[0] == (
        hashlib.sha256(served.read_bytes()).hexdigest()
    )
    assert requested == ["/stats/" + served.name]
    # Independent features: 2×2 average pooling of each channel of the [0, 1] images.
    x = images.astype(np.float64).transpose(0, 3, 1, 2) / 255
    feats = x.reshape(40, 3, 2, 4, 2, 4).mean(axis=(3, 5)).reshape(40, 12)
    mu_s, sigma_s = feats.mean(axis=0), np.cov(feats, rowvar=False)
    root = np.sqrt(var_r)
    eig = np.clip(np.linalg.eigvalsh(root[:, None] * sigma_s * root[None, :]), 0, None)
    expected = ((mu_s - mu_r) ** 2).sum() + np.trace(sigma_s) + var_r.sum() - 2 * np.sqrt(eig).sum()
    assert report["metrics"]["fid"]["value"] == pytest.approx(expected, rel=1e-5)
    # Later runs read the cached, checked file: no new request.
    assert fetch_reference_stats("tinybench", "train", "counting", "pool-2x2") == cached
    assert len(requested) == 1
    served.write_bytes(b"changed on the server")
    cached.write_bytes(served.read_bytes())  # a cached copy that changed is refused
    with pytest.raises(InputError, match="sha256"):
        fetch_reference_stats("tinybench", "train", "counting", "pool-2x2")


@pytest.mark.slow
def test_named_reference_downloads_checks_and_serves_a_run(
    server: tuple[str, Path, list[str]],
    torch_home: Path,
    run_cli,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    base, folder, requested = server
    (folder / "stats").mkdir()
    served = folder / "stats" / "ffhq_clean_trainval70k_256.npz"
    mu_r, var_r = _stats_file(served)
    monkeypatch.setenv(MIRROR_ENV, base)
    samples = tmp_path / "samples.npy"
    rng = np.random.default_rng(1)
    np.save(samples, rng.integers(0, 256, size=(6, 24, 24, 3), dtype=np.uint8))
    common = ["--extractor", INCEPTION, "--resize", "clean", "--device", "cpu"]
    res = run_cli(
        "run", "--samples", samples, "--reference", "ffhq:trainval70k,res=256",
        "--metrics", "fid", "--json", "-", *common,
    )  # fmt: skip
    assert res.code == 0, res.err
    report = json.loads(res.out)
    cached = Path(os.environ["GENEVAL_CACHE"]) / "reference_stats" / served.name
    assert cached.read_bytes() == served.read_bytes()
    assert requested == ["/stats/ffhq_clean_trainval70k_256.npz"]
    assert report["inputs"]["reference"]["description"] == "ffhq:trainval70k,res=256"
    # The FID is that of the samples' own statistics against the served ones:
    # ‖μ_s − μ_r‖² + tr Σ_s + tr Σ_r − 2 Σ √λ(D^½ Σ_s D^½), with Σ_r = D diagonal.
    out = tmp_path / "samples_stats.npz"
    assert run_cli("stats", samples, "-o", out, *common).code == 0
    with np.load(out) as own:
        mu_s, sigma_s = own["mu"], own["sigma"]
    root = np.sqrt(var_r)
    eig = np.clip(np.linalg.eigvalsh(root[:, None] * sigma_s * root[None, :]), 0, None)
    expected = ((mu_s - mu_r) ** 2).sum() + np.trace(sigma_s) + var_r.sum() - 2 * np.sqrt(eig).sum()
    assert report["metrics"]["fid"]["value"] == pytest.approx(expected, rel=1e-6)
    # Later lookups read the cached file: no new request.
    assert fetch_reference_stats("ffhq", "trainval70k,res=256", INCEPTION, "clean") == cached
    assert len(requested) == 1


def test_offline_reference_says_where_to_put_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(MIRROR_ENV, f"http://127.0.0.1:{port}/stats")
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "cache"))
    with pytest.raises(InputError) as err:
        fetch_reference_stats("metfaces", "train", INCEPTION, "pytorch-fid")
    message = str(err.value)
    assert "\n" not in message
    assert f"http://127.0.0.1:{port}/stats/metfaces_legacy_pytorch_train_1024.npz" in message
    target = tmp_path / "cache" / "reference_stats" / "metfaces_legacy_pytorch_train_1024.npz"
    assert f"put it at {target}" in message and MIRROR_ENV in message
    assert "metfaces:train" in message and "1024 px" in message
    assert not target.exists()
    # The file placed there by hand is then used, offline.
    _stats_file(target, seed=3)
    assert fetch_reference_stats("metfaces", "train", INCEPTION, "pytorch-fid") == target


def test_references_list_is_torch_free_and_complete(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    placed = cache / "reference_stats" / "cat2dog_clean_test_256.npz"
    placed.parent.mkdir(parents=True)
    placed.write_bytes(b"placed by hand")
    code = """
import contextlib, io, json, sys
from geneval.cli import main
out = io.StringIO()
for args in (["references", "list", "--json"], ["references", "list"]):
    with contextlib.redirect_stdout(out):
        try:
            main(args)
        except SystemExit as exc:
            assert exc.code in (0, None), exc.code
    out.write("\\n@@\\n")
heavy = sorted(m for m in ("torch", "numpy", "scipy", "sklearn", "PIL") if m in sys.modules)
print(json.dumps({"out": out.getvalue(), "heavy": heavy}))
"""
    env = {**os.environ, "GENEVAL_CACHE": str(cache), "GENEVAL_LOAD_PLUGINS": ""}
    env.pop(MIRROR_ENV, None)
    done = subprocess.run(  # outside the checkout: an in-tree *.egg-info cannot shadow
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env,
        check=True,
        cwd=tmp_path,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    as_json, table, _ = result["out"].split("\n@@\n")
    rows = json.loads(as_json)["references"]
    assert len(rows) == len(PUBLISHED_STATS)
    by_file = {Path(row["path"]).name: row for row in rows}
    for (name, split, extractor, convention, res), entry in PUBLISHED_STATS.items():
        row = by_file[entry.filename]
        assert (row["extractor"], row["convention"], row["resolution"]) == (
            extractor,
            convention,
            res,
        )
        assert row["url"] == entry.url and row["source"] == entry.source
        assert row["name"] == (
            f"{name}:{split}" if entry.default_resolution else f"{name}:{split},res={res}"
        )
        assert row["cached"] == (entry.filename == placed.name)
        assert row["plugin"].endswith(":published-stats")
    lines = table.strip().splitlines()
    assert lines[0].split() == ["reference", "extractor", "resize", "res", "cached", "url"]
    assert len(lines) == 1 + len(PUBLISHED_STATS)
    assert any(
        line.split() == ["ffhq:trainval70k,res=256", INCEPTION, "tf1", "256", "no",
                         "https://www.cs.cmu.edu/~clean-fid/stats/"
                         "ffhq_legacy_tensorflow_trainval70k_256.npz"]
        for line in lines
    )  # fmt: skip
    assert any(
        line.split()[:5] == ["cat2dog:test", INCEPTION, "clean", "256", "yes"] for line in lines
    )
