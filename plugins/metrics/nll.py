"""Metric ``nll``: negative log-likelihood bound of the reference images, in bits per dimension.

For a model with the ``elbo`` capability (e.g. ``ddpm``) the value is the mean over the
reference images of the negative ELBO, −log p(x) ≤ L_T + Σ_{t≥2} L_{t−1} + L_0 (Ho et al. 2020,
eq. 5), with the discretised Gaussian decoder of eq. 13, divided by D·ln 2 (D = C·H·W). Lower is
better; as a bound it over-states the true NLL.

The full bound costs T network passes per image (T = 1000: minutes even for 8×8 digits on a
CPU), so by default the T − 1 KL terms are estimated with ``timesteps`` = 100 strata and one
uniformly drawn t per stratum and image: an unbiased estimate whose Monte-Carlo noise is part of
the reported ``std`` (the standard error of the mean over images). ``timesteps=0`` sums all
terms exactly.

References
----------
.. [1] J. Ho, A. Jain, P. Abbeel, "Denoising Diffusion Probabilistic Models", NeurIPS 2020,
   eq. 5, §3.3 and Table 2 (NLL in bits/dim).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

import torch

from geneval.api import MetricInputs, Need
from geneval.errors import InputError
from geneval.hookspecs import hookimpl
from geneval.progress import progress_bar


class NegativeLogLikelihood:
    """``nll``: mean negative ELBO of the reference images in bits/dim (lower is better)."""

    name = "nll"
    higher_is_better = False
    needs = (Need(kind="model", capability="elbo"), Need(kind="images", source="reference"))
    defaults: Mapping[str, Any] = {
        "timesteps": 100,
        "variance": "fixedsmall",
        "bins": 256,
        "batch_size": 256,
        "max_images": 0,
    }
    options_help: Mapping[str, str] = {
        "timesteps": "KL terms per image: strata of an unbiased Monte-Carlo estimate; 0 = all T−1",
        "variance": "σ_t² of p_θ in the bound: fixedsmall (β̃_t) or fixedlarge (β_t)",
        "bins": "levels of the discretised decoder (256 for 8-bit images)",
        "batch_size": "images per batch",
        "max_images": "use only the first N reference images (0 = all)",
    }

    def compute(self, inputs: MetricInputs, **options: Any) -> Mapping[str, Any]:
        """Mean, standard error and count of the per-image negative ELBO in bits/dim.

        ``std`` is the standard error of the mean: the standard deviation of the per-image
        estimates over √n (it includes the Monte-Carlo noise when ``timesteps`` > 0).
        """
        opts = {**self.defaults, **options}
        unknown = sorted(set(opts) - set(self.defaults))
        if unknown:
            raise InputError(f"nll: unknown option(s) {', '.join(unknown)}")
        timesteps, batch_size = int(opts["timesteps"]), int(opts["batch_size"])
        max_images, bins = int(opts["max_images"]), int(opts["bins"])
        if timesteps < 0 or batch_size < 1 or max_images < 0 or bins < 2:
            raise InputError(
                "nll: timesteps and max_images must be ≥ 0, batch_size ≥ 1 and bins ≥ 2"
            )
        model = inputs.model
        images = inputs.images("reference")
        if max_images:
            images = images[:max_images]
        if images.shape[0] == 0:
            raise InputError("nll: no reference images")
        accepted = inspect.signature(model.elbo).parameters
        kwargs: dict[str, Any] = {}
        wanted = {"timesteps": timesteps or None, "variance": opts["variance"], "bins": bins}
        for key, value in wanted.items():
            if key in accepted:
                kwargs[key] = value
            elif value != self.defaults[key] and not (key == "timesteps" and timesteps == 0):
                raise InputError(f"nll: this model's elbo has no option {key!r}")
        generator = torch.Generator(device=model.device).manual_seed(int(inputs.seed))
        values = []
        with progress_bar(total=images.shape[0], desc="nll", unit="img") as bar:
            for start in range(0, images.shape[0], batch_size):
                batch = images[start : start + batch_size].to(model.device)
                values.append(model.elbo(batch, generator=generator, **kwargs).double().cpu())
                bar.update(batch.shape[0])
        bpd = torch.cat(values)
        n = bpd.numel()
        sem = bpd.std().item() / math.sqrt(n) if n > 1 else float("nan")
        return {
            "value": bpd.mean().item(),
            "std": sem,
            "n": n,
            "timesteps": timesteps,
            "variance": opts["variance"],
            "bins": bins,
            "unit": "bits/dim",
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(NegativeLogLikelihood())
