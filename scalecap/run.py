"""A captioning job: items from a source, through the engine, into a sink, resumable.

This is the layer the CLI's ``caption`` command is a thin wrapper of, and what a Python user calls
to caption a dataset: ``run_job(ScaleCap(...), CaptionJob(inputs=[...], output="out.jsonl"))``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .engine import Engine
from .images import ImageItem
from .records import CaptionResult

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


@dataclass
class CaptionJob:
    inputs: list[str]
    output: Path
    concurrency: int = 8
    resume: bool = True


@dataclass
class JobSummary:
    total: int = 0
    skipped: int = 0
    ok: int = 0
    failed: int = 0
    filtered: int = 0
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    tokens: Counter = field(default_factory=Counter)

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


def iter_image_files(inputs: list[str]) -> Iterator[ImageItem]:
    """Files and folders (recursive, sorted); ids are paths relative to the folder given."""
    for raw in inputs:
        path = Path(raw)
        if path.is_dir():
            for f in sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES):
                yield ImageItem.from_path(f, id=f.relative_to(path).as_posix())
        else:
            # a missing file becomes a per-item failure record, not a crash
            yield ImageItem.from_path(path, id=path.name)


def read_done_ids(output: Path) -> set[str]:
    """Ids already in an output file; a torn last line (crash mid-write) is cut off."""
    if not output.exists():
        return set()
    done: set[str] = set()
    with output.open("rb+") as f:
        good = 0
        for line in f:
            if not line.endswith(b"\n"):
                break
            try:
                done.add(json.loads(line)["id"])
            except (ValueError, KeyError):
                break
            good += len(line)
        f.truncate(good)
    return done


def run_job(captioner, job: CaptionJob, on_result: Callable[[CaptionResult], None] | None = None) -> JobSummary:
    summary = JobSummary()
    done = read_done_ids(job.output) if job.resume else set()
    if not job.resume and job.output.exists():
        job.output.unlink()
    job.output.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def pending() -> Iterator[ImageItem]:
        for item in iter_image_files(job.inputs):
            summary.total += 1
            if item.id in done:
                summary.skipped += 1
                continue
            yield item

    async def main() -> None:
        with job.output.open("a", encoding="utf-8") as out:
            async for result in Engine(captioner, job.concurrency).run(pending()):
                out.write(result.to_json() + "\n")
                out.flush()
                os.fsync(out.fileno())
                _count(summary, result)
                if on_result:
                    on_result(result)

    asyncio.run(main())
    summary.seconds = time.perf_counter() - t0
    return summary


def _count(summary: JobSummary, result: CaptionResult) -> None:
    if result.status == "ok":
        summary.ok += 1
    elif result.status == "filtered":
        summary.filtered += 1
    else:
        summary.failed += 1
        summary.failures[result.error_kind or "error"] += 1
    for stage, usage in result.usage.items():
        summary.tokens[stage] += usage.prompt_tokens + usage.completion_tokens
