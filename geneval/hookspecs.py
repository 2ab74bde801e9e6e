"""Hook specifications of the ``geneval`` pluggy project (docs/contracts.md §2).

Every hook follows the register-callback pattern: the core calls the hook with a
``register`` function and the plugin calls ``register(obj)`` once per object it provides.
``register`` validates the object's ``name`` (lower-case ``[a-z0-9_-]+``) and refuses a
name already provided by another distribution, naming both.

A plugin module only needs to implement the hooks it uses::

    from geneval import hookimpl

    @hookimpl
    def geneval_register_metrics(register):
        register(MyMetric())

and to declare itself in its ``pyproject.toml``::

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
