"""Many images in flight: the engine that turns a stream of items into a stream of results.

Backends batch across concurrent requests; the engine's job is to keep enough images in flight for
those batches to fill, while holding memory flat: it pulls the next item from the source only when
a slot frees (at most ``concurrency`` images started and not yet handed out), so a million-item
source is never read ahead. Results come out as they finish.

With ``admit`` (``admission.py``) the number of images floats: a new one starts only while
``admit()`` says the servers have room, up to ``concurrency``, one per look, since a new image
shows in the servers' demand only once its first request is made; the engine looks again every
``ADMIT_POLL`` seconds, since room opens when a request ends, not only when an image does.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from collections.abc import Callable
from typing import Protocol

from .images import ImageItem
from ._sync import run_finalized
from .records import CaptionResult, Fingerprint, error_line


class ItemCaptioner(Protocol):
    async def caption_item(self, item: ImageItem) -> CaptionResult: ...


#: Seconds between looks at ``admit`` while it holds images back.
ADMIT_POLL = 0.02


class Engine:
    def __init__(self, captioner: ItemCaptioner, concurrency: int = 8,
                 admit: Callable[[], bool] | None = None) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self.captioner = captioner
        self.concurrency = concurrency
        self.admit = admit

    async def run(self, items: Iterable[ImageItem] | AsyncIterable[ImageItem]) -> AsyncIterator[CaptionResult]:
        """Yield one result per item, in completion order.

        A captioner that raises for an item (it should return a failed record instead) does not end
        the run: that item becomes a failed record with ``error_kind="internal"``. Item order is
        deterministic, so an exception that escaped here would end every resume at the same item.
        """
        source = _aiter(items)
        running: dict[asyncio.Task[CaptionResult], ImageItem] = {}
        exhausted = False
        try:
            while True:
                started = 0
                while not exhausted and len(running) < self.concurrency:
                    # By demand: one image per look, since an image's first request (after its
                    # decoding) is what shows up in the servers' demand.
                    if running and self.admit is not None and (started or not self.admit()):
                        break
                    started += 1
                    try:
                        item = await anext(source)
                    except StopAsyncIteration:
                        exhausted = True
                        break
                    running[asyncio.create_task(self.captioner.caption_item(item))] = item
                if not running:
                    return
                held = self.admit is not None and not exhausted and len(running) < self.concurrency
                done, _ = await asyncio.wait(running, timeout=ADMIT_POLL if held else None,
                                             return_when=asyncio.FIRST_COMPLETED)
                results = [self._result_of(task, running.pop(task)) for task in done]
                # hand out in a stable order when several finish in the same turn
                for result in sorted(results, key=lambda r: r.id):
                    yield result
        finally:
            for task in running:
                task.cancel()
            if running:
                await asyncio.gather(*running, return_exceptions=True)

    def _result_of(self, task: asyncio.Task[CaptionResult], item: ImageItem) -> CaptionResult:
        if task.cancelled():
            raise asyncio.CancelledError
        exc = task.exception()
        if exc is None:
            return task.result()
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: not an item's problem
            raise exc
        fingerprint = getattr(self.captioner, "fingerprint", None)
        return CaptionResult(id=item.id, source=item.source, status="failed", error=error_line(exc),
                             error_kind="internal", meta=dict(item.meta),
                             fingerprint=fingerprint if isinstance(fingerprint, Fingerprint) else None)

    def run_sync(self, items: Iterable[ImageItem]) -> Iterator[CaptionResult]:
        """Blocking iterator over ``run`` (an event loop on a helper thread, results through a queue)."""
        out: queue.Queue = queue.Queue(maxsize=self.concurrency)
        stop = threading.Event()
        sentinel = object()

        async def pump() -> None:
            async for result in self.run(items):
                while not stop.is_set():
                    try:
                        out.put(result, timeout=0.1)
                        break
                    except queue.Full:
                        await asyncio.sleep(0.01)
                if stop.is_set():
                    return

        def thread_main() -> None:
            try:
                run_finalized(pump())
                out.put(sentinel)
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
                out.put(exc)

        worker = threading.Thread(target=thread_main, name="scalecap-engine", daemon=True)
        worker.start()
        try:
            while True:
                got = out.get()
                if got is sentinel:
                    return
                if isinstance(got, BaseException):
                    raise got
                yield got
        finally:
            stop.set()
            worker.join(timeout=5)


async def _aiter(items: Iterable[ImageItem] | AsyncIterable[ImageItem]) -> AsyncIterator[ImageItem]:
    if hasattr(items, "__aiter__"):
        async for item in items:  # type: ignore[union-attr]
            yield item
    else:
        for item in items:  # type: ignore[union-attr]
            yield item
