"""The run pipeline: one typed object, :class:`Run`, that every caller drives.

A run works in the steps of ``docs/contracts.md §1``, and :class:`Run`'s doors are those steps:
``resolve(role)`` the sources (:mod:`geneval.run.resolve`), ``plan(metrics)`` the typed inputs
(:mod:`geneval.run.inputs`), ``collect(roles)`` them in one pass over each source
(:mod:`geneval.run.passes`, :mod:`geneval.run.collect`), ``produce(keys)`` every input once, and
``dispatch(metrics)`` them to the metrics. ``geneval run`` (:mod:`geneval.runner`),
``geneval stats`` (:mod:`geneval.run.statistics`), :func:`geneval.evaluate`,
:class:`geneval.Evaluator` and ``--baseline`` (:mod:`geneval.baseline`) all drive those doors.

* :mod:`geneval.run.config`: :class:`RunConfig` and :data:`DEFAULTS` (no torch import);
* :mod:`geneval.run.state`: :class:`RunState`, what input producers see of a run, and
  :class:`Plan`;
* :mod:`geneval.run.pipeline`: :class:`Run`.

Only the configuration is imported eagerly; the rest on first use, so that the command
line's ``--help`` does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from geneval.run.config import DEFAULTS, RunConfig, run_config, validate_config

if TYPE_CHECKING:
    from geneval.run.pipeline import Run
    from geneval.run.state import Plan, RunState

_LAZY = {
    "Run": "geneval.run.pipeline",
    "Plan": "geneval.run.state",
    "RunState": "geneval.run.state",
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'geneval.run' has no attribute {name!r}")


__all__ = ["DEFAULTS", "Plan", "Run", "RunConfig", "RunState", "run_config", "validate_config"]
