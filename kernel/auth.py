"""Gateway authentication: ``Authorization: Bearer <secret>``, compared in constant time.

Modes ``token`` and ``password`` both travel as a bearer secret. Named API keys
(``[kernel.auth.keys.NAME]``) sit beside the main secret; the name that matched is
the request's *principal* (the main secret's principal is ``default``), which
plugins use to scope what a caller may see.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import os
import secrets
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kernel.config import DEFAULT_PRINCIPAL as DEFAULT_PRINCIPAL  # re-exported: plugins import it from here
from kernel.config import AuthSettings

log = logging.getLogger("kernel.auth")

TOKEN_FILE = "token"

F = TypeVar("F", bound=Callable[..., Any])


def public(view: F) -> F:
    """Mark a view as reachable without the gateway secret (it may check its own)."""
    view._kernel_public = True  # type: ignore[attr-defined]
    return view


def is_public(view: Callable[..., Any] | None) -> bool:
    return bool(getattr(view, "_kernel_public", False))


def is_admin(principal: str | None) -> bool:
    """Whether a principal may see and manage every principal's responses, runs and usage.

    The main secret (principal ``default``) and keys marked ``admin = true`` in the
    serving app's config (:meth:`Authenticator.is_admin`); outside an app context, only
    the main secret.
    """
    from quart import current_app, has_app_context

    if has_app_context():
        from kernel.app import get_kernel

        return get_kernel(current_app).auth.is_admin(principal)
    return principal == DEFAULT_PRINCIPAL


def _digest(secret: str | bytes) -> bytes:
    # Hashing first makes the compare length-independent and accepts any bytes.
    raw = secret.encode("utf-8", "surrogateescape") if isinstance(secret, str) else secret
    return hashlib.sha256(raw).digest()


def constant_time_equals(given: str | bytes, expected: str | bytes) -> bool:
    """Compare secrets without leaking length or position of the first difference."""
    return hmac.compare_digest(_digest(given), _digest(expected))


def header_text(value: str) -> str:
    """Recover UTF-8 text from a header value the ASGI layer decoded as latin-1.

    ASGI servers hand headers over as bytes and Quart decodes them as latin-1, so a
    UTF-8 secret arrives as mojibake; without this a non-ASCII secret could never
    match. Idempotent, and values that are not UTF-8 are returned unchanged.
    """
    try:
        return value.encode("latin-1").decode("utf-8")
    except UnicodeError:
        return value


def bearer_token(header: str | None) -> str | None:
    """The secret from an ``Authorization: Bearer`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return header_text(value.strip())


def is_loopback_host(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and ``localhost``."""
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class Authenticator:
    """Holds the secrets and answers 'who is this?' for a bearer secret."""

    def __init__(self, settings: AuthSettings, state_dir: Path) -> None:
        self.settings = settings
        self.state_dir = state_dir
        self.generated = False
        secret = settings.configured_secret
        if secret is None:
            secret = self._load_or_generate_token()
        self.main_secret = secret
        self._secrets: list[tuple[str, bytes]] = [(DEFAULT_PRINCIPAL, _digest(secret))]
        self._secrets += [(name, _digest(key.secret)) for name, key in settings.keys.items()]

    @property
    def has_configured_secret(self) -> bool:
        return self.settings.configured_secret is not None

    def is_admin(self, principal: str | None) -> bool:
        """True for the main secret's principal and for keys marked ``admin = true``."""
        if principal == DEFAULT_PRINCIPAL:
            return True
        key = self.settings.keys.get(principal) if principal else None
        return key is not None and key.admin

    def principal_for(self, secret: str | None) -> str | None:
        """The principal whose secret matches, or None. Every secret is compared."""
        if secret is None:
            return None
        given = _digest(header_text(secret))
        found: str | None = None
        for name, expected in self._secrets:
            if hmac.compare_digest(given, expected) and found is None:
                found = name
        return found

    def knows(self, principal: str) -> bool:
        """Whether ``principal`` is the main secret's or a configured key's name."""
        return any(name == principal for name, _ in self._secrets)

    def secret_for(self, principal: str) -> str | None:
        """The current secret of a principal (None when it does not exist).

        For server-side checks only (e.g. binding a browser session to the secret it was
        opened with, so changing the secret ends the session); never send it anywhere.
        """
        if principal == DEFAULT_PRINCIPAL:
            return self.main_secret
        key = self.settings.keys.get(principal)
        return key.secret if key is not None else None

    def _load_or_generate_token(self) -> str:
        path = self.state_dir / TOKEN_FILE
        if path.exists():
            return path.read_text(encoding="utf-8").strip()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        # "kt_" + hex: never starts with "-" (breaks CLI flags) and is easy to spot in a leak scan.
        token = "kt_" + secrets.token_hex(32)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another worker process (--workers) made it just now
            return _read_when_written(path)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(token + "\n")
        self.generated = True
        return token


def _read_when_written(path: Path) -> str:
    """A token file another process is writing: its content once complete (a few ms)."""
    for _ in range(100):
        text = path.read_text(encoding="utf-8")
        if text.endswith("\n"):
            return text.strip()
        time.sleep(0.01)
    raise RuntimeError(f"{path} stays empty: remove it, or set [kernel.auth] token")
