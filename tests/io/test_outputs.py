"""Journal and sinks with an instant fake captioner: the I/O machinery on its own.

(Everything that involves real pipeline behaviour runs the tiny real models: see
test_resume_kill.py, test_cli_data.py and tests/distributed.)
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from iohelpers import FakeCaptioner, read_jsonl
from typer.testing import CliRunner

from scalecap.cli import app
from scalecap.io.journal import (
    FingerprintMismatch,
    JournalError,
    compact,
    read_journal,
    read_records,
)
from scalecap.io.sinks import SinkError, read_parquet_records, wds_key
from scalecap.records import CaptionResult
from scalecap.run import CaptionJob, run_job

ALL = ["a.png", "b photo.jpg", "sub dir/c.png", "sub dir/d.webp", "sub dir/e.gif", "çafé ☕.png"]


def job(folder, out, **kw):
    return CaptionJob(inputs=[str(folder)], output=Path(out), concurrency=3, **kw)


def test_jsonl_torn_line_is_cut_and_damage_elsewhere_is_refused(small_folder, tmp_path, fake):
    out = tmp_path / "run.jsonl"
    run_job(fake, job(small_folder, out, limit=3))
    with out.open("a", encoding="utf-8") as f:
        f.write('{"id": "sub dir/d.webp", "status": "o')  # kill -9 in the middle of a write
    s = run_job(fake, job(small_folder, out))
    assert (s.skipped, s.ok) == (3, 3)
    recs = read_jsonl(out)
    assert sorted(r["id"] for r in recs) == sorted(ALL)
    lines = out.read_text(encoding="utf-8").splitlines()
    lines.insert(1, "garbage")
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.raises(JournalError, match="damaged line"):
        run_job(fake, job(small_folder, out))


def test_failed_records_are_retried_and_replaced_without_duplicates(small_folder, tmp_path):
    out = tmp_path / "run.jsonl"
    s = run_job(FakeCaptioner(fail_ids={"a.png", "sub dir/c.png"}), job(small_folder, out))
    assert (s.ok, s.failed, s.exit_code) == (4, 2, 1)
    s = run_job(FakeCaptioner(fail_ids={"a.png", "sub dir/c.png"}), job(small_folder, out, retry_failed=False))
    assert (s.skipped, s.processed, s.exit_code) == (6, 0, 0)
    s = run_job(FakeCaptioner(fail_ids={"sub dir/c.png"}), job(small_folder, out))
    assert (s.skipped, s.retried, s.ok, s.failed) == (4, 2, 1, 1)
    recs = read_jsonl(out)
    assert sorted(r["id"] for r in recs) == sorted(ALL)  # compacted: one record per id
    assert {r["id"]: r["status"] for r in recs}["a.png"] == "ok"
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["output"]["by_status"] == {"failed": 1, "ok": 5}
    assert summary["run"]["retried"] == 2


def test_fingerprint_mismatch_is_refused_unless_allowed(small_folder, tmp_path):
    out = tmp_path / "run.jsonl"
    run_job(FakeCaptioner("fp-A"), job(small_folder, out, limit=2))
    with pytest.raises(FingerprintMismatch, match="fp-A"):
        run_job(FakeCaptioner("fp-B"), job(small_folder, out))
    s = run_job(FakeCaptioner("fp-B"), job(small_folder, out, allow_mixed_fingerprints=True))
    assert s.ok == 4
    state = read_journal(out)
    assert dict(state.fingerprints) == {"fp-A": 2, "fp-B": 4}


def test_parquet_shards_commit_atomically_and_orphans_are_redone(small_folder, tmp_path, fake):
    out = tmp_path / "pq"
    s = run_job(fake, job(small_folder, out, format="parquet", shard_size=4, limit=5))
    assert sorted(p.name for p in out.glob("part-*.parquet")) == ["part-00000.parquet", "part-00001.parquet"]
    # a kill between a shard's rename and its index line: the shard is an orphan
    index = out / "_shards.jsonl"
    entries = index.read_text().splitlines()
    index.write_text(entries[0] + "\n" + entries[1][:10])  # and a torn index line
    # and a kill while the next shard was being written: its name was recorded as ours first
    with (out / "_owned.jsonl").open("a") as f:
        f.write('{"file": "part-00002.parquet"}\n')
    (out / "part-00002.parquet.tmp").write_bytes(b"half a shard")
    s = run_job(fake, job(small_folder, out, format="parquet", shard_size=4))
    assert s.replayed == 1 and s.ok == 1
    rows = list(read_parquet_records(out))
    assert sorted(r.id for r in rows) == sorted(ALL)
    by_id = {r.id: r for r in read_records(out)}
    assert all(by_id[r.id].stable_json() == r.stable_json() for r in rows)  # round trip through Parquet
    assert not list(out.glob("*.tmp"))


def test_webdataset_shards_hold_image_caption_and_record_under_safe_keys(small_folder, tmp_path, fake):
    out = tmp_path / "wds"
    run_job(fake, job(small_folder, out, format="wds", shard_size=4))
    names = []
    for shard in sorted(out.glob("shard-*.tar")):
        with tarfile.open(shard) as t:
            for m in t.getmembers():
                assert "/" not in m.name and ".." not in m.name
                names.append(m.name)
                if m.name.endswith(".json"):
                    rec = CaptionResult.from_json(t.extractfile(m).read())
                    key = wds_key(rec.id)
                    assert t.extractfile(f"{key}.txt").read().decode() == rec.final_caption
    keys = {wds_key(i) for i in ALL}
    assert len(names) == 3 * len(ALL) and len(keys) == len(ALL)
    assert {n.split(".")[0] for n in names} == keys
    assert wds_key("abc_1-2") == "abc_1-2" and wds_key("../etc/x.jpg").startswith("etc_x_jpg-")


def test_webdataset_replay_reads_the_image_again(small_folder, tmp_path, fake):
    out = tmp_path / "wds"
    run_job(fake, job(small_folder, out, format="wds", shard_size=100, limit=3))
    (out / "_shards.jsonl").unlink()  # as if killed before the first commit
    for p in out.glob("shard-*.tar"):
        p.unlink()
    s = run_job(fake, job(small_folder, out, format="wds", shard_size=100))
    assert (s.replayed, s.ok) == (3, 3)
    with tarfile.open(next(out.glob("shard-*.tar"))) as t:
        images = [m for m in t.getmembers() if not m.name.endswith((".txt", ".json"))]
    assert len(images) == 6


def test_sidecar_policies_and_idempotent_append(small_folder, tmp_path, fake):
    (small_folder / "a.txt").write_text("my own caption\n")
    out = tmp_path / "run.jsonl"
    run_job(fake, job(small_folder, out, format="sidecar"))
    assert (small_folder / "a.txt").read_text() == "my own caption\n"  # skip (default)
    assert (small_folder / "sub dir" / "c.txt").read_text().startswith("A picture of 12x12")
    out2 = tmp_path / "run2.jsonl"
    run_job(fake, job(small_folder, out2, format="sidecar", sidecar_policy="append"))
    text = (small_folder / "a.txt").read_text()
    assert text.startswith("my own caption\n") and text.count("A picture of") == 1
    (tmp_path / "run2.jsonl.sidecars").unlink()  # replay everything: append must not repeat itself
    s = run_job(fake, job(small_folder, out2, format="sidecar", sidecar_policy="append"))
    assert s.replayed == 6 and (small_folder / "a.txt").read_text() == text
    run_job(fake, job(small_folder, tmp_path / "run3.jsonl", format="sidecar", sidecar_policy="overwrite"))
    assert (small_folder / "a.txt").read_text().startswith("A picture of 10x20")


class CorrectingCaptioner(FakeCaptioner):
    """FakeCaptioner whose records carry a self-corrected caption, except for ``b photo.jpg``."""

    async def caption_item(self, item) -> CaptionResult:
        from scalecap.records import Correction

        r = await super().caption_item(item)
        if r.status == "ok" and item.id != "b photo.jpg":
            r.correction = Correction(caption=f"Corrected ({item.id}).")
        return r


def test_sidecar_and_wds_captions_can_be_the_corrected_ones(small_folder, tmp_path):
    s = run_job(CorrectingCaptioner(), job(small_folder, tmp_path / "run.jsonl", format="sidecar",
                                           caption_field="corrected"))
    assert s.ok == 6
    assert (small_folder / "sub dir" / "c.txt").read_text() == "Corrected (sub dir/c.png).\n"
    assert (small_folder / "b photo.txt").read_text().startswith("A picture of")  # no correction: the final one
    out = tmp_path / "wds"
    run_job(CorrectingCaptioner(), job(small_folder, out, format="wds", caption_field="corrected"))
    with tarfile.open(next(out.glob("shard-*.tar"))) as t:
        texts = {m.name: t.extractfile(m).read().decode() for m in t.getmembers() if m.name.endswith(".txt")}
    assert len(texts) == 6 and sum(v.startswith("Corrected (") for v in texts.values()) == 5
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["sink"]["captions_corrected"] == 5
    with pytest.raises(SinkError, match="jsonl keeps every caption"):
        run_job(CorrectingCaptioner(), job(small_folder, tmp_path / "j.jsonl", caption_field="corrected"))
    with pytest.raises(SinkError, match="expected one of final, corrected"):
        run_job(CorrectingCaptioner(), job(small_folder, tmp_path / "w", format="wds", caption_field="first"))
    # the CLI refuses before any model loads (the model path does not even exist)
    base = ["caption", str(small_folder), "-o", str(tmp_path / "cli.jsonl"), "--model", str(tmp_path / "no-model"),
            "--caption-field", "corrected"]
    res = CliRunner().invoke(app, [*base, "--format", "sidecar"])
    assert res.exit_code == 2 and "needs --self-correct" in res.output
    res = CliRunner().invoke(app, [*base, "--self-correct"])
    assert res.exit_code == 2 and "jsonl keeps every caption" in res.output
    assert not (tmp_path / "cli.jsonl").exists()


def test_sidecars_are_refused_for_non_local_sources(tmp_path, fake):
    (tmp_path / "s.tar").write_bytes(b"")
    with pytest.raises(SinkError, match="beside local image files"):
        run_job(fake, CaptionJob(inputs=[str(tmp_path / "s.tar")], output=tmp_path / "o.jsonl", format="sidecar"))


def test_compact_keeps_the_last_record_per_id(tmp_path):
    p = tmp_path / "j.jsonl"
    rows = [{"id": "a", "status": "failed"}, {"id": "b", "status": "ok"}, {"id": "a", "status": "ok"}]
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert compact(p) == 1
    assert read_jsonl(p) == rows[1:]


def test_export_llava_and_llamafactory_from_the_cli(small_folder, tmp_path):
    out = tmp_path / "run.jsonl"
    run_job(FakeCaptioner(fail_ids={"a.png"}), job(small_folder, out))
    runner = CliRunner()
    res = runner.invoke(app, ["export", "llava", str(out), "-o", str(tmp_path / "llava.json"),
                              "--image-root", str(small_folder)])
    assert res.exit_code == 0, res.output
    assert "exported 5 records" in res.output and "skipped 1" in res.output
    data = json.loads((tmp_path / "llava.json").read_text())
    assert len(data) == 5
    first = data[0]
    assert set(first) == {"id", "image", "conversations"}
    assert first["conversations"][0] == {"from": "human", "value": "<image>\nDescribe this image in detail."}
    assert first["conversations"][1]["from"] == "gpt" and first["conversations"][1]["value"].startswith("A picture")
    assert not first["image"].startswith("/") and (small_folder / first["image"]).is_file()

    res = runner.invoke(app, ["export", "llamafactory", str(out), "-o", str(tmp_path / "lf"), "--prompt", "Caption it."])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "lf" / "dataset_info.json").read_text())
    assert info["scalecap"]["formatting"] == "sharegpt"
    assert info["scalecap"]["columns"] == {"messages": "messages", "images": "images"}
    assert info["scalecap"]["tags"]["user_tag"] == "user"
    rows = json.loads((tmp_path / "lf" / info["scalecap"]["file_name"]).read_text())
    assert len(rows) == 5
    assert rows[0]["messages"][0] == {"role": "user", "content": "<image>Caption it."}
    assert Path(rows[0]["images"][0]).is_file()
    assert runner.invoke(app, ["export", "coco", str(out), "-o", str(tmp_path / "x")]).exit_code == 2


def test_export_the_corrected_caption_where_there_is_one(tmp_path):
    from scalecap.records import Correction

    records = [CaptionResult(id="a", source="/img/a.png", status="ok", final_caption="A cat and a unicorn.",
                             correction=Correction(caption="A cat.")),
               CaptionResult(id="b", source="/img/b.png", status="ok", final_caption="A dog."),  # not corrected
               CaptionResult(id="c", source="/img/c.png", status="failed", error="boom")]
    run = tmp_path / "run.jsonl"
    run.write_text("".join(r.model_dump_json() + "\n" for r in records))
    runner = CliRunner()
    res = runner.invoke(app, ["export", "llava", str(run), "-o", str(tmp_path / "l.json"), "--caption-field", "corrected"])
    assert res.exit_code == 0, res.output
    assert "exported 2 records" in res.output and "1 with the corrected caption, 1 without a correction" in res.output
    assert [(r["id"], r["conversations"][1]["value"]) for r in json.loads((tmp_path / "l.json").read_text())] == [
        ("a", "A cat."), ("b", "A dog.")]
    res = runner.invoke(app, ["export", "llamafactory", str(run), "-o", str(tmp_path / "lf"), "--caption-field", "corrected"])
    assert res.exit_code == 0, res.output
    rows = json.loads((tmp_path / "lf" / "scalecap.json").read_text())
    assert [r["messages"][1]["content"] for r in rows] == ["A cat.", "A dog."]
    # the default stays the final caption
    assert runner.invoke(app, ["export", "llava", str(run), "-o", str(tmp_path / "f.json")]).exit_code == 0
    assert [r["conversations"][1]["value"] for r in json.loads((tmp_path / "f.json").read_text())] == [
        "A cat and a unicorn.", "A dog."]
    res = runner.invoke(app, ["export", "llamafactory", str(run), "-o", str(tmp_path / "bad"), "--caption-field", "first"])
    assert res.exit_code == 2 and "expected one of final, corrected" in res.output and not (tmp_path / "bad").exists()


def test_parquet_rows_carry_every_record_field():
    """A field the Parquet row does not carry is lost on resume from Parquet shards (it happened to
    ``skipped``): every CaptionResult field must be a column."""
    from scalecap.io.sinks import JSON_FIELDS, SCALAR_FIELDS
    from scalecap.records import CaptionResult

    assert set(CaptionResult.model_fields) == set(SCALAR_FIELDS) | set(JSON_FIELDS) | {"caption_fallback", "schema_version"}


def test_the_journal_is_fsynced_before_every_sink_commit(small_folder, tmp_path, fake, monkeypatch):
    """Power-cut order: no shard is committed while records it holds are only in the journal's page
    cache. Time-based fsyncs are switched off (a frozen clock) so only the commit rule can pass."""
    import os

    from scalecap.io import journal as journal_mod

    out = tmp_path / "pq"
    events: list[tuple[str, str]] = []
    real_fsync, real_write = os.fsync, os.write

    def name_of(fd: int) -> str:
        try:
            return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return "?"

    def fsync(fd):
        events.append(("fsync", name_of(fd)))
        return real_fsync(fd)

    def write(fd, data):
        if name_of(fd) == "records.jsonl":
            events.append(("append", "records.jsonl"))
        return real_write(fd, data)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(journal_mod.os, "write", write)
    monkeypatch.setattr(journal_mod.time, "monotonic", lambda: 0.0)
    run_job(fake, job(small_folder, out, format="parquet", shard_size=2))
    commits = [i for i, e in enumerate(events) if e == ("fsync", "_shards.jsonl")]
    assert len(commits) == 3
    for i in commits:
        appends = [j for j in range(i) if events[j][0] == "append"]
        syncs = [j for j in range(i) if events[j] == ("fsync", "records.jsonl")]
        assert appends and syncs and syncs[-1] > appends[-1], events[:i + 1]


def test_read_journal_counts_a_superseded_ok_record_once(tmp_path):
    """An ok record followed by its ``sink`` failure (a copy with the same usage), before compaction:
    the live record is the failure, and the usage and fingerprint are counted once, not twice."""
    from scalecap.io.journal import read_journal
    from scalecap.records import StageUsage
    from iohelpers import make_fingerprint

    fp = make_fingerprint("fp-1")
    usage = {"caption": StageUsage(calls=1, prompt_tokens=100, completion_tokens=20)}
    a = CaptionResult(id="a", source="a.png", status="ok", usage=usage, fingerprint=fp)
    a_sink = a.model_copy(update={"status": "failed", "error": "read-only folder", "error_kind": "sink"})
    b = CaptionResult(id="b", source="b.png", status="ok", usage=usage, fingerprint=fp)
    journal = tmp_path / "run.jsonl"
    journal.write_text("".join(r.to_json() + "\n" for r in (a, a_sink, b)))
    state = read_journal(journal)
    assert state.usage == {"caption": [2, 200, 40]}
    assert state.fingerprints == {fp.id: 2} and state.counts == {"ok": 1, "failed": 1}
    assert state.superseded == 1 and state.retry == {"a"} and state.done == {"b"}
    assert state.failed_usage == {"a": a_sink.model_dump(mode="json")["usage"]}
