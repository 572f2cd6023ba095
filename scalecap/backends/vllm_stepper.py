"""One request per call into a running vLLM engine: continuous batching for the in-process backend.

``vllm.LLM.chat`` is blocking: a batch goes in, every request of it must finish before the next
batch can start, so a 1-token scoring pass waits for a 64-token caption of its batch and requests
that arrive meanwhile queue behind it. vLLM's engine itself schedules per step: a request added
between two steps joins the running batch at the next one. ``EngineStepper`` drives the engine
that way on one worker thread: each call renders its conversation exactly as ``LLM.chat`` does
(the same ``_preprocess_chat_one``), adds it as its own request, and gets its result when that
request finishes, whatever else is running.

Why not ``AsyncLLM``: in this vLLM (0.32) it always runs the engine core in a child process
(``AsyncMPClient``), which the CPU platform starts with *spawn*; spawn re-imports the caller's
``__main__`` and fails for a script without a main guard. The in-process backend keeps the engine
core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``), so the sync engine is stepped here.

Only the worker thread touches the engine; callers only queue jobs and await futures, from any
event loop. A request whose caller gave up (cancelled) is aborted in the engine.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any

from .base import BackendError

log = logging.getLogger(__name__)

_STOP = object()


class EngineStepper:
    """Queue of chat requests into ``llm.llm_engine``, stepped on a worker thread."""

    def __init__(self, llm: Any, name: str = "vllm") -> None:
        if not hasattr(llm, "_preprocess_chat_one"):  # pragma: no cover - depends on the vLLM version
            raise ImportError("this vLLM has no LLM._preprocess_chat_one: the in-process backend needs vLLM 0.32")
        self._llm, self._engine = llm, llm.llm_engine
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending: dict[str, Future[Any]] = {}
        self._ids = itertools.count()
        self.requests = self.steps = self.peak_in_flight = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=f"{name}-engine", daemon=True)
        self._thread.start()

    async def submit(self, conversation: list[dict[str, Any]], sampling: Any, **chat: Any) -> Any:
        """The finished ``RequestOutput`` of one conversation (``chat``: ``add_generation_prompt``,
        ``continue_final_message``)."""
        if self._closed:
            raise BackendError("the vLLM engine is closed")
        fut: Future[Any] = Future()
        self._jobs.put((conversation, sampling, chat, fut))
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._jobs.put(_STOP)
            self._thread.join(timeout=60)

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        while True:
            try:  # block only when nothing runs; else take what arrived and step
                job = self._jobs.get(block=not self._pending)
            except queue.Empty:
                job = None
            while job is not None:
                if job is _STOP:
                    self._fail_all(BackendError("the vLLM engine was closed"))
                    return
                self._add(*job)
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    job = None
            self._abort_cancelled()
            if self._pending:
                self._step()

    def _add(self, conversation: list[dict[str, Any]], sampling: Any, chat: dict[str, Any], fut: Future[Any]) -> None:
        if not fut.set_running_or_notify_cancel():
            return
        from vllm.sampling_params import RequestOutputKind

        request_id = f"scalecap-{next(self._ids)}"
        try:
            engine_input = self._llm._preprocess_chat_one(conversation, **chat)
            sampling.output_kind = RequestOutputKind.FINAL_ONLY
            self._engine.add_request(request_id, engine_input, sampling)
        except Exception as exc:  # noqa: BLE001 - this request fails alone
            fut.set_exception(exc)
            return
        self._pending[request_id] = fut
        self.requests += 1

    def _step(self) -> None:
        self.peak_in_flight = max(self.peak_in_flight, len(self._pending))
        if not self._engine.has_unfinished_requests():  # never expected: do not spin on lost requests
            self._fail_all(BackendError("the vLLM engine lost requests it had accepted"))
            return
        try:
            outputs = self._engine.step()
        except Exception as exc:  # noqa: BLE001 - the engine failed: every request in it fails
            log.error("vLLM engine step failed: %s", exc)
            self._fail_all(BackendError(f"vLLM engine step failed: {type(exc).__name__}: {exc}"))
            return
        self.steps += 1
        for out in outputs:
            if out.finished:
                fut = self._pending.pop(out.request_id, None)
                if fut is not None and not fut.done():
                    fut.set_result(out)

    def _abort_cancelled(self) -> None:
        gone = [rid for rid, fut in self._pending.items() if fut.cancelled()]
        if gone:
            for rid in gone:
                del self._pending[rid]
            try:
                self._engine.abort_request(gone)
            except Exception as exc:  # noqa: BLE001 - the requests finish unread instead
                log.debug("vLLM abort failed: %s", exc)

    def _fail_all(self, exc: BaseException) -> None:
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(exc)
        if pending:
            try:
                self._engine.abort_request(list(pending))
            except Exception:  # noqa: BLE001 - best effort after a failure
                pass
