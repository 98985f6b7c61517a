"""Plugin discovery, the allowlist from plugins.toml, and one plugin manager per app.

Every plugin, built-ins included, is found through the ``kernel.plugins`` entry-point
group; the kernel never imports a plugin by name. A plugin that is installed but not
enabled is never imported.
"""

from __future__ import annotations

import importlib.metadata as md
from dataclasses import dataclass, field
from typing import Any

import pluggy
from pydantic import BaseModel, ValidationError

from kernel import hookspecs
from kernel.config import Settings, format_validation_error
from kernel.errors import ConfigError

ENTRY_POINT_GROUP = "kernel.plugins"
OWN_DISTRIBUTION = "agentkernel"
_SOURCE_ORDER = {"built-in": 0, "third-party": 1, "in-process": 2}


class PluginLoadError(Exception):
    """An enabled plugin failed to import or register; the cause is chained."""


@dataclass
class PluginRecord:
    """What ``kernel plugins list`` shows about one installed plugin."""

    name: str
    entry_point: str
    distribution: str
    version: str
    source: str  # "built-in" or "third-party"
    enabled: bool
    hooks: list[str] = field(default_factory=list)
    routes: list[dict[str, str]] = field(default_factory=list)
    providers: list[str] = field(default_factory=list)
    tools: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "source": self.source,
            "distribution": self.distribution,
            "entry_point": self.entry_point,
            "enabled": self.enabled,
            "hooks": self.hooks,
            "routes": self.routes,
            "providers": self.providers,
            "tools": self.tools,
        }


def installed_entry_points() -> dict[str, md.EntryPoint]:
    """Installed plugins by name; a later duplicate name is an error, never a silent pick."""
    found: dict[str, md.EntryPoint] = {}
    for ep in md.entry_points(group=ENTRY_POINT_GROUP):
        if ep.name in found and found[ep.name].value != ep.value:
            raise PluginLoadError(
                f"two installed plugins are both named {ep.name!r}: {found[ep.name].value} and {ep.value}"
            )
        found[ep.name] = ep
    return found


def new_plugin_manager() -> pluggy.PluginManager:
    """A fresh manager with the kernel's hookspecs; one per app, never at import time."""
    pm = pluggy.PluginManager("kernel")
    pm.add_hookspecs(hookspecs)
    return pm


@dataclass
class LoadedPlugins:
    """The result of :func:`load_plugins`."""

    pm: pluggy.PluginManager
    records: dict[str, PluginRecord]
    settings: dict[str, BaseModel | None]


def load_plugins(
    settings: Settings,
    *,
    entry_points: dict[str, md.EntryPoint] | None = None,
    extra: dict[str, object] | None = None,
) -> LoadedPlugins:
    """Import and register every enabled plugin, then validate its ``[plugins.NAME]`` table.

    ``extra`` registers plugin objects directly (tests use it for one-off plugins); they
    count as enabled and may have a ``[plugins.NAME]`` table of their own.
    """
    eps = installed_entry_points() if entry_points is None else entry_points
    extra = extra or {}
    known = set(eps) | set(extra)
    for name in settings.plugins:
        if name not in known:
            raise ConfigError(
                f"{settings.path}: [plugins.{name}] names a plugin that is not installed; "
                f"installed plugins: {', '.join(sorted(known)) or '(none)'}"
            )
    enabled = settings.enabled_plugins() | set(extra)
    for name, table in settings.plugins.items():
        value = table.get("enabled", False)
        if not isinstance(value, bool):
            raise ConfigError(f"{settings.path}: [plugins.{name}] enabled must be true or false")

    pm = new_plugin_manager()
    records: dict[str, PluginRecord] = {}
    # Registration order (which startup hooks, routes and providers follow): built-in
    # plugins first, then third-party ones, then in-process ones, each by name.
    ordered = sorted((_record_for(name, eps.get(name), enabled=name in enabled) for name in known),
                     key=lambda r: (_SOURCE_ORDER.get(r.source, 3), r.name))
    for record in ordered:
        name = record.name
        ep = eps.get(name)
        records[name] = record
        if name not in enabled:
            continue  # never import a plugin that is not enabled
        if name in extra:
            obj = extra[name]
        else:
            assert ep is not None
            try:
                obj = ep.load()
            except Exception as exc:
                raise PluginLoadError(
                    f"plugin {name!r} (entry point {ep.value!r}) failed to import: {exc}"
                ) from exc
        try:
            pm.register(obj, name=name)
        except Exception as exc:
            raise PluginLoadError(
                f"plugin {name!r} (entry point {record.entry_point!r}) failed to register: {exc}"
            ) from exc
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginLoadError(f"a plugin implements a hook that does not exist: {exc}") from exc

    for name, record in records.items():
        if record.enabled:
            record.hooks = sorted(hook for hook, _ in _hook_names_of(pm, name))
    plugin_settings = {
        name: _validate_plugin_settings(pm, settings, name) for name, rec in records.items() if rec.enabled
    }
    return LoadedPlugins(pm=pm, records=records, settings=plugin_settings)


def per_plugin(pm: pluggy.PluginManager, hook_name: str) -> list[tuple[str, Any]]:
    """``(plugin_name, implementation)`` pairs for one hook, in registration order.

    The kernel calls composition hooks one plugin at a time so it knows which plugin
    contributed which route, provider or settings model.
    """
    caller = getattr(pm.hook, hook_name)
    # get_hookimpls() lists implementations in registration order, except that pluggy
    # files ``tryfirst`` ones at the end and ``trylast`` ones at the start (it calls the
    # list back to front). A stable sort restores "tryfirst, then registration order, then trylast".
    impls = sorted(caller.get_hookimpls(), key=lambda i: 0 if i.tryfirst else 2 if i.trylast else 1)
    return [(impl.plugin_name, impl.function) for impl in impls]


def _hook_names_of(pm: pluggy.PluginManager, plugin_name: str) -> list[tuple[str, Any]]:
    plugin = pm.get_plugin(plugin_name)
    callers = pm.get_hookcallers(plugin) or []
    return [(c.name, c) for c in callers]


def _validate_plugin_settings(pm: pluggy.PluginManager, settings: Settings, name: str) -> BaseModel | None:
    table = {k: v for k, v in settings.plugins.get(name, {}).items() if k != "enabled"}
    model: type[BaseModel] | None = None
    for plugin_name, impl in per_plugin(pm, "register_settings"):
        if plugin_name == name:
            model = impl()
    where = f"plugins.{name}"
    if model is None:
        if table:
            raise ConfigError(
                f"{settings.path}: [{where}] unknown key {next(iter(table))!r}; "
                f"plugin {name!r} takes no options besides 'enabled'"
            )
        return None
    try:
        return model.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, settings.path, model=model, table=where)) from None


def _record_for(name: str, ep: md.EntryPoint | None, *, enabled: bool) -> PluginRecord:
    if ep is None:
        return PluginRecord(name, "(registered in-process)", "(none)", "", "in-process", enabled)
    dist = ep.dist
    dist_name = dist.metadata["Name"] if dist is not None else "(unknown)"
    version = dist.version if dist is not None else ""
    source = "built-in" if dist_name == OWN_DISTRIBUTION else "third-party"
    return PluginRecord(name, ep.value, dist_name, version, source, enabled)
