"""The plugin's ``[plugins.example]`` options."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ExampleSettings(BaseModel):
    """Validated from ``[plugins.example]`` (the kernel strips ``enabled``)."""

    # extra="forbid": a misspelt key in plugins.toml is an error naming it.
    model_config = ConfigDict(extra="forbid")

    greeting: str = Field("hello", min_length=1, max_length=100)
    # The agent /example/hello talks to; None routes like any endpoint (x-agent-id or default).
    agent: str | None = None
    # Body limit for POST /example/echo.
    max_body_bytes: int = Field(4096, gt=0)
