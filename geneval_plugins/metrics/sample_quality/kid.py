"""Metric ``kid``: the Kernel Inception Distance, over :func:`kernel_inception_distance`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.sample_quality.random_draws import (
    RNG_CHOICES,
    RNG_HELP,
    run_generator,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from geneval_plugins.metrics.sample_quality.random_draws import Shuffle

#: Upper bound on float64 elements of one chunk of kernel matrices (≈ 256 MiB).
_CHUNK_ELEMENTS = 32 * 1024 * 1024


@dataclass(frozen=True)
class KIDResult:
    """Mean and (population) standard deviation of MMD² over subsets, and what was used."""

    value: float
    std: float
    subset_size: int
    subsets: int


def _as_features(x: torch.Tensor | np.ndarray, name: str, device: torch.device) -> torch.Tensor:
    import torch

    t = torch.as_tensor(x)
    if t.ndim != 2:
        raise InputError(
            f"kernel_inception_distance: {name} must be (n, d), got shape {tuple(t.shape)}"
        )
    # kept in its own floating type (half types widened to float32): the kernel is computed
    # in it, its sums in float64 (polynomial_mmd2)
    if not t.is_floating_point():
        dtype = torch.float64
    elif t.dtype in (torch.float16, torch.bfloat16):
        dtype = torch.float32
    else:
        dtype = t.dtype
    return t.to(device=device, dtype=dtype)


def _kernel_sum(
    a: torch.Tensor, b: torch.Tensor, *, degree: int, gamma: float, coef0: float, diagonal: bool
) -> torch.Tensor:
    """``Σ_ij (γ aᵢᵀbⱼ + c)^p`` of each batch of a (s, m, d), b (s, n, d), (s,) float64;
    without the diagonal terms ``i = j`` when ``diagonal`` is false.

    The inner products are one batched product in the features' type; the kernel is
    evaluated in float32 in place (~3e-7 relative per entry, uncorrelated) and summed in
    float64.
    """
    import torch

    k = torch.bmm(a, b.transpose(1, 2)).mul_(gamma).add_(coef0).pow_(degree)
    total = k.sum(dim=(1, 2), dtype=torch.float64)
    if not diagonal:
        total -= k.diagonal(dim1=1, dim2=2).sum(dim=1, dtype=torch.float64)
    return total


def polynomial_mmd2(
    x: torch.Tensor, y: torch.Tensor, *, degree: int, gamma: float, coef0: float
) -> torch.Tensor:
    """Unbiased MMD² of batches of subsets ``x``, ``y`` (b, m, d) with ``k(a, b) = (γ aᵀb + c)^p``.

    ``MMD² = Σ_{i≠j} k(xᵢ,xⱼ)/(m(m−1)) + Σ_{i≠j} k(yᵢ,yⱼ)/(m(m−1)) − 2 Σ_{i,j} k(xᵢ,yⱼ)/m²``
    (Gretton et al. 2012, eq. 3; Bińkowski et al. 2018). Returns (b,) float64.

    The inner products and the kernel are computed in the features' own type, as
    torch-fidelity computes them (float32 features: each kernel value within ~3e-7 of exact);
    the sums are float64, where torch-fidelity sums in float32 (~1e-4 of KID at m = 1000).
    Float64 features are float64 throughout.
    """
    kernel = {"degree": degree, "gamma": gamma, "coef0": coef0}
    m = x.shape[1]
    off_xx = _kernel_sum(x, x, diagonal=False, **kernel)
    off_yy = _kernel_sum(y, y, diagonal=False, **kernel)
    k_xy = _kernel_sum(x, y, diagonal=True, **kernel)
    return (off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy / (m * m)


def _indicators(idx: torch.Tensor, n: int, device: torch.device) -> torch.Tensor:
    """(n, s) float64 matrix, ``I[i, t] = 1`` when row ``i`` is in subset ``t`` of ``idx``."""
    import torch

    ind = torch.zeros(n, idx.shape[0], dtype=torch.float64, device=device)
    return ind.scatter_(0, idx.T.to(device), 1.0)


def _kernel_block(a: torch.Tensor, b: torch.Tensor, kernel: Mapping[str, float]) -> torch.Tensor:
    """``(γ aᵢᵀbⱼ + c)^p`` of every row pair, in the features' type, computed in place."""
    return (a @ b.T).mul_(kernel["gamma"]).add_(kernel["coef0"]).pow_(kernel["degree"])


def subset_kernel_sums(
    a: torch.Tensor,
    b: torch.Tensor | None,
    ind_a: torch.Tensor,
    ind_b: torch.Tensor | None,
    *,
    kernel: Mapping[str, float],
    block: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Kernel sums of every subset pair at once, from row blocks of the full kernel matrix.

    With indicator matrices ``A`` (n_a, s) and ``B`` (n_b, s) of the subsets (columns ``t``),
    the sum of subset pair ``t`` is ``Σ_ij A_it K_ij B_jt = (Aᵀ K B)_tt``: each row block
    ``K_I`` of ``K_ij = (γ aᵢᵀbⱼ + c)^p`` (features' type) is multiplied by ``B`` in float64
    and reduced against ``A_I``, so memory stays at one block, and the inner products cost
    ``n_a n_b d`` however many subsets are drawn. When ``b`` is ``None`` the kernel is that of
    ``a`` with itself: only the blocks on and above the diagonal are computed (``n_a² d / 2``),
    the others counted twice by symmetry.

    Returns the (s,) float64 sums over all pairs and the (s,) float64 sums of the diagonal
    terms ``K_ii`` (zeros when ``b`` is given).
    """
    import torch

    sym = b is None
    n_a, s = ind_a.shape
    totals = torch.zeros(s, dtype=torch.float64, device=a.device)
    diagonal = torch.zeros(s, dtype=torch.float64, device=a.device)
    for start in range(0, n_a, block):
        stop = min(start + block, n_a)
        rows = ind_a[start:stop]
        if sym:
            k = _kernel_block(a[start:stop], a[start:], kernel).double()
            width = stop - start
            inner = k[:, :width] @ rows
            if stop < n_a:
                inner.add_(k[:, width:] @ ind_a[stop:], alpha=2.0)
            diagonal += rows.T @ k[:, :width].diagonal()
        else:
            inner = _kernel_block(a[start:stop], b, kernel).double() @ ind_b
        totals += (rows * inner).sum(dim=0)
    return totals, diagonal


def _mmd2_by_blocks(
    x: torch.Tensor,
    y: torch.Tensor,
    idx1: torch.Tensor,
    idx2: torch.Tensor,
    kernel: Mapping[str, float],
) -> torch.Tensor:
    """Unbiased MMD² of every subset pair from the blocked full kernel matrices (s,) float64."""
    n1, n2, m = x.shape[0], y.shape[0], idx1.shape[1]
    ind1, ind2 = _indicators(idx1, n1, x.device), _indicators(idx2, n2, x.device)
    block = max(1, _CHUNK_ELEMENTS // (3 * max(n1, n2)))  # features' type + float64 copy
    xx, dxx = subset_kernel_sums(x, None, ind1, None, kernel=kernel, block=block)
    yy, dyy = subset_kernel_sums(y, None, ind2, None, kernel=kernel, block=block)
    xy, _ = subset_kernel_sums(x, y, ind1, ind2, kernel=kernel, block=block)
    return (xx - dxx + yy - dyy) / (m * (m - 1)) - 2 * xy / (m * m)


def _mmd2_by_subsets(
    x: torch.Tensor,
    y: torch.Tensor,
    idx1: torch.Tensor,
    idx2: torch.Tensor,
    kernel: Mapping[str, float],
) -> torch.Tensor:
    """Unbiased MMD² of every subset pair, subsets gathered in chunks of batched products."""
    import torch

    m, d = idx1.shape[1], x.shape[1]
    # per subset: m² kernel values at a time, 2md gathered features (float32: half the budget)
    per_chunk = max(1, _CHUNK_ELEMENTS // (m * m + 2 * m * d))
    mmds = []
    for start in range(0, idx1.shape[0], per_chunk):
        i1 = idx1[start : start + per_chunk].to(x.device)
        i2 = idx2[start : start + per_chunk].to(x.device)
        mmds.append(polynomial_mmd2(x[i1], y[i2], **kernel))
    return torch.cat(mmds)


def kid_route(n1: int, n2: int, d: int, subsets: int, m: int) -> str:
    """``"blocks"`` when the full kernel matrices cost less than the subsets' own, else
    ``"subsets"``.

    Per subset pair the batched route computes three m × m products of d-vectors
    (``3 s m² d``); the blocked route computes the matrices once, ``(n₁² + n₂²)/2 + n₁n₂``
    products of d-vectors, each entry then multiplied by the s indicator columns in float64
    (counted as 4 float32 multiply-adds per column).
    """
    pairs = (n1 * n1 + n2 * n2) / 2 + n1 * n2
    blocks = pairs * (d + 4 * subsets)
    per_subset = 3.0 * subsets * m * m * d
    fits = (n1 + n2) * subsets <= _CHUNK_ELEMENTS  # the float64 indicator matrices
    return "blocks" if fits and blocks < per_subset else "subsets"


def kernel_inception_distance(
    f1: torch.Tensor | np.ndarray,
    f2: torch.Tensor | np.ndarray,
    *,
    subsets: int = 100,
    subset_size: int = 1000,
    degree: int = 3,
    gamma: float | None = None,
    coef0: float = 1.0,
    generator: Shuffle = None,
    device: torch.device | str | None = None,
    route: str | None = None,
) -> KIDResult:
    """Kernel Inception Distance: unbiased polynomial-kernel MMD² averaged over random subsets.

    For each of ``subsets`` draws, ``m`` rows of ``f1`` and ``m`` rows of ``f2`` are chosen
    without replacement (``m = min(subset_size, n1, n2)``) and the unbiased MMD² with kernel
    ``k(x, y) = (γ xᵀy + coef0)^degree`` is computed (the kernel in the features' type, its
    sums in float64: :func:`polynomial_mmd2`); KID is the mean over draws.

    Parameters
    ----------
    f1, f2
        Features (n1, d) and (n2, d), e.g. Inception pool3 of samples and reference.
    subsets
        Number of random subset pairs (default 100).
    subset_size
        Rows per subset (default 1000); lowered to ``min(n1, n2)`` when a set is smaller.
    degree, gamma, coef0
        Polynomial kernel; ``gamma=None`` means ``1/d`` (the paper's ``(xᵀy/d + 1)³``).
    generator
        Random generator for the subset draws (CPU); a fixed seed gives a fixed result
        (``None``: a torch generator seeded with 0). With a numpy ``RandomState`` each subset
        pair is drawn as ``choice(n1, m, replace=False)`` then ``choice(n2, m,
        replace=False)``, subset after subset: with seed 2020 these are torch-fidelity's
        draws, so the result equals its ``kid`` on the same features.
    device
        Where to compute; default the device of ``f1`` when it is a tensor, else the CPU.
    route
        ``"subsets"`` (each subset pair's three m × m kernel matrices, chunks of subsets in
        one batched product), ``"blocks"`` (the full kernel matrices once, in row blocks,
        reduced against the subsets' indicator columns: :func:`subset_kernel_sums`) or
        ``None``: the cheaper for these sizes (:func:`kid_route`; with torch-fidelity's 100
        subsets of 1000 from 5000 features, the blocks cost about a fifth). Both give the same
        values to float round-off of the features' type; memory is bounded either way.

    Returns
    -------
    KIDResult
        ``value`` (mean MMD²), ``std`` (population std over subsets, as torch-fidelity),
        ``subset_size`` actually used and ``subsets``.

    Notes
    -----
    With ``subsets=1`` and ``subset_size ≥ max(n1, n2) = n1 = n2`` the subset is the whole
    set and the result is the plain unbiased MMD², equal to torch-fidelity's with
    ``kid_subsets=1, kid_subset_size=n``. KID may be slightly negative: the estimator is
    unbiased.

    References
    ----------
    .. [1] M. Bińkowski, D. J. Sutherland, M. Arbel, A. Gretton, "Demystifying MMD GANs",
       ICLR 2018.
    .. [2] A. Gretton et al., "A Kernel Two-Sample Test", JMLR 13 (2012).
    """
    import numpy as np
    import torch

    if device is None:
        device = f1.device if isinstance(f1, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    x, y = _as_features(f1, "f1", device), _as_features(f2, "f2", device)
    if x.shape[1] != y.shape[1]:
        raise InputError(
            f"kernel_inception_distance: feature sizes differ ({x.shape[1]} and {y.shape[1]})"
        )
    if x.dtype != y.dtype:  # both in the wider type
        x, y = x.double(), y.double()
    if subsets < 1 or subset_size < 2:
        raise InputError(
            f"kid: subsets must be ≥ 1 and subset_size ≥ 2 (got {subsets}, {subset_size})"
        )
    n1, n2, d = x.shape[0], y.shape[0], x.shape[1]
    m = min(subset_size, n1, n2)
    if m < 2:
        raise InputError(
            f"kid needs at least 2 samples and 2 reference features (got {n1} and {n2})"
        )
    if route not in (None, "subsets", "blocks"):
        raise InputError(f"kid: route must be 'subsets' or 'blocks', got {route!r}")
    gamma = 1.0 / d if gamma is None else float(gamma)
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    # Draw every subset first (on the CPU generator), then compute in device-sized chunks.
    if isinstance(generator, np.random.RandomState):
        draws = [
            (generator.choice(n1, m, replace=False), generator.choice(n2, m, replace=False))
            for _ in range(subsets)
        ]
        idx1 = torch.from_numpy(np.stack([a for a, _ in draws]))
        idx2 = torch.from_numpy(np.stack([b for _, b in draws]))
    else:
        # subset s of a set of n rows: the m smallest of n uniform keys, drawn row after row
        # (the draws of torch.rand(subsets, n)); memory O(n + subsets·m), not O(subsets·n)
        idx1 = torch.stack(
            [torch.rand(n1, generator=generator).argsort()[:m] for _ in range(subsets)]
        )
        idx2 = torch.stack(
            [torch.rand(n2, generator=generator).argsort()[:m] for _ in range(subsets)]
        )
    kernel = {"degree": degree, "gamma": gamma, "coef0": coef0}
    if route is None:
        route = kid_route(n1, n2, d, subsets, m)
    if route == "blocks":
        values = _mmd2_by_blocks(x, y, idx1, idx2, kernel)
    else:
        values = _mmd2_by_subsets(x, y, idx1, idx2, kernel)
    return KIDResult(
        value=float(values.mean()),
        std=float(values.std(unbiased=False)),
        subset_size=m,
        subsets=subsets,
    )


class KernelInceptionDistance:
    """The ``kid`` metric (``docs/contracts.md`` §7): seeded subsets of both feature sets."""

    name = "kid"
    higher_is_better = False
    needs = (Need("features", "samples"), Need("features", "reference"))
    interpretation = (
        "unbiased squared MMD between sample and reference features (polynomial kernel); "
        "0 when the distributions match, may be slightly negative by chance"
    )
    options: Mapping[str, Option] = {
        "subsets": Option(100, "number of random subset pairs averaged", low=1),
        "subset_size": Option(
            1000, "features per subset (lowered to the smaller set's size)", low=2
        ),
        "degree": Option(3, "degree of the polynomial kernel (xᵀy/d + coef0)^degree", low=1),
        "coef0": Option(1.0, "constant of the polynomial kernel"),
        "rng": Option("geneval", RNG_HELP, choices=RNG_CHOICES),
    }
    fields: Mapping[str, str] = {
        "std": "standard deviation of the MMD² over subsets (None when the subsets cannot "
        "vary: one subset, or subsets as large as both sets)",
        "subset_size": "features per subset actually used",
        "subsets": "number of subsets",
    }
    uncertainty = "std"
    feature_space = "inception-v3-fid"  # the space of published KIDs (Bińkowski et al. 2018)
    #: As for FID: fewer samples than the Inception feature dimension give unreliable values;
    #: an extractor with fewer dimensions declares its own minimum.
    min_samples = 2048

    def compute(
        self,
        inputs: MetricInputs,
        *,
        subsets: int,
        subset_size: int,
        degree: int,
        coef0: float,
        rng: str,
    ) -> Mapping[str, Any]:
        """``{"value", "std", "subset_size", "subsets"}``; subsets drawn with ``inputs.seed``
        (``rng=geneval``) or torch-fidelity's generator and seed (``rng=torch-fidelity``).

        ``std`` is ``None`` (with a warning) when the subsets cannot vary — a single subset, or
        a subset size equal to both set sizes, so that every subset is the whole of both sets
        and the spread over subsets is round-off, not uncertainty. A negative value gets a
        warning that says what it means.
        """
        samples, reference = inputs.features("samples"), inputs.features("reference")
        result = kernel_inception_distance(
            samples,
            reference,
            subsets=subsets,
            subset_size=subset_size,
            degree=degree,
            coef0=coef0,
            generator=run_generator(rng, inputs.seed),
            device=inputs.device,
        )
        notes = []
        whole = result.subset_size == samples.shape[0] == reference.shape[0]
        std: float | None = result.std
        if result.subsets == 1 or whole:
            std = None
            why = "a single subset" if result.subsets == 1 else "every subset is both whole sets"
            notes.append(f"no std: the subsets cannot vary ({why})")
        if result.value < 0:
            notes.append(
                "negative: the unbiased MMD² estimate falls below 0 by chance when samples and "
                "reference are close (its std covers the subset draws, not the draw of the two "
                "sets themselves); read it as 0"
            )
        out: dict[str, Any] = {
            "value": result.value,
            "std": std,
            "subset_size": result.subset_size,
            "subsets": result.subsets,
        }
        if notes:
            out["warnings"] = notes
        return out


@hookimpl
def geneval_register_metrics(register) -> None:
    register(KernelInceptionDistance())
