"""``protocol=adm`` of ``is``, ``precision`` and ``recall`` against the transcribed ADM evaluator.

The reference is ``tests/adm_evaluator_reference.py``: guided-diffusion's
``evaluations/evaluator.py`` maths with its TensorFlow ops written in numpy (float16 distances
with the float32 fallback per block). Nothing in it is random; the test data are seeded.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.sample_quality import manifold
from geneval_plugins.metrics.sample_quality.inception_score import inception_score
from geneval_plugins.metrics.sample_quality.manifold import (
    adm_manifold_radii,
    adm_precision_recall,
    adm_squared_distances,
    manifold_metrics,
)
from geneval_plugins.metrics.sample_quality.protocols import ADM_EXTRACTOR, ADM_SPLIT_SIZE
from tests import adm_evaluator_reference as adm
from tests.stub_inputs import StubInputs, compute

#: Decisions (points counted in or out) by which geneval's float16 emulation may differ from the
#: numpy transcription on the 3000 × 2048 sets below: the two accumulate the float32 dot
#: products in different orders, which moves ~1e-4 of the float16 distances by one unit in the
#: last place (0 decisions differed when measured; 2 of 3000 is allowed for other BLAS kernels).
ADM_DECISIONS = 2


def _pool_like(n: int, centres: np.ndarray, seed: int) -> np.ndarray:
    """Non-negative, sparse-ish float32 features of Inception pool3's scale (‖x‖² ≈ 900, so
    float16 squared distances have a unit in the last place of 0.25–0.5 and tie often)."""
    rng = np.random.default_rng(seed)
    c = centres[rng.integers(len(centres), size=n)]
    noise = rng.gamma(0.7, 0.5, size=(n, centres.shape[1]))
    return np.maximum(c + noise - 0.35, 0.0).astype(np.float32)


@pytest.fixture(scope="module")
def pool_sets() -> tuple[np.ndarray, np.ndarray]:
    centres = np.random.default_rng(10).gamma(0.5, 0.6, size=(50, 2048))
    return _pool_like(3000, centres, 11), _pool_like(3000, centres, 12)


@pytest.fixture(scope="module")
def transcribed(pool_sets: tuple[np.ndarray, np.ndarray]) -> dict[str, object]:
    reference, samples = pool_sets
    estimator = adm.ManifoldEstimator()
    radii_ref = estimator.manifold_radii(reference)
    radii_smp = estimator.manifold_radii(samples)
    precision, recall = estimator.evaluate_pr(reference, radii_ref, samples, radii_smp)
    return {
        "radii_ref": radii_ref[:, 0],
        "radii_smp": radii_smp[:, 0],
        "precision": float(precision[0]),
        "recall": float(recall[0]),
    }


# -- Inception Score ---------------------------------------------------------------------------


def _logits(n: int, seed: int) -> np.ndarray:
    """Logits of the scale of Inception's 1008 unbiased logits, with a class structure."""
    rng = np.random.default_rng(seed)
    classes = rng.integers(1000, size=n)
    logits = rng.standard_normal((n, 1008)) * 1.5
    logits[np.arange(n), classes] += rng.uniform(2.0, 12.0, size=n)
    return logits


def test_is_adm_equals_the_transcription() -> None:
    logits = _logits(12_345, 0)  # three parts: 5000, 5000 and 2345
    ours = inception_score(torch.from_numpy(logits), split_size=ADM_SPLIT_SIZE)
    assert ours.splits == 3
    expected = adm.compute_inception_score(logits, dtype=np.float64)
    assert ours.value == pytest.approx(expected, rel=1e-9)
    # The evaluator's own arithmetic is float32 (TF softmax, numpy float32 logs and means):
    # 1e-6 relative from the float64 value here (measured at most 1.3e-7).
    float32 = adm.compute_inception_score(logits.astype(np.float32))
    assert ours.value == pytest.approx(float32, rel=1e-6)
    # The split scores by hand: consecutive parts in the given order, unweighted mean.
    scores = []
    for lo, hi in ((0, 5000), (5000, 10_000), (10_000, 12_345)):
        p = adm.softmax(logits[lo:hi], np.float64)
        scores.append(np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0))), axis=1))))
    assert ours.value == pytest.approx(np.mean(scores), rel=1e-12)
    assert ours.std == pytest.approx(np.std(scores), rel=1e-9)


def test_is_adm_small_sets_and_bad_split_size() -> None:
    logits = _logits(40, 1)
    one = inception_score(logits, split_size=ADM_SPLIT_SIZE)  # fewer than 5000: one part
    assert one.splits == 1 and one.std == 0.0
    assert one.value == pytest.approx(inception_score(logits, splits=1).value, rel=1e-15)
    assert one.value == pytest.approx(
        adm.compute_inception_score(logits, dtype=np.float64), rel=1e-12
    )
    # A last part of one sample scores exactly 1 and counts as much as the others (ADM's mean).
    parts = inception_score(logits[:9], split_size=4)
    assert parts.splits == 3
    assert parts.value == pytest.approx(
        adm.compute_inception_score(logits[:9], split_size=4, dtype=np.float64), rel=1e-12
    )
    with pytest.raises(InputError, match="split_size must be at least 1"):
        inception_score(logits, split_size=0)


def test_is_plugin_protocol_adm_takes_the_samples_in_order() -> None:
    metric = get_registry().metric("is")
    logits = torch.from_numpy(_logits(6001, 2)).float()
    inputs = StubInputs({("logits", "samples"): logits}, seed=0)
    result = compute(metric, inputs, protocol="adm")
    expected = adm.compute_inception_score(logits.double().numpy(), dtype=np.float64)
    assert result["value"] == pytest.approx(expected, rel=1e-9)
    assert (result["splits"], result["split_size"], result["protocol"]) == (2, 5000, "adm")
    # No shuffle: the seed does not matter; the default protocol (seeded shuffle) is unchanged.
    other_seed = StubInputs({("logits", "samples"): logits}, seed=5)
    assert compute(metric, other_seed, protocol="adm")["value"] == result["value"]
    default = compute(metric, inputs)
    gen = torch.Generator().manual_seed(0)
    assert default["value"] == inception_score(logits, splits=10, generator=gen).value
    assert default["protocol"] == "geneval" and "split_size" not in default
    assert [n.extractor for n in metric.needs_for({"protocol": "geneval"})] == [None]
    (need,) = metric.needs_for({"protocol": "adm"})
    assert (need.kind, need.extractor, need.extractor_required) == (
        "logits",
        ADM_EXTRACTOR,
        False,
    )


# -- Precision and recall ----------------------------------------------------------------------


def _warp_sum(lanes: list[np.float16]) -> np.float16:
    """CUB's shuffle-down warp reduction, step by step: lane l adds lane l + offset."""
    for offset in (1, 2, 4, 8, 16):
        lanes = [
            np.float16(lanes[lane] + lanes[lane + offset]) if lane + offset < 32 else lanes[lane]
            for lane in range(32)
        ]
    return lanes[0]


def _tf_gpu_row_sum(row: np.ndarray) -> np.float16:
    """One row of TensorFlow's GPU float16 ``reduce_sum``, thread by thread in scalars."""
    d = len(row)
    threads = 256 if d >= 1024 else 32
    totals = []
    for t in range(threads):
        acc = np.float16(0.0)
        for i in range(t, d, threads):
            acc = row[i] if i == t else np.float16(acc + row[i])
        totals.append(acc)
    warps = [_warp_sum(totals[w : w + 32]) for w in range(0, threads, 32)]
    out = warps[0]
    for total in warps[1:]:
        out = np.float16(out + total)
    return out


@pytest.mark.parametrize("d", [2048, 2023, 100])
def test_float16_norms_add_in_tensorflow_s_gpu_order(d: int) -> None:
    rng = np.random.default_rng(d)
    x = np.maximum(rng.gamma(0.7, 0.6, size=(6, d)) - 0.1, 0).astype(np.float16)
    squares = np.square(x)
    expected = np.array([_tf_gpu_row_sum(row) for row in squares])
    ours = manifold.tf_gpu_row_sums_float16(torch.from_numpy(squares)).numpy()
    assert np.array_equal(ours, expected)
    assert np.array_equal(adm._reduce_sum_squares(x), expected)
    # float16 accumulation is not a float32 sum rounded once
    once = squares.astype(np.float32).sum(axis=1).astype(np.float16)
    assert not np.array_equal(once, expected)


def test_float16_distances_are_the_transcription_s(pool_sets) -> None:
    reference, samples = pool_sets
    expected = adm.DistanceBlock().pairwise_distances(reference[:600], samples)
    ref_set = manifold._adm_set(torch.from_numpy(reference[:600]))
    ours = adm_squared_distances(ref_set, manifold._adm_set(torch.from_numpy(samples)), True)
    assert ours.dtype == torch.float16
    ours = ours.float().numpy()
    differ = ours != expected
    # Only the float32 accumulation order of the dot products differs: where it does, 2uᵀv
    # rounds to a neighbouring float16, which moves the result by that unit in the last place
    # and at most one of its own.
    assert differ.mean() < 1e-3
    rows, cols = np.nonzero(differ)
    u16, v16 = reference[:600].astype(np.float16), samples.astype(np.float16)
    dots = (u16[rows].astype(np.float32) * v16[cols].astype(np.float32)).sum(axis=1)
    two_m = 2 * dots.astype(np.float16)
    bound = np.spacing(two_m) + np.spacing(expected[differ].astype(np.float16))
    assert np.all(np.abs(ours[differ] - expected[differ]) <= bound.astype(np.float32))


def test_radii_and_precision_recall_equal_the_transcription(pool_sets, transcribed) -> None:
    reference, samples = pool_sets
    radii_ref = adm_manifold_radii(manifold._adm_set(torch.from_numpy(reference)), 3).numpy()
    # The radius of almost every point is the transcription's, bit for bit.
    assert np.mean(radii_ref != transcribed["radii_ref"]) < 2e-3
    ours = adm_precision_recall(samples, reference)
    n = len(samples)
    assert abs(ours["precision"] - transcribed["precision"]) * n <= ADM_DECISIONS
    assert abs(ours["recall"] - transcribed["recall"]) * n <= ADM_DECISIONS
    assert 0.02 < transcribed["precision"] < 0.98 and 0.02 < transcribed["recall"] < 0.98
    # Not geneval's exact-arithmetic decisions: the protocols are different numbers.
    exact = manifold_metrics(samples, reference, {"precision": 3, "recall": 3})
    assert exact != ours


def test_float32_fallback_is_chosen_per_block(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(3)
    reference = rng.gamma(1.0, 0.5, size=(500, 64)).astype(np.float32)
    samples = rng.gamma(1.0, 0.52, size=(450, 64)).astype(np.float32)
    reference[[7, 130], 5] = 300.0  # 300² overflows float16: their blocks go to float32
    samples[260, 3] = 70_000.0  # beyond float16's range: the cast itself is inf
    estimator = adm.ManifoldEstimator(row_batch_size=200, col_batch_size=200)
    radii_ref = estimator.manifold_radii(reference)
    radii_smp = estimator.manifold_radii(samples)
    precision, recall = estimator.evaluate_pr(reference, radii_ref, samples, radii_smp)
    # geneval with the same block size, and chunks smaller than a block, so that a non-finite
    # chunk comes after finite ones and their results must be discarded.
    monkeypatch.setattr(manifold, "ADM_BLOCK", 200)
    monkeypatch.setattr(manifold, "_ADM_CHUNK_ELEMENTS", 50 * 200)
    ref_set = manifold._adm_set(torch.from_numpy(reference))
    smp_set = manifold._adm_set(torch.from_numpy(samples))
    ours_ref = adm_manifold_radii(ref_set, 3).numpy()
    ours_smp = adm_manifold_radii(smp_set, 3).numpy()
    # Float32 blocks agree to float32 round-off (their sums run in other orders) ...
    np.testing.assert_allclose(ours_ref, radii_ref[:, 0], rtol=1e-5)
    np.testing.assert_allclose(ours_smp, radii_smp[:, 0], rtol=1e-5)

    def float16_valued(a: np.ndarray) -> np.ndarray:
        with np.errstate(over="ignore"):
            return a == a.astype(np.float16).astype(np.float32)

    # ... and the choice is made per block as ADM makes it: the rows of the first block meet
    # the overflowing rows in every block and are float32; the others are float16 where their
    # neighbour lies outside the first column block.
    for ours_radii, theirs in ((ours_ref, radii_ref[:, 0]), (ours_smp, radii_smp[:, 0])):
        # (a float32 value may happen to be a float16 one: allow 1 %)
        assert np.mean(float16_valued(ours_radii) != float16_valued(theirs)) <= 0.01
    assert float16_valued(radii_ref[:200, 0]).mean() < 0.1
    assert float16_valued(radii_ref[200:, 0]).mean() > 0.5
    ours = adm_precision_recall(samples, reference)
    assert ours["precision"] == pytest.approx(float(precision[0]), abs=1.5 / len(samples))
    assert ours["recall"] == pytest.approx(float(recall[0]), abs=1.5 / len(reference))


def test_adm_bad_input_is_one_line() -> None:
    x = np.ones((5, 3), dtype=np.float32)
    cases = [
        (lambda: adm_precision_recall(x, x, {"precision": 5}), "precision: k=5 must be"),
        (lambda: adm_precision_recall(x, x, {"density": 3}), "unknown metrics density"),
        (lambda: adm_precision_recall(x, x[:, :2]), "different widths"),
    ]
    for call, message in cases:
        with pytest.raises(InputError, match=message) as err:
            call()
        assert "\n" not in str(err.value)


def _inputs(samples: np.ndarray, reference: np.ndarray, **run_options) -> StubInputs:
    return StubInputs(
        {
            ("features", "samples"): torch.from_numpy(samples),
            ("features", "reference"): torch.from_numpy(reference),
        },
        run_options=run_options,
    )


def test_plugins_share_one_adm_computation(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(4)
    reference = rng.gamma(0.7, 0.5, size=(400, 256)).astype(np.float32)
    samples = rng.gamma(0.7, 0.52, size=(300, 256)).astype(np.float32)
    calls = []
    real = manifold.adm_precision_recall

    def counting(*args, **kwargs):
        calls.append(dict(args[2]))
        return real(*args, **kwargs)

    monkeypatch.setattr(manifold, "adm_precision_recall", counting)
    adm_options = {"k": 3, "boundary": "closed", "protocol": "adm"}
    inputs = _inputs(
        samples, reference, precision=adm_options, recall=adm_options, density={"k": 5}
    )
    registry = get_registry()
    p = compute(registry.metric("precision"), inputs, protocol="adm")
    r = compute(registry.metric("recall"), inputs, protocol="adm")
    assert calls == [{"precision": 3, "recall": 3}]  # one computation for both
    expected = adm.compute_prec_recall(reference, samples)
    assert abs(p["value"] - expected[0]) * len(samples) <= ADM_DECISIONS
    assert abs(r["value"] - expected[1]) * len(reference) <= ADM_DECISIONS
    assert p == {
        "value": p["value"],
        "k": 3,
        "n": 300,
        "n_reference": 400,
        "boundary": "closed",
        "protocol": "adm",
    }
    # Density (no protocol option) is computed apart, with geneval's conventions only.
    density = compute(registry.metric("density"), inputs)
    assert density["value"] == manifold_metrics(samples, reference, {"density": 5})["density"]
    assert len(calls) == 1


def test_plugin_protocol_option_and_needs() -> None:
    registry = get_registry()
    x = np.random.default_rng(5).gamma(1.0, 1.0, size=(20, 4)).astype(np.float32)
    for name in ("precision", "recall"):
        metric = registry.metric(name)
        assert metric.options["protocol"].default == "geneval"
        assert metric.options["protocol"].choices == ("geneval", "adm")
        with pytest.raises(InputError, match=f"{name}.protocol=tf: expected one of geneval, adm"):
            compute(metric, _inputs(x, x), protocol="tf")
        with pytest.raises(InputError, match=f"^{name}: protocol=adm counts a point"):
            compute(metric, _inputs(x, x), protocol="adm", boundary="open")
        needs = metric.needs_for({"protocol": "adm"})
        assert [(n.kind, n.source, n.extractor, n.extractor_required) for n in needs] == [
            ("features", "samples", ADM_EXTRACTOR, False),
            ("features", "reference", ADM_EXTRACTOR, False),
        ]
        assert metric.needs_for({"protocol": "geneval"}) == tuple(metric.needs)
        # The default protocol is geneval's exact decisions, as before.
        assert compute(metric, _inputs(x, x))["value"] == manifold_metrics(x, x, {name: 3})[name]
    for name in ("density", "coverage"):
        assert "protocol" not in registry.metric(name).options
    with pytest.raises(InputError, match="is.protocol=ADM: expected one of geneval, adm"):
        compute(registry.metric("is"), StubInputs(), protocol="ADM")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_emulation_matches_cpu(pool_sets, transcribed) -> None:
    reference, samples = pool_sets
    cuda = adm_precision_recall(samples, reference, device="cuda")
    n = len(samples)
    assert abs(cuda["precision"] - transcribed["precision"]) * n <= ADM_DECISIONS
    assert abs(cuda["recall"] - transcribed["recall"]) * n <= ADM_DECISIONS


def test_evaluate_reads_adm_activations_from_arrays(tmp_path) -> None:
    """Under protocol=adm a features or logits array serves as given (no extractor is
    loaded), and the report records the protocol with each number."""
    import geneval

    rng = np.random.default_rng(6)
    reference = rng.gamma(0.7, 0.5, size=(400, 32)).astype(np.float32)
    samples = rng.gamma(0.7, 0.52, size=(300, 32)).astype(np.float32)
    logits = _logits(300, 7).astype(np.float32)
    np.savez(tmp_path / "samples.npz", features=samples, logits=logits)
    np.savez(tmp_path / "reference.npz", features=reference)
    adm_options = {"protocol": "adm"}
    report = geneval.evaluate(
        tmp_path / "samples.npz",
        tmp_path / "reference.npz",
        ["is", "precision", "recall"],
        device="cpu",
        cache=False,
        options={"is": adm_options, "precision": adm_options, "recall": adm_options},
    )
    metrics = report["metrics"]
    assert {metrics[name]["protocol"] for name in metrics} == {"adm"}
    expected = adm.compute_prec_recall(reference, samples)
    assert abs(metrics["precision"]["value"] - expected[0]) * 300 <= ADM_DECISIONS
    assert abs(metrics["recall"]["value"] - expected[1]) * 400 <= ADM_DECISIONS
    assert metrics["is"]["value"] == pytest.approx(
        adm.compute_inception_score(logits.astype(np.float64), dtype=np.float64), rel=1e-9
    )
    assert (metrics["is"]["splits"], metrics["is"]["split_size"]) == (1, ADM_SPLIT_SIZE)
