"""Wire models of ``POST <base>/wake`` and ``POST <base>/agent`` (pydantic at the edge).

Types are strict (``"5"`` is not a number, ``1`` is not a boolean). The camelCase
spellings used by OpenClaw-era senders (``sessionKey``, ``wakeMode`` ...) are accepted.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from kernel.errors import ApiError
from plugins.hooks.settings import MAX_TIMEOUT_SECONDS

WakeMode = Literal["now", "next-heartbeat"]
MAX_NAME_LENGTH = 200

M = TypeVar("M", bound=BaseModel)


def _alias(*names: str) -> Any:
    return AliasChoices(*names)


class WakeRequest(BaseModel):
    """``{text, mode}``: a system event for the default agent's main session."""

    model_config = ConfigDict(extra="forbid", strict=True)

    text: str = Field(min_length=1)
    mode: WakeMode = "now"


class AgentRequest(BaseModel):
    """``{message, name?, agent?, session_key?, wake_mode?, model?, timeout_seconds?, summary_to_main?}``."""

    model_config = ConfigDict(extra="forbid", strict=True)

    message: str = Field(min_length=1)
    name: str | None = Field(None, min_length=1, max_length=MAX_NAME_LENGTH)
    agent: str | None = Field(None, min_length=1, validation_alias=_alias("agent", "agentId", "agent_id"))
    session_key: str | None = Field(None, validation_alias=_alias("session_key", "sessionKey"))
    wake_mode: WakeMode = Field("now", validation_alias=_alias("wake_mode", "wakeMode"))
    model: str | None = Field(None, min_length=1)
    timeout_seconds: float | None = Field(
        None, gt=0, le=MAX_TIMEOUT_SECONDS, validation_alias=_alias("timeout_seconds", "timeoutSeconds"))
    summary_to_main: bool = Field(True, validation_alias=_alias("summary_to_main", "summaryToMain"))


def parse(model: type[M], data: dict[str, Any]) -> M:
    """Validate a body; the first problem becomes a 400 whose ``param`` is the field path."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        param = ".".join(str(p) for p in err["loc"]) or None
        if err["type"] == "extra_forbidden":
            accepted = ", ".join(model.model_fields)
            message = f"unknown field {param!r}; accepted fields: {accepted}"
        elif err["type"] == "missing":
            message = f"{param}: required"
        else:
            message = f"{param}: {err['msg']}"
        raise ApiError(400, message, param=param, code="invalid_field") from None
