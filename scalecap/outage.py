"""Riding out a model-server outage: pause, probe, resume, and re-run what the outage failed.

An outage longer than the backend's retry budget (about 20 s) fails every image in flight, and every
image admitted after them, with ``backend_unreachable``. Stopping (the breaker alone) keeps the
finished records but needs a person to start the run again; a server restart of a few minutes
should cost a few minutes, not a rerun. ``ServerRun`` wraps the ``Engine`` for that:

- An image that failed with ``backend_unreachable`` (the server's fault, not the image's) is *held*:
  it gets no record yet and runs again once the server is known to answer (an ``ok`` result, or a
  probe), at most ``max_reruns`` times; after that its failure is its record.
- When the ``Breaker`` trips on ``backend_unreachable``, the run pauses: no image is admitted (the
  engine is not pulled while the pause lasts), the server is probed at once and then on a doubling
  schedule for up to ``wait`` seconds, and one notice says so when the pause starts and one when it
  ends. On resume the held images go first, then the rest of the input. When the input is done and
  images are still held, the same wait runs before they are re-run.
- It stops (``stopped`` says why) when the breaker trips on a kind that waiting does not fix
  (``backend_auth``, ``backend_not_found``), when a probe gets one, when the pause runs out, or when
  the server answers probes but the images re-run after a resume fail again before any succeeds.
  Held images are then handed out as the failed records they are (the next run retries them);
  images in flight are cancelled and get no record (the next run does them).

Pausing needs a probe: ``server_check`` finds the captioner's backends that talk to a server (they
have ``check()``, e.g. ``OpenAIBackend``). Without one, or with ``wait=0``, nothing is held and a trip
stops the run. Held images live in memory only and reach the journal when final, so a kill during
a pause loses nothing that the next run does not redo, and nothing is recorded twice.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .backends.base import BackendError
from .breaker import SERVER_KINDS, TRANSIENT_KINDS, Breaker
from .admission import admission_for, distinct_backends
from .engine import Engine, ItemCaptioner
from .images import ImageItem
from .records import CaptionResult

log = logging.getLogger(__name__)

Check = Callable[[], Awaitable[None]]
#: What a probe may answer that waiting does not fix; any other failure (refused, timed out, a 5xx)
#: means the server is still down.
PERMANENT_KINDS = SERVER_KINDS - TRANSIENT_KINDS


@dataclass(frozen=True)
class OutagePolicy:
    #: Seconds one pause may last before the run stops (0: never pause, stop when the breaker trips).
    wait: float = 600.0
    #: Seconds between the first two probes; the interval doubles up to ``max_probe_interval``.
    first_probe: float = 1.0
    max_probe_interval: float = 30.0
    #: Times an image the outage failed is re-run before its failure becomes its record.
    max_reruns: int = 3

    def __post_init__(self) -> None:
        if self.wait < 0 or self.first_probe <= 0 or self.max_probe_interval <= 0 or self.max_reruns < 0:
            raise ValueError("outage policy: wait >= 0, probe intervals > 0, max_reruns >= 0")


def server_check(captioner: Any) -> Check | None:
    """One probe of every distinct server the captioner's backends talk to, or None if none can be
    probed (in-process models have no outage to wait out)."""
    servers = [b for b in distinct_backends(captioner) if callable(getattr(b, "check", None))]
    if not servers:
        return None

    async def check() -> None:
        for backend in servers:
            await backend.check()

    return check


class ServerRun:
    """The engine's results, with outages paused through (see the module docstring)."""

    def __init__(self, captioner: ItemCaptioner, concurrency: int | None, breaker: Breaker,
                 policy: OutagePolicy | None = None, check: Check | None = None,
                 notice: Callable[[str], None] = log.warning) -> None:
        self.captioner, self.breaker = captioner, breaker
        self.admission = admission_for(captioner, concurrency)  # None: by the servers' demand
        self.policy = policy or OutagePolicy()
        self.check, self.notice = check, notice
        self.can_pause = check is not None and self.policy.wait > 0 and breaker.threshold > 0
        self.stopped: str | None = None
        self.pauses: list[dict[str, Any]] = []  # one entry per pause: seconds, probes, outcome, re-run
        self._held: dict[str, tuple[ImageItem, CaptionResult]] = {}
        self._again: deque[tuple[ImageItem, CaptionResult]] = deque()  # released, to run again
        self._reruns: Counter = Counter()
        self._running: dict[str, tuple[ImageItem, int, int]] = {}  # admitted, with the pause count and clock then
        self._clock = 0  # counts admissions and results, in the order this object sees them
        self._failed_at = -1  # the clock when the last server-side failure was taken
        self._epoch = 0  # pauses resumed so far
        self._proven = True  # an image succeeded since the last resume (or there was none)

    async def run(self, items: Iterable[ImageItem]) -> AsyncIterator[CaptionResult]:
        """Yield one final result per item admitted, in completion order, until done or stopped."""
        source = iter(items)
        while True:
            results = Engine(self.captioner, self.admission.max_images, self.admission.admit).run(self._admit(source))
            try:
                async for result in results:
                    for final in await self._take(result):
                        yield final
                    if self.stopped:
                        break
            finally:
                await results.aclose()  # a stop: cancel what is in flight (no record)
            if self.stopped:
                break
            if not self._again and self._held:  # the input is done; the outage left images to re-run
                await self._wait_for_server()
            if self.stopped or not self._again:
                break
        for _, result in [*self._again, *self._held.values()]:  # given up on: their failure is their record
            yield result
        self._again.clear()
        self._held.clear()

    async def _admit(self, source: Iterator[ImageItem]) -> AsyncIterator[ImageItem]:
        while not self.stopped:
            if self._again:
                item, _ = self._again.popleft()
                self._reruns[item.id] += 1
            else:
                item = next(source, None)
                if item is None:
                    return
            self._clock += 1
            self._running[item.id] = (item, self._epoch, self._clock)
            yield item

    async def _take(self, result: CaptionResult) -> list[CaptionResult]:
        """The records ``result`` makes final now (none when it is held), pausing on a trip."""
        item, epoch, admitted = self._running.pop(result.id, (None, self._epoch, self._clock))
        self._clock += 1
        # an image admitted before the last resume failed during the outage already: no news
        stale = epoch < self._epoch and result.status == "failed" and result.error_kind in TRANSIENT_KINDS
        # an answer to a request sent before the last server failure was seen says nothing about the
        # server now (several images end in one turn, in no particular order)
        early = result.status in ("ok", "rejected") and admitted < self._failed_at
        trip = None if stale or early else self.breaker.observe(result)
        if not stale and result.status == "failed" and result.error_kind in SERVER_KINDS:
            self._failed_at = self._clock
        out = [result]
        if result.status == "ok" and not early:
            self._proven = True
            self._release()  # the server answers: what the outage failed can run again
        elif self._holds(result, item):
            assert item is not None
            self._held[result.id] = (item, result)
            out = []
        if trip:
            if self.can_pause and self.breaker.transient:
                await self._wait_for_server()
            else:
                self.stopped = trip
        return out

    def _holds(self, result: CaptionResult, item: ImageItem | None) -> bool:
        return (self.can_pause and item is not None and result.status == "failed"
                and result.error_kind in TRANSIENT_KINDS and self._reruns[result.id] < self.policy.max_reruns)

    def _release(self) -> None:
        self._again.extend(self._held.values())
        self._held.clear()

    async def _wait_for_server(self) -> None:
        """Probe now; if the server is down, pause (probing) until it answers or the wait runs out."""
        assert self.check is not None
        kind, last = self.breaker.kind or "backend_unreachable", self.breaker.last_error
        if not self._proven:
            self.stopped = (f"stopped: the model server answers probes, but the images re-run after the last "
                            f"pause failed again with {kind} (last: {last}); finished records are kept: fix the "
                            "server, then run the same command again (the failed images are retried)")
            return
        t0 = time.monotonic()
        problem = await self._probe()
        probes, delay, paused = 1, self.policy.first_probe, False
        while problem is not None:
            if problem.kind in PERMANENT_KINDS:
                self.stopped = (f"stopped: probing the model server failed with {problem.kind} ({problem}); "
                                "finished records are kept: fix the server, then run the same command again "
                                "(the failed images are retried)")
                break
            if not paused:
                paused = True
                self.notice(f"paused: {self.breaker.streak} images in a row failed with {kind}; probing the "
                            f"server for up to {self.policy.wait:g}s, no new images meanwhile "
                            f"(finished records are kept)")
            left = self.policy.wait - (time.monotonic() - t0)
            if left <= 0:
                self.stopped = (f"stopped: the model server was still unreachable after a {time.monotonic() - t0:.0f}s "
                                f"pause ({probes} probes; last: {problem}); finished records are kept: fix the "
                                "server, then run the same command again (the failed images are retried)")
                break
            await asyncio.sleep(min(delay, left))
            delay = min(delay * 2, self.policy.max_probe_interval)
            problem = await self._probe()
            probes += 1
        waited = time.monotonic() - t0
        rerun = len(self._held)
        if paused:
            self.pauses.append({"kind": kind, "seconds": round(waited, 3), "probes": probes,
                                "outcome": "stopped" if self.stopped else "resumed",
                                "rerun": 0 if self.stopped else rerun})
        if self.stopped:
            return
        if paused:
            self.notice(f"resumed after {waited:.1f}s: the model server answers again; re-running the {rerun} "
                        "images the outage failed")
        self.breaker.reset()
        self._epoch += 1
        self._proven = not rerun  # the re-run must succeed once before another resume
        self._release()

    async def _probe(self) -> BackendError | None:
        assert self.check is not None
        try:
            await self.check()
        except BackendError as exc:
            return exc
        return None
