"""``kernel_inception_distance``, ``inception_score`` and their metrics against references."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import torch
from torch_fidelity.metric_isc import isc_features_to_metric
from torch_fidelity.metric_kid import kid_features_to_metric

from geneval.errors import InputError
from geneval.plugins import get_registry
from geneval_plugins.metrics.sample_quality.inception_score import inception_score
from geneval_plugins.metrics.sample_quality.kid import kernel_inception_distance
from tests.stub_inputs import compute

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics


def _features(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.abs(rng.standard_normal((n, d)) + shift)  # non-negative, like pooled ReLU features


def _unbiased_mmd2(x: np.ndarray, y: np.ndarray) -> float:
    """Closed form of the unbiased MMD² with k(a, b) = (aᵀb/d + 1)³, by explicit double sums."""
    m, d = x.shape
    k = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(off - 2 * kxy.mean())


def test_kid_whole_set_equals_closed_form_and_torch_fidelity() -> None:
    f1, f2 = _features(60, 16, 0), _features(60, 16, 1, shift=0.3)
    ours = kernel_inception_distance(f1, f2, subsets=1, subset_size=60)
    assert ours.subset_size == 60 and ours.subsets == 1 and ours.std == 0.0
    assert ours.value == pytest.approx(_unbiased_mmd2(f1, f2), rel=1e-12)
    ref = kid_features_to_metric(
        torch.from_numpy(f1), torch.from_numpy(f2), kid_subsets=1, kid_subset_size=60, verbose=False
    )
    assert ours.value == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-10)


def test_kid_subset_size_is_capped_and_reported() -> None:
    f1, f2 = _features(30, 8, 2), _features(45, 8, 3)
    result = kernel_inception_distance(f1, f2, subsets=5, subset_size=1000)
    assert result.subset_size == 30 and result.subsets == 5
    with pytest.raises(InputError, match="feature sizes differ"):
        kernel_inception_distance(f1, f2[:, :4])
    with pytest.raises(InputError, match="at least 2"):
        kernel_inception_distance(f1[:1], f2)


def test_kid_subsets_are_seeded_and_average_subset_mmds() -> None:
    f1, f2 = _features(80, 12, 4), _features(90, 12, 5, shift=0.2)
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = kernel_inception_distance(f1, f2, subsets=20, subset_size=25, generator=gen(3))
    b = kernel_inception_distance(f1, f2, subsets=20, subset_size=25, generator=gen(3))
    c = kernel_inception_distance(f1, f2, subsets=20, subset_size=25, generator=gen(4))
    assert a == b and a.value != c.value and a.std > 0
    # Replay the draws: the value is the mean of the closed-form MMD² of each subset pair.
    g = gen(3)
    idx1 = torch.rand(20, 80, generator=g).argsort(dim=1)[:, :25].numpy()
    idx2 = torch.rand(20, 90, generator=g).argsort(dim=1)[:, :25].numpy()
    per_subset = [_unbiased_mmd2(f1[i], f2[j]) for i, j in zip(idx1, idx2, strict=True)]
    assert a.value == pytest.approx(np.mean(per_subset), rel=1e-12)
    assert a.std == pytest.approx(np.std(per_subset), rel=1e-9)


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_is_closed_forms() -> None:
    # Identical predictions for every sample: p(y|x) = p(y), KL = 0, IS = 1.
    same = np.tile(np.random.default_rng(0).standard_normal(20), (50, 1))
    assert inception_score(same, splits=1).value == pytest.approx(1.0, abs=1e-12)
    # Confident predictions spread evenly over k classes: IS → k.
    k = 7
    confident = np.full((70, 20), -60.0)
    confident[np.arange(70), np.arange(70) % k] = 60.0
    assert inception_score(confident, splits=1).value == pytest.approx(k, rel=1e-9)
    # General case, by the definition exp(E_x KL(p(y|x) ‖ p(y))) in numpy.
    logits = np.random.default_rng(1).standard_normal((40, 30)) * 3
    p = _softmax(logits)
    expected = np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(axis=0))), axis=1)))
    assert inception_score(logits, splits=1).value == pytest.approx(expected, rel=1e-12)


def test_is_matches_torch_fidelity_splits() -> None:
    logits = torch.from_numpy(np.random.default_rng(2).standard_normal((103, 50)) * 2).float()
    ours = inception_score(logits, splits=10)  # no generator: no shuffle
    ref = isc_features_to_metric(logits, splits=10, shuffle=False)
    assert ours.value == pytest.approx(ref["inception_score_mean"], rel=1e-12)
    assert ours.std == pytest.approx(ref["inception_score_std"], rel=1e-9)
    with pytest.raises(InputError, match="splits"):
        inception_score(logits, splits=104)


def test_is_shuffle_is_seeded() -> None:
    logits = np.random.default_rng(3).standard_normal((60, 10)) * 2
    gen = lambda s: torch.Generator().manual_seed(s)  # noqa: E731
    a = inception_score(logits, splits=6, generator=gen(0))
    assert a == inception_score(logits, splits=6, generator=gen(0))
    assert a.value != inception_score(logits, splits=6, generator=gen(1)).value
    perm = torch.randperm(60, generator=gen(0)).numpy()
    assert a == inception_score(logits[perm], splits=6)


@dataclass
class _Inputs:
    """A minimal MetricInputs: features and logits as float32 CPU tensors, as the runner gives."""

    feats: dict[str, torch.Tensor]
    logit: torch.Tensor
    device: torch.device = torch.device("cpu")
    seed: int = 0

    def features(self, source: str) -> torch.Tensor:
        return self.feats[source]

    def logits(self, source: str) -> torch.Tensor:
        assert source == "samples"
        return self.logit


def test_metrics_use_defaults_and_are_reproducible_under_a_seed() -> None:
    feats = {
        "samples": torch.from_numpy(_features(1200, 8, 6)).float(),
        "reference": torch.from_numpy(_features(1500, 8, 7, shift=0.1)).float(),
    }
    logits = torch.from_numpy(np.random.default_rng(8).standard_normal((1200, 12))).float()
    registry = get_registry()
    kid, score = registry.metric("kid"), registry.metric("is")
    assert {k: o.default for k, o in kid.options.items()} == {
        "subsets": 100,
        "subset_size": 1000,
        "degree": 3,
        "coef0": 1.0,
        "rng": "geneval",
    }
    assert {k: o.default for k, o in score.options.items()} == {
        "splits": 10,
        "rng": "geneval",
        "protocol": "geneval",
    }
    assert all(o.help for o in (*kid.options.values(), *score.options.values()))
    assert not kid.higher_is_better and score.higher_is_better
    first = compute(kid, _Inputs(feats, logits, seed=11))
    assert first["subset_size"] == 1000 and first["subsets"] == 100 and first["std"] > 0
    small = {"subsets": 10, "subset_size": 200}
    again = compute(kid, _Inputs(feats, logits, seed=11), **small)
    assert again == compute(kid, _Inputs(feats, logits, seed=11), **small)
    assert again["value"] != compute(kid, _Inputs(feats, logits, seed=12), **small)["value"]
    direct = kernel_inception_distance(
        feats["samples"], feats["reference"], **small, generator=torch.Generator().manual_seed(11)
    )
    assert again["value"] == direct.value and again["subset_size"] == 200
    is_first = compute(score, _Inputs(feats, logits, seed=11))
    assert is_first == compute(score, _Inputs(feats, logits, seed=11))
    assert is_first["splits"] == 10 and is_first["std"] > 0
    assert is_first["value"] != compute(score, _Inputs(feats, logits, seed=12))["value"]
    with pytest.raises(InputError, match="no option 'split'"):
        compute(score, _Inputs(feats, logits), split=3)
    with pytest.raises(InputError, match="no option 'gamma'"):
        compute(kid, _Inputs(feats, logits), gamma=0.1)
    with pytest.raises(InputError, match="kid.degree=0: expected >= 1"):
        compute(kid, _Inputs(feats, logits), degree=0)
    with pytest.raises(InputError, match="kid.coef0=nan: expected a finite number"):
        compute(kid, _Inputs(feats, logits), coef0=float("nan"))


def test_is_with_torch_fidelity_rng_equals_its_default_shuffle() -> None:
    logits = torch.from_numpy(np.random.default_rng(12).standard_normal((120, 40)) * 3).float()
    ref = isc_features_to_metric(logits)  # defaults: 10 splits, shuffled with seed 2020
    ours = inception_score(logits, splits=10, generator=np.random.RandomState(2020))
    assert ours.value == pytest.approx(ref["inception_score_mean"], rel=1e-12, abs=1e-9)
    assert ours.std == pytest.approx(ref["inception_score_std"], rel=1e-9, abs=1e-9)
    # The default geneval shuffle draws other splits, hence another value.
    assert inception_score(logits, generator=torch.Generator().manual_seed(0)).value != ours.value
    metric = get_registry().metric("is")
    result = compute(metric, _Inputs({}, logits, seed=5), rng="torch-fidelity")
    assert result["value"] == ours.value and result["std"] == ours.std
    with pytest.raises(InputError, match="is.rng=numpy: expected one of geneval, torch-fidelity"):
        compute(metric, _Inputs({}, logits), rng="numpy")


def test_kid_with_torch_fidelity_rng_equals_its_default_subsets() -> None:
    # 100 subsets of 50 drawn from 120 features, as torch-fidelity draws them by default.
    f1, f2 = _features(120, 32, 13), _features(120, 32, 14, shift=0.2)
    ref = kid_features_to_metric(
        torch.from_numpy(f1), torch.from_numpy(f2), kid_subset_size=50, verbose=False
    )
    gen = np.random.RandomState(2020)
    ours = kernel_inception_distance(f1, f2, subsets=100, subset_size=50, generator=gen)
    assert ours.value == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-9, abs=1e-12)
    assert ours.std == pytest.approx(ref["kernel_inception_distance_std"], rel=1e-9, abs=1e-12)
    feats = {"samples": torch.from_numpy(f1), "reference": torch.from_numpy(f2)}
    kid = get_registry().metric("kid")
    result = compute(
        kid, _Inputs(feats, torch.zeros(1), seed=3), subset_size=50, rng="torch-fidelity"
    )
    assert result["value"] == ours.value and result["subset_size"] == 50
    geneval_draws = compute(kid, _Inputs(feats, torch.zeros(1), seed=3), subset_size=50)
    assert geneval_draws["value"] != ours.value


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_kid_on_cuda_matches_cpu() -> None:
    f1 = torch.from_numpy(_features(300, 64, 9)).float()
    f2 = torch.from_numpy(_features(300, 64, 10, shift=0.1)).float()
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    cpu = kernel_inception_distance(f1, f2, subsets=10, subset_size=100, generator=gen())
    gpu = kernel_inception_distance(
        f1, f2, subsets=10, subset_size=100, generator=gen(), device="cuda"
    )
    assert gpu.value == pytest.approx(cpu.value, rel=1e-9)


@pytest.mark.numerics
def test_kid_of_float32_features_is_float64_exact_to_float32_products() -> None:
    """Float32 features: float32 inner products (as torch-fidelity), float64 kernel and sums.

    Against the float64 closed form on the same (float32) values, the error is that of the
    products alone; torch-fidelity, whose sums stay in float32 too, agrees to its own round-off.
    """
    f1 = _features(400, 256, 21).astype(np.float32)
    f2 = _features(400, 256, 22, shift=0.1).astype(np.float32)
    exact = _unbiased_mmd2(f1.astype(np.float64), f2.astype(np.float64))
    ours = kernel_inception_distance(f1, f2, subsets=1, subset_size=400)
    assert ours.value == pytest.approx(exact, rel=1e-5)
    ref = kid_features_to_metric(
        torch.from_numpy(f1),
        torch.from_numpy(f2),
        kid_subsets=1,
        kid_subset_size=400,
        verbose=False,
    )
    assert abs(ours.value - exact) <= abs(ref["kernel_inception_distance_mean"] - exact) + 1e-12
    # torch-fidelity sums ~10⁵ float32 kernel values in float32: ~1e-3 of KID here
    assert ours.value == pytest.approx(ref["kernel_inception_distance_mean"], rel=1e-2)
    # float64 features keep float64 products: the closed form to round-off
    as64 = kernel_inception_distance(
        f1.astype(np.float64), f2.astype(np.float64), subsets=1, subset_size=400
    )
    assert as64.value == pytest.approx(exact, rel=1e-12)


@pytest.mark.parametrize(("coef0", "degree"), [(1.0, 3), (0.5, 2)])
def test_kid_kernels_equal_the_closed_form(coef0: float, degree: int) -> None:
    m, d = 257, 24
    f1, f2 = _features(m, d, 31), _features(m, d, 32, shift=0.2)
    ours = kernel_inception_distance(f1, f2, subsets=1, subset_size=m, coef0=coef0, degree=degree)
    k = lambda a, b: (a @ b.T / d + coef0) ** degree  # noqa: E731
    kxx, kyy = k(f1, f1), k(f2, f2)
    off = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    assert ours.value == pytest.approx(off - 2 * k(f1, f2).mean(), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_kid_blocked_kernel_route_equals_the_subsets_route_and_closed_form(dtype) -> None:
    """The full kernel matrices in row blocks, reduced against the subsets' indicators, give
    each subset pair's MMD²: equal to the per-subset closed form and to the batched route."""
    f1 = _features(230, 20, 41).astype(dtype)
    f2 = _features(170, 20, 42, shift=0.15).astype(dtype)
    draws = lambda: np.random.RandomState(7)  # noqa: E731
    blocks = kernel_inception_distance(
        f1, f2, subsets=40, subset_size=60, generator=draws(), route="blocks"
    )
    subsets = kernel_inception_distance(
        f1, f2, subsets=40, subset_size=60, generator=draws(), route="subsets"
    )
    g = draws()
    pairs = [
        (g.choice(230, 60, replace=False), g.choice(170, 60, replace=False)) for _ in range(40)
    ]
    exact = [_unbiased_mmd2(f1[i].astype(np.float64), f2[j].astype(np.float64)) for i, j in pairs]
    tol = 1e-12 if dtype is np.float64 else 1e-5  # float32: the products' round-off
    assert blocks.value == pytest.approx(np.mean(exact), rel=tol)
    assert blocks.std == pytest.approx(np.std(exact), rel=tol)
    assert blocks.value == pytest.approx(subsets.value, rel=1e-12 if dtype is np.float64 else 1e-6)
    with pytest.raises(InputError, match="route"):
        kernel_inception_distance(f1, f2, route="dense")


def test_kid_route_prefers_blocks_when_subsets_overlap() -> None:
    from geneval_plugins.metrics.sample_quality.kid import kid_route

    # torch-fidelity's default: 100 subsets of 1000 from 5000 2048-d features each
    assert kid_route(5000, 5000, 2048, 100, 1000) == "blocks"
    # one subset of a small part of large sets: the subsets are cheaper
    assert kid_route(50_000, 50_000, 2048, 1, 1000) == "subsets"
