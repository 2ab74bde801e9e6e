"""geneval: evaluation suite for generative models.

The Python API (guide: ``docs/python-api.md``; contract: ``docs/contracts.md`` §11):
:func:`evaluate` for one call, :class:`Evaluator` to score samples inside a training loop
(the reference given once, or streamed with ``update(images, real=True)``); bad input raises
:class:`InputError`, whose one-line message names settings as Python does (``reference=``,
``options['kid']['subset_size']``).
"""

__version__ = "0.1.0"

from geneval.errors import InputError  # noqa: E402


def __getattr__(name: str):
    """``evaluate``, ``Evaluator``, ``MetricError`` and ``stats`` (the function behind
    ``geneval stats``) load torch on first use only, as do ``DEFAULTS`` and ``RunConfig`` (the
    run's settings), so that ``geneval --help`` and plugin imports of :mod:`geneval` stay fast."""
    if name in ("evaluate", "Evaluator", "MetricError"):
        from geneval import evaluator

        return getattr(evaluator, name)
    if name == "stats":
        from geneval.run.statistics import stats

        return stats
    if name in ("DEFAULTS", "RunConfig"):
        from geneval.run import config

        return getattr(config, name)
    raise AttributeError(f"module 'geneval' has no attribute {name!r}")


__all__ = [
    "DEFAULTS",
    "Evaluator",
    "InputError",
    "MetricError",
    "RunConfig",
    "__version__",
    "evaluate",
    "stats",
]
