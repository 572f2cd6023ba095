"""Cross-request batching for in-process models.

Many images are in flight at once and each one issues requests at every stage; an in-process
model is fastest when those requests share one forward pass. ``MicroBatcher`` collects concurrent
``submit`` calls, groups them by a key (requests that can share a batch: same kind, same
generation parameters, with or without an image), and runs each group through one blocking
``run_batch`` call on a single worker thread, so the event loop never blocks on the model and the
model never sees two threads.

If a whole batch fails, its items are retried one by one, so that one bad request (an image a
processor rejects, say) fails alone instead of taking its batch-mates with it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import OrderedDict
from typing import Any, Callable, Hashable, Sequence

RunBatch = Callable[[Hashable, Sequence[Any]], Sequence[Any]]


class MicroBatcher:
    def __init__(self, run_batch: RunBatch, max_batch: int = 8, name: str = "model") -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self._run_batch = run_batch
        self.max_batch = max_batch
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"scalecap-{name}")
        self._pending: OrderedDict[Hashable, list[tuple[Any, asyncio.Future]]] = OrderedDict()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wakeup: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._lock = threading.Lock()
        self.batches_run = 0
        self.items_run = 0

    async def submit(self, key: Hashable, payload: Any) -> Any:
        loop = asyncio.get_running_loop()
        self._ensure_worker(loop)
        fut: asyncio.Future = loop.create_future()
        self._pending.setdefault(key, []).append((payload, fut))
        assert self._wakeup is not None
        self._wakeup.set()
        return await fut

    def _ensure_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        # A batcher may outlive an event loop (sync wrappers run one loop per call): rebind to the
        # current loop, dropping nothing (pending requests of a closed loop cannot exist).
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._wakeup = asyncio.Event()
            self._pending.clear()
            self._worker = loop.create_task(self._work(), name="scalecap-batcher")

    async def _work(self) -> None:
        assert self._wakeup is not None
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            # Let every task that became ready in this turn of the loop enqueue its request first:
            # this is what turns "many images in flight" into full batches.
            for _ in range(3):
                await asyncio.sleep(0)
            if not self._pending:
                self._wakeup.clear()
                continue
            key = next(iter(self._pending))
            queue = self._pending[key]
            batch, rest = queue[: self.max_batch], queue[self.max_batch :]
            if rest:
                self._pending[key] = rest
                self._pending.move_to_end(key)
            else:
                del self._pending[key]
            live = [(p, f) for p, f in batch if not f.cancelled()]
            if live:
                results = await loop.run_in_executor(self._executor, self._run_safely, key, [p for p, _ in live])
                for (_, fut), res in zip(live, results):
                    if fut.cancelled():
                        continue
                    if isinstance(res, BaseException):
                        fut.set_exception(res)
                    else:
                        fut.set_result(res)

    def _run_safely(self, key: Hashable, payloads: list[Any]) -> list[Any]:
        self.batches_run += 1
        self.items_run += len(payloads)
        try:
            out = list(self._run_batch(key, payloads))
            if len(out) != len(payloads):
                raise RuntimeError(f"run_batch returned {len(out)} results for {len(payloads)} requests")
            return out
        except Exception as exc:  # noqa: BLE001 - isolated below, reported per item
            if len(payloads) == 1:
                return [exc]
        results: list[Any] = []
        for p in payloads:
            try:
                results.append(self._run_batch(key, [p])[0])
            except Exception as exc:  # noqa: BLE001 - becomes that request's exception
                results.append(exc)
        return results

    def close(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
        self._executor.shutdown(wait=False, cancel_futures=True)
