"""Content-word tagging for many images at once, off the event loop, on the machine's cores.

Every caption and answer is tagged once (40+ texts an image at N=20). One text at a time on one
thread left spaCy's batched ``pipe`` unused and every core but one idle: the pipeline ran at 0.6x
the tagger's own one-core batched rate. ``TaggingPool`` instead gathers the texts that arrive
while its workers are busy into batches (up to ``max_batch``), and runs each batch through
``content_spans_many`` on a worker process of its own, so spaCy runs batched and in parallel.
A batch goes out at once whenever a worker is idle, so a lone text is never held back waiting
for company.

The lexicon tagger is a set lookup per word (~1 us): shipping its texts to another process would
cost more than tagging them, so it runs inline.

Batching does not change the result: spaCy tags each document independently (tests compare the
batched spans with one-text calls on real captions).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import multiprocessing
import os
from typing import Any

from .content import ContentTagger, LexiconTagger, load_tagger

__all__ = ["TaggingPool", "default_workers"]

Spans = list[tuple[int, int]]

_worker_tagger: ContentTagger | None = None


def default_workers() -> int:
    """One process per core, at most 4 (a model server on the same machine needs cores too)."""
    return max(1, min(4, os.cpu_count() or 1))


def _init_worker(spec: str) -> None:
    global _worker_tagger
    _worker_tagger = load_tagger(spec)


def _tag_batch(texts: list[str]) -> list[Spans]:
    assert _worker_tagger is not None, "worker started without a tagger"
    return _worker_tagger.content_spans_many(texts)


class TaggingPool:
    """``await pool.spans(text)``: the content-word spans of ``text``.

    ``workers``: processes for a model tagger (default ``default_workers()``); 0 runs batches on
    one thread of this process instead (no extra processes, one core).
    """

    def __init__(self, tagger: ContentTagger, workers: int | None = None, max_batch: int = 64) -> None:
        self.tagger = tagger
        self.inline = isinstance(tagger, LexiconTagger)
        self.workers = default_workers() if workers is None else workers
        if self.workers < 0:
            raise ValueError("tagger workers must be >= 0")
        self.max_batch = max_batch
        self._executor: concurrent.futures.Executor | None = None
        self._pending: list[tuple[str, asyncio.Future]] = []
        self._busy = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.batches_run = 0
        self.texts_run = 0

    async def spans(self, text: str) -> Spans:
        got = self.request(text)
        return got if isinstance(got, list) else await got

    def request(self, text: str) -> Spans | asyncio.Future:
        """The spans themselves (an inline tagger), or a future the pool resolves with them.

        For callers that start other work beside the tagging (the rating's two scoring passes): the
        text is queued at once, with no task of its own. Must be called with the loop running."""
        if self.inline:
            return self.tagger.content_spans(text)
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # sync wrappers run one loop per call: nothing can be pending
            self._loop, self._pending, self._busy = loop, [], 0
        fut: asyncio.Future = loop.create_future()
        self._pending.append((text, fut))
        self._dispatch()
        return fut

    async def warm(self) -> None:
        """Start every worker now (each loads its tagger), so that the first images do not wait."""
        if self.inline:
            return
        await asyncio.gather(*(self.spans("Warm up.") for _ in range(self._slots() * self.max_batch)))

    def _slots(self) -> int:
        return max(1, self.workers)

    def _dispatch(self) -> None:
        while self._pending and self._busy < self._slots():
            batch, self._pending = self._pending[: self.max_batch], self._pending[self.max_batch:]
            self._busy += 1
            texts = [t for t, _ in batch]
            # processes load their own tagger (_init_worker); the thread uses this one
            run = _tag_batch if self.workers else self.tagger.content_spans_many
            task = self._loop.run_in_executor(self._pool(), run, texts)
            task.add_done_callback(lambda done, b=batch: self._finished(done, b))

    def _finished(self, done: asyncio.Future, batch: list[tuple[str, asyncio.Future]]) -> None:
        self._busy -= 1
        self.batches_run += 1
        self.texts_run += len(batch)
        error = done.exception() if not done.cancelled() else asyncio.CancelledError()
        results = None if error is not None else done.result()
        if isinstance(error, concurrent.futures.BrokenExecutor) and self._executor is not None:
            # a worker died (killed, out of memory): this batch fails, later ones get a new pool
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        for i, (_, fut) in enumerate(batch):
            if fut.done():
                continue
            if error is not None:
                fut.set_exception(error)
            else:
                fut.set_result(results[i])
        self._dispatch()

    def _pool(self) -> concurrent.futures.Executor:
        if self._executor is None:
            if self.workers == 0:
                self._executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="scalecap-tagger")
            else:
                # spawn, not fork: the parent holds model threads (torch, the HTTP loop) that a
                # forked child would inherit in an undefined state.
                self._executor = concurrent.futures.ProcessPoolExecutor(
                    self.workers, mp_context=multiprocessing.get_context("spawn"),
                    initializer=_init_worker, initargs=(worker_spec(self.tagger),))
        return self._executor

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def worker_spec(tagger: ContentTagger) -> str:
    """The spec a worker process loads to get the same tagger."""
    spec: Any = getattr(tagger, "spec", None)
    if not spec:
        raise ValueError(f"{tagger!r} cannot run on worker processes (it has no loadable spec)")
    return str(spec)
