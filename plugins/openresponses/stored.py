"""The seam for stored responses: what ``POST /v1/responses`` asks of a response store.

:class:`plugins.openresponses.service.ResponsesService` calls a
:class:`StoredResponses` at a few points; this base class keeps nothing (``store`` is
echoed as ``false``, ``previous_response_id`` and references to stored items answer
404, ``background`` is refused). A persistent implementation (e.g. on the
``storage`` package's SQLite records) subclasses it and is passed to the service.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kernel import ApiError, Item

if TYPE_CHECKING:
    from kernel.runs import Run
    from plugins.openresponses.builder import ResponseBuilder
    from plugins.openresponses.request import ParsedRequest


class StoredResponses:
    """Keeps nothing. Override the methods to keep responses."""

    #: Whether ``store: true`` is honoured (echoed in every ``ResponseResource``).
    persists: bool = False
    #: Whether ``background: true`` can be served (needs retrieval to be useful).
    supports_background: bool = False

    async def previous_items(self, response_id: str, principal: str | None) -> list[Item]:
        """The model's view of a stored response chain: its inputs and outputs, oldest first.

        Raise ``ApiError(404, code="previous_response_not_found")`` when it does not
        exist or belongs to another principal.
        """
        raise ApiError(404, f"previous_response_id {response_id!r} was not found: this server does not "
                       "store responses", param="previous_response_id", code="previous_response_not_found")

    async def find_item(self, item_id: str, principal: str | None) -> Item | None:
        """An item of a stored response, for ``item_reference`` inputs; None when unknown."""
        return None

    async def track(self, builder: ResponseBuilder, run: Run | None, request: ParsedRequest,
                    input_items: list[Item], principal: str | None) -> None:
        """Awaited once per created response, after its run started and before its first event.

        ``run`` is None for a response no run produces (a WebSocket ``generate: false``
        warmup); such a request is never streamed, so it is recorded at :meth:`settle`.

        ``input_items`` are the client's items as the model sees them (media loaded,
        references resolved); ``request.raw_input`` is the body's ``input`` as sent.
        A persistent store saves the record here (so it exists before
        ``response.created`` goes out), sets ``builder.record_events = True``
        (non-streaming requests skip building events otherwise) and appends to
        ``builder.listeners`` (synchronous callbacks: schedule writes in tasks) to persist
        the event log and, once ``builder.done``, the final ``builder.resource()``. Events
        the run produced while this was awaited are replayed to the builder afterwards.
        Raise an ``ApiError`` to refuse the request (nothing has been sent yet).
        """
        return None

    async def settle(self, builder: ResponseBuilder) -> None:
        """Awaited once a response is complete, before the JSON body or ``data: [DONE]`` is sent.

        A store makes the response durable here. Nobody can know a non-streaming
        foreground response's id before it is answered, so a store may write such a
        response here in one go rather than in :meth:`track`.
        """
        return None

    async def start(self) -> None:
        """Open storage and recover from a restart (the plugin's ``startup`` hook)."""
        return None

    async def stop(self) -> None:
        """Finish pending writes and stop housekeeping (the plugin's ``shutdown`` hook)."""
        return None
