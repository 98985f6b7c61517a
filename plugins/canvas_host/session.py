"""Browser sessions for the canvas: a cookie that proves the gateway secret was shown once.

The cookie never carries the secret. Its value is ``b64(principal).b64(mac)`` where
``mac = HMAC-SHA256(key, principal || SHA-256(principal's current secret))``. So:

* it is worthless without the key, which stays on the server (``canvas_cookie_key`` in
  the state directory, mode 0600, like the gateway's own token file);
* it stops working the moment that principal's secret is changed or removed;
* it survives a gateway restart, so a tab whose live-reload socket reconnects after
  a restart is still let in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import logging
from collections.abc import Callable
from pathlib import Path

from kernel.keyfile import persistent_key

log = logging.getLogger("plugins.canvas_host")

KEY_FILE = "canvas_cookie_key"
COOKIE_NAME = "kernel_canvas"
_CONTEXT = b"agentkernel canvas session v1\x00"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def load_or_create_key(state_dir: Path) -> bytes:
    """The persistent signing key; a per-process key when the state dir is not writable."""
    return persistent_key(state_dir / KEY_FILE, "canvas")


class CookieSessions:
    """Issue and check canvas session cookies.

    ``secret_for(principal)`` returns the principal's current secret (None when it no
    longer exists); ``key_source()`` is called once, on first use, for the HMAC key.
    """

    def __init__(self, secret_for: Callable[[str], str | None], key_source: Callable[[], bytes]) -> None:
        self._secret_for = secret_for
        self._key_source = key_source
        self._key: bytes | None = None

    @property
    def key(self) -> bytes:
        if self._key is None:
            self._key = self._key_source()
        return self._key

    def _mac(self, principal: str, secret: str) -> bytes:
        secret_digest = hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()
        msg = _CONTEXT + principal.encode("utf-8", "surrogateescape") + b"\x00" + secret_digest
        return hmac.new(self.key, msg, hashlib.sha256).digest()

    def issue(self, principal: str) -> str:
        """The cookie value for a principal that just proved its secret."""
        secret = self._secret_for(principal)
        if secret is None:
            raise KeyError(principal)
        return f"{_b64(principal.encode('utf-8', 'surrogateescape'))}.{_b64(self._mac(principal, secret))}"

    def principal_for(self, value: str | None) -> str | None:
        """The principal a cookie value stands for, or None. The MAC is compared in constant time."""
        if not value or len(value) > 1024:
            return None
        name_part, sep, mac_part = value.rpartition(".")
        if not sep:
            return None
        try:
            principal = _unb64(name_part).decode("utf-8", "surrogateescape")
            given = _unb64(mac_part)
        except (binascii.Error, ValueError):
            return None
        secret = self._secret_for(principal)
        # Compare against a MAC even for unknown principals so timing says nothing.
        expected = self._mac(principal, secret if secret is not None else "")
        if hmac.compare_digest(given, expected) and secret is not None:
            return principal
        return None
