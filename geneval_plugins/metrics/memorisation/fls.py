"""Metric ``fls``: the feature likelihood score of Jiralerspong et al. (2023), as dgm-eval
computes it."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.memorisation._common import (
    as_features,
    row_block,
    split_reference,
    squared_distances,
    squared_norms,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    ArrayLike = torch.Tensor | np.ndarray

#: Adam's schedule for the bandwidths, as dgm-eval's ``optimize_sigmas``: 100 full-batch
#: steps at learning rate 0.5, divided by 10 after 50, log σ² clamped to [−100, 20].
STEPS = 100
LEARNING_RATE = 0.5
MILESTONE = 50
GAMMA = 0.1
LOG_SIGMA_RANGE = (-100.0, 20.0)

#: The (data × kernel) squared-distance matrix is kept between steps up to this many float64
#: entries (1 GiB; the default 10 000 × 10 000 fits), else recomputed in row blocks each step.
CACHE_ELEMENTS = 1 << 27


@dataclass(frozen=True)
class FLSResult:
    """The feature likelihood score and its parts."""

    value: float  # 100 · exp(−2 (NLL_gen − NLL_baseline) / d)
    overfit_pct: float  # dgm-eval's fls_overfit: % of Gaussians favouring train − 50
    gen_nll: float  # mean NLL of the test points under the samples' mixture
    baseline_nll: float  # mean NLL of the test points under the baseline mixture


class _Mixture:
    """An isotropic Gaussian mixture centred on ``kernel`` (M × d) with one variance each,
    evaluated on ``data`` (N × d): ``E_ij = −D_ij / (2σ_j²) − (d/2) log σ_j² − log M``.

    (dgm-eval omits the constant ``−(d/2) log 2π``, which cancels in the score.) With
    ``cache``, the squared distances are kept for repeated passes when they fit in
    :data:`CACHE_ELEMENTS`; otherwise each pass recomputes them by row blocks.
    """

    def __init__(self, data: torch.Tensor, kernel: torch.Tensor, *, cache: bool = True) -> None:
        self.data, self.kernel = data, kernel
        self.dim = kernel.shape[1]
        self.log_m = math.log(kernel.shape[0])
        self.kernel_sq = squared_norms(kernel)
        self.data_sq = squared_norms(data)
        self.step = row_block(kernel.shape[0])
        self.cache: list[torch.Tensor] | None = None
        if cache and data.shape[0] * kernel.shape[0] <= CACHE_ELEMENTS:
            self.cache = [d for _, d in self._computed_blocks()]

    def _computed_blocks(self):
        n = self.data.shape[0]
        for start in range(0, n, self.step):
            stop = min(n, start + self.step)
            yield (
                start,
                squared_distances(
                    self.data[start:stop], self.kernel, self.data_sq[start:stop], self.kernel_sq
                ),
            )

    def blocks(self):
        """``(start, D_block)``: the squared distances of the data rows from ``start`` on."""
        if self.cache is None:
            yield from self._computed_blocks()
        else:
            yield from zip(range(0, self.data.shape[0], self.step), self.cache, strict=True)

    def exponents(self, dists: torch.Tensor, log_sigmas: torch.Tensor) -> torch.Tensor:
        """``E_ij`` (float64) of a block of squared distances."""
        import torch

        e = (-0.5 * dists) / torch.exp(log_sigmas)
        e -= (self.dim / 2) * log_sigmas
        e -= self.log_m
        return e

    def loss_and_gradient(self, log_sigmas: torch.Tensor) -> tuple[float, torch.Tensor]:
        """``L = −(1/N) Σ_i log Σ_j exp E_ij`` and ``∂L/∂s_j = −(1/N) Σ_i P_ij (D_ij / (2σ_j²)
        − d/2)``, ``P_ij = softmax_j E_ij``, ``s_j = log σ_j²`` (closed form, by row blocks)."""
        import torch

        n = self.data.shape[0]
        grad = torch.zeros_like(log_sigmas)
        total = 0.0
        inv = torch.exp(-log_sigmas)
        for _, d in self.blocks():
            e = self.exponents(d, log_sigmas)
            lse = torch.logsumexp(e, dim=1)
            total += float(lse.sum())
            p = torch.exp(e - lse[:, None])
            grad += (p * (0.5 * d * inv - self.dim / 2)).sum(dim=0)
        return -total / n, grad.neg_().div_(n)

    def mean_nll(self, log_sigmas: torch.Tensor) -> float:
        """``−(1/N) Σ_i log Σ_j exp E_ij``: the data's mean negative log-likelihood."""
        import torch

        total = 0.0
        for _, d in self.blocks():
            total += float(torch.logsumexp(self.exponents(d, log_sigmas), dim=1).sum())
        return -total / self.data.shape[0]

    def column_logsumexp(self, log_sigmas: torch.Tensor, rows: int) -> torch.Tensor:
        """``log Σ_{i < rows} exp E_ij`` for each Gaussian j (M,)."""
        import torch

        acc = torch.full_like(log_sigmas, -torch.inf)
        for start, d in self.blocks():
            if start >= rows:
                break
            part = self.exponents(d[: rows - start], log_sigmas)
            acc = torch.logaddexp(acc, torch.logsumexp(part, dim=0))
        return acc


def fit_log_sigmas(
    data: torch.Tensor, kernel: torch.Tensor, progress: Callable[[], None] | None = None
) -> torch.Tensor:
    """The log-variances ``s_j = log σ_j²`` (M,) of the Gaussians centred on ``kernel`` that
    minimise the mean NLL of ``data``: dgm-eval's ``optimize_sigmas`` (Adam from ``s = 0``,
    :data:`STEPS` full-batch steps, learning rate 0.5 then 0.05 after 50, ``s`` clamped to
    [−100, 20] after each step), with the gradient in closed form and float64."""
    import torch

    mixture = _Mixture(data, kernel)
    s = torch.zeros(kernel.shape[0], dtype=torch.float64, device=kernel.device, requires_grad=True)
    optim = torch.optim.Adam([s], lr=LEARNING_RATE)
    sched = torch.optim.lr_scheduler.MultiStepLR(optim, milestones=[MILESTONE], gamma=GAMMA)
    for _ in range(STEPS):
        _, grad = mixture.loss_and_gradient(s.detach())
        s.grad = grad
        optim.step()
        sched.step()
        with torch.no_grad():
            s.clamp_(*LOG_SIGMA_RANGE)
        if progress is not None:
            progress()
    return s.detach()


def normalise(*sets: torch.Tensor) -> list[torch.Tensor]:
    """Each set standardised by the mean and (unbiased) standard deviation of all of them
    together, per dimension (dgm-eval's ``preprocess_fls``); a constant dimension is an
    :class:`InputError`."""
    import torch

    joined = torch.cat(sets, dim=0)
    mean, std = joined.mean(dim=0), joined.std(dim=0)
    if bool((std == 0).any()):
        k = int((std == 0).nonzero()[0, 0])
        raise InputError(f"fls: feature dimension {k} is constant over all sets")
    return [(x - mean) / std for x in sets]


def feature_likelihood_score(
    train: ArrayLike,
    baseline: ArrayLike,
    test: ArrayLike,
    samples: ArrayLike,
    *,
    device: torch.device | str | None = None,
    progress: Callable[[], None] | None = None,
) -> FLSResult:
    """The feature likelihood score (FLS) of ``samples`` against a training set.

    A mixture of isotropic Gaussians centred on the samples, one variance each, is fitted to
    the training points (:func:`fit_log_sigmas`); its mean NLL of held-out test points,
    ``NLL_gen``, is compared with that of a mixture centred on ``baseline`` (other training
    points) fitted the same way, ``NLL_baseline``::

        FLS = 100 · exp(−2 (NLL_gen − NLL_baseline) / d).

    100 means the samples generalise like training data; memorised samples get tiny
    variances (they sit on training points) that give the test points little likelihood,
    lowering FLS. All sets are first standardised together (:func:`normalise`).

    ``overfit_pct`` is dgm-eval's ``fls_overfit``: with ``k = min(n_train, n_test)``, the
    percentage of sample Gaussians j with ``log Σ_{i<k} N(train_i) > log Σ_{i<k} N(test_i)``,
    minus 50 (0 when unbiased, positive when the mixture favours the training set).

    Notes
    -----
    dgm-eval's ``metrics/fls.py`` (from marcojira/fls), in float64 (dgm-eval: float32 on
    CUDA), with exact squared distances (:func:`~._common.squared_distances`; ``torch.cdist``
    leaves ~1e-13 on an exact copy, which ``exp(−100)`` bandwidths then magnify) and row
    blocks. marcojira/fld's later ``FLD`` differs (normalisation by the test set, an extra
    Gaussian at the mean, early stopping, a score ``100 (NLL − NLL_baseline)``); it is not
    what dgm-eval's published tables use.

    References
    ----------
    .. [1] M. Jiralerspong, J. Bose, I. Gemp, C. Qin, Y. Bachrach, G. Gidel, "Feature
       Likelihood Score: Evaluating the Generalization of Generative Models Using Samples",
       NeurIPS 2023.
    """
    import torch

    device = torch.device("cpu" if device is None else device)
    names = ("training", "baseline", "test", "sample")
    sets = [
        as_features(x, f"fls: {name} features", device)
        for x, name in zip((train, baseline, test, samples), names, strict=True)
    ]
    widths = {x.shape[1] for x in sets}
    if len(widths) != 1:
        raise InputError(
            "fls: feature widths differ: "
            + ", ".join(f"{n} {x.shape[1]}" for n, x in zip(names, sets, strict=True))
        )
    tr, base, te, gen = normalise(*sets)
    d = tr.shape[1]
    gen_s = fit_log_sigmas(tr, gen, progress)
    gen_nll = _Mixture(te, gen, cache=False).mean_nll(gen_s)
    base_s = fit_log_sigmas(tr, base, progress)
    base_nll = _Mixture(te, base, cache=False).mean_nll(base_s)
    value = 100.0 * math.exp(-2.0 * (gen_nll - base_nll) / d)
    k = min(te.shape[0], tr.shape[0])
    on_train = _Mixture(tr[:k], gen, cache=False).column_logsumexp(gen_s, k)
    on_test = _Mixture(te[:k], gen, cache=False).column_logsumexp(gen_s, k)
    overfit = int((on_train - on_test > 0).sum()) / gen.shape[0] * 100.0 - 50.0
    return FLSResult(value=value, overfit_pct=overfit, gen_nll=gen_nll, baseline_nll=base_nll)


class FeatureLikelihoodScore:
    """The ``fls`` metric: FLS with a seeded three-way split of the reference (the training
    set): training, baseline and held-out test parts."""

    name = "fls"
    higher_is_better = True
    report_panel = "neighbours"
    unit = "%"
    interpretation = (
        "likelihood of held-out reference points under Gaussians centred on the samples and "
        "fitted to the reference (training) set, against training points as centres (100); "
        "low values mean memorisation or poor coverage"
    )
    needs = (Need("features", "samples"), Need("features", "reference"))
    options: Mapping[str, Option] = {
        "test_fraction": Option(
            1 / 3,
            "fraction of the reference held out as the test set (seeded); the rest gives the "
            "training and baseline halves",
            low=0.0,
            high=1.0,
            low_exclusive=True,
            high_exclusive=True,
        ),
        "max_n": Option(
            10000, "size of each of the four sets at most (dgm-eval's reduced_n)", low=2
        ),
    }
    fields: Mapping[str, str] = {
        "overfit_pct": "percentage of sample Gaussians more likely on training than on test "
        "points, minus 50 (dgm-eval's fls_overfit; > 0 means memorisation)",
        "gen_nll": "mean NLL per test point under the samples' mixture (nats, unnormalised)",
        "baseline_nll": "mean NLL per test point under the baseline mixture",
        "n": "points in each of the training, baseline, test and sample sets",
    }
    uncertainty = None

    def compute(
        self, inputs: MetricInputs, *, test_fraction: float, max_n: int
    ) -> Mapping[str, Any]:
        """``{"value": FLS, ...}`` (:func:`feature_likelihood_score`) on sets drawn as dgm-eval
        draws them: ``n = min(max_n, n_train // 2, n_test, n_samples)`` test points and
        samples, and 2n training points split into training and baseline halves, all by
        seeded permutations (``inputs.seed``).

        The held-out test part comes from the reference itself, which stands for the
        training set: samples that copy points of that part sit on test points and *raise*
        FLS. The default ``test_fraction = 1/3`` makes the training, baseline and test parts
        equal, as dgm-eval draws its four sets of one size ``reduced_n``.
        """
        import torch

        from geneval.plugin import progress_bar

        samples, reference = inputs.features("samples"), inputs.features("reference")
        train_idx, test_idx = split_reference(
            reference.shape[0], test_fraction, inputs.seed, metric="fls", min_each=2
        )
        n = min(max_n, train_idx.numel() // 2, test_idx.numel(), samples.shape[0])
        if n < 2:
            raise InputError(
                f"fls needs at least 2 points in each set: {samples.shape[0]} samples and "
                f"{reference.shape[0]} reference points give {n}"
            )
        gen = torch.Generator().manual_seed((int(inputs.seed) + 1) % 2**63)
        test_pick = test_idx[torch.randperm(test_idx.numel(), generator=gen)[:n]]
        sample_pick = torch.randperm(samples.shape[0], generator=gen)[:n]
        train_pick = train_idx[torch.randperm(train_idx.numel(), generator=gen)[: 2 * n]]
        with progress_bar(total=2 * STEPS, desc="fls") as bar:
            result = feature_likelihood_score(
                reference[train_pick[:n]],
                reference[train_pick[n:]],
                reference[test_pick],
                samples[sample_pick],
                device=inputs.device,
                progress=lambda: bar.update(1),
            )
        return {
            "value": result.value,
            "overfit_pct": result.overfit_pct,
            "gen_nll": result.gen_nll,
            "baseline_nll": result.baseline_nll,
            "n": n,
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(FeatureLikelihoodScore())
