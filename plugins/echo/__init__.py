"""The ``echo`` provider: deterministic answers for tests and smoke checks."""
