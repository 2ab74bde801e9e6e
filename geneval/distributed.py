"""Sharded runs on ``torch.distributed``: ranks, shards, and the exact merge of their passes.

A run is sharded when a process group is initialised: by ``torchrun`` (``geneval run`` reads
the usual ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` and
initialises the group, :func:`init_from_env`), by ``geneval run --nproc N``
(:mod:`geneval.launch`, which sets the same variables for the ranks it spawns), or by the
program that uses the Python API (a DDP training job). Gloo carries the collectives of CPU runs,
NCCL those of GPU runs.

What every rank does (``docs/contracts.md`` §12):

* **Batch-aligned shards.** A source of ``n`` images is cut into blocks of one batch
  (``SampleSource.shard_unit``: the extraction batch, or a model's sampling block); rank ``r``
  of ``R`` takes the contiguous blocks ``⌊r·B/R⌋`` to ``⌊(r+1)·B/R⌋`` of the ``B`` blocks
  (:func:`shard_range`). Every batch is the batch one process would make, so every feature
  vector is bit for bit the one a single process computes.
* **Exact merge.** The float64 running sums ``(n, Σx, Σxxᵀ)`` are all-reduced (sums are
  additive, so the moments are those of one pass up to float64 summation order); per-sample
  outputs and kept images are all-gathered in rank order — the order of the source — with
  padding to the largest shard, since shards differ by up to one block
  (:func:`gather_rows`, :func:`gather_pass_result`).
* **One error for all.** A step that every rank takes (hashing, a pass) ends with
  :func:`agree`: if any rank failed, every rank raises the first failing rank's error, so no
  rank waits forever in a collective and every rank exits with the same code.

Every rank then computes the metrics on the same merged inputs (so ``Evaluator.compute``
returns the same result on every rank); only rank 0 prints and writes reports.
"""

from __future__ import annotations

import atexit
import datetime
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from geneval.errors import InputError, RankError
from geneval.feature_stats import FeatureStatistics
from geneval.run.passes import PassPlan, PassResult

T = TypeVar("T")

#: How long a rank waits in a collective for the others. Ranks normally arrive within a batch
#: of each other, but a rank that met bad input waits at :func:`agree` until the others have
#: finished their shards (so that every rank reports the same error): the bound is a day. A
#: rank that dies is noticed by the launcher (torchrun, ``--nproc``), which stops the others.
COLLECTIVE_TIMEOUT = datetime.timedelta(hours=24)

#: Set by ``geneval run --nproc`` in the environment of the ranks it spawns.
LAUNCHED_ENV = "GENEVAL_LAUNCHED"


@dataclass(frozen=True)
class DistContext:
    """This process's place in the run: its rank, the number of ranks, and the device the
    collectives' tensors live on (CPU for gloo, this rank's GPU for NCCL)."""

    rank: int = 0
    world_size: int = 1
    comm_device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that prints, writes reports and fills the feature cache."""
        return self.rank == 0


def _dist() -> Any:
    import torch.distributed as dist

    return dist


def context() -> DistContext:
    """The current context: the initialised default process group, else a single process."""
    dist = _dist()
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    if dist.get_backend() == "nccl":
        comm = torch.device("cuda", torch.cuda.current_device())
    else:
        comm = torch.device("cpu")
    return DistContext(dist.get_rank(), dist.get_world_size(), comm)


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise InputError(f"environment variable {name}={value!r} is not an integer") from None


def launched_world_size() -> int:
    """``WORLD_SIZE`` of the environment (torchrun's or ``--nproc``'s); 1 when unset."""
    return _env_int("WORLD_SIZE", 1)


def under_torchrun() -> bool:
    """Whether this process is a rank started by torchrun (or another launcher setting
    ``WORLD_SIZE``) rather than by ``geneval run --nproc``."""
    return "WORLD_SIZE" in os.environ and not os.environ.get(LAUNCHED_ENV)


def rank_device(spec: str | torch.device, local_rank: int) -> str | torch.device:
    """The device of a rank: ``auto`` and ``cuda`` mean this node's GPU ``LOCAL_RANK`` (when
    CUDA is there, for ``auto``); ``cpu`` and ``cuda:N`` are taken as given."""
    if isinstance(spec, torch.device):
        return spec
    if spec == "cuda" or (spec in (None, "auto") and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            return spec  # resolve_device names the problem
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise InputError(
                f"rank with LOCAL_RANK={local_rank} has no GPU of its own: this node has "
                f"{count} CUDA device(s) (start at most {count} ranks per node, or use "
                "--device cpu)"
            )
        return f"cuda:{local_rank}"
    return spec


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group the environment describes (torchrun's variables), with NCCL
    for a GPU ``device`` and gloo otherwise; a no-op for one process or when a group exists.

    A rendezvous that cannot start (a missing ``MASTER_ADDR``, a bad ``RANK``) is an
    :class:`InputError` naming the cause.
    """
    dist = _dist()
    world = launched_world_size()
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return context()
    rank = _env_int("RANK", -1)
    if not 0 <= rank < world:
        raise InputError(f"RANK={os.environ.get('RANK')!r} must be in [0, WORLD_SIZE={world})")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise InputError(f"WORLD_SIZE={world} but {name} is not set (start with torchrun)")
    if not dist.is_available():
        raise InputError("this torch build has no torch.distributed: run one process")
    backend = "nccl" if device.type == "cuda" else "gloo"
    kwargs: dict[str, Any] = {}
    if backend == "nccl":
        torch.cuda.set_device(device)
        kwargs["device_id"] = device
    try:
        dist.init_process_group(backend, timeout=COLLECTIVE_TIMEOUT, **kwargs)
    except (RuntimeError, ValueError) as exc:
        raise InputError(
            f"cannot join the {backend} process group of {world} ranks: {exc}".splitlines()[0]
        ) from None
    atexit.register(_destroy)
    return context()


def _destroy() -> None:
    dist = _dist()
    if dist.is_initialized():
        try:
            dist.destroy_process_group()
        except Exception:  # noqa: BLE001 - nothing is left to do at exit
            pass


def shard_range(count: int, unit: int, rank: int, world_size: int) -> tuple[int, int]:
    """Images ``[start, stop)`` of rank ``rank``: contiguous whole blocks of ``unit`` images.

    With ``B = ⌈count / unit⌉`` blocks, rank ``r`` takes blocks ``⌊r·B/R⌋`` to
    ``⌊(r+1)·B/R⌋``; shards differ by at most one block and concatenate, in rank order, to
    the whole source.
    """
    unit = max(1, int(unit))
    blocks = -(-count // unit)
    lo = rank * blocks // world_size
    hi = (rank + 1) * blocks // world_size
    return min(lo * unit, count), min(hi * unit, count)


# -- collectives -------------------------------------------------------------------------------


def all_gather_objects(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order."""
    if not ctx.distributed:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    _dist().all_gather_object(out, obj)
    return out


def broadcast_object(ctx: DistContext, obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if not ctx.distributed:
        return obj
    box = [obj if ctx.rank == src else None]
    _dist().broadcast_object_list(box, src=src)
    return box[0]


def sum_ints(ctx: DistContext, values: list[int]) -> list[int]:
    """Element-wise sums over the ranks of a list of integers (same length on every rank)."""
    if not ctx.distributed or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.int64, device=ctx.comm_device)
    _dist().all_reduce(t)
    return [int(v) for v in t.cpu()]


def max_floats(ctx: DistContext, values: list[float]) -> list[float]:
    """Element-wise maxima over the ranks of a list of floats (same length on every rank)."""
    if not ctx.distributed or not values:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=ctx.comm_device)
    _dist().all_reduce(t, op=_dist().ReduceOp.MAX)
    return [float(v) for v in t.cpu()]


def sum_tensor(ctx: DistContext, tensor: torch.Tensor) -> torch.Tensor:
    """The sum over the ranks of ``tensor`` (same shape and dtype on every rank), returned on
    ``tensor``'s device."""
    if not ctx.distributed:
        return tensor
    moved = tensor.to(ctx.comm_device).contiguous()
    _dist().all_reduce(moved)
    return moved.to(tensor.device)


def gather_rows(ctx: DistContext, rows: torch.Tensor) -> torch.Tensor:
    """Every rank's rows ``(n_r, ...)`` concatenated in rank order, on ``rows``' device.

    Shards differ in length, and ``all_gather`` needs equal shapes: each rank pads to the
    longest shard and the padding is cut off after the gather. The trailing shape and dtype
    must agree across ranks.
    """
    if not ctx.distributed:
        return rows
    counts = all_gather_objects(ctx, int(rows.shape[0]))
    longest = max(counts)
    if longest == 0:
        return rows
    padded = torch.zeros((longest, *rows.shape[1:]), dtype=rows.dtype, device=ctx.comm_device)
    padded[: rows.shape[0]] = rows.to(ctx.comm_device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    _dist().all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, counts, strict=True)]).to(rows.device)


def agree(ctx: DistContext, error: BaseException | None) -> None:
    """End a step every rank took part in: if any rank failed, raise on every rank.

    The failing rank re-raises its own exception (with its traceback); the others raise the
    first failing rank's error: an :class:`InputError` with the same one-line message for bad
    input, else a :class:`RankError` naming the rank. Errors raised here are marked
    ``shared``, so that ranks other than 0 need not print them again.
    """
    if not ctx.distributed:
        if error is not None:
            raise error
        return
    mine = None
    if error is not None:
        text = str(error).splitlines()[0] if str(error) else type(error).__name__
        mine = (isinstance(error, InputError), type(error).__name__, text)
    statuses = all_gather_objects(ctx, mine)
    for rank, status in enumerate(statuses):
        if status is None:
            continue
        if error is not None:
            error.shared = True  # type: ignore[attr-defined]
            raise error
        is_input, name, text = status
        raised: Exception = (
            InputError(text) if is_input else RankError(f"rank {rank}: {name}: {text}")
        )
        raised.shared = True  # type: ignore[attr-defined]
        raise raised


def collectively(ctx: DistContext, step: Callable[[], T]) -> T:
    """Run ``step`` on this rank, then :func:`agree` with the others; returns its value."""
    try:
        value = step()
    except Exception as exc:  # noqa: BLE001 - passed on to every rank by agree()
        agree(ctx, exc)
        raise  # agree() re-raises; this line only satisfies type checkers
    agree(ctx, None)
    return value


def map_shards(
    count: int, unit: int, solve: Callable[[int, int], tuple[torch.Tensor, ...]]
) -> tuple[torch.Tensor, ...]:
    """Per-row work of a metric, split across the ranks of a sharded run.

    This rank calls ``solve(start, stop)`` on its shard ``[start, stop)`` of ``count`` rows
    in whole blocks of ``unit`` (:func:`shard_range`); ``solve`` returns tensors of
    ``stop − start`` rows each. Every rank gets back the rows of all ranks in source order
    (:func:`gather_rows`), and an error on any rank is raised on every rank
    (:func:`collectively`), so no rank waits on another's work. In a single process this is
    ``solve(0, count)``.
    """
    ctx = context()
    start, stop = shard_range(count, unit, ctx.rank, ctx.world_size)
    parts = collectively(ctx, lambda: solve(start, stop))
    return tuple(gather_rows(ctx, part) for part in parts)


def merge_statistics(ctx: DistContext, stats: FeatureStatistics) -> FeatureStatistics:
    """The statistics of every rank's features from each rank's ``stats`` (the same on every
    rank; ``stats`` itself when not distributed).

    The parallel form of Chan, Golub & LeVeque's pairwise update (1979, 1983), in three
    collectives: the ranks agree on one shift ``c`` (that of the first rank holding features,
    broadcast), all-reduce their shifted sums ``Σ(x − c)`` moved onto it, then all-reduce
    their co-moments each re-centred on the common mean,
    ``M₂ = Σᵣ M₂ʳ + nʳ(x̄ʳ − x̄)(x̄ʳ − x̄)ᵀ``. Nothing subtracts two large numbers, so the
    merged moments equal one process's up to round-off, whatever the features' offset. A rank
    with no features contributes zeros.
    """
    if not ctx.distributed:
        return stats
    counts = [int(c) for c in all_gather_objects(ctx, int(stats.n))]
    n = sum(counts)
    holders = [rank for rank, count in enumerate(counts) if count > 0]
    if not holders:
        return FeatureStatistics(stats.dim, stats.device)
    shift = stats.shift.to(device=ctx.comm_device, dtype=torch.float64).contiguous().clone()
    _dist().broadcast(shift, src=holders[0])
    shift = shift.to(stats.device)
    zeros = torch.zeros_like(stats.shifted_sum)
    moved = stats.shifted_sum + stats.n * (stats.shift - shift) if stats.n else zeros
    shifted_sum = sum_tensor(ctx, moved.clone())  # all-reduced in place on a CPU group
    comoment = torch.zeros_like(stats.comoment)
    if stats.n:
        apart = moved / stats.n - shifted_sum / n  # x̄ʳ − x̄, both about the common shift
        comoment = stats.comoment + stats.n * torch.outer(apart, apart)
    comoment = sum_tensor(ctx, comoment)
    return FeatureStatistics.from_shifted(n, shift, shifted_sum, comoment)


def gather_pass_result(
    ctx: DistContext,
    local: PassResult,
    plan: PassPlan,
    dims: dict[tuple[str, str], int],
    *,
    description: str,
    device: torch.device,
) -> PassResult:
    """The pass over the whole source from every rank's pass over its shard.

    Counts are summed, image sizes united, feature moments merged in float64
    (:func:`merge_statistics`), per-sample outputs and kept images gathered in rank order.
    ``dims`` gives the dimension of each ``(extractor, output)`` so that a rank whose shard is
    empty contributes empty rows and empty statistics (on ``device``, the run's). Kept images
    of different sizes on different ranks are an :class:`InputError`, as they are in one
    process.
    """
    if not ctx.distributed:
        return local
    shape = tuple(local.images.shape[1:]) if local.images is not None else None
    shared = all_gather_objects(ctx, (local.count, sorted(local.sizes), shape))
    count = sum(c for c, _, _ in shared)
    sizes = {tuple(s) for _, found, _ in shared for s in found}
    moments: dict[str, FeatureStatistics] = {}
    for name, output in sorted(plan.moments.items()):
        stats = local.moments.get(name)
        if stats is None:
            stats = FeatureStatistics(dims[(name, output)], device)
        moments[name] = merge_statistics(ctx, stats)
    outputs: dict[tuple[str, str], torch.Tensor] = {}
    for name, outs in sorted(plan.outputs.items()):
        for output in sorted(outs):
            rows = local.outputs.get((name, output))
            if rows is None:
                rows = torch.zeros((0, dims[(name, output)]), dtype=torch.float32)
            outputs[(name, output)] = gather_rows(ctx, rows)
    images = None
    if plan.keep_images:
        shapes = {s for _, _, s in shared if s is not None}
        if len(shapes) > 1:
            raise InputError(f"{description}: images of different sizes cannot be compared")
        if shapes:
            (image_shape,) = shapes
            rows = local.images
            if rows is None:
                rows = torch.zeros((0, *image_shape), dtype=torch.float32)
            images = gather_rows(ctx, rows)
    first: list[torch.Tensor] = []
    if plan.keep_first:  # the first images of the source: rank order, as many as asked for
        for shown in all_gather_objects(ctx, local.first):
            first.extend(shown[: plan.keep_first - len(first)])
    return PassResult(
        count=count, images=images, outputs=outputs, moments=moments, sizes=sizes, first=first
    )
