"""``--overwrite`` and the cleanup on resume delete only files scalecap wrote (``_owned.jsonl``);
input shards kept in the output folder survive, are never overwritten and never read as output."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pytest
import pyarrow.parquet as pq
from iohelpers import FakeCaptioner, png_bytes

from scalecap.io.output import ShardOutput, open_shard_store, own_files
from scalecap.io.sinks import read_parquet_records
from scalecap.run import CaptionJob, run_job


def _input_shard(path: Path, keys: list[str]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as t:
        for k in keys:
            data = png_bytes(16, 12)
            info = tarfile.TarInfo(f"{k}.png")
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())
    return buf.getvalue()


def test_input_shards_inside_the_output_folder_survive_runs_and_overwrite(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    foreign = {"shard-00000.tar": _input_shard(data / "shard-00000.tar", ["a", "b", "c"]),
               "shard-00042.tar": _input_shard(data / "shard-00042.tar", ["d", "e"])}
    (data / "mine.tmp").write_bytes(b"a user's temporary file")
    job = dict(inputs=[str(data / "shard-{00000,00042}.tar")], output=data, format="wds", shard_size=2)

    s = run_job(FakeCaptioner(), CaptionJob(**job))
    assert (s.ok, s.failed) == (5, 0)
    index = [json.loads(line) for line in (data / "_shards.jsonl").read_text().splitlines()]
    ours = [e["file"] for e in index]
    assert ours == ["shard-00001.tar", "shard-00002.tar", "shard-00003.tar"]  # 00000 is taken: skipped
    owned = [json.loads(line)["file"] for line in (data / "_owned.jsonl").read_text().splitlines()]
    assert owned == ours
    assert all((data / n).read_bytes() == b for n, b in foreign.items())

    s = run_job(FakeCaptioner(), CaptionJob(**job, resume=False))  # --overwrite
    assert (s.ok, s.skipped) == (5, 0)
    assert all((data / n).read_bytes() == b for n, b in foreign.items())
    assert (data / "mine.tmp").read_bytes() == b"a user's temporary file"
    assert sorted(p.name for p in data.glob("shard-*.tar")) == sorted([*foreign, *ours])
    with tarfile.open(data / "shard-00001.tar") as t:
        assert any(m.name.endswith(".json") for m in t.getmembers())  # ours was rewritten, not theirs
    summary = json.loads((data / "summary.json").read_text())
    assert summary["sink"]["foreign_files_left_alone"] == 2


def test_a_foreign_parquet_file_is_not_read_as_output(tmp_path):
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    for i in range(3):
        (imgs / f"i{i}.png").write_bytes(png_bytes(8 + i, 8))
    out = tmp_path / "pq"
    out.mkdir()
    pq.write_table(pa.table({"x": [1, 2]}), out / "part-00000.parquet")
    theirs = (out / "part-00000.parquet").read_bytes()
    run_job(FakeCaptioner(), CaptionJob(inputs=[str(imgs)], output=out, format="parquet", shard_size=2))
    run_job(FakeCaptioner(), CaptionJob(inputs=[str(imgs)], output=out, format="parquet", shard_size=2,
                                        resume=False))
    assert (out / "part-00000.parquet").read_bytes() == theirs
    assert sorted(r.id for r in read_parquet_records(out)) == ["i0.png", "i1.png", "i2.png"]


def test_the_ray_store_touches_only_its_own_shards(tmp_path):
    out = tmp_path / "ray"
    out.mkdir()
    ours = out / "part-20261203120000-abcdef-0123456789abcdef.jsonl"
    ours.write_text(json.dumps({"id": "x", "status": "ok"}) + "\n")
    (out / "part-20261203120000-abcdef-fedcba9876543210.jsonl.tmp").write_text("half")
    (out / "summary.json").write_text("{}")
    (out / "part-00000.jsonl").write_text("not a scalecap record at all\n")  # foreign: would not even parse
    (out / "part-20261203120000-abcdef-fedcba9876543210.jsonl.0123abcd.tmp").write_text("staged, never committed")
    (out / "notes.tmp").write_text("theirs")
    state = open_shard_store(out)
    assert state.done == {"x"}
    assert sorted(p.name for p in own_files(out)) == [ours.name, "summary.json"]  # our .tmp files were tidied
    with ShardOutput.open(out, resume=False):  # --overwrite
        assert sorted(p.name for p in out.iterdir()) == [".scalecap.lock", "notes.tmp", "part-00000.jsonl"]


def test_read_records_of_a_ray_folder_reads_only_its_shards_first_wins(tmp_path):
    """Only the Ray store's own shard names are records (a foreign part-00000.jsonl is not), and a
    retried task's second copy of an id is dropped, counted, as the store itself does."""
    from scalecap.io.journal import ReadStats, read_records
    from scalecap.records import CaptionResult

    out = tmp_path / "ray"
    out.mkdir()

    def rec(rid, caption):
        return CaptionResult(id=rid, source=f"{rid}.png", status="ok", final_caption=caption).to_json() + "\n"

    (out / "part-20261203120000-abcdef-0000000000000001.jsonl").write_text(rec("a", "first") + rec("b", "b1"))
    (out / "part-20261203120500-abcdef-0000000000000002.jsonl").write_text(rec("a", "retried copy") + rec("c", "c1"))
    (out / "part-00000.jsonl").write_text(rec("foreign", "theirs"))
    stats = ReadStats()
    got = {r.id: r.final_caption for r in read_records(out, stats)}
    assert got == {"a": "first", "b": "b1", "c": "c1"}
    assert (stats.duplicates, stats.duplicate_ids) == (1, ["a"])
    assert open_shard_store(out).dropped_duplicates == 1  # the store agrees, and tidies the copy away
    assert {r.id: r.final_caption for r in read_records(out)} == got
    foreign_only = tmp_path / "foreign"
    foreign_only.mkdir()
    (foreign_only / "part-00000.jsonl").write_text(rec("foreign", "theirs"))
    with pytest.raises(FileNotFoundError, match="no scalecap Ray shards"):
        list(read_records(foreign_only))
