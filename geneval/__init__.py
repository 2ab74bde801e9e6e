"""geneval: evaluation suite for generative models.

The Python API (``docs/python-api.md``): :func:`evaluate` for one call, :class:`Evaluator` to
score samples inside a training loop; bad input raises :class:`InputError`.
"""

__version__ = "0.1.0"

from geneval.errors import InputError  # noqa: E402
from geneval.hookspecs import hookimpl  # noqa: E402


def __getattr__(name: str):
    """``evaluate``, ``Evaluator`` and ``MetricError`` load torch on first use only, so that
    ``geneval --help`` and plugin imports of :mod:`geneval` stay fast."""
    if name in ("evaluate", "Evaluator", "MetricError"):
        from geneval import evaluator

        return getattr(evaluator, name)
    raise AttributeError(f"module 'geneval' has no attribute {name!r}")


__all__ = ["Evaluator", "InputError", "MetricError", "__version__", "evaluate", "hookimpl"]
