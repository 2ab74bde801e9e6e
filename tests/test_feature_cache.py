"""The content-addressed feature cache: a hit skips extraction (counted), any change of the
bytes, the weights or the resize convention is a miss, a broken entry is discarded and
recomputed, the folder stays within its bound, and the CLI manages it."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import geneval
import geneval.cache
from geneval import feature_cache
from geneval.distributed import DistContext
from geneval.feature_cache import (
    CachedPart,
    FeatureCache,
    FileHashIndex,
    entry_fields,
    entry_key,
    parse_size,
)
from geneval.feature_stats import FeatureStatistics
from geneval.hookspecs import hookimpl
from geneval.sources import FolderSource
from tests.fake_plugins import FakePlugins


class WeightedLoaded:
    """6-d features: channel means and first-column means (a ``flipped`` convention mirrors
    the images first, so the features change), times a scale read from the weights file."""

    name = "weighted"
    outputs = {"feat": 6, "logit": 2}

    def __init__(self, calls: list[int], scale: float, sha: str, convention: str) -> None:
        self.calls, self.scale = calls, scale
        self.weights_sha256, self.convention = sha, convention

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        self.calls.append(int(images.shape[0]))
        x = images if images.shape[1] == 3 else images.repeat(1, 3, 1, 1)
        if self.convention == "flipped":
            x = x.flip(-1)
        feat = torch.cat([x.mean((2, 3)), x[:, :, :, 0].mean(2)], 1) * self.scale
        return {"feat": feat, "logit": feat[:, :2]}


class WeightedExtractor:
    name = "weighted"
    outputs = WeightedLoaded.outputs
    feature_output = "feat"
    logits_output = "logit"
    resize_options = ("plain", "flipped")

    def __init__(self) -> None:
        self.calls: list[int] = []

    def load(self, *, device, weights=None, resize=None):
        scale, sha = 1.0, "1" * 64
        if weights is not None:
            data = Path(weights).read_bytes()
            scale, sha = float(data.decode()), hashlib.sha256(data).hexdigest()
        return WeightedLoaded(self.calls, scale, sha, resize or "plain")


class WeightedPlugin:
    __name__ = "weighted_plugin"

    def __init__(self) -> None:
        self.extractor = WeightedExtractor()

    @hookimpl
    def geneval_register_extractors(self, register):
        register(self.extractor)


@pytest.fixture
def weighted(add_plugin) -> WeightedExtractor:
    add_plugin(FakePlugins(), "geneval-tests-fake")
    plugin = WeightedPlugin()
    add_plugin(plugin)
    return plugin.extractor


def _png_folder(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    return _png_folder(tmp_path / "s", 21, 1), _png_folder(tmp_path / "r", 17, 2)


METRICS = ["feat-mean", "feat-dist"]  # per-sample rows of the samples; moments of both


def _run(samples, reference, **kw):
    return geneval.evaluate(samples, reference, METRICS, extractor="weighted", batch_size=8, **kw)


def _metrics(report):
    return {k: v["value"] for k, v in report["metrics"].items()}


def test_a_hit_skips_extraction_and_gives_the_same_numbers(weighted, folders):
    first = _run(*folders)
    assert sum(weighted.calls) == 21 + 17
    assert first["inputs"]["samples"]["cache"] == {"weighted": "miss"}
    weighted.calls.clear()
    second = _run(*folders)
    assert weighted.calls == []  # neither folder was read through the extractor
    assert second["inputs"]["samples"]["cache"] == {"weighted": "hit"}
    assert second["inputs"]["reference"]["cache"] == {"weighted": "hit"}
    assert _metrics(second) == _metrics(first)
    assert second["inputs"]["samples"]["count"] == 21
    off = _run(*folders, cache=False)
    assert sum(weighted.calls) == 38 and "cache" not in off["inputs"]["samples"]
    assert _metrics(off) == _metrics(first)


def test_a_fresh_copy_of_the_same_files_hits(weighted, folders, tmp_path):
    _run(*folders)
    copies = [shutil.copytree(f, tmp_path / "checkout" / f.name) for f in folders]
    for path in copies[0].iterdir():  # a checkout gives every file a new modification time
        os.utime(path, ns=(1, 1))
    weighted.calls.clear()
    assert _run(*copies)["inputs"]["samples"]["cache"] == {"weighted": "hit"}
    assert weighted.calls == []


def test_a_changed_file_is_a_miss_never_a_stale_hit(weighted, folders):
    samples, reference = folders
    before = _metrics(_run(samples, reference))
    target = samples / "3.png"
    stat = target.stat()
    pixels = np.asarray(Image.open(target)).copy()
    pixels[0, 0] = 255 - pixels[0, 0]
    Image.fromarray(pixels).save(target)
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # same mtime, same size
    weighted.calls.clear()
    after = _run(samples, reference)
    assert after["inputs"]["samples"]["cache"] == {"weighted": "miss"}
    assert after["inputs"]["reference"]["cache"] == {"weighted": "hit"}
    assert sum(weighted.calls) == 21
    assert _metrics(after) != before
    assert _metrics(after) == _metrics(_run(samples, reference, cache=False))


def test_the_index_rehashes_a_same_size_rewrite_with_its_old_mtime(tmp_path, monkeypatch):
    monkeypatch.setattr(geneval.cache, "RACY_NS", 0)  # record files however fresh
    path = tmp_path / "a.bin"
    path.write_bytes(b"aaaa")
    index = FileHashIndex(tmp_path / "files.sqlite")
    assert index.hashes([path]) == [hashlib.sha256(b"aaaa").hexdigest()]
    stat = path.stat()
    path.write_bytes(b"bbbb")
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert path.stat().st_size == stat.st_size and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert index.hashes([path]) == [hashlib.sha256(b"bbbb").hexdigest()]  # ctime moved


def test_the_index_does_not_record_files_written_just_now(tmp_path):
    path = tmp_path / "a.bin"
    path.write_bytes(b"aaaa")
    index = FileHashIndex(tmp_path / "files.sqlite")
    index.hashes([path])
    import sqlite3

    if (tmp_path / "files.sqlite").exists():  # created only when something is recorded
        with sqlite3.connect(tmp_path / "files.sqlite") as conn:
            assert conn.execute("SELECT COUNT(*) FROM files").fetchone() == (0,)


def test_changed_weights_or_convention_are_misses(weighted, folders, tmp_path):
    one, two = tmp_path / "w1", tmp_path / "w2"
    one.write_text("1.0")
    two.write_text("2.0")
    base = _metrics(_run(*folders, extractor_weights=one))
    weighted.calls.clear()
    other = _run(*folders, extractor_weights=two)
    assert sum(weighted.calls) == 38 and _metrics(other) != base
    weighted.calls.clear()
    flipped = _run(*folders, extractor_weights=one, resize="flipped")
    assert sum(weighted.calls) == 38 and _metrics(flipped) != base
    weighted.calls.clear()
    assert _metrics(_run(*folders, extractor_weights=one)) == base
    assert weighted.calls == []


def _entries() -> list[Path]:
    return sorted(feature_cache.features_dir().glob("*.npz"))


@pytest.mark.parametrize("damage", ["truncate", "flip", "empty", "foreign"])
def test_a_broken_entry_is_discarded_and_recomputed(weighted, folders, damage):
    first = _run(*folders)
    entries = _entries()
    assert len(entries) == 3  # samples: rows and moments; reference: moments
    for entry in entries:
        data = bytearray(entry.read_bytes())
        if damage == "truncate":  # as a write cut short would leave it
            entry.write_bytes(data[: len(data) // 2])
        elif damage == "flip":
            data[len(data) // 2] ^= 0xFF
            entry.write_bytes(bytes(data))
        elif damage == "empty":
            entry.write_bytes(b"")
        else:  # a valid file recorded for another key
            np.savez(entry, meta=np.array(json.dumps({"fields": {}})), rows=np.zeros((2, 2)))
    weighted.calls.clear()
    again = _run(*folders)
    assert sum(weighted.calls) == 38
    assert any("unusable" in w and "discarded" in w for w in again["warnings"])
    assert _metrics(again) == _metrics(first)
    weighted.calls.clear()
    assert _metrics(_run(*folders)) == _metrics(first) and weighted.calls == []


def test_unfinished_writes_are_never_read_and_clear_removes_them(weighted, folders, run_cli):
    _run(*folders)
    root = feature_cache.features_dir()
    for entry in _entries():
        entry.rename(root / f".{entry.stem}.123.abcd.tmp")  # as an interrupted write leaves it
    weighted.calls.clear()
    _run(*folders)
    assert sum(weighted.calls) == 38
    res = run_cli("cache", "clear")
    assert res.code == 0 and "removed 3" in res.out
    assert not list(root.glob("*.npz")) and not list(root.glob(".*.tmp"))


def _part(n: int, dim: int) -> CachedPart:
    stats = FeatureStatistics(dim).update(torch.ones(n, dim, dtype=torch.float64))
    return CachedPart(n, {(4, 4)}, {}, moments=stats)


def _fields(i: int) -> dict:
    loaded = WeightedLoaded([], 1.0, "1" * 64, "plain")
    return entry_fields(f"src{i}", loaded, "weighted", "feat", "moments", precision="fp32",
                        device=torch.device("cpu"))  # fmt: skip


def test_least_recently_used_entries_are_evicted_first(tmp_path):
    store = FeatureCache(tmp_path, limit=10**9)
    for i in range(3):
        store.store(_fields(i), _part(5, 64))
        os.utime(store.path(entry_key(_fields(i))), (1000 + i, 1000 + i))
    size = store.path(entry_key(_fields(0))).stat().st_size
    assert store.load(_fields(0)).moments.n == 5  # used: now the most recent
    store.limit = int(3.5 * size)
    store.store(_fields(3), _part(5, 64))  # four entries do not fit: the LRU one goes
    assert not store.path(entry_key(_fields(1))).exists()
    assert all(store.path(entry_key(_fields(i))).exists() for i in (0, 2, 3))
    assert store.info()["entries"] == 3 and store.info()["bytes"] <= store.limit
    store.limit = size // 2  # an entry larger than the whole cache is never stored
    store.store(_fields(4), _part(5, 64))
    assert not store.path(entry_key(_fields(4))).exists()


def test_arrays_and_datasets_hit_by_content(weighted, tmp_path):
    rng = np.random.default_rng(3)
    array = rng.integers(0, 256, (19, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "a.npy", array)
    for samples in (str(tmp_path / "a.npy"), array, "toyset:test"):
        weighted.calls.clear()
        first = _run(samples, "toyset:train")
        assert first["inputs"]["samples"]["cache"] == {"weighted": "miss"}
        weighted.calls.clear()
        second = _run(samples, "toyset:train")
        assert second["inputs"]["samples"]["cache"] == {"weighted": "hit"}
        assert weighted.calls == [] and _metrics(second) == _metrics(first)
    np.save(tmp_path / "a.npy", array[::-1])  # same bytes in another order: another content
    weighted.calls.clear()
    assert _run(str(tmp_path / "a.npy"), "toyset:train")["inputs"]["samples"]["cache"] == {
        "weighted": "miss"
    }


def test_the_folder_key_does_not_depend_on_the_number_of_ranks(tmp_path, monkeypatch):
    """Each rank hashes the files of its own shard (whatever the shard unit); the key built
    from every rank's hashes, in rank order, is the one-process key."""
    monkeypatch.setattr(feature_cache, "HASH_CHUNK", 3)
    source = FolderSource(_png_folder(tmp_path / "f", 11, 4))
    index = FileHashIndex(tmp_path / "files.sqlite")
    whole = feature_cache.source_key(source, DistContext(), index)
    shas = [hashlib.sha256(p.read_bytes()).hexdigest() for p in source.paths]
    assert whole == feature_cache._folder_key(11, source.names, shas)
    for world in (2, 3, 5):
        for unit in (1, 4, 7):
            ranks = [DistContext(rank=r, world_size=world) for r in range(world)]
            seen = [feature_cache._seen(source, ctx, index, unit) for ctx in ranks]
            shard = b"".join(s.shard for s in seen)
            assert [shard[i : i + 32].hex() for i in range(0, len(shard), 32)] == shas
            assert len({s.digest for s in seen}) == 1  # the same listing on every rank


def test_stats_command_uses_the_cache(weighted, folders, run_cli, tmp_path):
    args = ["stats", folders[0], "--extractor", "weighted", "--features", "--quiet"]
    assert run_cli(*args, "-o", tmp_path / "a.npz").code == 0
    weighted.calls.clear()
    assert run_cli(*args, "-o", tmp_path / "b.npz").code == 0
    assert weighted.calls == []
    a, b = np.load(tmp_path / "a.npz"), np.load(tmp_path / "b.npz")
    assert np.array_equal(a["mu"], b["mu"]) and np.array_equal(a["features"], b["features"])


def test_cache_cli_info_clear_and_bad_settings(weighted, folders, run_cli, tmp_path, monkeypatch):
    _run(*folders)
    info = run_cli("cache", "info", "--json")
    assert info.code == 0
    data = json.loads(info.out)
    assert data["entries"] == 3 and data["limit"] == 10 * 1000**3 and data["bytes"] > 0
    assert "entries: 3" in run_cli("cache", "info").out
    monkeypatch.setenv("GENEVAL_CACHE_SIZE", "lots")
    res = run_cli(
        "run", "--samples", folders[0], "--metrics", "feat-mean", "--extractor", "weighted"
    )
    assert res.code == 2 and len(res.err_lines) == 1 and "GENEVAL_CACHE_SIZE" in res.err
    monkeypatch.setenv("GENEVAL_CACHE_SIZE", "1.5GB")
    assert json.loads(run_cli("cache", "info", "--json").out)["limit"] == 1_500_000_000
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("GENEVAL_CACHE", str(blocker))
    for args in (
        ["run", "--samples", folders[0], "--metrics", "feat-mean", "--extractor", "weighted"],
        ["cache", "info"],
    ):
        res = run_cli(*args)
        assert res.code == 2 and len(res.err_lines) == 1 and "--no-cache" in res.err
    ok = run_cli(
        "run", "--samples", folders[0], "--metrics", "feat-mean", "--extractor", "weighted",
        "--no-cache", "--quiet",
    )  # fmt: skip
    assert ok.code == 0, ok.err


@pytest.mark.parametrize(
    ("text", "size"),
    [("10GB", 10**10), ("512MiB", 512 * 2**20), ("1e9", 10**9), ("123", 123), ("2 kb", 2000)],
)
def test_parse_size(text, size):
    assert parse_size(text) == size


def test_parse_size_refuses_nonsense():
    with pytest.raises(geneval.InputError, match="GENEVAL_CACHE_SIZE"):
        parse_size("-3GB")
