"""Metric ``factor_vae``: the FactorVAE disentanglement metric (Kim & Mnih 2018)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import FactorDataset, MetricInputs, Need, Option, SupportsEncode, hookimpl
from geneval_plugins.metrics.representation.disentanglement.codes import NUM_TEST, NUM_TRAIN
from geneval_plugins.metrics.representation.disentanglement.interventions import (
    BATCH_SIZE_OPTION,
    ENCODE_BATCH_OPTION,
    encode_factors,
    factor_dataset_and_encoder,
    fixed_factor_batches,
)
from geneval_plugins.metrics.representation.disentanglement.seeds import SeedAveraged

if TYPE_CHECKING:
    import numpy as np
    import torch

#: disentanglement_lib's ``prune_dims.threshold``: latents whose standard deviation over the
#: data is below it are taken as collapsed to the prior and left out.
PRUNE_THRESHOLD = 0.05


@dataclass(frozen=True)
class FactorVAEScores:
    """Evaluation and training accuracy of the majority-vote classifier, and active latents."""

    accuracy: float
    train_accuracy: float
    active_latents: int


def votes(
    dataset: FactorDataset,
    model: SupportsEncode,
    num_points: int,
    *,
    scale: np.ndarray,
    active: np.ndarray,
    batch_size: int,
    generator: torch.Generator,
    encode_batch: int = 1024,
) -> np.ndarray:
    """Vote counts (K, active latents): for each point, the fixed factor votes for the active
    latent with the smallest variance over the batch relative to ``scale`` (its variance over
    the data), variances with ddof = 1 (disentanglement_lib's ``_generate_training_sample``)."""
    import numpy as np

    fixed, batches = fixed_factor_batches(dataset, num_points, batch_size, generator)
    k = batches.shape[-1]
    z = encode_factors(
        dataset, model, batches.reshape(-1, k), batch=encode_batch, desc="factor_vae"
    ).reshape(num_points, batch_size, -1)
    local = z[:, :, active].var(axis=1, ddof=1) / scale[active]
    counts = np.zeros((k, int(active.sum())), dtype=np.int64)
    np.add.at(counts, (fixed.numpy(), local.argmin(axis=1)), 1)
    return counts


def majority_vote_accuracy(train_votes: np.ndarray, test_votes: np.ndarray) -> tuple[float, float]:
    """Accuracy on ``test_votes`` and ``train_votes`` (K, D) of the classifier that maps each
    latent to the factor that voted for it most often in training (first on ties)."""
    import numpy as np

    classifier = train_votes.argmax(axis=0)
    columns = np.arange(train_votes.shape[1])

    def accuracy(v: np.ndarray) -> float:
        return float(v[classifier, columns].sum() / v.sum())

    return accuracy(test_votes), accuracy(train_votes)


def factor_vae_score(
    dataset: FactorDataset,
    model: SupportsEncode,
    *,
    num_train: int = NUM_TRAIN,
    num_eval: int = NUM_TEST,
    num_variance_estimate: int = 10_000,
    batch_size: int = 64,
    prune_threshold: float = PRUNE_THRESHOLD,
    generator: torch.Generator,
    encode_batch: int = 1024,
) -> FactorVAEScores:
    """The FactorVAE metric: majority-vote accuracy of the latent that varies least when one
    factor is held fixed.

    Each latent's variance is first estimated on ``num_variance_estimate`` images; latents with a
    standard deviation below ``prune_threshold`` are dropped. For every point a factor k is
    fixed over a batch of ``batch_size`` images and the active latent with the smallest
    variance, divided by its variance over the data, votes for k; a majority-vote classifier
    from latents to factors is read off the training votes and scored on the evaluation votes
    (Kim & Mnih 2018, Section 4; disentanglement_lib's ``compute_factor_vae``). With no active
    latent the score is 0.

    Chance is about 1/K. The metric rewards axis alignment only: a latent that moves with two
    factors still wins the vote of both, so it cannot tell two factors sharing a latent apart
    from one factor missing.

    References
    ----------
    .. [1] H. Kim, A. Mnih, "Disentangling by Factorising", ICML 2018.
    """
    import numpy as np

    sample = dataset.sample_factors(num_variance_estimate, generator)
    scale = encode_factors(dataset, model, sample, batch=encode_batch, desc="factor_vae").var(
        axis=0, ddof=1
    )
    active = np.sqrt(scale) >= prune_threshold
    if not active.any():
        return FactorVAEScores(0.0, 0.0, 0)
    draw = dict(
        scale=scale,
        active=active,
        batch_size=batch_size,
        generator=generator,
        encode_batch=encode_batch,
    )
    train_votes = votes(dataset, model, num_train, **draw)
    eval_votes = votes(dataset, model, num_eval, **draw)
    accuracy, train_accuracy = majority_vote_accuracy(train_votes, eval_votes)
    return FactorVAEScores(accuracy, train_accuracy, int(active.sum()))


class FactorVAEMetric:
    """``factor_vae``: majority-vote accuracy of the least varying latent under a fixed factor."""

    name = "factor_vae"
    higher_is_better = True
    interpretation = (
        "FactorVAE metric: how often the latent that varies least when one factor is held "
        "fixed identifies that factor (chance ≈ 1/number of factors)"
    )
    needs = (Need("model", capabilities=(SupportsEncode,)), Need("dataset", "reference"))
    options: Mapping[str, Option] = {
        "batch_size": BATCH_SIZE_OPTION,
        "num_train": Option(NUM_TRAIN, "training points (votes)", low=1),
        "num_eval": Option(NUM_TEST, "evaluation points (votes)", low=1),
        "num_variance_estimate": Option(
            10_000, "images for each latent's variance over the data", low=2
        ),
        "prune_threshold": Option(
            PRUNE_THRESHOLD, "latents with a standard deviation below it are left out", low=0.0
        ),
        "encode_batch": ENCODE_BATCH_OPTION,
    }
    fields: Mapping[str, str] = {
        "train_accuracy": "accuracy on the training votes",
        "active_latents": "latents with a standard deviation at or above prune_threshold",
        "num_train": "training points",
        "num_eval": "evaluation points",
        "batch_size": "images per point",
        "num_factors": "factors of the dataset",
        "chance": "accuracy of guessing: 1/num_factors",
    }
    uncertainty = None

    def compute(
        self,
        inputs: MetricInputs,
        *,
        batch_size: int,
        num_train: int,
        num_eval: int,
        num_variance_estimate: int,
        prune_threshold: float,
        encode_batch: int,
    ) -> Mapping[str, Any]:
        """Variance estimate, training and evaluation votes drawn with ``inputs.seed``."""
        import torch

        dataset, model = factor_dataset_and_encoder(inputs, self.name)
        scores = factor_vae_score(
            dataset,
            model,
            num_train=num_train,
            num_eval=num_eval,
            num_variance_estimate=num_variance_estimate,
            batch_size=batch_size,
            prune_threshold=prune_threshold,
            generator=torch.Generator().manual_seed(int(inputs.seed)),
            encode_batch=encode_batch,
        )
        k = len(dataset.factor_sizes)
        result: dict[str, Any] = {
            "value": scores.accuracy,
            "train_accuracy": scores.train_accuracy,
            "active_latents": scores.active_latents,
            "num_train": num_train,
            "num_eval": num_eval,
            "batch_size": batch_size,
            "num_factors": k,
            "chance": 1.0 / k,
        }
        if scores.active_latents == 0:
            result["warnings"] = [
                f"no latent has a standard deviation ≥ {prune_threshold:g}: score 0"
            ]
        return result


@hookimpl
def geneval_register_metrics(register) -> None:
    register(SeedAveraged(FactorVAEMetric(), "the variance estimate and the fixed-factor votes"))
