"""Shared test helpers (importable as ``testsupport`` because pytest puts tests/ on the path)."""
