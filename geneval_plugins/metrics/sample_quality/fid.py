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
    if not torch.isfinite(t).all():
        raise InputError(f"frechet_distance: {name} contains non-finite values")
    return t


def _psd_sqrt(sigma: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a PSD matrix from its eigendecomposition (negatives clipped)."""
    import torch

    w, v = torch.linalg.eigh(sigma)
    return (v * w.clamp_min(0).sqrt()) @ v.T


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
        factor = _psd_sqrt(sigma1)
    m = factor.T @ sigma2 @ factor
    eig = torch.linalg.eigvalsh((m + m.T) / 2)
    floor = eig.shape[0] * torch.finfo(torch.float64).eps * eig.abs().max()
    eig = torch.where(eig > floor, eig, torch.zeros_like(eig))
    return eig.sqrt().sum()


def frechet_distance(
    mu1: ArrayLike,
    sigma1: ArrayLike,
    mu2: ArrayLike,
    sigma2: ArrayLike,
    *,
    device: torch.device | str | None = None,
) -> float:
    """Fréchet distance between the Gaussians N(μ₁, Σ₁) and N(μ₂, Σ₂).

    ``d² = ‖μ₁ − μ₂‖² + tr Σ₁ + tr Σ₂ − 2 tr (Σ₁Σ₂)^½``, computed in float64.

    Parameters
    ----------
    mu1, mu2
        Means, shape (d,).
    sigma1, sigma2
        Covariances, shape (d, d), symmetric positive semi-definite (rank-deficient is fine).
    device
        Where to compute; default the device of ``mu1`` when it is a tensor, else the CPU.

    Returns
    -------
    float
        The squared Fréchet (2-Wasserstein) distance; ≥ 0 up to round-off.

    Notes
    -----
    The trace term comes from the eigenvalues of ``Lᵀ Σ₂ L`` with ``Σ₁ = L Lᵀ`` (see
    :func:`trace_sqrt_product`), which is real by construction and about an order of
    magnitude faster than ``scipy.linalg.sqrtm(Σ₁Σ₂)`` (used by pytorch-fid and TTUR), which
    can return complex values for rank-deficient covariances. To match those tools, compute
    μ and Σ (unbiased, ``numpy.cov``) of the 2048-d pool3 Inception features.

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
    s1, s2 = (s1 + s1.T) / 2, (s2 + s2.T) / 2
    diff = m1 - m2
    value = diff @ diff + torch.trace(s1) + torch.trace(s2) - 2 * trace_sqrt_product(s1, s2)
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
    #: Below the Inception feature dimension the sample covariance is singular and the
    #: estimate strongly biased; an extractor with fewer dimensions declares its own minimum.
    min_samples = 2048

    def compute(self, inputs: MetricInputs) -> Mapping[str, Any]:
        """``{"value": FID, "n_samples", "n_reference"}`` from the runner's running sums."""
        samples = inputs.stats("samples").to(inputs.device)
        reference = inputs.stats("reference").to(inputs.device)
        for source, stats in (("samples", samples), ("reference", reference)):
            if stats.n < 2:
                raise InputError(
                    f"fid needs at least 2 {source} to estimate a covariance, got {stats.n}"
                )
        value = frechet_distance(samples.mean, samples.cov, reference.mean, reference.cov)
        return {
            "value": value,
            "n_samples": samples.n if samples.count_known else None,
            "n_reference": reference.n if reference.count_known else None,
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(FrechetInceptionDistance())
