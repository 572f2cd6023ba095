"""Record schema versions: records written by an older release read back, as written.

``tests/data/records_v1.jsonl`` holds two records in the format before ``schema_version`` existed
(written by the previous code, see tests/data/README.md); they are read through every reader a run
uses (the journal, resume, Parquet), unknown fields are kept and missing ones defaulted.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from scalecap.io.journal import read_journal, read_records
from scalecap.io.sinks import parquet_schema, read_parquet_records, record_to_row
from scalecap.records import SCHEMA_VERSION, UNVERSIONED, CaptionResult

V1 = Path(__file__).resolve().parents[1] / "data" / "records_v1.jsonl"


def test_records_of_the_previous_format_read_as_version_1(tmp_path):
    raw = [json.loads(line) for line in V1.read_text(encoding="utf-8").splitlines()]
    assert all("schema_version" not in r for r in raw)  # the fixture is the old format
    run = tmp_path / "old.jsonl"
    shutil.copyfile(V1, run)
    records = list(read_records(run))
    assert [(r.id, r.status, r.schema_version) for r in records] == [("cat-001", "ok", UNVERSIONED),
                                                                     ("broken-002", "failed", UNVERSIONED)]
    ok = records[0]
    assert ok.final_caption == raw[0]["final_caption"] and ok.sentences[1].text == raw[0]["sentences"][1]["text"]
    assert ok.usage["caption"].prompt_tokens == raw[0]["usage"]["caption"]["prompt_tokens"]
    # every field it had is read back unchanged; the fields it lacked (the version, and fields
    # added since, such as the judge's verdict) take their empty defaults
    again = json.loads(ok.to_json())
    assert again.pop("schema_version") == UNVERSIONED
    assert {k: v for k, v in again.items() if k in raw[0]} == raw[0]
    added = set(again) - set(raw[0])
    assert all(again[k] in (None, [], {}) for k in added), {k: again[k] for k in added}
    # resume over it: both ids known, the failed one to be retried
    state = read_journal(run)
    assert state.done == {"cat-001"} and state.retry == {"broken-002"}
    assert state.counts == {"ok": 1, "failed": 1}
    # a record made now carries this version
    assert CaptionResult(id="x", source="y", status="ok").schema_version == SCHEMA_VERSION > UNVERSIONED


def test_unknown_fields_are_kept_and_missing_ones_defaulted(tmp_path):
    old = json.loads(V1.read_text(encoding="utf-8").splitlines()[0])
    # a field this version does not know (dropped since, or added by a later version), nested too,
    # and fields this version has that the record lacks
    old["legacy_score"] = 0.42
    old["sentences"][0]["legacy_flag"] = True
    for gone in ("ocr", "domain", "filter_hits", "skipped", "adaptive_budget"):
        old.pop(gone)
    rec = CaptionResult.from_json(json.dumps(old))
    assert rec.model_extra == {"legacy_score": 0.42}
    assert rec.sentences[0].model_extra == {"legacy_flag": True}
    assert (rec.ocr, rec.domain, rec.filter_hits, rec.skipped, rec.adaptive_budget) == (None, None, [], {}, None)
    out = json.loads(rec.to_json())
    assert out["legacy_score"] == 0.42 and out["sentences"][0]["legacy_flag"] is True
    # Parquet keeps them too (as one JSON column), and reads the version back as stored
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([record_to_row(rec)], schema=parquet_schema()), folder / "part-00000.parquet")
    back = list(read_parquet_records(folder))
    assert back[0].model_extra == {"legacy_score": 0.42} and back[0].schema_version == UNVERSIONED
    assert back[0].to_json() == rec.to_json()


def test_a_parquet_shard_of_the_previous_format_reads(tmp_path):
    """An older shard has neither the ``schema_version`` nor the ``extra`` column."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    rec = CaptionResult.from_json(V1.read_text(encoding="utf-8").splitlines()[0])
    row = record_to_row(rec)
    del row["schema_version"], row["extra"]
    schema = pa.schema([f for f in parquet_schema() if f.name not in ("schema_version", "extra")])
    folder = tmp_path / "pq"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([row], schema=schema), folder / "part-00000.parquet")
    back = list(read_parquet_records(folder))
    assert back[0].schema_version == UNVERSIONED and back[0].to_json() == rec.to_json()
