"""A captioning job: the local *distributor* that wires reader, worker and writer together.

    source (scalecap.io.sources)  ->  worker (pre-filters + captioner, many in flight: Engine)
                                  ->  the output: journal + sink (scalecap.io.output)

This is what the CLI's ``caption`` command is a thin wrapper of, and what a Python user calls to
caption a dataset::

    run_job(ScaleCap(...), CaptionJob(inputs=["photos/"], output=Path("out.jsonl")))

Memory stays flat whatever the dataset size: items are read lazily, the engine holds at most
``concurrency`` of them, and sinks buffer at most one shard. What grows with the dataset is the
set of ids seen (duplicate detection and resume: tens of bytes per image).

Resume is exactly-once (see ``scalecap.io.journal`` for the invariants): rerunning the same command
skips every id that has a final record, retries failed ones (unless ``retry_failed=False``),
replays into the sink what the journal has and the sink lacks, and refuses to mix records of
another fingerprint. ``limit`` takes the first N items (after ``shard``), so a rerun with the same
limit finishes the same N; ``shard=(i, n)`` keeps the ids whose stable hash is i modulo n, so n
machines given ``0/n`` ... ``n-1/n`` cover the input exactly once between them.

Duplicate ids in the input: the first occurrence is captioned, later ones are skipped, counted in
the summary (with examples) and make the exit code non-zero; the output never holds two records
for one id.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import __version__
from ._sync import run_sync
from .breaker import DEFAULT_THRESHOLD, Breaker
from .filters import FilterSet, Probe, Rejection
from .images import DEFAULT_MAX_PIXELS, ImageError, ImageItem
from .io.fetch import FetchConfig
from .io.output import Output, read_done_ids
from .io.sinks import SinkError, open_sink
from .io.sources import IMAGE_SUFFIXES, FailLoader, Source, SourceOptions, local_path, open_source
from .outage import OutagePolicy, ServerRun, server_check
from .pricing import Prices
from .progress import JobProgress, Usage
from .records import CaptionResult, error_line, escape_surrogates, has_surrogates, serialisable

__all__ = ["CaptionJob", "JobSummary", "Worker", "run_job", "iter_image_files", "read_done_ids", "in_shard",
           "in_scope_items",
           "parse_shard", "IMAGE_SUFFIXES"]


@dataclass
class CaptionJob:
    inputs: list[str]
    output: Path
    #: Images in flight; None: by request demand on model servers, else 8 (``admission.py``).
    concurrency: int | None = None
    resume: bool = True
    format: str = "jsonl"
    input_format: str | None = None
    id_column: str = "id"
    image_column: str = "image"
    shard_size: int = 1000
    sidecar_policy: str = "skip"
    caption_field: str = "final"  # the .txt caption of sidecar/wds outputs: final or corrected
    retry_failed: bool = True
    allow_mixed_fingerprints: bool = False
    limit: int | None = None
    shard: tuple[int, int] | None = None
    filters: FilterSet | None = None
    prices: Prices = field(default_factory=Prices)
    fetch: FetchConfig = field(default_factory=FetchConfig)
    #: Manifests: resolve local paths under this folder (None: each manifest's own folder).
    image_root: Path | None = None
    #: Manifests: read local paths that resolve outside the root too (refused by default).
    allow_paths_outside_root: bool = False
    #: Use this source instead of opening ``inputs`` (Python API: any ``Source``).
    source: Source | None = None
    #: Act after this many images in a row fail because of the model server (0: never; ``Breaker``):
    #: pause through an outage (``outage``), stop on a refused key or a missing model.
    stop_after: int = DEFAULT_THRESHOLD
    #: How long a pause waits for an unreachable server, and how it probes (``scalecap.outage``).
    outage: OutagePolicy = field(default_factory=OutagePolicy)

    def __post_init__(self) -> None:
        self.output = Path(self.output)
        if self.limit is not None and self.limit < 0:
            raise ValueError("limit must be >= 0")
        if self.shard is not None:
            i, n = self.shard
            if not (n >= 1 and 0 <= i < n):
                raise ValueError(f"shard must be i/n with 0 <= i < n, got {i}/{n}")

    def source_options(self) -> SourceOptions:
        """How the job's inputs are read (columns, fetching, the manifest root)."""
        return SourceOptions(self.id_column, self.image_column, self.fetch, self.image_root,
                             self.allow_paths_outside_root)


@dataclass
class JobSummary:
    total: int = 0          # items of the input in scope (after --shard and --limit)
    skipped: int = 0        # already done by an earlier run
    ok: int = 0
    failed: int = 0
    filtered: int = 0
    rejected: int = 0       # captioned, then rejected by the judge post-filter (not a failure: exit code 0)
    retried: int = 0        # failed earlier, captioned again in this run
    duplicates: int = 0
    duplicate_examples: list[str] = field(default_factory=list)
    replayed: int = 0       # records the sink lacked, written into it from the journal
    source_errors: list[str] = field(default_factory=list)
    failures: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    tokens: Counter = field(default_factory=Counter)
    usage: Usage = field(default_factory=Usage)
    output_counts: Counter = field(default_factory=Counter)
    output_usage: Usage = field(default_factory=Usage)
    summary_path: Path | None = None
    stopped: str | None = None  # why the circuit breaker stopped the run (exit code 3)
    pauses: list[dict] = field(default_factory=list)  # outages paused through (``ServerRun.pauses``)

    @property
    def processed(self) -> int:
        return self.ok + self.failed + self.filtered + self.rejected

    @property
    def exit_code(self) -> int:
        if self.stopped:
            return 3
        return 1 if (self.failed or self.duplicates or self.source_errors) else 0


# ---------------------------------------------------------------------------------------- worker
class Worker:
    """The per-item work: read the bytes once, run the pre-filters, then the captioner.

    A filtered or unreadable item never reaches the captioner. ``keep_bytes`` keeps the bytes of
    finished items in ``stash`` (keyed by id) for sinks that store images; the runner pops them.
    """

    def __init__(self, captioner: Any, filters: FilterSet | None = None, keep_bytes: bool = False,
                 max_pixels: int | None = None) -> None:
        self.captioner = captioner
        self.filters = filters or FilterSet()
        self.keep_bytes = keep_bytes
        settings = getattr(captioner, "settings", None)
        self.max_pixels = max_pixels or getattr(settings, "max_pixels", DEFAULT_MAX_PIXELS)
        self.stash: dict[str, bytes] = {}

    @property
    def fingerprint(self):
        return getattr(self.captioner, "fingerprint", None)

    async def caption_item(self, item: ImageItem) -> CaptionResult:
        t0 = time.perf_counter()
        measured: dict[str, Any] = {}
        try:
            path = local_path(item) if item.data is None else None
            if self.filters and self.filters.header_only and path is not None:
                # Header-only filters on a local file: decide before reading the whole file.
                rejection, measured = await asyncio.to_thread(self.filters.check, Probe(path=path))
                if rejection is not None:
                    return self._filtered(item, rejection, measured, t0)
            data = item.data if item.data is not None else await asyncio.to_thread(item.read_bytes)
            if self.filters and not (self.filters.header_only and path is not None):
                rejection, measured = await asyncio.to_thread(
                    self.filters.check, Probe(data=data, max_pixels=self.max_pixels))
                if rejection is not None:
                    return self._filtered(item, rejection, measured, t0)
        except ImageError as exc:
            return self._failed(item, str(exc), exc.kind, t0)
        except OSError as exc:
            return self._failed(item, f"cannot read {item.source}: {exc}", "unreadable", t0)
        except Exception as exc:  # noqa: BLE001 - a loader or filter bug is this item's failure, not the run's
            return self._failed(item, error_line(exc), "internal", t0)
        meta = dict(item.meta)
        if measured:
            meta["prefilter"] = measured
        try:
            result = await self.captioner.caption_item(ImageItem(id=item.id, source=item.source, data=data,
                                                                 meta=meta))
        except Exception as exc:  # noqa: BLE001 - a captioner should return a failed record; one that raises
            return self._failed(item, error_line(exc), "internal", t0)
        if self.keep_bytes and result.status == "ok":
            self.stash[result.id] = data
        return result

    def _record(self, item: ImageItem, t0: float, **fields: Any) -> CaptionResult:
        return CaptionResult(id=item.id, source=item.source, fingerprint=self.fingerprint,
                             timings={"total": round(time.perf_counter() - t0, 4)}, **fields)

    def _failed(self, item: ImageItem, error: str, kind: str, t0: float) -> CaptionResult:
        return self._record(item, t0, status="failed", error=error, error_kind=kind, meta=dict(item.meta))

    def _filtered(self, item: ImageItem, rejection: Rejection, measured: dict, t0: float) -> CaptionResult:
        meta = {**item.meta, **rejection.meta()}
        if measured:
            meta["prefilter"] = measured
        return self._record(item, t0, status="filtered", meta=meta)


# ---------------------------------------------------------------------------------------- helpers
def shard_of(record_id: str, n: int) -> int:
    """A stable partition of ids (the same on every machine and Python version)."""
    digest = hashlib.blake2b(record_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n


def in_shard(record_id: str, shard: tuple[int, int] | None) -> bool:
    return shard is None or shard_of(record_id, shard[1]) == shard[0]


def job_total(source: Source, job: CaptionJob) -> int | None:
    """The items a job covers, when cheap to know before the run (for the progress bar's ETA)."""
    if job.shard is not None:
        return None
    total = source.count()
    return min(total, job.limit) if total is not None and job.limit is not None else total


def in_scope_items(source: Iterable[ImageItem], job: CaptionJob, summary: JobSummary) -> Iterator[ImageItem]:
    """The items a job covers (its ``--shard``, then its first ``--limit``), each id once.

    Counts ``summary.total`` and the duplicate ids (the first occurrence is kept); the caller
    decides what is already done. Shared by the local and the Ray distributor.
    """
    seen: set[str] = set()
    in_scope = 0
    for item in source:
        item = _valid_name(item)  # before hashing the id for --shard (a lone surrogate cannot be encoded)
        if not in_shard(item.id, job.shard):
            continue
        if job.limit is not None and in_scope >= job.limit:
            break
        in_scope += 1
        summary.total += 1
        if item.id in seen:
            summary.duplicates += 1
            if len(summary.duplicate_examples) < 20:
                summary.duplicate_examples.append(item.id)
            continue
        seen.add(item.id)
        yield item


def _valid_name(item: ImageItem) -> ImageItem:
    """An item whose id is not valid Unicode (a non-UTF-8 file or tar member name, a lone
    ``\\udXXX`` in a manifest) becomes a ``bad_name`` failure under its escaped id.

    The escaped id is the same on every run, so resume finds the record; the models never see
    the item, because an id that cannot be written cannot be joined back to its image reliably.
    """
    if not has_surrogates(item.id):
        return item
    shown = escape_surrogates(item.id)
    return ImageItem(id=shown, source=escape_surrogates(item.source), meta=item.meta, loader=FailLoader(
        "bad_name", f"the name {shown!r} is not valid UTF-8 (undecodable bytes shown as \\xNN); "
                    "rename it to caption it"))


def parse_shard(text: str) -> tuple[int, int]:
    """``"2/8"`` -> (2, 8)."""
    i, sep, n = text.partition("/")
    try:
        if not sep:
            raise ValueError
        shard = int(i), int(n)
    except ValueError:
        raise ValueError(f"--shard expects I/N (e.g. 0/4), got {text!r}") from None
    if not (shard[1] >= 1 and 0 <= shard[0] < shard[1]):
        raise ValueError(f"--shard {text}: need 0 <= I < N")
    return shard


def iter_image_files(inputs: list[str]) -> Iterator[ImageItem]:
    """Files and folders (recursive, sorted); ids are paths relative to the folder given."""
    return iter(open_source(inputs, "files"))


def fingerprint_id(captioner: Any) -> str | None:
    return getattr(getattr(captioner, "fingerprint", None), "id", None)


# ---------------------------------------------------------------------------------------- the job
def run_job(captioner: Any, job: CaptionJob, on_result: Callable[[CaptionResult], None] | None = None,
            progress: JobProgress | None = None) -> JobSummary:
    """Caption every item of ``job`` that has no final record yet; see the module docstring."""
    progress = progress or JobProgress()
    summary = JobSummary()
    source = job.source or open_source(job.inputs, job.input_format, job.source_options())
    sink = open_sink(job.format, job.output, shard_size=job.shard_size, sidecar_policy=job.sidecar_policy,
                     caption_field=job.caption_field)
    if sink.format == "sidecar" and not source.may_have_local_files:
        raise SinkError("sidecar captions are written beside local image files; this input has none "
                        "(use --format jsonl, parquet or wds)")
    # one writer per output: the lock is taken before anything is read or deleted
    with Output.open(sink, resume=job.resume, retry_failed=job.retry_failed, fingerprint=fingerprint_id(captioner),
                     allow_mixed=job.allow_mixed_fingerprints) as out:
        return _run_open(captioner, job, source, out, summary, progress, on_result)


def _run_open(captioner: Any, job: CaptionJob, source: Source, out: Output, summary: JobSummary,
              progress: JobProgress, on_result: Callable[[CaptionResult], None] | None) -> JobSummary:
    summary.output_counts.update(out.counts)
    summary.output_usage.stages = out.usage
    failed_before = out.failed_usage

    worker = Worker(captioner, job.filters, keep_bytes=out.needs_bytes)
    inflight: dict[str, ImageItem] = {}
    progress.start(job_total(source, job))
    t0 = time.perf_counter()

    def replay(record_id: str, item: ImageItem | None) -> None:
        replayed = out.replay(record_id, item)
        if replayed is None:
            return
        if replayed.written.status == "failed":  # counted in the output already: it changes status, spends nothing
            summary.output_counts[replayed.record.status] -= 1
            summary.output_counts["failed"] += 1
            summary.failed += 1
            summary.failures["sink"] += 1
        else:
            summary.replayed += 1

    def pending() -> Iterator[ImageItem]:
        for item in in_scope_items(source, job, summary):
            if item.id in out.done:
                summary.skipped += 1
                progress.skipped()
                replay(item.id, item)  # if the sink lacks its record
                continue
            inflight[item.id] = item
            yield item

    server = ServerRun(worker, job.concurrency, Breaker(job.stop_after), job.outage,
                       server_check(captioner), notice=progress.notice)

    async def main() -> None:
        results = server.run(pending())
        try:
            await consume(results)
        finally:
            await results.aclose()  # a stop: cancel what is in flight (no record: the next run does it)
            summary.stopped, summary.pauses = server.stopped, server.pauses

    async def consume(results) -> None:
        async for result in results:
            result = serialisable(result)
            item = inflight.pop(result.id, None)
            result = out.commit(result, worker.stash.pop(result.id, None), item)
            count_result(summary, result, failed_before)
            progress.result(result)
            if on_result:
                on_result(result)

    try:
        run_sync(main())
        if not summary.stopped:
            for record_id in out.lacking:  # records whose image is no longer in the input
                replay(record_id, None)
    finally:
        progress.finish()
    summary.source_errors = [str(e) for e in source.errors]
    fingerprint = fingerprint_id(captioner)

    def summary_of(sink_info: dict[str, Any]) -> dict[str, Any]:
        summary.seconds = time.perf_counter() - t0
        return summary_dict(summary, job, sink_info, fingerprint)

    summary.summary_path = out.finish(summary_of)
    return summary


def count_result(summary: JobSummary, result: CaptionResult, failed_before: dict[str, dict] | None = None) -> None:
    """Add one finished record to the summary (a retry replaces its earlier failed record)."""
    if failed_before and result.id in failed_before:  # a retry: its failed record leaves the output
        summary.retried += 1
        summary.output_counts["failed"] -= 1
        summary.output_usage.add_record(failed_before[result.id], sign=-1)
    summary.output_counts[result.status] += 1
    if result.status == "ok":
        summary.ok += 1
    elif result.status == "filtered":
        summary.filtered += 1
    elif result.status == "rejected":
        summary.rejected += 1
    else:
        summary.failed += 1
        summary.failures[result.error_kind or "error"] += 1
    summary.usage.add_record(result.usage)
    summary.output_usage.add_record(result.usage)
    for stage, usage in result.usage.items():
        summary.tokens[stage] += usage.prompt_tokens + usage.completion_tokens


def summary_dict(summary: JobSummary, job: CaptionJob | None, sink_info: dict[str, Any],
                 fingerprint: str | None) -> dict[str, Any]:
    """The content of ``RUN.summary.json``."""
    rate = summary.processed / summary.seconds if summary.seconds else 0.0
    return {
        "scalecap_version": __version__,
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": fingerprint,
        "inputs": list(job.inputs) if job else None,
        "limit": job.limit if job else None,
        "shard": f"{job.shard[0]}/{job.shard[1]}" if job and job.shard else None,
        "retry_failed": job.retry_failed if job else None,
        "filters": job.filters.describe() if job and job.filters else [],
        "sink": sink_info,
        "run": {
            "seconds": round(summary.seconds, 3),
            "images_per_second": round(rate, 4),
            "in_scope": summary.total,
            "skipped_done": summary.skipped,
            "processed": summary.processed,
            "ok": summary.ok, "failed": summary.failed, "filtered": summary.filtered, "rejected": summary.rejected,
            "retried": summary.retried,
            "duplicates": summary.duplicates, "duplicate_examples": summary.duplicate_examples,
            "replayed_into_sink": summary.replayed,
            "failures_by_kind": dict(sorted(summary.failures.items())),
            "source_errors": summary.source_errors,
            "usage": summary.usage.report(job.prices if job else None),
        },
        "output": {
            "records": sum(v for v in summary.output_counts.values() if v > 0),
            "by_status": {k: v for k, v in sorted(summary.output_counts.items()) if v > 0},
            "usage": summary.output_usage.report(job.prices if job else None),
        },
        "pauses": summary.pauses,
        "stopped": summary.stopped,
        "exit_code": summary.exit_code,
    }
