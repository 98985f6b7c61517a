"""The async side of the local model: load once, queue runs, bridge thread -> events.

llama.cpp blocks, so all model work happens in one dedicated worker thread (the model
object is not thread-safe, and one thread means loads and generations can never
overlap). The thread hands each event to the event loop with ``call_soon_threadsafe``;
the run's coroutine reads them from an ``asyncio.Queue`` and yields them at once, so
tokens stream as they are generated. Cancelling the run sets a ``threading.Event``
the token loop checks between tokens; the model is handed to the next queued run
only when the thread has really finished.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from kernel import ProviderError, RunError, RunEvent, Turn
from plugins.local_model.engine import Engine, EngineConfig
from plugins.local_model.gate import Gate, Saturated
from plugins.local_model.options import LocalModelOptions, default_threads
from plugins.local_model.runner import TurnRunner, TurnStats

log = logging.getLogger("plugins.local_model")

_END = object()  # the worker's last word on a turn's queue


class LocalModelProvider:
    """A GGUF model embedded in the gateway (default: SmolLM2-135M-Instruct)."""

    accepts_images = False  # the placeholder text is shown instead

    def __init__(self, name: str, options: LocalModelOptions, model_path: Path) -> None:
        self.name = name
        self.options = options
        self.model_path = model_path
        self.engine = Engine(EngineConfig(
            path=model_path, n_ctx=options.n_ctx, n_threads=options.n_threads or default_threads(),
            chat_template=options.chat_template, cpu_weight_layouts=options.cpu_weight_layouts,
        ))
        self.gate = Gate(options.max_queue)
        self.last_stats: TurnStats | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"local-model-{name}")
        self._loading: asyncio.Future[None] | None = None
        self._jobs: dict[asyncio.Future[TurnStats], threading.Event] = {}
        self._closed = False

    def health(self) -> dict[str, object]:
        """Model loaded, generating now, and the queue depth (the console's overview shows it)."""
        return {"ok": not self._closed, "loaded": self.engine.loaded, "generating": self.gate.busy,
                "queue": self.gate.waiting, "max_queue": self.gate.max_queue}

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Called by the kernel at startup: load now unless ``load = "first_use"``."""
        if self.options.load == "startup":
            try:
                await self._ensure_loaded()
            except ProviderError as exc:
                raise RuntimeError(exc.error.message) from None

    async def aclose(self) -> None:
        """Stop running generations, free the model, end the worker thread."""
        if self._closed:
            return
        self._closed = True
        for cancelled in self._jobs.values():
            cancelled.set()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.engine.close)
        finally:
            self._executor.shutdown(wait=False)

    async def idle(self) -> None:
        """Wait until no generation is running (tests and shutdown use it)."""
        while self._jobs:
            await asyncio.wait(list(self._jobs))

    @property
    def loaded(self) -> bool:
        return self.engine.loaded

    async def _ensure_loaded(self) -> None:
        if self.engine.loaded:
            return
        if self._loading is None:
            loop = asyncio.get_running_loop()
            self._loading = loop.run_in_executor(self._executor, self.engine.load)
        loading = self._loading
        try:
            # Shielded: a run cancelled while the model loads must not cancel the load
            # other runs are waiting for.
            await asyncio.shield(loading)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if self._loading is loading:
                self._loading = None  # let a later run try again
            raise ProviderError(RunError(
                f"local model {self.name!r} could not load {self.model_path}: {type(exc).__name__}: {exc}",
                code="model_load_failed", status=500,
            )) from None

    # ------------------------------------------------------------------ runs

    def queue_depth(self) -> int:
        """Runs waiting for the model (admitted or queued), for metrics."""
        return self.gate.waiting + self.gate.reserved

    def admit(self) -> None:
        """Refuse a new run with 429 when the queue is full (called by ``runs.start``)."""
        try:
            self.gate.admit()
        except Saturated as exc:
            raise ProviderError(self._busy_error(exc)) from None

    async def stream(self, turn: Turn) -> AsyncIterator[RunEvent]:
        """Generate the turn's answer in the worker thread, yielding events as they come."""
        try:
            await self._ensure_loaded()
        except BaseException:
            self.gate.forfeit()
            raise
        try:
            await self.gate.acquire()
        except Saturated as exc:
            raise ProviderError(self._busy_error(exc)) from None
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[object] = asyncio.Queue()
        cancelled = threading.Event()

        def put(item: object) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is closed: nobody is listening any more
                cancelled.set()

        runner = TurnRunner(self.engine, self.options, self.name, turn, put, cancelled)

        def job() -> TurnStats:
            try:
                return runner.run()
            finally:
                put(_END)

        started = time.perf_counter()
        future = loop.run_in_executor(self._executor, job)
        self._jobs[future] = cancelled
        future.add_done_callback(lambda f: self._job_done(f, started))
        try:
            while True:
                item = await queue.get()
                if item is _END:
                    break
                yield item  # type: ignore[misc]
            # Re-raises what the worker raised (e.g. ProviderError for an oversized input).
            await asyncio.shield(future)
        finally:
            # After a normal end this changes nothing; on cancel or an abandoned stream it
            # stops the token loop at the next token.
            cancelled.set()

    def _job_done(self, future: asyncio.Future[TurnStats], started: float) -> None:
        self._jobs.pop(future, None)
        self.gate.release(time.perf_counter() - started)
        if future.cancelled():
            return
        exc = future.exception()  # retrieved here so an abandoned run's error is not "never retrieved"
        if exc is None:
            self.last_stats = future.result()
        elif not isinstance(exc, ProviderError):
            log.error("local model %r: generation failed: %s: %s", self.name, type(exc).__name__, exc)

    def _busy_error(self, exc: Saturated) -> RunError:
        return RunError(
            f"{exc}; retry after {exc.retry_after}s or raise max_queue in [providers.{self.name}]",
            code="model_busy", type="rate_limit_error", status=429, retry_after=exc.retry_after,
        )
