"""Metric ``fd_inf``: the Fréchet distance extrapolated to infinitely many samples (FD∞).

FID_N is biased upwards by about ``k/N`` (Chong & Forsyth 2020): ``fd_inf`` computes the
Fréchet distance of random subsets of N samples against the reference statistics, for N on
the grid of :mod:`~geneval_plugins.metrics.sample_quality.extrapolation`, fits a line in 1/N
and reports its intercept. Works in any feature space (Inception for FID∞, DINOv2 for dgm-eval's
FD∞_DINOv2): it reads the sample features and the reference statistics of the run's
extractor.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.sample_quality.extrapolation import (
    GRID_CHOICES,
    GRID_HELP,
    extrapolate,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class FDInfResult:
    """FD∞ (the intercept), its standard error, the slope, and the points of the fit."""

    value: float
    std_err: float
    slope: float
    sizes: list[int]
    fd_n: list[float]
    min_n: int


def _finite_2d(x: ArrayLike, name: str, device: torch.device) -> torch.Tensor:
    import torch

    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise InputError(f"fd_inf: {name} must be (n, d), got shape {tuple(t.shape)}")
    if not t.is_floating_point() or t.dtype in (torch.float16, torch.bfloat16):
        t = t.to(torch.float32)
    t = t.to(device)
    # A finite float64 sum means every entry is finite; the entry-wise test (an n × d boolean
    # temporary) runs only when it is not.
    if not (bool(torch.isfinite(t.sum(dtype=torch.float64))) or bool(torch.isfinite(t).all())):
        raise InputError(f"fd_inf: {name} contains non-finite values")
    return t


class ReferenceSide:
    """The reference Gaussian N(μ, Σ) with a square root ``A`` of Σ (``Σ = A Aᵀ``), computed
    once and reused for every subset.

    ``A`` is the Cholesky factor L when Σ is positive definite, else the symmetric eigen square
    root (Σ singular). For a subset with covariance Σ_N = FᵀF (F its centred rows over
    √(N − 1)), ``tr (Σ_N Σ)^½`` is the sum of the square roots of the eigenvalues of
    ``Aᵀ Σ_N A`` (d × d, when N > d) or of ``F Σ Fᵀ`` (N × N, when N ≤ d): the same non-zero
    spectrum (``docs/contracts.md`` §7; :func:`~geneval_plugins.metrics.sample_quality.fid.
    trace_sqrt_product`).
    """

    def __init__(self, mu: torch.Tensor, sigma: torch.Tensor) -> None:
        import torch

        from geneval_plugins.metrics.sample_quality.fid import _psd_sqrt, _symmetrised

        self.mu = mu
        self.sigma = _symmetrised(sigma)
        self.trace = torch.trace(self.sigma)
        factor, info = torch.linalg.cholesky_ex(self.sigma)
        self.lower = int(info) == 0
        self.root = factor if self.lower else _psd_sqrt(self.sigma)

    def trace_sqrt(self, sigma_n: torch.Tensor) -> torch.Tensor:
        """``tr (Σ_N Σ)^½`` from the d × d matrix ``Aᵀ Σ_N A`` (eigenvalues at or below
        ``d · ε · λ_max`` count as zero, as in ``fid``)."""
        from geneval_plugins.metrics.sample_quality.fid import (
            _sum_sqrt_eigvalsh,
            _triangular_congruence,
        )

        if self.lower:
            m = _triangular_congruence(self.root, sigma_n)
        else:
            m = self.root.T @ sigma_n @ self.root
        return _sum_sqrt_eigvalsh(m, self.sigma.shape[0])


class SampleSide:
    """The sample features with a shift ``c`` (their mean) and, on first use, the shifted
    sums over all n rows, ``Σ(x − c)`` and ``Σ(x − c)(x − c)ᵀ``.

    A subset of more than n/2 rows takes its sums as the totals minus those of its complement
    (fewer than n/2 rows): across the grid about half the rows are read. Every subset's sums
    share the shift c, close to its mean, so its co-moment ``Σ(x − c)(x − c)ᵀ − s sᵀ/N``
    (``s = Σ(x − c)``) keeps its digits.
    """

    def __init__(self, features: torch.Tensor, device: torch.device) -> None:
        from geneval_plugins.metrics.sample_quality.gram import mean_float64

        self.features = features
        self.device = device
        self.shift = mean_float64(features, device=device)
        self._totals: tuple[torch.Tensor, torch.Tensor] | None = None

    def totals(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Σ(x − c), Σ(x − c)(x − c)ᵀ)`` over all rows (computed once)."""
        from geneval_plugins.metrics.sample_quality.gram import sum_and_gram_float64

        if self._totals is None:
            self._totals = sum_and_gram_float64(
                self.features, device=self.device, centre=self.shift
            )
        return self._totals

    def shifted_sums(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(Σ(x − c), Σ(x − c)(x − c)ᵀ)`` over ``features[rows]`` (distinct rows)."""
        import torch

        from geneval_plugins.metrics.sample_quality.gram import sum_and_gram_float64

        n = self.features.shape[0]
        if 2 * rows.shape[0] <= n:
            return sum_and_gram_float64(self.features, rows, device=self.device, centre=self.shift)
        keep = torch.ones(n, dtype=torch.bool, device=rows.device)
        keep[rows] = False
        others = keep.nonzero().squeeze(1)
        total_sum, total_gram = self.totals()
        part_sum, part_gram = sum_and_gram_float64(
            self.features, others, device=self.device, centre=self.shift
        )
        return total_sum - part_sum, total_gram - part_gram


def subset_fd(sample: SampleSide, rows: torch.Tensor, reference: ReferenceSide) -> float:
    """Fréchet distance between the Gaussian fit of ``features[rows]`` (mean, unbiased
    covariance, as ``numpy.cov``) and the reference:
    ``‖μ_N − μ‖² + tr Σ_N + tr Σ − 2 tr (Σ_N Σ)^½``, float64.

    N > d: Σ_N from the chunked shifted sums of :class:`SampleSide`, then the d × d route of
    :class:`ReferenceSide`; N ≤ d: the centred factor F (N × d) and the N × N matrix
    ``F Σ Fᵀ`` (:func:`~geneval_plugins.metrics.sample_quality.fid.trace_sqrt_product_small`).
    """
    import torch

    from geneval_plugins.metrics.sample_quality.fid import trace_sqrt_product_small

    features, device = sample.features, reference.mu.device
    n, d = rows.shape[0], features.shape[1]
    if n <= d:
        x = features[rows].to(device=device, dtype=torch.float64)
        mean = x.mean(dim=0)
        factor = (x - mean) / (n - 1) ** 0.5
        tr_n = (factor * factor).sum()
        tr_sqrt = trace_sqrt_product_small(factor, reference.sigma)
    else:
        shifted_sum, shifted_gram = sample.shifted_sums(rows)
        mean = sample.shift + shifted_sum / n
        sigma_n = (shifted_gram - torch.outer(shifted_sum, shifted_sum) / n) / (n - 1)
        tr_n = torch.trace(sigma_n)
        tr_sqrt = reference.trace_sqrt(sigma_n)
    diff = mean - reference.mu
    return float(diff @ diff + tr_n + reference.trace - 2 * tr_sqrt)


def fd_infinity(
    features: ArrayLike,
    mu: ArrayLike,
    sigma: ArrayLike,
    *,
    points: int = 15,
    grid: str = "dgm-eval",
    min_n: int = 0,
    generator: torch.Generator | None = None,
    subsets: Sequence[torch.Tensor] | None = None,
    device: torch.device | str | None = None,
) -> FDInfResult:
    """FD∞: the Fréchet distance of N-sample subsets against N(μ, Σ), fitted linearly in 1/N
    and extrapolated to 1/N = 0 (Chong & Forsyth 2020).

    For each N of ``np.linspace(min_n, n, points).astype('int32')``, FD_N is the Fréchet
    distance ``‖μ_N − μ‖² + tr Σ_N + tr Σ − 2 tr (Σ_N^½ Σ Σ_N^½)^½`` between the Gaussian fit
    of a random subset of N of the ``features`` (unbiased covariance) and the reference; the
    least-squares line ``FD_N = FD∞ + slope/N`` gives ``value = FD∞``, with the standard
    error of the intercept (:func:`~geneval_plugins.metrics.sample_quality.extrapolation.
    fit_inverse_n`).

    Parameters
    ----------
    features
        (n, d) sample features (any feature space).
    mu, sigma
        Reference mean (d,) and covariance (d, d).
    points
        Number of N on the grid (15 in both references), at least 3.
    grid
        How the smallest N is chosen when ``min_n`` is 0: ``dgm-eval`` (default,
        ``min(5000, max(n // 10, 2))``, ``compute_FD_infinity``) or ``mchong6`` (5000,
        ``calculate_FID_infinity``). The two agree from n = 50 000 on.
    min_n
        An explicit smallest N (≥ 2), overriding ``grid``; 0 uses the grid's rule.
    generator
        CPU ``torch.Generator`` for the subsets (:func:`~geneval_plugins.metrics.
        sample_quality.extrapolation.draw_subsets`); a fixed seed gives a fixed result.
    subsets
        The row indices of each subset, in grid order, instead of drawing them (each of the
        grid's size): to reproduce a given set of draws.
    device
        Where to compute; default the device of ``features`` when it is a tensor.

    Returns
    -------
    FDInfResult
        ``value`` (FD∞), ``std_err`` (of the intercept), ``slope``, ``sizes`` (the N grid),
        ``fd_n`` (FD_N at each N) and ``min_n``.

    Notes
    -----
    With the subsets of the references, the value equals mchong6's
    ``calculate_FID_infinity_path`` (``grid=mchong6``, or ``min_n`` = its ``min_fake``) and
    dgm-eval's ``compute_FD_infinity`` (``grid=dgm-eval``) to float64 round-off: both draw one
    fresh random subset per N (``np.random.shuffle`` then the first N rows;
    ``default_rng().choice(replace=False)``), unseeded, and fit with scikit-learn's
    ``LinearRegression``. Their Fréchet distance uses ``scipy.linalg.sqrtm(Σ_N Σ)``; here the
    reference's square root is computed once (Cholesky, or eigen when Σ is singular) and
    each N costs one covariance and one d × d symmetric eigenvalue problem (N × N when
    N ≤ d), the covariance accumulated in float64 chunks (bounded memory); a subset of more
    than n/2 rows takes its sums as those of all rows minus those of the rows it leaves out
    (:class:`SampleSide`), so the grid reads about half the rows the references read.

    References
    ----------
    .. [1] M. J. Chong, D. Forsyth, "Effectively Unbiased FID and Inception Score and where
       to find them", CVPR 2020.
    .. [2] G. Stein et al., "Exposing flaws of generative model evaluation metrics and their
       unfair treatment of diffusion models", NeurIPS 2023 (dgm-eval).
    """
    import torch

    if device is None:
        device = features.device if isinstance(features, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    x = _finite_2d(features, "features", device)
    m = torch.as_tensor(mu).to(device=device, dtype=torch.float64)
    s = torch.as_tensor(sigma).to(device=device, dtype=torch.float64)
    n, d = x.shape
    if m.shape != (d,) or s.shape != (d, d):
        raise InputError(
            f"fd_inf: the reference statistics ({tuple(m.shape)}, {tuple(s.shape)}) do not "
            f"match {d}-d sample features"
        )
    if not (bool(torch.isfinite(m).all()) and bool(torch.isfinite(s).all())):
        raise InputError("fd_inf: the reference statistics contain non-finite values")
    reference = ReferenceSide(m, s)
    sample = SampleSide(x, device)
    sizes, values, low, fit = extrapolate(
        n,
        lambda rows: subset_fd(sample, rows.to(device), reference),
        grid=grid,
        points=points,
        min_n=min_n,
        metric="fd_inf",
        generator=generator,
        subsets=subsets,
    )
    return FDInfResult(
        value=fit.intercept,
        std_err=fit.std_err,
        slope=fit.slope,
        sizes=sizes,
        fd_n=values,
        min_n=low,
    )


class FrechetDistanceInfinity:
    """The ``fd_inf`` metric: FD extrapolated to infinite N over seeded random subsets."""

    name = "fd_inf"
    higher_is_better = False
    interpretation = (
        "Fréchet distance extrapolated to infinitely many samples (intercept of FD_N against "
        "1/N); free of FID's 1/N bias, comparable across sample counts"
    )
    needs = (
        Need("features", "samples"),
        Need("stats", "reference"),
    )
    options: Mapping[str, Option] = {
        "points": Option(15, "number of N on the grid from min_n to n", low=3),
        "grid": Option(GRID_CHOICES[0], GRID_HELP, choices=GRID_CHOICES),
        "min_n": Option(0, "smallest N of the grid (0: the grid's rule)", low=0),
    }
    fields: Mapping[str, str] = {
        "std_err": "standard error of the fitted intercept",
        "slope": "slope of FD_N against 1/N (the bias coefficient)",
        "sizes": "the N of each subset",
        "fd_n": "FD_N of each subset",
        "n_samples": "number of sample feature vectors",
    }
    uncertainty = "std_err"

    def compute(
        self, inputs: MetricInputs, *, points: int, grid: str, min_n: int
    ) -> Mapping[str, Any]:
        """``{"value": FD∞, "std_err", "slope", "sizes", "fd_n", "n_samples"}``; subsets
        drawn with a CPU torch generator seeded with ``inputs.seed``."""
        import torch

        reference = inputs.stats("reference").to(inputs.device)
        if reference.n < 2:
            raise InputError(
                f"fd_inf needs at least 2 reference features for a covariance, got {reference.n}"
            )
        features = inputs.features("samples")
        result = fd_infinity(
            features,
            reference.mean,
            reference.cov,
            points=points,
            grid=grid,
            min_n=min_n,
            generator=torch.Generator().manual_seed(int(inputs.seed)),
            device=inputs.device,
        )
        return {
            "value": result.value,
            "std_err": result.std_err,
            "slope": result.slope,
            "sizes": result.sizes,
            "fd_n": result.fd_n,
            "n_samples": int(features.shape[0]),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(FrechetDistanceInfinity())
