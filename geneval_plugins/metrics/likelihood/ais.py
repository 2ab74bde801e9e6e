"""Metric ``ais``: annealed importance sampling of log Z, then the test log-likelihood
(Neal 2001; Salakhutdinov & Murray 2008).

M independent runs start from exact draws x_0 of a tractable base f_0 / Z_0 and move along a
path of densities f_β, 0 = β_0 < β_1 < … < β_T = 1, ending at the model's unnormalised marginal
f_1 = exp(−E(x)):

    log w = Σ_{t=1}^{T} [log f_{β_t}(x_{t−1}) − log f_{β_{t−1}}(x_{t−1})],
    x_t ~ T_{β_t}(· | x_{t−1})   (a kernel that leaves f_{β_t} invariant),

    Ẑ = Z_0 · (1/M) Σ_m w_m,   value = (1/n) Σ_i [−E(x_i)] − log Ẑ

over the n reference images. Ẑ is unbiased for Z, so log Ẑ is biased low (E log Ẑ ≤ log Z by
Jensen's inequality) and the reported log-likelihood is biased *high*: an AIS number can look
better than the truth when the schedule is too short or the kernels mix badly. Trust it when
``log_z_std`` is small (≲ 0.1 nats) and, where an exact log Z exists (``log_z_exact``), check
the two agree. The interval [``log_z_low``, ``log_z_high``] = log(Ẑ ∓ 3σ̂_Ẑ) follows
Salakhutdinov & Murray (2008, §4.1); it cannot reveal a bias that no run has escaped.

References
----------
.. [1] R. M. Neal, "Annealed importance sampling", Statistics and Computing 11, 2001.
.. [2] R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep belief networks",
   ICML 2008 (the schedule and the ±3σ interval).
.. [3] Y. Wu, Y. Burda, R. Salakhutdinov, R. Grosse, "On the quantitative analysis of
   decoder-based generative models", ICLR 2017 (the sigmoid schedule).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    AnnealingPath,
    InputError,
    MetricInputs,
    Need,
    Option,
    SupportsAnnealing,
    SupportsEnergy,
    SupportsLogZ,
    hookimpl,
    progress_bar,
)
from geneval_plugins.metrics.likelihood.common import (
    LIKELIHOOD_FIELDS,
    check_images,
    first_images,
    logmeanexp,
    space_warnings,
    summarize_log_likelihoods,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

#: Schedules of inverse temperatures ``ais`` offers.
SCHEDULES = ("piecewise", "sigmoid", "linear")
#: Salakhutdinov & Murray (2008, §4.1): (start, end, intervals) of the piecewise-linear schedule.
_PIECEWISE = ((0.0, 0.5, 500), (0.5, 0.9, 4000), (0.9, 1.0, 10000))
#: Its number of inverse temperatures, β_0 = 0 … β_T = 1 (14 500 steps).
DEFAULT_NUM_BETAS = 1 + sum(n for _, _, n in _PIECEWISE)
#: δ of the sigmoid schedule (Wu et al. 2017).
SIGMOID_DELTA = 4.0


def piecewise_schedule(num_betas: int = DEFAULT_NUM_BETAS) -> np.ndarray:
    """The schedule of Salakhutdinov & Murray (2008): uniform steps of 1e-3 on [0, 0.5],
    1e-4 on [0.5, 0.9] and 1e-5 on [0.9, 1] (14 501 βs); another ``num_betas`` keeps the three
    segments' shares of the steps (500 : 4000 : 10 000)."""
    import numpy as np

    steps = num_betas - 1
    total = DEFAULT_NUM_BETAS - 1
    if steps < len(_PIECEWISE):
        raise InputError(f"ais: the piecewise schedule needs at least 4 betas, got {num_betas}")
    counts = [max(1, round(steps * n / total)) for _, _, n in _PIECEWISE[:-1]]
    counts.append(steps - sum(counts))
    parts = [
        np.linspace(lo, hi, count + 1)[:-1]
        for (lo, hi, _), count in zip(_PIECEWISE, counts, strict=True)
    ]
    return np.concatenate([*parts, [1.0]])


def sigmoid_schedule(
    num_betas: int = DEFAULT_NUM_BETAS, delta: float = SIGMOID_DELTA
) -> np.ndarray:
    """β_t = (σ(δ(2t/T − 1)) − σ(−δ)) / (σ(δ) − σ(−δ)), t = 0 … T (Wu et al. 2017, App. A):
    dense near both ends of the path."""
    import numpy as np

    if num_betas < 2:
        raise InputError(f"ais: a schedule needs at least 2 betas, got {num_betas}")
    x = delta * (2 * np.linspace(0.0, 1.0, num_betas) - 1)
    s = 1 / (1 + np.exp(-x))
    lo, hi = 1 / (1 + math.exp(delta)), 1 / (1 + math.exp(-delta))
    betas = (s - lo) / (hi - lo)
    betas[0], betas[-1] = 0.0, 1.0
    return betas


def annealing_schedule(kind: str, num_betas: int = 0) -> np.ndarray:
    """The inverse temperatures of a schedule ``kind`` (``piecewise``, ``sigmoid``, ``linear``);
    ``num_betas`` = 0 means :data:`DEFAULT_NUM_BETAS`."""
    import numpy as np

    num_betas = num_betas or DEFAULT_NUM_BETAS
    if kind == "piecewise":
        return piecewise_schedule(num_betas)
    if kind == "sigmoid":
        return sigmoid_schedule(num_betas)
    if kind == "linear":
        if num_betas < 2:
            raise InputError(f"ais: a schedule needs at least 2 betas, got {num_betas}")
        return np.linspace(0.0, 1.0, num_betas)
    raise InputError(f"ais: unknown schedule {kind!r} ({', '.join(SCHEDULES)})")


def ais_log_weights(
    path: AnnealingPath,
    betas: np.ndarray,
    *,
    num_runs: int,
    generator: torch.Generator,
    steps_per_beta: int = 1,
) -> torch.Tensor:
    """The log importance weights (M,) float64 of ``num_runs`` AIS runs along ``path``.

    log w = Σ_t [log f_{β_t}(x_{t−1}) − log f_{β_{t−1}}(x_{t−1})], then x_t from
    ``steps_per_beta`` transitions at β_t (Neal 2001, §2); the runs are one batch. No
    transition follows the last increment (it would not change the weight).
    """
    import torch

    states = path.sample_base(num_runs, generator)
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=states.device)
    betas = [float(b) for b in betas]
    with progress_bar(total=len(betas) - 1, desc="ais", unit="β") as bar:
        for t in range(1, len(betas)):
            log_w += (
                path.log_density(states, betas[t]) - path.log_density(states, betas[t - 1])
            ).to(torch.float64)
            if t < len(betas) - 1:
                for _ in range(steps_per_beta):
                    states = path.transition(states, betas[t], generator)
            if t % 100 == 0 or t == len(betas) - 1:
                bar.update(t - bar.n)
    return log_w


@dataclass(frozen=True)
class PartitionEstimate:
    """log Ẑ from AIS log-weights, its standard deviation and the ±3σ̂ interval.

    ``log_z_low`` is ``None`` when Ẑ − 3σ̂_Ẑ ≤ 0 (the interval reaches −∞).
    """

    log_z: float
    log_z_std: float
    log_z_low: float | None
    log_z_high: float
    num_runs: int


def partition_estimate(log_weights: torch.Tensor, log_z_base: float) -> PartitionEstimate:
    """log Ẑ = log Z_0 + logmeanexp(log w), with the spread of the weights.

    σ̂_Ẑ = Z_0 · sd(w) / √M is the standard deviation of the mean weight (n − 1 denominator);
    r = σ̂_Ẑ / Ẑ is the delta-method standard deviation of log Ẑ (``log_z_std``), and
    [log(Ẑ − 3σ̂_Ẑ), log(Ẑ + 3σ̂_Ẑ)] = log Ẑ + [log(1 − 3r), log(1 + 3r)] (Salakhutdinov &
    Murray 2008, §4.1), computed from w / max w so nothing overflows.
    """
    import torch

    log_w = log_weights.detach().to(torch.float64).cpu()
    m = log_w.numel()
    if m < 2:
        raise InputError(f"ais: the spread of the weights needs at least 2 runs, got {m}")
    log_z = log_z_base + float(logmeanexp(log_w, dim=0))
    scaled = torch.exp(log_w - log_w.max())
    ratio = float(scaled.std() / (math.sqrt(m) * scaled.mean()))
    low = log_z + math.log1p(-3 * ratio) if 3 * ratio < 1 else None
    return PartitionEstimate(
        log_z=log_z,
        log_z_std=ratio,
        log_z_low=low,
        log_z_high=log_z + math.log1p(3 * ratio),
        num_runs=m,
    )


def exact_log_partition(model: Any) -> float | None:
    """The model's exact log Z when it offers one (``SupportsLogZ``) and it is tractable."""
    if not isinstance(model, SupportsLogZ):
        return None
    try:
        return float(model.log_z())
    except (InputError, ValueError, NotImplementedError):
        return None


class AnnealedImportanceSampling:
    """``ais``: log-likelihood of the reference images with log Z estimated by AIS."""

    name = "ais"
    higher_is_better = True
    interpretation = (
        "mean log-likelihood (nats) of the reference images, −E(x) − log Ẑ with log Z from "
        "annealed importance sampling; biased high when log Ẑ is too low"
    )
    needs = (
        Need("model", capabilities=(SupportsEnergy, SupportsAnnealing)),
        Need("images", "reference"),
    )
    options: Mapping[str, Option] = {
        "num_runs": Option(100, "independent AIS runs, run in parallel as one batch", low=2),
        "schedule": Option(
            "piecewise",
            "inverse temperatures: piecewise (Salakhutdinov & Murray 2008), sigmoid "
            "(Wu et al. 2017) or linear",
            choices=SCHEDULES,
        ),
        "num_betas": Option(
            0, f"inverse temperatures incl. 0 and 1; 0 = {DEFAULT_NUM_BETAS}", low=0
        ),
        "steps_per_beta": Option(1, "transitions at each intermediate β", low=1),
        "batch_size": Option(256, "images per energy evaluation", low=1),
        "max_images": Option(0, "use only the first N reference images (0 = all)", low=0),
    }
    fields: Mapping[str, str] = {
        **LIKELIHOOD_FIELDS,
        "log_z": "AIS estimate log Ẑ of the log partition function",
        "log_z_std": "standard deviation of log Ẑ from the spread of the AIS weights",
        "log_z_low": "log(Ẑ − 3σ̂_Ẑ); null when the interval reaches −∞",
        "log_z_high": "log(Ẑ + 3σ̂_Ẑ)",
        "log_z_exact": "the model's exact log Z where it is tractable, else null",
        "num_betas": "inverse temperatures of the schedule, β = 0 and 1 included",
    }
    uncertainty = "std_err"
    unit = "nats/image"

    def compute(
        self,
        inputs: MetricInputs,
        *,
        num_runs: int,
        schedule: str,
        num_betas: int,
        steps_per_beta: int,
        batch_size: int,
        max_images: int,
    ) -> Mapping[str, Any]:
        """log Ẑ by AIS along the model's path, then mean −E(x) − log Ẑ over the reference."""
        import torch

        model = inputs.model
        images = first_images(inputs.images("reference"), max_images)
        check_images(images, shape=tuple(model.image_shape), what="reference images", metric="ais")
        device = getattr(model, "device", inputs.device)
        betas = annealing_schedule(schedule, num_betas)
        generator = torch.Generator(device=device).manual_seed(int(inputs.seed))
        with torch.no_grad():
            path = model.annealing_path(images.to(device))
            log_w = ais_log_weights(
                path, betas, num_runs=num_runs, generator=generator, steps_per_beta=steps_per_beta
            )
            estimate = partition_estimate(log_w, path.log_z_base)
            energies = torch.cat(
                [
                    model.energy(images[s : s + batch_size].to(device)).to(torch.float64).cpu()
                    for s in range(0, images.shape[0], batch_size)
                ]
            )
        space = model.likelihood_space
        warnings = space_warnings(space)
        if estimate.log_z_low is None or estimate.log_z_std > 0.1:
            warnings.append(
                f"AIS weights are spread (log_z_std = {estimate.log_z_std:.3g}): log Ẑ is likely "
                "too low and the log-likelihood too high; use more betas or runs"
            )
        return {
            **summarize_log_likelihoods(
                -energies - estimate.log_z, space=space, dims=math.prod(images.shape[1:])
            ),
            "log_z": estimate.log_z,
            "log_z_std": estimate.log_z_std,
            "log_z_low": estimate.log_z_low,
            "log_z_high": estimate.log_z_high,
            "log_z_exact": exact_log_partition(model),
            "num_betas": len(betas),
            "warnings": warnings,
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(AnnealedImportanceSampling())
