"""The run journal: the source of truth of every output, and the exactly-once invariant.

Every run appends one JSON line per finished image to a journal (for ``--format jsonl`` the journal
*is* the output file; for Parquet and WebDataset it is ``OUTDIR/records.jsonl``; for sidecars it is
the ``-o`` file). The writer and the resume logic keep these invariants, whatever moment a
``kill -9`` (or a power cut after the last ``fsync``) strikes:

1. **Append-only, whole lines.** A record is written with one ``write`` of ``line + "\\n"`` and
   flushed to the OS at once, so a killed process loses nothing it had reported; ``fsync`` runs
   before every sink commit (rule 4), on an append a second or more after the last ``fsync``,
   and at the end. So a power cut loses at most about a second of records that no sink had
   committed, and those images are captioned again by the next run. Only the *last* line can be torn; the next run cuts it off
   (that image was not reported done, so it is captioned again). A damaged line anywhere else is
   not a crash artefact: the run refuses to go on and says where.
2. **One live record per id: the last one.** A run appends a record only for ids that have no
   record yet, or whose last record is ``failed`` and is being retried (the default; turn it off
   with ``retry_failed=False``). So an id appears more than once only as ``failed ... failed ...
   final`` (or ``ok`` then a ``sink`` failure, rule 4), and readers take the last line per id
   (``read_records``).
3. **Compaction is atomic.** At the end of a run that superseded failed records, the journal is
   rewritten with only the last line per id (to ``.tmp``, ``fsync``, ``rename``, ``fsync`` of the
   folder). A kill during compaction leaves the old journal, which is valid under rule 2, and the
   next run compacts it. A finished run's journal therefore has exactly one record per image.
4. **Sinks are derived and idempotent.** A sink (Parquet shards, tar shards, sidecar files)
   commits atomically and can say which ids it has committed; on resume, records the journal has
   and the sink has not are *replayed* into it (see ``scalecap.io.sinks``). The sink is written
   after the journal, and the journal is ``fsync``ed before every sink commit (``Sink.before_commit``),
   so the sink never holds a record the journal lacks, not even after a power cut. A record the
   sink refuses (a sidecar that cannot be written) is followed by a ``failed`` record of kind
   ``sink``, which supersedes it like a failed record superseded by a retry (rule 2).

A journal also carries each record's fingerprint (``fingerprint.id``): a run refuses to append to
a journal written with another fingerprint unless told to (``FingerprintMismatch``).
"""

from __future__ import annotations

import json
import os
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..records import CaptionResult

FINAL_STATUSES = ("ok", "filtered", "rejected")  # "rejected": the judge post-filter decided; not redone

#: The shards of a Ray output folder: ``part-<YYYYmmddHHMMSS>-<6 hex>-<16 hex>.jsonl`` (run tag,
#: then a hash of the ids; written by ``scalecap.distributed.ray_runner``). The name is the
#: ownership mark: a foreign ``part-00000.jsonl`` in the folder is never read as records.
RAY_SHARD = re.compile(r"^part-\d{14}-[0-9a-f]{6}-[0-9a-f]{16}\.jsonl$")


class JournalError(RuntimeError):
    """The journal is damaged beyond a torn last line: refuse rather than guess."""


class FingerprintMismatch(RuntimeError):
    """Existing records were made with another pipeline configuration."""


@dataclass
class JournalState:
    """What an existing journal says, read once at the start of a run."""

    #: ids not to caption again (final records; failed ones too when not retrying)
    done: set[str] = field(default_factory=set)
    #: ids whose last record failed and will be captioned again
    retry: set[str] = field(default_factory=set)
    #: id -> byte offset of its last record, for final records the sink has not committed
    replay: dict[str, int] = field(default_factory=dict)
    #: fingerprint id -> live records with it (None: records without a fingerprint)
    fingerprints: Counter = field(default_factory=Counter)
    #: status -> live records
    counts: Counter = field(default_factory=Counter)
    #: stage -> [calls, prompt_tokens, completion_tokens] over the live records
    usage: dict[str, list[int]] = field(default_factory=dict)
    #: id -> usage of its live failed record (what a retry replaces)
    failed_usage: dict[str, dict] = field(default_factory=dict)
    lines: int = 0
    superseded: int = 0
    truncated_bytes: int = 0


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write a file so that it is either absent/old or complete: tmp, fsync, rename, fsync dir."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def iter_lines(path: Path, repair: bool = False) -> Iterator[tuple[int, bytes, dict]]:
    """(offset, line, parsed record) for every complete line. A torn last line (no newline, or not
    JSON) is skipped, and cut off the file when ``repair``. Damage before the last line raises
    ``JournalError``."""
    with open(path, "rb+" if repair else "rb") as f:
        offset = 0
        for line in f:
            start = offset
            offset += len(line)
            obj = _parse(line) if line.endswith(b"\n") else None
            if obj is None:
                if f.read(1):
                    raise JournalError(f"{path}: damaged line at byte {start} (not a whole JSON record) before "
                                       "the end of the file; this is not a crash artefact. Move the file away "
                                       "or fix the line.")
                if repair:
                    f.truncate(start)
                return
            yield start, line, obj


def _parse(line: bytes) -> dict | None:
    try:
        obj = json.loads(line)
    except ValueError:
        return None
    return obj if isinstance(obj, dict) else None


def read_journal(path: Path, *, retry_failed: bool = True, committed: set[str] | None = None,
                 sink_accepts: Callable[[str], bool] | None = None) -> JournalState:
    """Read a journal once: what is done, what to retry, what a sink still lacks.

    ``committed`` is the set of ids the sink has committed (None: the journal is the output, nothing
    to replay); ``sink_accepts(status)`` says which records the sink stores.
    """
    state = JournalState()
    if not path.exists():
        return state
    size = path.stat().st_size
    last: dict[str, tuple[str, str | None, dict]] = {}  # failed ids only: status, fingerprint, usage
    statuses: dict[str, str] = {}
    # byte offset of each id's last record: a superseded ok record (followed by a ``sink`` failure)
    # is rare, so its usage is read back from the file then rather than kept for every id
    offsets: dict[str, int] = {}
    consumed = 0
    for offset, line, rec in iter_lines(path, repair=True):
        consumed = offset + len(line)
        rid, status = rec.get("id"), rec.get("status")
        if not isinstance(rid, str) or status not in ("failed",) + FINAL_STATUSES:
            raise JournalError(f"{path}: the record at byte {offset} has no id/status: is this a scalecap journal?")
        state.lines += 1
        fp = (rec.get("fingerprint") or {}).get("id")
        usage = rec.get("usage") or {}
        prev = statuses.get(rid)
        if prev is not None:
            state.superseded += 1
            before = last.pop(rid, None)
            if before is None:  # an ok/filtered record superseded: read its fingerprint and usage back
                old = _record_at(path, offsets[rid])
                before = (prev, (old.get("fingerprint") or {}).get("id"), old.get("usage") or {})
            _undo(state, rid, prev, before)
        statuses[rid] = status
        offsets[rid] = offset
        state.counts[status] += 1
        state.fingerprints[fp] += 1
        _add_usage(state.usage, usage, +1)
        if status == "failed":
            last[rid] = (status, fp, usage)
        if committed is not None and sink_accepts is not None and sink_accepts(status) and rid not in committed:
            state.replay[rid] = offset
        else:
            state.replay.pop(rid, None)
    state.truncated_bytes = size - consumed
    state.failed_usage = {rid: v[2] for rid, v in last.items()}
    for rid, status in statuses.items():
        if status == "failed" and retry_failed:
            state.retry.add(rid)
        else:
            state.done.add(rid)
    return state


def _record_at(path: Path, offset: int) -> dict:
    with open(path, "rb") as f:
        f.seek(offset)
        return json.loads(f.readline())


def _undo(state: JournalState, rid: str, prev_status: str, prev: tuple | None) -> None:
    state.counts[prev_status] -= 1
    if prev is not None:
        state.fingerprints[prev[1]] -= 1
        _add_usage(state.usage, prev[2], -1)
        if state.fingerprints[prev[1]] <= 0:
            del state.fingerprints[prev[1]]


def _add_usage(total: dict[str, list[int]], usage: dict, sign: int) -> None:
    for stage, u in usage.items():
        t = total.setdefault(stage, [0, 0, 0])
        t[0] += sign * int(u.get("calls", 0))
        t[1] += sign * int(u.get("prompt_tokens", 0))
        t[2] += sign * int(u.get("completion_tokens", 0))


def check_fingerprint(state: JournalState, expected: str | None, allow_mixed: bool, where: Path) -> None:
    """Refuse to add records of fingerprint ``expected`` to records made with another one."""
    if expected is None or allow_mixed:
        return
    others = {fp: n for fp, n in state.fingerprints.items() if fp != expected and n > 0}
    if others:
        listed = ", ".join(f"{fp or 'none'} ({n} records)" for fp, n in sorted(others.items(), key=str))
        raise FingerprintMismatch(
            f"{where} holds records made with another configuration (fingerprint {listed}); this run's is "
            f"{expected}. Write to another output, start afresh with --overwrite, or mix them knowingly with "
            "--allow-mixed-fingerprints.")


class Journal:
    """The append side of a journal (see the module docstring for the invariants)."""

    def __init__(self, path: Path, fsync_every: float = 1.0) -> None:
        self.path = path
        self.fsync_every = fsync_every
        self._fd: int | None = None
        self._last_sync = 0.0
        self._dirty = False
        self.appended = 0

    def open(self) -> "Journal":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._last_sync = time.monotonic()
        return self

    def append(self, record: CaptionResult) -> None:
        assert self._fd is not None, "journal not open"
        data = (record.to_json() + "\n").encode("utf-8")
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self.appended += 1
        self._dirty = True
        now = time.monotonic()
        if now - self._last_sync >= self.fsync_every:
            os.fsync(self._fd)
            self._last_sync, self._dirty = now, False

    def sync(self) -> None:
        if self._fd is not None and self._dirty:
            os.fsync(self._fd)
            self._dirty = False

    def close(self) -> None:
        if self._fd is not None:
            self.sync()
            os.close(self._fd)
            self._fd = None

    def read_at(self, offset: int) -> CaptionResult:
        with open(self.path, "rb") as f:
            f.seek(offset)
            return CaptionResult.from_json(f.readline())


def compact(path: Path) -> int:
    """Rewrite a journal with only the last line per id (atomically). Returns the lines dropped."""
    if not path.exists():
        return 0
    last: dict[str, int] = {}
    seen: set[str] = set()
    n = 0
    for n, (_, _, rec) in enumerate(iter_lines(path)):
        rid = rec["id"]
        if rid in seen:
            last[rid] = n
        seen.add(rid)
    if not last:
        return 0
    del seen
    tmp = path.with_name(path.name + ".tmp")
    dropped = 0
    with open(tmp, "wb") as out:
        for i, (_, line, rec) in enumerate(iter_lines(path)):
            rid = rec["id"]
            if rid in last and last[rid] != i:
                dropped += 1
                continue
            out.write(line)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return dropped


def ray_shards(folder: Path) -> list[Path]:
    """The committed shards of a Ray output folder, in the order its store reads them (by name:
    the run tag first, so older runs first)."""
    return sorted(p for p in folder.iterdir() if RAY_SHARD.match(p.name)) if folder.is_dir() else []


def journal_path_of(output: Path) -> Path:
    """The journal of an output: the file itself, ``records.jsonl`` in a sharded output folder, or
    the Ray output folder itself (its shards are its journal)."""
    if output.is_dir():
        if (output / "records.jsonl").exists():
            return output / "records.jsonl"
        if ray_shards(output):
            return output
        raise FileNotFoundError(f"{output}: no records.jsonl and no scalecap Ray shards "
                                "(part-<run>-<hash>.jsonl) in this folder")
    return output


@dataclass
class ReadStats:
    """What ``read_records`` dropped: records of an id it had already yielded."""

    duplicates: int = 0
    duplicate_ids: list[str] = field(default_factory=list)  # the first few

    def drop(self, rid: str) -> None:
        self.duplicates += 1
        if len(self.duplicate_ids) < 10:
            self.duplicate_ids.append(rid)


def read_records(output: Path, stats: ReadStats | None = None) -> Iterator[CaptionResult]:
    """The live records of an output, one per id.

    A journal (a JSONL output, ``records.jsonl`` of a sharded folder): the *last* record per id, in
    journal order (journal rule 2: a later line supersedes a failed one). A Ray output folder:
    only its own shards (``RAY_SHARD``), and the *first* record per id, the rule of the Ray store
    itself (``scalecap.io.output.open_shard_store``): a second copy is a retried task's, dropped and counted in
    ``stats``."""
    output = Path(output)
    stats = stats if stats is not None else ReadStats()
    target = journal_path_of(output)
    if target.is_dir():
        seen: set[str] = set()
        for shard in ray_shards(target):
            for _, line, obj in iter_lines(shard):
                if obj["id"] in seen:
                    stats.drop(obj["id"])
                    continue
                seen.add(obj["id"])
                yield CaptionResult.from_json(line)
        return
    last: dict[str, int] = {}
    for li, (_, _, obj) in enumerate(iter_lines(target)):
        if obj["id"] in last:
            stats.drop(obj["id"])
        last[obj["id"]] = li
    for li, (_, line, obj) in enumerate(iter_lines(target)):
        if last[obj["id"]] == li:
            yield CaptionResult.from_json(line)
