"""Machinery the pipeline's steps share: the per-image trace, stage timing, per-item failures.

Kept out of ``pipeline.py`` so that file reads like METHOD.md section 3.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .backends.base import BackendError, Generation
from .records import StageUsage

A = TypeVar("A")
B = TypeVar("B")

STAGES = ("routing", "caption", "caption_rating", "instructions", "answers", "answer_rating",
          "object_summary", "position_summary", "final", "correction", "correction_rating", "judge")


class StageFailure(BackendError):
    """A step produced something the method cannot go on from; ``kind`` becomes ``error_kind``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass
class Trace:
    """Per-image accounting, filled in as the stages run."""

    usage: dict[str, StageUsage] = field(default_factory=lambda: {s: StageUsage() for s in STAGES})
    timings: dict[str, float] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @classmethod
    def new(cls) -> "Trace":
        return cls()

    def record(self, stage: str, out: Generation) -> None:
        self.usage[stage].add(out.prompt_tokens, out.completion_tokens, truncated=out.finish_reason == "length")

    def skip(self, stage: str, why: str) -> None:
        self.skipped[stage] = why


class timed:
    """``with timed(trace, stage):`` stores the stage's wall time in the trace."""

    def __init__(self, trace: Trace, stage: str) -> None:
        self.trace, self.stage = trace, stage

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.trace.timings[self.stage] = round(time.perf_counter() - self.t0, 4)


async def both(first: Awaitable[A], second: Awaitable[B]) -> tuple[A, B]:
    """``await asyncio.gather(first, second)`` with one task instead of two and gather's future.

    ``first`` runs in the calling task, ``second`` in a task of its own, started in that order as
    gather starts them. As with gather: both run concurrently; an exception of either is raised
    and the other goes on (its own later exception is retrieved, not logged as lost); cancelling
    the caller cancels both. The rating awaits its two scoring passes with this, 41 times an image
    at N=20, where a task costs as much as the instant work it wraps.
    """
    task = asyncio.ensure_future(second)
    try:
        a = await first
    except asyncio.CancelledError:
        task.cancel()
        raise
    except BaseException:
        task.add_done_callback(retrieve_exception)
        raise
    return a, await task


def retrieve_exception(done: asyncio.Future[Any]) -> None:
    if not done.cancelled():
        done.exception()
