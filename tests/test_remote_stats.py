"""Named reference statistics: the table, the cache, checksums and the download path."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pytest

from geneval.errors import InputError
from geneval_plugins.extractors import published_stats as remote_stats
from geneval_plugins.extractors.published_stats import (
    PUBLISHED_STATS,
    PublishedStats,
    fetch_reference_stats,
)
from geneval_plugins.extractors.resize import RESIZE_CONVENTIONS

KEY = ("cifar10", "train", "inception-v3-fid", "tf1", 32)
ARGS = KEY[:4]  # what fetch_reference_stats is called with: dataset, split, extractor, resize


def _stats_bytes(seed: int = 0, dim: int = 2048) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    np.savez(buffer, mu=rng.standard_normal(dim), sigma=np.eye(dim) * rng.uniform(0.5, 2))
    return buffer.getvalue()


def test_table_covers_cifar10_train_and_only_known_conventions() -> None:
    assert KEY in PUBLISHED_STATS
    entry = PUBLISHED_STATS[KEY]
    assert entry.url == "http://bioinf.jku.at/research/ttur/ttur_stats/fid_stats_cifar10_train.npz"
    for (_dataset, _split, extractor, resize, res), item in PUBLISHED_STATS.items():
        assert extractor == "inception-v3-fid" and resize in RESIZE_CONVENTIONS
        assert item.resolution == res
        assert item.url.endswith(item.filename) and item.url.startswith(("http://", "https://"))


def test_unknown_combination_gives_none(tmp_path: Path) -> None:
    assert (
        fetch_reference_stats("cifar10", "train", "digits-cnn", "tf1", cache_dir=tmp_path) is None
    )
    assert fetch_reference_stats("imagenet", "val", "inception-v3-fid", "tf1") is None


def test_file_placed_in_cache_is_used_and_then_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path))

    def no_network(*args, **kwargs):
        raise AssertionError("must not download when the file is cached")

    monkeypatch.setattr(remote_stats.urllib.request, "urlopen", no_network)
    cached = tmp_path / "reference_stats" / "fid_stats_cifar10_train.npz"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(_stats_bytes())
    assert fetch_reference_stats(*ARGS) == cached
    recorded = cached.with_name(cached.name + ".sha256")
    assert recorded.read_text().split()[0] == hashlib.sha256(cached.read_bytes()).hexdigest()
    assert fetch_reference_stats(*ARGS) == cached  # verified against the record
    cached.write_bytes(_stats_bytes(seed=1))  # the cached copy changes
    with pytest.raises(InputError, match="sha256.*delete the file"):
        fetch_reference_stats(*ARGS)


def test_published_checksum_is_enforced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _stats_bytes()
    good = hashlib.sha256(data).hexdigest()
    entry = PUBLISHED_STATS[KEY]
    (tmp_path / entry.filename).write_bytes(data)
    pinned = PublishedStats(entry.url, entry.filename, entry.source, sha256=good)
    monkeypatch.setitem(PUBLISHED_STATS, KEY, pinned)
    assert fetch_reference_stats(*ARGS, cache_dir=tmp_path) == tmp_path / entry.filename
    wrong = PublishedStats(entry.url, entry.filename, entry.source, sha256="0" * 64)
    monkeypatch.setitem(PUBLISHED_STATS, KEY, wrong)
    with pytest.raises(InputError, match="published checksum"):
        fetch_reference_stats(*ARGS, cache_dir=tmp_path)


class _Response(io.BytesIO):
    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_download_writes_verified_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = _stats_bytes(seed=2)
    urls = []

    def fake_urlopen(url: str, timeout: float):
        urls.append(url)
        return _Response(data)

    monkeypatch.setattr(remote_stats.urllib.request, "urlopen", fake_urlopen)
    path = fetch_reference_stats(*ARGS, cache_dir=tmp_path / "new")
    assert path == tmp_path / "new" / "fid_stats_cifar10_train.npz"
    assert path.read_bytes() == data and urls == [PUBLISHED_STATS[KEY].url]
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name, path.name + ".sha256"]


def test_failed_or_bad_download_is_an_input_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def offline(url: str, timeout: float):
        raise OSError("name resolution failed")

    monkeypatch.setattr(remote_stats.urllib.request, "urlopen", offline)
    with pytest.raises(InputError) as err:
        fetch_reference_stats(*ARGS, cache_dir=tmp_path)
    message = str(err.value)
    assert PUBLISHED_STATS[KEY].url in message
    assert str(tmp_path / "fid_stats_cifar10_train.npz") in message
    assert "name resolution failed" in message

    monkeypatch.setattr(
        remote_stats.urllib.request,
        "urlopen",
        lambda url, timeout: _Response(b"<html>moved</html>"),
    )
    with pytest.raises(InputError, match="not a readable"):
        fetch_reference_stats(*ARGS, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []  # nothing half-written is left behind
    monkeypatch.setattr(
        remote_stats.urllib.request, "urlopen", lambda url, timeout: _Response(_stats_bytes(dim=64))
    )
    with pytest.raises(InputError, match=r"expected mu \(2048,\)"):
        fetch_reference_stats(*ARGS, cache_dir=tmp_path)
