"""Metric ``ode_ll``: the log-likelihood of the reference images under a score model's
probability-flow ODE (Song et al. 2021, "Score-Based Generative Modeling through SDEs", §4.3
and App. D.2), for models with the ``probability_flow`` capability.

log p_ε(x) = log p_T(x_T) + ∫_ε^T ∇·f̃(x_t, t) dt, f̃ = f − ½g² s_θ, solved by an adaptive
Dormand–Prince RK4(5) with one step-size controller per image
(:mod:`~geneval_plugins.metrics.likelihood.pf_ode`). The divergence is exact (all D
dimensions, by vector-Jacobian products) or Hutchinson's estimate with ``probes`` Rademacher
or Gaussian probes fixed per solve; ``divergence=auto`` is exact up to D = 1024.

Spaces and units. An 8-bit image x ∈ {0, …, 255}/255 is dequantised as y = (255x + u)/256,
u ~ U[0, 1)^D (``dequantization_draws`` draws per image), mapped to the model's space
(x_model = s·y + c, e.g. 2y − 1) and

    value = mean_i mean_k [log p_ε(s·y_ik + c) + D ln|s|] − D ln 256,

a lower bound (Jensen, Theis et al. 2016) on the mean log-probability of the 8-bit images:
the ``discrete-8bit`` space. bits/dim = −value/(D ln 2). score_sde's ``likelihood.py`` adds
an "offset" 7 − inverse_scaler(−1) to −log p/(D ln 2) computed in the model's space: for data
scaled to [−1, 1] the offset 7 is exactly 8 (the −D ln 256 of dequantisation) minus 1 (the
D ln 2 of the map 2y − 1), so the two conventions give the same number, comparable with the
2.99 bits/dim that paper reports on CIFAR-10 (with uniform dequantisation).

The ODE starts at t = ε, so the value is the likelihood of the data perturbed to ε: Gaussian
noise of σ(ε) (about σ_min for a VE SDE). Where that noise exceeds an 8-bit bin (1/256 in image
units) a warning says so: the number is then that of smoothed data (e.g. an energy trained at a
smallest level of 0.1).

``std_err`` is the standard error of the mean over images of the per-image values, each the
mean over its dequantisation draws (with Hutchinson, over its probes too): it includes the
dequantisation and probe noise. ``nfe`` is the mean number of drift evaluations per image
(one evaluation of the exact divergence costs D vector-Jacobian products on top).

Under ``--nproc`` each rank solves its own whole blocks of ``batch_size`` images, with noise
drawn per block from the seed and the block's first image, and the per-image values are
gathered: no rank waits on another's adaptive steps, and the result equals one process's.

References
----------
.. [1] Y. Song et al., "Score-Based Generative Modeling through Stochastic Differential
   Equations", ICLR 2021.
.. [2] L. Theis, A. van den Oord, M. Bethge, "A note on the evaluation of generative models",
   ICLR 2016.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    InputError,
    MetricInputs,
    Need,
    Option,
    SupportsProbabilityFlow,
    hookimpl,
    progress_bar,
)
from geneval_plugins.metrics.likelihood.common import (
    LIKELIHOOD_FIELDS,
    check_images,
    first_images,
    summarize_log_likelihoods,
)

if TYPE_CHECKING:
    import torch

    from geneval.plugin import ProbabilityFlowSDE

#: Up to this D, ``divergence=auto`` takes the exact divergence.
EXACT_MAX_DIMS = 1024


def dequantize(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """y = (round(255x) + u)/256, u ~ U[0, 1) (drawn on the CPU from ``generator``): uniform
    dequantisation of 8-bit images x in [0, 1] onto the 256 bins of [0, 1)."""
    import torch

    u = torch.rand(images.shape, generator=generator).to(images.device)
    return (torch.round(images.clamp(0, 1) * 255) + u) / 256


def image_log_likelihoods(
    model: SupportsProbabilityFlow,
    sde: ProbabilityFlowSDE,
    images: torch.Tensor,
    *,
    generator: torch.Generator,
    draws: int,
    exact: bool,
    probes: int,
    noise: str,
    rtol: float,
    atol: float,
    on_done: Callable[[int], Any] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-image dequantised log-likelihood in the discrete-8bit space (nats, float64) and NFE
    (mean over draws) of a block of images: for each draw k, y_k = :func:`dequantize` then
    (Hutchinson) ``probes`` probes, from ``generator`` in that order. ``on_done(k)`` is called
    as k more images finish a solve."""
    import torch

    from geneval_plugins.metrics.likelihood.pf_ode import draw_probes, solve_probability_flow

    dims = math.prod(images.shape[1:])
    jacobian = dims * math.log(abs(sde.data_scale))
    total = torch.zeros(images.shape[0], dtype=torch.float64)
    nfe = torch.zeros(images.shape[0], dtype=torch.float64)
    for _ in range(draws):
        y = dequantize(images, generator)
        v = None
        if not exact:
            v = draw_probes((probes, *images.shape), noise, generator, images.device)
        solution = solve_probability_flow(
            sde,
            model.flow_score,
            y * sde.data_scale + sde.data_shift,
            probes=v,
            rtol=rtol,
            atol=atol,
            on_done=on_done,
        )
        total += solution.log_likelihood.cpu() + jacobian - dims * math.log(256.0)
        nfe += solution.nfe.cpu().to(torch.float64)
    return total / draws, nfe / draws


class ProbabilityFlowLogLikelihood:
    """``ode_ll``: mean log-likelihood of the reference images under the probability-flow ODE."""

    name = "ode_ll"
    higher_is_better = True
    interpretation = (
        "mean log-likelihood (nats) of the dequantised reference images under the model's "
        "probability-flow ODE: a lower bound on the 8-bit log-probability"
    )
    needs = (
        Need("model", capabilities=(SupportsProbabilityFlow,)),
        Need("images", "reference"),
    )
    options: Mapping[str, Option] = {
        "divergence": Option(
            "auto",
            f"exact (all D dimensions) or hutchinson; auto: exact up to D = {EXACT_MAX_DIMS}",
            choices=("auto", "exact", "hutchinson"),
        ),
        "probes": Option(1, "Hutchinson probes per solve, fixed for the solve", low=1),
        "probe_noise": Option(
            "rademacher", "Hutchinson probe distribution", choices=("rademacher", "gaussian")
        ),
        "rtol": Option(1e-5, "relative tolerance of the RK45 solver", low=0.0, low_exclusive=True),
        "atol": Option(1e-5, "absolute tolerance of the RK45 solver", low=0.0, low_exclusive=True),
        "dequantization_draws": Option(1, "uniform dequantisation draws per image", low=1),
        "batch_size": Option(64, "images solved together", low=1),
        "max_images": Option(0, "use only the first N reference images (0 = all)", low=0),
    }
    fields: Mapping[str, str] = {
        **LIKELIHOOD_FIELDS,
        "nfe": "mean number of drift evaluations per image (per dequantisation draw)",
        "nfe_max": "largest number of drift evaluations of an image",
        "divergence_used": "exact or hutchinson",
        "sde": "the model's SDE: vp, subvp or ve",
        "convention": "the solver, divergence and dequantisation the value rests on",
    }
    uncertainty = "std_err"
    unit = "nats/image"

    def compute(
        self,
        inputs: MetricInputs,
        *,
        divergence: str,
        probes: int,
        probe_noise: str,
        rtol: float,
        atol: float,
        dequantization_draws: int,
        batch_size: int,
        max_images: int,
    ) -> Mapping[str, Any]:
        """Mean, standard error, bits/dim and NFE of the per-image ODE log-likelihoods."""
        import torch

        from geneval.plugin import map_shards, sample_block_seed

        model = inputs.model
        family = getattr(model, "family", type(model).__name__)
        sde = getattr(model, "probability_flow", None)
        if sde is None:
            raise InputError(
                f"ode_ll: model {family!r} does not offer the capability 'probability_flow' "
                "(its score has no continuous-time SDE)"
            )
        images = first_images(inputs.images("reference"), max_images)
        check_images(
            images, shape=tuple(model.image_shape), what="reference images", metric="ode_ll"
        )
        dims = math.prod(images.shape[1:])
        exact = divergence == "exact" or (divergence == "auto" and dims <= EXACT_MAX_DIMS)
        device = getattr(model, "device", images.device)

        def solve_shard(start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
            values, nfes = [], []
            # one tick per image and dequantisation draw, as each image's solve ends
            total = (stop - start) * dequantization_draws
            with progress_bar(total=total, desc="ode_ll", unit="img") as bar:
                for lo in range(start, stop, batch_size):
                    block = images[lo : min(lo + batch_size, stop)].to(device, torch.float32)
                    generator = torch.Generator().manual_seed(sample_block_seed(inputs.seed, lo))
                    value, nfe = image_log_likelihoods(
                        model,
                        sde,
                        block,
                        generator=generator,
                        draws=dequantization_draws,
                        exact=exact,
                        probes=probes,
                        noise=probe_noise,
                        rtol=rtol,
                        atol=atol,
                        on_done=bar.update,
                    )
                    values.append(value)
                    nfes.append(nfe)
            empty = torch.zeros(0, dtype=torch.float64)
            return (torch.cat(values) if values else empty, torch.cat(nfes) if nfes else empty)

        # each rank solves its own blocks; no rank waits on another's adaptive steps
        values, nfes = map_shards(images.shape[0], batch_size, solve_shard)
        summary = summarize_log_likelihoods(values, space="discrete-8bit", dims=dims)
        # the noise of p_ε in image units, against the width 1/256 of an 8-bit bin
        noise = float(sde.marginal_std(torch.tensor(float(sde.eps)))) / abs(sde.data_scale)
        warnings = []
        if noise > 1 / 256:
            warnings.append(
                f"the ODE starts at t = {sde.eps:g}, where the model's data carry Gaussian noise "
                f"of σ = {noise:.3g} (image units), more than an 8-bit bin (1/256): the value is "
                "the likelihood of that smoothed data, not of the images"
            )
        method = "exact" if exact else f"hutchinson ({probes} {probe_noise} probe(s))"
        return {
            **summary,
            "nfe": float(nfes.mean()),
            "nfe_max": float(nfes.max()),
            "divergence_used": "exact" if exact else "hutchinson",
            "sde": sde.kind,
            "warnings": warnings,
            "convention": (
                f"probability-flow ODE ({sde.kind} SDE, t from {sde.eps:g} to {sde.t_end:g}), "
                f"RK45 rtol={rtol:g} atol={atol:g}, divergence {method}; uniform "
                f"dequantisation ({dequantization_draws} draw(s)/image): a lower bound on the "
                "discrete-8bit log-likelihood; score_sde's offset 7 − inverse_scaler(−1) bits/dim "
                "is the same −D·ln 256 less the log-Jacobian of its [0, 1] → [−1, 1] map"
            ),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    """Register the ``ode_ll`` metric."""
    register(ProbabilityFlowLogLikelihood())
