"""The state directory's signing keys: created once, 0600, never through a symlink."""

from __future__ import annotations

import logging
import stat

from kernel.keyfile import KEY_BYTES, persistent_key


def test_a_key_is_created_once_with_owner_only_access_and_then_reused(tmp_path):
    path = tmp_path / "state" / "cookie_key"
    first = persistent_key(path, "test")
    assert len(first) == KEY_BYTES
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert persistent_key(path, "test") == first


def test_a_short_or_symlinked_key_file_gives_a_process_key_and_a_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="kernel")
    short = tmp_path / "short"
    short.write_text("abcd\n", encoding="ascii")
    assert len(persistent_key(short, "test")) == KEY_BYTES
    assert short.read_text(encoding="ascii") == "abcd\n"  # left alone
    target = tmp_path / "elsewhere"
    link = tmp_path / "link"
    link.symlink_to(target)
    one, two = persistent_key(link, "test"), persistent_key(link, "test")
    assert one != two and not target.exists()  # never written through the link
    assert sum("test: cannot keep a cookie key" in r.getMessage() for r in caplog.records) == 3
