"""A dataset output behind a few verbs: open (or resume), commit, replay, finish.

An output is more than a file: a lock (one writer, ``scalecap.io.lock``), a journal (the truth,
``scalecap.io.journal``), a sink derived from it (``scalecap.io.sinks``) with its manifest of owned
files, and a summary. The order in which they are touched *is* the exactly-once guarantee (the
rules in ``scalecap.io.journal``'s docstring), so it lives here once, behind verbs, rather than in
each runner:

- ``open``: lock first, then (``--overwrite``) remove only what we wrote, then read the journal and
  the sink's committed ids, then refuse another fingerprint; nothing is written before all of that.
- ``commit``: the journal line before the sink write, the journal ``fsync``ed before any sink
  commit; a record the sink refuses becomes a ``sink`` failure in the journal (rule 4).
- ``replay``: a final record the journal has and the sink lacks goes into the sink, never twice
  into the journal.
- ``finish``: close, compact when a line was superseded (rule 3), write the summary, unlock.

Two kinds share the verbs: ``Output`` (a journal + sink, the local runner) and ``ShardOutput``
(the Ray runner's folder of JSONL shards, which are their own journal: actors *stage* a shard, the
driver *commits* it when it takes the batch's result).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from ..images import ImageItem
from ..records import CaptionResult
from .journal import (
    RAY_SHARD,
    Journal,
    JournalError,
    JournalState,
    atomic_write_bytes,
    check_fingerprint,
    compact,
    fsync_dir,
    iter_lines,
    read_journal,
)
from .lock import LOCK_NAME, OutputLock
from .sinks import Sink, SinkItemError

#: What ``finish`` asks the runner for: the summary's content, given the output's own description.
SummaryOf = Callable[[dict[str, Any]], dict[str, Any]]


class Replayed(NamedTuple):
    """A replay: the journal's record, and what the output holds for it now (the record itself, or
    the ``sink`` failure that superseded it)."""

    record: CaptionResult
    written: CaptionResult


def read_done_ids(output: Path) -> set[str]:
    """Ids that have a final record in a journal (a torn last line is cut off)."""
    return read_journal(Path(output), retry_failed=True).done


def _write_summary(path: Path, data: dict[str, Any]) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    # an input spec given as undecodable bytes: its lone surrogates are written as \udXXX, not a crash
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


# ---------------------------------------------------------------------------------------- journal + sink
class Output:
    """One run's hold on a journal + sink output (``open`` ... ``finish``; a context manager, so an
    error closes the journal and the sink and releases the lock, without compacting)."""

    def __init__(self, sink: Sink, lock: OutputLock, state: JournalState, journal: Journal) -> None:
        self._sink, self._lock, self._state, self._journal = sink, lock, state, journal
        self._superseded = 0  # lines this run made stale (retries, sink failures): compaction needed
        self._open = True

    @classmethod
    def open(cls, sink: Sink, *, resume: bool = True, retry_failed: bool = True, fingerprint: str | None = None,
             allow_mixed: bool = False) -> "Output":
        """Open or resume ``sink``'s output: lock it (``OutputLocked`` if another run holds it);
        without ``resume``, remove what earlier runs wrote (only files we own); read what the journal
        and the sink hold; refuse records of another ``fingerprint`` (``FingerprintMismatch``)
        unless ``allow_mixed``. Nothing is read or deleted before the lock is held."""
        lock = OutputLock(sink.lock_path, sink.output).acquire()
        try:
            if not resume:
                sink.reset()
            committed = sink.open()
            try:
                state = read_journal(sink.journal_path, retry_failed=retry_failed, committed=committed,
                                     sink_accepts=sink.accepts)
                check_fingerprint(state, fingerprint, allow_mixed, sink.journal_path)
                journal = Journal(sink.journal_path).open()
            except BaseException:
                sink.close()
                raise
        except BaseException:
            lock.release()
            raise
        sink.before_commit = journal.sync  # the journal is durable before any sink commit (power-cut order)
        return cls(sink, lock, state, journal)

    # what a resume needs -----------------------------------------------------------------------
    @property
    def done(self) -> set[str]:
        """Ids not to caption in this run: final records (failed ones too without retry), and every
        id committed by this run. Read-only for callers."""
        return self._state.done

    @property
    def counts(self) -> Counter:
        """Live records per status when the run started."""
        return Counter({k: v for k, v in self._state.counts.items() if v > 0})

    @property
    def usage(self) -> dict[str, list[int]]:
        """Stage -> [calls, prompt_tokens, completion_tokens] over the live records at the start."""
        return {k: list(v) for k, v in self._state.usage.items()}

    @property
    def failed_usage(self) -> dict[str, dict]:
        """Id -> usage of its live failed record: what a retry in this run replaces."""
        return self._state.failed_usage

    @property
    def lacking(self) -> list[str]:
        """Ids of final records the journal has and the sink has not committed (to ``replay``)."""
        return list(self._state.replay)

    @property
    def needs_bytes(self) -> bool:
        """The sink stores images: keep each item's bytes until its record is committed."""
        return self._sink.needs_bytes

    @property
    def summary_path(self) -> Path:
        return self._sink.summary_path

    # verbs -------------------------------------------------------------------------------------
    def commit(self, result: CaptionResult, data: bytes | None = None, item: ImageItem | None = None) -> CaptionResult:
        """Record one finished image: the journal line first (rule 1), then the sink (rule 4).

        Returns what the output now holds for it: ``result``, or, when the sink refuses it, a
        ``failed`` record of kind ``sink`` appended after it (so the next run retries the image
        instead of replaying a record the sink cannot take). An id that already has a record this
        run must not caption again is refused (rule 2: one live record per id)."""
        if not self._open:
            raise RuntimeError("this output is finished")
        if result.id in self._state.done:
            raise JournalError(f"{result.id!r} already has a record in {self._sink.journal_path}; "
                               "a second one would break one-record-per-id")
        self._journal.append(result)
        self._state.done.add(result.id)
        if result.id in self._state.retry:  # a retry: the failed line before it is now stale
            self._superseded += 1
        return self._into_sink(result, data, item)

    def replay(self, record_id: str, item: ImageItem | None = None) -> Replayed | None:
        """Write into the sink the journal's record of ``record_id`` if the sink lacks it (None: it
        does not). ``item`` gives the image again for sinks that store it; without it (the image is
        gone from the input) the record goes in without its image, counted by the sink."""
        offset = self._state.replay.pop(record_id, None)
        if offset is None:
            return None
        record = self._journal.read_at(offset)
        data = None
        if self._sink.needs_bytes and item is not None:
            try:
                data = item.read_bytes()
            except Exception:  # noqa: BLE001 - the record goes in without its image (counted by the sink)
                data = None
        return Replayed(record, self._into_sink(record, data, item))

    def finish(self, summary_of: SummaryOf) -> Path:
        """Close the journal and the sink (committing the last shard), compact the journal when a
        line was superseded (rule 3), write the summary ``summary_of(sink description)``, unlock.
        Returns the summary's path."""
        self._close()
        try:
            if self._state.superseded or self._superseded:
                compact(self._sink.journal_path)
            _write_summary(self._sink.summary_path, summary_of(self._sink.describe()))
        finally:
            self._lock.release()
        return self._sink.summary_path

    def _into_sink(self, record: CaptionResult, data: bytes | None, item: ImageItem | None) -> CaptionResult:
        try:
            self._sink.write(record, data, item)
            return record
        except SinkItemError as exc:
            failed = record.model_copy(update={"status": "failed", "error": str(exc), "error_kind": "sink"})
            self._journal.append(failed)
            self._superseded += 1
            return failed

    def _close(self) -> None:
        if not self._open:
            return
        self._open = False
        try:
            self._journal.close()
        finally:
            self._sink.close()

    def __enter__(self) -> "Output":
        return self

    def __exit__(self, *exc) -> None:
        """An error: what is written stays (valid under the journal's rules), nothing is compacted."""
        try:
            self._close()
        finally:
            self._lock.release()


# ---------------------------------------------------------------------------------------- Ray shards
#: A shard staged by an actor and not yet committed by the driver: the shard's name, an attempt
#: tag (two attempts at one batch never write one file), ``.tmp``.
STAGED_SHARD = re.compile(r"^(part-\d{14}-[0-9a-f]{6}-[0-9a-f]{16}\.jsonl)\.([0-9a-f]{8})\.tmp$")
SUMMARY_NAME = "summary.json"


def own_files(folder: Path) -> list[Path]:
    """The files of a Ray output folder that the runner wrote: its shards (``RAY_SHARD``), staged
    shards, its summary (and their ``.tmp``). Nothing else is read, tidied or deleted."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir()
                  if RAY_SHARD.match(p.name.removesuffix(".tmp")) or STAGED_SHARD.match(p.name)
                  or p.name in (SUMMARY_NAME, SUMMARY_NAME + ".tmp"))


@dataclass
class ShardStoreState:
    """What a Ray output folder holds, read (and tidied) once at the start of a run."""

    done: set[str] = field(default_factory=set)
    fingerprints: Counter = field(default_factory=Counter)
    counts: Counter = field(default_factory=Counter)
    dropped_failed: int = 0
    dropped_duplicates: int = 0


def open_shard_store(folder: Path, retry_failed: bool = True) -> ShardStoreState:
    """Read a folder of Ray shards, leaving it as one record per id.

    Uncommitted work is deleted (staged shards, ``.tmp`` files: their images were never reported,
    the run does them again). An id in two shards keeps its first record (a retried task's copy
    goes, ``read_records`` reads the same way); failed records go when they will be retried, so
    the retry's record is the only one. Shards that lose lines are rewritten atomically."""
    folder.mkdir(parents=True, exist_ok=True)
    for tmp in own_files(folder):
        if tmp.name.endswith(".tmp"):
            tmp.unlink()
    state = ShardStoreState()
    for shard in (p for p in own_files(folder) if RAY_SHARD.match(p.name)):
        keep: list[bytes] = []
        changed = False
        for _, line, rec in iter_lines(shard):
            rid, status = rec["id"], rec["status"]
            if rid in state.done:
                state.dropped_duplicates += 1
                changed = True
                continue
            if status == "failed" and retry_failed:
                state.dropped_failed += 1
                changed = True
                continue
            state.done.add(rid)
            state.counts[status] += 1
            state.fingerprints[(rec.get("fingerprint") or {}).get("id")] += 1
            keep.append(line)
        if changed:
            if keep:
                atomic_write_bytes(shard, b"".join(keep))
            else:
                shard.unlink()
                fsync_dir(folder)
    return state


def stage_shard(folder: Path, run_tag: str, results: Iterable[CaptionResult]) -> str | None:
    """Actor side: write one batch's records as a staged shard (whole, ``fsync``ed) and return its
    file name for the driver to ``commit``; None for an empty batch. A staged shard is not a record
    yet: a batch whose result the driver never takes (lost, or arriving after a stop) stays staged
    and is deleted, and its images are captioned again by the next run."""
    results = sorted(results, key=lambda r: r.id)
    if not results:
        return None
    digest = hashlib.sha1("\n".join(r.id for r in results).encode("utf-8")).hexdigest()[:16]
    name = f"part-{run_tag}-{digest}.jsonl.{uuid.uuid4().hex[:8]}.tmp"
    with open(folder / name, "xb") as f:
        f.write("".join(r.to_json() + "\n" for r in results).encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    return name


class ShardOutput:
    """One run's hold on a Ray output folder (``open`` ... ``commit`` each batch ... ``finish``)."""

    def __init__(self, folder: Path, lock: OutputLock, state: ShardStoreState) -> None:
        self.folder, self._lock, self._state = folder, lock, state
        #: Names this run's shards: ``part-<run_tag>-<hash of ids>.jsonl`` (older runs first by name).
        self.run_tag = time.strftime("%Y%m%d%H%M%S") + "-" + uuid.uuid4().hex[:6]
        self._committed: set[str] = set()
        self._staged: set[str] = set()  # staged names committed (one per batch answered)
        self._open = True

    @classmethod
    def open(cls, folder: Path, *, resume: bool = True, retry_failed: bool = True) -> "ShardOutput":
        """Lock ``folder`` (``OutputLocked`` if another run holds it); without ``resume`` remove the
        runner's own files only (``own_files``); then read and tidy the shards (``open_shard_store``).
        The fingerprint is checked where the captioner is built, in each actor, against
        ``fingerprints``."""
        folder = Path(folder)
        lock = OutputLock(folder / LOCK_NAME, folder).acquire()
        try:
            if not resume:
                for p in own_files(folder):
                    p.unlink()
            state = open_shard_store(folder, retry_failed)
        except BaseException:
            lock.release()
            raise
        return cls(folder, lock, state)

    @property
    def done(self) -> set[str]:
        """Ids the folder holds a record of (failed ones too, when not retrying)."""
        return self._state.done

    @property
    def counts(self) -> Counter:
        return Counter({k: v for k, v in self._state.counts.items() if v > 0})

    @property
    def fingerprints(self) -> list:
        """The fingerprint ids of the records held (None: records without one)."""
        return [k for k, n in self._state.fingerprints.items() if n > 0]

    def commit(self, staged: str) -> str:
        """Driver side: make a staged shard a record (rename, ``fsync`` of the folder), when its
        batch's result is taken and before it is reported. Returns the shard's name."""
        if not self._open:
            raise RuntimeError("this output is finished")
        m = STAGED_SHARD.match(staged)
        if m is None or not m.group(1).startswith(f"part-{self.run_tag}-"):
            raise ValueError(f"{staged!r} is not a shard staged by this run")
        final = m.group(1)
        if staged in self._staged:  # the rest of an answer that came back in two pieces
            return final
        try:
            os.replace(self.folder / staged, self.folder / final)
        except FileNotFoundError:
            raise JournalError(f"{self.folder / staged}: the staged shard of a batch whose result came back is "
                               "gone; was the folder changed during the run?") from None
        fsync_dir(self.folder)
        self._committed.add(final)
        self._staged.add(staged)
        return final

    def describe(self) -> dict[str, Any]:
        return {"format": "jsonl-shards (ray)", "output": str(self.folder), "run_tag": self.run_tag,
                "shards_committed": len(self._committed), "dropped_failed_for_retry": self._state.dropped_failed,
                "dropped_duplicates": self._state.dropped_duplicates}

    def finish(self, summary_of: SummaryOf) -> Path:
        """Delete this run's staged shards that were never committed, write ``summary.json``
        (``summary_of(description)``), unlock. Returns the summary's path."""
        path = self.folder / SUMMARY_NAME
        try:
            self._open = False
            self._drop_staged()
            _write_summary(path, summary_of(self.describe()))
        finally:
            self._lock.release()
        return path

    def _drop_staged(self) -> None:
        for p in self.folder.glob(f"part-{self.run_tag}-*.tmp"):
            if STAGED_SHARD.match(p.name):
                p.unlink(missing_ok=True)

    def __enter__(self) -> "ShardOutput":
        return self

    def __exit__(self, *exc) -> None:
        self._open = False
        try:
            self._drop_staged()
        finally:
            self._lock.release()
