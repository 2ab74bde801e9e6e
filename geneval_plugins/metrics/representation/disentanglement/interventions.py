"""Fresh images with chosen factors, encoded: what ``beta_vae`` and ``factor_vae`` score.

Both metrics draw batches in which one factor is held fixed, so they need a dataset that can
render any factor vector (:class:`geneval.api.FactorDataset`, e.g. ``dsprites``) and a model
that encodes images (:class:`geneval.capabilities.SupportsEncode`); latents and factors read
from arrays cannot provide them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geneval.plugin import (
    FactorDataset,
    InputError,
    MetricInputs,
    Option,
    SupportsEncode,
    progress_bar,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

ENCODE_BATCH_OPTION = Option(1024, "images rendered and encoded per call", low=1)
BATCH_SIZE_OPTION = Option(64, "images per fixed-factor batch (one training point)", low=2)


def factor_dataset_and_encoder(
    inputs: MetricInputs, metric: str
) -> tuple[FactorDataset, SupportsEncode]:
    """The reference :class:`FactorDataset` and the model, or a one-line :class:`InputError`."""
    try:
        dataset = inputs.dataset("reference")
    except (InputError, KeyError):
        raise InputError(
            f"{metric} draws fresh images with one factor fixed: it needs --reference a dataset "
            "with factors (e.g. dsprites) and --model with encode, not arrays of latents"
        ) from None
    if not isinstance(dataset, FactorDataset):
        name = getattr(dataset, "name", "reference")
        raise InputError(
            f"{metric}: dataset {name!r} has no ground-truth factors to fix (use e.g. dsprites)"
        )
    try:
        model = inputs.model
    except KeyError:
        raise InputError(f"{metric} needs a model with encode (--model)") from None
    if not isinstance(model, SupportsEncode):
        raise InputError(f"{metric}: the model has no encode capability")
    return dataset, model


def encode_factors(
    dataset: FactorDataset,
    model: SupportsEncode,
    factors: torch.Tensor,
    *,
    batch: int,
    desc: str,
) -> np.ndarray:
    """Latents (m, D) float64 of the images of factor vectors (m, K), ``batch`` at a time."""
    import numpy as np
    import torch

    out = []
    with torch.inference_mode(), progress_bar(total=factors.shape[0], desc=desc, unit="img") as bar:
        for start in range(0, factors.shape[0], batch):
            chunk = factors[start : start + batch]
            latents = torch.as_tensor(model.encode(dataset.images_for_factors(chunk)))
            if latents.ndim != 2 or latents.shape[0] != chunk.shape[0]:
                raise InputError(
                    f"{desc}: encode returned {tuple(latents.shape)} for {chunk.shape[0]} images "
                    "(expected (n, D))"
                )
            out.append(latents.detach().double().cpu())
            bar.update(chunk.shape[0])
    z = torch.cat(out).numpy()
    if not np.isfinite(z).all():
        raise InputError(f"{desc}: the model's latents hold non-finite values")
    return z


def fixed_factor_batches(
    dataset: FactorDataset, num_points: int, batch_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each of ``num_points`` points: a factor index k uniform over the K factors and a
    batch (batch_size, K) of factor vectors drawn from the dataset with factor k set to that
    of the batch's first row. Returns ``k`` (P,) and the batches (P, batch_size, K)."""
    import torch

    k = len(dataset.factor_sizes)
    fixed = torch.randint(k, (num_points,), generator=generator)
    batches = dataset.sample_factors(num_points * batch_size, generator).view(
        num_points, batch_size, k
    )
    mask = torch.nn.functional.one_hot(fixed, k).bool().unsqueeze(1)
    return fixed, torch.where(mask, batches[:, :1, :], batches)
