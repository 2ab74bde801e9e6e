"""Calling a metric plugin directly, as the runner does: validated options and stub inputs."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from typing import Any

import torch

from geneval.api import ImageSet, PairedImages
from geneval.errors import InputError
from geneval.options import declared_options, resolve_options


def metric_options(metric: Any, **given: Any) -> dict[str, Any]:
    """The full option set the runner would pass: declared defaults updated by ``given``,
    validated exactly as ``--opt`` values are (an unknown or out-of-bounds value raises
    :class:`geneval.errors.InputError`)."""
    return resolve_options(
        given, declared_options(metric), owner=f"metric {metric.name}", prefix=f"{metric.name}."
    )


def compute(metric: Any, inputs: Any, **given: Any) -> Mapping[str, Any]:
    """``metric.compute(inputs, **validated options)``, its result carrying the options it ran
    with, as the runner adds them (docs/contracts.md §2)."""
    options = metric_options(metric, **given)
    result = dict(metric.compute(inputs, **options))
    for key, value in options.items():
        result.setdefault(key, value)
    return result


class StubInputs:
    """:class:`geneval.api.MetricInputs` backed by plain tensors, for unit tests of metrics.

    ``data`` maps ``(kind, source)`` to a tensor (or, for ``stats``, a ``FeatureStatistics``);
    a named extractor output is the kind ``"stats#spatial"`` (``"features#NAME"``);
    ``reconstructions`` is a :class:`PairedImages`; ``model`` the model object.
    """

    def __init__(
        self,
        data: Mapping[tuple[str, str], Any] | None = None,
        *,
        model: Any = None,
        reconstructions: PairedImages | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
        datasets: Mapping[str, Any] | None = None,
        other: Mapping[str, ImageSet] | None = None,
        run_options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self._data = dict(data or {})
        self._datasets = dict(datasets or {})
        self._other = dict(other or {})
        self.run_options = dict(run_options or {})
        self._memo: dict[Hashable, Any] = {}
        self._model = model
        self._pairs = reconstructions
        self.seed = seed
        self.device = torch.device(device)

    def _get(self, kind: str, source: str) -> Any:
        try:
            return self._data[(kind, source)]
        except KeyError:
            raise KeyError(f"{kind} of {source} were not given to the stub") from None

    def features(self, source: str, output: str | None = None) -> torch.Tensor:
        return self._get("features" if output is None else f"features#{output}", source)

    def stats(self, source: str, output: str | None = None) -> Any:
        return self._get("stats" if output is None else f"stats#{output}", source)

    def logits(self, source: str) -> torch.Tensor:
        return self._get("logits", source)

    def images(self, source: str) -> torch.Tensor:
        return self._get("images", source)

    def labels(self, source: str) -> torch.Tensor:
        return self._get("labels", source)

    def factors(self, source: str) -> torch.Tensor:
        return self._get("factors", source)

    def captions(self, source: str) -> list[str]:
        return self._get("captions", source)

    def latents(self, source: str) -> torch.Tensor:
        return self._get("latents", source)

    def reconstructions(self) -> PairedImages:
        if self._pairs is None:
            raise KeyError("no reconstructions were given to the stub")
        return self._pairs

    @property
    def model(self) -> Any:
        if self._model is None:
            raise KeyError("no model was given to the stub")
        return self._model

    def dataset(self, source: str) -> Any:
        if source not in self._datasets:
            raise InputError(f"the {source} are not a dataset")
        return self._datasets[source]

    def other_images(self, spec: str, *, default_split: str, option: str = "") -> ImageSet:
        key = spec or default_split
        if key not in self._other:
            raise InputError(f"no images for {key!r} were given to the stub")
        return self._other[key]

    def memo(self, key: Hashable, compute: Callable[[], Any]) -> Any:
        if key not in self._memo:
            self._memo[key] = compute()
        return self._memo[key]
