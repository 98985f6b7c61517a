"""The ``observability`` plugin: Prometheus metrics, OpenTelemetry traces, usage per key,
and per-key rate limits and budgets, all through the kernel's observer seam."""
