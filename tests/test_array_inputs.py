"""Every reader of a user's array input (issue 21, the "arrays" part).

``.npy``/``.npz`` files, in-memory numpy arrays and torch tensors given to
``geneval.evaluate()`` and ``geneval.Evaluator.update()``:

* precomputed ``features`` are used only when no extractor is requested, and are credited to
  the file, never to an extractor; ``--extractor`` with features is exit 2;
* one layout rule for the CLI, ``evaluate()`` and ``Evaluator``: a shape that fits both NCHW
  and NHWC is refused unless ``--layout``/``layout=`` states it, and a stated layout is read;
* a truncated or corrupt ``.npz`` is exit 2 naming the file in ``run``, ``stats`` and ``train``;
* other byte orders and float16 are converted, not refused; tensors without plain numbers
  (meta, sparse, quantized, complex) are an ``InputError``;
* an ``.npz`` header that claims more than the file holds is refused before allocating;
* a features array of the wrong width names the file;
* no "NumPy array is not writable" warning from reading a memory-mapped ``.npy``;
* hypothesis property tests fuzzing the ``.npy`` and ``.npz`` readers and ``update()``.
"""

from __future__ import annotations

import io
import struct
import tempfile
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import geneval
from geneval.arrayfile import DEFLATE_MAX_RATIO
from geneval.errors import InputError
from geneval.evaluator import _as_unit_float
from geneval.sources import ArraySource, array_source, image_layout, load_array_file
from tests.fake_plugins import FakePlugins

FEATURE_DIM = 12  # the counting extractor of tests/fake_plugins.py


@pytest.fixture
def fake(add_plugin) -> FakePlugins:
    plugins = FakePlugins()
    add_plugin(plugins)
    return plugins


def _counting_mean(nchw: np.ndarray) -> float:
    """What ``feat-mean`` reports through the counting extractor: the mean of its 2×2 pooled
    features of the images (uint8 divided by 255, as a pass does)."""
    images = torch.from_numpy(np.ascontiguousarray(nchw))
    images = images.float().div_(255.0) if images.dtype == torch.uint8 else images.float()
    if images.shape[1] == 1:
        images = images.repeat(1, 3, 1, 1)
    return float(F.adaptive_avg_pool2d(images, 2).flatten(1).double().mean())


def _single_error(res) -> str:
    assert res.code == 2, (res.code, res.err)
    assert len(res.err_lines) == 1, res.err
    assert "Traceback" not in res.err
    assert res.out == ""
    return res.err_lines[0]


def _feat_mean(run_cli, samples: Path, *extra: str) -> float:
    res = run_cli("run", "--samples", samples, "--metrics", "feat-mean", "--json", "-", *extra)
    assert res.code == 0, res.err
    import json

    return json.loads(res.out)["metrics"]["feat-mean"]["value"]


# -- precomputed features ----------------------------------------------------------------------


def _images_and_features(path: Path, n: int = 20, dim: int = FEATURE_DIM) -> np.ndarray:
    rng = np.random.default_rng(3)
    features = rng.standard_normal((n, dim)).astype(np.float32) + 5.0
    np.savez(path, images=rng.integers(0, 256, (n, 6, 6, 3), dtype=np.uint8), features=features)
    return features


def test_features_with_an_extractor_requested_is_exit_2(fake, run_cli, tmp_path):
    path = tmp_path / "both.npz"
    _images_and_features(path)
    report = tmp_path / "r.json"
    line = _single_error(
        run_cli(
            "run",
            "--samples",
            path,
            "--metrics",
            "feat-mean",
            "--extractor",
            "counting",
            "--json",
            report,
        )  # fmt: skip
    )
    assert "both.npz" in line and "--extractor counting" in line and "'features'" in line
    assert not report.exists()
    assert fake.extractor.calls == []  # refused before any image went through it


def test_features_with_an_extractor_in_the_api_is_an_input_error(fake, tmp_path):
    path = tmp_path / "both.npz"
    _images_and_features(path)
    with pytest.raises(InputError, match="both.npz.*--extractor counting"):
        geneval.evaluate(path, metrics="feat-mean", extractor="counting", device="cpu")


def test_file_features_are_used_and_credited_to_the_file(fake, tmp_path):
    path = tmp_path / "both.npz"
    features = _images_and_features(path)
    report = geneval.evaluate(path, metrics="feat-mean", device="cpu", cache=False)
    assert report["metrics"]["feat-mean"]["value"] == pytest.approx(
        float(features.astype(np.float64).mean()), rel=1e-12
    )
    credit = report["config"]["extractors"]["feat-mean"]
    assert credit["name"] is None and credit["weights_sha256"] is None
    assert credit["features_from"] == {"samples": f"the features array of {path}"}
    assert report["config"]["extractor"] is None
    assert report["metric_info"]["feat-mean"]["min_samples_from"] in (None, "")
    assert fake.extractor.calls == []


def test_file_features_beside_an_extracted_reference_credit_both(fake, tmp_path):
    """Samples' features from the file, the reference (toyset, default extractor counting)
    extracted: the extractor is credited for the reference only."""
    path = tmp_path / "both.npz"
    features = _images_and_features(path)
    report = geneval.evaluate(path, "toyset", metrics="feat-dist", device="cpu", cache=False)
    credit = report["config"]["extractors"]["feat-dist"]
    assert credit["name"] == "counting"
    assert credit["features_from"] == {"samples": f"the features array of {path}"}
    ref = FakePlugins().extractor.load(device="cpu")(FakePluginsToySet().images)["feat"]
    expected = float(
        ((torch.from_numpy(features).double().mean(0) - ref.double().mean(0)) ** 2).sum()
    )
    assert report["metrics"]["feat-dist"]["value"] == pytest.approx(expected, rel=1e-9)


def FakePluginsToySet():  # noqa: N802 - the toy dataset's train split
    from tests.fake_plugins import ToySet

    return ToySet().load("train")


def test_features_of_the_wrong_width_name_the_file(fake, run_cli, tmp_path):
    path = tmp_path / "narrow.npz"
    _images_and_features(path, dim=7)
    for metric in ("feat-dist", "fid"):
        line = _single_error(
            run_cli(
                "run",
                "--samples",
                path,
                "--reference",
                "toyset",
                "--metrics",
                metric,
                "--json",
                tmp_path / "r.json",
            )  # fmt: skip
        )
        assert "narrow.npz" in line and "7-d" in line and "12-d" in line, line
        assert "frechet" not in line.lower()


def test_two_feature_files_of_different_widths_name_the_file(fake, tmp_path):
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    _images_and_features(a, dim=5)
    _images_and_features(b, dim=6)
    with pytest.raises(InputError, match=r"a\.npz.*5-d.*b\.npz.*6-d"):
        geneval.evaluate(a, b, metrics="feat-dist", device="cpu")


# -- layouts -----------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(4, 3, 3, 3), (4, 1, 8, 3), (4, 3, 5, 1), (4, 1, 2, 1)])
def test_the_layout_rule_refuses_shapes_that_fit_both(shape):
    with pytest.raises(InputError, match="fits both NCHW and NHWC.*--layout.*layout="):
        image_layout(shape, "auto", "x")
    assert image_layout(shape, "nchw", "x") == "nchw"
    assert image_layout(shape, "nhwc", "x") == "nhwc"


@pytest.mark.parametrize(
    ("shape", "layout"), [((2, 3, 6, 6), "nchw"), ((2, 6, 6, 3), "nhwc"), ((2, 1, 7, 7), "nchw")]
)
def test_unambiguous_shapes_read_as_before_and_a_contradicting_layout_is_refused(shape, layout):
    assert image_layout(shape, "auto", "x") == layout
    other = "nhwc" if layout == "nchw" else "nchw"
    with pytest.raises(InputError, match=f"read as {other.upper()}"):
        image_layout(shape, other, "x")


def test_cli_ambiguous_array_is_exit_2_and_a_stated_layout_is_read(fake, run_cli, tmp_path):
    raw = np.random.default_rng(5).integers(0, 256, (6, 3, 3, 3), dtype=np.uint8)
    path = tmp_path / "cube.npy"
    np.save(path, raw)
    line = _single_error(
        run_cli("run", "--samples", path, "--metrics", "feat-mean", "--extractor", "counting")
    )
    assert "cube.npy" in line and "--layout nchw|nhwc" in line
    nchw = _feat_mean(run_cli, path, "--extractor", "counting", "--layout", "nchw")
    nhwc = _feat_mean(run_cli, path, "--extractor", "counting", "--layout", "nhwc")
    assert nchw == pytest.approx(_counting_mean(raw), rel=1e-12)
    assert nhwc == pytest.approx(_counting_mean(raw.transpose(0, 3, 1, 2)), rel=1e-12)
    assert nchw != nhwc
    # the cache keeps the two readings apart: the same file read the other way again
    assert _feat_mean(run_cli, path, "--extractor", "counting", "--layout", "nchw") == nchw


def test_stats_command_takes_layout(fake, run_cli, tmp_path):
    path = tmp_path / "cube.npy"
    np.save(path, np.random.default_rng(6).random((6, 3, 3, 3)).astype(np.float32))
    out = tmp_path / "s.npz"
    line = _single_error(run_cli("stats", path, "-o", out, "--extractor", "counting"))
    assert "--layout" in line and not out.exists()
    res = run_cli("stats", path, "-o", out, "--extractor", "counting", "--layout", "nhwc")
    assert res.code == 0, res.err and out.exists()


def test_one_rule_for_cli_evaluate_and_evaluator(fake, run_cli, tmp_path):
    raw = np.random.default_rng(7).random((8, 1, 8, 3)).astype(np.float32)
    path = tmp_path / "amb.npy"
    np.save(path, raw)
    for layout, nchw in (("nchw", raw), ("nhwc", raw.transpose(0, 3, 1, 2))):
        expected = _counting_mean(nchw)
        cli = _feat_mean(run_cli, path, "--extractor", "counting", "--layout", layout)
        api = geneval.evaluate(
            raw, metrics="feat-mean", extractor="counting", device="cpu", layout=layout
        )["metrics"]["feat-mean"]["value"]
        evaluator = geneval.Evaluator("feat-mean", extractor="counting", device="cpu")
        evaluator.update(torch.from_numpy(raw), layout=layout)
        streamed = evaluator.compute()["feat-mean"]["value"]
        assert cli == pytest.approx(expected, rel=1e-12)
        assert api == pytest.approx(expected, rel=1e-12)
        assert streamed == pytest.approx(expected, rel=1e-12)
    with pytest.raises(InputError, match="fits both"):
        geneval.evaluate(raw, metrics="feat-mean", extractor="counting", device="cpu")
    evaluator = geneval.Evaluator("feat-mean", extractor="counting", device="cpu")
    with pytest.raises(InputError, match="fits both"):
        evaluator.update(raw)
    stated = geneval.Evaluator("feat-mean", extractor="counting", device="cpu", layout="nhwc")
    stated.update(raw)
    assert stated.compute()["feat-mean"]["value"] == pytest.approx(
        _counting_mean(raw.transpose(0, 3, 1, 2)), rel=1e-12
    )


def test_evaluator_reads_unambiguous_nhwc_like_nchw(fake):
    raw = np.random.default_rng(8).integers(0, 256, (5, 3, 7, 7), dtype=np.uint8)
    values = []
    for batch in (raw, raw.transpose(0, 2, 3, 1)):
        evaluator = geneval.Evaluator("feat-mean", extractor="counting", device="cpu")
        evaluator.update(batch)
        values.append(evaluator.compute()["feat-mean"]["value"])
    assert values[0] == values[1] == pytest.approx(_counting_mean(raw), rel=1e-12)


def test_bad_layout_value_is_an_input_error(fake):
    with pytest.raises(InputError, match="^layout= hwc: choose from auto, nchw, nhwc"):
        geneval.evaluate(np.zeros((2, 3, 4, 4), np.uint8), metrics="feat-mean", layout="hwc")


# -- unreadable files ---------------------------------------------------------------------------


def _truncated_npz(path: Path, keep: float = 0.6) -> Path:
    buffer = io.BytesIO()
    np.savez(buffer, images=np.random.default_rng(9).random((10, 6, 6, 3)).astype(np.float32))
    data = buffer.getvalue()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("keep", [0.1, 0.6, 0.99])
def test_truncated_npz_is_exit_2_in_run_stats_and_train(fake, run_cli, tmp_path, keep):
    path = _truncated_npz(tmp_path / "cut.npz", keep)
    report, stats, ckpt = tmp_path / "r.json", tmp_path / "s.npz", tmp_path / "c.pt"
    for argv in (
        ["run", "--samples", path, "--metrics", "feat-mean", "--extractor", "counting",
         "--json", report],
        ["run", "--samples", _images(tmp_path), "--reference", path, "--metrics", "feat-dist",
         "--extractor", "counting", "--json", report],
        ["stats", path, "-o", stats, "--extractor", "counting"],
        ["train", "--model", "ddpm", "--dataset", path, "-o", ckpt, "--steps", "1"],
    ):  # fmt: skip
        line = _single_error(run_cli(*argv))
        assert "cut.npz" in line, line
    assert not report.exists() and not stats.exists() and not ckpt.exists()


def _images(tmp_path: Path) -> Path:
    path = tmp_path / "ok.npy"
    np.save(path, np.random.default_rng(10).integers(0, 256, (8, 6, 6, 3), dtype=np.uint8))
    return path


def _lying_member(shape: tuple[int, ...], descr: str = "<f4", body: bytes = b"\0" * 64) -> bytes:
    buffer = io.BytesIO()
    header = {"descr": descr, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(buffer, header)
    return buffer.getvalue() + body


@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED])
@pytest.mark.parametrize("key", ["images", "features", "labels"])
def test_npz_header_claiming_10_to_the_12_is_exit_2_without_allocating(
    fake, run_cli, tmp_path, compression, key
):
    path = tmp_path / "liar.npz"
    shape = (10**12, 3, 8, 8) if key == "images" else (10**12, 4) if key != "labels" else (10**12,)
    with zipfile.ZipFile(path, "w", compression) as archive:
        archive.writestr(f"{key}.npy", _lying_member(shape))
    tracemalloc.start()
    try:
        with pytest.raises(InputError, match=r"liar\.npz.*claims"):
            load_array_file(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20, peak
    line = _single_error(
        run_cli("run", "--samples", path, "--metrics", "feat-mean", "--extractor", "counting")
    )
    assert "liar.npz" in line


def test_npz_member_claiming_more_than_its_compressed_data_can_hold(tmp_path):
    """A zip directory whose uncompressed size lies (a 'zip bomb' claim) is refused from the
    directory alone, before the member is decompressed."""
    path = tmp_path / "bomb.npz"
    np.savez_compressed(path, images=np.zeros((4, 6, 6, 3), np.uint8))
    data = bytearray(path.read_bytes())
    central = data.rindex(b"PK\x01\x02")
    compressed = struct.unpack_from("<I", data, central + 20)[0]
    struct.pack_into("<I", data, central + 24, compressed * (DEFLATE_MAX_RATIO + 10) + 8192)
    path.write_bytes(bytes(data))
    with pytest.raises(InputError, match=r"bomb\.npz.*more than the file holds"):
        load_array_file(path)


def test_npz_in_memory_bound_is_stated(tmp_path, monkeypatch):
    import geneval.arrayfile as arrayfile

    path = tmp_path / "big.npz"
    np.savez(path, images=np.zeros((64, 8, 8, 3), np.uint8))
    monkeypatch.setattr(arrayfile, "memory_bound", lambda: 1000)
    with pytest.raises(InputError, match=r"big\.npz: its arrays need 12288 bytes.*\.npy"):
        load_array_file(path)


def test_a_zip_renamed_npy_and_a_fifo_are_refused(tmp_path):
    path = tmp_path / "zip.npy"
    np.savez(tmp_path / "z.npz", images=np.zeros((2, 6, 6, 3), np.uint8))
    (tmp_path / "z.npz").rename(path)
    with pytest.raises(InputError, match=r"zip\.npy.*magic"):
        load_array_file(path)
    fifo = tmp_path / "pipe.npy"
    import os

    os.mkfifo(fifo)
    with pytest.raises(InputError, match="not a regular file"):
        load_array_file(fifo)


# -- dtypes and tensors ------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [">f4", ">f8", "<f2", ">f2", "<f8", np.longdouble])
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_other_byte_orders_and_precisions_are_converted(fake, run_cli, tmp_path, dtype, suffix):
    native = np.random.default_rng(11).random((6, 6, 6, 3)).astype(np.float32)
    converted = native.astype(dtype)
    path = tmp_path / f"img{suffix}"
    if suffix == ".npy":
        np.save(path, converted)
    else:
        np.savez(
            path,
            images=converted,
            labels=np.arange(6).astype(">i8"),
            latents=np.ones((6, 2), ">f4"),
        )
    value = _feat_mean(run_cli, path, "--extractor", "counting", "--no-cache")
    expected = _counting_mean(converted.astype(np.float64).transpose(0, 3, 1, 2))
    assert value == pytest.approx(expected, rel=1e-12)
    if suffix == ".npz":
        _, carried = load_array_file(path)
        assert carried["labels"].tolist() == list(range(6))
        assert carried["latents"].dtype == torch.float32


def test_big_endian_in_memory_arrays_are_converted(fake):
    native = np.random.default_rng(12).random((5, 3, 6, 6))
    value = geneval.evaluate(
        native.astype(">f8"), metrics="feat-mean", extractor="counting", device="cpu"
    )["metrics"]["feat-mean"]["value"]
    assert value == pytest.approx(_counting_mean(native), rel=1e-12)
    evaluator = geneval.Evaluator("feat-mean", extractor="counting", device="cpu")
    evaluator.update(native.astype(">f4"))
    assert evaluator.compute()["feat-mean"]["value"] == pytest.approx(
        _counting_mean(native.astype(np.float32)), rel=1e-12
    )


def _quantized() -> torch.Tensor:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch.quantize_per_tensor(torch.zeros(2, 3, 4, 4), 0.1, 0, torch.quint8)


BAD_TENSORS = {
    "meta": lambda: torch.empty(2, 3, 4, 4, device="meta"),
    "sparse": lambda: torch.zeros(2, 3, 4, 4).to_sparse(),
    "complex": lambda: torch.zeros(2, 3, 4, 4, dtype=torch.complex64),
    "quantized": _quantized,
    "bool": lambda: torch.zeros(2, 3, 4, 4, dtype=torch.bool),
    "int64": lambda: torch.zeros(2, 3, 4, 4, dtype=torch.int64),
    "nan": lambda: torch.full((2, 3, 4, 4), float("nan")),
    "3-d": lambda: torch.zeros(3, 4, 4),
}


@pytest.mark.parametrize("name", sorted(BAD_TENSORS))
def test_tensors_without_plain_numbers_are_input_errors(fake, name):
    tensor = BAD_TENSORS[name]()
    with pytest.raises(InputError) as caught:
        geneval.evaluate(tensor, metrics="feat-mean", extractor="counting", device="cpu")
    assert "samples array" in str(caught.value) and "\n" not in str(caught.value)
    evaluator = geneval.Evaluator("feat-mean", extractor="counting", device="cpu")
    with pytest.raises(InputError) as caught:
        evaluator.update(tensor)
    assert str(caught.value).startswith("update") and "\n" not in str(caught.value)


def test_bfloat16_and_float16_tensors_are_read(fake):
    base = torch.rand(4, 3, 6, 6)
    for dtype in (torch.bfloat16, torch.float16):
        tensor = base.to(dtype)
        value = geneval.evaluate(tensor, metrics="feat-mean", extractor="counting", device="cpu")[
            "metrics"
        ]["feat-mean"]["value"]
        assert value == pytest.approx(_counting_mean(tensor.float().numpy()), rel=1e-12)


def test_a_memory_mapped_npy_brings_no_torch_warning(fake, tmp_path):
    path = tmp_path / "plain.npy"
    np.save(path, np.random.default_rng(13).integers(0, 256, (70, 3, 6, 6), dtype=np.uint8))
    report = geneval.evaluate(path, metrics="feat-mean", extractor="counting", device="cpu")
    assert not any("not writable" in w for w in report["warnings"]), report["warnings"]
    assert report["metrics"]["feat-mean"]["value"] == pytest.approx(
        _counting_mean(np.load(path)), rel=1e-12
    )


def test_carried_arrays_out_of_range_are_refused(tmp_path):
    path = tmp_path / "c.npz"
    images = np.zeros((3, 6, 6, 3), np.uint8)
    for carried, pattern in (
        ({"labels": np.array([0.0, 1e300, 2.0])}, "labels must be integers that fit int64"),
        ({"labels": np.array([0, 2**64 - 1, 1], np.uint64)}, "fit int64"),
        ({"features": np.full((3, 2), 1e300)}, "beyond float32"),
        ({"latents": np.zeros((3, 2), np.complex64)}, "real numbers"),
    ):
        np.savez(path, images=images, **carried)
        with pytest.raises(InputError, match=pattern):
            load_array_file(path)


# -- property tests ----------------------------------------------------------------------------


#: What reading one fuzzed file may allocate (tracemalloc's peak; numpy's buffers are traced):
#: 4 MiB, plus what its compressed data could honestly expand to.
def _budget(size: int) -> int:
    return (4 << 20) + DEFLATE_MAX_RATIO * size


DTYPES = st.sampled_from(
    ["|u1", "<f4", ">f4", "<f8", ">f8", "<f2", "<i2", ">i4", "|b1", "<c8", "<u8", "|V3"]
)
SHAPES = st.lists(st.integers(0, 5), min_size=0, max_size=5).map(tuple)


def _array(data, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    size = int(np.prod(shape)) * np.dtype(dtype).itemsize
    raw = data.draw(st.binary(min_size=size, max_size=size))
    array = np.frombuffer(raw, dtype=np.uint8).view(dtype).reshape(shape).copy()
    if np.dtype(dtype).kind == "f" and data.draw(st.booleans()):
        array = np.asarray(np.abs(np.nan_to_num(array)) % 1.0)  # often in range
    return array


def _corrupt(data, blob: bytes) -> bytes:
    how = data.draw(st.sampled_from(["none", "truncate", "flip", "header"]))
    if how == "truncate" and blob:
        return blob[: data.draw(st.integers(0, len(blob) - 1))]
    if how == "flip" and blob:
        out = bytearray(blob)
        for _ in range(data.draw(st.integers(1, 8))):
            position = data.draw(st.integers(0, len(out) - 1))
            out[position] = data.draw(st.integers(0, 255))
        return bytes(out)
    if how == "header":
        shape = data.draw(st.lists(st.integers(0, 10**13), min_size=0, max_size=5).map(tuple))
        return _lying_member(shape, data.draw(DTYPES), blob[128:])
    return blob


def _check_outcome(read) -> None:
    """``read()`` gives a valid result or one-line InputError, within the budget."""
    tracemalloc.start()
    try:
        images, carried = read()
    except InputError as exc:
        message = str(exc)
        assert message and "\n" not in message
        return
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        _check_outcome.peak = peak  # type: ignore[attr-defined]
    if images is not None:
        assert images.ndim == 4 and images.shape[1] in (1, 3) and 0 not in images.shape
        assert images.dtype == np.uint8 or images.dtype.kind == "f"
    counts = {int(t.shape[0]) for t in carried.values()}
    if images is not None:
        counts.add(int(images.shape[0]))
    assert len(counts) <= 1
    assert images is not None or carried


def _read_source(path: Path):
    """Read a file as a run does: the source, and every batch of its images."""
    source = ArraySource(path)
    if source.has_images:
        for batch in source.batches(3, torch.device("cpu"), None):
            assert batch.dtype == torch.float32 and batch.min() >= 0 and batch.max() <= 1
    return source.array, source.carried


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_property_npy_reader(data):
    dtype, shape = data.draw(DTYPES), data.draw(SHAPES)
    buffer = io.BytesIO()
    np.save(buffer, _array(data, dtype, shape))
    blob = _corrupt(data, buffer.getvalue())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.npy"
        path.write_bytes(blob)
        _check_outcome(lambda: _read_source(path))
        assert _check_outcome.peak < _budget(len(blob)), (_check_outcome.peak, len(blob))


@settings(max_examples=80, deadline=None)
@given(data=st.data())
def test_property_npz_reader(data):
    keys = data.draw(
        st.lists(
            st.sampled_from(["images", "labels", "factors", "latents", "features", "arr_0"]),
            min_size=0,
            max_size=3,
            unique=True,
        )
    )
    arrays = {key: _array(data, data.draw(DTYPES), data.draw(SHAPES)) for key in keys}
    buffer = io.BytesIO()
    compressed = data.draw(st.booleans())
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    blob = buffer.getvalue()
    how = data.draw(st.sampled_from(["none", "bytes", "member", "directory"]))
    if how == "bytes":
        blob = _corrupt(data, blob)
    elif how == "member" and keys:
        # one member rewritten with a (possibly lying) header, in a well-formed zip
        rebuilt = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(blob)) as source, zipfile.ZipFile(rebuilt, "w") as out:
            for info in source.infolist():
                content = source.read(info)
                if info.filename == f"{keys[0]}.npy":
                    content = _corrupt(data, content)
                out.writestr(info.filename, content)
        blob = rebuilt.getvalue()
    elif how == "directory" and b"PK\x01\x02" in blob:
        out = bytearray(blob)
        central = out.rindex(b"PK\x01\x02")
        field = data.draw(st.sampled_from([20, 24]))  # compressed / uncompressed size
        struct.pack_into("<I", out, central + field, data.draw(st.integers(0, 2**32 - 1)))
        blob = bytes(out)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.npz"
        path.write_bytes(blob)
        _check_outcome(lambda: _read_source(path))
        assert _check_outcome.peak < _budget(len(blob)), (_check_outcome.peak, len(blob))


@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_property_in_memory_arrays_and_update(data):
    """Arrays handed to ``evaluate()`` (through :func:`array_source`) and ``update()``: a
    valid NCHW float batch or one-line InputError, whatever the dtype, byte order, shape or
    layout."""
    dtype, shape = data.draw(DTYPES), data.draw(SHAPES)
    array = _array(data, dtype, shape)
    layout = data.draw(st.sampled_from(["auto", "nchw", "nhwc"]))
    as_tensor = data.draw(st.booleans()) and array.dtype.kind in "uifb" and array.dtype.isnative
    given_images = torch.from_numpy(array) if as_tensor else array
    try:
        source = array_source(given_images, "samples array", layout)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        batches = list(source.batches(4, torch.device("cpu"), None))
        assert sum(b.shape[0] for b in batches) == source.count
        assert all(b.ndim == 4 and b.shape[1] in (1, 3) for b in batches)
    try:
        batch = _as_unit_float(given_images, torch.device("cpu"), layout)
    except InputError as exc:
        assert "\n" not in str(exc)
    else:
        assert batch.ndim == 4 and batch.shape[1] in (1, 3) and batch.dtype == torch.float32
        assert float(batch.min()) >= 0.0 and float(batch.max()) <= 1.0


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(keep=st.floats(0.0, 1.0), flips=st.lists(st.integers(0, 10**6), max_size=4))
def test_property_cli_never_exits_3_on_a_damaged_npz(fake, run_cli, keep, flips):
    """Through the command line: a damaged ``.npz`` gives a report or exit 2 with one line."""
    buffer = io.BytesIO()
    rng = np.random.default_rng(14)
    np.savez(
        buffer,
        images=rng.integers(0, 256, (6, 6, 6, 3), dtype=np.uint8),
        labels=np.arange(6),
    )
    blob = bytearray(buffer.getvalue())
    for flip in flips:
        blob[flip % len(blob)] ^= 0xFF
    blob = bytes(blob[: max(1, int(len(blob) * keep))]) if keep < 1.0 else bytes(blob)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.npz"
        path.write_bytes(blob)
        res = run_cli(
            "run", "--samples", path, "--metrics", "feat-mean", "--extractor", "counting",
            "--no-cache", "--json", "-",
        )  # fmt: skip
    assert res.code in (0, 2), (res.code, res.err)
    assert "Traceback" not in res.err
    if res.code == 2:
        assert len(res.err_lines) == 1 and "damaged.npz" in res.err_lines[0]
