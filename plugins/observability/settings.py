"""``[plugins.observability]`` options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class ObservabilitySettings(BaseModel):
    """What the plugin exposes and where traces go (traces are off unless ``otlp_endpoint`` is set)."""

    model_config = ConfigDict(extra="forbid")

    # /metrics answers without a secret (for a scraper on a private network); else admin only.
    metrics_public: bool = False
    # OTLP/HTTP traces endpoint, e.g. "http://127.0.0.1:4318/v1/traces"; unset: no tracing at all.
    otlp_endpoint: str | None = None
    # Extra headers for the OTLP exporter (e.g. an auth header of a hosted collector).
    otlp_headers: dict[str, str] = Field(default_factory=dict)
    service_name: str = "agentkernel"
    # Fraction of new traces sampled (a client's sampled traceparent is always followed).
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)
    # Prompts and outputs on spans: never unless this is true.
    record_content: bool = False
    # Usage rows are written in batches at most this many seconds apart.
    usage_flush_seconds: float = Field(1.0, gt=0, le=60)

    @field_validator("otlp_endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL (OTLP over HTTP), e.g. http://127.0.0.1:4318/v1/traces")
        return value or None
