"""Resources are released: a finished response is not kept alive by the run registry."""

from __future__ import annotations

import gc
import weakref

import plugins.openresponses.service as service
from kernel.app import get_kernel
from kernel.testing import AUTH_HEADERS


async def test_finished_runs_do_not_keep_their_responses_alive(make_app, monkeypatch):
    builders: list[weakref.ref] = []

    class Tracked(service.ResponseBuilder):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            builders.append(weakref.ref(self))

    monkeypatch.setattr(service, "ResponseBuilder", Tracked)
    app = make_app({"plugins": {"openresponses": {"enabled": True}}})
    async with app.test_app() as test_app:
        client = test_app.test_client()
        plain = await client.post("/v1/responses", json={"input": "a b c"}, headers=AUTH_HEADERS)
        assert plain.status_code == 200
        streamed = await client.post("/v1/responses", json={"input": "a b c", "stream": True}, headers=AUTH_HEADERS)
        assert (await streamed.get_data()).endswith(b"data: [DONE]\n\n")
        del plain, streamed
        gc.collect()
        runs = list(get_kernel(app).runs.runs.values())
        assert len(runs) == 2 and all(r.done for r in runs)  # the registry still lists them ...
        assert len(builders) == 2 and all(ref() is None for ref in builders)  # ... but not their responses
