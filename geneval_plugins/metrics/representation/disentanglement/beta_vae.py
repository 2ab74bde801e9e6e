"""Metric ``beta_vae``: the β-VAE disentanglement metric (Higgins et al. 2017)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from geneval.plugin import (
    FactorDataset,
    InputError,
    MetricInputs,
    Need,
    Option,
    SupportsEncode,
    hookimpl,
)
from geneval_plugins.metrics.representation.disentanglement.codes import (
    NUM_TEST,
    NUM_TRAIN,
    collected_warnings,
)
from geneval_plugins.metrics.representation.disentanglement.interventions import (
    BATCH_SIZE_OPTION,
    ENCODE_BATCH_OPTION,
    encode_factors,
    factor_dataset_and_encoder,
)
from geneval_plugins.metrics.representation.disentanglement.seeds import SeedAveraged

if TYPE_CHECKING:
    import numpy as np
    import torch


def beta_vae_points(
    dataset: FactorDataset,
    model: SupportsEncode,
    num_points: int,
    *,
    batch_size: int,
    generator: torch.Generator,
    encode_batch: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Training points of the β-VAE metric: features (P, D) and the fixed factor (P,).

    For each point a factor k is drawn uniformly, then ``batch_size`` pairs of factor vectors
    that agree on factor k only; the feature is the mean over pairs of ``|z(x₁) − z(x₂)|``
    (disentanglement_lib's ``_generate_training_sample``).
    """
    import numpy as np
    import torch

    k = len(dataset.factor_sizes)
    fixed = torch.randint(k, (num_points,), generator=generator)
    first = dataset.sample_factors(num_points * batch_size, generator)
    second = dataset.sample_factors(num_points * batch_size, generator)
    column = fixed.repeat_interleave(batch_size)
    rows = torch.arange(first.shape[0])
    second[rows, column] = first[rows, column]
    z = encode_factors(
        dataset, model, torch.cat([first, second]), batch=encode_batch, desc="beta_vae"
    )
    n = first.shape[0]
    features = np.abs(z[:n] - z[n:]).reshape(num_points, batch_size, -1).mean(axis=1)
    return features, fixed.numpy()


def beta_vae_score(
    train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray], *, seed: int = 0
) -> tuple[float, float]:
    """Test and train accuracy of ``LogisticRegression()`` predicting the fixed factor.

    The β-VAE metric (Higgins et al. 2017, Section 3 and Appendix A.4) is the accuracy of a
    linear classifier that tells from the mean absolute difference of the latents of pairs
    which factor the pairs share; disentanglement_lib's ``compute_beta_vae_sklearn`` uses
    scikit-learn's ``LogisticRegression`` with default settings on the raw features.

    Chance is 1/K; a representation in which one latent stays constant when a factor is fixed
    scores 1. Factors the images do not reveal (the square's orientation modulo 90°) cap it.

    References
    ----------
    .. [1] I. Higgins et al., "β-VAE: Learning Basic Visual Concepts with a Constrained
       Variational Framework", ICLR 2017.
    """
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    if np.unique(train[1]).size < 2:
        raise InputError("beta_vae: needs at least 2 factors to tell apart")
    model = LogisticRegression(random_state=seed).fit(*train)
    return float(model.score(*test)), float(model.score(*train))


class BetaVAEMetric:
    """``beta_vae``: accuracy of telling which factor a batch of pairs shares."""

    name = "beta_vae"
    higher_is_better = True
    interpretation = (
        "β-VAE metric: test accuracy of a linear classifier identifying the fixed factor from "
        "latent differences (chance = 1/number of factors)"
    )
    needs = (Need("model", capabilities=(SupportsEncode,)), Need("dataset", "reference"))
    options: Mapping[str, Option] = {
        "batch_size": BATCH_SIZE_OPTION,
        "num_train": Option(NUM_TRAIN, "training points", low=2),
        "num_eval": Option(NUM_TEST, "evaluation points", low=1),
        "encode_batch": ENCODE_BATCH_OPTION,
    }
    fields: Mapping[str, str] = {
        "train_accuracy": "accuracy on the training points",
        "num_train": "training points",
        "num_eval": "evaluation points",
        "batch_size": "pairs per point",
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
        encode_batch: int,
    ) -> Mapping[str, Any]:
        """Draws training then evaluation points with ``inputs.seed`` and scores them."""
        import torch

        dataset, model = factor_dataset_and_encoder(inputs, self.name)
        generator = torch.Generator().manual_seed(int(inputs.seed))
        draw = dict(batch_size=batch_size, generator=generator, encode_batch=encode_batch)
        train = beta_vae_points(dataset, model, num_train, **draw)
        test = beta_vae_points(dataset, model, num_eval, **draw)
        warnings: list[str] = []
        with collected_warnings(warnings):
            accuracy, train_accuracy = beta_vae_score(train, test, seed=int(inputs.seed))
        k = len(dataset.factor_sizes)
        result: dict[str, Any] = {
            "value": accuracy,
            "train_accuracy": train_accuracy,
            "num_train": num_train,
            "num_eval": num_eval,
            "batch_size": batch_size,
            "num_factors": k,
            "chance": 1.0 / k,
        }
        if warnings:
            result["warnings"] = warnings
        return result


@hookimpl
def geneval_register_metrics(register) -> None:
    register(
        SeedAveraged(BetaVAEMetric(), "the fixed-factor batches and the training/evaluation draws")
    )
