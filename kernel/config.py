"""plugins.toml -> validated settings.

Loading happens in two steps because plugin and provider tables can only be
validated once the plugins are known: :func:`load_settings` parses the file and
validates the kernel's own tables; :mod:`kernel.plugins` validates ``[plugins.*]``
and :mod:`kernel.runtime` validates ``[providers.*]`` with the models plugins
registered. Every error names the file, the table and the key.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kernel.errors import ConfigError

# The main secret's principal (kernel.auth re-exports it); no named key may take it.
DEFAULT_PRINCIPAL = "default"

_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApiKey(_Strict):
    """A named API key: ``[kernel.auth.keys.NAME] secret = "${VAR}"``.

    The limits are enforced by the ``observability`` plugin (through kernel.observe);
    ``admin`` lets the key read operator endpoints (``/metrics``, ``/-/usage``).
    """

    secret: str = Field(min_length=8)
    admin: bool = False
    requests_per_minute: int | None = Field(None, gt=0)
    tokens_per_minute: int | None = Field(None, gt=0)
    max_concurrent_runs: int | None = Field(None, gt=0)
    # Tokens (input + output) the key may use per budget_period (UTC day or month).
    budget_tokens: int | None = Field(None, gt=0)
    budget_period: Literal["day", "month"] = "day"

    @property
    def has_limits(self) -> bool:
        """True when any rate limit or budget is set."""
        return any(v is not None for v in (self.requests_per_minute, self.tokens_per_minute,
                                           self.max_concurrent_runs, self.budget_tokens))


class AuthSettings(_Strict):
    """``[kernel.auth]``: how clients prove who they are (``Authorization: Bearer``)."""

    mode: Literal["token", "password"] = "token"
    token: str | None = None
    password: str | None = None
    keys: dict[str, ApiKey] = Field(default_factory=dict)
    # Proxies whose X-Forwarded-For is believed when deciding if a client is local.
    trusted_proxies: list[str] = Field(default_factory=list)

    @field_validator("keys")
    @classmethod
    def _no_reserved_names(cls, keys: dict[str, ApiKey]) -> dict[str, ApiKey]:
        if DEFAULT_PRINCIPAL in keys:
            # It would share the main secret's stored responses and sessions.
            raise ValueError(f"{DEFAULT_PRINCIPAL!r} is the main secret's principal; name the key differently")
        return keys

    @property
    def configured_secret(self) -> str | None:
        """The secret for the chosen mode, when plugins.toml sets one."""
        return self.password if self.mode == "password" else self.token


class StoreSettings(_Strict):
    """``[kernel.store]``: where durable state lives (sessions, stored responses, records)."""

    # "" or "sqlite": the embedded file <state_dir>/kernel.sqlite3. Or a server database:
    # "postgresql://user@host:port/db" (put a password in ${ENV}, never in the file).
    url: str = ""
    # Connections the PostgreSQL pool may open (per process).
    pool_size: int = Field(10, ge=1, le=1000)
    # A process's lease on the runs it executes: renewed every third of it; when a process
    # dies, another one fails its runs once the lease has expired (docs/scaling.md).
    lease_seconds: float = Field(30.0, ge=1, le=3600)

    @field_validator("url")
    @classmethod
    def _known_scheme(cls, url: str) -> str:
        if url in ("", "sqlite") or url.startswith(("postgresql://", "postgres://")):
            return url
        shown = url.split("://", 1)[0] + "://..." if "://" in url else url[:40]
        raise ValueError(f"url {shown!r} is not a store: use \"sqlite\" (the default) or \"postgresql://user@host:port/db\"")


class KernelSettings(_Strict):
    """``[kernel]``: the server itself."""

    host: str = "127.0.0.1"
    port: int = Field(18789, ge=0, le=65535)
    state_dir: str = ".kernel"
    default_agent: str = "main"
    # Default request-body limit for routes that do not set their own.
    max_body_bytes: int = Field(1024 * 1024, gt=0)
    # Seconds open streams get to finish on SIGINT/SIGTERM before they are cancelled.
    shutdown_grace_seconds: float = Field(10.0, ge=0)
    access_log: bool = True
    # The listen queue: a burst of new connections beyond it is dropped by the OS before
    # the gateway sees it (Hypercorn's default is 100). Linux caps it at net.core.somaxconn.
    backlog: int = Field(2048, ge=1, le=65535)
    # Open client connections at once (streams included); past it a new connection gets a
    # quick 503. Also held below the open-files limit, so accept() never fails with EMFILE.
    max_connections: int = Field(4096, ge=1)
    # A request head (request line and headers) must arrive within this many seconds: of
    # the connection opening, or of its first byte on a kept-alive connection (slowloris).
    header_timeout_seconds: float = Field(30.0, gt=0)
    # An idle kept-alive connection is closed after this many seconds.
    keep_alive_timeout_seconds: float = Field(75.0, gt=0)
    # A request body must arrive in full within this many seconds of the view reading it
    # (408 otherwise); raise it for large uploads over slow links.
    body_timeout_seconds: float = Field(60.0, gt=0)
    # The one principal whose `x-session-key: agent:<agent>:main` is the real main session
    # (where webhooks post); "" for none. Everyone else gets a private session by that name.
    main_session_principal: str = DEFAULT_PRINCIPAL
    # Server processes on the one port (`kernel serve --workers N`); more than one needs a
    # PostgreSQL [kernel.store] (SQLite is one process per state directory).
    workers: int = Field(1, ge=1, le=64)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)

    @model_validator(mode="after")
    def _main_principal_exists(self) -> KernelSettings:
        name = self.main_session_principal
        if name and name != DEFAULT_PRINCIPAL and name not in self.auth.keys:
            known = ", ".join([DEFAULT_PRINCIPAL, *sorted(self.auth.keys)])
            raise ValueError(f"main_session_principal {name!r} is not a principal; known: {known} (or \"\" for none)")
        return self


class AgentOptions(_Strict):
    """``[agents.NAME] options``: defaults for what a request leaves open (OpenAI ranges)."""

    max_output_tokens: int | None = Field(None, gt=0)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class AgentSettings(_Strict):
    """``[agents.NAME]``: an agent answers turns with one provider."""

    provider: str
    model: str | None = None
    instructions: str = ""
    description: str = ""
    # Defaults for the limits a request leaves open (temperature, max_output_tokens ...).
    options: AgentOptions = Field(default_factory=AgentOptions)
    # Server-side tool sets ([tools.NAME] tables) the agent loop offers the model.
    tools: list[str] = Field(default_factory=list)
    # Most server-side tool rounds (and, unless a request sets max_tool_calls, tool calls) per run.
    max_tool_iterations: int = Field(10, ge=1, le=1000)

    @field_validator("provider")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a provider")
        return value


class Settings(BaseModel):
    """The whole of plugins.toml. Plugin and provider tables stay raw until validated."""

    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)

    path: Path
    kernel: KernelSettings = Field(default_factory=KernelSettings)
    agents: dict[str, AgentSettings] = Field(default_factory=dict)
    providers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    tools: dict[str, dict[str, Any]] = Field(default_factory=dict)
    plugins: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @property
    def state_dir(self) -> Path:
        """The state directory, relative paths taken from plugins.toml's folder."""
        p = Path(self.kernel.state_dir).expanduser()
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    def enabled_plugins(self) -> set[str]:
        """Names whose table says ``enabled = true`` (absent tables stay off)."""
        return {name for name, table in self.plugins.items() if table.get("enabled") is True}


def load_settings(path: str | os.PathLike[str], env: dict[str, str] | None = None) -> Settings:
    """Read and validate plugins.toml; raise :class:`ConfigError` with a usable message."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found (pass --config PATH or create plugins.toml)") from exc
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message already carries "(at line L, column C)".
        raise ConfigError(f"{path}: invalid TOML: {exc}") from exc
    return settings_from_dict(raw, path, env)


def settings_from_dict(
    raw: dict[str, Any], path: str | os.PathLike[str], env: dict[str, str] | None = None
) -> Settings:
    """Validate an already-parsed config (tests build configs this way)."""
    path = Path(path)
    env = dict(os.environ) if env is None else env
    known = set(Settings.model_fields) - {"path"}
    for key in raw:
        if key not in known:
            raise ConfigError(
                f"{path}: unknown table [{key}]; valid tables: {', '.join(sorted(known))}"
            )
    for table in ("plugins", "providers", "agents", "tools"):
        for name, value in (raw.get(table) or {}).items():
            if not isinstance(value, dict):
                raise ConfigError(f"{path}: [{table}.{name}] must be a table")
    # Secrets are expanded everywhere except in disabled plugin tables, so a disabled
    # plugin's missing ${VAR} is not an error.
    expanded = {
        "kernel": expand_env(raw.get("kernel", {}), env, path, "kernel"),
        "agents": expand_env(raw.get("agents", {}), env, path, "agents"),
        "providers": expand_env(raw.get("providers", {}), env, path, "providers"),
        "tools": expand_env(raw.get("tools", {}), env, path, "tools"),
        "plugins": {
            name: expand_env(table, env, path, f"plugins.{name}") if table.get("enabled") is True else table
            for name, table in (raw.get("plugins") or {}).items()
        },
    }
    try:
        settings = Settings(path=path, **expanded)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, path)) from None
    if settings.agents and settings.kernel.default_agent not in settings.agents:
        raise ConfigError(
            f"{path}: [kernel] default_agent = {settings.kernel.default_agent!r} is not a "
            f"configured agent; known agents: {', '.join(sorted(settings.agents))}"
        )
    for name, agent in settings.agents.items():
        for tool in agent.tools:
            if tool not in settings.tools:
                raise ConfigError(f"{path}: [agents.{name}] tools names {tool!r}, which is not a [tools] table; "
                                  f"known: {', '.join(sorted(settings.tools)) or '(none)'}")
    return settings


def expand_env(value: Any, env: dict[str, str], path: Path, where: str, key: str | None = None) -> Any:
    """Replace ``${VAR}`` in every string; a missing variable names itself, its table and key."""
    if isinstance(value, str):

        def sub(match: re.Match[str]) -> str:
            var = match.group(1)
            if var not in env:
                named = f" {key}" if key else ""
                raise ConfigError(
                    f"{path}: [{where}]{named} refers to environment variable ${{{var}}}, which is not set"
                )
            return env[var]

        return _ENV_REF.sub(sub, value)
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, path, f"{where}.{k}") if isinstance(v, dict) else expand_env(v, env, path, where, k)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [expand_env(v, env, path, where, key) for v in value]
    return value


def format_validation_error(
    exc: ValidationError, path: Path, model: type[BaseModel] | None = None, table: str | None = None
) -> str:
    """Turn pydantic's errors into lines naming file, table and key (and the valid keys)."""
    model = model or Settings
    lines: list[str] = []
    for err in exc.errors():
        loc = [str(p) for p in err["loc"]]
        key = loc[-1] if loc else ""
        where = ".".join(([table] if table else []) + loc[:-1]) or "(top level)"
        if err["type"] == "extra_forbidden":
            valid = valid_keys_at(model, loc[:-1])
            hint = f"; valid keys: {', '.join(valid)}" if valid else ""
            lines.append(f"{path}: [{where}] unknown key {key!r}{hint}")
        else:
            lines.append(f"{path}: [{where}] {key}: {err['msg']}")
    return "\n".join(lines)


def valid_keys_at(model: type[BaseModel], loc: list[str]) -> list[str]:
    """The field names of the (nested) model found at ``loc``, for 'valid keys' hints."""
    current: Any = model
    for part in loc:
        if isinstance(current, tuple):  # dict[str, Model]: this loc part is the key
            current = current[1]
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return []
        field = current.model_fields.get(part)
        if field is None:
            return []
        current = _unwrap(field.annotation)
        if current is dict:
            return []
    if isinstance(current, tuple):
        return []
    if isinstance(current, type) and issubclass(current, BaseModel):
        return sorted(k for k in current.model_fields if k != "path")
    return []


def _unwrap(annotation: Any) -> Any:
    origin = getattr(annotation, "__origin__", None)
    if origin is dict:
        args = getattr(annotation, "__args__", ())
        return ("dict", args[1]) if len(args) == 2 else dict
    return annotation
