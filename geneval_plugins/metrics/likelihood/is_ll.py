"""Metric ``is_ll``: the importance-sampled log-likelihood of the reference images under a
latent-variable model (Rezende et al. 2014, App. E; Burda et al. 2016, the IWAE bound).

log p̂(x) = logmeanexp_k [log p(x, z_k) − log q(z_k | x)],  z_k ~ q(z | x), k = 1 … K,

with q the model's proposal (a VAE's encoder) or, with ``proposal=prior``, the prior p(z)
(likelihood weighting: log p̂(x) = logmeanexp_k log p(x | z_k)). p̂(x) is unbiased for p(x), so
log p̂(x) is biased low: E log p̂(x) ≤ log p(x), rising monotonically to it as K grows (Burda et
al. 2016, Thm 1), and at K = 1 its expectation is the ELBO. Trust it when the effective sample
size (``ess``) is a sizeable fraction of K; when a few draws carry all the weight (a proposal
much narrower than, or away from, the posterior, and always for likelihood weighting in more
than a few latent dimensions) the number is too low by an unknown amount.

References
----------
.. [1] D. J. Rezende, S. Mohamed, D. Wierstra, "Stochastic backpropagation and approximate
   inference in deep generative models", ICML 2014, App. E.
.. [2] Y. Burda, R. Grosse, R. Salakhutdinov, "Importance weighted autoencoders", ICLR 2016.
.. [3] A. Kong, "A note on importance sampling using standardized weights", 1992 (the ESS).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    MetricInputs,
    Need,
    Option,
    SupportsLatentProposal,
    hookimpl,
    progress_bar,
)
from geneval_plugins.metrics.likelihood.common import (
    LIKELIHOOD_FIELDS,
    check_images,
    first_images,
    space_warnings,
    summarize_log_likelihoods,
)

if TYPE_CHECKING:
    import torch

#: The proposals ``is_ll`` draws from: the model's q(z | x), or the prior p(z).
PROPOSALS = ("posterior", "prior")

#: The note a likelihood-weighting result carries.
PRIOR_PROPOSAL_WARNING = (
    "proposal=prior (likelihood weighting) has a very high variance unless the posterior is "
    "close to the prior: the estimate is biased low"
)


@dataclass(frozen=True)
class ImportanceSampledLikelihood:
    """Per-image importance-sampled log-likelihoods (nats, float64) and effective sample sizes
    as a fraction of the number of draws."""

    log_likelihood: torch.Tensor
    ess: torch.Tensor


def importance_sampled_log_likelihood(
    model: SupportsLatentProposal,
    images: torch.Tensor,
    *,
    k: int,
    generator: torch.Generator,
    proposal: str = "posterior",
    k_batch: int = 1000,
) -> ImportanceSampledLikelihood:
    """log p̂(x) = logmeanexp_k w_k, w_k = log p(x, z_k) − log q(z_k | x), z_k ~ q(z | x).

    Draws are taken ``k_batch`` at a time; the float64 log-sum-exps of w and of 2w are merged
    across batches, so memory does not grow with ``k``. The effective sample size (Kong 1992)
    is ESS = (Σ_k e^{w_k})² / Σ_k e^{2 w_k}, reported as ESS / k ∈ [1/k, 1].

    Parameters
    ----------
    model
        A :class:`geneval.capabilities.SupportsLatentProposal` model.
    images
        (N, C, H, W) images in the model's shape, on its device.
    k
        Importance samples per image (Burda et al. 2016 evaluate with 5000).
    generator
        The random generator every draw uses.
    proposal
        ``posterior`` (the model's q(z | x)) or ``prior`` (likelihood weighting).
    k_batch
        Draws per call of the model.

    Returns
    -------
    ImportanceSampledLikelihood
        ``log_likelihood`` (N,) and ``ess`` (N,), float64.

    Notes
    -----
    A stochastic lower bound: E log p̂ ≤ log p(x), equal to the ELBO at k = 1 (Burda et al.
    2016). When ESS / k is tiny the estimate rests on a few draws and is too low.
    """
    import torch

    if proposal not in PROPOSALS:
        raise ValueError(f"unknown proposal {proposal!r} ({', '.join(PROPOSALS)})")
    n = images.shape[0]
    sum_w = torch.full((n,), -math.inf, dtype=torch.float64, device=images.device)
    sum_w2 = sum_w.clone()
    for start in range(0, k, k_batch):
        draws = min(k_batch, k - start)
        if proposal == "posterior":
            latents, log_q = model.sample_posterior(images, draws, generator=generator)
        else:
            latents, log_q = model.sample_prior(n, draws, generator=generator)
        log_w = model.log_joint(images, latents).to(torch.float64) - log_q.to(torch.float64)
        log_w = log_w.to(sum_w.device)
        sum_w = torch.logaddexp(sum_w, torch.logsumexp(log_w, dim=0))
        sum_w2 = torch.logaddexp(sum_w2, torch.logsumexp(2 * log_w, dim=0))
    return ImportanceSampledLikelihood(
        log_likelihood=sum_w - math.log(k), ess=torch.exp(2 * sum_w - sum_w2) / k
    )


class ImportanceSampledLogLikelihood:
    """``is_ll``: importance-sampled log p(x) of the reference images (IWAE-style estimate)."""

    name = "is_ll"
    higher_is_better = True
    interpretation = (
        "mean importance-sampled log-likelihood (nats) of the reference images; a stochastic "
        "lower bound that tightens as k grows"
    )
    needs = (
        Need("model", capabilities=(SupportsLatentProposal,)),
        Need("images", "reference"),
    )
    options: Mapping[str, Option] = {
        "k": Option(5000, "importance samples per image", low=1),
        "proposal": Option(
            "posterior",
            "posterior: the model's q(z|x); prior: likelihood weighting",
            choices=PROPOSALS,
        ),
        "k_batch": Option(1000, "importance samples per model call", low=1),
        "batch_size": Option(64, "images per batch", low=1),
        "max_images": Option(0, "use only the first N reference images (0 = all)", low=0),
    }
    fields: Mapping[str, str] = {
        **LIKELIHOOD_FIELDS,
        "ess": "mean effective sample size per image, as a fraction of k",
    }
    uncertainty = "std_err"
    unit = "nats/image"

    def compute(
        self,
        inputs: MetricInputs,
        *,
        k: int,
        proposal: str,
        k_batch: int,
        batch_size: int,
        max_images: int,
    ) -> Mapping[str, Any]:
        """Mean of log p̂(x) over the reference images, with its standard error and the ESS."""
        import torch

        model = inputs.model
        images = first_images(inputs.images("reference"), max_images)
        check_images(
            images, shape=tuple(model.image_shape), what="reference images", metric="is_ll"
        )
        device = getattr(model, "device", inputs.device)
        generator = torch.Generator(device=device).manual_seed(int(inputs.seed))
        values, ess = [], []
        with progress_bar(total=images.shape[0], desc="is_ll", unit="img") as bar:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(device)
                with torch.no_grad():
                    result = importance_sampled_log_likelihood(
                        model, batch, k=k, generator=generator, proposal=proposal, k_batch=k_batch
                    )
                values.append(result.log_likelihood.cpu())
                ess.append(result.ess.cpu())
                bar.update(batch.shape[0])
        space = model.likelihood_space
        mean_ess = float(torch.cat(ess).mean())
        warnings = space_warnings(space)
        if proposal == "prior":
            warnings.append(PRIOR_PROPOSAL_WARNING)
        if mean_ess * k < 10:
            warnings.append(
                f"effective sample size {mean_ess * k:.3g} of k = {k} draws per image: "
                "the estimate rests on a few draws and is biased low"
            )
        return {
            **summarize_log_likelihoods(
                torch.cat(values), space=space, dims=math.prod(images.shape[1:])
            ),
            "ess": mean_ess,
            "warnings": warnings,
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(ImportanceSampledLogLikelihood())
