"""Hook specifications of the ``geneval`` pluggy project (docs/contracts.md §2).

Every hook follows the register-callback pattern: the core calls the hook with a
``register`` function and the plugin calls ``register(obj)`` once per object it provides.
``register`` validates the object's ``name`` (lower-case ``[a-z0-9_-]+``), refuses a name
already provided by another distribution, naming both, and refuses an object that lacks a
required attribute of its protocol (:data:`geneval.api.REQUIRED_ATTRIBUTES`), naming the
distribution and the attribute.

A plugin module imports what it needs from the SDK, :mod:`geneval.plugin`, and implements
the hooks it uses::

    from geneval.plugin import hookimpl

    @hookimpl
    def geneval_register_metrics(register):
        register(MyMetric())

and declares itself in its ``pyproject.toml``::

    [project.entry-points.geneval]
    mymetric = "geneval_mymetric"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pluggy

hookspec = pluggy.HookspecMarker("geneval")
hookimpl = pluggy.HookimplMarker("geneval")

Register = Callable[[Any], None]


@hookspec
def geneval_register_metrics(register: Register) -> None:
    """Register :class:`geneval.api.Metric` objects by calling ``register(metric)``."""


@hookspec
def geneval_register_models(register: Register) -> None:
    """Register :class:`geneval.api.ModelFamily` objects by calling ``register(model)``."""


@hookspec
def geneval_register_extractors(register: Register) -> None:
    """Register :class:`geneval.api.FeatureExtractor` objects by calling ``register(extractor)``."""


@hookspec
def geneval_register_datasets(register: Register) -> None:
    """Register :class:`geneval.api.Dataset` objects by calling ``register(dataset)``."""


@hookspec
def geneval_register_commands(register: Register) -> None:
    """Register extra CLI commands: ``register(click_command)``; its name is the command's."""


@hookspec
def geneval_register_references(register: Register) -> None:
    """Register the named references a plugin resolves (``--reference NAME[:SPLIT]``), for
    ``geneval references list``: ``register(reference)``, an object with ``name`` (the
    ``--reference`` text), ``extractor``, ``convention`` (the ``--resize`` value),
    ``resolution`` (pixels, or ``None``), ``url``, ``path`` (where the file is cached) and
    ``source`` (who published it)."""
