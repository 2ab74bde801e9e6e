"""Metric ``nll``: negative log-likelihood bound of the reference images, in bits per dimension.

For a model with the ``elbo`` capability (e.g. ``ddpm``) the value is the mean over the
reference images of the negative ELBO, −log p(x) ≤ L_T + Σ_{t≥2} L_{t−1} + L_0 (Ho et al. 2020,
eq. 5), with the discretised Gaussian decoder of eq. 13, divided by D·ln 2 (D = C·H·W). Lower is
better; as a bound it over-states the true NLL.

The full bound costs T network passes per image (T = 1000: minutes even for 8×8 digits on a
CPU), so by default the T − 1 KL terms are estimated with ``timesteps`` = 100 strata and one
uniformly drawn t per stratum and image: an unbiased estimate whose Monte-Carlo noise is part of
the reported ``std_err`` (the standard error of the mean over images). ``timesteps=0`` sums all
terms exactly.

Any model with the ``elbo`` capability is scored the same way: a VAE's bound is
E_q[log p(x | z)] − KL(q(z | x) ‖ p(z)) with its decoder's likelihood (Kingma & Welling 2014),
one posterior draw per image. ``space`` says what the bound is a probability of; options the
model's bound does not take (a VAE takes none) must stay at their defaults.

``std_err`` is the standard error of the mean over images, in bits/dim like ``value``;
``std`` is the same number, kept under its earlier name so existing gates stay valid.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020,
   eq. 5, §3.3 and Table 2 (NLL in bits/dim).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from geneval.plugin import (
    InputError,
    MetricInputs,
    Need,
    Option,
    SupportsELBO,
    hookimpl,
    progress_bar,
)
from geneval_plugins.metrics.likelihood.common import mean_with_std_err, summarize_log_likelihoods
from geneval_plugins.models.elbo_options import ELBO_OPTIONS


class NegativeLogLikelihood:
    """``nll``: mean negative ELBO of the reference images in bits/dim (lower is better)."""

    name = "nll"
    higher_is_better = False
    interpretation = "upper bound on the negative log-likelihood of the reference images"
    needs = (
        Need(kind="model", capabilities=(SupportsELBO,)),
        Need(kind="images", source="reference"),
    )
    #: The DDPM's ``elbo_options`` (passed on to any model whose ``elbo_options`` declares
    #: them; another model must leave them at their defaults), then the metric's own.
    options: Mapping[str, Option] = {
        **ELBO_OPTIONS,
        "batch_size": Option(256, "images per batch", low=1),
        "max_images": Option(0, "use only the first N reference images (0 = all)", low=0),
    }
    fields: Mapping[str, str] = {
        "std_err": "standard error of the mean over images in bits/dim (includes Monte-Carlo "
        "noise)",
        "std": "alias of std_err, kept for existing gates",
        "n": "number of reference images",
        "log_likelihood": "mean ELBO in nats per image",
        "space": "the likelihood space of the bound",
        "unit": "bits/dim",
    }
    uncertainty = "std_err"
    unit = "bits/dim"

    def compute(self, inputs: MetricInputs, **options: Any) -> Mapping[str, Any]:
        """Mean, standard error and count of the per-image negative ELBO in bits/dim.

        ``std_err`` (alias ``std``) is the standard error of the mean: the standard deviation of
        the per-image estimates over √n (it includes the Monte-Carlo noise when ``timesteps``
        > 0).
        """
        import torch

        model = inputs.model
        images = inputs.images("reference")
        if options["max_images"]:
            images = images[: options["max_images"]]
        if images.shape[0] == 0:
            raise InputError("nll: no reference images")
        declared = model.elbo_options
        kwargs: dict[str, Any] = {}
        for key in ELBO_OPTIONS:
            if key in declared:
                kwargs[key] = declared[key].convert(options[key], where=f"nll.{key}")
            elif options[key] != self.options[key].default:
                raise InputError(f"--opt nll.{key}: this model's elbo has no option {key!r}")
        generator = torch.Generator(device=model.device).manual_seed(int(inputs.seed))
        batch_size = options["batch_size"]
        values = []
        with progress_bar(total=images.shape[0], desc="nll", unit="img") as bar:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(model.device)
                values.append(model.elbo(batch, generator=generator, **kwargs).double().cpu())
                bar.update(batch.shape[0])
        elbo = torch.cat(values)
        dims = math.prod(images.shape[1:])
        summary = summarize_log_likelihoods(elbo, space=model.likelihood_space, dims=dims)
        value, std_err = mean_with_std_err(-elbo / (dims * math.log(2.0)))
        return {
            "value": value,
            "std_err": std_err,
            "std": std_err,
            "n": summary["n"],
            "log_likelihood": summary["value"],
            "space": summary["space"],
            "unit": "bits/dim",
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(NegativeLogLikelihood())
