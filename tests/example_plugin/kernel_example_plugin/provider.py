"""Provider kind ``reverse``: streams the newest user text reversed, a few characters at a time."""

from __future__ import annotations

from collections.abc import AsyncIterator

from pydantic import BaseModel, ConfigDict, Field

from kernel import Finished, Message, RunEvent, TextDelta, Turn, Usage


class ReverseOptions(BaseModel):
    """``[providers.NAME] kind = "reverse"`` options."""

    model_config = ConfigDict(extra="forbid")

    # Characters per streamed delta.
    chunk_size: int = Field(3, ge=1, le=1000)
    upper: bool = False


def reverse_text(text: str, *, upper: bool = False) -> str:
    """The text reversed (and upper-cased when asked): the provider's whole 'model'."""
    out = text[::-1]
    return out.upper() if upper else out


class ReverseProvider:
    """A tiny deterministic provider; it never sees a wire format, only the neutral turn."""

    accepts_images = False

    def __init__(self, name: str, options: ReverseOptions) -> None:
        self.name = name
        self.options = options

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        """Yield the reversed newest user text in ``chunk_size`` pieces, then usage and finish."""
        text = ""
        for item in reversed(turn.conversation()):
            if isinstance(item, Message) and item.role == "user":
                text = item.text
                break
        answer = reverse_text(text, upper=self.options.upper)
        size = self.options.chunk_size
        for start in range(0, len(answer), size):
            yield TextDelta(answer[start:start + size])
        yield Usage(input_tokens=len(text), output_tokens=len(answer))
        yield Finished(reason="stop")

    async def aclose(self) -> None:
        return None
