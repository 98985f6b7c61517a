"""Errors that become OpenAI-style JSON bodies: ``{"error": {message, type, param, code}}``."""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """Raise from any view to answer with an OpenAI-style error body.

    ``param`` names the offending field path (``input[2].content[0].image_url``) so a
    client can act on it.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or default_type(status)
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON body clients expect."""
        return error_body(self.message, type=self.type, param=self.param, code=self.code)


def default_type(status: int) -> str:
    """The OpenAI error ``type`` conventionally used for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 403:
        return "permission_error"
    if status == 404:
        return "not_found_error"
    if status == 429:
        return "rate_limit_error"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def error_body(
    message: str, *, type: str = "invalid_request_error", param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """Build ``{"error": {...}}`` with all four keys always present."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


class ConfigError(Exception):
    """plugins.toml is invalid; the message names the file, table and key."""
