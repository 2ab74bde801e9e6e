"""Metric ``is``: the Inception Score, over :func:`inception_score`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from geneval.plugin import InputError, MetricInputs, Need, Option, hookimpl
from geneval_plugins.metrics.sample_quality.protocols import (
    ADM_SPLIT_SIZE,
    protocol_needs,
    protocol_option,
)
from geneval_plugins.metrics.sample_quality.random_draws import (
    RNG_CHOICES,
    RNG_HELP,
    run_generator,
)

if TYPE_CHECKING:
    import numpy as np
    import torch

    from geneval_plugins.metrics.sample_quality.random_draws import Shuffle


@dataclass(frozen=True)
class ISResult:
    """Mean and (population) standard deviation of the score over splits."""

    value: float
    std: float
    splits: int


def inception_score(
    logits: torch.Tensor | np.ndarray,
    *,
    splits: int = 10,
    generator: Shuffle = None,
    split_size: int | None = None,
) -> ISResult:
    """Inception Score ``exp(E_x KL(p(y|x) ‖ p(y)))``, averaged over splits.

    The logits are shuffled with ``generator`` (no shuffle when ``None``) and cut into
    ``splits`` consecutive parts (part ``i`` holds rows ``⌊iN/s⌋ … ⌊(i+1)N/s⌋ − 1``), or, with
    ``split_size`` given, into parts of ``split_size`` rows, the last one holding the
    remainder (rows ``0 … m − 1``, ``m … 2m − 1``, …: the ADM evaluator's
    ``compute_inception_score``, which cuts at 5000 without shuffling). In each part, with
    ``p(y|x) = softmax(logits)`` in float64 and ``p(y)`` its mean over the part, the score is
    ``exp(mean_x Σ_y p(y|x) (log p(y|x) − log p(y)))``; the value is the unweighted mean of
    the parts' scores.

    Parameters
    ----------
    logits
        (N, classes) classifier logits; for Inception the 1008 logits without the fc bias
        (``logits_unbiased``), as the original TF code and torch-fidelity.
    splits
        Number of parts (default 10), at most N; not used when ``split_size`` is given.
    generator
        Random generator for the shuffle; a fixed seed gives a fixed result. A torch
        ``Generator`` draws ``torch.randperm(N)``; a numpy ``RandomState`` draws
        ``permutation(N)``, which with seed 2020 is torch-fidelity's shuffle, so the result
        equals its ``isc`` on the same logits.
    split_size
        Rows per part (at least 1); ``None`` (default) cuts into ``splits`` near-equal parts.

    Returns
    -------
    ISResult
        ``value`` (mean over splits), ``std`` (population std, as torch-fidelity and the
        original code; the ADM evaluator reports none) and ``splits`` (the number of parts).

    References
    ----------
    .. [1] T. Salimans, I. Goodfellow, W. Zaremba, V. Cheung, A. Radford, X. Chen,
       "Improved Techniques for Training GANs", NeurIPS 2016.
    .. [2] S. Barratt, R. Sharma, "A Note on the Inception Score", 2018 (why the logits,
       splits and classifier must match to compare numbers).
    """
    import numpy as np
    import torch

    x = torch.as_tensor(logits)
    if x.ndim != 2:
        raise InputError(
            f"inception_score: logits must be (N, classes), got shape {tuple(x.shape)}"
        )
    n = x.shape[0]
    if split_size is not None:
        if split_size < 1 or n < 1:
            raise InputError(
                f"is: split_size must be at least 1 and there must be samples "
                f"(got split_size={split_size}, {n} samples)"
            )
        bounds = [*range(0, n, split_size), n]
    elif not 1 <= splits <= n:
        raise InputError(
            f"is: splits must be between 1 and the number of samples {n} (got {splits})"
        )
    else:
        bounds = [i * n // splits for i in range(splits + 1)]
    if isinstance(generator, np.random.RandomState):
        x = x[torch.from_numpy(generator.permutation(n)).to(x.device)]
    elif generator is not None:
        x = x[torch.randperm(n, generator=generator).to(x.device)]
    log_p = torch.log_softmax(x.to(torch.float64), dim=1)
    p = log_p.exp()
    scores = []
    for lo, hi in zip(bounds[:-1], bounds[1:], strict=True):
        log_marginal = p[lo:hi].mean(dim=0).log()
        kl = (p[lo:hi] * (log_p[lo:hi] - log_marginal)).sum(dim=1).mean()
        scores.append(kl.exp())
    values = torch.stack(scores)
    return ISResult(
        value=float(values.mean()),
        std=float(values.std(unbiased=False)),
        splits=len(bounds) - 1,
    )


class InceptionScore:
    """The ``is`` metric (``docs/contracts.md`` §7): logits, seeded shuffle, 10 splits; or,
    with ``protocol=adm``, the ADM evaluator's parts of 5000 samples in their order."""

    name = "is"
    higher_is_better = True
    needs = (Need("logits", "samples"),)
    interpretation = (
        "exp of the mean KL between per-sample and marginal class predictions; "
        "1 to the number of classes, higher means confident and diverse"
    )
    options: Mapping[str, Option] = {
        "splits": Option(10, "number of parts the shuffled samples are cut into", low=1),
        "rng": Option("geneval", RNG_HELP, choices=RNG_CHOICES),
        "protocol": protocol_option(
            "parts of 5000 samples in their order, no shuffle; splits and rng do not apply; "
            "prefers inception-v3-fid logits"
        ),
    }
    fields: Mapping[str, str] = {
        "std": "population standard deviation of the score over splits",
        "splits": "number of splits used",
        "split_size": "samples per split under protocol=adm (the last split holds the rest)",
    }
    uncertainty = "std"
    feature_space = "inception-v3-fid"  # the classifier of published scores (Salimans et al. 2016)

    def needs_for(self, options: Mapping[str, Any]) -> tuple[Need, ...]:
        """The logits of the run's extractor; under ``protocol=adm``, inception-v3-fid's by
        preference."""
        return protocol_needs(self.needs, options)

    def compute(
        self, inputs: MetricInputs, *, splits: int, rng: str, protocol: str = "geneval"
    ) -> Mapping[str, Any]:
        """``{"value", "std", "splits"}``; the shuffle uses ``inputs.seed`` (``rng=geneval``)
        or torch-fidelity's generator and seed (``rng=torch-fidelity``). Under
        ``protocol=adm``: parts of :data:`ADM_SPLIT_SIZE` in the samples' order, and
        ``split_size`` besides (ADM reports the mean only; ``std`` is given anyway)."""
        logits = inputs.logits("samples").to(inputs.device)
        if protocol == "adm":
            result = inception_score(logits, split_size=ADM_SPLIT_SIZE)
            return {
                "value": result.value,
                "std": result.std,
                "splits": result.splits,
                "split_size": ADM_SPLIT_SIZE,
            }
        result = inception_score(logits, splits=splits, generator=run_generator(rng, inputs.seed))
        return {"value": result.value, "std": result.std, "splits": result.splits}


@hookimpl
def geneval_register_metrics(register) -> None:
    register(InceptionScore())
