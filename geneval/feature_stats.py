"""Feature statistics: shifted, mergeable float64 moments, and the ``.npz`` statistics file.

See ``docs/contracts.md`` §6.

The moments of a feature set are accumulated in float64 as a count ``n``, a per-feature shift
``c`` (the mean of the first batch), the shifted sum ``Σ(x − c)`` and the centred co-moment
``M₂ = Σ(x − x̄)(x − x̄)ᵀ``. The mean is ``c + Σ(x − c) / n`` and the covariance the unbiased
``M₂ / (n − 1)``, as ``numpy.cov`` (and so pytorch-fid and TTUR) computes it. Raw sums
``(Σx, Σxxᵀ)`` would lose the covariance to cancellation in ``Σxxᵀ − n μμᵀ`` when the features
have a large offset (a mean of 3·10⁴ costs six digits); the shifted sums carry only the spread.
Batches and shards merge with the pairwise update of Chan, Golub & LeVeque (1979, "Updating
formulae and a pairwise algorithm for computing sample variances"; 1983, "Algorithms for
computing the sample variance: analysis and recommendations", The American Statistician 37):
``M₂ = M₂ᴬ + M₂ᴮ + δδᵀ nᴬnᴮ / n`` with ``δ = x̄ᴮ − x̄ᴬ``, which keeps the digits whatever the
offset and whatever the order of the data. While ``n ≤ d`` the feature rows themselves are
kept in place of the co-moment (never more memory than it), so that the Fréchet distance can
take its trace term from the n × n side (:meth:`FeatureStatistics.covariance_factor`); they
are dropped as soon as ``n > d`` and never pickled or written to a file.

A statistics file is an ``.npz`` with ``mu`` (d,) and ``sigma`` (d, d) float64 — readable by
pytorch-fid and TTUR — plus ``n``, ``meta`` (a JSON string: extractor, weights sha256, resize
convention, geneval version) and optionally ``features`` (n, d) float32. It is read through
the one bounded ``.npz`` reader, :mod:`geneval.arrayfile`; members of other names (other
tools' arrays) are ignored unread, and one holding Python objects is refused.
"""

from __future__ import annotations

import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from geneval import __version__
from geneval.arrayfile import UNREADABLE, Member, npz_members, read_member, reading
from geneval.errors import InputError, warn
from geneval.io import atomic_path
from geneval.text import quote


def _named(path: Path | None) -> str:
    """``statistics file PATH`` as messages name it (the path quoted when unprintable)."""
    return f"statistics file {quote(path)}"


class FeatureStatistics:
    """Shifted, mergeable float64 moments of feature vectors of dimension ``dim``.

    The state is ``n``, a shift ``c`` (:attr:`shift`, the mean of the first batch), the
    shifted sum ``Σ(x − c)`` (:attr:`shifted_sum`) and the centred co-moment
    ``M₂ = Σ(x − x̄)(x − x̄)ᵀ`` (:attr:`comoment`). Every batch, and every other set of
    statistics, is absorbed with the pairwise update of Chan, Golub & LeVeque (1979, 1983):
    no step subtracts two large numbers, so the mean and covariance keep their digits for
    features with any offset. ``sum`` and ``sum_outer`` give the raw sums ``Σx`` and ``Σxxᵀ``
    for readers that want them; they are derived, not accumulated.

    While ``n ≤ dim`` the feature rows themselves are kept in place of the co-moment (at most
    ``dim`` rows: never more memory than the d × d co-moment), and ``M₂`` is taken from them
    in two passes when read. They give the centred factor ``F = (X − x̄)/√(n − 1)``
    (:meth:`covariance_factor`, ``FᵀF = Σ``), from which the Fréchet distance solves its trace
    term on the n × n side. The first batch or merge that takes ``n`` past ``dim`` turns the
    rows into the co-moment and drops them; statistics rebuilt from moments (a statistics
    file without features, a feature-cache entry, a sharded all-reduce) hold no rows. Rows are
    never pickled: a pickled copy holds the co-moment instead.
    """

    def __init__(self, dim: int, device: torch.device | str = "cpu") -> None:
        self.dim = dim
        self.n = 0
        #: False when the moments came from a file that records no count.
        self.count_known = True
        #: The shift c (d,): the mean of the first batch (zeros while empty).
        self.shift = torch.zeros(dim, dtype=torch.float64, device=device)
        #: Σ(x − c) (d,).
        self.shifted_sum = torch.zeros(dim, dtype=torch.float64, device=device)
        #: The rows seen so far while n ≤ dim (each batch as given, copied), else None.
        self._rows: list[torch.Tensor] | None = []
        #: M₂ (d, d) once the rows are dropped (None while they are kept).
        self._comoment: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.shift.device

    @property
    def comoment(self) -> torch.Tensor:
        """M₂ = Σ(x − x̄)(x − x̄)ᵀ (d, d, float64), centred on the mean of all features so far.

        While rows are kept it is computed from them in two passes, ``YᵀY`` with
        ``Y = (X − c) − Σ(x − c)/n``; otherwise it is the accumulated co-moment.
        """
        if self._rows is None:
            assert self._comoment is not None
            return self._comoment
        if self.n == 0:
            return torch.zeros(self.dim, self.dim, dtype=torch.float64, device=self.device)
        centred = self._centred_rows()
        return centred.T @ centred

    @comoment.setter
    def comoment(self, value: torch.Tensor) -> None:
        self._comoment = value.to(device=self.device, dtype=torch.float64)
        self._rows = None

    def _centred_rows(self) -> torch.Tensor:
        """``(X − c) − Σ(x − c)/n`` (n × d, float64) of the kept rows."""
        assert self._rows is not None and self.n > 0
        x = torch.cat([r.to(device=self.device, dtype=torch.float64) for r in self._rows])
        return (x - self.shift) - self.shifted_sum / self.n

    def _drop_rows(self) -> None:
        """Turn the kept rows into the co-moment and forget them (no-op without rows)."""
        if self._rows is not None:
            self._comoment = self.comoment
            self._rows = None

    @property
    def rows(self) -> torch.Tensor | None:
        """The feature rows (n × d, float64) when they are kept (n ≤ dim and every part of the
        statistics was accumulated from rows), else None."""
        if self._rows is None:
            return None
        if not self._rows:
            return torch.zeros(0, self.dim, dtype=torch.float64, device=self.device)
        return torch.cat([r.to(device=self.device, dtype=torch.float64) for r in self._rows])

    def covariance_factor(self) -> torch.Tensor | None:
        """``F = (X − x̄) / √(n − 1)`` (n × d, float64) of the kept rows, so that ``FᵀF`` is the
        unbiased covariance :attr:`cov` (the same centred rows give both); None when no rows
        are kept (n > dim, or moments rebuilt without rows) or n < 2. It is what
        ``frechet_distance`` takes as ``factor1``/``factor2``."""
        if self._rows is None or self.n < 2:
            return None
        return self._centred_rows() / math.sqrt(self.n - 1)

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state: the co-moment in place of any kept rows (rows are never
        serialised)."""
        state = self.__dict__.copy()
        if state.get("_rows") is not None:
            state["_comoment"] = self.comoment
            state["_rows"] = None
        return state

    def _absorb(self, n: int, shifted_sum: torch.Tensor, comoment: torch.Tensor) -> None:
        """Chan, Golub & LeVeque's pairwise update with a part of ``n`` vectors whose shifted
        sum (about this object's shift) is ``shifted_sum`` and whose centred co-moment is
        ``comoment``: ``M₂ = M₂ᴬ + M₂ᴮ + δδᵀ nᴬnᴮ / n``, ``δ`` the difference of the means
        (taken on the shifted sums, so that no offset cancels). Kept rows are dropped."""
        if n == 0:
            return
        self._drop_rows()
        if self.n == 0:
            self.n = n
            self.shifted_sum = shifted_sum.clone()
            self._comoment = comoment.clone()
            return
        total = self.n + n
        delta = shifted_sum / n - self.shifted_sum / self.n
        merged = self.comoment + comoment
        merged += torch.outer(delta, delta) * (self.n * n / total)
        self._comoment = merged
        self.shifted_sum = self.shifted_sum + shifted_sum
        self.n = total

    def update(self, features: torch.Tensor) -> FeatureStatistics:
        """Add a batch of features (n, dim), in float64 on this object's device.

        While the total stays ≤ ``dim`` and rows are kept, the batch is kept (copied) and only
        its shifted sum is added. Otherwise the batch's own mean and centred co-moment are
        taken in two passes, then absorbed with the pairwise update (:meth:`merge`). The first
        batch's mean becomes the shift.
        """
        if features.ndim != 2 or features.shape[1] != self.dim:
            raise ValueError(
                f"expected features of shape (n, {self.dim}), got {tuple(features.shape)}"
            )
        x = features.to(device=self.device, dtype=torch.float64)
        count = int(x.shape[0])
        if count == 0:
            return self
        if self.n == 0:
            self.shift = x.mean(dim=0)
        y = x - self.shift
        total = y.sum(dim=0)
        if self._rows is not None and self.n + count <= self.dim:
            self._rows.append(features.detach().to(device=self.device, copy=True))
            self.shifted_sum = self.shifted_sum + total
            self.n += count
            return self
        centred = y - total / count
        self._absorb(count, total, centred.T @ centred)
        return self

    def merge(self, other: FeatureStatistics) -> FeatureStatistics:
        """The statistics of both feature sets (a new object on this one's device).

        ``other``'s shifted sum is moved onto this shift, ``Σ(x − cᴬ) = Σ(x − cᴮ) + nᴮ(cᴮ − cᴬ)``,
        and the co-moments combine by Chan, Golub & LeVeque's pairwise formula; shards merged
        this way equal one process up to round-off in the last digits. When both sides keep
        their rows and hold at most ``dim`` together, the rows are concatenated instead (this
        side's first) and the result keeps them.
        """
        if other.dim != self.dim:
            raise ValueError(f"cannot merge {other.dim}-d statistics into {self.dim}-d ones")
        theirs = other.to(self.device)
        if self.n == 0:
            out = theirs
        elif theirs.n == 0:
            out = self.to(self.device)
        else:
            out = self.to(self.device)
            moved = theirs.shifted_sum + theirs.n * (theirs.shift - self.shift)
            if out._rows is not None and theirs._rows is not None and out.n + theirs.n <= self.dim:
                out._rows = out._rows + theirs._rows
                out.shifted_sum = out.shifted_sum + moved
                out.n += theirs.n
            else:
                out._absorb(theirs.n, moved, theirs.comoment)
        out.count_known = self.count_known and other.count_known
        return out

    @classmethod
    def from_shifted(
        cls, n: int, shift: torch.Tensor, shifted_sum: torch.Tensor, comoment: torch.Tensor
    ) -> FeatureStatistics:
        """Statistics holding the given state: ``n``, the shift ``c`` (d,), ``Σ(x − c)`` (d,)
        and the centred co-moment ``Σ(x − x̄)(x − x̄)ᵀ`` (d, d), as float64 (no rows)."""
        d = int(shift.shape[0]) if shift.ndim == 1 else -1
        if d < 0 or shifted_sum.shape != (d,) or comoment.shape != (d, d):
            raise ValueError(
                f"shift, shifted sum and co-moment of shapes {tuple(shift.shape)}, "
                f"{tuple(shifted_sum.shape)} and {tuple(comoment.shape)} do not match"
            )
        stats = cls(d, device=shift.device)
        stats.n = int(n)
        stats.shift = shift.to(torch.float64)
        stats.shifted_sum = shifted_sum.to(device=shift.device, dtype=torch.float64)
        stats.comoment = comoment
        return stats

    @classmethod
    def from_sums(cls, n: int, total: torch.Tensor, outer: torch.Tensor) -> FeatureStatistics:
        """Statistics from raw sums: ``n``, ``Σx`` (d,) and ``Σxxᵀ`` (d, d), float64.

        Kept for callers (and old feature-cache entries) that hold raw sums: the co-moment
        ``Σxxᵀ − ΣxΣxᵀ / n`` then has only the digits the raw sums kept. Accumulate with
        :meth:`update` and combine with :meth:`merge` to keep them all.
        """
        if total.ndim != 1 or outer.shape != (total.shape[0], total.shape[0]):
            raise ValueError(
                f"sums of shapes {tuple(total.shape)} and {tuple(outer.shape)} do not match"
            )
        total = total.to(torch.float64)
        outer = outer.to(device=total.device, dtype=torch.float64)
        n = int(n)
        if n == 0:
            return cls(int(total.shape[0]), device=total.device)
        mean = total / n
        zero = torch.zeros_like(total)
        return cls.from_shifted(n, mean, zero, outer - torch.outer(total, mean))

    @property
    def sum(self) -> torch.Tensor:
        """Σx = n c + Σ(x − c) (float64), derived."""
        return self.n * self.shift + self.shifted_sum

    @property
    def sum_outer(self) -> torch.Tensor:
        """Σxxᵀ = M₂ + n x̄x̄ᵀ (float64), derived (it carries the offset's cancellation, so the
        covariance is never taken from it)."""
        if self.n == 0:
            return torch.zeros_like(self.comoment)
        total = self.sum
        return self.comoment + torch.outer(total, total / self.n)

    @property
    def nbytes(self) -> int:
        """Bytes the state holds at most: shift, shifted sum and the d × d float64 co-moment,
        ``8 (2d + d²)``. Kept rows (n ≤ d rows of at most 8 bytes a value) take its place and
        never exceed it."""
        return 8 * (2 * self.dim + self.dim * self.dim)

    @property
    def mean(self) -> torch.Tensor:
        """μ = c + Σ(x − c) / n (float64)."""
        if self.n < 1:
            raise ValueError("no features accumulated")
        return self.shift + self.shifted_sum / self.n

    @property
    def cov(self) -> torch.Tensor:
        """Unbiased covariance M₂ / (n − 1) (float64), symmetrised."""
        if self.n < 2:
            raise ValueError("at least two feature vectors are needed for a covariance")
        cov = self.comoment / (self.n - 1)
        return (cov + cov.T) / 2

    @classmethod
    def from_features(cls, features: torch.Tensor | np.ndarray) -> FeatureStatistics:
        """Statistics of a whole feature matrix (n, d)."""
        x = torch.as_tensor(features)
        return cls(x.shape[1], device=x.device).update(x)

    @classmethod
    def from_moments(cls, mu: np.ndarray, sigma: np.ndarray, n: int) -> FeatureStatistics:
        """Statistics of a mean, an unbiased covariance and a count ``n ≥ 1``: the shift is
        ``mu`` and the co-moment ``sigma · (n − 1)``, so the moments come back as given (up
        to the rounding of one multiplication and division)."""
        mu_t = torch.as_tensor(np.asarray(mu, dtype=np.float64))
        sigma_t = torch.as_tensor(np.asarray(sigma, dtype=np.float64))
        if mu_t.ndim != 1 or sigma_t.shape != (mu_t.shape[0], mu_t.shape[0]):
            raise ValueError(
                f"mu {tuple(mu_t.shape)} and sigma {tuple(sigma_t.shape)} do not match"
            )
        return cls.from_shifted(n, mu_t, torch.zeros_like(mu_t), sigma_t * (n - 1))

    def to(self, device: torch.device | str) -> FeatureStatistics:
        """A copy on ``device`` (always a new object, whose tensors may share this one's
        memory when the device is the same: every update replaces rather than mutates)."""
        out = FeatureStatistics(self.dim, device=device)
        out.n = self.n
        out.count_known = self.count_known
        out.shift = self.shift.to(device)
        out.shifted_sum = self.shifted_sum.to(device)
        if self._rows is None:
            assert self._comoment is not None
            out._comoment = self._comoment.to(device)
            out._rows = None
        else:
            out._rows = [r.to(device) for r in self._rows]
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
    #: Moments of further extractor outputs: output name → (mu, sigma), e.g. an ADM batch's
    #: ``mu_s``/``sigma_s`` as ``spatial``.
    outputs: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    #: The foreign layout the file follows (``"adm"``: the ADM evaluator's reference batch,
    #: recognised by ``mu_s``/``sigma_s`` or ``arr_0``), or ``None``.
    layout: str | None = None
    #: The member holding the file's own images (``"arr_0"`` of an ADM batch), or ``None``.
    images_member: str | None = None

    @property
    def dim(self) -> int:
        return int(self.mu.shape[0])

    def for_output(self, output: str | None) -> StatsFile | None:
        """The file as the statistics of one extractor output: itself for the feature output
        (``None``), a view of ``outputs[output]`` (same count and provenance, no rows) for
        another, ``None`` when the file does not carry that output."""
        if output is None:
            return self
        if output not in self.outputs:
            return None
        mu, sigma = self.outputs[output]
        return StatsFile(mu=mu, sigma=sigma, n=self.n, meta=self.meta, path=self.path)

    def statistics(self) -> FeatureStatistics:
        """The statistics that reproduce ``mu`` and ``sigma`` (shift ``mu``, co-moment
        ``sigma · (n − 1)``).

        A file without a count is rebuilt with n = 2 (any n > 1 reproduces the moments) and
        marked ``count_known = False``, so that reports say the count is unknown. A file that
        stores its ``features`` with n ≤ d gives statistics built from those rows (which keep
        them, for the Fréchet distance's small-side route) when they reproduce ``mu`` and
        ``sigma`` to :data:`ROWS_TOLERANCE` (:func:`rows_match`); otherwise ``mu`` and
        ``sigma`` are used as stored.
        """
        if self.features is not None and self.n is not None and 2 <= self.n <= self.dim:
            rows = FeatureStatistics.from_features(torch.from_numpy(self.features))
            if rows.n == self.n and rows_match(rows, self.mu, self.sigma):
                return rows
        stats = FeatureStatistics.from_moments(self.mu, self.sigma, self.n or 2)
        stats.count_known = self.n is not None
        return stats


#: Relative agreement the kept rows of a statistics file must have with its ``mu`` and
#: ``sigma`` to stand in for them: far above the round-off of moments computed from the same
#: float32 rows (~1e-15), far below any other source of the rows.
ROWS_TOLERANCE = 1e-10


def rows_match(stats: FeatureStatistics, mu: np.ndarray, sigma: np.ndarray) -> bool:
    """Whether statistics that keep rows reproduce ``mu`` and ``sigma`` to
    :data:`ROWS_TOLERANCE`.

    The mean is compared entry by entry (relative to ``max |μ|`` plus the largest standard
    deviation); the covariance by Freivalds' randomised check (1977, "Probabilistic machines
    can use less running time"): ``‖Σ V − Fᵀ(F V)‖ ≤ τ ‖Σ‖_F ‖V‖_F`` for four fixed random
    vectors ``V`` (d × 4), with ``F`` the rows' centred factor, in O(d² + n d) instead of the
    O(n d²) of forming ``FᵀF``. A covariance that differs by more than the tolerance passes
    only if the difference is nearly blind to all four probes.
    """
    factor = stats.covariance_factor()
    if factor is None:
        return False
    mu_t = torch.as_tensor(np.asarray(mu, dtype=np.float64), device=stats.device)
    sigma_t = torch.as_tensor(np.asarray(sigma, dtype=np.float64), device=stats.device)
    spread = float(sigma_t.diagonal().clamp_min(0).max().sqrt())
    scale = float(mu_t.abs().max()) + spread
    if float((stats.mean - mu_t).abs().max()) > ROWS_TOLERANCE * max(scale, 1e-300):
        return False
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn(stats.dim, 4, generator=generator, dtype=torch.float64)
    probe = probe.to(stats.device)
    gap = float(torch.linalg.norm(sigma_t @ probe - factor.T @ (factor @ probe)))
    bound = ROWS_TOLERANCE * float(torch.linalg.norm(sigma_t)) * float(torch.linalg.norm(probe))
    return gap <= max(bound, 1e-300)


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
        raise InputError(f"{_named(path)} must end in .npz")
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


def _check_sigma(sigma: np.ndarray, path: Path, key: str = "sigma") -> None:
    """Refuse a covariance that is not symmetric or not positive semi-definite (up to round-off)."""
    scale = float(np.abs(sigma).max()) if sigma.size else 0.0
    asymmetry = float(np.abs(sigma - sigma.T).max()) if sigma.size else 0.0
    if asymmetry > SIGMA_TOLERANCE * max(scale, 1e-300):
        raise InputError(
            f"{_named(path)}: {key} is not symmetric (largest |Σ − Σᵀ| = {asymmetry:.3g})"
        )
    sym = torch.from_numpy(sigma / 2 + sigma.T / 2)  # halves first: no overflow near the max
    # Cholesky of Σ + δI succeeds for every PSD Σ; it is ~20× cheaper than an eigendecomposition,
    # which only runs to report the offending eigenvalue.
    shift = SIGMA_TOLERANCE * max(scale, 1e-300)
    shifted = sym.clone()
    shifted.diagonal().add_(shift)  # Σ + δI without a second d × d temporary
    _, info = torch.linalg.cholesky_ex(shifted)
    del shifted
    if int(info) != 0:
        lowest = float(torch.linalg.eigvalsh(sym)[0])
        raise InputError(
            f"{_named(path)}: {key} is not positive semi-definite (smallest "
            f"eigenvalue {lowest:.3g}, largest |entry| {scale:.3g})"
        )


#: The largest feature dimension a statistics file may hold: ``sigma`` is d × d float64
#: (512 MiB at 8192; the largest extractors give 4096-d features).
MAX_STATS_DIM = 8192
#: The largest count ``n`` a file may record: float64 sums are exact integers up to 2⁵³.
MAX_COUNT = 2**53
#: The largest magnitude of an entry of ``mu`` or ``sigma``: the raw sums derived from them
#: (:attr:`FeatureStatistics.sum_outer`) multiply by n (≤ 2⁵³) and square ``mu``, which must
#: stay finite in float64.
MAX_MOMENT = 1e100
#: The largest ``meta`` string (bytes its header claims) and JSON nesting depth.
MAX_META_BYTES = 1 << 20
MAX_META_DEPTH = 32
#: The moments of further outputs in the ADM evaluator's reference batches
#: (``openai/guided-diffusion/evaluations``): output name → (mean key, covariance key).
ADM_OUTPUTS = {"spatial": ("mu_s", "sigma_s")}
#: The member of an ADM batch that holds its images: uint8 (N, H, W, 3).
ADM_IMAGES = "arr_0"
#: The arrays a statistics file is read for (an ADM batch's images, ``arr_0``, are read only
#: when a metric needs them). Any other member (another tool's arrays) is ignored and its
#: data never read; only one whose header declares Python objects (a pickle) is refused.
STATS_KEYS = ("mu", "sigma", "n", "meta", "features", "mu_s", "sigma_s")
#: The provenance keys of ``meta`` that are read, each a string when present.
META_KEYS = ("extractor", "output", "weights_sha256", "resize", "geneval_version")


def _real(member: Member, key: str, path: Path) -> None:
    if member.dtype.kind not in "iuf":
        raise InputError(f"{_named(path)}: {key} has dtype {member.dtype} (expected real numbers)")


def _check_shapes(members: dict[str, Member], path: Path) -> int:
    """Check what the headers claim (shapes, dtypes, sizes) before any data is read; returns
    the feature dimension d."""
    mu, sigma = members["mu"], members["sigma"]
    _real(mu, "mu", path)
    _real(sigma, "sigma", path)
    if len(mu.shape) != 1 or mu.shape[0] < 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise InputError(
            f"{_named(path)}: mu {mu.shape} and sigma {sigma.shape} do not match "
            "(expected (d,) and (d, d))"
        )
    dim = mu.shape[0]
    if dim > MAX_STATS_DIM:
        raise InputError(
            f"{_named(path)}: mu has {dim} dimensions, more than the {MAX_STATS_DIM} geneval reads"
        )
    if "n" in members:
        n = members["n"]
        if n.shape != () or n.dtype.kind not in "iuf":
            raise InputError(f"{_named(path)}: n must be a single number, found {n.describe()}")
    if "meta" in members:
        meta = members["meta"]
        if meta.shape != () or meta.dtype.kind not in "US":
            raise InputError(f"{_named(path)}: meta must be a JSON string, found {meta.describe()}")
        if meta.nbytes > MAX_META_BYTES:
            raise InputError(
                f"{_named(path)}: meta holds {meta.nbytes} bytes, more than the "
                f"{MAX_META_BYTES} geneval reads"
            )
    if "features" in members:
        features = members["features"]
        _real(features, "features", path)
        if len(features.shape) != 2 or features.shape[1] != dim:
            raise InputError(
                f"{_named(path)}: features {features.shape} do not match mu {mu.shape}"
            )
    for mean_key, cov_key in ADM_OUTPUTS.values():
        if (mean_key in members) != (cov_key in members):
            have, lack = (mean_key, cov_key) if mean_key in members else (cov_key, mean_key)
            raise InputError(f"{_named(path)}: {have} without {lack}")
        if mean_key not in members:
            continue
        mean, cov = members[mean_key], members[cov_key]
        _real(mean, mean_key, path)
        _real(cov, cov_key, path)
        if len(mean.shape) != 1 or mean.shape[0] < 1 or cov.shape != (mean.shape[0],) * 2:
            raise InputError(
                f"{_named(path)}: {mean_key} {mean.shape} and {cov_key} {cov.shape} do not "
                "match (expected (d,) and (d, d))"
            )
        if mean.shape[0] > MAX_STATS_DIM:
            raise InputError(
                f"{_named(path)}: {mean_key} has {mean.shape[0]} dimensions, more than the "
                f"{MAX_STATS_DIM} geneval reads"
            )
    return dim


def _check_images_member(member: Member, path: Path) -> None:
    """An ADM batch's ``arr_0``: uint8 images (N, H, W, 3), N ≥ 1 (header only)."""
    shape = member.shape
    if member.dtype != np.uint8 or len(shape) != 4 or shape[3] != 3 or shape[0] < 1:
        raise InputError(
            f"{_named(path)}: {ADM_IMAGES} must be uint8 images (N, H, W, 3) as the ADM "
            f"evaluator reads them, found {member.describe()}"
        )


def _scalar_count(value: np.ndarray, path: Path) -> int:
    """``n``: a single integer in [2, :data:`MAX_COUNT`] (an integral float is accepted)."""
    number = value[()]
    if value.dtype.kind == "f":
        count = float(number)
        whole = math.isfinite(count) and count.is_integer()
        integer = int(count) if whole else None
    else:
        integer = int(number)
    if integer is None or not 2 <= integer <= MAX_COUNT:
        raise InputError(
            f"{_named(path)}: n must be an integer ≥ 2 and ≤ 2^53, found {value.item()!r}"
        )
    return integer


def _depth(value: Any) -> int:
    """The nesting depth of a parsed JSON value (iterative: no recursion limit to hit)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        deepest = max(deepest, depth)
        if depth > MAX_META_DEPTH:
            break
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


def _meta(value: np.ndarray, path: Path) -> dict[str, Any]:
    """``meta``: a JSON object (at most :data:`MAX_META_DEPTH` deep) whose provenance keys,
    when present, are strings."""
    raw = value[()]
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else str(raw)
        meta = json.loads(text)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError included
        raise InputError(f"{_named(path)}: meta is not a JSON string") from None
    except RecursionError:
        raise InputError(
            f"{_named(path)}: meta is nested more than {MAX_META_DEPTH} levels deep"
        ) from None
    if not isinstance(meta, dict):
        raise InputError(f"{_named(path)}: meta must be a JSON object, found {type(meta).__name__}")
    if _depth(meta) > MAX_META_DEPTH:
        raise InputError(f"{_named(path)}: meta is nested more than {MAX_META_DEPTH} levels deep")
    for key in META_KEYS:
        if meta.get(key) is not None and not isinstance(meta[key], str):
            raise InputError(
                f"{_named(path)}: meta {key} must be a string, found {type(meta[key]).__name__}"
            )
    return meta


def _moments(array: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``mu`` or ``sigma`` as native float64, finite and within :data:`MAX_MOMENT`."""
    out = array.astype(np.float64, copy=False)
    if not np.isfinite(out).all():
        raise InputError(f"{_named(path)}: {key} contains non-finite values")
    largest = float(np.abs(out).max())
    if largest > MAX_MOMENT:
        raise InputError(
            f"{_named(path)}: {key} has an entry of magnitude {largest:.3g}, beyond the "
            f"{MAX_MOMENT:g} that float64 moments can carry"
        )
    return out


def is_stats_file(path: Path) -> bool:
    """Whether ``path`` is an ``.npz`` holding ``mu`` and ``sigma``, or an ADM batch's
    ``mu_s``/``sigma_s`` (its member names alone are read; an unreadable file is not a
    statistics file, and its reader says why)."""
    if path.suffix != ".npz" or not path.is_file():
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            names = {name.removesuffix(".npy") for name in archive.namelist()}
    except UNREADABLE:
        return False
    return {"mu", "sigma"} <= names or any(
        m in names for pair in ADM_OUTPUTS.values() for m in pair
    )


def load_stats(path: str | Path) -> StatsFile:
    """Read and validate a statistics file.

    ``mu`` (d,) and ``sigma`` (d, d) must be finite real numbers (d ≤ :data:`MAX_STATS_DIM`,
    entries within ±:data:`MAX_MOMENT`), ``sigma`` symmetric and positive semi-definite up to
    round-off (:data:`SIGMA_TOLERANCE`); ``n``, when present, a single integer in
    [2, 2⁵³]; ``meta``, when present, a JSON object (at most :data:`MAX_META_BYTES`, nested
    at most :data:`MAX_META_DEPTH` deep, its provenance keys strings); ``features``, when
    present, finite (n, d); ``mu_s`` and ``sigma_s`` (an ADM evaluator batch's spatial
    moments, :data:`ADM_OUTPUTS`), together or not at all, under the rules of ``mu`` and
    ``sigma``, kept as ``outputs["spatial"]``; ``arr_0`` (an ADM batch's images), whose header
    alone is checked here (uint8 (N, H, W, 3)) and recorded as ``images_member``. A file with
    any of these follows the ADM layout (``layout="adm"``): without ``meta``, its provenance
    is assumed where it is resolved (:func:`geneval.run.resolve.adm_batch`), with a note,
    instead of the plain file's warning. The file is read through the one reader of ``.npz`` files,
    :mod:`geneval.arrayfile`: every member's header is checked before its data is read, so a
    file cannot make geneval allocate more than it holds. A member of any other name (another
    tool's arrays) is ignored and its data never read, but one declaring Python objects (a
    pickle) is refused.
    Anything else, and any corrupt or truncated file, is an :class:`InputError` naming the
    file and the field. A plain pytorch-fid/TTUR file (``mu``, ``sigma`` only) is accepted
    with a warning that its provenance is unknown.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"{_named(path)} does not exist")
    if not path.is_file():
        raise InputError(f"{_named(path)} is not a regular file")
    what = _named(path)
    with reading(what, kind=".npz"), zipfile.ZipFile(path) as archive:
        members = npz_members(archive, path, what, keys=STATS_KEYS)
        names = {name.removesuffix(".npy") for name in archive.namelist()}
        adm = ADM_IMAGES in names or any(m in members for m, _ in ADM_OUTPUTS.values())
        if not {"mu", "sigma"} <= set(members):
            if adm:
                raise InputError(
                    f"{what}: an ADM batch with moments needs 'mu' and 'sigma' (found "
                    f"{', '.join(sorted(names))})"
                )
            raise InputError(f"{what} has no 'mu' and 'sigma' arrays")
        _check_shapes(members, path)
        images_member = None
        if ADM_IMAGES in names:
            (image_header,) = npz_members(archive, path, what, keys=(ADM_IMAGES,)).values()
            _check_images_member(image_header, path)
            images_member = ADM_IMAGES
        n = _scalar_count(read_member(archive, members["n"]), path) if "n" in members else None
        if "features" in members and n is not None and members["features"].shape[0] != n:
            raise InputError(
                f"{_named(path)}: {members['features'].shape[0]} feature rows but n = {n}"
            )
        meta = _meta(read_member(archive, members["meta"]), path) if "meta" in members else None
        mu = _moments(read_member(archive, members["mu"]), "mu", path)
        sigma = _moments(read_member(archive, members["sigma"]), "sigma", path)
        _check_sigma(sigma, path)
        outputs = {}
        for output, (mean_key, cov_key) in ADM_OUTPUTS.items():
            if mean_key in members:
                mean = _moments(read_member(archive, members[mean_key]), mean_key, path)
                cov = _moments(read_member(archive, members[cov_key]), cov_key, path)
                _check_sigma(cov, path, cov_key)
                outputs[output] = (mean, cov)
        features = None
        if "features" in members:
            with np.errstate(over="ignore"):  # beyond float32: refused as non-finite below
                features = read_member(archive, members["features"]).astype(np.float32, copy=False)
            if not np.isfinite(features).all():
                raise InputError(
                    f"{_named(path)}: features contain non-finite values (or values beyond float32)"
                )
    if meta is None and not adm:  # an ADM batch's provenance is assumed where it is resolved
        warn(
            f"{_named(path)} has no provenance (plain pytorch-fid/TTUR file): "
            "make sure it was computed with the same extractor and resize convention"
        )
    return StatsFile(
        mu=mu,
        sigma=sigma,
        n=n,
        meta=meta,
        features=features,
        path=path,
        outputs=outputs,
        layout="adm" if adm else None,
        images_member=images_member,
    )


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
            f"{_named(stats_file.path)} holds {stats_file.dim}-d features "
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
                f"{_named(stats_file.path)} was computed with {key}={theirs!r} "
                f"but this run uses {key}={ours!r}"
            )
    if missing and not meta.get("assumed"):  # an assumed provenance was noted already
        warn(
            f"{_named(stats_file.path)} does not record {', '.join(missing)}: make sure it matches"
        )
