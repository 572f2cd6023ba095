"""Poison pills: one bad item is one failed record, the run goes on, and every resume too.

Item order is deterministic, so an exception that escaped the per-item handlers would end every
rerun at the same item; each case here runs twice (the second run must neither crash nor
duplicate) and checks the journal line by line with a strict reader.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from iohelpers import FakeCaptioner, jpeg_bytes, png_bytes

from scalecap.filters import ComplexityRange, FilterSet
from scalecap.io.fetch import FetchConfig
from scalecap.records import ESCAPED_NOTE, CaptionResult, serialisable
from scalecap.run import CaptionJob, run_job


def strict_records(path: Path) -> list[CaptionResult]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [CaptionResult.from_json(line) for line in raw.decode("utf-8").splitlines()]


def by_id(path: Path) -> dict[str, CaptionResult]:
    recs = strict_records(path)
    ids = [r.id for r in recs]
    assert len(ids) == len(set(ids)), f"duplicate records: {ids}"
    return {r.id: r for r in recs}


def test_a_non_utf8_file_name_is_one_bad_name_failure_and_resume_retries_it(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    (d / "a.png").write_bytes(png_bytes(10, 10))
    (d / "z.jpg").write_bytes(jpeg_bytes(12, 12))
    with open(os.path.join(os.fsencode(d), b"\xff.jpg"), "wb") as f:
        f.write(jpeg_bytes(14, 14))
    out = tmp_path / "run.jsonl"
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(d)], output=out))
    assert (s.total, s.ok, s.failed, dict(s.failures), s.exit_code) == (3, 2, 1, {"bad_name": 1}, 1)
    recs = by_id(out)
    assert sorted(recs) == ["\\xff.jpg", "a.png", "z.jpg"]
    bad = recs["\\xff.jpg"]
    assert bad.status == "failed" and bad.error_kind == "bad_name" and "not valid UTF-8" in bad.error
    assert "\\xff.jpg" in bad.source
    # resume: the escaped id is stable, so the failed record is retried (and fails again), not duplicated
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(d)], output=out))
    assert (s.skipped, s.retried, s.failed, s.ok) == (2, 1, 1, 0)
    assert sorted(by_id(out)) == ["\\xff.jpg", "a.png", "z.jpg"]
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(d)], output=out, retry_failed=False))
    assert (s.skipped, s.processed) == (3, 0)
    totals = [run_job(FakeCaptioner(), CaptionJob(inputs=[str(d)], output=tmp_path / f"s{i}.jsonl", shard=(i, 2))).total
              for i in range(2)]
    assert sum(totals) == 3  # --shard hashes the escaped id


def test_lone_surrogates_in_a_jsonl_manifest(tmp_path):
    (tmp_path / "a.png").write_bytes(png_bytes(10, 10))
    (tmp_path / "b.png").write_bytes(png_bytes(11, 10))
    lines = ['{"id": "bad\\udc80id", "image": "a.png"}',            # in the id: bad_name
             '{"id": "m", "image": "b.png", "note": "x\\udc80y"}',   # in a meta field: escaped, noted
             '{"id": "g", "image": "a.png"}']
    manifest = tmp_path / "m.jsonl"
    manifest.write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = tmp_path / "run.jsonl"
    for _ in range(2):
        s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(manifest)], output=out))
        assert not s.source_errors
        recs = by_id(out)
        assert sorted(recs) == ["bad\\x80id", "g", "m"]
    assert recs["bad\\x80id"].error_kind == "bad_name"
    assert recs["m"].status == "ok" and recs["m"].meta["note"] == "x\\x80y" and ESCAPED_NOTE in recs["m"].notes
    assert recs["g"].status == "ok" and not recs["g"].notes


def test_serialisable_escapes_a_server_reply_and_leaves_clean_records_alone():
    clean = CaptionResult(id="a", source="a.png", status="ok", final_caption="fine")
    assert serialisable(clean) is clean
    dirty = CaptionResult(id="a", source="a.png", status="ok", final_caption="a cat\ud83d sat",
                          meta={"k\udcfe": ["v\ud800"]})
    fixed = serialisable(dirty)
    assert json.loads(fixed.to_json())["final_caption"] == "a cat\\ud83d sat"
    assert fixed.meta == {"k\\xfe": ["v\\ud800"]} and fixed.notes == [ESCAPED_NOTE]


def test_malformed_urls_are_bad_url_failures(http_server, tmp_path):
    bad = ["http://h:8o80/a.jpg", "http://10.0.0.256/a.jpg", "http://a\x01b/x.jpg",
           "http://h/" + "a" * (64 * 1024 + 10) + ".jpg", "http://[::1/a.jpg"]
    good = [f"{http_server}/ok.png", f"{http_server}/ok.jpg"]
    listing = tmp_path / "urls.txt"
    listing.write_text("\n".join([good[0], *bad, good[1]]) + "\n", encoding="utf-8")
    out = tmp_path / "run.jsonl"
    local = FetchConfig(allow_private_urls=True)  # the good images are served on 127.0.0.1
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(listing)], output=out, fetch=local))
    assert (s.ok, s.failed, dict(s.failures)) == (2, 5, {"bad_url": 5})
    recs = by_id(out)
    assert all(len(r.error) < 1000 for r in recs.values() if r.error)  # a 64 KiB URL is not echoed whole
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(listing)], output=out, fetch=local))
    assert (s.skipped, s.retried, s.failed) == (2, 5, 5) and len(by_id(out)) == 7


class _RaisingCaptioner(FakeCaptioner):
    async def caption_item(self, item):
        if item.id == "boom.png":
            raise KeyError("a bug in a plugged captioner")
        return await super().caption_item(item)


class _RaisingScorer:
    """A plugged complexity scorer with a bug that shows on one image size."""

    name = "raising"

    def __call__(self, image) -> float:
        if image.size == (13, 10):
            raise ZeroDivisionError("a bug in a plugged scorer")
        return 0.5


def test_exceptions_from_a_captioner_or_a_filter_are_internal_failures(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name, w in (("a.png", 10), ("boom.png", 11), ("c.png", 12), ("f.png", 13)):
        (d / name).write_bytes(png_bytes(w, 10))
    out = tmp_path / "run.jsonl"
    s = run_job(_RaisingCaptioner(), CaptionJob(inputs=[str(d)], output=out))
    assert (s.ok, s.failed, dict(s.failures)) == (3, 1, {"internal": 1})
    boom = by_id(out)["boom.png"]
    assert boom.error == "KeyError: 'a bug in a plugged captioner'" and boom.fingerprint is not None

    filters = FilterSet([ComplexityRange(0.0, 1.0, scorer=_RaisingScorer())])
    out2 = tmp_path / "run2.jsonl"
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(d)], output=out2, filters=filters))
    recs = by_id(out2)
    assert recs["f.png"].error_kind == "internal" and "ZeroDivisionError" in recs["f.png"].error
    assert s.ok == 3


def test_a_sidecar_that_cannot_be_written_is_a_sink_failure_also_on_replay(tmp_path):
    d = tmp_path / "imgs"
    d.mkdir()
    for name in ("a.png", "b.png", "c.png", "d.png"):
        (d / name).write_bytes(png_bytes(10, 10))
    (d / "b.txt").mkdir()                              # cannot be replaced by a file (even as root)
    (d / "c.txt").write_bytes(b"old \xff\xfe caption\n")  # an existing sidecar that is not UTF-8
    out = tmp_path / "run.jsonl"
    kw = dict(inputs=[str(d)], output=out, format="sidecar", sidecar_policy="append")
    s = run_job(FakeCaptioner(), CaptionJob(**kw))
    assert (s.ok, s.failed, dict(s.failures)) == (2, 2, {"sink": 2})
    recs = by_id(out)  # compacted: the failed record replaced the ok one
    assert recs["b.png"].error_kind == "sink" and "b.txt" in recs["b.png"].error
    assert recs["c.png"].error_kind == "sink" and "UnicodeDecodeError" in recs["c.png"].error
    assert (d / "a.txt").read_text().startswith("A picture of")
    assert (d / "c.txt").read_bytes() == b"old \xff\xfe caption\n"
    s = run_job(FakeCaptioner(), CaptionJob(**kw))
    assert (s.skipped, s.retried, s.failed) == (2, 2, 2) and len(by_id(out)) == 4

    # a kill after the journal took 'ok' and before the sidecar: the resume replay meets the failure
    (d / "b.txt").rmdir()
    (d / "c.txt").unlink()
    s = run_job(FakeCaptioner(), CaptionJob(**kw))
    assert s.ok == 2 and s.exit_code == 0
    (tmp_path / "run.jsonl.sidecars").unlink()
    (d / "a.txt").unlink()
    (d / "a.txt").mkdir()
    s = run_job(FakeCaptioner(), CaptionJob(**kw))
    assert (s.skipped, s.replayed, s.failed, dict(s.failures)) == (4, 3, 1, {"sink": 1})
    assert s.exit_code == 1
    assert by_id(out)["a.png"].error_kind == "sink"
    assert s.output_counts["failed"] == 1 and s.output_counts["ok"] == 3


def test_an_input_spec_that_is_not_valid_unicode_does_not_crash_the_summary(tmp_path):
    folder = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"f\xe9"))
    os.mkdir(folder)
    Path(folder, "a.png").write_bytes(png_bytes(10, 10))
    missing = os.fsdecode(os.path.join(os.fsencode(tmp_path), b"m\xe9.png"))
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[folder, missing], output=tmp_path / "run.jsonl"))
    assert (s.ok, s.failed, dict(s.failures)) == (1, 1, {"bad_name": 1})  # the id is the name
    summary = json.loads((tmp_path / "run.summary.json").read_bytes())
    assert summary["run"]["ok"] == 1 and len(summary["inputs"]) == 2
    rec = by_id(tmp_path / "run.jsonl")["m\\xe9.png"]  # the id was the file name: escaped
    assert rec.error_kind == "bad_name"
