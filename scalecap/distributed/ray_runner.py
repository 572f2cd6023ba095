"""The Ray *distributor*: the same worker (pre-filters + ScaleCap + Engine) on a Ray cluster.

    rows (id + image bytes / path / url)  ->  batches to a pool of actors
    (each actor: one ScaleCap, its backends loaded once, an Engine keeping many images in flight)
    ->  one JSONL shard per batch, staged by the actor, committed by the driver  ->  OUTDIR/part-<run>-<hash>.jsonl

Two ways in. ``scalecap caption --ray`` (``run_ray_job``) reads the source on the driver and feeds
the actors through a bounded queue: a batch is read only when an actor is about to need it, so the
driver holds a few batches, never the dataset (image bytes of tar shards or Parquet included).
``caption_ray_dataset`` takes a user's ``ray.data.Dataset`` (``read_webdataset``, ``read_parquet``)
and maps it over an ``ActorPoolStrategy``; Ray Data streams it.

The records are the ones a single-machine run writes (same worker, same pipeline, same settings):
only ``timings`` differ, and the order of records across shards.

Exactly-once on Ray (``scalecap.io.output.ShardOutput``, the sibling of the local runner's
``Output``, with the same verbs). An actor *stages* its batch's shard (``.tmp``, whole, ``fsync``ed);
the driver *commits* it (a rename) when it takes the batch's answer, and only then counts and reports
its records. So a batch whose answer never comes (an actor died after writing, Ray re-ran the batch
elsewhere) or comes after a stop is never a record: its staged file is deleted at the end of the run
or at the next start, and its images are captioned again. A shard's name is a hash of the ids it
holds. On (re)start, existing shards are read: an id found in two shards keeps its first record, and
failed records are dropped when they will be retried; shards that lose lines are rewritten
atomically. So the folder always reads as one record per id after a finished run, and a killed run
resumes by skipping the ids it already holds (before anything is sent to the cluster). Runs refuse to
add records of another fingerprint (checked by each actor before it captions anything) unless told to.

Only files named like this runner's shards (``scalecap.io.output.own_files``) are read, tidied or
deleted, and ``--overwrite`` removes only those and the summary: anything else in the folder is left
alone. One run per folder at a time: the driver holds ``OUTDIR/.scalecap.lock`` (``scalecap.io.lock``).
Manifest paths keep their ``--image-root`` in the row: the actor checks it again when it reads.

The circuit breaker (``scalecap.breaker``) works at two levels. Each actor runs its batches through
``ServerRun`` with one breaker for its life: it pauses through an outage of its model server and
re-runs the images the outage failed, and it stops (no more images, its later batches come back
empty) on a refused key, a missing model or an outage outlasting the pause. The driver stops the
run (exit code 3) when an actor reports a stop, or when its own breaker, fed every record, trips;
it keeps every record reported so far. Pauses are reported when the batch that paused comes back.

Paths in rows must be readable from every node (a shared filesystem), and so must ``output_dir``.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..breaker import DEFAULT_THRESHOLD, Breaker
from ..filters import FilterSet
from ..images import ImageItem
from ..io.fetch import FetchConfig, UrlLoader
from ..io.journal import FingerprintMismatch
from ..io.output import ShardOutput, stage_shard
from ..io.sources import FailLoader, FileLoader
from ..outage import OutagePolicy, ServerRun, server_check
from ..pricing import Prices
from ..progress import JobProgress
from ..records import CaptionResult, serialisable
from ..run import JobSummary, Worker, count_result, fingerprint_id, in_scope_items, job_total, summary_dict

# ---------------------------------------------------------------------------------------- rows
def item_to_row(item: ImageItem) -> dict[str, Any]:
    """An item as a Ray row: the reference to read (path, url) or the bytes, plus id/source/meta."""
    row: dict[str, Any] = {"id": item.id, "source": item.source, "meta": json.dumps(item.meta, ensure_ascii=False),
                           "image": None, "path": None, "root": None, "url": None, "fail_kind": None,
                           "fail_message": None}
    loader = item.loader
    if item.data is not None:
        row["image"] = item.data
    elif isinstance(loader, FileLoader):
        row["path"], row["root"] = loader.path, loader.root  # the root is checked again when the actor reads
    elif isinstance(loader, UrlLoader):
        row["url"] = loader.url
    elif isinstance(loader, FailLoader):
        row["fail_kind"], row["fail_message"] = loader.kind, loader.message
    else:
        row["image"] = item.read_bytes()
    return row


def row_to_item(row: dict[str, Any], fetch: FetchConfig | None = None) -> ImageItem:
    """The inverse of ``item_to_row``; also accepts user rows with just ``id`` and one of
    ``image`` (bytes), ``path`` (with an optional ``root`` it must resolve under) or ``url``."""
    rid = str(row["id"])
    meta = row.get("meta")
    meta = json.loads(meta) if isinstance(meta, str) else (meta or {})
    data = row.get("image") if isinstance(row.get("image"), (bytes, bytearray)) else None
    path, url = row.get("path"), row.get("url")
    source = row.get("source") or path or url or f"<row {rid}>"
    if row.get("fail_kind"):
        return ImageItem(id=rid, source=source, meta=meta, loader=FailLoader(row["fail_kind"], row.get("fail_message") or ""))
    if data is not None:
        return ImageItem(id=rid, source=source, data=bytes(data), meta=meta)
    if path:
        root = row.get("root")
        return ImageItem(id=rid, source=source, meta=meta, loader=FileLoader(str(path), str(root) if root else None))
    if url:
        return ImageItem(id=rid, source=source, meta=meta, loader=UrlLoader(str(url), fetch or FetchConfig()))
    return ImageItem(id=rid, source=source, meta=meta, loader=FailLoader("no_image", f"row {rid!r} has no image, path or url"))


# ---------------------------------------------------------------------------------------- actor
@dataclass
class ScaleCapFactory:
    """Builds the ScaleCap of each actor from plain, picklable configs."""

    roles: dict[str, Any]
    settings: Any = None

    def __call__(self):
        from ..pipeline import ScaleCap

        return ScaleCap(**self.roles, settings=self.settings)


class _CaptionActor:
    """One per Ray actor: a captioner built once, then batch after batch of rows."""

    def __init__(self, factory: Callable[[], Any], output_dir: str, run_tag: str, filters: FilterSet | None,
                 concurrency: int | None, known_fingerprints: list, allow_mixed: bool, fetch: FetchConfig,
                 done_ref: list | None = None, stop_after: int = DEFAULT_THRESHOLD,
                 outage: OutagePolicy | None = None) -> None:
        import ray

        # Ids already in the output are dropped here rather than by a ds.filter stage: a separate
        # task stage would wait for a CPU that the actor pool holds (a deadlock on small clusters).
        self.done = ray.get(done_ref[0]) if done_ref else frozenset()
        self.captioner = factory()
        self.worker = Worker(self.captioner, filters)
        self.output_dir = Path(output_dir)
        self.run_tag, self.concurrency, self.fetch = run_tag, concurrency, fetch
        self.loop = asyncio.new_event_loop()
        self.breaker, self.outage = Breaker(stop_after), outage or OutagePolicy()
        self.check = server_check(self.captioner)
        self.stopped: str | None = None  # once set, this actor takes no more images
        fp = fingerprint_id(self.captioner)
        others = [k for k in known_fingerprints if k != fp]
        self.mismatch = None
        if fp is not None and others and not allow_mixed:
            self.mismatch = (f"{output_dir} holds records made with another configuration (fingerprint "
                             f"{', '.join(str(o) for o in others)}); this run's is {fp}. Write to another "
                             "folder, or pass --allow-mixed-fingerprints.")

    def __call__(self, batch):
        if self.mismatch:
            raise FingerprintMismatch(self.mismatch)
        items = [row_to_item(r, self.fetch) for r in batch.to_pylist() if str(r["id"]) not in self.done]
        if not items or self.stopped:  # a stopped actor leaves its images to the next run (no record)
            return _table([], None, self.stopped, [])
        server = ServerRun(self.worker, self.concurrency, self.breaker, self.outage, self.check)

        async def collect() -> list[CaptionResult]:
            return [r async for r in server.run(items)]

        results = sorted((serialisable(r) for r in self.loop.run_until_complete(collect())), key=lambda r: r.id)
        self.stopped = server.stopped
        # staged, not committed: the driver commits the shard when it takes this answer
        staged = stage_shard(self.output_dir, self.run_tag, results)
        return _table(results, staged, self.stopped, server.pauses)


def _table(results: list[CaptionResult], shard: str | None, stopped: str | None, pauses: list[dict]):
    """An actor's answer: one row per record (id, staged shard, record); the first row (or a row with no
    record, when there are none) also says whether the actor stopped and how it paused."""
    import pyarrow as pa

    schema = pa.schema([("id", pa.string()), ("shard", pa.string()), ("record", pa.string()),
                        ("stopped", pa.string()), ("pauses", pa.string())])
    rows = [{"id": r.id, "shard": shard, "record": r.to_json(), "stopped": None, "pauses": None} for r in results]
    if stopped or pauses:
        if not rows:
            rows.append({"id": None, "shard": None, "record": None, "stopped": None, "pauses": None})
        rows[0].update(stopped=stopped, pauses=json.dumps(pauses) if pauses else None)
    return pa.Table.from_pylist(rows, schema=schema)


class _StreamingActor(_CaptionActor):
    """``_CaptionActor`` as a plain Ray actor, fed batch by batch by the streaming driver."""

    def caption(self, batch):
        return self(batch)


# ---------------------------------------------------------------------------------------- driver
def caption_ray_dataset(ds, scalecap_factory: Callable[[], Any], output_dir: str | Path, *, num_actors: int = 2,
                        num_cpus_per_actor: float = 1.0, concurrency: int | None = None, batch_size: int = 8,
                        filters: FilterSet | None = None, retry_failed: bool = True, resume: bool = True,
                        allow_mixed_fingerprints: bool = False, prices: Prices | None = None,
                        fetch: FetchConfig | None = None, progress: JobProgress | None = None,
                        on_result: Callable[[CaptionResult], None] | None = None,
                        stop_after: int = DEFAULT_THRESHOLD, outage: OutagePolicy | None = None) -> JobSummary:
    """Caption the rows of a ``ray.data.Dataset`` (``id`` + ``image`` bytes / ``path`` / ``url``,
    optional ``source`` and ``meta``) with one ScaleCap per actor; JSONL shards into ``output_dir``.

    ``scalecap_factory`` is called once in each actor (it must pickle: a ``ScaleCapFactory`` or a
    module-level function). Ray must be initialised by the caller. Ids already done in
    ``output_dir`` are skipped (the actors drop them before captioning). ``stop_after`` and
    ``outage`` are the circuit breaker's (see the module docstring).
    """
    with ShardOutput.open(_output_folder(output_dir), resume=resume, retry_failed=retry_failed) as store:
        summary = JobSummary()
        summary.skipped = len(store.done)
        return _caption(ds, scalecap_factory, store, summary, num_actors=num_actors,
                        num_cpus_per_actor=num_cpus_per_actor, concurrency=concurrency, batch_size=batch_size,
                        filters=filters, allow_mixed=allow_mixed_fingerprints, prices=prices, fetch=fetch,
                        progress=progress or JobProgress(), on_result=on_result, job=None,
                        stop_after=stop_after, outage=outage)


def run_ray_job(scalecap_factory: Callable[[], Any], job, *, num_actors: int = 2, num_cpus_per_actor: float = 1.0,
                batch_size: int = 8, progress: JobProgress | None = None,
                on_result: Callable[[CaptionResult], None] | None = None) -> JobSummary:
    """``scalecap caption --ray``: plan on the driver exactly like a local run (``--shard``,
    ``--limit``, duplicates, resume), then caption the remaining items on the cluster.

    Rows carry paths and URLs by reference and embedded images (tar shards, Parquet/HF datasets) by
    value, through the driver, a few batches at a time (``_caption_stream``). To read embedded
    datasets on the cluster instead of the driver, build the ``ray.data`` dataset yourself
    (``read_webdataset``, ``read_parquet``) and call ``caption_ray_dataset``.
    """
    from ..io.sinks import SinkError

    if job.format != "jsonl":
        raise SinkError("--ray writes a folder of JSONL shards (-o FOLDER); convert afterwards, or run "
                        "--format parquet/wds/sidecar without --ray")
    with ShardOutput.open(_output_folder(job.output), resume=job.resume, retry_failed=job.retry_failed) as store:
        return _run_open(scalecap_factory, job, store, num_actors=num_actors, num_cpus_per_actor=num_cpus_per_actor,
                         batch_size=batch_size, progress=progress, on_result=on_result)


def _run_open(scalecap_factory, job, store: ShardOutput, *, num_actors: int, num_cpus_per_actor: float,
              batch_size: int, progress: JobProgress | None, on_result) -> JobSummary:
    from ..io.sources import open_source

    source = job.source or open_source(job.inputs, job.input_format, job.source_options())
    summary = JobSummary()
    progress = progress or JobProgress()
    progress.start(job_total(source, job))

    def batches() -> Iterator[list[dict[str, Any]]]:
        rows: list[dict[str, Any]] = []
        for item in in_scope_items(source, job, summary):
            if item.id in store.done:
                summary.skipped += 1
                progress.skipped()
                continue
            rows.append(item_to_row(item))
            if len(rows) == batch_size:
                yield rows
                rows = []
        if rows:
            yield rows
        summary.source_errors = [str(e) for e in source.errors]  # before the summary file is written

    return _caption_stream(batches(), scalecap_factory, store, summary, num_actors=num_actors,
                           num_cpus_per_actor=num_cpus_per_actor, concurrency=job.concurrency,
                           batch_size=batch_size, filters=job.filters, allow_mixed=job.allow_mixed_fingerprints,
                           prices=job.prices, fetch=job.fetch, progress=progress, on_result=on_result, job=job,
                           stop_after=job.stop_after, outage=job.outage)


def _output_folder(output_dir: str | Path) -> Path:
    from ..io.sinks import SinkError

    out = Path(output_dir)
    if (out.exists() and not out.is_dir()) or (not out.exists() and out.suffix.lower() == ".jsonl"):
        raise SinkError(f"{out}: the Ray runner writes a folder of JSONL shards; give -o FOLDER")
    return out


class _RunShards:
    """One run's bookkeeping on the driver, shared by the Ray Data and the streaming paths: the
    batches the actors answer (each shard committed as its answer is taken, then its records
    counted and reported, with the actor's stops and pauses), the driver's own breaker, and the
    summary written at the end."""

    def __init__(self, store: ShardOutput, summary: JobSummary, progress: JobProgress, on_result,
                 stop_after: int) -> None:
        self.store, self.summary, self.progress, self.on_result = store, summary, progress, on_result
        summary.output_counts.update(store.counts)
        self.breaker = Breaker(stop_after)
        self.tripped: str | None = None
        self.t0 = time.perf_counter()

    def take(self, table) -> None:
        """Commit the shard of one batch an actor answered, then count and report its records."""
        rows = table.to_pylist()
        for staged in dict.fromkeys(row["shard"] for row in rows if row["shard"] is not None):
            self.store.commit(staged)
        for row in rows:
            _actor_news(row, self.summary, self.progress)
            if row["record"] is None:
                continue
            record = CaptionResult.from_json(row["record"])
            count_result(self.summary, record)
            self.progress.result(record)
            if self.on_result:
                self.on_result(record)
            self.tripped = self.tripped or self.breaker.observe(record)
        if self.tripped:  # the whole batch is counted: its shard is kept, whole
            self.summary.stopped = self.summary.stopped or self.tripped

    def finish(self, job, prices: Prices | None, info: dict[str, Any]) -> JobSummary:
        """Drop this run's uncommitted shards, then write ``summary.json`` (``ShardOutput.finish``)."""
        summary = self.summary

        def summary_of(store_info: dict[str, Any]) -> dict[str, Any]:
            summary.seconds = time.perf_counter() - self.t0
            data = summary_dict(summary, job, {**store_info, **info}, None)
            data["run"]["usage"] = summary.usage.report(prices)
            data["output"]["usage"] = None  # output-wide token totals are kept by the local journal only
            return data

        summary.summary_path = self.store.finish(summary_of)
        return summary


def _reraise(exc: BaseException) -> None:
    message = _mismatch_message(exc)  # unwrap Ray's wrapper around our refusal
    if message is not None:
        raise FingerprintMismatch(message) from None
    raise exc


def _caption(ds, factory, store: ShardOutput, summary: JobSummary, *, num_actors: int,
             num_cpus_per_actor: float, concurrency: int | None, batch_size: int, filters: FilterSet | None,
             allow_mixed: bool, prices: Prices | None, fetch: FetchConfig | None,
             progress: JobProgress, on_result, job, stop_after: int = DEFAULT_THRESHOLD,
             outage: OutagePolicy | None = None) -> JobSummary:
    """A user's ``ray.data.Dataset`` through ``map_batches`` over an actor pool (Ray Data streams it)."""
    import ray
    import ray.data as rd

    run = _RunShards(store, summary, progress, on_result, stop_after)
    try:
        if ds is not None:
            done_ref = [ray.put(frozenset(store.done))] if (store.done and job is None) else None
            mapped = ds.map_batches(
                _CaptionActor, batch_size=batch_size, batch_format="pyarrow",
                fn_constructor_args=(factory, str(store.folder), store.run_tag, filters, concurrency,
                                     store.fingerprints, allow_mixed,
                                     fetch or FetchConfig(), done_ref, stop_after, outage),
                compute=rd.ActorPoolStrategy(size=num_actors), num_cpus=num_cpus_per_actor)
            # An actor that stops says so and answers its later batches at once with no records; the
            # driver drains them (batches come back in any order: one with records may follow), and
            # breaks off only when its own breaker trips.
            batches = iter(mapped.iter_batches(batch_format="pyarrow", batch_size=None))
            for batch in batches:
                run.take(batch)
                if run.tripped:
                    close = getattr(batches, "close", None)
                    if close is not None:
                        close()
                    break
    except Exception as exc:  # noqa: BLE001 - re-raised, unwrapped
        _reraise(exc)
    finally:
        progress.finish()
    return run.finish(job, prices, {"num_actors": num_actors, "batch_size": batch_size})


#: Batches queued per actor on top of the one it is captioning: enough that an actor never waits for
#: the driver between batches, few enough that the driver holds only a handful of batches.
QUEUED_PER_ACTOR = 1


def _caption_stream(batches: Iterator[list[dict[str, Any]]], factory, store: ShardOutput, summary: JobSummary, *, num_actors: int, num_cpus_per_actor: float, concurrency: int | None,
                    batch_size: int, filters: FilterSet | None, allow_mixed: bool, prices: Prices | None,
                    fetch: FetchConfig | None, progress: JobProgress, on_result, job,
                    stop_after: int = DEFAULT_THRESHOLD, outage: OutagePolicy | None = None) -> JobSummary:
    """Batches read on the driver as the actors free up: a bounded queue, not the whole dataset.

    At most ``num_actors * (1 + QUEUED_PER_ACTOR)`` batches (their image bytes included) exist at
    once; the source is read only as results come back, so memory does not grow with the dataset.
    A dead actor is restarted by Ray and its batch retried (same ids, so the same shard name). Once
    an actor or the driver's breaker stops the run, no further batch is read: the ones out are
    drained (an actor's own stop), or dropped when the driver's breaker trips (no record: the next
    run does them).
    """
    import pyarrow as pa
    import ray

    run = _RunShards(store, summary, progress, on_result, stop_after)
    actor_cls = ray.remote(num_cpus=num_cpus_per_actor, max_restarts=-1, max_task_retries=-1)(_StreamingActor)
    actors: list[Any] = []
    pending: dict[Any, int] = {}  # object ref of a batch's result -> index of its actor
    load = [0] * num_actors
    exhausted = False
    try:
        while True:
            while not (exhausted or summary.stopped) and len(pending) < num_actors * (1 + QUEUED_PER_ACTOR):
                rows = next(batches, None)
                if rows is None:
                    exhausted = True
                    break
                if not actors:  # started on the first batch: a run with nothing to do loads no models
                    actors = [actor_cls.remote(factory, str(store.folder), store.run_tag, filters, concurrency,
                                               store.fingerprints, allow_mixed, fetch or FetchConfig(), None, stop_after, outage)
                              for _ in range(num_actors)]
                i = min(range(num_actors), key=lambda k: load[k])
                load[i] += 1
                pending[actors[i].caption.remote(pa.Table.from_pylist(rows))] = i
            if not pending or run.tripped:
                break
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                load[pending.pop(ref)] -= 1
                run.take(ray.get(ref))
    except Exception as exc:  # noqa: BLE001 - re-raised, unwrapped
        _reraise(exc)
    finally:
        progress.finish()
        for actor in actors:
            ray.kill(actor)
    return run.finish(job, prices, {"num_actors": num_actors, "batch_size": batch_size, "streamed": True})


def _actor_news(row: dict[str, Any], summary: JobSummary, progress: JobProgress) -> None:
    """An actor's stop and pauses, reported on the first row of its batch."""
    if row.get("pauses"):
        for pause in json.loads(row["pauses"]):
            summary.pauses.append(pause)
            progress.notice(f"an actor paused {pause['seconds']:.1f}s for an unreachable model server "
                            f"({pause['probes']} probes), then {pause['outcome']}")
    if row.get("stopped") and not summary.stopped:
        summary.stopped = row["stopped"]


def _mismatch_message(exc: BaseException) -> str | None:
    """Our FingerprintMismatch, raised in an actor, arrives wrapped by Ray: find its message."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            break
        if isinstance(current, FingerprintMismatch):
            return str(current).strip().splitlines()[-1] if str(current).strip() else "fingerprint mismatch"
        current = getattr(current, "cause", None) or current.__cause__
    text = str(exc)
    marker = "FingerprintMismatch: "
    if marker in text:
        return text[text.rindex(marker) + len(marker):].strip().splitlines()[0]
    return None


def init_ray(address: str | None, num_cpus: int | None = None, temp_dir: str | None = None) -> bool:
    """Connect to (``auto`` or an address) or start (``local``) Ray; True if this call started it
    (the caller then shuts it down). An already initialised Ray is reused."""
    import ray

    if ray.is_initialized():
        return False
    if address in (None, "", "local"):
        ray.init(num_cpus=num_cpus or os.cpu_count(), include_dashboard=False, log_to_driver=False,
                 _temp_dir=temp_dir or os.environ.get("SCALECAP_RAY_TMP"))
    else:
        ray.init(address=address, log_to_driver=False)
    return True
