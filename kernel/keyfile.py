"""A random signing key kept in the state directory (for plugins' cookies)."""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path

log = logging.getLogger("kernel")

KEY_BYTES = 32


def persistent_key(path: Path, label: str) -> bytes:
    """The key in ``path``, created (0600, never through a symlink) on first use.

    When the folder cannot hold it, a key for this process only is returned and a warning
    names ``label``: signed cookies then end at restart.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        except FileExistsError:
            key = bytes.fromhex(path.read_text(encoding="ascii").strip())
            if len(key) < KEY_BYTES:
                raise ValueError(f"{path} holds fewer than {KEY_BYTES} bytes") from None
            return key
        key = secrets.token_bytes(KEY_BYTES)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key.hex() + "\n")
        return key
    except (OSError, ValueError) as exc:
        log.warning("%s: cannot keep a cookie key in %s (%s); sessions end at restart", label, path, exc)
        return secrets.token_bytes(KEY_BYTES)
