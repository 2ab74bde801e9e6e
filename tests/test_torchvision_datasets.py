"""Datasets ``cifar100`` and ``stl10``: torchvision's files read into images and labels, the
``n=`` option, and the offline message. The files are generated in torchvision's formats
(CIFAR's pickles, STL-10's column-major binaries) with their checksums patched in."""

from __future__ import annotations

import hashlib
import pickle
import socket
from pathlib import Path

import numpy as np
import pytest

from geneval.errors import InputError
from geneval_plugins.datasets.torchvision_sets import Cifar100, Stl10


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GENEVAL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_cifar100_reads_torchvisions_files(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import CIFAR100

    folder = cache / "datasets" / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    made = {}
    for split, n in (("train", 7), ("test", 5)):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)  # rows: R plane, G, B
        labels = rng.integers(0, 100, size=n).tolist()
        with open(folder / split, "wb") as f:
            pickle.dump({"data": data, "fine_labels": labels}, f)
        made[split] = (data, labels)
    with open(folder / "meta", "wb") as f:
        pickle.dump({"fine_label_names": [f"class{i}" for i in range(100)]}, f)
    monkeypatch.setattr(CIFAR100, "train_list", [["train", _md5(folder / "train")]])
    monkeypatch.setattr(CIFAR100, "test_list", [["test", _md5(folder / "test")]])
    monkeypatch.setattr(CIFAR100, "meta", {**CIFAR100.meta, "md5": _md5(folder / "meta")})

    for split, alias in (("train", "train"), ("test", "val")):
        got = Cifar100().load(alias)
        data, labels = made[split]
        expected = data.reshape(-1, 3, 32, 32).astype(np.float32) / 255
        assert got.images.dtype.is_floating_point and tuple(got.images.shape[1:]) == (3, 32, 32)
        np.testing.assert_array_equal(got.images.numpy(), expected)
        assert got.labels.tolist() == labels
    first = Cifar100().load("train,n=3")
    np.testing.assert_array_equal(
        first.images.numpy(), made["train"][0][:3].reshape(-1, 3, 32, 32) / np.float32(255)
    )
    assert first.labels.tolist() == made["train"][1][:3]
    with pytest.raises(InputError, match=r"no split unlabeled \(choose from train, test\)"):
        Cifar100().load("unlabeled")
    with pytest.raises(InputError, match="n=N"):
        Cifar100().load("train,n=0")


def test_stl10_reads_column_major_binaries(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from torchvision.datasets import STL10

    folder = cache / "datasets" / "stl10" / "stl10_binary"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    images = {}
    for split, n in (("train", 4), ("test", 3), ("unlabeled", 2)):
        chw = rng.integers(0, 256, size=(n, 3, 96, 96), dtype=np.uint8)
        chw.transpose(0, 1, 3, 2).tofile(folder / f"{split}_X.bin")  # stored column-major
        images[split] = chw
    labels = {"train": [1, 10, 3, 7], "test": [2, 2, 9]}
    for split, values in labels.items():
        np.asarray(values, dtype=np.uint8).tofile(folder / f"{split}_y.bin")
    names = {"train": ["train_X.bin", "train_y.bin", "unlabeled_X.bin"]}
    monkeypatch.setattr(STL10, "train_list", [[n, _md5(folder / n)] for n in names["train"]])
    monkeypatch.setattr(
        STL10, "test_list", [[n, _md5(folder / n)] for n in ("test_X.bin", "test_y.bin")]
    )
    for split in ("train", "test", "unlabeled"):
        got = Stl10().load(split)
        np.testing.assert_array_equal(got.images.numpy(), images[split] / np.float32(255))
        if split == "unlabeled":
            assert got.labels is None
        else:
            assert got.labels.tolist() == [v - 1 for v in labels[split]]  # 1–10 → 0–9
    assert tuple(Stl10().load("unlabeled,n=1").images.shape) == (1, 3, 96, 96)


def test_offline_download_says_where_to_put_the_archive(
    cache: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from torchvision.datasets import CIFAR100

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/cifar-100-python.tar.gz"
    monkeypatch.setattr(CIFAR100, "url", url)
    with pytest.raises(InputError) as err:
        Cifar100().load("train")
    message = str(err.value)
    assert "\n" not in message and url in message
    assert f"put it in {cache / 'datasets' / 'cifar100'}" in message
    assert capsys.readouterr().out == ""  # torchvision's chatter never reaches stdout


def test_datasets_are_registered_without_torch(tmp_path: Path) -> None:
    import json
    import subprocess
    import sys

    code = """
import json, sys
from geneval.plugins import get_registry
registry = get_registry()
print(json.dumps({"datasets": sorted(registry.items("dataset")),
                  "heavy": [m for m in ("torch", "torchvision", "numpy") if m in sys.modules]}))
"""
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path
    )
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"cifar100", "stl10"} <= set(found["datasets"])
    assert found["heavy"] == []
