"""store: false responses are remembered in memory (bounded, per owner), never written."""

from __future__ import annotations

from plugins.openresponses.unstored import REASON, UnstoredIds


def test_an_id_is_known_to_its_owner_only():
    ids = UnstoredIds()
    ids.add("resp_a", "alice")
    assert ids.reason("resp_a", "alice") == REASON
    assert ids.reason("resp_a", "bob") is None
    assert ids.reason("resp_b", "alice") is None


def test_the_oldest_ids_are_forgotten_first():
    ids = UnstoredIds(limit=3)
    for index in range(5):
        ids.add(f"resp_{index}", "alice")
    assert [ids.reason(f"resp_{i}", "alice") for i in range(5)] == [None, None, REASON, REASON, REASON]
