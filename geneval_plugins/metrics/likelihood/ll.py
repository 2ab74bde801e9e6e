"""Metric ``ll``: the exact test log-likelihood of the reference images, for models whose
normalised log p(x) is tractable (``log_prob``), such as an RBM whose smaller layer can be
enumerated (log Z exact, Salakhutdinov & Murray 2008, §4).

value = (1/n) Σ_i log p(x_i) in nats, in the model's likelihood space. The number is exact up
to float64 rounding; it is the reference that the estimates of ``ais`` (and ``is_ll``) are
compared with. It is only as trustworthy as the model's own ``log_prob``; the remaining
uncertainty is the sampling error of the test set (``std_err``).

References
----------
.. [1] R. Salakhutdinov, I. Murray, "On the quantitative analysis of deep belief networks",
   ICML 2008.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import MetricInputs, Need, Option, SupportsLogProb, hookimpl, progress_bar
from geneval_plugins.metrics.likelihood.common import (
    LIKELIHOOD_FIELDS,
    check_images,
    first_images,
    space_warnings,
    summarize_log_likelihoods,
)

if TYPE_CHECKING:
    import torch


def exact_log_likelihoods(
    model: SupportsLogProb, images: torch.Tensor, *, batch_size: int
) -> torch.Tensor:
    """log p(x) (nats, float64, on the CPU) of each image, ``batch_size`` images at a time."""
    import torch

    device = getattr(model, "device", images.device)
    values = []
    with torch.no_grad(), progress_bar(total=images.shape[0], desc="ll", unit="img") as bar:
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device)
            values.append(model.log_prob(batch).to(torch.float64).cpu())
            bar.update(batch.shape[0])
    return torch.cat(values)


class ExactLogLikelihood:
    """``ll``: mean exact log p(x) of the reference images (``log_prob`` capability)."""

    name = "ll"
    higher_is_better = True
    interpretation = "mean exact log-likelihood (nats) of the reference images"
    needs = (Need("model", capabilities=(SupportsLogProb,)), Need("images", "reference"))
    options: Mapping[str, Option] = {
        "batch_size": Option(256, "images per batch", low=1),
        "max_images": Option(0, "use only the first N reference images (0 = all)", low=0),
    }
    fields: Mapping[str, str] = LIKELIHOOD_FIELDS
    uncertainty = "std_err"
    unit = "nats/image"

    def compute(
        self, inputs: MetricInputs, *, batch_size: int, max_images: int
    ) -> Mapping[str, Any]:
        """Mean, standard error and bits/dim of the exact per-image log-likelihoods."""
        model = inputs.model
        images = first_images(inputs.images("reference"), max_images)
        check_images(images, shape=tuple(model.image_shape), what="reference images", metric="ll")
        space = model.likelihood_space
        per_image = exact_log_likelihoods(model, images, batch_size=batch_size)
        return {
            **summarize_log_likelihoods(per_image, space=space, dims=math.prod(images.shape[1:])),
            "warnings": space_warnings(space),
        }


@hookimpl
def geneval_register_metrics(register) -> None:
    register(ExactLogLikelihood())
