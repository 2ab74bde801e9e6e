"""geneval: evaluation suite for generative models."""

__version__ = "0.1.0"

from geneval.hookspecs import hookimpl  # noqa: E402

__all__ = ["__version__", "hookimpl"]
