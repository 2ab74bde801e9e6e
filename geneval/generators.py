"""Any generator as the samples of a run: a model family's checkpoint or the user's own code.

``--model`` (``model=`` in the Python API) names one of

* a model family, ``NAME`` with ``--checkpoint PATH_OR_ID``, or the shorthand
  ``NAME:CHECKPOINT`` (``diffusers:google/ddpm-cifar10-32``): the family loads it;
* the user's own generator, ``module.path:attribute`` (as ``uvicorn main:app`` names an
  application): the module is imported — it is the user's own code, named by them, so it is
  expected to run — with the working folder first on ``sys.path``.

A Python object given as the samples (``evaluate(samples=G, num_samples=N)``) or imported by
``module.path:attribute`` is adopted by :func:`adopt`, the first that fits of:

1. a :class:`~geneval.api.GenerativeModel` (it samples as it is);
2. a model family's ``adopt(obj)`` (the ``diffusers`` family adopts a pipeline object);
3. an ``nn.Module`` with ``sample(n, generator=...)``;
4. a callable ``G(n, generator) -> images``.

The last two become a :class:`GeneratorModel`: its images may be a tensor or an array, NCHW
or NHWC by the one rule of :func:`geneval.sources.image_layout`, uint8 in ``[0, 255]`` or float
in ``[0, 1]``. Every generator is sampled by :class:`geneval.sources.ModelSource` under the same
rules as the bundled families: blocks seeded by ``(seed, first index)``, or one generator per
sample for a model that takes them (:class:`~geneval.capabilities.SupportsPerSampleGenerators`),
so that a sharded run draws what one process draws.

Conditioning (:func:`conditions`): a class-conditional model
(:class:`~geneval.capabilities.SupportsClassLabels`) gets labels balanced over its classes
(:func:`balanced_labels`) or read from ``--labels FILE``; a text-to-image model
(:class:`~geneval.capabilities.SupportsPrompts`) gets the prompts of ``--prompts FILE``
(:func:`read_prompts`), cycled to the number of samples. They travel with the samples as the
``labels`` and ``captions`` inputs.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from geneval.capabilities import SupportsClassLabels, SupportsPrompts
from geneval.errors import InputError
from geneval.text import quote

if TYPE_CHECKING:
    import torch

    from geneval.api import GenerativeModel
    from geneval.plugins import Registry

#: The ``--opt`` prefix of a model's sample options (``--opt model.guidance_scale=4``).
MODEL_OPTION_PREFIX = "model"
#: The most bytes a ``--prompts`` or ``--labels`` file may hold.
MAX_CONDITION_FILE_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class ModelSpec:
    """What ``--model`` names: a registered ``family`` (with its ``checkpoint``, if any), or
    the ``target`` ``module.path:attribute`` of the user's own generator."""

    family: str | None = None
    checkpoint: str | None = None
    target: str | None = None

    @property
    def name(self) -> str:
        """How reports name the model: the family, or the target."""
        return self.family if self.family is not None else str(self.target)


def parse_model(spec: str, checkpoint: str | Path | None, registry: Registry) -> ModelSpec:
    """Read ``--model`` (and ``--checkpoint``) by the rules of the module docstring.

    ``NAME:CHECKPOINT`` is a family's shorthand when ``NAME`` is a registered family, else the
    spec is ``module.path:attribute``. A spec without a colon must be a registered family.
    """
    families = registry.items("model")
    head, colon, tail = spec.partition(":")
    if not colon:
        registry.model(spec)  # an unknown family is an InputError listing the known ones
        return ModelSpec(family=spec, checkpoint=None if checkpoint is None else str(checkpoint))
    if head in families:
        if not tail:
            raise InputError(f"--model {quote(spec)}: give the checkpoint after the colon")
        if checkpoint is not None:
            raise InputError(
                f"--model {quote(spec)} names its checkpoint already: drop --checkpoint"
            )
        return ModelSpec(family=head, checkpoint=tail)
    if not head or not tail or not all(part.isidentifier() for part in head.split(".")):
        raise InputError(
            f"--model {quote(spec)}: not a model family ({', '.join(sorted(families))}) nor "
            "module.path:attribute"
        )
    if not all(part.isidentifier() for part in tail.split(".")):
        raise InputError(f"--model {quote(spec)}: {quote(tail)} is not an attribute name")
    if checkpoint is not None:
        raise InputError(f"--checkpoint is for a model family, not {quote(spec)}")
    return ModelSpec(target=spec)


def import_target(target: str) -> Any:
    """The object ``module.path:attribute`` names, importing the module with the working
    folder first on ``sys.path`` (the user's own code, which they named)."""
    module_name, _, attribute = target.partition(":")
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and module_name.startswith(exc.name):
            raise InputError(
                f"--model {quote(target)}: no module {quote(exc.name)} (from the working folder "
                "or the installed packages)"
            ) from None
        raise
    finally:
        if added and cwd in sys.path:
            sys.path.remove(cwd)
    obj: Any = module
    for part in attribute.split("."):
        if not hasattr(obj, part):
            raise InputError(f"--model {quote(target)}: module {module_name} has no {attribute}")
        obj = getattr(obj, part)
    return obj


def load_model(spec: ModelSpec, registry: Registry, device: torch.device) -> GenerativeModel:
    """The model ``spec`` names, loaded onto ``device``: a family's checkpoint (its bundled one
    without ``checkpoint``), or the user's generator, adopted (:func:`adopt`)."""
    if spec.target is not None:
        return adopt(import_target(spec.target), registry, device, what=spec.target)
    family = registry.model(str(spec.family))
    return family.load(None if spec.checkpoint is None else Path(spec.checkpoint), device=device)


def adopt(obj: Any, registry: Registry, device: torch.device, *, what: str) -> GenerativeModel:
    """A :class:`~geneval.api.GenerativeModel` for ``obj`` (the order of the module
    docstring); anything else is an :class:`InputError` naming ``what``."""
    import torch

    from geneval.api import GenerativeModel

    if isinstance(obj, GenerativeModel):
        return obj
    for name in registry.items("model"):
        adopted = registry.model(name).adopt(obj, device=device)
        if adopted is not None:
            return adopted
    if isinstance(obj, torch.nn.Module) and callable(getattr(obj, "sample", None)):
        return GeneratorModel(obj.sample, device=_module_device(obj, device), name=what)
    if callable(obj) and not isinstance(obj, type):
        return GeneratorModel(obj, device=device, name=what)
    raise InputError(
        f"{what}: a {type(obj).__name__} is not a generator (give a callable G(n, generator) "
        "-> images, an nn.Module with sample(n, generator=...), or a pipeline a model family "
        "adopts)"
    )


def _module_device(module: Any, fallback: torch.device) -> torch.device:
    for tensor in (*module.parameters(), *module.buffers()):
        return tensor.device
    return fallback


class GeneratorModel:
    """The user's generator, ``draw(n, generator) -> images``, as a
    :class:`~geneval.api.GenerativeModel` (see the module docstring).

    The images it returns are checked and converted by :func:`generated_images`;
    ``image_shape`` is known after the first draw. It offers no samplers: ``--sampler`` and
    ``--steps`` are refused.
    """

    def __init__(self, draw: Any, *, device: torch.device, name: str) -> None:
        self.draw = draw
        self.device = device
        self.name = name
        self.image_shape: tuple[int, int, int] | None = None
        self.config: Mapping[str, Any] = {"generator": name}

    def sample(
        self,
        n: int,
        *,
        batch_size: int,
        generator: torch.Generator,
        sampler: str | None = None,
        steps: int | None = None,
    ) -> torch.Tensor:
        """``n`` images from one call ``draw(n, generator)``, float32 NCHW in ``[0, 1]``."""
        import torch

        if sampler is not None or steps is not None:
            raise InputError(f"{self.name}: the generator takes no --sampler nor --steps")
        with torch.no_grad():
            out = self.draw(n, generator)
        images = generated_images(out, n, what=self.name)
        shape = tuple(int(v) for v in images.shape[1:])
        if self.image_shape is None:
            self.image_shape = shape  # type: ignore[assignment]
        elif shape != self.image_shape:
            raise InputError(
                f"{self.name} returned images of shape {shape} after {self.image_shape}"
            )
        return images.to(self.device)


def generated_images(out: Any, n: int, *, what: str) -> torch.Tensor:
    """A generator's output as float32 NCHW in ``[0, 1]``: a tensor or an array of ``n``
    images, NCHW or NHWC (:func:`~geneval.sources.image_layout`), uint8 in ``[0, 255]`` or
    float in ``[0, 1]``; anything else is an :class:`InputError` naming ``what``."""
    import numpy as np
    import torch

    from geneval.sources import image_layout, standard_strides

    if isinstance(out, np.ndarray):
        out = torch.from_numpy(np.ascontiguousarray(out))
    if not isinstance(out, torch.Tensor):
        raise InputError(f"{what} returned a {type(out).__name__}, not a tensor or an array")
    out = out.detach()
    if out.ndim != 4 or out.shape[0] != n:
        raise InputError(
            f"{what} was asked for {n} images and returned shape {tuple(out.shape)} "
            "(expected (n, C, H, W) or (n, H, W, C))"
        )
    if image_layout(out.shape, "auto", f"the output of {what}") == "nhwc":
        out = out.permute(0, 3, 1, 2)
    if out.dtype == torch.uint8:
        return standard_strides(out.float().div_(255.0))
    if not out.is_floating_point():
        raise InputError(f"{what} returned {out.dtype} images (expected uint8 or float)")
    images = out.float()
    finite = bool(torch.isfinite(images).all())
    low, high = (float(images.min()), float(images.max())) if finite else (0.0, 0.0)
    if not finite or low < 0.0 or high > 1.0:
        found = "non-finite values" if not finite else f"values in [{low:.4g}, {high:.4g}]"
        raise InputError(
            f"{what} returned {found}: float images must lie in [0, 1] (map [-1, 1] outputs "
            "with (x + 1) / 2)"
        )
    return standard_strides(images)


# -- conditioning ------------------------------------------------------------------------------


def balanced_labels(count: int, num_classes: int, seed: int) -> torch.Tensor:
    """``count`` class labels balanced over ``num_classes`` (their counts differ by at most one)
    in a seeded random order: ``y_i = π(i) mod C`` with π a permutation of ``0..count−1``
    drawn from a generator seeded with ``sha256("geneval-labels" ‖ seed)``. The labels depend
    only on the seed and the count, never on the batch size or the shard."""
    import torch

    digest = hashlib.sha256(b"geneval-labels" + int(seed).to_bytes(8, "big", signed=True))
    generator = torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "big") >> 1)
    return torch.randperm(count, generator=generator) % num_classes


def _read_small(path: Path, what: str) -> bytes:
    if not path.is_file():
        raise InputError(f"{what} {quote(path)} is not a file")
    size = path.stat().st_size
    if size > MAX_CONDITION_FILE_BYTES:
        raise InputError(f"{what} {quote(path)} holds {size} bytes (at most 256 MiB)")
    return path.read_bytes()


def read_labels(path: Path, count: int, num_classes: int) -> torch.Tensor:
    """The class labels of ``--labels FILE``: an ``.npy`` of integers, or text with one integer
    per line; cycled to ``count``. A label outside ``[0, num_classes)`` is an
    :class:`InputError` naming the file, the line and the label."""
    import numpy as np
    import torch

    if path.suffix == ".npy":
        from geneval.arrayfile import open_npy

        if not path.is_file():
            raise InputError(f"--labels {quote(path)} is not a file")
        values = np.array(open_npy(path, f"--labels {quote(path)}")).reshape(-1)
        if values.dtype.kind not in "iu":
            raise InputError(
                f"--labels {quote(path)}: integer labels expected, found {values.dtype}"
            )
    else:
        text = _decode(_read_small(path, "--labels"), path, "--labels")
        lines = [line.strip() for line in text.splitlines()]
        try:
            values = np.array([int(line) for line in lines if line], dtype=np.int64)
        except ValueError:
            bad = next(i for i, line in enumerate(lines, 1) if line and not _is_int(line))
            raise InputError(
                f"--labels {quote(path)} line {bad}: {quote(lines[bad - 1])} is not an integer"
            ) from None
    if values.size == 0:
        raise InputError(f"--labels {quote(path)} holds no labels")
    outside = (values < 0) | (values >= num_classes)
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise InputError(
            f"--labels {quote(path)}: label {int(values[i])} (entry {i + 1}) is outside the "
            f"model's classes [0, {num_classes})"
        )
    return torch.from_numpy(np.resize(values.astype(np.int64), count))


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def _decode(data: bytes, path: Path, what: str) -> str:
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(f"{what} {quote(path)} is not UTF-8 text (byte {exc.start})") from None


def read_prompts(path: Path, count: int) -> list[str]:
    """The prompts of ``--prompts FILE``, cycled to ``count``: one prompt per line of a text
    file (empty lines skipped), or a ``.jsonl`` whose lines are objects with a ``prompt``
    string (and an optional ``id``). An empty or non-UTF-8 file is an :class:`InputError`."""
    text = _decode(_read_small(path, "--prompts"), path, "--prompts")
    prompts: list[str] = []
    if path.suffix == ".jsonl":
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                raise InputError(f"--prompts {quote(path)} line {number} is not JSON") from None
            prompt = record.get("prompt") if isinstance(record, dict) else None
            if not isinstance(prompt, str):
                raise InputError(f"--prompts {quote(path)} line {number} has no string 'prompt'")
            prompts.append(prompt)
    else:
        prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise InputError(f"--prompts {quote(path)} holds no prompts")
    return [prompts[i % len(prompts)] for i in range(count)]


def conditions(
    model: Any,
    count: int,
    *,
    seed: int,
    labels: Path | Sequence[int] | None = None,
    prompts: Path | Sequence[str] | None = None,
) -> dict[str, Any]:
    """What a model's samples are conditioned on: ``{"labels": LongTensor}`` for a
    class-conditional model, ``{"prompts": [str, ...]}`` for a text-to-image one, ``{}`` for
    an unconditional one; each of ``count`` entries (see the module docstring). ``labels`` or
    ``prompts`` given to a model that takes none is an :class:`InputError`."""
    import torch

    out: dict[str, Any] = {}
    if isinstance(model, SupportsClassLabels):
        if labels is None:
            out["labels"] = balanced_labels(count, int(model.num_classes), seed)
        elif isinstance(labels, Path):
            out["labels"] = read_labels(labels, count, int(model.num_classes))
        else:
            values = torch.as_tensor(list(labels), dtype=torch.int64)
            if values.numel() == 0 or values.min() < 0 or values.max() >= model.num_classes:
                raise InputError(f"labels must lie in [0, {model.num_classes})")
            out["labels"] = values.repeat((count + values.numel() - 1) // values.numel())[:count]
    elif labels is not None:
        raise InputError("--labels: the model is not class-conditional")
    if isinstance(model, SupportsPrompts) and model.takes_prompts:
        if prompts is None:
            raise InputError("the model draws from text prompts: give --prompts FILE")
        if isinstance(prompts, Path):
            out["prompts"] = read_prompts(prompts, count)
        else:
            given = [str(p) for p in prompts]
            if not given:
                raise InputError("prompts: give at least one prompt")
            out["prompts"] = [given[i % len(given)] for i in range(count)]
    elif prompts is not None:
        raise InputError("--prompts: the model does not take text prompts")
    return out


# -- the model's sample options and its source -------------------------------------------------


def split_model_options(
    assignments: Sequence[str] | Mapping[str, Mapping[str, Any]],
) -> tuple[Sequence[str] | Mapping[str, Mapping[str, Any]], dict[str, Any]]:
    """``(metric options, model options)``: the ``--opt model.KEY=VALUE`` assignments (or the
    ``"model"`` entry of the Python API's mapping) taken out of the metrics' options."""
    from geneval.options import split_assignment

    if isinstance(assignments, Mapping):
        rest = {k: v for k, v in assignments.items() if k != MODEL_OPTION_PREFIX}
        given = assignments.get(MODEL_OPTION_PREFIX, {})
        if not isinstance(given, Mapping):
            raise InputError("options['model']: expected a mapping of option values")
        return rest, dict(given)
    metric_side: list[str] = []
    model_side: dict[str, Any] = {}
    for text in assignments:
        key, raw = split_assignment(text)
        owner, dot, option = key.partition(".")
        if owner == MODEL_OPTION_PREFIX and dot and option:
            model_side[option] = raw
        else:
            metric_side.append(text)
    return metric_side, model_side


def sample_options(
    model: Any, given: Mapping[str, Any], *, name: str, precision: str | None = None
) -> dict[str, Any]:
    """The model's validated sample options (:class:`~geneval.capabilities.SupportsSampleOptions`):
    its declared defaults updated by ``given``. A model that declares a ``dtype`` option
    samples in the run's ``precision`` (``fp16``, ``bf16``) unless ``dtype`` is given. Options
    given to a model that declares none are an :class:`InputError`."""
    from geneval.capabilities import SupportsSampleOptions
    from geneval.options import resolve_options

    if not isinstance(model, SupportsSampleOptions):
        if given:
            raise InputError(
                f"--opt model.{next(iter(given))}: model {name} takes no sample options"
            )
        return {}
    given = dict(given)
    if precision in ("fp16", "bf16") and "dtype" in model.sample_options and "dtype" not in given:
        given["dtype"] = precision
    return resolve_options(
        given, model.sample_options, owner=f"model {name}", prefix=f"{MODEL_OPTION_PREFIX}."
    )


def model_source(
    model: GenerativeModel,
    name: str,
    count: int,
    *,
    seed: int,
    sampler: str | None = None,
    steps: int | None = None,
    batch_size: int | None = None,
    labels: Path | Sequence[int] | None = None,
    prompts: Path | Sequence[str] | None = None,
    options: Mapping[str, Any] | None = None,
    precision: str | None = None,
) -> Any:
    """The :class:`~geneval.sources.ModelSource` of ``count`` samples of ``model``, described as
    ``model:NAME``, with its conditions (:func:`conditions`) and validated sample options
    (:func:`sample_options`): the one way ``geneval run``, ``geneval sample`` and the Python
    API draw from a model."""
    from geneval.sources import ModelSource

    if count < 1:
        raise InputError(f"--num-samples must be positive, got {count}")
    return ModelSource(
        f"model:{name}",
        model,
        count,
        seed=seed,
        sampler=sampler,
        steps=steps,
        batch_size=batch_size,
        conditions=conditions(model, count, seed=seed, labels=labels, prompts=prompts),
        options=sample_options(model, options or {}, name=name, precision=precision),
    )


def is_generator(obj: Any) -> bool:
    """Whether the Python API's ``samples=obj`` is a generator to draw from (a loaded model, a
    callable, an ``nn.Module`` or a pipeline) rather than images or a path."""
    from geneval.api import GenerativeModel

    if obj is None or isinstance(obj, str | Path | type):
        return False
    if isinstance(obj, GenerativeModel):
        return True
    from geneval.sources import SampleSource

    return callable(obj) and not isinstance(obj, SampleSource)


def model_report(source: Any, config: Any) -> dict[str, Any]:
    """What a report's ``config`` records about a model's samples beyond its name, checkpoint
    and sampler: the validated ``sample_options``, how the samples were conditioned
    (``labels``: the file, or ``balanced over C classes``; ``prompts``: the file, or the count
    given), and what the model itself reports under ``config["report"]`` (a diffusers
    pipeline: its class, scheduler and scheduler config, dtype)."""
    out: dict[str, Any] = {}
    options = getattr(source, "options", None)
    if options:
        out["sample_options"] = {k: _plain(v) for k, v in options.items()}
    model = getattr(source, "model", None)
    conditioned = getattr(source, "conditions", {}) or {}
    if "labels" in conditioned:
        if isinstance(config.labels, Path):
            out["labels"] = str(config.labels)
        elif config.labels is None:
            out["labels"] = f"balanced over {int(model.num_classes)} classes (seeded)"
        else:
            out["labels"] = f"{len(list(config.labels))} given"
    if "prompts" in conditioned:
        prompts = config.prompts
        out["prompts"] = str(prompts) if isinstance(prompts, Path) else f"{len(prompts)} given"
    details = model.config.get("report") if model is not None else None
    if isinstance(details, Mapping):
        out["model_details"] = {str(k): _plain(v) for k, v in details.items()}
    return out


def _plain(value: Any) -> Any:
    """``value`` as JSON can hold it (mappings, sequences, numbers, strings; else ``str``)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)
