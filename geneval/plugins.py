"""Plugin loading and the registry of metrics, models, extractors, datasets and commands.

Every plugin, bundled or third-party, is a module named by an entry point of the
``geneval`` group. Entry points are loaded one at a time and each is guarded: a module that
fails to import is reported once on stderr with its distribution and skipped, so one broken
plugin never takes the CLI down. ``GENEVAL_LOAD_PLUGINS`` (comma-separated distribution or
entry-point names; empty means bundled only) limits which third-party plugins load.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import EntryPoint, entry_points
from types import MethodType
from typing import Any

import pluggy

from geneval import hookspecs
from geneval.api import (
    OPTIONAL_ATTRIBUTES,
    PLUGIN_PROTOCOLS,
    REQUIRED_ATTRIBUTES,
    CommandOption,
    Dataset,
    FeatureExtractor,
    Metric,
    ModelFamily,
)
from geneval.errors import InputError, warn
from geneval.options import Option

GROUP = "geneval"
BUNDLED_DISTRIBUTION = "geneval"
NAME_PATTERN = re.compile(r"^[a-z0-9_-]+$")

#: Registry kinds: the hook that fills each one.
KINDS = {
    "metric": "geneval_register_metrics",
    "model": "geneval_register_models",
    "extractor": "geneval_register_extractors",
    "dataset": "geneval_register_datasets",
    "command": "geneval_register_commands",
}
#: Registry kinds filled by a hook of another kind (options that plugins add to commands).
DERIVED_KINDS = ("command_option",)


@dataclass(frozen=True)
class Provider:
    """Where a registered object came from."""

    distribution: str
    version: str
    entry_point: str


@dataclass(frozen=True)
class Registered:
    """One registered object with its provider."""

    kind: str
    name: str
    obj: Any
    provider: Provider


def conform(kind: str, obj: Any) -> str | None:
    """Check ``obj`` against its protocol and give it the optional attributes it lacks.

    Returns ``None`` when it conforms, else what is wrong (``lacks the required attribute
    'interpretation'``). A required attribute counts as lacking when the object does not have
    it, or inherits the protocol's unimplemented method. A lacking optional attribute is set
    on the object to the protocol's default (a method bound to the object), so that the core
    reads every attribute of :data:`geneval.api.REQUIRED_ATTRIBUTES` and
    :data:`geneval.api.OPTIONAL_ATTRIBUTES` directly. A metric's ``options`` and a family's
    ``train_options`` must be :class:`~geneval.options.Option` declarations.
    """
    protocol = PLUGIN_PROTOCOLS.get(kind)
    if protocol is None:  # commands and command options have no protocol of their own
        return None
    for attribute in REQUIRED_ATTRIBUTES[kind]:
        stub = protocol.__dict__.get(attribute)
        if not hasattr(obj, attribute) or (
            callable(stub) and getattr(type(obj), attribute, None) is stub
        ):
            return f"lacks the required attribute {attribute!r}"
    for attribute in OPTIONAL_ATTRIBUTES[kind]:
        if hasattr(obj, attribute):
            continue
        default = protocol.__dict__[attribute]
        try:
            setattr(obj, attribute, MethodType(default, obj) if callable(default) else default)
        except (AttributeError, TypeError):  # slots or a frozen dataclass
            return (
                f"lacks the optional attribute {attribute!r} and cannot be given its default "
                f"(subclass geneval.plugin.{protocol.__name__})"
            )
    declared = {"metric": "options", "model": "train_options"}.get(kind)
    for key, option in getattr(obj, declared).items() if declared else ():
        if not isinstance(option, Option):
            return f"declares {declared}[{key!r}] as a {type(option).__name__}, not an Option"
    return None


def _allowed(ep: EntryPoint, dist_name: str) -> bool:
    if dist_name == BUNDLED_DISTRIBUTION:
        return True
    spec = os.environ.get("GENEVAL_LOAD_PLUGINS")
    if spec is None:
        return True
    wanted = {s.strip().lower() for s in spec.split(",") if s.strip()}
    return dist_name.lower() in wanted or ep.name.lower() in wanted


def _entry_points() -> Iterator[tuple[EntryPoint, Provider]]:
    seen: set[tuple[str, str]] = set()
    for ep in sorted(
        entry_points(group=GROUP), key=lambda e: (e.dist.name if e.dist else "", e.name)
    ):
        dist = ep.dist
        dist_name = dist.name if dist is not None else "unknown"
        key = (dist_name, ep.name)
        if key in seen:  # the same distribution found twice on sys.path
            continue
        seen.add(key)
        version = dist.version if dist is not None else "unknown"
        yield ep, Provider(dist_name, version, ep.name)


class Registry:
    """Everything the loaded plugins registered, by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(GROUP)
        self.pm.add_hookspecs(hookspecs)
        self._items: dict[str, dict[str, Registered]] = {
            kind: {} for kind in (*KINDS, *DERIVED_KINDS)
        }
        self.failed: list[tuple[Provider, str]] = []

    # -- loading ---------------------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Import each allowed entry point on its own and register what its hooks provide."""
        for ep, provider in _entry_points():
            if not _allowed(ep, provider.distribution):
                continue
            try:
                module = ep.load()
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not break the CLI
                self._report_failure(provider, exc)
                continue
            self.add_plugin(module, provider)

    def add_plugin(self, plugin: Any, provider: Provider) -> None:
        """Register one plugin module or object and collect what it registers."""
        name = f"{provider.distribution}:{provider.entry_point}"
        if self.pm.get_plugin(name) is not None or self.pm.is_registered(plugin):
            return
        try:
            self.pm.register(plugin, name=name)
        except Exception as exc:  # noqa: BLE001
            self._report_failure(provider, exc)
            return
        for kind, hook_name in KINDS.items():
            hook = getattr(self.pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                if impl.plugin is not plugin:
                    continue
                try:
                    impl.function(register=self._registrar(kind, provider))
                except InputError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    self._report_failure(provider, exc)

    def _report_failure(self, provider: Provider, exc: BaseException) -> None:
        message = f"{type(exc).__name__}: {exc}".splitlines()[0]
        self.failed.append((provider, message))
        warn(
            f"plugin {provider.entry_point!r} from distribution {provider.distribution} "
            f"{provider.version} failed to load and was skipped ({message})"
        )

    def _refuse(self, provider: Provider, what: str) -> None:
        self.failed.append((provider, what))
        warn(
            f"plugin {provider.entry_point!r} from distribution {provider.distribution} "
            f"{provider.version}: {what}; it was skipped"
        )

    def _registrar(self, kind: str, provider: Provider) -> Callable[[Any], None]:
        def register(obj: Any) -> None:
            target = "command_option" if isinstance(obj, CommandOption) else kind
            name = getattr(obj, "name", None)
            if not isinstance(name, str) or not NAME_PATTERN.match(name):
                raise ValueError(f"{kind} name {name!r} is not lower-case [a-z0-9_-]+")
            problem = conform(target, obj)
            if problem is not None:
                self._refuse(provider, f"{target} {name!r} {problem}")
                return
            existing = self._items[target].get(name)
            if existing is not None and existing.obj is not obj:
                raise InputError(
                    f"{target} {name!r} is registered twice: by distribution "
                    f"{existing.provider.distribution} and by distribution {provider.distribution}"
                )
            self._items[target][name] = Registered(target, name, obj, provider)

        return register

    # -- lookup ----------------------------------------------------------------------------
    def items(self, kind: str) -> dict[str, Registered]:
        """All objects of one kind, by name."""
        return dict(self._items[kind])

    def get(self, kind: str, name: str) -> Any:
        """The object of ``kind`` called ``name``; an :class:`InputError` listing the choices."""
        try:
            return self._items[kind][name].obj
        except KeyError:
            choices = ", ".join(sorted(self._items[kind])) or "none installed"
            raise InputError(f"unknown {kind} {name!r} (available: {choices})") from None

    def metric(self, name: str) -> Metric:
        """The metric ``name``, with every attribute of its protocol (:func:`conform`)."""
        return self.get("metric", name)

    def model(self, name: str) -> ModelFamily:
        """The model family ``name``, with every attribute of its protocol."""
        return self.get("model", name)

    def extractor(self, name: str) -> FeatureExtractor:
        """The extractor ``name``, with every attribute of its protocol."""
        return self.get("extractor", name)

    def dataset(self, name: str) -> Dataset:
        """The dataset ``name``, with every attribute of its protocol."""
        return self.get("dataset", name)

    def listing(self) -> list[dict[str, str]]:
        """One row per registered object: kind, name, distribution, version."""
        rows = []
        for kind, items in self._items.items():
            for name, item in sorted(items.items()):
                rows.append(
                    {
                        "kind": kind,
                        "name": name,
                        "distribution": item.provider.distribution,
                        "version": item.provider.version,
                    }
                )
        return rows


@lru_cache(maxsize=1)
def get_registry() -> Registry:
    """The process-wide registry, built on first use from the installed entry points."""
    registry = Registry()
    registry.load_entry_points()
    return registry


def reset_registry() -> None:
    """Forget the cached registry (tests that change ``GENEVAL_LOAD_PLUGINS`` use this)."""
    get_registry.cache_clear()
