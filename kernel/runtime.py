"""The kernel's runtime state, handed to every plugin: settings, agents, providers,
sessions, runs, storage, auth and the plugin manager."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy
from pydantic import BaseModel, ValidationError

from kernel.agents import Agent, AgentTable
from kernel.auth import Authenticator
from kernel.config import Settings, format_validation_error
from kernel.errors import ConfigError
from kernel.observe import Observers
from kernel.plugins import LoadedPlugins, PluginRecord, per_plugin
from kernel.providers import ProviderKind
from kernel.runs import RunRegistry
from kernel.sessions import KERNEL_SCHEMA, SessionStore
from kernel.statelock import StateDirLock
from kernel.store import Schema, Store, migrate, open_store
from kernel.store.leases import Leases
from kernel.store.migrations import MigrationError
from kernel.tools import ToolRegistry
from kernel.types import Provider

if TYPE_CHECKING:
    from quart import Quart

log = logging.getLogger("kernel")

class Kernel:
    """Everything a plugin may use at request time. One per app."""

    def __init__(self, settings: Settings, loaded: LoadedPlugins) -> None:
        self.settings = settings
        self.state_dir: Path = settings.state_dir
        self.pm: pluggy.PluginManager = loaded.pm
        self.plugins: dict[str, PluginRecord] = loaded.records
        self._plugin_settings = loaded.settings
        self.auth = Authenticator(settings.kernel.auth, self.state_dir)
        #: Request and run observers (metrics, traces, quotas): see kernel.observe.
        self.observers = Observers()
        self.store: Store = open_store(settings.kernel.store.url, self.state_dir,
                                       pool_size=settings.kernel.store.pool_size)
        self.store.observers = self.observers
        #: This process's lease on the runs it executes (see kernel.store.leases).
        self.leases = Leases(self.store, settings.kernel.store.lease_seconds)
        self.schemas = self._collect_schemas()
        self.sessions = SessionStore(self.store, main_session_principal=settings.kernel.main_session_principal,
                                     api_key_names=frozenset(settings.kernel.auth.keys),
                                     config_path=str(settings.path))
        self.runs = RunRegistry(self)
        self.provider_kinds = self._collect_provider_kinds()
        self.providers: dict[str, Provider] = self._build_providers()
        self.agents = self._build_agents()
        self.tools = ToolRegistry(self)
        self.tools.collect()
        self.app: Quart | None = None
        self._shutdown_deadline: float | None = None
        #: Set when the server begins to stop (SIGINT/SIGTERM): long-lived connections
        #: (WebSockets, follow-mode streams) close on it instead of holding the grace period.
        self.shutting_down = asyncio.Event()
        self._state_lock = StateDirLock(self.state_dir)

    # ------------------------------------------------------------------ lookups

    def plugin_settings(self, name: str) -> BaseModel | None:
        """A plugin's validated ``[plugins.NAME]`` settings (None if it has no model)."""
        return self._plugin_settings.get(name)

    def provider_for(self, agent: Agent) -> Provider:
        """The provider instance an agent uses."""
        return self.providers[agent.provider]

    # ------------------------------------------------------------------ building

    def _collect_schemas(self) -> list[Schema]:
        schemas = [KERNEL_SCHEMA]
        for plugin_name, impl in per_plugin(self.pm, "register_migrations"):
            for schema in impl() or []:
                if any(s.namespace == schema.namespace for s in schemas):
                    raise ConfigError(f"plugin {plugin_name!r} declares store schema {schema.namespace!r}, "
                                      "which another plugin (or the kernel) already declares")
                schemas.append(schema)
        return schemas

    async def migrate_store(self) -> list[tuple[str, int]]:
        """Apply every declared schema's pending migrations (the store must be open)."""
        try:
            return await migrate(self.store, self.schemas)
        except MigrationError as exc:
            raise ConfigError(f"{self.settings.path}: [kernel.store] {exc}") from None

    def _collect_provider_kinds(self) -> dict[str, ProviderKind]:
        kinds: dict[str, ProviderKind] = {}
        for plugin_name, impl in per_plugin(self.pm, "register_providers"):
            for kind in impl() or []:
                if kind.kind in kinds:
                    raise ConfigError(f"provider kind {kind.kind!r} is registered by two plugins")
                kinds[kind.kind] = kind
                self.plugins[plugin_name].providers.append(kind.kind)
        return kinds

    def _build_providers(self) -> dict[str, Provider]:
        path = self.settings.path
        providers: dict[str, Provider] = {}
        tables: dict[str, dict[str, Any]] = dict(self.settings.providers)
        # An agent may name a provider kind directly; it gets an instance with defaults.
        for agent in self.settings.agents.values():
            if agent.provider not in tables and agent.provider in self.provider_kinds:
                tables[agent.provider] = {"kind": agent.provider}
        for name, table in tables.items():
            options = dict(table)
            kind_name = options.pop("kind", name)
            kind = self.provider_kinds.get(kind_name)
            if kind is None:
                raise ConfigError(
                    f"{path}: [providers.{name}] kind = {kind_name!r} is not a provider kind of any "
                    f"enabled plugin; available kinds: {', '.join(sorted(self.provider_kinds)) or '(none)'}"
                )
            try:
                opts = kind.settings_model.model_validate(options)
            except ValidationError as exc:
                raise ConfigError(
                    format_validation_error(exc, path, model=kind.settings_model, table=f"providers.{name}")
                ) from None
            providers[name] = kind.factory(name, opts, self)
        return providers

    def _build_agents(self) -> AgentTable:
        path = self.settings.path
        agents: dict[str, Agent] = {}
        for name, cfg in self.settings.agents.items():
            if cfg.provider not in self.providers:
                raise ConfigError(
                    f"{path}: [agents.{name}] provider = {cfg.provider!r} is neither a [providers] table "
                    f"nor a provider kind; available: "
                    f"{', '.join(sorted(set(self.providers) | set(self.provider_kinds))) or '(none)'}"
                )
            agents[name] = Agent(
                name=name, provider=cfg.provider, model=cfg.model, instructions=cfg.instructions,
                description=cfg.description, options=cfg.options.model_dump(exclude_none=True),
                tools=tuple(cfg.tools), max_tool_iterations=cfg.max_tool_iterations,
            )
        return AgentTable(agents, self.settings.kernel.default_agent)

    def warn_unenforced_limits(self) -> None:
        """Log once when keys carry limits that no observer enforces (its plugin is off)."""
        limited = sorted(name for name, key in self.settings.kernel.auth.keys.items() if key.has_limits)
        if limited and not any(getattr(o, "enforces_key_limits", False) for o in self.observers):
            log.warning("keys %s set limits (requests_per_minute ...) but no enabled plugin enforces them; "
                        "enable [plugins.observability]", ", ".join(limited))

    # ------------------------------------------------------------------ lifecycle

    def begin_shutdown(self) -> None:
        """Start the shutdown grace period now (the server calls this on SIGINT/SIGTERM).

        The server first lets open requests finish, then the kernel drains runs; both
        share this one deadline so shutdown takes at most one grace period.
        """
        if self._shutdown_deadline is None:
            self._shutdown_deadline = time.monotonic() + self.settings.kernel.shutdown_grace_seconds
        self.shutting_down.set()

    def grace_remaining(self) -> float:
        """Seconds left for runs to finish: the whole grace period unless shutdown began."""
        if self._shutdown_deadline is None:
            return self.settings.kernel.shutdown_grace_seconds
        return max(0.0, self._shutdown_deadline - time.monotonic())

    async def start(self) -> None:
        """Lock the state directory, open storage and start providers (plugin startup hooks run after this)."""
        if not self.store.shared:
            # One process per SQLite file. On PostgreSQL processes share the database (leases
            # say who runs what) and may share the state directory (--workers).
            self._state_lock.acquire()
        await self.store.open()
        ran = await self.migrate_store()
        if ran:
            log.info("store %s: applied %d migration(s)", self.store.describe(), len(ran))
        await self.leases.start()
        for provider in self.providers.values():
            start = getattr(provider, "start", None)
            if start is not None:
                await start()
        await self.tools.start()

    async def stop(self) -> None:
        """Drain runs, close providers and storage."""
        await self.runs.drain(self.grace_remaining())
        for name, provider in self.providers.items():
            try:
                await provider.aclose()
            except Exception:
                log.exception("provider %r failed to close", name)
        await self.tools.aclose()
        await self.leases.stop()
        await self.store.close()
        self._state_lock.release()
