"""Metric ``psnr``: peak signal-to-noise ratio of reconstructions against their originals."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from geneval.plugin import MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.representation.paired import (
    DATA_RANGE,
    SUMMARY_FIELDS,
    per_image_values,
    read_pairs,
    summary,
)

if TYPE_CHECKING:
    import torch


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Per-image PSNR in dB of image batches ``x``, ``y`` (n, C, H, W), float64.

    ``PSNR = 10 log₁₀(R² / MSE)`` with ``MSE = mean((x − y)²)`` over every pixel and channel
    of the image and ``R`` = ``data_range``; ``inf`` for an identical pair. This is
    :func:`skimage.metrics.peak_signal_noise_ratio` applied image by image.

    PSNR measures pixel-wise fidelity only: it ranks a blurred image above a slightly shifted
    sharp one, and is not comparable across data ranges or bit depths.

    References
    ----------
    .. [1] Z. Wang, A. C. Bovik, "Mean squared error: Love it or leave it?", IEEE Signal
       Processing Magazine 26(1), 2009.
    """
    import torch

    diff = x.double() - y.double()
    mse = diff.square().flatten(1).mean(dim=1)
    return 10.0 * torch.log10(data_range**2 / mse)


class PeakSignalNoiseRatio:
    """``psnr``: mean PSNR in dB over the pairs that differ; identical pairs are counted."""

    name = "psnr"
    higher_is_better = True
    allows_infinite_value = True  # identical pairs only: stated in the result's warnings
    interpretation = (
        "pixel fidelity of reconstructions in dB (10·log10(R²/MSE)); mean over the pairs that "
        "differ, identical pairs (infinite PSNR) counted apart"
    )
    needs = (Need("reconstructions", "samples"),)
    options: Mapping[str, Option] = {"data_range": DATA_RANGE}
    fields: Mapping[str, str] = {
        **SUMMARY_FIELDS,
        "std": "population standard deviation of the finite per-image PSNR",
        "per_image": "PSNR of each pair in dB, in pair order (inf for an identical pair)",
        "identical": "number of identical pairs (infinite PSNR), left out of the mean",
        "unit": "dB",
    }
    uncertainty = "std"
    unit = "dB"

    def compute(self, inputs: MetricInputs, *, data_range: float) -> Mapping[str, Any]:
        """Mean and std of the finite per-image PSNR; ``value`` is ``inf`` when all are equal."""
        import torch

        pairs = read_pairs(inputs, self.name)
        per = per_image_values(
            pairs,
            lambda x, y: psnr(x, y, data_range=data_range),
            device=inputs.device,
            metric=self.name,
        )
        finite = torch.isfinite(per.values)
        identical = int((~finite).sum())
        if identical == per.values.numel():
            result = summary(per, pairs, data_range)
            result.update(value=math.inf, std=0.0)
            note = "every pair is identical: PSNR is infinite"
        else:
            result = summary(replace(per, values=per.values[finite]), pairs, data_range)
            result.update(n=int(per.values.numel()), per_image=[float(v) for v in per.values])
            note = f"{identical} identical pair(s) (infinite PSNR) left out of the mean"
        if identical:
            result["warnings"] = [*result.get("warnings", []), note]
        result.update(identical=identical, unit="dB")
        return result


@hookimpl
def geneval_register_metrics(register) -> None:
    register(PeakSignalNoiseRatio())
