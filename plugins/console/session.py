"""Browser sessions: a signed, expiring cookie that names a principal and never holds a secret.

The cookie value is an itsdangerous timestamp-signed payload ``{"p": principal, "n":
nonce, "f": fingerprint}``. ``f`` is an HMAC of the principal's *current* secret, so
changing or removing a key (or the main token) ends every session opened with it. The
signing key lives in ``<state_dir>/console_cookie_key`` (mode 0600), so sessions
survive a restart. The CSRF token of a session is an HMAC of its nonce: pages carry it
in a ``<meta>`` tag and every state-changing request must echo it in ``X-CSRF-Token``
(or a form's ``csrf`` field); a cross-site page can neither read it nor send the cookie
(``SameSite=Strict``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from itsdangerous import BadSignature, URLSafeTimedSerializer

from kernel.keyfile import persistent_key

log = logging.getLogger("plugins.console")

COOKIE_NAME = "kernel_console"
LOGIN_COOKIE_NAME = "kernel_console_login"
KEY_FILE = "console_cookie_key"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


@dataclass(frozen=True)
class Session:
    """A verified browser session."""

    principal: str
    csrf: str


def load_or_create_key(state_dir: Path) -> bytes:
    """The persistent signing key (created 0600 on first use); per process if the folder is read-only."""
    return persistent_key(state_dir / KEY_FILE, "console")


class Sessions:
    """Issues and checks session cookies for one kernel."""

    def __init__(self, key: bytes, max_age_seconds: int, secret_for: Any) -> None:
        self._key = key
        self.max_age = max_age_seconds
        self._secret_for = secret_for  # principal -> current secret or None
        self._serializer = URLSafeTimedSerializer(key, salt="agentkernel console session v1")

    def _mac(self, label: bytes, value: str) -> str:
        return hmac.new(self._key, label + value.encode("utf-8", "surrogateescape"), hashlib.sha256).hexdigest()

    def _fingerprint(self, principal: str) -> str | None:
        secret = self._secret_for(principal)
        return None if secret is None else self._mac(b"secret\x00" + principal.encode() + b"\x00", secret)

    def issue(self, principal: str) -> str:
        """A cookie value for a principal who just proved its secret."""
        return self._serializer.dumps({"p": principal, "n": secrets.token_hex(16), "f": self._fingerprint(principal)})

    def verify(self, value: str | None) -> Session | None:
        """The session a cookie value names, or None (bad signature, expired, secret changed)."""
        if not value or len(value) > 1024:
            return None
        try:
            data = self._serializer.loads(value, max_age=self.max_age)
        except BadSignature:  # SignatureExpired is a BadSignature too
            return None
        if not isinstance(data, dict) or not isinstance(data.get("p"), str) or not isinstance(data.get("n"), str):
            return None
        expected = self._fingerprint(data["p"])
        if expected is None or not hmac.compare_digest(str(data.get("f")), expected):
            return None
        return Session(principal=data["p"], csrf=self._mac(b"csrf\x00", data["n"]))

    @staticmethod
    def csrf_matches(session: Session, given: str | None) -> bool:
        """Constant-time check of a request's CSRF token against its session's."""
        return given is not None and hmac.compare_digest(given.encode(), session.csrf.encode())
