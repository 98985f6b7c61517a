"""``[plugins.canvas_host]`` options."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_MOUNT = "/__kernel__/canvas"
DEFAULT_MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_FILE_BYTES_LIMIT = 1024 * 1024 * 1024

# A mount is one or more plain URL segments: no percent-escapes, dot segments or
# doubled slashes, so the prefix can be compared with a request's raw path as-is.
_MOUNT = re.compile(r"^(/[A-Za-z0-9_~-][A-Za-z0-9._~-]*)+$")


class CanvasSettings(BaseModel):
    """Options of the canvas host: where the folder lives, where it is mounted, who may see it."""

    model_config = ConfigDict(extra="forbid")

    # The served folder. Default: ``canvas/`` under the kernel's state directory.
    # A relative path is taken from the folder that holds plugins.toml.
    root: str | None = None
    mount: str = DEFAULT_MOUNT
    live_reload: bool = True
    # "token": the gateway secret, as a bearer header or the cookie from ``?token=``.
    # "none": anyone who can reach the port; refused unless the kernel binds loopback.
    auth: Literal["token", "none"] = "token"
    # PUT bodies are held in memory until written, hence the ceiling.
    max_file_bytes: int = Field(DEFAULT_MAX_FILE_BYTES, gt=0, le=MAX_FILE_BYTES_LIMIT)
    # Quiet period before a batch of changes becomes one reload. The watcher checks for
    # shutdown once per period, so a long one would delay stopping the gateway.
    debounce_ms: int = Field(75, ge=10, le=2_000)

    @field_validator("mount")
    @classmethod
    def _valid_mount(cls, value: str) -> str:
        if not _MOUNT.match(value) or any(part in (".", "..") for part in value.split("/")):
            raise ValueError(
                "must be an absolute URL path of plain segments without a trailing slash, "
                f"like {DEFAULT_MOUNT!r}"
            )
        return value
