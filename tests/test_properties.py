"""Property tests: whatever a user passes, each parser either accepts it with the right meaning or
refuses it with an :class:`InputError` — never another exception, never a wrong value."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from geneval.errors import InputError
from geneval.feature_stats import SIGMA_TOLERANCE, load_stats
from geneval.options import Option
from geneval.report.gates import parse_gate
from geneval.sources import ArraySource

FAST = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)

# -- gates -------------------------------------------------------------------------------------

metric_names = st.from_regex(r"[a-z0-9_-]{1,12}", fullmatch=True)
field_names = st.from_regex(r"[a-z0-9_]{1,8}", fullmatch=True)
operators = st.sampled_from(["<", "<=", ">", ">="])


@FAST
@given(metric_names, st.one_of(st.none(), field_names), operators, st.floats(allow_nan=False))
def test_gate_round_trip(metric, field, op, threshold):
    name = metric if field is None else f"{metric}.{field}"
    expr = f"{name} {op} {threshold!r}"
    if not math.isfinite(threshold):
        with pytest.raises(InputError, match="finite"):
            parse_gate(expr)
        return
    gate = parse_gate(expr)
    assert (gate.metric, gate.field, gate.op) == (metric, field or "value", op)
    assert gate.threshold == threshold
    # the gate fails exactly when the expression holds
    for value in (threshold - 1.0, threshold, threshold + 1.0):
        holds = {"<": value < threshold, "<=": value <= threshold, ">": value > threshold}
        holds[">="] = value >= threshold
        assert gate.holds(value) == holds[op]
    assert gate.holds(float("nan"))  # NaN never passes


@FAST
@given(st.text(max_size=40))
def test_gate_parser_accepts_or_refuses_any_text(text):
    try:
        gate = parse_gate(text)
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    assert math.isfinite(gate.threshold) and gate.op in ("<", "<=", ">", ">=")


# -- option typing -----------------------------------------------------------------------------

options = st.sampled_from(
    [
        Option(3, "int", low=1),
        Option(0, "int", low=0, high=10),
        Option(1.0, "float"),
        Option(0.5, "float", low=0.0, high=1.0, low_exclusive=True),
        Option(True, "bool"),
        Option("a", "str", choices=("a", "b")),
        Option("x", "free str"),
    ]
)
raw_values = st.one_of(
    st.text(max_size=12),
    st.integers(min_value=-(10**20), max_value=10**20).map(str),
    st.floats().map(repr),
    st.sampled_from(
        ["true", "False", "yes", "off", "nan", "inf", "-inf", "1e999", " 7 ", "a", "b"]
    ),
)


@FAST
@given(options, raw_values)
def test_option_typing(option, raw):
    try:
        value = option.convert(raw, where="--opt m.k")
    except InputError as exc:
        assert str(exc).startswith("--opt m.k=") and "\n" not in str(exc)
        return
    assert type(value) is type(option.default)
    if isinstance(value, float):
        assert math.isfinite(value)
        assert value == float(raw)
    if isinstance(value, int) and not isinstance(value, bool):
        assert value == int(raw)
    if option.choices is not None:
        assert value in option.choices
    if option.low is not None and not isinstance(value, bool | str):
        assert value > option.low if option.low_exclusive else value >= option.low
    if option.high is not None and not isinstance(value, bool | str):
        assert value <= option.high


# -- the array loader --------------------------------------------------------------------------

dtypes = st.sampled_from(
    [np.uint8, np.uint16, np.int8, np.int32, np.int64, np.float16, np.float32, np.float64, bool]
)


@st.composite
def arrays(draw):
    dtype = draw(dtypes)
    ndim = draw(st.integers(1, 5))
    shape = tuple(draw(st.lists(st.sampled_from([0, 1, 2, 3, 4]), min_size=ndim, max_size=ndim)))
    elements = None
    if np.issubdtype(dtype, np.floating):
        elements = st.floats(-2, 2, width=16 if dtype == np.float16 else 32) | st.sampled_from(
            [np.nan, np.inf, 0.0, 1.0]
        )
    return draw(hnp.arrays(dtype, shape, elements=elements))


@FAST
@given(arrays(), st.booleans())
def test_array_loader_accepts_right_values_or_refuses(array, as_npz):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / ("a.npz" if as_npz else "a.npy")
        if as_npz:
            np.savez(path, images=array)
        else:
            np.save(path, array)
        try:
            source = ArraySource(path)
        except InputError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
    # accepted: uint8 or float in [0, 1], 4-D with 1 or 3 channels, as docs/contracts.md §4 says
    assert array.ndim == 4 and array.shape[0] > 0
    assert array.dtype == np.uint8 or (
        np.issubdtype(array.dtype, np.floating)
        and np.isfinite(array).all()
        and array.min() >= 0
        and array.max() <= 1
    )
    got = torch.cat(list(source.batches(3, torch.device("cpu"), 0)))
    channels_first = array.shape[1] in (1, 3) and array.shape[3] not in (1, 3)
    nchw = array if channels_first else array.transpose(0, 3, 1, 2)
    expected = nchw.astype(np.float64) / (255.0 if array.dtype == np.uint8 else 1.0)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-6, atol=1e-7)


# -- the statistics reader ---------------------------------------------------------------------


@st.composite
def stats_contents(draw):
    d = draw(st.integers(1, 5))
    content = {}
    if draw(st.booleans()):
        content["mu"] = draw(hnp.arrays(np.float64, draw(st.sampled_from([(d,), (d, 1), ()]))))
    if draw(st.booleans()):
        kind = draw(st.sampled_from(["psd", "random"]))
        if kind == "psd":
            a = draw(hnp.arrays(np.float64, (d, d), elements=st.floats(-3, 3)))
            content["sigma"] = a @ a.T
        else:
            content["sigma"] = draw(hnp.arrays(np.float64, draw(st.sampled_from([(d, d), (d,)]))))
    if draw(st.booleans()):
        content["n"] = draw(
            st.sampled_from([np.int64(5), np.int64(1), np.array([3, 3]), np.float64(2.5)])
        )
    if draw(st.booleans()):
        content["meta"] = np.array(
            draw(st.sampled_from(["{}", "[1]", "not json", json.dumps({"extractor": "x"})]))
        )
    if draw(st.booleans()):
        content["features"] = draw(hnp.arrays(np.float32, (5, d)))
    return content


@pytest.mark.filterwarnings("ignore::geneval.errors.GenevalWarning")  # plain files warn
@FAST
@given(stats_contents())
def test_stats_reader_accepts_valid_files_only(content):
    assume(content)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "s.npz"
        np.savez(path, **content)
        try:
            loaded = load_stats(path)
        except InputError as exc:
            assert "\n" not in str(exc) and str(path) in str(exc)
            return
    d = loaded.mu.shape[0]
    assert loaded.mu.shape == (d,) and loaded.sigma.shape == (d, d)
    assert np.isfinite(loaded.mu).all() and np.isfinite(loaded.sigma).all()
    scale = max(np.abs(loaded.sigma).max(), 1e-300)
    assert np.abs(loaded.sigma - loaded.sigma.T).max() <= SIGMA_TOLERANCE * scale
    assert np.linalg.eigvalsh((loaded.sigma + loaded.sigma.T) / 2).min() >= -2 * (
        SIGMA_TOLERANCE * scale
    )
    assert loaded.n is None or loaded.n >= 2
    assert loaded.meta is None or isinstance(loaded.meta, dict)
    if loaded.features is not None:
        assert loaded.features.shape[1] == d and np.isfinite(loaded.features).all()
