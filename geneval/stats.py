"""Feature statistics: float64 running sums, and the ``.npz`` statistics file.

See ``docs/contracts.md`` §6.

The moments of a feature set are accumulated as running sums ``(n, Σx, Σxxᵀ)`` in float64, so
shards computed on different machines merge exactly by adding their sums. The mean is
``Σx / n`` and the covariance the unbiased ``(Σxxᵀ − n μμᵀ) / (n − 1)``, as ``numpy.cov``
(and so pytorch-fid and TTUR) computes it.

A statistics file is an ``.npz`` with ``mu`` (d,) and ``sigma`` (d, d) float64 — readable by
pytorch-fid and TTUR — plus ``n``, ``meta`` (a JSON string: extractor, weights sha256, resize
convention, geneval version) and optionally ``features`` (n, d) float32.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval import __version__
from geneval.errors import InputError, warn
from geneval.io import atomic_path


class FeatureStatistics:
    """Running float64 sums ``(n, Σx, Σxxᵀ)`` of feature vectors of dimension ``dim``."""

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim = dim
        self.n = 0
        #: False when the moments came from a file that records no count.
        self.count_known = True
        self.sum = torch.zeros(dim, dtype=torch.float64, device=device)
        self.sum_outer = torch.zeros(dim, dim, dtype=torch.float64, device=device)

    def update(self, features: torch.Tensor) -> FeatureStatistics:
        """Add a batch of features (n, dim); the sums are taken in float64 on their device."""
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"expected features of shape (n, {self.dim}), got {tuple(features.shape)}"
            )
        x = features.to(device=self.sum.device, dtype=torch.float64)
        self.n += x.shape[0]
        self.sum += x.sum(dim=0)
        self.sum_outer += x.T @ x
        return self

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """Add another shard's sums to these (exact: sums are additive)."""
        if other.dim != self.dim:
            raise ValueError(f"cannot merge statistics of dimension {other.dim} into {self.dim}")
        self.n += other.n
        self.sum += other.sum.to(self.sum.device)
        self.sum_outer += other.sum_outer.to(self.sum.device)
        return self

    @property
    def mean(self) -> torch.Tensor:
        """μ = Σx / n (float64)."""
        if self.n < 1:
            raise ValueError("no features accumulated")
        return self.sum / self.n

    @property
    def cov(self) -> torch.Tensor:
        """Unbiased covariance (Σxxᵀ − n μμᵀ) / (n − 1) (float64), symmetrised."""
        if self.n < 2:
            raise ValueError("at least two feature vectors are needed for a covariance")
        mu = self.mean
        cov = (self.sum_outer - self.n * torch.outer(mu, mu)) / (self.n - 1)
        return (cov + cov.T) / 2

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray) -> FeatureStatistics:
        """Statistics of a whole feature matrix (n, d)."""
        x = torch.as_tensor(features)
        return cls(x.shape[1], device=x.device).update(x)

    @classmethod
    def from_moments(cls, mu: np.ndarray, sigma: np.ndarray, n: int) -> FeatureStatistics:
        """Rebuild the sums from a mean, an unbiased covariance and a count."""
        mu_t = torch.as_tensor(np.asarray(mu, dtype=np.float64))
        sigma_t = torch.as_tensor(np.asarray(sigma, dtype=np.float64))
        stats = cls(mu_t.shape[0])
        stats.n = int(n)
        stats.sum = mu_t * n
        stats.sum_outer = sigma_t * (n - 1) + n * torch.outer(mu_t, mu_t)
        return stats

    def to(self, device: torch.device | str) -> FeatureStatistics:
        out = FeatureStatistics(self.dim, device=device)
        out.n = self.n
        out.count_known = self.count_known
        out.sum = self.sum.to(device)
        out.sum_outer = self.sum_outer.to(device)
        return out


@dataclass
class StatsFile:
    """The contents of a statistics file (validated by :func:`load_stats`)."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None  # None: a plain pytorch-fid/TTUR file, which records no count
    meta: dict[str, Any] | None  # None: a plain pytorch-fid/TTUR file of unknown provenance
    features: np.ndarray | None = None
    path: Path | None = field(default=None)

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def statistics(self) -> FeatureStatistics:
        """The running sums that reproduce ``mu`` and ``sigma`` exactly.

        A file without a count is rebuilt with n = 2 (any n > 1 reproduces the moments) and
        marked ``count_known = False``, so that reports say the count is unknown.
        """
        stats = FeatureStatistics.from_moments(self.mu, self.sigma, self.n or 2)
        stats.count_known = self.n is not None
        return stats


def make_meta(
    *, extractor: str, output: str, weights_sha256: str, convention: str
) -> dict[str, Any]:
    """The provenance recorded in a statistics file."""
    return {
        "extractor": extractor,
        "output": output,
        "weights_sha256": weights_sha256,
        "resize": convention,
        "geneval_version": __version__,
    }


def save_stats(
    path: str | Path,
    stats: FeatureStatistics,
    meta: dict[str, Any],
    *,
    features: torch.Tensor | np.ndarray | None = None,
    force: bool,
) -> Path:
    """Write a statistics file atomically (refused if ``path`` exists, unless ``force``)."""
    path = Path(path)
    if path.suffix != ".npz":
        raise InputError(f"statistics file {path} must end in .npz")
    arrays: dict[str, Any] = {
        "mu": stats.mean.cpu().numpy(),
        "sigma": stats.cov.cpu().numpy(),
        "n": np.int64(stats.n),
        "meta": np.array(json.dumps(meta, sort_keys=True)),
    }
    if features is not None:
        arrays["features"] = np.asarray(torch.as_tensor(features).cpu(), dtype=np.float32)
    with atomic_path(path, force=force, what="statistics file") as tmp:
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    return path


#: Relative tolerance of the symmetry and positive-semi-definiteness checks of ``sigma``:
#: far above float64 round-off of a covariance, far below any real asymmetry or negative
#: variance.
SIGMA_TOLERANCE = 1e-6


def _check_sigma(sigma: np.ndarray, path: Path) -> None:
    """Refuse a covariance that is not symmetric or not positive semi-definite (up to round-off)."""
    scale = float(np.abs(sigma).max()) if sigma.size else 0.0
    asymmetry = float(np.abs(sigma - sigma.T).max()) if sigma.size else 0.0
    if asymmetry > SIGMA_TOLERANCE * max(scale, 1e-300):
        raise InputError(
            f"statistics file {path}: sigma is not symmetric (largest |Σ − Σᵀ| = {asymmetry:.3g})"
        )
    sym = torch.from_numpy(sigma / 2 + sigma.T / 2)  # halves first: no overflow near the max
    # Cholesky of Σ + δI succeeds for every PSD Σ; it is ~20× cheaper than an eigendecomposition,
    # which only runs to report the offending eigenvalue.
    shift = SIGMA_TOLERANCE * max(scale, 1e-300)
    _, info = torch.linalg.cholesky_ex(sym + shift * torch.eye(sym.shape[0], dtype=sym.dtype))
    if int(info) != 0:
        lowest = float(torch.linalg.eigvalsh(sym)[0])
        raise InputError(
            f"statistics file {path}: sigma is not positive semi-definite (smallest "
            f"eigenvalue {lowest:.3g}, largest |entry| {scale:.3g})"
        )


def _scalar_count(value: np.ndarray, path: Path) -> int:
    if value.shape != () or not np.issubdtype(value.dtype, np.number):
        raise InputError(
            f"statistics file {path}: n must be a single number, found shape {value.shape} "
            f"dtype {value.dtype}"
        )
    count = float(value)
    if not np.isfinite(count) or count != int(count) or count < 2:
        raise InputError(f"statistics file {path}: n must be an integer ≥ 2, found {value}")
    return int(count)


def _meta(value: np.ndarray, path: Path) -> dict[str, Any]:
    try:
        meta = json.loads(str(value))
    except (ValueError, TypeError):
        raise InputError(f"statistics file {path}: meta is not a JSON string") from None
    if not isinstance(meta, dict):
        raise InputError(
            f"statistics file {path}: meta must be a JSON object, found {type(meta).__name__}"
        )
    return meta


def load_stats(path: str | Path) -> StatsFile:
    """Read and validate a statistics file.

    ``mu`` (d,) and ``sigma`` (d, d) must be finite, ``sigma`` symmetric and positive
    semi-definite up to round-off (:data:`SIGMA_TOLERANCE`); ``n``, when present, a single
    integer ≥ 2; ``meta``, when present, a JSON object; ``features``, when present, finite
    (n, d). Anything else is an :class:`InputError` naming the file and what was found. A plain
    pytorch-fid/TTUR file (``mu``, ``sigma`` only) is accepted with a warning that its
    provenance is unknown.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"statistics file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if not {"mu", "sigma"} <= keys:
                raise InputError(f"statistics file {path} has no 'mu' and 'sigma' arrays")
            arrays = {key: np.asarray(data[key]) for key in keys}
    except (OSError, ValueError, EOFError) as exc:
        raise InputError(
            f"statistics file {path} is not a readable .npz ({exc})".splitlines()[0]
        ) from None
    numeric = {"mu", "sigma", "features"} & keys
    for key in sorted(numeric):
        if not np.issubdtype(arrays[key].dtype, np.number):
            raise InputError(f"statistics file {path}: {key} has dtype {arrays[key].dtype}")
    mu = arrays["mu"].astype(np.float64)
    sigma = arrays["sigma"].astype(np.float64)
    if mu.ndim != 1 or mu.shape[0] < 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(
            f"statistics file {path}: mu {mu.shape} and sigma {sigma.shape} do not match"
        )
    if not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
        raise InputError(f"statistics file {path}: mu or sigma contain non-finite values")
    _check_sigma(sigma, path)
    n = _scalar_count(arrays["n"], path) if "n" in keys else None
    meta = _meta(arrays["meta"], path) if "meta" in keys else None
    features = None
    if "features" in keys:
        features = arrays["features"].astype(np.float32)
        if features.ndim != 2 or features.shape[1] != mu.shape[0]:
            raise InputError(
                f"statistics file {path}: features {features.shape} do not match mu {mu.shape}"
            )
        if not np.isfinite(features).all():
            raise InputError(f"statistics file {path}: features contain non-finite values")
        if n is not None and features.shape[0] != n:
            raise InputError(
                f"statistics file {path}: {features.shape[0]} feature rows but n = {n}"
            )
    if meta is None:
        warn(
            f"statistics file {path} has no provenance (plain pytorch-fid/TTUR file): "
            "make sure it was computed with the same extractor and resize convention"
        )
    return StatsFile(mu=mu, sigma=sigma, n=n, meta=meta, features=features, path=path)


#: The provenance keys a run and a statistics file must agree on.
PROVENANCE_KEYS = ("extractor", "weights_sha256", "resize")


def check_provenance(stats_file: StatsFile, expected: dict[str, Any], *, dim: int) -> None:
    """Refuse a statistics file computed with another extractor, weights or resize convention.

    ``expected`` is the run's provenance and ``dim`` its feature dimension. A key the file does
    not record is a warning (the run cannot check it); a key that contradicts the run, or a
    feature dimension that differs, is an :class:`InputError` naming both sides.
    """
    meta = stats_file.meta
    if stats_file.dim != dim:
        recorded = (meta or {}).get("extractor", "an unrecorded extractor")
        raise InputError(
            f"statistics file {stats_file.path} holds {stats_file.dim}-d features "
            f"({recorded}), but this run's extractor {expected.get('extractor')} gives "
            f"{dim}-d features"
        )
    if meta is None:
        return  # already warned: a plain file records nothing
    missing = []
    for key in PROVENANCE_KEYS:
        theirs, ours = meta.get(key), expected.get(key)
        if theirs is None:
            missing.append(f"{key} (this run: {ours})")
        elif ours is not None and theirs != ours:
            raise InputError(
                f"statistics file {stats_file.path} was computed with {key}={theirs!r} "
                f"but this run uses {key}={ours!r}"
            )
    if missing:
        warn(
            f"statistics file {stats_file.path} does not record {', '.join(missing)}: make "
            "sure it matches"
        )
