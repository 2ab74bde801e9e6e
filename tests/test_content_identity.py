"""Identity by content (issue 21, item 1): a file's remembered sha256 holds only while its size,
mtime, ctime, inode and device are unchanged — for weights as for sources; the ranks of a
sharded run hash what they read and agree on it before anything is computed or cached; and
``GENEVAL_CACHE_SIZE`` is read exactly, refusing what is not a size (exit 2, never 3)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import geneval
import geneval.cache
from geneval.cache import FileHashIndex, file_identity, file_sha256
from geneval.distributed import DistContext
from geneval.errors import InputError
from geneval.feature_cache import MAX_LIMIT, SIZE_ENV, cache_limit, parse_size, source_key
from geneval.plugin import hookimpl
from tests.fake_plugins import FakePlugins
from tests.inception_fixtures import inception_weights_fixture  # noqa: F401 - a fixture

# -- weights: a same-size, same-mtime replacement ----------------------------------------------


class ScaledLoaded:
    """Features: channel means times the number written in the weights file."""

    name = "scaled"
    outputs = {"feat": 3}
    convention = "plain"

    def __init__(self, scale: float, sha: str) -> None:
        self.scale, self.weights_sha256 = scale, sha

    def __call__(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        x = images if images.shape[1] == 3 else images.repeat(1, 3, 1, 1)
        return {"feat": x.mean((2, 3)) * self.scale}


class ScaledExtractor:
    """An extractor whose weights are a file, identified as the bundled ones are: by
    :func:`geneval.cache.file_sha256`."""

    name = "scaled"
    outputs = ScaledLoaded.outputs
    feature_output = "feat"
    logits_output = None
    resize_options = ()

    def __init__(self) -> None:
        self.loads = 0

    def load(self, *, device, weights=None, resize=None):
        self.loads += 1
        return ScaledLoaded(float(Path(weights).read_text()), file_sha256(weights))


class ScaledPlugin:
    __name__ = "scaled_plugin"

    def __init__(self) -> None:
        self.extractor = ScaledExtractor()

    @hookimpl
    def geneval_register_extractors(self, register):
        register(self.extractor)


@pytest.fixture
def scaled(add_plugin, monkeypatch) -> ScaledExtractor:
    # record hashes however fresh the files are, as they would be a few seconds later: the
    # test must see the old hash in the index to show that it is not used
    monkeypatch.setattr(geneval.cache, "RACY_NS", 0)
    add_plugin(FakePlugins(), "geneval-tests-fake")
    plugin = ScaledPlugin()
    add_plugin(plugin)
    return plugin.extractor


def _png_folder(folder: Path, count: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _replace_keeping_size_and_mtime(path: Path, text: str, *, new_inode: bool) -> None:
    """What ``cp -p`` (in place) or ``rsync -t`` (a new file renamed over) does."""
    old = path.stat()
    assert len(text.encode()) == old.st_size
    time.sleep(0.02)  # past the file system's timestamp tick: the change time moves
    if new_inode:
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.utime(tmp, ns=(old.st_atime_ns, old.st_mtime_ns))
        os.replace(tmp, path)
    else:
        path.write_text(text)
        os.utime(path, ns=(old.st_atime_ns, old.st_mtime_ns))
    new = path.stat()
    assert (new.st_size, new.st_mtime_ns) == (old.st_size, old.st_mtime_ns)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("new_inode", [False, True], ids=["cp-p", "rsync-t"])
def test_replaced_weights_give_the_new_sha256_and_a_cache_miss(
    scaled, run_cli, tmp_path, new_inode
):
    samples = _png_folder(tmp_path / "s", 12, 1)
    weights = tmp_path / "w.txt"
    weights.write_text("1.00")
    old_sha = _sha(weights)
    args = ["run", "--samples", samples, "--metrics", "feat-mean", "--extractor", "scaled"]
    args += ["--extractor-weights", weights, "--quiet", "--force"]

    first = run_cli(*args, "--json", tmp_path / "a.json")
    assert first.code == 0, first.err
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["config"]["extractors"]["feat-mean"]["weights_sha256"] == old_sha
    assert report["inputs"]["samples"]["cache"] == {"scaled": "miss"}
    again = run_cli(*args, "--json", tmp_path / "b.json")  # the same weights: a hit
    assert again.code == 0
    assert json.loads((tmp_path / "b.json").read_text())["inputs"]["samples"]["cache"] == {
        "scaled": "hit"
    }
    index = FileHashIndex(Path(os.environ["GENEVAL_CACHE"]) / "features" / "files.sqlite")
    assert index._known([os.fsencode(weights.resolve())])  # the old hash was remembered

    _replace_keeping_size_and_mtime(weights, "3.00", new_inode=new_inode)
    new_sha = _sha(weights)
    assert new_sha != old_sha

    after = run_cli(*args, "--json", tmp_path / "c.json")
    assert after.code == 0, after.err
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["config"]["extractors"]["feat-mean"]["weights_sha256"] == new_sha
    assert report["inputs"]["samples"]["cache"] == {"scaled": "miss"}
    value = report["metrics"]["feat-mean"]["value"]
    before = json.loads((tmp_path / "a.json").read_text())["metrics"]["feat-mean"]["value"]
    assert value == pytest.approx(3 * before, rel=1e-6)  # the new weights' number

    # without the cache, the report and a statistics file carry the new hash too
    off = run_cli(*args, "--no-cache", "--json", tmp_path / "d.json")
    assert off.code == 0
    report = json.loads((tmp_path / "d.json").read_text())
    assert report["config"]["extractors"]["feat-mean"]["weights_sha256"] == new_sha
    stats = ["stats", samples, "-o", tmp_path / "s.npz", "--extractor", "scaled", "--quiet"]
    stats += ["--extractor-weights", weights, "--no-cache"]
    assert run_cli(*stats).code == 0
    with np.load(tmp_path / "s.npz") as data:
        assert json.loads(str(data["meta"]))["weights_sha256"] == new_sha


def test_a_remembered_hash_needs_the_whole_identity(tmp_path, monkeypatch):
    """Each part of the identity (size, mtime, ctime, inode, device) invalidates the hash."""
    monkeypatch.setattr(geneval.cache, "RACY_NS", 0)
    path = tmp_path / "f.bin"
    path.write_bytes(b"one")
    index = FileHashIndex(tmp_path / "files.sqlite")
    assert index.hashes([path]) == [hashlib.sha256(b"one").hexdigest()]
    identity = file_identity(path.stat())
    assert index._known([os.fsencode(path.resolve())])[os.fsencode(path.resolve())][:5] == (
        identity
    )
    # forge each field of the recorded identity in turn: the stored hash must not be used
    import sqlite3

    for column in geneval.cache.IDENTITY:
        with sqlite3.connect(index.path) as conn:
            conn.execute("UPDATE files SET sha256 = ?", ("f" * 64,))
            conn.execute(f"UPDATE files SET {column} = {column} + 1")
        conn.close()
        assert index.hashes([path]) == [hashlib.sha256(b"one").hexdigest()], column
    # unchanged identity: the stored hash is used (the index does save work)
    with sqlite3.connect(index.path) as conn:
        conn.execute("UPDATE files SET sha256 = ?", ("e" * 64,))
    conn.close()
    assert index.hashes([path]) == ["e" * 64]


def test_an_unreadable_or_broken_index_only_costs_hashing(tmp_path, monkeypatch):
    monkeypatch.setattr(geneval.cache, "RACY_NS", 0)
    path = tmp_path / "f.bin"
    path.write_bytes(b"two")
    broken = tmp_path / "files.sqlite"
    broken.write_bytes(b"this is not a database" * 10)
    assert FileHashIndex(broken).hashes([path]) == [hashlib.sha256(b"two").hexdigest()]
    blocked = tmp_path / "plain-file"
    blocked.write_text("x")
    monkeypatch.setenv("GENEVAL_CACHE", str(blocked))  # the index cannot even be created
    assert file_sha256(path) == hashlib.sha256(b"two").hexdigest()
    with pytest.raises(InputError, match="missing.bin") as caught:
        file_sha256(tmp_path / "missing.bin", what="weights file")
    assert "weights file" in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_an_index_of_the_older_layout_is_replaced(tmp_path, monkeypatch):
    """The index of 0.1.0 recorded no device: its rows are dropped, not trusted."""
    import sqlite3

    monkeypatch.setattr(geneval.cache, "RACY_NS", 0)
    path = tmp_path / "f.bin"
    path.write_bytes(b"three")
    stat = path.stat()
    with sqlite3.connect(tmp_path / "files.sqlite") as conn:
        conn.execute(
            "CREATE TABLE files (path BLOB PRIMARY KEY, size INTEGER, mtime_ns INTEGER, "
            "ctime_ns INTEGER, inode INTEGER, sha256 TEXT)"
        )
        conn.execute(
            "INSERT INTO files VALUES (?, ?, ?, ?, ?, ?)",
            (os.fsencode(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns,
             stat.st_ino, "0" * 64),
        )  # fmt: skip
    conn.close()
    index = FileHashIndex(tmp_path / "files.sqlite")
    assert index.hashes([path]) == [hashlib.sha256(b"three").hexdigest()]
    assert index.hashes([path]) == [hashlib.sha256(b"three").hexdigest()]


@pytest.mark.slow
def test_replaced_inception_weights_give_the_new_sha256(inception_weights, tmp_path, monkeypatch):
    """The bundled extractors take their ``weights_sha256`` from the same index."""
    from geneval_plugins.extractors.inception import InceptionV3FID

    monkeypatch.setattr(geneval.cache, "RACY_NS", 0)
    state = torch.load(inception_weights, weights_only=True)
    weights, other = tmp_path / "w.pth", tmp_path / "x.pth"  # torch.save records the name
    torch.save(state, weights)
    state["fc.bias"].add_(1.0)  # other weights, in place: saved in the same layout
    torch.save(state, other)
    cpu = torch.device("cpu")
    old_sha = _sha(weights)
    assert InceptionV3FID().load(device=cpu, weights=weights).weights_sha256 == old_sha
    old = weights.stat()
    assert other.stat().st_size == old.st_size
    time.sleep(0.02)
    weights.write_bytes(other.read_bytes())  # cp -p: in place, then the old mtime
    os.utime(weights, ns=(old.st_atime_ns, old.st_mtime_ns))
    loaded = InceptionV3FID().load(device=cpu, weights=weights)
    assert loaded.weights_sha256 == _sha(weights) == _sha(other) != old_sha


# -- sharded runs: every rank hashes what it reads ---------------------------------------------


def _digits_npy(path: Path, offset: int, count: int = 150) -> Path:
    from geneval_plugins.datasets.digits import DigitsDataset

    images = DigitsDataset().load("train").images[offset : offset + count].numpy()
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.round(images * 255).astype(np.uint8))
    return path


def _free_port() -> int:
    from geneval.launch import free_port

    return free_port()


def _launch_ranks(argvs: list[list[str]], cwds: list[Path], cache: Path) -> list:
    """Start one rank per argv as ``geneval run --nproc`` does (its variables, 127.0.0.1),
    each with its own arguments and working directory; returns the finished processes."""
    from geneval.launch import rank_environment

    port = _free_port()
    procs = []
    for rank, (argv, cwd) in enumerate(zip(argvs, cwds, strict=True)):
        env = rank_environment(rank, len(argvs), port)
        env.update(GENEVAL_LOAD_PLUGINS="", OMP_NUM_THREADS="1", GENEVAL_CACHE=str(cache))
        procs.append(
            subprocess.Popen(
                [sys.executable, "-m", "geneval", *map(str, argv)],
                cwd=cwd,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for proc in procs:
        proc.out, proc.err = proc.communicate(timeout=300)
    return procs


def _entries(cache: Path) -> list[Path]:
    return sorted((cache / "features").glob("*.npz"))


RUN = ["run", "--metrics", "fid", "--extractor", "digits-cnn", "--batch-size", "32", "--quiet"]


@pytest.mark.slow  # two ranks as subprocesses: about 15 s
def test_ranks_reading_different_content_under_one_path_exit_2_and_cache_nothing(tmp_path):
    """The same relative path names different bytes on the two ranks (two nodes): exit 2 on
    every rank, naming rank 1 and the path, and the feature cache stays empty."""
    cache = tmp_path / "cache"
    node_a, node_b = tmp_path / "node-a", tmp_path / "node-b"
    _digits_npy(node_a / "samples.npy", 0)
    _digits_npy(node_b / "samples.npy", 300)  # same shape and size, other images
    reference = _digits_npy(tmp_path / "reference.npy", 600)
    argv = [*RUN, "--samples", "samples.npy", "--reference", reference]
    procs = _launch_ranks([argv, argv], [node_a, node_b], cache)
    assert [p.returncode for p in procs] == [2, 2], procs[0].err + procs[1].err
    lines = [line for line in procs[0].err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("geneval: error: samples samples.npy")
    assert "rank 1 read different content than rank 0" in lines[0]
    assert procs[1].err.strip() == ""  # the shared error is printed once, by rank 0
    assert _entries(cache) == []


@pytest.mark.slow  # two ranks as subprocesses: about 15 s
def test_ranks_given_different_paths_exit_2_before_any_source_is_cached(tmp_path):
    """The samples agree, the references are two paths: nothing is computed or cached, not
    even the samples' features (the ranks agree on every source before the first pass)."""
    cache = tmp_path / "cache"
    samples = _digits_npy(tmp_path / "samples.npy", 0)
    ref_a = _digits_npy(tmp_path / "ref-a.npy", 300)
    ref_b = _digits_npy(tmp_path / "ref-b.npy", 300)  # the same bytes, another path
    base = [*RUN, "--samples", samples, "--reference"]
    procs = _launch_ranks([[*base, ref_a], [*base, ref_b]], [tmp_path, tmp_path], cache)
    assert [p.returncode for p in procs] == [2, 2], procs[0].err + procs[1].err
    lines = [line for line in procs[0].err.splitlines() if line.strip()]
    assert len(lines) == 1 and "rank 1 read" in lines[0]
    assert str(ref_a) in lines[0] and str(ref_b) in lines[0]
    assert _entries(cache) == []
    # the same ranks given the same files run, and fill the cache
    procs = _launch_ranks([[*base, ref_a], [*base, ref_a]], [tmp_path, tmp_path], cache)
    assert [p.returncode for p in procs] == [0, 0], procs[0].err + procs[1].err
    assert len(_entries(cache)) == 2


def _agreement_worker(rank: int, world: int, init: str, root: str, out: str) -> None:
    """Rank ``rank`` of a gloo group, in its own "node" (working directory): ``source_key``
    on the same relative paths, whose content agrees or not."""
    import torch.distributed as dist

    from geneval.distributed import context
    from geneval.sources import ArraySource, FolderSource

    os.chdir(Path(root) / f"node{rank}")
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    ctx = context()
    index = FileHashIndex(Path(root) / f"index{rank}.sqlite")
    results: dict[str, object] = {}

    def attempt(name: str, source, role: str = "samples") -> None:
        try:
            results[name] = ["key", source_key(source, ctx, index, unit=4, role=role)]
        except InputError as exc:
            results[name] = ["error", str(exc), getattr(exc, "shared", False)]

    for case in ("same", "sizes", "names", "count"):
        attempt(case, FolderSource(Path(case)))
    attempt("same array", ArraySource(Path("same.npy")))
    attempt("other array", ArraySource(Path("a.npy")), "reference")
    attempt("other path", ArraySource(Path("x.npy" if rank == 0 else "y.npy")))
    Path(out, f"{rank}.json").write_text(json.dumps(results))
    dist.destroy_process_group()


def test_two_gloo_ranks_hash_what_they_read_and_agree(tmp_path):
    """Two ranks in two "nodes" read the same relative paths: the key of agreeing ranks is
    the one-process key; names, sizes, counts, bytes or paths that differ are one line,
    raised on both ranks, naming rank 1 and the path."""
    import shutil

    import torch.multiprocessing as mp

    from geneval.sources import ArraySource, FolderSource

    node0, node1 = tmp_path / "node0", tmp_path / "node1"
    for case in ("same", "sizes", "names", "count"):
        _png_folder(node0 / case, 11, 3)
        shutil.copytree(node0 / case, node1 / case)
    Image.fromarray(np.zeros((9, 9, 3), np.uint8)).save(node1 / "sizes" / "7.png")
    (node1 / "names" / "7.png").rename(node1 / "names" / "7b.png")
    (node1 / "count" / "10.png").unlink()
    for node in (node0, node1):
        _digits_npy(node / "same.npy", 0, 40)
        _digits_npy(node / "x.npy", 0, 40)
        _digits_npy(node / "y.npy", 0, 40)
    _digits_npy(node0 / "a.npy", 0, 40)
    _digits_npy(node1 / "a.npy", 40, 40)  # the same shape and size, other images
    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_agreement_worker, args=(2, init, str(tmp_path), str(tmp_path)), nprocs=2, join=True)
    res = [json.loads((tmp_path / f"{r}.json").read_text()) for r in (0, 1)]
    one = FileHashIndex(tmp_path / "one.sqlite")
    single_folder = source_key(FolderSource(node0 / "same"), DistContext(), one)
    single_array = source_key(ArraySource(node0 / "same.npy"), DistContext(), one)
    for r in res:
        assert r["same"] == ["key", single_folder]  # the one-process key
        assert r["same array"] == ["key", single_array]
        for case, words in {
            "sizes": ["samples sizes:", "rank 1 sees 7.png (", "rank 0 sees 7.png ("],
            "names": ["samples names:", "rank 1 sees 7b.png", "rank 0 sees 7.png"],
            "count": ["samples count:", "rank 1 sees 10 images", "rank 0 sees 11"],
            "other array": ["reference a.npy:", "rank 1 read different content than rank 0"],
            "other path": ["samples:", "rank 1 read y.npy but rank 0 read x.npy"],
        }.items():
            kind, message, shared = r[case]
            assert kind == "error" and shared is True and len(message.splitlines()) == 1
            assert all(word in message for word in words), message
            assert r[case] == res[0][case]  # every rank raises the same line


# -- GENEVAL_CACHE_SIZE ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text", ["1e999", "1e400GB", "1e999999TiB", "9" * 400, "inf", "nan", "-1", "-0.5GB",
             "1e19", "2EB", "10 GB extra", "0x10", "1_000", "１０GB", "1e+99999999", ""]
)  # fmt: skip
def test_bad_cache_sizes_are_exit_2_naming_the_variable(text, run_cli, monkeypatch, tmp_path):
    monkeypatch.setenv(SIZE_ENV, text)
    if text == "":
        assert cache_limit() == 10 * 1000**3  # unset or empty: the default
        return
    with pytest.raises(InputError, match=SIZE_ENV):
        cache_limit()
    samples = _png_folder(tmp_path / "s", 4, 2)
    for args in (["cache", "info"], ["stats", samples, "-o", tmp_path / "o.npz"]):
        res = run_cli(*args)
        assert res.code == 2 and len(res.err_lines) == 1 and SIZE_ENV in res.err, res.err
    assert not (tmp_path / "o.npz").exists()


@pytest.mark.parametrize(
    ("text", "size"),
    [("1e18", 10**18), ("1000000TB", 10**18), ("1.5e3kB", 1_500_000),
     ("0", 0), ("0.5", 0), ("1e-3GB", 1_000_000), (" 7 MiB ", 7 * 2**20),
     ("123456789012345678", 123456789012345678)],
)  # fmt: skip
def test_cache_sizes_are_read_exactly(text, size):
    assert parse_size(text) == size


_NUMBER = st.from_regex(r"[0-9]{1,30}(\.[0-9]{0,20})?([eE][+-]?[0-9]{1,9})?", fullmatch=True)
_UNIT = st.sampled_from(["", "b", "kB", "MB", "GB", "TB", "KiB", "MiB", "GiB", "TiB", "PB"])
_SIZES = st.one_of(
    st.text(max_size=60),
    st.builds(lambda n, s, u: f"{n}{s}{u}", _NUMBER, st.sampled_from(["", " "]), _UNIT),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=_SIZES)
def test_any_cache_size_is_a_bounded_size_or_one_line_naming_the_variable(text):
    """Fuzz: a size in [0, MAX_LIMIT], or an InputError of one line naming the variable;
    never another exception, and never more than 1 MB allocated."""
    tracemalloc.start()
    try:
        size = parse_size(text)
    except InputError as exc:
        message = str(exc)
        assert message.startswith(f"{SIZE_ENV}=") and len(message.splitlines()) == 1
        assert len(message) < 200
    else:
        assert isinstance(size, int) and 0 <= size <= MAX_LIMIT
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < 1 << 20
