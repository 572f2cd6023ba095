"""Machinery the pipeline's steps share: the per-image trace, stage timing, per-item failures.

Kept out of ``pipeline.py`` so that file reads like METHOD.md section 3.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .backends.base import BackendError, Generation
from .records import StageUsage

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
