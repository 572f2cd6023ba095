"""Sinks: where records go (the *writer* of the reader / worker / writer split).

Every run writes the journal first (``scalecap.io.journal``: the source of truth and the resume
state). A sink then materialises the records in the form a user asked for:

``jsonl``     the journal is the output (``-o run.jsonl``); nothing else to write.
``parquet``   ``OUTDIR/part-NNNNN.parquet`` shards of ``shard_size`` records (ok, filtered, rejected),
              one row per record: scalar fields as typed columns, nested fields (sentences,
              questions, summaries, usage, notes, meta, fingerprint, timings) as JSON strings, so
              the schema never depends on what a record holds. ``OUTDIR/records.jsonl`` is the journal.
``wds``       ``OUTDIR/shard-NNNNN.tar`` WebDataset shards of ok records: ``KEY.<ext>`` (the image
              bytes as read, extension from their magic bytes), ``KEY.txt`` (final caption),
              ``KEY.json`` (the record). ``KEY`` is the id when it is a safe name
              (``[A-Za-z0-9_-]``, at most 100 chars), else a slug of it plus 8 hex digits of its
              sha1; member names never contain ``/`` or ``..``, so nothing escapes the shard.
``sidecar``   ``IMAGE_STEM.txt`` beside each local image (ok records), with a policy for a .txt
              that already exists: ``skip`` (default), ``overwrite`` or ``append``; the journal is
              the ``-o`` file. Images that are not local files get no sidecar (counted).

Exactly-once for shards: a shard is written to ``NAME.tmp``, ``fsync``ed and renamed, and only
then committed by appending one line ``{"file", "count", "ids"}`` to ``OUTDIR/_shards.jsonl``
(itself append-only, torn last line ignored). On open, our shard files that the index does not
list (a kill between rename and index line) and our ``.tmp`` files are deleted, and the ids of
listed shards are the sink's *committed* set; records the journal has and the sink lacks are replayed
into it by the runner (with the image bytes read again from the source for WebDataset). Sidecars
commit by writing the .txt atomically, then the id to ``RUN.jsonl.sidecars``; a replay of an
``append`` sees its own caption already at the end of the file and does not append it twice.

Nothing we did not write is deleted. Before a shard's ``.tmp`` is created its name is appended
(and ``fsync``ed) to ``OUTDIR/_owned.jsonl``; cleanup on open and ``--overwrite`` remove only files
listed there (or in the index, for outputs of older versions), plus our own journal, summary and
their ``.tmp``. A file named like a shard that is not listed (WebDataset *inputs* kept in the
output folder, say) is left alone, never overwritten (its number is skipped) and never read as
output (readers follow the index); the summary counts them (``foreign_files_left_alone``).

Failed records never go into shards (they are retried by the next run by default); they live in
the journal and in the run summary.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import tarfile
from pathlib import Path
from collections.abc import Callable
from typing import Any

from ..images import ImageItem
from ..records import CaptionResult, error_line, escape_surrogates
from .caption_field import check_caption_field, chosen_caption
from .fetch import sniff_image_format
from .journal import atomic_write_bytes, fsync_dir
from .lock import LOCK_NAME
from .sources import local_path

SINK_FORMATS = ("jsonl", "parquet", "wds", "sidecar")
#: The owned-files manifest of a sharded output: one ``{"file": NAME}`` line per shard we wrote.
OWNED_NAME = "_owned.jsonl"
SIDECAR_POLICIES = ("skip", "overwrite", "append")


class SinkError(RuntimeError):
    """The output cannot be written as asked (a refusal before anything is written)."""


class SinkItemError(RuntimeError):
    """One record could not be written into the sink (a sidecar beside an image in a read-only
    folder, an existing sidecar that is not UTF-8): that item's failure (``error_kind="sink"``),
    not the run's."""


class Sink:
    """What the runner writes records into after the journal."""

    format: str = "jsonl"
    #: The sink needs the image bytes (the worker keeps them until the record is written).
    needs_bytes: bool = False

    def __init__(self, output: Path) -> None:
        self.output = Path(output)
        self.stats: dict[str, int] = {}
        #: Called before the sink commits anything durably: the runner sets it to the journal's
        #: ``sync``, so the sink never durably holds a record the journal could lose in a power cut.
        self.before_commit: Callable[[], None] = lambda: None

    @property
    def journal_path(self) -> Path:
        return self.output

    @property
    def summary_path(self) -> Path:
        o = self.output
        return o.with_name(o.stem + ".summary.json") if o.suffix else o.with_name(o.name + ".summary.json")

    @property
    def lock_path(self) -> Path:
        """The file a run locks for its whole length (``scalecap.io.lock``)."""
        return self.output.with_name(self.output.name + ".lock")

    def accepts(self, status: str) -> bool:
        return False

    def reset(self) -> None:
        """Remove what earlier runs wrote (``--overwrite``)."""
        for p in (self.journal_path, self.summary_path):
            if p.exists() and p.is_file():
                p.unlink()

    def open(self) -> set[str] | None:
        """Prepare for writing; the ids the sink has committed (None: the journal is the output)."""
        self.journal_path.parent.mkdir(parents=True, exist_ok=True)
        return None

    def write(self, record: CaptionResult, data: bytes | None, item: ImageItem | None) -> None:
        """Store one record (called after the journal holds it; also for replays)."""

    def close(self) -> None:
        """Commit what is pending."""

    def describe(self) -> dict[str, Any]:
        return {"format": self.format, "output": str(self.output), "journal": str(self.journal_path), **self.stats}


class JsonlSink(Sink):
    format = "jsonl"

    def __init__(self, output: Path) -> None:
        super().__init__(output)
        if self.output.is_dir():
            raise SinkError(f"{output} is a folder: give a .jsonl file for --format jsonl "
                            "(folders are for --format parquet/wds)")


# ---------------------------------------------------------------------------------------- sidecar
class SidecarSink(Sink):
    format = "sidecar"

    def __init__(self, output: Path, policy: str = "skip", caption_field: str = "final") -> None:
        super().__init__(output)
        if policy not in SIDECAR_POLICIES:
            raise SinkError(f"unknown sidecar policy {policy!r}: choose from {', '.join(SIDECAR_POLICIES)}")
        self.policy = policy
        self.caption_field = caption_field
        self.done_path = self.output.with_name(self.output.name + ".sidecars")
        self.stats = {"sidecars_written": 0, "sidecars_skipped_existing": 0, "sidecars_appended": 0,
                      "sidecars_not_local": 0}
        if caption_field == "corrected":
            self.stats["captions_corrected"] = 0
        self._f = None

    def accepts(self, status: str) -> bool:
        return status == "ok"

    def reset(self) -> None:
        super().reset()
        if self.done_path.exists():
            self.done_path.unlink()

    def open(self) -> set[str]:
        super().open()
        done: set[str] = set()
        if self.done_path.exists():
            with open(self.done_path, "rb+") as f:
                good = 0
                for line in f:
                    if not line.endswith(b"\n"):
                        f.truncate(good)
                        break
                    done.add(json.loads(line))
                    good += len(line)
        self._f = open(self.done_path, "ab", buffering=0)
        return done

    def write(self, record: CaptionResult, data: bytes | None, item: ImageItem | None) -> None:
        if record.status != "ok":
            return
        image = local_path(item) if item is not None else None
        if image is None:
            self.stats["sidecars_not_local"] += 1
        else:
            txt = image.with_suffix(".txt")
            caption, corrected = chosen_caption(record, self.caption_field)
            try:
                self._write_txt(txt, caption or "")
            except (OSError, UnicodeError) as exc:
                raise SinkItemError(f"cannot write the sidecar {escape_surrogates(str(txt))}: "
                                    f"{escape_surrogates(error_line(exc))}") from None
            if corrected:
                self.stats["captions_corrected"] += 1
        assert self._f is not None
        self._f.write((json.dumps(record.id, ensure_ascii=False) + "\n").encode("utf-8"))

    def _write_txt(self, txt: Path, caption: str) -> None:
        exists = txt.exists()
        if exists and self.policy == "skip":
            self.stats["sidecars_skipped_existing"] += 1
            return
        if exists and self.policy == "append":
            old = txt.read_text(encoding="utf-8")
            if old.rstrip("\n").endswith(caption):  # a replay: this caption is already there
                return
            self.before_commit()
            atomic_write_bytes(txt, (old.rstrip("\n") + "\n" + caption + "\n").encode("utf-8"))
            self.stats["sidecars_appended"] += 1
            return
        self.before_commit()
        atomic_write_bytes(txt, (caption + "\n").encode("utf-8"))
        self.stats["sidecars_written"] += 1

    def close(self) -> None:
        if self._f is not None:
            os.fsync(self._f.fileno())
            self._f.close()
            self._f = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "policy": self.policy}


# ---------------------------------------------------------------------------------------- shards
class _ShardedSink(Sink):
    prefix = "part"
    suffix = ".bin"
    index_name = "_shards.jsonl"

    def __init__(self, output: Path, shard_size: int = 1000) -> None:
        super().__init__(output)
        if shard_size < 1:
            raise SinkError("shard size must be >= 1")
        if self.output.exists() and not self.output.is_dir():
            raise SinkError(f"{output} is a file: --format {self.format} writes a folder of shards")
        self.shard_size = shard_size
        self._pattern = re.compile(rf"^{self.prefix}-(\d{{5,}}){re.escape(self.suffix)}$")
        self._ids: list[str] = []
        self._next = 0
        self._index = None
        self.stats = {"shards_committed": 0, "records_in_shards": 0}

    @property
    def journal_path(self) -> Path:
        return self.output / "records.jsonl"

    @property
    def summary_path(self) -> Path:
        return self.output / "summary.json"

    @property
    def lock_path(self) -> Path:
        return self.output / LOCK_NAME

    @property
    def index_path(self) -> Path:
        return self.output / self.index_name

    @property
    def owned_path(self) -> Path:
        return self.output / OWNED_NAME

    def _owned_names(self) -> set[str]:
        """Shard names this sink wrote: ``_owned.jsonl`` (recorded before each shard's ``.tmp`` is
        created) and, for outputs of older versions, the shards the index lists."""
        names = {e["file"] for e in _read_lines(self.owned_path)} | {e["file"] for e in _read_lines(self.index_path)}
        return names

    def _ours(self, owned: set[str]) -> list[Path]:
        """Files of the output folder this sink wrote (shards, their ``.tmp``, our own tmp files)."""
        if not self.output.is_dir():
            return []
        mine = {f"{self.journal_path.name}.tmp", f"{self.summary_path.name}.tmp"}
        return [p for p in self.output.iterdir() if p.name in mine or p.name.removesuffix(".tmp") in owned]

    def _foreign(self, owned: set[str]) -> list[str]:
        """Files named like our shards that we did not write (input shards kept in the output folder):
        never deleted, never overwritten, never counted as output."""
        if not self.output.is_dir():
            return []
        return sorted(p.name for p in self.output.iterdir()
                      if self._pattern.match(p.name.removesuffix(".tmp")) and p.name.removesuffix(".tmp") not in owned)

    def reset(self) -> None:
        """``--overwrite``: remove the files listed as ours, the index, the journal and the summary."""
        super().reset()
        for p in self._ours(self._owned_names()) + [self.index_path, self.owned_path]:
            if p.exists():
                p.unlink()

    def open(self) -> set[str]:
        self.output.mkdir(parents=True, exist_ok=True)
        owned = self._owned_names()
        committed: set[str] = set()
        listed: set[str] = set()
        if self.index_path.exists():
            for entry in _read_lines(self.index_path, repair=True):
                listed.add(entry["file"])
                committed.update(entry["ids"])
        for p in self._ours(owned):  # our shards renamed but never committed, our tmp files: redone from the journal
            if p.name not in listed:
                p.unlink()
        self._owned = owned
        self._foreign_names = set(self._foreign(owned))
        numbers = [int(self._pattern.match(n).group(1)) for n in listed if self._pattern.match(n)]
        self._next = max(numbers) + 1 if numbers else 0
        self.stats["shards_before"] = len(listed)
        if self._foreign_names:
            self.stats["foreign_files_left_alone"] = len(self._foreign_names)
        self._index = open(self.index_path, "ab", buffering=0)
        self._owned_file = open(self.owned_path, "ab", buffering=0)
        fsync_dir(self.output)
        return committed

    def accepts(self, status: str) -> bool:
        return status in ("ok", "filtered", "rejected")

    def write(self, record: CaptionResult, data: bytes | None, item: ImageItem | None) -> None:
        if not self.accepts(record.status):
            return
        if not self._ids:
            self._claim_name()
            self._begin(self._tmp_path())
        self._add(record, data)
        self._ids.append(record.id)
        if len(self._ids) >= self.shard_size:
            self._commit()

    def _claim_name(self) -> None:
        """Pick the next shard name that is not a foreign file, and record it as ours (durably)
        before its ``.tmp`` exists: a kill at any later moment leaves only files we can tell are ours."""
        while self._name() in self._foreign_names or self._name() + ".tmp" in self._foreign_names:
            self._next += 1
        name = self._name()
        if name not in self._owned:
            self._owned_file.write((json.dumps({"file": name}) + "\n").encode("utf-8"))
            os.fsync(self._owned_file.fileno())
            self._owned.add(name)

    def _name(self) -> str:
        return f"{self.prefix}-{self._next:05d}{self.suffix}"

    def _tmp_path(self) -> Path:
        return self.output / (self._name() + ".tmp")

    def _commit(self) -> None:
        self.before_commit()
        tmp, final = self._tmp_path(), self.output / self._name()
        self._finish(tmp)
        os.replace(tmp, final)
        fsync_dir(self.output)
        assert self._index is not None
        entry = {"file": final.name, "count": len(self._ids), "ids": self._ids}
        self._index.write((json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        os.fsync(self._index.fileno())
        self.stats["shards_committed"] += 1
        self.stats["records_in_shards"] += len(self._ids)
        self._ids = []
        self._next += 1

    def close(self) -> None:
        if self._ids:
            self._commit()
        if self._index is not None:
            self._index.close()
            self._index = None
        if getattr(self, "_owned_file", None) is not None:
            self._owned_file.close()
            self._owned_file = None

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "shard_size": self.shard_size}

    # subclasses
    def _begin(self, tmp: Path) -> None: ...
    def _add(self, record: CaptionResult, data: bytes | None) -> None: ...
    def _finish(self, tmp: Path) -> None: ...


#: Parquet columns: the scalar fields of a record, then its nested fields as JSON strings.
SCALAR_FIELDS = ("id", "source", "status", "error", "error_kind", "first_caption", "final_caption")
JSON_FIELDS = ("sentences", "questions", "summaries", "usage", "notes", "meta", "fingerprint", "timings", "skipped",
               "correction", "adaptive_budget", "filter_hits", "ocr", "domain", "judge")


def _read_lines(path: Path, repair: bool = False) -> list[dict]:
    """The entries of an append-only JSON-lines file of ours; a torn last line is ignored (and cut
    off when ``repair``)."""
    if not path.exists():
        return []
    entries: list[dict] = []
    with open(path, "rb+" if repair else "rb") as f:
        good = 0
        for line in f:
            try:
                entry = json.loads(line) if line.endswith(b"\n") else None
            except ValueError:
                entry = None
            if not isinstance(entry, dict):
                if repair:
                    f.truncate(good)
                break
            good += len(line)
            entries.append(entry)
    return entries


def record_to_row(record: CaptionResult) -> dict[str, Any]:
    d = record.model_dump(mode="json")
    row = {k: d[k] for k in SCALAR_FIELDS}
    row["schema_version"] = d["schema_version"]
    row["caption_fallback"] = d["caption_fallback"]
    row["fingerprint_id"] = (d.get("fingerprint") or {}).get("id")
    for k in JSON_FIELDS:
        row[k] = json.dumps(d[k], ensure_ascii=False)
    # fields this version does not know (a record of another version): kept, as one JSON object
    extra = record.model_extra or {}
    row["extra"] = json.dumps({k: d[k] for k in extra}, ensure_ascii=False) if extra else None
    return row


def row_to_record(row: dict[str, Any]) -> CaptionResult:
    # a column missing from an older shard (or null in it) takes the record's default
    d = {k: row[k] for k in (*SCALAR_FIELDS, "schema_version", "caption_fallback") if row.get(k) is not None}
    for k in JSON_FIELDS:
        if row.get(k) is not None:
            d[k] = json.loads(row[k])
    if row.get("extra"):
        d = {**json.loads(row["extra"]), **d}
    return CaptionResult.from_dict(d)


def parquet_schema():
    import pyarrow as pa

    fields = [pa.field(k, pa.string()) for k in SCALAR_FIELDS]
    fields.append(pa.field("schema_version", pa.int32()))
    fields.append(pa.field("caption_fallback", pa.bool_()))
    fields.append(pa.field("fingerprint_id", pa.string()))
    fields += [pa.field(k, pa.string()) for k in JSON_FIELDS]
    fields.append(pa.field("extra", pa.string()))  # JSON of the fields this version does not know
    return pa.schema(fields)


class ParquetSink(_ShardedSink):
    format = "parquet"
    prefix = "part"
    suffix = ".parquet"

    def _begin(self, tmp: Path) -> None:
        self._rows: list[dict[str, Any]] = []

    def _add(self, record: CaptionResult, data: bytes | None) -> None:
        self._rows.append(record_to_row(record))

    def _finish(self, tmp: Path) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(self._rows, schema=parquet_schema())
        with open(tmp, "wb") as f:
            pq.write_table(table, f, compression="zstd")
            f.flush()
            os.fsync(f.fileno())
        self._rows = []


_SAFE_KEY = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


def wds_key(record_id: str) -> str:
    """A WebDataset key for an id: the id itself when it is a safe file name without dots."""
    if _SAFE_KEY.match(record_id):
        return record_id
    slug = re.sub(r"[^A-Za-z0-9_-]+", "_", record_id).strip("_")[-60:] or "item"
    return f"{slug}-{hashlib.sha1(record_id.encode('utf-8')).hexdigest()[:8]}"


class WdsSink(_ShardedSink):
    format = "wds"
    prefix = "shard"
    suffix = ".tar"
    needs_bytes = True

    def __init__(self, output: Path, shard_size: int = 1000, caption_field: str = "final") -> None:
        super().__init__(output, shard_size)
        self.stats["samples_without_image"] = 0
        self.caption_field = caption_field
        if caption_field == "corrected":
            self.stats["captions_corrected"] = 0

    def accepts(self, status: str) -> bool:
        return status == "ok"

    def _begin(self, tmp: Path) -> None:
        self._file = open(tmp, "wb")
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.PAX_FORMAT)

    def _member(self, name: str, payload: bytes) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mtime, info.mode = len(payload), 0, 0o644
        self._tar.addfile(info, io.BytesIO(payload))

    def _add(self, record: CaptionResult, data: bytes | None) -> None:
        key = wds_key(record.id)
        if data:
            ext = sniff_image_format(data) or (Path(record.source).suffix.lstrip(".").lower() or "img")
            self._member(f"{key}.{ext}", data)
        else:
            self.stats["samples_without_image"] += 1
        caption, corrected = chosen_caption(record, self.caption_field)
        self._member(f"{key}.txt", (caption or "").encode("utf-8"))
        if corrected:
            self.stats["captions_corrected"] += 1
        self._member(f"{key}.json", record.to_json().encode("utf-8"))

    def _finish(self, tmp: Path) -> None:
        self._tar.close()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()


def open_sink(format: str, output: Path, *, shard_size: int = 1000, sidecar_policy: str = "skip",
              caption_field: str = "final") -> Sink:
    """``caption_field`` (final or corrected) picks the ``.txt`` caption of sidecar and wds outputs;
    jsonl and parquet keep every caption of the record, so they refuse anything but the default."""
    fmt = format.lower()
    try:
        check_caption_field(caption_field)
    except ValueError as exc:
        raise SinkError(str(exc)) from None
    if caption_field != "final" and fmt not in ("sidecar", "wds", "webdataset"):
        raise SinkError(f"--caption-field {caption_field} picks the .txt caption of sidecar and wds outputs; "
                        f"{fmt} keeps every caption of the record")
    if fmt == "jsonl":
        return JsonlSink(output)
    if fmt == "parquet":
        return ParquetSink(output, shard_size)
    if fmt in ("wds", "webdataset"):
        return WdsSink(output, shard_size, caption_field)
    if fmt == "sidecar":
        return SidecarSink(output, sidecar_policy, caption_field)
    raise SinkError(f"unknown output format {format!r}: choose from {', '.join(SINK_FORMATS)}")


def read_parquet_records(folder: Path):
    """The records of a Parquet output folder (committed shards), as ``CaptionResult``s."""
    import pyarrow.parquet as pq

    folder = Path(folder)
    index = _read_lines(folder / "_shards.jsonl")
    shards = sorted(folder / e["file"] for e in index) if index else sorted(folder.glob("part-*.parquet"))
    for shard in shards:  # the committed shards (a foreign part-*.parquet in the folder is not ours)
        for batch in pq.ParquetFile(shard).iter_batches(batch_size=256):
            for row in batch.to_pylist():
                yield row_to_record(row)
