"""Precision, recall, density and coverage against ``prdc``, torch-fidelity and brute force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from prdc import compute_prdc
from torch_fidelity.metric_prc import (
    calculate_precision_recall_full,
    calculate_precision_recall_part,
)

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.sample_quality import manifold
from geneval_plugins.metrics.sample_quality.manifold import (
    MANIFOLD_METRICS,
    ManifoldMetric,
    coverage,
    density,
    manifold_metrics,
    nearest_neighbour_radii,
    pairwise_distances,
    precision,
    recall,
)
from tests.stub_inputs import StubInputs, compute

#: torch-fidelity returns its fractions as float32 ``mean().item()``: 2⁻²⁴ relative round-off.
FLOAT32_MEAN = 2.0**-24


def _mixture(n: int, centres: np.ndarray, seed: int, scale: float = 1.0) -> np.ndarray:
    """``n`` float32 points drawn around ``centres`` (one of them uniformly at random)."""
    rng = np.random.default_rng(seed)
    which = rng.integers(len(centres), size=n)
    return (centres[which] + scale * rng.standard_normal((n, centres.shape[1]))).astype(np.float32)


@pytest.fixture(scope="module")
def centres() -> np.ndarray:
    return np.random.default_rng(100).standard_normal((6, 24)) * 4.0


@pytest.fixture(scope="module")
def reference(centres: np.ndarray) -> np.ndarray:
    return _mixture(500, centres, seed=1)


@pytest.fixture(scope="module")
def samples(centres: np.ndarray) -> np.ndarray:
    """On-manifold samples (same mixture, slightly wider) plus a quarter in an unseen mode."""
    on = _mixture(300, centres, seed=2, scale=1.05)
    off_mode = np.full((1, centres.shape[1]), 12.0)  # far from every reference mode
    off = _mixture(100, off_mode, seed=3)
    return np.concatenate([on, off])


def _prdc(reference: np.ndarray, samples: np.ndarray, k: int) -> dict[str, float]:
    return {
        name: float(v)
        for name, v in compute_prdc(
            real_features=reference, fake_features=samples, nearest_k=k
        ).items()
    }


@pytest.mark.parametrize("k", [3, 5])
def test_all_four_equal_prdc(samples: np.ndarray, reference: np.ndarray, k: int) -> None:
    ours = manifold_metrics(samples, reference, dict.fromkeys(MANIFOLD_METRICS, k), block=96)
    ref = _prdc(reference, samples, k)
    assert 0.2 < ref["precision"] < 0.95 and 0.1 < ref["density"] < 1.5  # not trivial values
    for name in MANIFOLD_METRICS:
        assert ours[name] == pytest.approx(ref[name], abs=1e-9), name


@pytest.mark.parametrize("k", [3, 5])
def test_precision_recall_equal_torch_fidelity(
    samples: np.ndarray, reference: np.ndarray, k: int
) -> None:
    s, r = torch.from_numpy(samples), torch.from_numpy(reference)
    ours = manifold_metrics(s, r, {"precision": k, "recall": k})
    for calculate in (calculate_precision_recall_full, calculate_precision_recall_part):
        ref_precision, ref_recall = calculate(s, r, k, batch_size=128)
        # Same decisions: equal counts; torch-fidelity's fraction is rounded to float32.
        assert round(ref_precision * len(s)) == round(ours["precision"] * len(s))
        assert round(ref_recall * len(r)) == round(ours["recall"] * len(r))
        assert ours["precision"] == pytest.approx(ref_precision, rel=FLOAT32_MEAN, abs=1e-9)
        assert ours["recall"] == pytest.approx(ref_recall, rel=FLOAT32_MEAN, abs=1e-9)


def test_off_manifold_mode_lowers_precision_and_density_not_recall(
    samples: np.ndarray, reference: np.ndarray
) -> None:
    on_manifold = samples[:300]
    with_mode = manifold_metrics(samples, reference, dict.fromkeys(MANIFOLD_METRICS, 5))
    without = manifold_metrics(on_manifold, reference, dict.fromkeys(MANIFOLD_METRICS, 5))
    # A quarter of the samples sit in a mode the reference lacks: none of them is inside the
    # reference manifold, so precision falls by about that quarter and density with it ...
    assert with_mode["precision"] == pytest.approx(0.75 * without["precision"], abs=1e-12)
    assert with_mode["density"] == pytest.approx(0.75 * without["density"], abs=1e-12)
    assert with_mode["precision"] < without["precision"] - 0.15
    # ... while the reference is covered just as well: recall and coverage hold.
    assert with_mode["recall"] >= without["recall"] - 0.02
    assert with_mode["coverage"] == pytest.approx(without["coverage"], abs=1e-12)


def test_radii_equal_brute_force_and_do_not_depend_on_blocks(reference: np.ndarray) -> None:
    x = reference[:157].astype(np.float64)
    d = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
    np.fill_diagonal(d, np.inf)
    expected = np.sort(d, axis=1)[:, :6]
    whole = nearest_neighbour_radii(reference[:157], 6)
    assert whole.shape == (157, 6) and whole.dtype == torch.float64
    # The candidates' distances are measured again in float64: exact, not float32's ~1e-6.
    np.testing.assert_allclose(whole.numpy(), expected, rtol=1e-13)
    for block in (1, 10, 50, 156):
        np.testing.assert_allclose(
            nearest_neighbour_radii(reference[:157], 6, block=block).numpy(),
            expected,
            rtol=1e-13,
        )


def test_split_diagonal_blocks_give_the_same_radii(centres: np.ndarray) -> None:
    """Blocks of at least ``SPLIT_DIAGONAL_ROWS`` rows multiply their diagonal tile as three
    products (one mirrored); the distances (every entry written; a point's own distance is
    ~1e-3 ‖x‖ in float32, see ``pairwise_distances``) and the radii are the whole matrix's."""
    x = _mixture(421, centres, seed=9)
    exact = np.sqrt(((x[:, None, :].astype(np.float64) - x[None, :, :]) ** 2).sum(-1))
    t = torch.from_numpy(x)
    t_sq = (t * t).sum(1)
    for i0, i1 in ((0, 140), (140, 281), (281, 421)):
        assert i1 - i0 >= manifold.SPLIT_DIAGONAL_ROWS
        out = torch.full((i1 - i0, 421 - i0), float("nan"))
        block = manifold._symmetric_block(t, t_sq, i0, i1, out)
        np.testing.assert_allclose(
            block.clamp_min(0).sqrt().numpy(), exact[i0:i1, i0:], rtol=1e-4, atol=0.05
        )
    np.fill_diagonal(exact, np.inf)
    expected = np.sort(exact, axis=1)[:, :5]
    for block_rows in (141, 212, None):
        np.testing.assert_allclose(
            nearest_neighbour_radii(x, 5, block=block_rows).numpy(), expected, rtol=1e-13
        )


def test_pairwise_distances_are_torch_cdists(samples: np.ndarray, reference: np.ndarray) -> None:
    x, y = torch.from_numpy(samples[:70]), torch.from_numpy(reference[:90])
    ours = pairwise_distances(x, y, (x * x).sum(1), (y * y).sum(1))
    exact = torch.cdist(x.double(), y.double())
    assert ours.dtype == torch.float32 and ours.shape == (70, 90)
    np.testing.assert_allclose(ours.numpy(), exact.numpy(), rtol=1e-5)
    np.testing.assert_allclose(ours.numpy(), torch.cdist(x, y).numpy(), rtol=1e-5)


def test_duplicates_count_as_neighbours_and_ties_follow_each_reference() -> None:
    base = np.random.default_rng(4).standard_normal((20, 5)).astype(np.float32)
    # Samples equal to the reference: every sample sits on a reference point (distance 0).
    same = manifold_metrics(base, base, dict.fromkeys(MANIFOLD_METRICS, 3))
    assert same == dict.fromkeys(MANIFOLD_METRICS, 1.0) | {"density": same["density"]}
    assert same["density"] == pytest.approx(_prdc(base, base, 3)["density"], abs=1e-12)
    # Every point twice: its duplicate is its first neighbour, at distance exactly 0 (the
    # float32 matrix product alone gives ~1e-3 ‖x‖; the exact re-measurement gives 0).
    doubled = np.concatenate([base, base])
    radii = nearest_neighbour_radii(doubled, 2)
    assert torch.all(radii[:, 0] == 0) and torch.all(radii[:, 1] > 0)


def _brute_force(
    samples: np.ndarray, reference: np.ndarray, k: int, closed: bool
) -> dict[str, float]:
    """The four metrics from the definitions, float64 distances, ``≤`` or ``<`` balls."""
    s, r = samples.astype(np.float64), reference.astype(np.float64)

    def dist(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.sqrt(((a[:, None, :] - b[None, :, :]) ** 2).sum(-1))

    def radii(x: np.ndarray) -> np.ndarray:
        d = dist(x, x)
        np.fill_diagonal(d, np.inf)
        return np.sort(d, axis=1)[:, k - 1]

    inside = np.less_equal if closed else np.less
    sr, r_r, r_s = dist(s, r), radii(r), radii(s)
    return {
        "precision": float(inside(sr, r_r[None, :]).any(axis=1).mean()),
        "recall": float(inside(sr, r_s[:, None]).any(axis=0).mean()),
        "density": float(inside(sr, r_r[None, :]).sum() / (k * len(s))),
        "coverage": float(inside(sr, r_r[None, :]).any(axis=0).mean()),
    }


@pytest.mark.numerics
@pytest.mark.parametrize("scale", [3, 40])
def test_tied_integer_features_follow_each_papers_code(scale: int) -> None:
    """Integer features (ties everywhere) and duplicated samples, as a memorising model makes.

    Precision and recall follow Kynkäänniemi et al.'s code (``<=``, as torch-fidelity);
    density and coverage follow prdc (``<``); ``boundary`` gives the other convention. At
    ``scale`` 40 with d = 64, ‖x‖² reaches 10⁵: float32's matrix-product distances no longer
    decide the ties, the exact re-measurement does.
    """
    rng = np.random.default_rng(7)
    reference = rng.integers(0, scale, size=(300, 64)).astype(np.float32)
    reference[150:] = reference[rng.integers(0, 150, size=150)]  # duplicated reference points
    samples = np.concatenate(
        [reference[rng.integers(0, 300, size=120)], rng.integers(0, scale, size=(80, 64))]
    ).astype(np.float32)  # copies of reference points, and fresh draws
    k = 5
    ours = manifold_metrics(samples, reference, dict.fromkeys(MANIFOLD_METRICS, k))
    closed, open_ = (
        _brute_force(samples, reference, k, True),
        _brute_force(samples, reference, k, False),
    )
    assert closed["precision"] != open_["precision"]  # the ties do matter here
    assert {m: ours[m] for m in ("precision", "recall")} == {
        m: closed[m] for m in ("precision", "recall")
    }
    assert {m: ours[m] for m in ("density", "coverage")} == {
        m: open_[m] for m in ("density", "coverage")
    }
    # prdc (float64 distances, strict) is the reference of density and coverage, and of
    # every metric with boundary=open.
    theirs = _prdc(reference, samples, k)
    other = manifold_metrics(
        samples,
        reference,
        dict.fromkeys(MANIFOLD_METRICS, k),
        boundary=dict.fromkeys(MANIFOLD_METRICS, "open"),
    )
    for name in MANIFOLD_METRICS:
        assert other[name] == pytest.approx(theirs[name], abs=1e-12), name
    assert ours["density"] == pytest.approx(theirs["density"], abs=1e-12)
    assert ours["coverage"] == pytest.approx(theirs["coverage"], abs=1e-12)
    closed_all = manifold_metrics(
        samples,
        reference,
        dict.fromkeys(MANIFOLD_METRICS, k),
        boundary=dict.fromkeys(MANIFOLD_METRICS, "closed"),
    )
    assert closed_all == closed
    if scale == 3:  # small integers: torch-fidelity's float32 distances are exact too
        tf = calculate_precision_recall_full(
            torch.from_numpy(samples), torch.from_numpy(reference), k, batch_size=10_000
        )
        assert ours["precision"] == pytest.approx(float(tf[0]), abs=FLOAT32_MEAN)
        assert ours["recall"] == pytest.approx(float(tf[1]), abs=FLOAT32_MEAN)


@pytest.mark.numerics
@pytest.mark.parametrize("scale", [3, 40])
@pytest.mark.parametrize("block", [None, 7])
def test_precision_recall_pass_decides_ties_exactly(
    scale: int, block: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Precision and recall alone take the fused pass (row and column minima of one product
    per block); its undecided rows and columns, here the exact ties, are measured again."""
    rng = np.random.default_rng(11)
    reference = rng.integers(0, scale, size=(240, 48)).astype(np.float32)
    reference[120:] = reference[rng.integers(0, 120, size=120)]
    samples = np.concatenate(
        [reference[rng.integers(0, 240, size=90)], rng.integers(0, scale, size=(70, 48))]
    ).astype(np.float32)
    rechecked = []
    real_inside = manifold._inside

    def counting(d: torch.Tensor, *args: object) -> torch.Tensor:
        rechecked.append(tuple(d.shape))
        return real_inside(d, *args)

    monkeypatch.setattr(manifold, "_inside", counting)
    for k in (1, 4):
        for kind, closed in (("closed", True), ("open", False)):
            expected = _brute_force(samples, reference, k, closed)
            boundary = {"precision": kind, "recall": kind}
            both = manifold_metrics(
                samples, reference, {"precision": k, "recall": k}, boundary=boundary, block=block
            )
            assert both == {m: expected[m] for m in ("precision", "recall")}
            for name in ("precision", "recall"):
                alone = manifold_metrics(
                    samples, reference, {name: k}, boundary={name: kind}, block=block
                )
                assert alone == {name: expected[name]}
        assert expected["precision"] != _brute_force(samples, reference, k, True)["precision"]
    assert rechecked  # the ties went through the exact re-measurement


@pytest.mark.parametrize("block", [None, 5, 64])
def test_precision_recall_pass_equals_the_general_pass(
    samples: np.ndarray, reference: np.ndarray, block: int | None
) -> None:
    """The fused pass (precision and recall alone) against the per-entry pass that density and
    coverage need, with unequal k, and against float64 brute force."""
    ks = {"precision": 2, "recall": 6}
    fused = manifold_metrics(samples, reference, ks, block=block)
    general = manifold_metrics(samples, reference, ks | {"density": 3, "coverage": 3}, block=block)
    assert fused == {name: general[name] for name in ks}
    s, r = samples.astype(np.float64), reference.astype(np.float64)
    d = np.sqrt(((s[:, None, :] - r[None, :, :]) ** 2).sum(-1))

    def kth(x: np.ndarray, k: int) -> np.ndarray:
        e = np.sqrt(((x[:, None, :] - x[None, :, :]) ** 2).sum(-1))
        np.fill_diagonal(e, np.inf)
        return np.sort(e, axis=1)[:, k - 1]

    assert fused["precision"] == float((d <= kth(r, 2)[None, :]).any(axis=1).mean())
    assert fused["recall"] == float((d <= kth(s, 6)[:, None]).any(axis=0).mean())
    assert 0.2 < fused["precision"] < 0.95 and 0.2 < fused["recall"] < 1.0


def test_single_metric_functions_and_their_defaults(
    samples: np.ndarray, reference: np.ndarray
) -> None:
    all3 = manifold_metrics(samples, reference, dict.fromkeys(MANIFOLD_METRICS, 3))
    all5 = manifold_metrics(samples, reference, dict.fromkeys(MANIFOLD_METRICS, 5))
    assert precision(samples, reference) == all3["precision"]
    assert recall(samples, reference) == all3["recall"]
    assert density(samples, reference) == all5["density"]
    assert coverage(samples, reference) == all5["coverage"]


def test_bad_input_is_one_line(samples: np.ndarray, reference: np.ndarray) -> None:
    cases = [
        (lambda: precision(samples, reference[:, :10]), "different widths \\(24 and 10\\)"),
        (lambda: precision(samples, reference[:3]), "k=3 .* below the number of reference"),
        (lambda: recall(samples[:3], reference), "k=3 .* below the number of sample"),
        (lambda: density(samples, reference, k=0), "k=0 must be at least 1"),
        (lambda: coverage(samples[0], reference), "non-empty \\(n, d\\)"),
        (lambda: manifold_metrics(samples, reference, {"fidelity": 3}), "unknown metrics"),
    ]
    nan = samples.copy()
    nan[0, 0] = np.nan
    cases.append((lambda: precision(nan, reference), "non-finite"))
    for call, message in cases:
        with pytest.raises(InputError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


# -- The metric plugins ------------------------------------------------------------------------


def _inputs(samples: np.ndarray, reference: np.ndarray, **run_options: int) -> StubInputs:
    return StubInputs(
        {
            ("features", "samples"): torch.from_numpy(samples),
            ("features", "reference"): torch.from_numpy(reference),
        },
        run_options={name: {"k": k} for name, k in run_options.items()},
    )


def test_plugins_are_registered_with_their_contract() -> None:
    registry = get_registry()
    defaults = {"precision": 3, "recall": 3, "density": 5, "coverage": 5}
    for name, k in defaults.items():
        metric = registry.metric(name)
        assert isinstance(metric, ManifoldMetric) and metric.name == name
        assert metric.higher_is_better and metric.interpretation and metric.uncertainty is None
        boundary = "closed" if name in ("precision", "recall") else "open"
        assert {key: o.default for key, o in metric.options.items()} == {
            "k": k,
            "boundary": boundary,
            **({"protocol": "geneval"} if name in ("precision", "recall") else {}),
        }
        assert metric.options["boundary"].choices == ("closed", "open")
        assert set(metric.fields) == {"n", "n_reference", "boundary"}
        assert [(n.kind, n.source, n.extractor) for n in metric.needs] == [
            ("features", "samples", "vgg16"),
            ("features", "reference", "vgg16"),
        ]
        with pytest.raises(InputError, match=f"{name}.k=0: expected >= 1"):
            compute(metric, _inputs(np.zeros((5, 2)), np.zeros((5, 2))), k=0)


def test_plugins_share_one_pass_per_run(
    samples: np.ndarray, reference: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    real = manifold.manifold_metrics

    def counting(*args, **kwargs):
        calls.append(dict(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(manifold, "manifold_metrics", counting)
    ranks = {"precision": 3, "recall": 4, "density": 5, "coverage": 2}
    inputs = _inputs(samples, reference, **ranks)
    registry = get_registry()
    results = {name: compute(registry.metric(name), inputs, k=k) for name, k in ranks.items()}
    assert calls == [ranks]  # one computation, sized by every metric's k
    expected = _prdc(reference, samples, 3)["precision"]
    assert results["precision"] == {
        "value": expected,
        "k": 3,
        "n": 400,
        "n_reference": 500,
        "boundary": "closed",
        "protocol": "geneval",
    }
    assert results["coverage"]["value"] == pytest.approx(_prdc(reference, samples, 2)["coverage"])
    assert results["density"]["value"] == pytest.approx(_prdc(reference, samples, 5)["density"])
    assert results["recall"]["value"] == pytest.approx(_prdc(reference, samples, 4)["recall"])


def test_plugin_boundary_option_is_shared_by_the_run() -> None:
    rng = np.random.default_rng(11)
    reference = rng.integers(0, 3, size=(120, 16)).astype(np.float32)
    samples = rng.integers(0, 3, size=(90, 16)).astype(np.float32)
    registry = get_registry()
    inputs = StubInputs(
        {
            ("features", "samples"): torch.from_numpy(samples),
            ("features", "reference"): torch.from_numpy(reference),
        },
        run_options={"precision": {"k": 3, "boundary": "open"}, "density": {"k": 3}},
    )
    precision_open = compute(registry.metric("precision"), inputs, k=3, boundary="open")
    density = compute(registry.metric("density"), inputs, k=3)
    expected = _prdc(reference, samples, 3)
    assert precision_open["boundary"] == "open" and density["boundary"] == "open"
    assert precision_open["value"] == pytest.approx(expected["precision"], abs=1e-12)
    assert density["value"] == pytest.approx(expected["density"], abs=1e-12)
    closed = compute(registry.metric("precision"), _inputs(samples, reference), k=3)
    assert closed["value"] == _brute_force(samples, reference, 3, True)["precision"]
    assert closed["value"] > precision_open["value"]


def test_plugin_errors_name_the_metric(samples: np.ndarray, reference: np.ndarray) -> None:
    registry = get_registry()
    with pytest.raises(InputError, match="^recall: k=400 .* sample feature vectors \\(400\\)"):
        compute(registry.metric("recall"), _inputs(samples, reference), k=400)
    with pytest.raises(InputError, match="^density: sample and reference .* widths"):
        compute(registry.metric("density"), _inputs(samples, reference[:, :3]))
    # Another metric's invalid k is left to that metric: this one still computes.
    inputs = _inputs(samples, reference, precision=3, recall=1000)
    assert compute(registry.metric("precision"), inputs)["k"] == 3
    with pytest.raises(InputError, match="^recall: k=1000"):
        compute(registry.metric("recall"), inputs, k=1000)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(samples: np.ndarray, reference: np.ndarray) -> None:
    ks = dict.fromkeys(MANIFOLD_METRICS, 3)
    cpu = manifold_metrics(samples, reference, ks)
    gpu = manifold_metrics(samples, reference, ks, device="cuda", block=64)
    for name in MANIFOLD_METRICS:
        assert gpu[name] == pytest.approx(cpu[name], abs=1.0 / len(samples) + 1e-12)
