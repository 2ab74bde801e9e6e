"""Readers of a user's statistics files, of reports for ``geneval compare`` and of gates TOML
(issue 21): bad input is one line naming the file and the field (exit 2), never a plugin
error (exit 3) or a traceback; a gate never passes on a number it could not read; and no file
makes a reader allocate more than a stated budget.

Defect classes and their tests:

* statistics files (complex/huge ``n``, deep or huge ``meta``, bad dtypes, corrupt bytes,
  headers claiming more than the file holds): ``STATS_ROWS`` through ``test_stats_rows_cli``
  and ``test_stats_rows_api``, ``test_truncated_stats_file_is_exit_2``,
  ``test_stats_headers_cannot_claim_memory``,
  ``test_valid_stats_variants_are_read`` and the property tests ``test_fuzzed_stats_files``
  and ``test_fuzzed_stats_files_cli``;
* members of other names in a statistics file (other tools' arrays; the ADM layout's
  ``arr_0``, ``mu_s``, ``sigma_s`` are read, ``tests/test_adm_batches.py``), read through the
  one ``.npz`` reader (:mod:`geneval.arrayfile`): ignored unread
  (``test_extra_members_are_ignored_unread``, ``test_large_extra_member_costs_no_memory``,
  ``test_extra_members_cli`` and the property test ``test_fuzzed_extra_members``), except a
  pickled one, refused with no code run (``test_extra_pickle_member_is_refused``, the
  ``extra-object-member`` row);
* ``compare`` on reports of the wrong structure: ``STRUCTURE_ROWS`` through
  ``test_compare_structure_rows``, ``test_compare_file_rows`` and the property tests
  ``test_fuzzed_report_json`` and ``test_mutated_reports``;
* ``compare --fail-on-regression`` passing unreadable numbers: ``test_unreadable_later_value_
  is_a_regression``, ``test_string_direction_is_refused``, ``test_rtol_must_be_finite`` and
  ``test_mutated_reports``;
* gates TOML and ``pyproject.toml`` of the wrong structure: ``GATES_ROWS`` through
  ``test_gates_file_rows``, ``test_pyproject_rows`` and the property test
  ``test_fuzzed_gates_toml`` (and ``test_pyproject_given_as_gates_file``); non-finite
  numbers never passing a gate: ``test_non_finite_numbers_never_pass_a_gate``.

Memory budget: reading any of these files allocates (as :mod:`tracemalloc` counts it, numpy
arrays included) at most :data:`BUDGET` beyond the file's own size for the small files used
here, whatever sizes the file's headers claim.
"""

from __future__ import annotations

import io
import itertools
import json
import math
import os
import tracemalloc
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from geneval.errors import GenevalWarning, InputError
from geneval.feature_stats import MAX_COUNT, SIGMA_TOLERANCE, StatsFile, load_stats
from geneval.report.compare import check_report, compare_reports, load_report
from geneval.report.gates import evaluate_gates, gates_from_file, gates_from_pyproject, parse_gate
from tests.fake_plugins import FakePlugins
from tests.test_bad_input import FEATURE_DIM, Workspace, _CreatesFile, _run

#: The most a reader may allocate (tracemalloc's peak) for the small files of these tests.
BUDGET = 16 << 20

PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
_counter = itertools.count()


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def _fresh(folder: Path, suffix: str) -> Path:
    """A new file name in ``folder`` (hypothesis reuses one tmp_path for all examples)."""
    return folder / f"f{next(_counter)}{suffix}"


def _peak(call: Callable[[], Any]) -> tuple[Any, BaseException | None, int]:
    """Run ``call`` under tracemalloc: (result, exception, peak bytes)."""
    tracemalloc.start()
    try:
        try:
            return call(), None, tracemalloc.get_traced_memory()[1]
        except BaseException as exc:  # noqa: BLE001 - the caller judges it
            return None, exc, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _one_line_naming(exc: BaseException | None, name: str) -> None:
    assert isinstance(exc, InputError), repr(exc)
    message = str(exc)
    assert "\n" not in message and name in message, message


# -- statistics files ----------------------------------------------------------------------------


def _good_arrays(dim: int = FEATURE_DIM, n: int = 50) -> dict[str, np.ndarray]:
    x = np.random.default_rng(2).standard_normal((n, dim))
    meta = {"extractor": "counting", "weights_sha256": "0" * 64, "resize": "pool-2x2"}
    return {
        "mu": x.mean(0),
        "sigma": np.cov(x, rowvar=False),
        "n": np.int64(n),
        "meta": np.array(json.dumps(meta)),
    }


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array(buffer, array, allow_pickle=True)
    return buffer.getvalue()


def _claiming(shape: tuple[int, ...], dtype: str = "<f8", data: bytes = b"\0" * 64) -> bytes:
    """An ``.npy`` whose header claims ``shape`` but whose data is only ``data``."""
    header = {"descr": dtype, "fortran_order": False, "shape": shape}
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + data


def _zip(path: Path, members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as archive:
        for name, data in members.items():
            archive.writestr(f"{name}.npy", data)
    return path


def _with(path: Path, **arrays: Any) -> Path:
    """A statistics file: the good arrays, with ``arrays`` replacing (None: removing) some."""
    content = {**_good_arrays(), **arrays}
    members = {k: _npy_bytes(np.asarray(v)) for k, v in content.items() if v is not None}
    return _zip(path, members)


def _corrupt_member(path: Path) -> Path:
    """A file whose zip directory is intact but whose ``sigma`` data is damaged (bad CRC)."""
    _with(path)
    raw = bytearray(path.read_bytes())
    where = raw.index(b"sigma.npy") + 200  # inside sigma's data, past its local header
    raw[where] ^= 0xFF
    path.write_bytes(bytes(raw))
    return path


def _truncated(path: Path) -> Path:
    _with(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    return path


def _deep_json(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


#: (name, how to build the file, the field the error line must name)
STATS_ROWS: list[tuple[str, Callable[[Path], Path], str]] = [
    ("n-complex", lambda p: _with(p, n=np.complex128(50 + 1j)), "n must be a single number"),
    ("n-1e300", lambda p: _with(p, n=np.float64(1e300)), "n must be an integer"),
    ("n-nan", lambda p: _with(p, n=np.float64("nan")), "n must be an integer"),
    ("n-fraction", lambda p: _with(p, n=np.float64(50.5)), "n must be an integer"),
    ("n-beyond-2^53", lambda p: _with(p, n=np.uint64(2**60)), "n must be an integer"),
    ("n-bool", lambda p: _with(p, n=np.bool_(True)), "n must be a single number"),
    ("n-string", lambda p: _with(p, n=np.array("50")), "n must be a single number"),
    (
        "meta-deep",
        lambda p: _with(p, meta=np.array(_deep_json(100_000).encode())),
        "meta is nested",
    ),
    ("meta-depth-40", lambda p: _with(p, meta=np.array(_deep_json(40))), "meta is nested"),
    ("meta-huge", lambda p: _with(p, meta=np.array(" " * (1 << 19) + "{}")), "meta holds"),
    ("meta-int", lambda p: _with(p, meta=np.int64(3)), "meta must be a JSON string"),
    ("meta-array", lambda p: _with(p, meta=np.array(["{}", "{}"])), "meta must be a JSON string"),
    ("meta-not-utf8", lambda p: _with(p, meta=np.array(b"{\xff}")), "meta is not a JSON string"),
    ("meta-not-json", lambda p: _with(p, meta=np.array("{x")), "meta is not a JSON string"),
    ("meta-list", lambda p: _with(p, meta=np.array("[1]")), "meta must be a JSON object"),
    (
        "meta-extractor-object",
        lambda p: _with(p, meta=np.array('{"extractor": {"a": 1}}')),
        "meta extractor must be a string",
    ),
    ("mu-complex", lambda p: _with(p, mu=np.zeros(FEATURE_DIM, complex)), "mu has dtype"),
    ("mu-bool", lambda p: _with(p, mu=np.zeros(FEATURE_DIM, bool)), "mu has dtype"),
    ("mu-strings", lambda p: _with(p, mu=np.array(["1"] * FEATURE_DIM)), "mu has dtype"),
    (
        "mu-object",
        lambda p: _with(p, mu=np.array([1.0] * FEATURE_DIM, dtype=object)),
        "member 'mu' holds Python objects",
    ),
    ("mu-2d", lambda p: _with(p, mu=np.zeros((1, FEATURE_DIM))), "do not match"),
    ("mu-empty", lambda p: _with(p, mu=np.zeros(0), sigma=np.zeros((0, 0))), "do not match"),
    ("sigma-shape", lambda p: _with(p, sigma=np.eye(FEATURE_DIM + 1)), "do not match"),
    ("mu-inf", lambda p: _with(p, mu=np.full(FEATURE_DIM, np.inf)), "mu contains non-finite"),
    ("mu-1e200", lambda p: _with(p, mu=np.full(FEATURE_DIM, 1e200)), "mu has an entry"),
    ("sigma-1e300", lambda p: _with(p, sigma=1e300 * np.eye(FEATURE_DIM)), "sigma has an entry"),
    (
        "features-wide",
        lambda p: _with(p, features=np.zeros((50, FEATURE_DIM + 1), np.float32)),
        "features (50, 13) do not match",
    ),
    (
        "features-rows",
        lambda p: _with(p, features=np.zeros((49, FEATURE_DIM), np.float32)),
        "49 feature rows but n = 50",
    ),
    (
        "features-complex",
        lambda p: _with(p, features=np.zeros((50, FEATURE_DIM), complex)),
        "features has dtype",
    ),
    (
        "features-beyond-float32",
        lambda p: _with(p, features=np.full((50, FEATURE_DIM), 1e300)),
        "features contain non-finite",
    ),
    ("corrupt-member", _corrupt_member, "is not a readable .npz"),
    (
        "extra-object-member",
        lambda p: _with(p, extra=np.array([1, None], dtype=object)),
        "member 'extra' holds Python objects",
    ),
    (
        "header-claims-1e12",
        lambda p: _zip(
            p,
            {
                "mu": _claiming((10**12,)),
                "sigma": _claiming((10**12, 10**12)),
            },
        ),
        "claims",
    ),
    (
        "sigma-claims-more-than-stored",
        lambda p: _zip(
            p,
            {
                "mu": _npy_bytes(np.zeros(FEATURE_DIM)),
                "sigma": _claiming((FEATURE_DIM, FEATURE_DIM), data=b"\0" * 8),
            },
        ),
        "member 'sigma' claims",
    ),
    (
        "deflated-claims-more-than-stored",
        lambda p: _zip(
            p,
            {
                "mu": _npy_bytes(np.zeros(FEATURE_DIM)),
                "sigma": _claiming((4096, 4096), data=b"\0" * 8),
            },
            zipfile.ZIP_DEFLATED,
        ),
        "member 'sigma' claims",
    ),
    (
        "dimension-beyond-bound",
        lambda p: _zip(p, {"mu": _claiming((10**5,)), "sigma": _claiming((10**5, 10**5))}),
        "claims",
    ),
]


@pytest.mark.parametrize(("name", "build", "field"), STATS_ROWS, ids=[r[0] for r in STATS_ROWS])
def test_stats_rows_api(name: str, build, field: str, tmp_path: Path) -> None:
    """``load_stats`` (the one reader of the API, the runner and published statistics)."""
    path = build(tmp_path / f"{name}.npz")
    _, exc, peak = _peak(lambda: load_stats(path))
    _one_line_naming(exc, str(path))
    assert field in str(exc), str(exc)
    assert peak < BUDGET + path.stat().st_size


@pytest.mark.parametrize(("name", "build", "field"), STATS_ROWS, ids=[r[0] for r in STATS_ROWS])
def test_stats_rows_cli(name: str, build, field: str, fake, run_cli, tmp_path: Path) -> None:
    """The same files as ``--reference``: exit 2, one line naming the file and the field."""
    ws = Workspace(tmp_path)
    path = build(tmp_path / f"{name}.npz")
    res = run_cli(*_run(ws, "--reference", path, metrics="feat-dist"))
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("geneval: error: "), res.err
    assert path.name in res.err and field in res.err, res.err
    assert "Traceback" not in res.err and res.out == ""
    assert not ws.report.exists()


def test_truncated_stats_file_is_exit_2(fake, run_cli, tmp_path: Path) -> None:
    """A truncated statistics file (its zip directory lost) is bad input, whichever reader
    ends up refusing it."""
    ws = Workspace(tmp_path)
    path = _truncated(tmp_path / "cut.npz")
    with pytest.raises(InputError, match="cut.npz"):
        load_stats(path)
    res = run_cli(*_run(ws, "--reference", path, metrics="feat-dist"))
    assert res.code == 2 and len(res.err_lines) == 1 and "cut.npz" in res.err, res.err


def test_stats_headers_cannot_claim_memory(tmp_path: Path) -> None:
    """Whatever shapes the headers claim, nothing is allocated for them: the peak stays far
    below what the claim would need (8 TB here)."""
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        path = _zip(
            _fresh(tmp_path, ".npz"),
            {"mu": _claiming((10**6,)), "sigma": _claiming((10**6, 10**6))},
            compression,
        )
        _, exc, peak = _peak(lambda path=path: load_stats(path))
        _one_line_naming(exc, str(path))
        assert peak < 1 << 20, peak


def test_valid_stats_variants_are_read(tmp_path: Path) -> None:
    """Big-endian, Fortran-ordered, integer-valued float n, bytes meta, compressed: read, and
    the same numbers as the plain file."""
    good = _good_arrays()
    plain = load_stats(_with(tmp_path / "plain.npz"))
    variants = {
        "big-endian": {"mu": good["mu"].astype(">f8"), "sigma": good["sigma"].astype(">f8")},
        "fortran": {"sigma": np.asfortranarray(good["sigma"])},
        "float32": {"mu": good["mu"].astype(np.float32), "sigma": good["sigma"]},
        "float-n": {"n": np.float64(50.0)},
        "bytes-meta": {"meta": np.array(good["meta"].item().encode())},
        "features": {"features": np.ones((50, FEATURE_DIM), ">f4")},
    }
    for name, change in variants.items():
        loaded = load_stats(_with(tmp_path / f"{name}.npz", **change))
        assert loaded.n == 50 and loaded.meta == plain.meta, name
        assert loaded.mu.dtype == np.float64 and loaded.mu.dtype.isnative
        tolerance = 1e-6 if name == "float32" else 0
        np.testing.assert_allclose(loaded.mu, plain.mu, rtol=tolerance, atol=tolerance)
        np.testing.assert_array_equal(loaded.sigma, plain.sigma)
    assert load_stats(tmp_path / "features.npz").features.dtype == np.float32
    compressed = tmp_path / "compressed.npz"
    np.savez_compressed(compressed, **good)
    np.testing.assert_array_equal(load_stats(compressed).sigma, plain.sigma)
    with pytest.warns(GenevalWarning, match="no provenance"):
        bare = load_stats(_with(tmp_path / "bare.npz", n=None, meta=None))
    assert bare.n is None and bare.meta is None


# -- members a statistics file holds besides mu, sigma, n, meta and features ---------------------

#: What other tools may store beside the statistics, and members no reader could use: each is
#: ignored, its data never read (the ADM layout's ``arr_0``, ``mu_s`` and ``sigma_s`` have a
#: meaning and are read: ``tests/test_adm_batches.py``).
EXTRA_MEMBERS: dict[str, bytes] = {
    "arr_1": _npy_bytes(np.random.default_rng(3).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)),
    "mu_x": _npy_bytes(np.ones(7)),
    "sigma_x": _npy_bytes(np.eye(7)),
    "labels": _npy_bytes(np.arange(5)),
    "names": _npy_bytes(np.array(["a", "bc"])),
    "complex": _npy_bytes(np.zeros(3, complex)),
    "records": _npy_bytes(np.zeros(2, dtype=[("a", "<f4"), ("b", "<i8")])),
    "claims-1e12": _claiming((10**12,)),
    "not-an-array": b"plain text, no .npy magic string",
    "version-9": b"\x93NUMPY\x09\x00" + b"\0" * 20,
}


def _stats_members(**arrays: Any) -> dict[str, bytes]:
    """The members of a good statistics file (with ``features``), as ``.npy`` bytes."""
    good = _good_arrays()
    good["features"] = np.random.default_rng(4).standard_normal((50, FEATURE_DIM), np.float32)
    return {k: _npy_bytes(np.asarray(v)) for k, v in {**good, **arrays}.items()}


def _assert_same_stats(loaded: StatsFile, plain: StatsFile) -> None:
    np.testing.assert_array_equal(loaded.mu, plain.mu)
    np.testing.assert_array_equal(loaded.sigma, plain.sigma)
    np.testing.assert_array_equal(loaded.features, plain.features)
    assert loaded.n == plain.n and loaded.meta == plain.meta


@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
def test_extra_members_are_ignored_unread(compression: int, tmp_path: Path, monkeypatch) -> None:
    """Members of other names are ignored: the statistics read are those of the file without
    them, only the five statistics members are read, and an extra member whose data is corrupt
    (a bad CRC, found only by reading it) or whose header claims 8 TB changes nothing."""
    plain = load_stats(_zip(tmp_path / "plain.npz", _stats_members(), compression))
    path = _zip(tmp_path / "extra.npz", {**EXTRA_MEMBERS, **_stats_members()}, compression)
    raw = bytearray(path.read_bytes())  # damage arr_1's data: its CRC no longer matches
    raw[raw.index(b"arr_1.npy") + 200] ^= 0xFF
    path.write_bytes(bytes(raw))
    with zipfile.ZipFile(path) as archive, pytest.raises(zipfile.BadZipFile):
        archive.read("arr_1.npy")  # the damage is real: reading arr_1 would fail

    import geneval.feature_stats as stats_module

    read: list[str] = []
    real_read = stats_module.read_member

    def recording(archive: zipfile.ZipFile, member: Any) -> np.ndarray:
        read.append(member.key)
        return real_read(archive, member)

    monkeypatch.setattr(stats_module, "read_member", recording)
    _assert_same_stats(load_stats(path), plain)
    assert sorted(read) == sorted(["mu", "sigma", "n", "meta", "features"])


def test_large_extra_member_costs_no_memory(tmp_path: Path) -> None:
    """An ADM reference batch (``arr_0`` images, ``mu``, ``sigma``, ``mu_s``, ``sigma_s``,
    no provenance): read as the ADM layout, without the plain-file warning; its 16 MiB of
    images are never read (only ``arr_0``'s header is checked)."""
    x = np.random.default_rng(5).standard_normal((40, FEATURE_DIM))
    arrays = {"mu": x.mean(0), "sigma": np.cov(x, rowvar=False)}
    images = np.zeros((86, 256, 256, 3), np.uint8)  # 16 MiB
    path = tmp_path / "VIRTUAL_batch.npz"
    np.savez(path, arr_0=images, **arrays, mu_s=np.zeros(7), sigma_s=np.eye(7))
    with warnings.catch_warnings():
        warnings.simplefilter("error", GenevalWarning)
        loaded, exc, peak = _peak(lambda: load_stats(path))
    assert exc is None, exc
    np.testing.assert_array_equal(loaded.mu, arrays["mu"])
    np.testing.assert_array_equal(loaded.sigma, arrays["sigma"])
    assert loaded.n is None and loaded.meta is None and loaded.features is None
    assert loaded.layout == "adm"
    assert peak < images.nbytes // 8, peak
    # an arr_0 the ADM evaluator could not read is refused from its header alone
    np.savez(path, arr_0=np.zeros((2, 8, 8, 16), np.uint8), **arrays)
    with pytest.raises(InputError, match=r"arr_0 must be uint8 images \(N, H, W, 3\)"):
        load_stats(path)


@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(lambda pwned: np.array([_CreatesFile(pwned)], object), id="object"),
        pytest.param(
            lambda pwned: np.array([(1, _CreatesFile(pwned))], dtype=[("a", "<i8"), ("b", "O")]),
            id="record-with-object",
        ),
    ],
)
@pytest.mark.parametrize(
    "compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED], ids=["stored", "deflated"]
)
def test_extra_pickle_member_is_refused(payload, compression: int, tmp_path: Path) -> None:
    """An extra member whose header declares Python objects (a pickle) is refused, one line
    naming the file and the member, and nothing is unpickled (the payload would create a
    file)."""
    pwned = tmp_path / "pwned"
    members = {**_stats_members(), "arr_1": _npy_bytes(payload(pwned))}
    path = _zip(tmp_path / "pickled.npz", members, compression)
    _, exc, _ = _peak(lambda: load_stats(path))
    _one_line_naming(exc, str(path))
    assert "member 'arr_1' holds Python objects" in str(exc), str(exc)
    assert not pwned.exists()


def test_extra_members_cli(fake, run_cli, tmp_path: Path) -> None:
    """``--reference`` a statistics file with other tools' members: the run gives the same
    value as with the plain file; with a pickled member it is exit 2 and no code runs."""
    ws = Workspace(tmp_path)
    plain = _zip(tmp_path / "plain.npz", _stats_members())
    extra = _zip(tmp_path / "extra.npz", {**_stats_members(), **EXTRA_MEMBERS})
    values = []
    for path in (plain, extra):
        res = run_cli(*_run(ws, "--reference", path, "--force", metrics="feat-dist"))
        assert res.code == 0, (res.code, res.err)
        values.append(json.loads(ws.report.read_text())["metrics"]["feat-dist"]["value"])
    assert values[0] == values[1] and math.isfinite(values[0]) and values[0] > 0
    pwned = tmp_path / "pwned"
    pickled = _zip(
        tmp_path / "pickled.npz",
        {**_stats_members(), "mu_s": _npy_bytes(np.array([_CreatesFile(pwned)], object))},
    )
    res = run_cli(*_run(ws, "--reference", pickled, "--force", metrics="feat-dist"))
    assert res.code == 2 and len(res.err_lines) == 1, (res.code, res.err)
    assert "pickled.npz" in res.err and "'mu_s'" in res.err and "Traceback" not in res.err
    assert not pwned.exists()


@st.composite
def _extra_members(draw: st.DrawFn) -> tuple[dict[str, bytes], bool]:
    """Members of other names (random arrays, lying headers, random bytes) and whether one of
    them declares Python objects."""
    members: dict[str, bytes] = {}
    objects = False
    names = st.sampled_from(["arr_1", "mu_x", "sigma_x", "x", "labels", "n_s", "meta.json"])
    for name in draw(st.lists(names, max_size=4, unique=True)):
        how = draw(st.sampled_from(["array", "claim", "bytes"]))
        if how == "array":
            array = draw(_random_array())
            objects |= array.dtype.hasobject
            members[name] = _npy_bytes(array)
        elif how == "claim":
            dtype = draw(_DTYPES)
            objects |= dtype == "|O"
            shape = tuple(draw(st.lists(st.integers(0, 10**7), max_size=3)))
            members[name] = _claiming(shape, dtype)
        else:
            members[name] = draw(st.binary(max_size=40).filter(lambda b: b[:1] != b"\x93"))
    return members, objects


@PROPERTY
@given(extra=_extra_members(), data=st.data())
def test_fuzzed_extra_members(extra: tuple[dict[str, bytes], bool], data, tmp_path) -> None:
    """Whatever other members a good statistics file holds, in any order and compression, it
    reads as the file without them, unless one declares Python objects: then one InputError
    line naming the file. Within the memory budget."""
    members, objects = extra
    compression = data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    plain = load_stats(_zip(_fresh(tmp_path, ".npz"), _stats_members(), compression))
    everything = list({**_stats_members(), **members}.items())
    order = data.draw(st.permutations(range(len(everything))))
    path = _zip(_fresh(tmp_path, ".npz"), dict(everything[i] for i in order), compression)
    loaded, exc, peak = _peak(lambda: load_stats(path))
    assert peak < BUDGET, peak
    if objects:
        _one_line_naming(exc, str(path))
        assert "holds Python objects" in str(exc)
    else:
        assert exc is None, exc
        _assert_same_stats(loaded, plain)


# A hypothesis strategy of statistics files: each member absent, good, or of a random dtype,
# shape and content; and then possibly damaged bytes.
_DTYPES = st.sampled_from(
    ["<f8", ">f8", "<f4", "<f2", "<i8", ">i4", "<u8", "|b1", "<c16", "<U8", "|S4", "|O"]
)
_SHAPES = st.lists(st.integers(0, 14), max_size=3).map(tuple)


@st.composite
def _random_array(draw: st.DrawFn) -> np.ndarray:
    dtype = np.dtype(draw(_DTYPES))
    shape = draw(_SHAPES)
    size = math.prod(shape)
    if dtype.kind == "O":
        return np.array([None] * size, dtype=object).reshape(shape)
    if dtype.kind in "US":
        text = draw(st.sampled_from(["{}", "[1]", "x", "", '{"extractor": 1}', "1e999"]))
        return np.full(shape, text, dtype=dtype)
    values = draw(
        st.lists(
            st.one_of(st.floats(width=64), st.integers(-(2**70), 2**70)),
            min_size=size,
            max_size=size,
        )
    )
    with np.errstate(all="ignore"):
        try:
            return np.array(values, dtype=np.float64).astype(dtype).reshape(shape)
        except OverflowError:
            return np.zeros(shape, dtype=dtype)


_META_TEXT = st.one_of(
    st.just('{"extractor": "counting", "resize": "pool-2x2"}'),
    st.text(max_size=30),
    st.integers(0, 60).map(_deep_json),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
        max_leaves=10,
    ).map(json.dumps),
)


@st.composite
def _stats_file_bytes(draw: st.DrawFn) -> bytes:
    good = _good_arrays(dim=draw(st.integers(1, 6)), n=draw(st.integers(2, 20)))
    x = np.random.default_rng(draw(st.integers(0, 9))).standard_normal((good["n"], good["mu"].size))
    good["features"] = x.astype(np.float32)
    members: dict[str, bytes] = {}
    for key in ("mu", "sigma", "n", "meta", "features", "other"):
        how = draw(st.sampled_from(["good", "good", "absent", "random", "claim"]))
        if key == "other" and how == "good":
            how = "absent"
        if how == "absent":
            continue
        if how == "good":
            members[key] = _npy_bytes(good[key])
        elif how == "random":
            members[key] = _npy_bytes(draw(_random_array()))
        else:
            claim = tuple(draw(st.lists(st.integers(0, 10**7), min_size=0, max_size=3)))
            members[key] = _claiming(claim, draw(_DTYPES.filter(lambda d: d != "|O")))
    if "meta" in members and draw(st.booleans()):
        members["meta"] = _npy_bytes(np.array(draw(_META_TEXT)))
    buffer = io.BytesIO()
    compression = draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]))
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for key, data in members.items():
            archive.writestr(f"{key}.npy", data)
    raw = bytearray(buffer.getvalue())
    damage = draw(st.sampled_from(["none", "none", "truncate", "flip"]))
    if damage == "truncate" and raw:
        raw = raw[: draw(st.integers(0, len(raw) - 1))]
    elif damage == "flip" and raw:
        for _ in range(draw(st.integers(1, 4))):
            raw[draw(st.integers(0, len(raw) - 1))] ^= draw(st.integers(1, 255))
    return bytes(raw)


def _check_valid(stats: StatsFile) -> None:
    """What a successful read guarantees."""
    d = stats.dim
    assert stats.mu.shape == (d,) and stats.sigma.shape == (d, d) and d >= 1
    assert stats.mu.dtype == stats.sigma.dtype == np.float64
    assert np.isfinite(stats.mu).all() and np.isfinite(stats.sigma).all()
    scale = max(float(np.abs(stats.sigma).max()), 1e-300)
    assert float(np.abs(stats.sigma - stats.sigma.T).max()) <= SIGMA_TOLERANCE * scale
    assert stats.n is None or (isinstance(stats.n, int) and 2 <= stats.n <= MAX_COUNT)
    assert stats.meta is None or isinstance(stats.meta, dict)
    if stats.features is not None:
        assert stats.features.dtype == np.float32 and stats.features.shape[1] == d
        assert np.isfinite(stats.features).all()
        assert stats.n is None or stats.features.shape[0] == stats.n
    statistics = stats.statistics()  # the running sums rebuild without overflow
    assert np.isfinite(statistics.sum_outer.numpy()).all()


@PROPERTY
@given(raw=_stats_file_bytes())
def test_fuzzed_stats_files(raw: bytes, tmp_path: Path) -> None:
    """Any statistics file is read into valid statistics or refused with one InputError line
    naming it, within the memory budget."""
    path = _fresh(tmp_path, ".npz")
    path.write_bytes(raw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", GenevalWarning)
        stats, exc, peak = _peak(lambda: load_stats(path))
    assert peak < BUDGET, peak
    if exc is None:
        _check_valid(stats)
    else:
        _one_line_naming(exc, str(path))


@settings(PROPERTY, max_examples=25)
@given(raw=_stats_file_bytes())
def test_fuzzed_stats_files_cli(raw: bytes, fake, run_cli, tmp_path: Path) -> None:
    """The same files as ``run --reference``: exit 0 or 2 with one line; never 3 or a
    traceback."""
    ws = Workspace(tmp_path)
    path = _fresh(tmp_path, ".npz")
    path.write_bytes(raw)
    res = run_cli(*_run(ws, "--reference", path, "--force", metrics="feat-dist"))
    assert res.code in (0, 2), (res.code, res.err)
    assert "Traceback" not in res.err
    if res.code == 2:
        assert len(res.err_lines) == 1 and res.err_lines[0].startswith("geneval: error: ")


# -- reports for compare -------------------------------------------------------------------------


def _report(metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    report: dict[str, Any] = {
        "geneval_version": "0.1.0",
        "config": {"extractors": {"fid": {"name": "x", "weights_sha256": "a", "resize": "r"}}},
        "inputs": {"samples": {"count": 100}},
        "metrics": metrics,
        "metric_info": {
            "fid": {"higher_is_better": False, "uncertainty": None},
            "kid": {"higher_is_better": False, "uncertainty": "std"},
            "is": {"higher_is_better": True, "uncertainty": "std"},
        },
        "errors": {},
    }
    report.update(extra)
    return report


BASE = _report(
    {"fid": {"value": 3.0}, "kid": {"value": 0.01, "std": 0.001}, "is": {"value": 8.0, "std": 0.1}}
)


def _write_json(folder: Path, data: Any, *, raw: str | None = None) -> Path:
    path = _fresh(folder, ".json")
    path.write_text(raw if raw is not None else json.dumps(data), encoding="utf-8")
    return path


def _set(data: Any, path: tuple, value: Any) -> Any:
    data = json.loads(json.dumps(data))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


#: (name, the broken report, the key the error line must name)
STRUCTURE_ROWS: list[tuple[str, Any, str]] = [
    ("list", [BASE], "not a geneval report"),
    ("no-version", {k: v for k, v in BASE.items() if k != "geneval_version"}, "geneval_version"),
    ("metrics-list", _set(BASE, ("metrics",), [1, 2]), "metrics"),
    ("metric-number", _set(BASE, ("metrics", "fid"), 3.0), "metrics.fid"),
    ("metric-no-value", _set(BASE, ("metrics", "fid"), {"v": 3.0}), "metrics.fid"),
    ("info-list", _set(BASE, ("metric_info",), []), "metric_info"),
    ("info-entry-string", _set(BASE, ("metric_info", "fid"), "lower"), "metric_info.fid"),
    (
        "direction-string",
        _set(BASE, ("metric_info", "fid", "higher_is_better"), "false"),
        "metric_info.fid.higher_is_better",
    ),
    (
        "direction-number",
        _set(BASE, ("metric_info", "fid", "higher_is_better"), 0),
        "metric_info.fid.higher_is_better",
    ),
    (
        "uncertainty-list",
        _set(BASE, ("metric_info", "kid", "uncertainty"), ["std"]),
        "metric_info.kid.uncertainty",
    ),
    ("errors-list", _set(BASE, ("errors",), ["fid"]), "errors"),
    ("errors-object-values", _set(BASE, ("errors",), {"fid": {"a": 1}}), "errors"),
    ("config-string", _set(BASE, ("config",), "x"), "config"),
    ("extractors-list", _set(BASE, ("config", "extractors"), []), "config.extractors"),
    ("extractor-string", _set(BASE, ("config", "extractors", "fid"), "x"), "config.extractors"),
]


@pytest.mark.parametrize(
    ("name", "broken", "key"), STRUCTURE_ROWS, ids=[r[0] for r in STRUCTURE_ROWS]
)
def test_compare_structure_rows(name: str, broken: Any, key: str, run_cli, tmp_path: Path) -> None:
    """A report of the wrong structure, first or later: exit 2 naming the file and the key."""
    good = _write_json(tmp_path, BASE)
    bad = _write_json(tmp_path, broken)
    for order in ((good, bad), (bad, good)):
        res = run_cli("compare", *order, "--fail-on-regression")
        assert res.code == 2, (res.code, res.err)
        assert len(res.err_lines) == 1 and res.err_lines[0].startswith("geneval: error: ")
        assert bad.name in res.err and key in res.err, res.err
        assert "Traceback" not in res.err and res.out == ""
    with pytest.raises(InputError, match="later"):
        compare_reports([BASE, broken], ["base", "later"])


def test_compare_file_rows(run_cli, tmp_path: Path) -> None:
    """Deeply nested or oversized JSON, a FIFO: exit 2 naming the file (a FIFO never hangs)."""
    good = _write_json(tmp_path, BASE)
    deep = _write_json(tmp_path, None, raw="[" * 100_000 + "]" * 100_000)
    fifo = tmp_path / "fifo.json"
    os.mkfifo(fifo)
    big_int = _write_json(tmp_path, None, raw='{"geneval_version": 1, "metrics": ' + "9" * 5000)
    for path in (deep, fifo, big_int):
        res = run_cli("compare", good, path)
        assert res.code == 2 and len(res.err_lines) == 1, (res.code, res.err)
        assert path.name in res.err and "Traceback" not in res.err


@pytest.mark.parametrize(
    "later",
    [
        '{"value": NaN}',
        '{"value": Infinity}',
        '{"value": -Infinity}',
        '{"value": null}',
        '{"value": "3.0"}',
        '{"value": true}',
        '{"value": [3.0]}',
        '{"value": 1' + "0" * 400 + "}",
        None,  # the metric is missing altogether
    ],
)
def test_unreadable_later_value_is_a_regression(later: str | None, run_cli, tmp_path) -> None:
    """A later run without a finite value for a metric the base computed fails the gate."""
    base = _write_json(tmp_path, BASE)
    text = json.dumps(BASE)
    if later is None:
        report = json.loads(text)
        del report["metrics"]["fid"]
        text = json.dumps(report)
    else:
        text = text.replace('"fid": {"value": 3.0}', f'"fid": {later}')
        assert later in text
    path = _write_json(tmp_path, None, raw=text)
    res = run_cli("compare", base, path, "--fail-on-regression")
    assert res.code == 1, (res.code, res.err, res.out)
    assert "regressions: fid in" in res.out
    assert run_cli("compare", base, path).code == 0  # without the flag: shown, exit 0
    comparison = compare_reports([BASE, load_report(path)], ["a", "b"])
    assert comparison.regressions == ["fid in b"]
    # the same value in the base is no base value, not a regression of the later run
    assert compare_reports([load_report(path), BASE], ["b", "a"]).regressions == []


def test_string_direction_is_refused(run_cli, tmp_path: Path) -> None:
    """``"higher_is_better": "false"`` is not read as true: the report is refused."""
    later = _set(BASE, ("metric_info", "fid", "higher_is_better"), "false")
    later = _set(later, ("metrics", "fid", "value"), 30.0)
    res = run_cli(
        "compare", _write_json(tmp_path, BASE), _write_json(tmp_path, later), "--fail-on-regression"
    )
    assert res.code == 2 and "higher_is_better" in res.err, res.err
    with pytest.raises(InputError, match="higher_is_better"):
        check_report(later, "r.json")
    # a real boolean works, and a worse value is flagged
    assert compare_reports(
        [BASE, _set(BASE, ("metrics", "fid", "value"), 30.0)], ["a", "b"]
    ).regressions == ["fid in b"]


def test_rtol_must_be_finite() -> None:
    for rtol in (math.nan, math.inf, -1.0):
        with pytest.raises(InputError, match="rtol"):
            compare_reports([BASE, BASE], ["a", "b"], rtol=rtol)


_JSON = st.recursive(
    st.none() | st.booleans() | st.floats() | st.integers(-(10**30), 10**30) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "geneval_version",
                    "metrics",
                    "value",
                    "fid",
                    "errors",
                    "metric_info",
                    "higher_is_better",
                    "uncertainty",
                    "std",
                    "config",
                    "extractors",
                    "inputs",
                ]
            )  # fmt: skip
            | st.text(max_size=5),
            inner,
            max_size=5,
        )
    ),
    max_leaves=25,
)


def _compare_ok(res, *, regress_expected: bool | None = None) -> None:
    assert res.code in (0, 1, 2), (res.code, res.err)
    assert "Traceback" not in res.err
    if res.code == 2:
        assert len(res.err_lines) == 1 and res.err_lines[0].startswith("geneval: error: ")
    if regress_expected is not None and res.code != 2:
        assert res.code == (1 if regress_expected else 0), (res.code, res.out)


@PROPERTY
@given(data=_JSON)
def test_fuzzed_report_json(data: Any, run_cli, tmp_path: Path) -> None:
    """Any JSON document, as the base or a later report: exit 0, 1 or 2 with one line."""
    good = _write_json(tmp_path, BASE)
    path = _write_json(tmp_path, data)
    for order in ((good, path), (path, good)):
        _compare_ok(run_cli("compare", *order, "--fail-on-regression"))

    def read_and_compare() -> Any:
        return compare_reports([BASE, load_report(path)], ["base", path.name])

    comparison, exc, peak = _peak(read_and_compare)  # the reader and the comparison alone
    assert peak < BUDGET + 64 * path.stat().st_size, peak
    if exc is not None:
        _one_line_naming(exc, path.name)
    else:
        assert [row.name for row in comparison.rows][:3] == ["fid", "kid", "is"]


_PATHS = [
    ("metrics",),
    ("metrics", "fid"),
    ("metrics", "fid", "value"),
    ("metrics", "kid", "std"),
    ("metrics", "is", "value"),
    ("metric_info",),
    ("metric_info", "fid"),
    ("metric_info", "fid", "higher_is_better"),
    ("metric_info", "kid", "uncertainty"),
    ("errors",),
    ("errors", "fid"),
    ("config",),
    ("config", "extractors"),
    ("config", "extractors", "fid"),
    ("config", "extractors", "fid", "name"),
    ("inputs", "samples", "count"),
    ("geneval_version",),
]


@PROPERTY
@given(
    mutations=st.lists(
        st.tuples(st.sampled_from(_PATHS), st.one_of(st.just("<delete>"), _JSON)), max_size=3
    )
)
def test_mutated_reports(mutations, run_cli, tmp_path: Path) -> None:
    """A valid later report with some keys replaced or deleted: exit 2 (wrong structure) or a
    verdict; and whenever the later fid is not a finite number, it is a regression."""
    later = json.loads(json.dumps(BASE))
    for path, value in mutations:
        node = later
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue
        if value == "<delete>":
            node.pop(path[-1], None)
        else:
            node[path[-1]] = value
    path = _write_json(tmp_path, later)
    res = run_cli("compare", _write_json(tmp_path, BASE), path, "--fail-on-regression")
    _compare_ok(res)
    if res.code != 2:
        fid = later["metrics"].get("fid")
        value = fid.get("value") if isinstance(fid, dict) else None
        readable = (
            isinstance(value, int | float)
            and not isinstance(value, bool)
            and math.isfinite(float(value))
        )
        if not readable:
            assert res.code == 1 and "fid in" in res.out, (res.code, res.out)


# -- gates TOML ----------------------------------------------------------------------------------

#: (name, TOML bytes, what the error line must name besides the file)
GATES_ROWS: list[tuple[str, bytes, str]] = [
    ("tool-string", b'tool = "x"\n', "'tool' must be a table"),
    ("tool-number", b"tool = 3\nfail-if = []\n", "'tool' must be a table"),
    ("geneval-number", b"[tool]\ngeneval = 1\n", "'tool.geneval' must be a table"),
    ("gates-string", b'[tool.geneval]\ngates = "fid>3"\n', "[tool.geneval.gates] must be a table"),
    ("gates-array", b"[tool.geneval]\ngates = [1]\n", "[tool.geneval.gates] must be a table"),
    ("fail-if-string", b'fail-if = "fid>3"\n', "'fail-if' must be a list of strings"),
    ("fail-if-ints", b"fail-if = [1, 2]\n", "'fail-if' must be a list of strings"),
    (
        "nested-fail-if-table",
        b"[tool.geneval.gates]\nfail-if = {a = 1}\n",
        "'fail-if' must be a list of strings",
    ),
    ("top-fail-if-in-pyproject", b"fail-if = 3\n[tool.x]\n", "'fail-if' must be a list"),
    ("not-toml", b"fail-if = [\n", "not valid TOML"),
    ("not-utf8", b'fail-if = ["\xff"]\n', "not UTF-8"),
    ("deep-arrays", b"x = " + b"[" * 5000 + b"]" * 5000 + b"\n", "not valid TOML"),
    ("huge-integer", b"x = " + b"9" * 5000 + b"\n", "not valid TOML"),
    ("empty", b"", "neither"),
    ("pyproject-without-gates", b'[project]\nname = "x"\n[tool.black]\n', "neither"),
    ("typo-key", b'fail_if = ["fid>3"]\n', "unknown gate key"),
    ("bad-expression", b'fail-if = ["fid=>3"]\n', "malformed gate"),
    ("nan-threshold", b'fail-if = ["fid>nan"]\n', "not a finite number"),
]


@pytest.mark.parametrize(("name", "content", "culprit"), GATES_ROWS, ids=[r[0] for r in GATES_ROWS])
def test_gates_file_rows(name: str, content: bytes, culprit: str, fake, run_cli, tmp_path) -> None:
    """``--gates FILE``: exit 2, one line naming the file and the key, before any work."""
    ws = Workspace(tmp_path)
    path = tmp_path / f"{name}.toml"
    path.write_bytes(content)
    res = run_cli(*_run(ws, "--gates", path))
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1 and res.err_lines[0].startswith("geneval: error: "), res.err
    assert path.name in res.err and culprit in res.err, res.err
    assert "Traceback" not in res.err and res.out == "" and not ws.report.exists()


@pytest.mark.parametrize(
    ("content", "culprit"),
    [
        (b'tool = "x"\n', "'tool' must be a table"),
        (b"[tool]\ngeneval = [1]\n", "'tool.geneval' must be a table"),
        (b"[tool.geneval]\ngates = 1\n", "gates must be a table"),
        (b"[tool.geneval.gates]\nfail-if = [3]\n", "'fail-if' must be a list of strings"),
        (b"[tool\n", "not valid TOML"),
        (b"[tool]\nx = '\xfe'\n", "not UTF-8"),
    ],
    ids=["tool", "geneval", "gates", "fail-if", "not-toml", "not-utf8"],
)
def test_pyproject_rows(content, culprit, fake, run_cli, tmp_path, monkeypatch) -> None:
    """The working directory's pyproject.toml: the same rules, naming pyproject.toml."""
    ws = Workspace(tmp_path)
    (tmp_path / "pyproject.toml").write_bytes(content)
    monkeypatch.chdir(tmp_path)
    res = run_cli(*_run(ws))
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1 and "pyproject.toml" in res.err and culprit in res.err, res.err


def test_pyproject_given_as_gates_file(tmp_path: Path) -> None:
    """A pyproject.toml as ``--gates``: its [tool.geneval.gates] and any top-level fail-if."""
    path = tmp_path / "pyproject.toml"
    path.write_text('fail-if = ["kid>1"]\n[project]\nname = "x"\n[tool.geneval.gates]\n'
                    'fail-if = ["fid>30"]\n')  # fmt: skip
    assert [g.expr for g in gates_from_file(path)] == ["kid>1", "fid>30"]
    assert [g.expr for g in gates_from_pyproject(tmp_path)] == ["fid>30"]


def test_non_finite_numbers_never_pass_a_gate() -> None:
    """NaN, ±inf in a field, null, a string, a boolean: the gate fails, whatever its
    direction; a metric's value of +inf (allowed for some metrics) compares as a number."""
    for expr in ("kid.std<0.01", "kid.std>0.01", "kid.std<=1e300", "kid.std>=-1e300"):
        gate = parse_gate(expr)
        for bad in (math.nan, math.inf, -math.inf, None, "0.001", True, 10**400):
            verdict = evaluate_gates([gate], {"kid": {"value": 0.0, "std": bad}})[0]
            assert verdict["failed"] is True, (expr, bad, verdict)
        assert evaluate_gates([gate], {"kid": {"value": 0.0, "std": 0.5}})[0]["failed"] == (
            gate.holds(0.5)
        )
    for expr in ("psnr>30", "psnr<30"):
        verdict = evaluate_gates([parse_gate(expr)], {"psnr": {"value": math.nan}})[0]
        assert verdict["failed"] is True
    perfect = {"psnr": {"value": math.inf}}
    assert evaluate_gates([parse_gate("psnr<30")], perfect)[0]["failed"] is False
    assert evaluate_gates([parse_gate("psnr>30")], perfect)[0]["failed"] is True
    with pytest.raises(InputError, match="must be a string"):
        parse_gate(3)  # type: ignore[arg-type]


_TOML_KEYS = st.sampled_from(["tool", "geneval", "gates", "fail-if", "project", "x"])
_TOML_SCALARS = st.one_of(
    st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=12).map(
        json.dumps
    ),  # a basic string
    st.integers(-(10**20), 10**20).map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.sampled_from(["true", "false", "nan", "inf", '"fid>30"', '"kid.std<=0.1"', '"fid=>1"']),
)


def _toml_containers(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """TOML arrays and inline tables of ``inner`` values."""
    arrays = st.lists(inner, max_size=3).map(lambda items: "[" + ", ".join(items) + "]")
    tables = st.dictionaries(_TOML_KEYS, inner, max_size=3).map(
        lambda table: "{" + ", ".join(f'"{k}" = {v}' for k, v in table.items()) + "}"
    )
    return st.one_of(arrays, tables)


_TOML_VALUES = st.recursive(_TOML_SCALARS, _toml_containers, max_leaves=8)


@st.composite
def _toml_documents(draw: st.DrawFn) -> bytes:
    """A TOML document: top-level keys, then tables such as [tool.geneval.gates]; or random
    text or bytes."""
    kind = draw(st.sampled_from(["toml", "toml", "toml", "text", "bytes"]))
    if kind == "text":
        return draw(st.text(max_size=60)).encode("utf-8", "surrogatepass")
    if kind == "bytes":
        return draw(st.binary(max_size=60))
    top = draw(st.dictionaries(_TOML_KEYS, _TOML_VALUES, max_size=3))
    lines = [f'"{k}" = {v}' for k, v in top.items()]
    for _ in range(draw(st.integers(0, 3))):
        header = ".".join(draw(st.lists(_TOML_KEYS, min_size=1, max_size=3)))
        lines.append(f"[{header}]")
        body = draw(st.dictionaries(_TOML_KEYS, _TOML_VALUES, max_size=2))
        lines += [f'"{k}" = {v}' for k, v in body.items()]
    return ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass")


@PROPERTY
@given(content=_toml_documents())
def test_fuzzed_gates_toml(content: bytes, tmp_path: Path) -> None:
    """Any gates file or pyproject.toml gives a list of gates or one InputError line naming
    the file; never another exception; within the memory budget."""
    folder = _fresh(tmp_path, "")
    folder.mkdir()
    path = folder / "pyproject.toml"
    path.write_bytes(content)
    for read in (lambda: gates_from_file(path), lambda: gates_from_pyproject(folder)):
        gates, exc, peak = _peak(read)
        assert peak < BUDGET, peak
        if exc is None:
            assert isinstance(gates, list)
            assert all(math.isfinite(g.threshold) and g.origin.startswith(str(path)) for g in gates)
        else:
            _one_line_naming(exc, str(path))


def test_zip_helpers_build_what_they_say(tmp_path: Path) -> None:
    """The crafted files above are what they claim: a header claiming 10¹² elements with 64
    bytes of data (so the rows test the reader, not a broken helper)."""
    path = _zip(tmp_path / "c.npz", {"mu": _claiming((10**12,))})
    with zipfile.ZipFile(path) as archive, archive.open("mu.npy") as handle:
        version = np.lib.format.read_magic(handle)
        shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        assert version == (1, 0) and shape == (10**12,) and dtype == np.float64
        assert len(handle.read()) == 64
