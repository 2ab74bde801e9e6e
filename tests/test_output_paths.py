"""Output paths, fully checked before the work, and written or refused as exit 2 (issue 21).

Defect classes covered here:

* ``--force`` deletes only files that geneval names as samples *and* lists in its manifest;
  staging folders an interrupted run left behind are recognised and removed by ``--force``.
* An output whose temporary sibling's name is too long was found only after the whole run
  (exit 3): every temporary name now fits, and names or paths too long for the file system
  are refused before the work.
* A full disk (or quota, file size limit, read-only folder) at write time was exit 3: it is
  exit 2 naming the file, with nothing left behind; where the size is known, free space is
  checked before writing.
* ``--nproc`` had no upper bound: at most the cores, unless ``--oversubscribe``.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import tempfile
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geneval.io as gio
from geneval.errors import InputError
from geneval.interrupts import Terminated
from geneval.io import (
    SAMPLE_NAME,
    SAMPLES_MANIFEST,
    STAGING_PREFIX,
    check_free_space,
    check_image_folder,
    temporary_affixes,
    write_atomic,
    write_image_folder,
)
from tests.fake_plugins import FakePlugins


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def _samples(tmp_path: Path, n: int = 30) -> Path:
    path = tmp_path / f"samples-{n}.npy"
    np.save(path, np.random.default_rng(n).integers(0, 256, size=(n, 6, 6, 3), dtype=np.uint8))
    return path


def _run(tmp_path: Path, *extra) -> list:
    return ["run", "--samples", _samples(tmp_path), "--metrics", "feat-mean", "--extractor",
            "counting", "--quiet", *extra]  # fmt: skip


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def _one_error(res, code: int = 2) -> str:
    assert res.code == code, (res.code, res.err)
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("geneval: error: "), res.err
    assert "Traceback" not in res.err
    return res.err_lines[0]


def _sample(run_cli, out: Path, n: int, *extra):
    return run_cli("sample", "--model", "toy-noise", "-n", str(n), "-o", out, "--quiet", *extra)


# -- --force deletes only geneval's own files --------------------------------------------------


def _earlier_output(run_cli, tmp_path: Path, n: int = 3) -> Path:
    out = tmp_path / "samples"
    assert _sample(run_cli, out, n).code == 0
    return out


def _list_in_manifest(out: Path, *names: str) -> None:
    manifest = out / SAMPLES_MANIFEST
    files = json.loads(manifest.read_text())["files"]
    manifest.write_text(json.dumps({"files": [*files, *names]}))


def test_force_keeps_a_user_file_that_the_manifest_lists(fake, run_cli, tmp_path):
    """The defect: a manifest listing thesis.tex made --force delete it. A listed name that is
    not a sample name geneval gives is not geneval's, and the folder is refused."""
    out = _earlier_output(run_cli, tmp_path)
    (out / "thesis.tex").write_text("years of work")
    _list_in_manifest(out, "thesis.tex")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    line = _one_error(_sample(run_cli, out, 2, "--force"))
    assert "thesis.tex" in line and "did not write" in line
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_force_ignores_listed_names_outside_the_folder_or_not_samples(fake, run_cli, tmp_path):
    out = _earlier_output(run_cli, tmp_path)
    (tmp_path / "outside.png").write_bytes(b"mine")
    (tmp_path / "notes.txt").write_text("mine")
    _list_in_manifest(out, "../outside.png", "../notes.txt", "/etc/passwd", "999999.PNG", "")
    res = _sample(run_cli, out, 2, "--force")
    assert res.code == 0, res.err
    assert _listing(out) == sorted(["000000.png", "000001.png", SAMPLES_MANIFEST])
    assert (tmp_path / "outside.png").read_bytes() == b"mine"
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert json.loads((out / SAMPLES_MANIFEST).read_text())["files"] == [
        "000000.png",
        "000001.png",
    ]


def test_a_manifest_that_is_a_link_is_not_geneval_s(fake, run_cli, tmp_path):
    out = _earlier_output(run_cli, tmp_path)
    real = tmp_path / "elsewhere.json"
    (out / SAMPLES_MANIFEST).rename(real)
    (out / SAMPLES_MANIFEST).symlink_to(real)
    line = _one_error(_sample(run_cli, out, 2, "--force"))
    assert "did not write" in line
    assert len(list(out.glob("*.png"))) == 3


# -- staging folders left behind ---------------------------------------------------------------


def _leave_staging(out: Path, name: str = f"{STAGING_PREFIX}k1ll3d_") -> Path:
    """What a run killed while writing its PNGs leaves: a hidden staging folder of samples."""
    staging = out / name
    staging.mkdir()
    for i in range(4):
        (staging / f"{i:06d}.png").write_bytes((out / "000000.png").read_bytes())
    return staging


def test_a_left_staging_folder_is_named_truthfully_and_removed_by_force(fake, run_cli, tmp_path):
    out = _earlier_output(run_cli, tmp_path)
    staging = _leave_staging(out)
    line = _one_error(_sample(run_cli, out, 2))
    assert staging.name in line and "interrupted" in line and "--force" in line
    assert "did not write" not in line
    res = _sample(run_cli, out, 2, "--force")
    assert res.code == 0, res.err
    assert _listing(out) == sorted(["000000.png", "000001.png", SAMPLES_MANIFEST])


def test_a_folder_holding_only_a_left_staging_folder_is_geneval_s(fake, run_cli, tmp_path):
    """A run killed the first time it wrote into a new folder leaves no manifest yet."""
    out = _earlier_output(run_cli, tmp_path)
    staging = _leave_staging(out)
    for path in out.iterdir():
        if path != staging:
            path.unlink()
    assert "interrupted" in _one_error(_sample(run_cli, out, 1))
    assert _sample(run_cli, out, 1, "--force").code == 0
    assert _listing(out) == sorted(["000000.png", SAMPLES_MANIFEST])


@pytest.mark.parametrize("kind", ["foreign-file", "link", "subfolder", "odd-name"])
def test_a_staging_lookalike_is_not_removed(fake, run_cli, tmp_path, kind):
    out = _earlier_output(run_cli, tmp_path)
    if kind == "link":
        target = tmp_path / "precious"
        target.mkdir()
        (target / "000000.png").write_bytes(b"mine")
        (out / f"{STAGING_PREFIX}abc").symlink_to(target)
    else:
        staging = _leave_staging(out, f"{STAGING_PREFIX}abc" if kind != "odd-name" else
                                 f"{STAGING_PREFIX}a b")  # fmt: skip
        if kind == "foreign-file":
            (staging / "thesis.tex").write_text("mine")
        elif kind == "subfolder":
            (staging / "000010.png").mkdir()
    before = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    line = _one_error(_sample(run_cli, out, 2, "--force"))
    assert STAGING_PREFIX in line and "did not write" in line
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*")) == before


def _pngs(n: int, fail_at: int | None = None, exc: BaseException | None = None):
    for i in range(n):
        if i == fail_at:
            raise exc or RuntimeError("the model failed")
        yield f"{i:06d}.png", lambda path, i=i: path.write_bytes(b"png %d" % i)


@pytest.mark.parametrize("exc", [RuntimeError("boom"), Terminated(), KeyboardInterrupt()])
@pytest.mark.parametrize("existing", [True, False])
def test_a_failed_or_interrupted_folder_write_leaves_the_folder_as_it_was(tmp_path, exc, existing):
    out = tmp_path / "deep" / "samples"
    if existing:
        write_image_folder(out, _pngs(3), force=False, what="-o folder")
        before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(type(exc)):
        write_image_folder(out, _pngs(5, fail_at=4, exc=exc), force=True, what="-o folder")
    if existing:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    else:
        assert _listing(tmp_path) == []  # the folders this call created are gone too


def test_every_file_stays_listed_while_a_folder_is_replaced(tmp_path, monkeypatch):
    """A run killed in the middle of moving its files in (simulated by a failing rename)
    leaves only files its manifest lists, so the next --force replaces them all."""
    out = tmp_path / "samples"
    write_image_folder(out, _pngs(4), force=False, what="-o folder")
    real_replace, moved = os.replace, []

    def replace_twice(src, dst):
        if len(moved) == 2:
            raise Terminated()
        moved.append(dst)
        real_replace(src, dst)

    monkeypatch.setattr(gio.os, "replace", replace_twice)
    with pytest.raises(Terminated):
        write_image_folder(out, _pngs(6), force=True, what="-o folder")
    monkeypatch.undo()
    listed = set(json.loads((out / SAMPLES_MANIFEST).read_text())["files"])
    assert {p.name for p in out.iterdir()} - {SAMPLES_MANIFEST} <= listed
    assert check_image_folder(out, force=True, what="-o folder") == out
    assert write_image_folder(out, _pngs(2), force=True, what="-o folder") == [
        "000000.png",
        "000001.png",
    ]
    assert _listing(out) == sorted(["000000.png", "000001.png", SAMPLES_MANIFEST])


# -- names and temporary names -----------------------------------------------------------------


def _long_name(tmp_path: Path, size: int, suffix: str) -> Path:
    return tmp_path / ("n" * (size - len(suffix)) + suffix)


@pytest.mark.parametrize("option", ["--json", "--junit", "--html"])
def test_a_long_report_name_gets_a_temporary_name_that_fits(fake, run_cli, tmp_path, option):
    """A 255-byte name is valid; its temporary sibling (.NAME.XXXXXXXX.json) used to exceed
    NAME_MAX and fail after the whole run (exit 3)."""
    suffix = {"--json": ".json", "--junit": ".xml", "--html": ".html"}[option]
    path = _long_name(tmp_path, 255, suffix)
    res = run_cli(*_run(tmp_path, option, path))
    assert res.code == 0, res.err
    assert path.is_file() and path.stat().st_size > 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_long_names_for_stats_and_samples_files(fake, run_cli, tmp_path):
    stats = _long_name(tmp_path, 255, ".npz")
    res = run_cli("stats", _samples(tmp_path), "-o", stats, "--extractor", "counting", "--quiet")
    assert res.code == 0, res.err
    assert int(np.load(stats)["n"]) == 30
    samples = _long_name(tmp_path / "s", 255, ".npz")
    samples.parent.mkdir()
    res = run_cli("sample", "--model", "toy-noise", "-n", "3", "-o", samples, "--quiet")
    assert res.code == 0, res.err
    assert np.load(samples)["images"].shape == (3, 6, 6, 1)


@pytest.mark.parametrize("size", [1, 40, 200, 250, 255])
@pytest.mark.parametrize("suffix", [".json", ".npz", "", ".a-very-long-suffix-indeed", ".é"])
def test_temporary_names_always_fit(tmp_path, size, suffix):
    path = tmp_path / ("é" * size + suffix)
    prefix, tail = temporary_affixes(path, 255)
    name = f"{prefix}XXXXXXXX{tail}"
    assert len(os.fsencode(name)) <= 255
    assert name.startswith(".") and os.fsdecode(os.fsencode(name)) == name


def test_a_name_over_name_max_is_refused_before_the_work(fake, run_cli, tmp_path):
    path = _long_name(tmp_path, 256, ".json")
    line = _one_error(run_cli(*_run(tmp_path, "--json", path)))
    assert "256 bytes" in line and "at most 255" in line
    assert fake.extractor.calls == []  # refused before any extraction


def test_the_markdown_grid_name_is_checked_before_the_work(fake, run_cli, tmp_path):
    """NAME.md fits but its image NAME-grid.png, planned beside it, does not."""
    markdown = _long_name(tmp_path, 253, ".md")
    line = _one_error(run_cli(*_run(tmp_path, "--markdown", markdown)))
    assert "--markdown grid image" in line and "at most 255" in line
    assert fake.extractor.calls == []


def test_a_path_over_path_max_is_refused_before_the_work(fake, run_cli, tmp_path):
    deep = tmp_path.joinpath(*["d" * 250] * 20) / "report.json"
    line = _one_error(run_cli(*_run(tmp_path, "--json", deep)))
    assert "bytes long" in line and "shorter than" in line
    assert fake.extractor.calls == []


def test_a_folder_that_cannot_be_written_is_refused_before_the_work(
    fake, run_cli, tmp_path, monkeypatch
):
    """The probe creates the very temporary file the write will (a read-only mount, a
    folder without write access): refused before the work, naming the folder."""

    real_mkstemp = gio.tempfile.mkstemp

    def read_only(*args, **kwargs):
        if Path(kwargs.get("dir") or ".") == tmp_path:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        return real_mkstemp(*args, **kwargs)

    monkeypatch.setattr(gio.tempfile, "mkstemp", read_only)
    line = _one_error(run_cli(*_run(tmp_path, "--json", tmp_path / "r.json")))
    assert "r.json" in line and "cannot write in folder" in line
    assert fake.extractor.calls == []


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused_before_the_work(fake, run_cli, tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        line = _one_error(run_cli(*_run(tmp_path, "--json", folder / "r.json")))
        assert "cannot write in folder" in line and fake.extractor.calls == []
        line = _one_error(_sample(run_cli, folder / "s", 2))
        assert "cannot create" in line
    finally:
        folder.chmod(0o755)


# -- a full disk -------------------------------------------------------------------------------


def _fills_the_disk_after(limit: int):
    """A ``_write_content`` that writes ``limit`` bytes, then fails as a full disk does."""

    def write(tmp: Path, data) -> None:
        raw = data.encode() if isinstance(data, str) else data
        tmp.write_bytes(bytes(raw)[:limit])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp))

    return write


def test_a_full_disk_while_writing_reports_is_exit_2_and_leaves_nothing(
    fake, run_cli, tmp_path, monkeypatch
):
    monkeypatch.setattr(gio, "_write_content", _fills_the_disk_after(10))
    argv = _run(tmp_path, "--json", tmp_path / "r.json", "--junit", tmp_path / "r.xml")
    before = _listing(tmp_path)
    res = run_cli(*argv)
    line = _one_error(res)
    assert "no space left on device writing --json file" in line and "r.json" in line
    assert res.out == ""
    assert _listing(tmp_path) == before  # no report, no temporary file


@pytest.mark.parametrize(
    "exc",
    [
        OSError(errno.ENOSPC, "No space left on device"),
        OSError(errno.EDQUOT, "Disk quota exceeded"),
        # safetensors' (Rust) error when the disk fills while a checkpoint is written
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),
    ],
)
def test_write_failures_of_every_writer_name_the_file(tmp_path, exc):
    target = tmp_path / "ckpt.safetensors"

    def writer(tmp: Path) -> None:
        tmp.write_bytes(b"partial")
        raise exc

    with pytest.raises(InputError, match="writing checkpoint .*ckpt.safetensors") as caught:
        write_atomic(target, writer, force=False, what="checkpoint")
    assert "\n" not in str(caught.value)
    assert _listing(tmp_path) == []


def test_other_errors_of_a_writer_are_not_called_a_full_disk(tmp_path):
    def writer(tmp: Path) -> None:
        raise ValueError("a bug in the writer")

    with pytest.raises(ValueError, match="a bug"):
        write_atomic(tmp_path / "x.json", writer, force=False, what="--json file")
    assert _listing(tmp_path) == []


def _limited(limit: int):
    def preexec() -> None:
        import resource

        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit: EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


@pytest.mark.parametrize(
    "args, limit, culprit",
    [
        pytest.param(
            ["stats", "digits:test", "-o", "s.npz", "--features", "--no-cache"],
            16_000,
            "s.npz",
            marks=pytest.mark.slow,
        ),
        (["sample", "--model", "vae", "-n", "400", "-o", "s.npz"], 16_000, "s.npz"),
        pytest.param(
            ["sample", "--model", "vae", "-n", "40", "-o", "folder"],
            60,
            "folder",
            marks=pytest.mark.slow,
        ),
    ],
    ids=["stats", "sample-npz", "sample-folder"],
)
def test_a_real_write_past_the_file_size_limit_is_exit_2(tmp_path, args, limit, culprit):
    """The operating system refuses the write (RLIMIT_FSIZE: EFBIG, as a full disk gives
    ENOSPC): exit 2 naming the output, nothing left in the folder."""
    env = {**os.environ, "GENEVAL_LOAD_PLUGINS": "", "GENEVAL_CACHE": str(tmp_path / "cache")}
    work = tmp_path / "work"
    work.mkdir()
    res = subprocess.run(
        [sys.executable, "-m", "geneval", *args, "--quiet"],
        capture_output=True, text=True, env=env, cwd=work, timeout=300, check=False,
        preexec_fn=_limited(limit),
    )  # fmt: skip
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert res.returncode == 2, res.stderr
    assert len(lines) == 1 and "file too large" in lines[0] and culprit in lines[0], lines
    assert _listing(work) == []


def test_known_sizes_are_checked_against_the_free_space_before_writing(
    fake, run_cli, tmp_path, monkeypatch
):
    full = type("Statvfs", (), {"f_frsize": 4, "f_bsize": 4, "f_bavail": 25, "f_files": 0})()
    monkeypatch.setattr(gio.os, "statvfs", lambda path: full)  # 100 bytes free
    before = _listing(tmp_path)
    line = _one_error(run_cli(*_run(tmp_path, "--json", tmp_path / "r.json")))
    assert "r.json" in line and "needs about" in line and "100 bytes free" in line
    assert sorted(set(_listing(tmp_path)) - {"samples-30.npy"}) == before
    both = _run(tmp_path, "--json", tmp_path / "r.json", "--junit", tmp_path / "r.xml")
    line = _one_error(run_cli(*both))
    assert "r.json" in line and "r.xml" in line and "together" in line
    assert sorted(set(_listing(tmp_path)) - {"samples-30.npy"}) == before
    with pytest.raises(InputError, match="needs about 2.0 MB"):
        check_free_space(tmp_path / "x.npz", 2_000_000, what="samples file")
    with pytest.raises(InputError, match="needs about 1.0 kB"):
        check_image_folder(tmp_path / "new", force=False, what="-o folder", needed=1000)
    check_free_space(tmp_path / "x.npz", 100, what="samples file")


# -- --nproc -----------------------------------------------------------------------------------


@pytest.fixture
def launches(monkeypatch):
    """The launcher's calls, none started; this machine has 2 cores."""
    import geneval.launch as launch

    calls: list[tuple[list[str], int]] = []
    monkeypatch.setattr(launch, "_cores", lambda: 2)
    monkeypatch.setattr(launch, "run_ranks", lambda argv, n: calls.append((list(argv), n)) or 0)
    return calls


@pytest.mark.parametrize("nproc", ["3", "999", "1000000000000"])
def test_nproc_over_the_cores_is_refused_before_any_rank(run_cli, launches, nproc):
    res = run_cli("run", "--samples", "digits:test", "--metrics", "fid", "--nproc", nproc)
    line = _one_error(res)
    assert f"--nproc {nproc}" in line and "at most 2" in line and "--oversubscribe" in line
    assert launches == []


def test_oversubscribe_allows_more_ranks_than_cores(run_cli, launches, tmp_path):
    ok = run_cli("run", "--samples", "digits:test", "--nproc", "2", "--json", tmp_path / "a")
    assert ok.code == 0, ok.err
    more = run_cli("run", "--samples", "digits:test", "--nproc", "3", "--oversubscribe")
    assert more.code == 0, more.err
    assert [n for _, n in launches] == [2, 3]
    assert "--nproc" not in launches[1][0] and "3" not in launches[1][0]


def test_nproc_checks_the_outputs_before_starting_ranks(run_cli, launches, tmp_path):
    (tmp_path / "r.json").write_text("keep")
    line = _one_error(
        run_cli("run", "--samples", "digits:test", "--nproc", "2", "--json", tmp_path / "r.json")
    )
    assert "r.json" in line and "--force" in line
    assert launches == [] and (tmp_path / "r.json").read_text() == "keep"


# -- property: any manifest ----------------------------------------------------------------------

_LISTED = st.one_of(
    st.sampled_from(
        ["000000.png", "000001.png", "123456.png", "thesis.tex", "../outside.png", "", ".",
         "..", "/etc/passwd", SAMPLES_MANIFEST, "000000.png/..", "sub/000002.png",
         f"{STAGING_PREFIX}x", "0000000.png", "000001.PNG"]
    ),
    st.text(max_size=12),
)  # fmt: skip
_MANIFESTS = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda files: json.dumps({"files": files}).encode(), st.lists(_LISTED, max_size=8)),
    st.builds(lambda depth: ("[" * depth + "]" * depth).encode(), st.integers(1, 50_000)),
    st.builds(lambda depth: ('{"files": ' + "[" * depth).encode(), st.integers(1, 50_000)),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=8),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=10,
    ).map(lambda value: json.dumps({"files": value}).encode()),
)
_PRESENT = st.sets(st.sampled_from(["000000.png", "000001.png", "123456.png", "thesis.tex"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(manifest=_MANIFESTS, present=_PRESENT, force=st.booleans())
def test_any_manifest_is_read_safely_and_never_costs_a_user_file(manifest, present, force):
    """Whatever the manifest holds (any bytes, any JSON, deep nesting), replacing the folder
    either succeeds having removed only sample-named files the manifest listed, or is one
    InputError with the folder untouched; never another exception, and at most 8 MB."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "outside.png").write_bytes(b"outside")
        folder = root / "samples"
        folder.mkdir()
        (folder / SAMPLES_MANIFEST).write_bytes(manifest)
        for name in present:
            (folder / name).write_bytes(name.encode())
        before = {p.name: p.read_bytes() for p in folder.iterdir()}
        tracemalloc.start()
        try:
            write_image_folder(folder, _pngs(1), force=force, what="-o folder")
            outcome = "written"
        except InputError as exc:
            outcome = str(exc)
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
        assert peak < 8 * 2**20
        assert (root / "outside.png").read_bytes() == b"outside"
        after = {p.name: p.read_bytes() for p in folder.iterdir()}
        if outcome != "written":
            assert "\n" not in outcome and after == before
            return
        removed = set(before) - set(after)
        try:
            listed = json.loads(manifest).get("files", [])
        except (ValueError, RecursionError, AttributeError):
            listed = []
        assert "thesis.tex" not in removed
        assert removed <= {n for n in listed if isinstance(n, str) and SAMPLE_NAME.fullmatch(n)}
        assert after["000000.png"] == b"png 0"
        assert json.loads(after[SAMPLES_MANIFEST])["files"] == ["000000.png"]
        assert not [n for n in after if n.startswith(STAGING_PREFIX)]
