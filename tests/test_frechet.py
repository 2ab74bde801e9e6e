"""``frechet_distance`` and the ``fid`` metric against scipy, closed forms and mpmath."""

from __future__ import annotations

from dataclasses import dataclass

import mpmath
import numpy as np
import pytest
import scipy.linalg
import torch

from geneval.errors import InputError
from geneval.feature_stats import FeatureStatistics
from geneval.options import parse_metric_options
from geneval.plugins import get_registry
from geneval_plugins.metrics.sample_quality.fid import (
    FrechetInceptionDistance,
    _psd_sqrt,
    _sum_sqrt_eigvalsh,
    covariance_factor,
    frechet_distance,
    trace_sqrt_product_factors,
    trace_sqrt_product_small,
)

#: Numerical agreement and shipped artefacts: CI runs these again with other CPU kernels.
pytestmark = pytest.mark.numerics


def _sqrtm_fid(mu1, sigma1, mu2, sigma2) -> float:
    """The classic float64 reference: scipy ``sqrtm`` of Σ₁Σ₂ (as pytorch-fid and TTUR)."""
    covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def _moments(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return x.mean(axis=0), np.cov(x, rowvar=False)


@pytest.mark.parametrize("d", [8, 64, 256])
def test_matches_scipy_sqrtm_on_full_rank_covariances(d: int) -> None:
    rng = np.random.default_rng(d)
    a = rng.standard_normal((4 * d, d))
    b = rng.standard_normal((4 * d, d)) @ rng.standard_normal((d, d)) * 0.5 + 0.3
    mu1, s1 = _moments(a)
    mu2, s2 = _moments(b)
    ref = _sqrtm_fid(mu1, s1, mu2, s2)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert abs(ours - ref) <= 1e-6 * abs(ref)
    # Symmetric in its two arguments (the Cholesky factor is of the first one).
    assert abs(frechet_distance(mu2, s2, mu1, s1) - ref) <= 1e-6 * abs(ref)


def _mp_cov(x: np.ndarray) -> mpmath.matrix:
    """Unbiased covariance in 50-digit arithmetic from the exact float64 data."""
    n, d = x.shape
    data = mpmath.matrix(x.tolist())
    mean = [mpmath.fsum(data[i, j] for i in range(n)) / n for j in range(d)]
    centred = mpmath.matrix(n, d)
    for i in range(n):
        for j in range(d):
            centred[i, j] = data[i, j] - mean[j]
    return centred.T * centred / (n - 1), mean


def test_rank_deficient_stays_real_and_matches_high_precision() -> None:
    # n < d: both covariances are singular (ranks 7 and 11 in 40 dimensions).
    rng = np.random.default_rng(7)
    a = rng.standard_normal((8, 40))
    b = rng.standard_normal((12, 40)) * 2 + 0.5
    mu1, s1 = _moments(a)
    mu2, s2 = _moments(b)
    ours = frechet_distance(mu1, s1, mu2, s2)
    assert np.isfinite(ours) and isinstance(ours, float)

    mpmath.mp.dps = 50
    c1, m1 = _mp_cov(a)
    c2, m2 = _mp_cov(b)
    eig = mpmath.eig(c1 * c2, left=False, right=False)
    tr_sqrt = mpmath.fsum(mpmath.sqrt(max(mpmath.re(e), 0)) for e in eig)
    diff2 = mpmath.fsum((x - y) ** 2 for x, y in zip(m1, m2, strict=True))
    trace = mpmath.fsum(c1[i, i] + c2[i, i] for i in range(40))
    ref = float(diff2 + trace - 2 * tr_sqrt)
    assert abs(ours - ref) <= 1e-9 * abs(ref)
    # The small-side routes (n × n problems from the centred features) agree as closely.
    f1, f2 = covariance_factor(a), covariance_factor(b)
    for factors in ({"factor1": f1}, {"factor2": f2}, {"factor1": f1, "factor2": f2}):
        small = frechet_distance(mu1, s1, mu2, s2, **factors)
        assert abs(small - ref) <= 1e-9 * abs(ref), factors


def _eigen_route_fid(mu1, sigma1, mu2, sigma2) -> float:
    """The d × d eigen fallback, forced: ``Aᵀ Σ₂ A`` with ``A`` the eigen square root of Σ₁."""
    s1, s2 = torch.from_numpy(sigma1), torch.from_numpy(sigma2)
    root = _psd_sqrt(s1)
    tr_sqrt = float(_sum_sqrt_eigvalsh(root.T @ s2 @ root, s1.shape[0]))
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_sqrt)


def _features(rng: np.random.Generator, n: int, d: int, scale: float) -> np.ndarray:
    """ReLU-like correlated features, as a feature extractor gives."""
    mix = rng.standard_normal((d, d)) / np.sqrt(d)
    return np.abs(rng.standard_normal((n, d)) @ mix) * scale + 0.1 * scale


@pytest.mark.parametrize(
    ("n1", "n2"), [(50, 50), (50, 600), (600, 50), (40, 70)], ids=lambda n: f"n{n}"
)
def test_small_side_route_equals_eigen_route(n1: int, n2: int) -> None:
    # d = 300: a side with n ≤ d has rank n − 1 < d; the n × n route must give the d × d
    # eigen route's value to 1e-10 whichever side (or both) is small.
    d = 300
    rng = np.random.default_rng(n1 * 1000 + n2)
    a, b = _features(rng, n1, d, 1.0), _features(rng, n2, d, 1.3)
    mu1, s1 = _moments(a)
    mu2, s2 = _moments(b)
    eigen = _eigen_route_fid(mu1, s1, mu2, s2)
    assert eigen > 1.0
    assert abs(_eigen_route_fid(mu2, s2, mu1, s1) - eigen) <= 1e-10 * eigen
    f1, f2 = covariance_factor(a), covariance_factor(b)
    for factors in ({"factor1": f1}, {"factor2": f2}, {"factor1": f1, "factor2": f2}):
        ours = frechet_distance(mu1, s1, mu2, s2, **factors)
        assert abs(ours - eigen) <= 1e-10 * eigen, factors
    swapped = frechet_distance(mu2, s2, mu1, s1, factor1=f2, factor2=f1)
    assert abs(swapped - eigen) <= 1e-10 * eigen
    # scipy's sqrtm of the singular Σ₁Σ₂ is itself only good to ~1e-8 here.
    assert abs(_sqrtm_fid(mu1, s1, mu2, s2) - eigen) <= 1e-6 * eigen


def test_small_side_trace_functions_and_factor_checks() -> None:
    rng = np.random.default_rng(11)
    a, b = _features(rng, 30, 120, 1.0), _features(rng, 45, 120, 2.0)
    f1, f2 = covariance_factor(a), covariance_factor(torch.from_numpy(b))
    s1 = torch.from_numpy(np.cov(a, rowvar=False))
    s2 = torch.from_numpy(np.cov(b, rowvar=False))
    torch.testing.assert_close(f1.T @ f1, s1, rtol=1e-12, atol=1e-12)
    one = float(trace_sqrt_product_small(f1, s2))
    other = float(trace_sqrt_product_small(f2, s1))
    both = float(trace_sqrt_product_factors(f1, f2))
    assert other == pytest.approx(one, rel=1e-12)
    assert both == pytest.approx(one, rel=1e-12)
    mu1, mu2 = s1.diagonal() * 0, s2.diagonal() * 0
    # Uncentred or unscaled features are not a factor of Σ: refused, not silently wrong.
    with pytest.raises(InputError, match=r"factor1 is not a factor.*1/√\(n − 1\)"):
        frechet_distance(mu1, s1, mu2, s2, factor1=f1 * np.sqrt(29 / 30))
    with pytest.raises(InputError, match=r"factor2 must be \(k, 120\)"):
        frechet_distance(mu1, s1, mu2, s2, factor2=f2[:, :60])
    with pytest.raises(InputError, match="n ≥ 2"):
        covariance_factor(a[:1])


def test_closed_form_for_commuting_covariances() -> None:
    # Diagonal covariances commute: FID = ‖Δμ‖² + Σ (√a − √b)².
    rng = np.random.default_rng(1)
    a, b = rng.uniform(0.1, 3.0, 30), rng.uniform(0.1, 3.0, 30)
    mu1, mu2 = rng.standard_normal(30), rng.standard_normal(30)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)
    # Σ₁ singular (zero-variance dimensions) takes the eigen route; same closed form.
    a[:5] = 0.0
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-12)


def test_identical_gaussians_give_zero() -> None:
    rng = np.random.default_rng(2)
    mu, sigma = _moments(rng.standard_normal((300, 50)))
    assert abs(frechet_distance(mu, sigma, mu, sigma)) <= 1e-10 * np.trace(sigma)


def test_torch_and_numpy_inputs_agree_and_shapes_are_checked() -> None:
    rng = np.random.default_rng(3)
    mu1, s1 = _moments(rng.standard_normal((100, 10)))
    mu2, s2 = _moments(rng.standard_normal((100, 10)) + 1)
    as_torch = [torch.from_numpy(v).float() for v in (mu1, s1, mu2, s2)]
    assert frechet_distance(*as_torch) == pytest.approx(
        frechet_distance(*[t.double().numpy() for t in as_torch]), rel=1e-12
    )
    with pytest.raises(InputError, match="shapes do not match"):
        frechet_distance(mu1, s1, mu2[:5], s2[:5, :5])
    with pytest.raises(InputError, match="sigma1 must be 2-D"):
        frechet_distance(mu1, mu1, mu2, s2)
    with pytest.raises(InputError, match="non-finite"):
        frechet_distance(mu1 * np.nan, s1, mu2, s2)


@dataclass
class _Inputs:
    """A minimal MetricInputs carrying feature statistics, as the runner hands them."""

    samples: FeatureStatistics
    reference: FeatureStatistics
    device: torch.device = torch.device("cpu")
    seed: int = 0

    def stats(self, source: str, output: str | None = None) -> FeatureStatistics:
        return self.samples if source == "samples" else self.reference


def test_fid_metric_from_running_sums() -> None:
    rng = np.random.default_rng(4)
    a = rng.standard_normal((500, 32)).astype(np.float32)
    b = (rng.standard_normal((400, 32)) * 1.5 + 0.2).astype(np.float32)
    # Accumulated in shards, as the runner does batch by batch.
    sa = FeatureStatistics(32)
    for part in np.array_split(a, 7):
        sa.update(torch.from_numpy(part))
    sb = FeatureStatistics.from_features(torch.from_numpy(b))
    metric = get_registry().metric("fid")
    assert isinstance(metric, FrechetInceptionDistance)
    assert not metric.higher_is_better
    assert all(need.kind == "stats" for need in metric.needs)
    out = metric.compute(_Inputs(sa, sb))
    ref = _sqrtm_fid(*_moments(a.astype(np.float64)), *_moments(b.astype(np.float64)))
    assert out["value"] == pytest.approx(ref, rel=1e-9)
    assert out["n_samples"] == 500 and out["n_reference"] == 400
    # Options are validated once, by the core, from the metric's declaration.
    with pytest.raises(InputError, match="no option 'splits'"):
        parse_metric_options(["fid.splits=3"], {"fid": metric})


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_frechet_distance_on_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(5)
    mu1, s1 = _moments(rng.standard_normal((600, 256)))
    mu2, s2 = _moments(rng.standard_normal((600, 256)) * 1.2)
    cpu = frechet_distance(mu1, s1, mu2, s2)
    gpu = frechet_distance(mu1, s1, mu2, s2, device="cuda")
    assert gpu == pytest.approx(cpu, rel=1e-9)
