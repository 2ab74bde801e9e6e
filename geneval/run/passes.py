"""One pass over a source: every extractor it needs, the running moments, and kept images.

A run reads each source once. Each batch of images goes through every extractor the run's
metrics need for that source (each extractor is called once per batch, once per same-size
group for folders of mixed sizes); the pass keeps

* per-sample outputs only where a metric needs them (float32, on the host);
* float64 running sums ``(n, Σx, Σxxᵀ)`` of a feature output where a metric needs only the
  moments (FID): memory stays flat however many images pass;
* the images themselves only when a metric needs them;
* the first ``keep_first`` images, when a report shows them (sample grids).

The same :class:`SourcePass` serves the command line (a source's batches) and the streaming
Python API (:class:`geneval.evaluator.Evaluator`, one ``update`` at a time).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from geneval.api import LoadedExtractor
from geneval.errors import InputError
from geneval.feature_stats import FeatureStatistics
from geneval.progress import progress_bar

Batch = torch.Tensor | list[torch.Tensor]


#: Separates an extractor's name from an output in a moments key (plugin names are
#: ``[a-z0-9_-]+``, so it cannot occur in one).
MOMENTS_SEPARATOR = "#"


def moments_key(extractor: str, output: str | None = None) -> str:
    """The key of an extractor output's running moments in :attr:`PassPlan.moments` and
    :attr:`PassResult.moments`: the extractor's name for its feature output (``output`` None),
    ``extractor#output`` for another output (e.g. ``inception-v3-fid#spatial``)."""
    return extractor if output is None else f"{extractor}{MOMENTS_SEPARATOR}{output}"


def moments_extractor(key: str) -> str:
    """The extractor of a moments key (:func:`moments_key`)."""
    return key.split(MOMENTS_SEPARATOR, 1)[0]


@dataclass
class PassPlan:
    """What one pass over a source must gather."""

    keep_images: bool = False
    #: extractor name → outputs kept per sample
    outputs: dict[str, set[str]] = field(default_factory=dict)
    #: moments key (:func:`moments_key`) → the output whose running moments are accumulated
    moments: dict[str, str] = field(default_factory=dict)
    #: the number of leading images kept for a report (sample grids); 0: none
    keep_first: int = 0

    @property
    def extractors(self) -> list[str]:
        return sorted(set(self.outputs) | {moments_extractor(k) for k in self.moments})

    def moments_of(self, extractor: str) -> dict[str, str]:
        """The moments keys of one extractor → their outputs."""
        return {k: o for k, o in self.moments.items() if moments_extractor(k) == extractor}

    @property
    def empty(self) -> bool:
        return not (self.keep_images or self.outputs or self.moments or self.keep_first)


@dataclass
class PassResult:
    """What a pass gathered."""

    count: int
    images: torch.Tensor | None
    outputs: dict[tuple[str, str], torch.Tensor]  # (extractor, output) → (n, d) float32, CPU
    moments: dict[str, FeatureStatistics]  # moments key → running sums of that output
    sizes: set[tuple[int, int]]  # (H, W) of the images seen
    first: list[torch.Tensor] = field(default_factory=list)  # leading images (C, H, W), CPU


def same_size_groups(batch: Batch) -> list[torch.Tensor]:
    """Split a list of differently sized images into runs of equal size (stacked)."""
    if isinstance(batch, torch.Tensor):
        return [batch]
    groups: list[list[torch.Tensor]] = []
    for image in batch:
        if groups and groups[-1][0].shape == image.shape:
            groups[-1].append(image)
        else:
            groups.append([image])
    return [torch.stack(g) for g in groups]


class SourcePass:
    """Accumulates one source's batches according to a :class:`PassPlan`.

    ``extractors`` maps each extractor name in the plan to its loaded extractor. Moments are
    accumulated in float64 on ``device``.
    """

    def __init__(
        self,
        plan: PassPlan,
        extractors: dict[str, LoadedExtractor],
        device: torch.device,
        *,
        description: str,
    ) -> None:
        self.plan = plan
        self.extractors = {name: extractors[name] for name in plan.extractors}
        self.device = device
        self.description = description
        self.count = 0
        self.sizes: set[tuple[int, int]] = set()
        self._images: list[torch.Tensor] = []
        self._outputs: dict[tuple[str, str], list[torch.Tensor]] = {
            (name, out): [] for name, outs in plan.outputs.items() for out in sorted(outs)
        }
        self._moments: dict[str, FeatureStatistics] = {}
        self._first: list[torch.Tensor] = []

    def add(self, batch: Batch) -> int:
        """Feed one batch (a tensor (N, C, H, W), or a list of (C, H, W) images of mixed
        sizes); returns the number of images added."""
        added = 0
        for group in same_size_groups(batch):
            self.sizes.add((int(group.shape[-2]), int(group.shape[-1])))
            for name, extractor in self.extractors.items():
                with torch.inference_mode():  # only the extractor: model sources need grads
                    out = extractor(group)
                for output in self.plan.outputs.get(name, ()):
                    self._outputs[(name, output)].append(out[output].detach().float().cpu())
                for key, moment_output in self.plan.moments_of(name).items():
                    features = out[moment_output].detach()
                    if key not in self._moments:
                        self._moments[key] = FeatureStatistics(features.shape[1], self.device)
                    self._moments[key].update(features)
            if self.plan.keep_images:
                self._images.append(group.cpu())
            missing = self.plan.keep_first - len(self._first)
            if missing > 0:
                self._first.extend(group[:missing].cpu())
            added += int(group.shape[0])
        self.count += added
        return added

    def result(self) -> PassResult:
        """What was gathered so far (the pass may continue afterwards)."""
        images = None
        if self.plan.keep_images and self._images:
            if not all(t.shape[1:] == self._images[0].shape[1:] for t in self._images):
                raise InputError(
                    f"{self.description}: images of different sizes cannot be compared"
                )
            images = torch.cat(self._images)
            self._images = [images]
        outputs = {}
        for key, parts in self._outputs.items():
            if parts:
                merged = torch.cat(parts)
                self._outputs[key] = [merged]
                outputs[key] = merged
        return PassResult(
            count=self.count,
            images=images,
            outputs=outputs,
            moments=dict(self._moments),
            sizes=set(self.sizes),
            first=list(self._first),
        )

    def nbytes(self) -> int:
        """Bytes held by the accumulated state (kept images, outputs and moment sums)."""
        total = sum(t.numel() * t.element_size() for t in [*self._images, *self._first])
        total += sum(t.numel() * t.element_size() for ts in self._outputs.values() for t in ts)
        for stats in self._moments.values():
            total += stats.nbytes
        return total


def run_pass(
    source: Any,
    plan: PassPlan,
    extractors: dict[str, LoadedExtractor],
    device: torch.device,
    *,
    batch_size: int,
    workers: int | None,
    desc: str,
    start: int = 0,
    stop: int | None = None,
) -> PassResult:
    """One pass over ``source`` (a :class:`geneval.sources.SampleSource`), or over its images
    ``start`` to ``stop`` (one rank's shard), with a progress bar counted in images."""
    stop = source.count if stop is None else stop
    accumulator = SourcePass(plan, extractors, device, description=source.description)
    with progress_bar(total=stop - start, desc=desc, unit="img") as bar:
        for batch in source.batches(batch_size, device, workers, start=start, stop=stop):
            bar.update(accumulator.add(batch))
    return accumulator.result()
