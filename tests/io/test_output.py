"""The output protocol's verbs on their own (``scalecap.io.output``): open or resume, commit (journal
before sink), a sink refusal as a ``sink`` failure, replay of what the sink lacks, finish
(compaction, summary), one writer per output, ``--overwrite`` of owned files only; and the Ray
store's sibling (stage on the actor, commit on the driver)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from iohelpers import make_fingerprint, png_bytes, read_jsonl

from scalecap.images import ImageItem
from scalecap.io.journal import FingerprintMismatch, JournalError
from scalecap.io.lock import OutputLocked
from scalecap.io.output import Output, ShardOutput, own_files, stage_shard
from scalecap.io.sinks import ParquetSink, SidecarSink, open_sink, read_parquet_records
from scalecap.io.sources import FileLoader
from scalecap.records import CaptionResult


def rec(rid: str, status: str = "ok", fp: str = "fp-1", caption: str | None = None) -> CaptionResult:
    extra = {"error": "boom", "error_kind": "internal"} if status == "failed" else {}
    return CaptionResult(id=rid, source=f"{rid}.png", status=status, fingerprint=make_fingerprint(fp),
                         final_caption=caption or (f"caption of {rid}" if status == "ok" else None), **extra)


def summary_of(info: dict) -> dict:
    return {"sink": info}


def journal_ids(path: Path) -> list[tuple[str, str]]:
    return [(r["id"], r["status"]) for r in read_jsonl(path)]


def test_open_resume_and_overwrite(tmp_path):
    out = tmp_path / "run.jsonl"
    with Output.open(open_sink("jsonl", out), fingerprint="fp-1") as o:
        assert o.done == set() and o.counts == {}
        for r in (rec("a"), rec("b", "failed"), rec("c", "filtered")):
            assert o.commit(r) is r
        path = o.finish(summary_of)
    assert path == tmp_path / "run.summary.json" and json.loads(path.read_text())["sink"]["format"] == "jsonl"

    with Output.open(open_sink("jsonl", out), fingerprint="fp-1") as o:  # resume: the failed one is retried
        assert o.done == {"a", "c"} and o.counts == {"ok": 1, "failed": 1, "filtered": 1}
        assert set(o.failed_usage) == {"b"}
        o.finish(summary_of)
    with Output.open(open_sink("jsonl", out), retry_failed=False, fingerprint="fp-1") as o:
        assert o.done == {"a", "b", "c"}
        o.finish(summary_of)
    with Output.open(open_sink("jsonl", out), resume=False, fingerprint="fp-1") as o:  # --overwrite
        assert o.done == set() and o.counts == {}
        o.finish(summary_of)
    assert out.read_bytes() == b""


def test_another_fingerprint_is_refused_and_the_lock_released(tmp_path):
    out = tmp_path / "run.jsonl"
    with Output.open(open_sink("jsonl", out), fingerprint="fp-1") as o:
        o.commit(rec("a"))
        o.finish(summary_of)
    with pytest.raises(FingerprintMismatch, match="fp-1"):
        Output.open(open_sink("jsonl", out), fingerprint="fp-2")
    with Output.open(open_sink("jsonl", out), fingerprint="fp-2", allow_mixed=True) as o:  # not locked out
        o.commit(rec("b", fp="fp-2"))
        o.finish(summary_of)
    assert journal_ids(out) == [("a", "ok"), ("b", "ok")]


class CheckingParquetSink(ParquetSink):
    """A Parquet sink that looks, at each write and each shard commit, at what the journal holds."""

    def __init__(self, output: Path, shard_size: int) -> None:
        super().__init__(output, shard_size)
        self.journal_at_write: list[list[str]] = []
        self.journal_at_commit: list[list[str]] = []

    def write(self, record, data, item):
        self.journal_at_write.append([r["id"] for r in read_jsonl(self.journal_path)])
        super().write(record, data, item)

    def _commit(self):
        self.before_commit()  # what the output set: the journal's fsync (a no-op when nothing is pending)
        self.journal_at_commit.append([r["id"] for r in read_jsonl(self.journal_path)])
        super()._commit()


def test_commit_writes_the_journal_before_the_sink(tmp_path):
    sink = CheckingParquetSink(tmp_path / "pq", shard_size=2)
    with Output.open(sink) as o:
        assert sink.before_commit == o._journal.sync  # the power-cut order: journal durable before a shard
        for rid in ("a", "b", "c"):
            o.commit(rec(rid))
        o.finish(summary_of)
    assert sink.journal_at_write == [["a"], ["a", "b"], ["a", "b", "c"]]
    assert sink.journal_at_commit == [["a", "b"], ["a", "b", "c"]]
    assert sorted(r.id for r in read_parquet_records(tmp_path / "pq")) == ["a", "b", "c"]


def test_a_second_commit_of_an_id_is_refused(tmp_path):
    with Output.open(open_sink("jsonl", tmp_path / "run.jsonl")) as o:
        o.commit(rec("a"))
        with pytest.raises(JournalError, match="already has a record"):
            o.commit(rec("a"))
        o.finish(summary_of)
    assert journal_ids(tmp_path / "run.jsonl") == [("a", "ok")]


def test_a_sink_refusal_becomes_a_sink_failure_and_the_journal_is_compacted(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for name in ("good", "bad"):
        (imgs / f"{name}.png").write_bytes(png_bytes(8, 8))
    (imgs / "bad.txt").write_bytes(b"old \xff caption\n")  # not UTF-8: the append policy cannot read it
    journal = tmp_path / "run.jsonl"
    items = {n: ImageItem(id=n, source=str(imgs / f"{n}.png"), loader=FileLoader(str(imgs / f"{n}.png")))
             for n in ("good", "bad")}
    with Output.open(SidecarSink(journal, policy="append")) as o:
        assert o.commit(rec("good"), item=items["good"]).status == "ok"
        held = o.commit(rec("bad"), item=items["bad"])
        assert (held.status, held.error_kind) == ("failed", "sink") and "bad.txt" in held.error
        assert journal_ids(journal) == [("good", "ok"), ("bad", "ok"), ("bad", "failed")]
        o.finish(summary_of)
    assert journal_ids(journal) == [("good", "ok"), ("bad", "failed")]  # compacted: one line per id
    assert (imgs / "good.txt").read_text() == "caption of good\n"
    assert (imgs / "bad.txt").read_bytes() == b"old \xff caption\n"
    with Output.open(SidecarSink(journal, policy="append")) as o:
        assert o.done == {"good"}  # the sink failure is retried, not replayed
        o.finish(summary_of)


def test_a_retry_supersedes_its_failed_line_and_finish_compacts(tmp_path):
    out = tmp_path / "run.jsonl"
    with Output.open(open_sink("jsonl", out)) as o:
        o.commit(rec("a", "failed"))
        o.commit(rec("b"))
        o.finish(summary_of)
    with Output.open(open_sink("jsonl", out)) as o:
        assert o.done == {"b"}
        o.commit(rec("a"))
        assert journal_ids(out) == [("a", "failed"), ("b", "ok"), ("a", "ok")]
        o.finish(summary_of)
    assert journal_ids(out) == [("b", "ok"), ("a", "ok")]


def test_replay_writes_what_the_sink_lacks_once(tmp_path):
    out = tmp_path / "wds"
    out.mkdir()
    image = tmp_path / "x.png"
    image.write_bytes(png_bytes(9, 9))
    # a journal whose records never reached a shard (a kill between the journal line and the commit)
    (out / "records.jsonl").write_text(rec("x").to_json() + "\n" + rec("y").to_json() + "\n"
                                       + rec("z", "failed").to_json() + "\n")
    item = ImageItem(id="x", source=str(image), loader=FileLoader(str(image)))
    with Output.open(open_sink("wds", out, shard_size=10)) as o:
        assert sorted(o.lacking) == ["x", "y"]  # failed records never go into shards
        replayed = o.replay("x", item)
        assert replayed.record.id == "x" and replayed.written == replayed.record
        assert o.replay("x", item) is None  # once
        assert o.lacking == ["y"]
        assert o.replay("y").written.id == "y"  # its image gone from the input: the record alone
        assert o.replay("z") is None
        o.finish(summary_of)
    info = json.loads((out / "summary.json").read_text())["sink"]
    assert info["records_in_shards"] == 2 and info["samples_without_image"] == 1
    assert len(read_jsonl(out / "records.jsonl")) == 3  # nothing appended to the journal
    with Output.open(open_sink("wds", out, shard_size=10)) as o:
        assert o.lacking == []
        o.finish(summary_of)


def test_a_second_output_on_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "pq"
    first = Output.open(open_sink("parquet", out))
    with pytest.raises(OutputLocked, match="another scalecap run"):
        Output.open(open_sink("parquet", out))
    first.commit(rec("a"))
    first.finish(summary_of)
    with Output.open(open_sink("parquet", out)) as o:  # finish released it
        assert o.done == {"a"}
    with Output.open(open_sink("parquet", out)):  # and so did leaving the block
        pass


def test_overwrite_removes_only_owned_files(tmp_path):
    out = tmp_path / "pq"
    with Output.open(open_sink("parquet", out, shard_size=1)) as o:
        o.commit(rec("a"))
        o.commit(rec("b"))
        o.finish(summary_of)
    ours = sorted(p.name for p in out.glob("part-*.parquet"))
    assert ours == ["part-00000.parquet", "part-00001.parquet"]
    (out / "part-00007.parquet").write_bytes(b"a user's file named like a shard")
    (out / "notes.txt").write_text("theirs")
    with Output.open(open_sink("parquet", out), resume=False) as o:
        assert o.done == set()
        left = sorted(p.name for p in out.iterdir())
        o.finish(summary_of)
    assert "part-00007.parquet" in left and "notes.txt" in left
    assert not set(ours) & set(left) and "summary.json" not in left
    assert (out / "part-00007.parquet").read_bytes() == b"a user's file named like a shard"


# ---------------------------------------------------------------------------------------- Ray store
def test_a_staged_shard_is_a_record_only_once_the_driver_commits_it(tmp_path):
    folder = tmp_path / "ray"
    with ShardOutput.open(folder) as store:
        taken = stage_shard(folder, store.run_tag, [rec("b"), rec("a")])
        lost = stage_shard(folder, store.run_tag, [rec("c")])  # an answer the driver never takes
        assert stage_shard(folder, store.run_tag, []) is None
        assert not any(p.name.endswith(".jsonl") for p in folder.iterdir())  # staged only
        final = store.commit(taken)
        assert store.commit(taken) == final  # the rest of the same answer: nothing more to do
        assert [r["id"] for r in read_jsonl(folder / final)] == ["a", "b"]
        with pytest.raises(ValueError, match="not a shard staged by this run"):
            store.commit("part-20260101000000-abcdef-0123456789abcdef.jsonl.0123abcd.tmp")
        with pytest.raises(ValueError):
            store.commit("../elsewhere.tmp")
        with pytest.raises(OutputLocked):
            ShardOutput.open(folder)
        path = store.finish(summary_of)
    assert not (folder / lost).exists()  # never committed: never a record
    assert json.loads(path.read_text())["sink"]["shards_committed"] == 1
    with ShardOutput.open(folder) as store:
        assert store.done == {"a", "b"} and store.fingerprints == ["fp-1"]
    with ShardOutput.open(folder, resume=False) as store:  # --overwrite: our files only
        (folder / "theirs.jsonl").write_text("{}\n")
        assert store.done == set() and own_files(folder) == []
    assert (folder / "theirs.jsonl").exists()


def test_ray_rows_keep_the_image_root(tmp_path):
    """``--image-root`` on the Ray path: the row carries the root, so the actor checks it again when
    it reads (a symlink swapped in after the listing cannot lead out), as the local path does."""
    from scalecap.distributed.ray_runner import item_to_row, row_to_item
    from scalecap.images import ImageError

    root = tmp_path / "root"
    root.mkdir()
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes(5, 5))
    (root / "a.png").write_bytes(png_bytes(6, 6))
    item = ImageItem(id="a.png", source=str(root / "a.png"), loader=FileLoader(str(root / "a.png"), str(root)))
    back = row_to_item(item_to_row(item))
    assert back.loader == item.loader
    (root / "a.png").unlink()
    (root / "a.png").symlink_to(secret)  # swapped in after the listing
    with pytest.raises(ImageError) as err:
        back.read_bytes()
    assert err.value.kind == "path_outside_root"
