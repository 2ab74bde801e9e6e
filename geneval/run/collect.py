"""Collecting one source: the feature cache, this rank's shard of the pass, the merge.

:func:`collect_pass` is what the runner, ``geneval stats`` and the Python API call for each
source instead of a bare :func:`geneval.run.passes.run_pass`:

1. with the cache on and a folder, array or dataset source, and in every sharded run, hash its
   content — each rank what it reads — and make the ranks agree on it before anything is
   computed or cached (:func:`content_key`; ranks that read different content are exit 2,
   and :func:`agree_on_sources` settles every source of a run before its first pass); with
   the cache on, look up, on rank 0, every extractor of the plan; rank 0 sends what it found
   to the others (:mod:`geneval.feature_cache`);
2. run the pass for what the cache did not hold — every extractor that missed, and the kept
   images — each rank over its batch-aligned shard; every rank learns of any rank's error;
3. merge the shards exactly (:func:`geneval.distributed.gather_pass_result`), and rank 0
   stores the new entries;
4. put the cached parts beside the fresh ones: a full hit never reads the source.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from geneval.api import LoadedExtractor
from geneval.cache import file_index
from geneval.distributed import (
    DistContext,
    agree,
    broadcast_object,
    collectively,
    context,
    gather_pass_result,
    shard_range,
    sum_ints,
)
from geneval.errors import InputError
from geneval.feature_cache import CachedPart, FeatureCache, entry_fields, source_key
from geneval.run.passes import PassPlan, PassResult, moments_extractor, run_pass


@dataclass
class Collected:
    """A source's pass result and, per extractor, ``hit`` or ``miss`` when the cache served
    the source (empty when it was off or does not serve that kind of source)."""

    result: PassResult
    cache: dict[str, str] = field(default_factory=dict)


def _parts(plan: PassPlan, name: str) -> list[tuple[str, str]]:
    """The (output, kind) entries one extractor of ``plan`` needs."""
    parts = [(output, "moments") for _, output in sorted(plan.moments_of(name).items())]
    parts += [(output, "rows") for output in sorted(plan.outputs.get(name, ()))]
    return parts


def _moments_keys(plan: PassPlan, name: str) -> dict[str, str]:
    """One extractor's moments outputs → their moments keys in ``plan``."""
    return {output: key for key, output in plan.moments_of(name).items()}


def _without(plan: PassPlan, names: set[str]) -> PassPlan:
    return PassPlan(
        keep_images=plan.keep_images,
        outputs={n: set(o) for n, o in plan.outputs.items() if n not in names},
        moments={k: o for k, o in plan.moments.items() if moments_extractor(k) not in names},
        keep_first=plan.keep_first,
    )


def _precision(loaded: LoadedExtractor) -> str:
    return str(getattr(loaded, "precision", "fp32"))


def content_key(
    source: Any,
    ctx: DistContext,
    cache: FeatureCache | None,
    *,
    batch_size: int,
    role: str,
) -> str | None:
    """The content key of ``source`` on which every rank agrees
    (:func:`geneval.feature_cache.source_key`), computed once per source and run: collective
    in a sharded run; an :class:`InputError` on every rank when the ranks read different
    content."""
    unit = source.shard_unit(batch_size) if hasattr(source, "shard_unit") else batch_size
    stamp = (ctx.rank, ctx.world_size, unit)
    memo = getattr(source, "_geneval_content_key", None)
    if memo is not None and memo[0] == stamp:
        return memo[1]
    index = cache.index if cache is not None else file_index()
    key = source_key(source, ctx, index, unit=unit, role=role)
    source._geneval_content_key = (stamp, key)
    return key


def agree_on_sources(
    sources: Sequence[tuple[str, Any]],
    ctx: DistContext | None = None,
    cache: FeatureCache | None = None,
    *,
    batch_size: int,
) -> None:
    """In a sharded run, hash every ``(role, source)`` of a run (a sample source or a
    statistics file) — each rank what it reads — and check that the ranks agree, before the
    first pass: a run whose ranks disagree on any source computes and caches nothing. A
    no-op in one process."""
    ctx = context() if ctx is None else ctx
    if not ctx.distributed:
        return
    for role, source in sources:
        if source is None:  # still take part: another rank may have a source for this role
            source_key(None, ctx, file_index(), role=role)
        else:
            content_key(source, ctx, cache, batch_size=batch_size, role=role)


def collect_pass(
    source: Any,
    plan: PassPlan,
    extractors: dict[str, LoadedExtractor],
    device: torch.device,
    *,
    batch_size: int,
    workers: int | None,
    desc: str,
    cache: FeatureCache | None,
    ctx: DistContext | None = None,
) -> Collected:
    """The pass result of ``source`` under ``plan``, sharded over the ranks of ``ctx`` (the
    current process group by default) and served from ``cache`` where it can be."""
    ctx = context() if ctx is None else ctx
    names = plan.extractors
    key = None
    if ctx.distributed or (cache is not None and names):  # the ranks agree before any pass
        key = content_key(source, ctx, cache, batch_size=batch_size, role=desc)
    if cache is None or not names:
        key = None

    fields: dict[str, list[dict[str, Any]]] = {}
    hits: dict[str, list[CachedPart]] = {}
    if key is not None:
        for name in names:
            fields[name] = [
                entry_fields(
                    key,
                    extractors[name],
                    name,
                    output,
                    kind,
                    precision=_precision(extractors[name]),
                    device=device,
                )
                for output, kind in _parts(plan, name)
            ]

        def lookup() -> dict[str, list[CachedPart]] | None:
            if not ctx.is_main:
                return None  # rank 0 looks up and sends what it found
            found = {}
            for name in names:
                parts = [cache.load(f) for f in fields[name]]
                if all(p is not None for p in parts) and len({p.count for p in parts}) == 1:
                    found[name] = parts
            return found

        hits = broadcast_object(ctx, collectively(ctx, lookup))
        hits = {n: p for n, p in hits.items() if p[0].count == source.count}

    todo = _without(plan, set(hits))
    only_first = todo.keep_first and not (todo.keep_images or todo.outputs or todo.moments)
    if hits and (todo.empty or (only_first and source.can_fetch)):
        first = next(iter(hits.values()))[0]
        shown = source.fetch(range(min(todo.keep_first, source.count))) if only_first else []
        result = PassResult(source.count, None, {}, {}, set(first.sizes), first=shown)
        source.set_pass_counters(first.counters)
    else:
        result = _sharded_pass(
            source, todo, extractors, device, ctx, batch_size=batch_size, workers=workers, desc=desc
        )
        if key is not None and ctx.is_main:
            counters = source.pass_counters()
            for name in todo.extractors:
                for f in fields[name]:
                    part = CachedPart(result.count, set(result.sizes), counters)
                    if f["kind"] == "moments":
                        part.moments = result.moments[_moments_keys(plan, name)[f["output"]]]
                    else:
                        part.rows = result.outputs[(name, f["output"])]
                    cache.store(f, part)
    for name, parts in hits.items():
        for f, part in zip(fields[name], parts, strict=True):
            if part.moments is not None:
                key = _moments_keys(plan, name)[f["output"]]
                result.moments[key] = part.moments.to(device)
            else:
                result.outputs[(name, f["output"])] = part.rows
    status = {name: ("hit" if name in hits else "miss") for name in names} if key else {}
    return Collected(result, status)


def _sharded_pass(
    source: Any,
    plan: PassPlan,
    extractors: dict[str, LoadedExtractor],
    device: torch.device,
    ctx: DistContext,
    *,
    batch_size: int,
    workers: int | None,
    desc: str,
) -> PassResult:
    """This rank's shard of the pass, merged with the others' (one process: the whole pass)."""
    start, stop = shard_range(source.count, source.shard_unit(batch_size), ctx.rank, ctx.world_size)
    local: PassResult | None = None
    error: BaseException | None = None
    try:
        local = run_pass(
            source,
            plan,
            {name: extractors[name] for name in plan.extractors},
            device,
            batch_size=batch_size,
            workers=workers,
            desc=desc,
            start=start,
            stop=stop,
        )
    except Exception as exc:  # noqa: BLE001 - every rank must learn of it (agree)
        error = exc
    agree(ctx, error)
    assert local is not None
    if not ctx.distributed:
        return local
    counters = source.pass_counters()
    if counters:
        names = sorted(counters)
        source.set_pass_counters(
            dict(zip(names, sum_ints(ctx, [counters[n] for n in names]), strict=True))
        )
    dims = {
        (name, output): int(extractors[name].outputs[output])
        for name in plan.extractors
        for output in plan.outputs.get(name, ())
    }
    # gather_pass_result looks the moments' dimensions up by (moments key, output)
    dims.update(
        {
            (key, output): int(extractors[moments_extractor(key)].outputs[output])
            for key, output in plan.moments.items()
        }
    )
    merged = gather_pass_result(
        ctx, local, plan, dims, description=source.description, device=device
    )
    if merged.count != source.count:
        raise InputError(
            f"{source.description}: the ranks read {merged.count} of {source.count} images"
        )
    return merged
