"""Feature statistics: float64 running sums, and the ``.npz`` statistics file (DESIGN §6).

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
        out.sum = self.sum.to(device)
        out.sum_outer = self.sum_outer.to(device)
        return out


@dataclass
class StatsFile:
    """The contents of a statistics file."""

    mu: np.ndarray
    sigma: np.ndarray
    n: int | None
    meta: dict[str, Any] | None  # None: a plain pytorch-fid/TTUR file of unknown provenance
    features: np.ndarray | None = None
    path: Path | None = field(default=None)

    def statistics(self) -> FeatureStatistics:
        # A plain file carries no count; any n > 1 reproduces mu and sigma exactly.
        return FeatureStatistics.from_moments(self.mu, self.sigma, self.n or 2)


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


def load_stats(path: str | Path) -> StatsFile:
    """Read a statistics file; plain pytorch-fid/TTUR files (``mu``, ``sigma``) warn."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"statistics file {path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = set(data.files)
            if not {"mu", "sigma"} <= keys:
                raise InputError(f"statistics file {path} has no 'mu' and 'sigma' arrays")
            mu = np.asarray(data["mu"], dtype=np.float64)
            sigma = np.asarray(data["sigma"], dtype=np.float64)
            n = int(data["n"]) if "n" in keys else None
            meta = json.loads(str(data["meta"])) if "meta" in keys else None
            features = (
                np.asarray(data["features"], dtype=np.float32) if "features" in keys else None
            )
    except (OSError, ValueError) as exc:
        raise InputError(f"statistics file {path} is not a readable .npz ({exc})") from None
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(
            f"statistics file {path}: mu {mu.shape} and sigma {sigma.shape} do not match"
        )
    if meta is None:
        warn(
            f"statistics file {path} has no provenance (plain pytorch-fid/TTUR file): "
            "make sure it was computed with the same extractor and resize convention"
        )
    return StatsFile(mu=mu, sigma=sigma, n=n, meta=meta, features=features, path=path)


def check_provenance(stats_file: StatsFile, expected: dict[str, Any]) -> None:
    """Refuse a statistics file computed with another extractor, weights or resize convention."""
    if stats_file.meta is None:
        return
    for key in ("extractor", "weights_sha256", "resize"):
        theirs, ours = stats_file.meta.get(key), expected.get(key)
        if theirs is not None and ours is not None and theirs != ours:
            raise InputError(
                f"statistics file {stats_file.path} was computed with {key}={theirs!r} "
                f"but this run uses {key}={ours!r}"
            )
