"""Metric ``fid``: the Fréchet Inception Distance, over :func:`frechet_distance`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray


def _as_float64(x: ArrayLike, device: torch.device, name: str, ndim: int) -> torch.Tensor:
    import torch

    t = torch.as_tensor(x).to(device=device, dtype=torch.float64)
    if t.ndim != ndim:
        raise InputError(f"frechet_distance: {name} must be {ndim}-D, got shape {tuple(t.shape)}")
    # A finite sum means every entry is finite (inf and nan propagate, inf − inf is nan): the
    # entry-wise check, a d × d boolean temporary, runs only when the sum is not finite.
    if not (bool(torch.isfinite(t.sum())) or bool(torch.isfinite(t).all())):
        raise InputError(f"frechet_distance: {name} contains non-finite values")
    return t


def _symmetrised(sigma: torch.Tensor) -> torch.Tensor:
    """``(Σ + Σᵀ) / 2`` with one d × d temporary (halving is exact: the same bits as the
    division)."""
    out = sigma + sigma.T
    out.mul_(0.5)
    return out


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix from its eigendecomposition (negatives clipped)."""
    import torch

    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp_min(0).sqrt()) @ v.T


def _sum_sqrt_eigvalsh(m: torch.Tensor, dim: int) -> torch.Tensor:
    """``Σᵢ √λᵢ(M)`` of a symmetric PSD ``M``; eigenvalues at or below ``dim · ε · λ_max``
    (round-off, including negative ones) count as zero. ``dim`` is the feature dimension d,
    so every route applies the same floor to the same non-zero spectrum."""
    import torch

    eig = torch.linalg.eigvalsh(m)  # reads one triangle: M is symmetric up to round-off
    floor = dim * torch.finfo(torch.float64).eps * eig.abs().max()
    eig = torch.where(eig > floor, eig, torch.zeros_like(eig))
    return eig.sqrt().sum()


def trace_sqrt_product(sigma1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """``tr (Σ₁Σ₂)^½`` (float64) from the eigenvalues of the PSD matrix ``Aᵀ Σ₂ A``, ``Σ₁ = A Aᵀ``.

    Σ₁Σ₂ = A (Aᵀ Σ₂ A) A⁻¹ is similar to the symmetric PSD ``M = Aᵀ Σ₂ A``, so
    ``tr (Σ₁Σ₂)^½ = Σᵢ √λᵢ(M)`` for any square root ``A`` of Σ₁. ``A`` is the Cholesky factor
    when Σ₁ is positive definite, else the symmetric eigen square root (Σ₁ singular, e.g.
    fewer samples than dimensions), for which the identity also holds. Eigenvalues below
    the round-off level ``d · ε · λ_max`` (including negative ones) are set to zero.
    """
    import torch

    factor, info = torch.linalg.cholesky_ex(sigma1)
    if int(info) != 0:
        root = _psd_sqrt(sigma1)
        return _sum_sqrt_eigvalsh(root.T @ sigma2 @ root, sigma1.shape[0])
    return _sum_sqrt_eigvalsh(_triangular_congruence(factor, sigma2), sigma1.shape[0])


def _triangular_congruence(lower: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``Lᵀ Σ L`` for a lower-triangular ``L`` (float64).

    On the CPU, by two triangular products (BLAS ``dtrmm``: ``B = Σ L``, then ``Lᵀ B``), half
    the floating-point work of two general products; elsewhere by torch's products.
    """
    import torch

    if lower.device.type != "cpu" or lower.dtype != torch.float64:
        return lower.T @ sigma @ lower
    import numpy as np
    from scipy.linalg.blas import dtrmm

    factor = np.asfortranarray(lower.numpy())
    right = dtrmm(1.0, factor, np.asfortranarray(sigma.numpy()), side=1, lower=1)
    both = dtrmm(1.0, factor, right, side=0, lower=1, trans_a=1, overwrite_b=1)
    return torch.from_numpy(both)


def trace_sqrt_product_small(factor1: torch.Tensor, sigma2: torch.Tensor) -> torch.Tensor:
    """``tr (Σ₁Σ₂)^½`` (float64) from the k × k problem, for ``Σ₁ = Fᵀ F`` with ``F`` (k × d).

    With ``A = Fᵀ`` (d × k) a square root of Σ₁ in the sense ``Σ₁ = A Aᵀ``, the non-zero
    eigenvalues of ``Σ₁^½ Σ₂ Σ₁^½`` (and of Σ₁Σ₂) are those of the symmetric PSD k × k matrix
    ``M = F Σ₂ Fᵀ``, so ``tr (Σ₁^½ Σ₂ Σ₁^½)^½ = Σᵢ √λᵢ(M)``. For centred features
    ``X`` (n × d), ``F = X / √(n − 1)`` (:func:`covariance_factor`): the cost is
    ``O(n d²)`` and an n × n eigenproblem instead of a d × d one, the gain when ``n ≤ d``
    (Σ₁ then has rank ≤ n − 1, and the Cholesky route gives way to the d × d eigen one).
    Eigenvalues at or below ``d · ε · λ_max`` count as zero, as in :func:`trace_sqrt_product`.
    """
    return _sum_sqrt_eigvalsh(factor1 @ sigma2 @ factor1.T, factor1.shape[1])


def trace_sqrt_product_factors(factor1: torch.Tensor, factor2: torch.Tensor) -> torch.Tensor:
    """``tr (Σ₁Σ₂)^½`` (float64) for ``Σ₁ = F₁ᵀF₁``, ``Σ₂ = F₂ᵀF₂``: the nuclear norm of F₁F₂ᵀ.

    ``F₁ Σ₂ F₁ᵀ = C Cᵀ`` with ``C = F₁ F₂ᵀ`` (k₁ × k₂), so the square roots of its
    eigenvalues are the singular values of ``C``: ``O(k₁ k₂ d)`` and an SVD of the smaller
    side, with neither d × d covariance touched. Singular values with ``s² ≤ d · ε · s_max²``
    count as zero, as in :func:`trace_sqrt_product`.
    """
    import torch

    s = torch.linalg.svdvals(factor1 @ factor2.T)
    lam = s * s
    floor = factor1.shape[1] * torch.finfo(torch.float64).eps * lam.max()
    return torch.where(lam > floor, s, torch.zeros_like(s)).sum()


def covariance_factor(features: ArrayLike) -> torch.Tensor:
    """``F = (X − x̄) / √(n − 1)`` (float64, n × d) of features ``X`` (n × d): ``Fᵀ F`` is the
    unbiased covariance (``numpy.cov(X, rowvar=False)``), as :func:`frechet_distance` takes
    it in ``factor1`` / ``factor2``."""
    import torch

    x = torch.as_tensor(features).to(torch.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise InputError(
            f"covariance_factor: features must be (n, d) with n ≥ 2, got {tuple(x.shape)}"
        )
    return (x - x.mean(dim=0)) / (x.shape[0] - 1) ** 0.5


def _checked_factor(
    factor: ArrayLike, sigma: torch.Tensor, device: torch.device, name: str
) -> torch.Tensor:
    """``factor`` in float64 on ``device``, (k × d) with ``tr Fᵀ F = tr Σ`` to 1e-6."""
    import torch

    f = _as_float64(factor, device, name, 2)
    d = sigma.shape[0]
    if f.shape[0] < 1 or f.shape[1] != d:
        raise InputError(f"frechet_distance: {name} must be (k, {d}), got {tuple(f.shape)}")
    tr_f, tr_s = float((f * f).sum()), float(torch.trace(sigma))
    if abs(tr_f - tr_s) > 1e-6 * max(abs(tr_s), torch.finfo(torch.float64).tiny):
        raise InputError(
            f"frechet_distance: {name} is not a factor of its covariance (tr FᵀF = {tr_f:.6g}, "
            f"tr Σ = {tr_s:.6g}); centred features need scaling by 1/√(n − 1)"
        )
    return f


def frechet_distance(
    mu1: ArrayLike,
    sigma1: ArrayLike,
    mu2: ArrayLike,
    sigma2: ArrayLike,
    *,
    device: torch.device | str | None = None,
    factor1: ArrayLike | None = None,
    factor2: ArrayLike | None = None,
) -> float:
    """Fréchet distance between the Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂).

    ``d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁^½ Σ₂ Σ₁^½)^½``, computed in float64
    (``tr (Σ₁^½ Σ₂ Σ₁^½)^½ = tr (Σ₁Σ₂)^½``, symmetric in 1 ↔ 2).

    Parameters
    ----------
    mu1, mu2
        Means, shape (d,).
    sigma1, sigma2
        Covariances, shape (d, d), symmetric positive semi-definite (rank-deficient is fine).
    device
        Where to compute; default the device of ``mu1`` when it is a tensor, else the CPU.
    factor1, factor2
        Optional factors ``F`` (k × d) with ``Σ = Fᵀ F``, e.g. :func:`covariance_factor` of
        the features (centred, divided by √(n − 1)). A factor with ``k ≤ d`` (a covariance of
        rank < d) selects the small-side route; ``tr FᵀF`` must equal ``tr Σ`` to 1e-6.

    Returns
    -------
    float
        The squared Fréchet (2-Wasserstein) distance; ≥ 0 up to round-off.

    Notes
    -----
    Routes for the trace term, all through eigenvalues of a symmetric PSD matrix (real by
    construction):

    * both factors small: singular values of ``F₁F₂ᵀ`` (:func:`trace_sqrt_product_factors`);
    * one factor small: the k × k matrix ``F Σ Fᵀ`` with the other side's Σ
      (:func:`trace_sqrt_product_small`);
    * otherwise ``Lᵀ Σ₂ L`` with ``Σ₁ = L Lᵀ`` Cholesky, or the eigen square root of Σ₁ when
      Σ₁ is singular (:func:`trace_sqrt_product`).

    The Cholesky and small-side routes are about an order of magnitude faster than
    ``scipy.linalg.sqrtm(Σ₁Σ₂)`` (used by pytorch-fid and TTUR; it can return complex values
    for rank-deficient covariances), the d × d eigen fallback only a few times
    (``bench/bench_frechet.py``); with fewer samples than dimensions, pass the factors (the
    ``fid`` metric does so whenever its statistics kept their rows, n ≤ d).
    To match those tools, compute μ and Σ (unbiased, ``numpy.cov``) of the 2048-d pool3
    Inception features.

    References
    ----------
    .. [1] M. Heusel, H. Ramsauer, T. Unterthiner, B. Nessler, S. Hochreiter, "GANs Trained
       by a Two Time-Scale Update Rule Converge to a Local Nash Equilibrium", NeurIPS 2017.
    .. [2] D. C. Dowson, B. V. Landau, "The Fréchet distance between multivariate normal
       distributions", J. Multivariate Analysis 12 (1982).
    """
    import torch

    if device is None:
        device = mu1.device if isinstance(mu1, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    m1 = _as_float64(mu1, device, "mu1", 1)
    m2 = _as_float64(mu2, device, "mu2", 1)
    s1 = _as_float64(sigma1, device, "sigma1", 2)
    s2 = _as_float64(sigma2, device, "sigma2", 2)
    d = m1.shape[0]
    if m2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise InputError(
            f"frechet_distance: shapes do not match: mu1 {tuple(m1.shape)}, "
            f"sigma1 {tuple(s1.shape)}, "
            f"mu2 {tuple(m2.shape)}, sigma2 {tuple(s2.shape)}"
        )
    s1, s2 = _symmetrised(s1), _symmetrised(s2)
    f1 = None if factor1 is None else _checked_factor(factor1, s1, device, "factor1")
    f2 = None if factor2 is None else _checked_factor(factor2, s2, device, "factor2")
    small1 = f1 is not None and f1.shape[0] <= d
    small2 = f2 is not None and f2.shape[0] <= d
    if small1 and small2:
        tr_sqrt = trace_sqrt_product_factors(f1, f2)
    elif small1:
        tr_sqrt = trace_sqrt_product_small(f1, s2)
    elif small2:
        tr_sqrt = trace_sqrt_product_small(f2, s1)
    else:
        tr_sqrt = trace_sqrt_product(s1, s2)
    diff = m1 - m2
    value = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * tr_sqrt
    return float(value)


class FrechetInceptionDistance:
    """The ``fid`` metric: Fréchet distance between sample and reference feature statistics."""

    name = "fid"
    higher_is_better = False
    interpretation = (
        "Fréchet distance between Gaussian fits of sample and reference features; "
        "0 for identical statistics, biased upwards at small n"
    )
    needs = (
        Need("stats", "samples"),
        Need("stats", "reference"),
    )
    options: Mapping[str, Option] = {}
    fields: Mapping[str, str] = {
        "n_samples": "number of sample feature vectors",
        "n_reference": "number of reference feature vectors (None: the statistics file "
        "records no count)",
    }
    uncertainty = None
    feature_space = "inception-v3-fid"  # the space of published FIDs (Heusel et al. 2017)
    #: Below the Inception feature dimension the sample covariance is singular and the
    #: estimate strongly biased; an extractor with fewer dimensions declares its own minimum.
    min_samples = 2048
    #: The extractor output whose moments are compared (``None``: its feature output).
    output: str | None = None

    def compute(self, inputs: MetricInputs) -> Mapping[str, Any]:
        """``{"value": FID, "n_samples", "n_reference"}`` from the runner's running moments.

        A side whose statistics kept their rows (n ≤ d) passes its centred factor
        (:meth:`~geneval.feature_stats.FeatureStatistics.covariance_factor`) to
        :func:`frechet_distance`, which then takes the small-side route.
        """
        samples = inputs.stats("samples", output=self.output).to(inputs.device)
        reference = inputs.stats("reference", output=self.output).to(inputs.device)
        for source, stats in (("samples", samples), ("reference", reference)):
            if stats.n < 2:
                raise InputError(
                    f"{self.name} needs at least 2 {source} to estimate a covariance, got {stats.n}"
                )
        # Statistics that kept their rows (n ≤ d) give the centred factor: the trace term
        # then comes from the n × n side, equal to the d × d eigen route to round-off.
        value = frechet_distance(
            samples.mean,
            samples.cov,
            reference.mean,
            reference.cov,
            factor1=samples.covariance_factor(),
            factor2=reference.covariance_factor(),
        )
        return {
            "value": value,
            "n_samples": samples.n if samples.count_known else None,
            "n_reference": reference.n if reference.count_known else None,
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(FrechetInceptionDistance())
