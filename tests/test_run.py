"""The job runner's accounting with an instant fake captioner: --limit, --shard, duplicate ids,
pre-filters (never sent to the captioner), progress callbacks, the summary file and prices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from iohelpers import FakeCaptioner, jpeg_bytes, png_bytes, read_jsonl

from scalecap.filters import (  # noqa: E402
    ComplexityRange,
    FilterSet,
    JpegComplexity,
    MinShortEdge,
    build_filters,
)
from scalecap.pricing import Price, Prices, role_of
from scalecap.progress import JobProgress, Usage
from scalecap.run import CaptionJob, parse_shard, run_job, shard_of  # noqa: E402


@pytest.fixture()
def many(tmp_path) -> Path:
    d = tmp_path / "many"
    d.mkdir()
    for i in range(30):
        (d / f"img{i:02d}.png").write_bytes(png_bytes(8 + i, 8))
    return d


def test_limit_takes_the_first_n_and_a_rerun_extends_it(many, tmp_path):
    out = tmp_path / "o.jsonl"
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, limit=7))
    assert (s.total, s.ok) == (7, 7)
    assert [r["id"] for r in sorted(read_jsonl(out), key=lambda r: r["id"])] == [f"img{i:02d}.png" for i in range(7)]
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, limit=7))
    assert (s.skipped, s.processed) == (7, 0)
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, limit=10))
    assert (s.skipped, s.processed) == (7, 3)


def test_shards_are_disjoint_and_cover_everything(many, tmp_path):
    seen = []
    for i in range(3):
        out = tmp_path / f"part{i}.jsonl"
        run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, shard=(i, 3)))
        ids = [r["id"] for r in read_jsonl(out)]
        assert all(shard_of(x, 3) == i for x in ids)
        seen += ids
    assert sorted(seen) == sorted(f"img{i:02d}.png" for i in range(30))
    assert parse_shard("2/3") == (2, 3)
    for bad in ("3/3", "x", "1/0"):
        with pytest.raises(ValueError):
            parse_shard(bad)


def test_duplicate_ids_keep_the_first_and_fail_the_exit_code(tmp_path, many):
    man = tmp_path / "m.jsonl"
    rows = [{"id": "dup", "image": str(many / "img00.png")}, {"id": "dup", "image": str(many / "img01.png")},
            {"id": "other", "image": str(many / "img02.png")}]
    man.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "o.jsonl"
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(man)], output=out))
    assert (s.ok, s.duplicates, s.duplicate_examples, s.exit_code) == (2, 1, ["dup"], 1)
    recs = read_jsonl(out)
    assert [r["id"] for r in recs].count("dup") == 1
    assert next(r for r in recs if r["id"] == "dup")["source"].endswith("img00.png")
    assert json.loads((tmp_path / "o.summary.json").read_text())["run"]["duplicates"] == 1


def test_filtered_images_never_reach_the_captioner(tmp_path):
    d = tmp_path / "f"
    d.mkdir()
    (d / "small.png").write_bytes(png_bytes(100, 50))
    Image.new("RGB", (700, 650), (128, 128, 128)).save(d / "flat.png")  # big but trivially simple
    noise = Image.effect_noise((700, 700), 80).convert("RGB")
    noise.save(d / "noisy.png")
    fake = FakeCaptioner()
    out = tmp_path / "o.jsonl"
    s = run_job(fake, CaptionJob(inputs=[str(d)], output=out, filters=build_filters(600, "0.05:0.95")))
    assert fake.calls == ["noisy.png"]
    recs = {r["id"]: r for r in read_jsonl(out)}
    assert (s.filtered, s.ok) == (2, 1)
    assert recs["small.png"]["status"] == "filtered"
    assert recs["small.png"]["meta"] == {"filter_reason": "short_edge", "filter_value": 50, "filter_threshold": 600,
                                         "prefilter": {"short_edge": 50}}
    flat = recs["flat.png"]["meta"]
    assert flat["filter_reason"] == "complexity" and flat["filter_value"] < 0.05
    assert "not the paper" in flat["complexity_scorer"]
    assert recs["noisy.png"]["meta"]["prefilter"]["short_edge"] == 700
    assert recs["small.png"]["usage"] == {} and recs["small.png"]["fingerprint"]["id"] == "fake-fp-1"


def test_complexity_scorer_orders_simple_below_busy_and_is_pluggable():
    scorer = JpegComplexity()
    flat = Image.new("RGB", (300, 300), (10, 10, 10))
    noise = Image.effect_noise((300, 300), 90).convert("RGB")
    assert 0.0 <= scorer(flat) < scorer(noise) <= 1.0

    class Constant:
        name = "constant-0.5"

        def __call__(self, image):
            return 0.5

    fs = FilterSet([ComplexityRange(0.6, 0.9, Constant()), MinShortEdge(10)])
    assert [type(f).__name__ for f in fs.filters] == ["MinShortEdge", "ComplexityRange"]  # header first
    from scalecap.filters import Probe

    rejection, measured = fs.check(Probe(data=png_bytes(20, 20)))
    assert rejection.reason == "complexity" and measured["complexity_scorer"] == "constant-0.5"
    assert fs.check(Probe(data=b"not an image"))[0] is None  # unreadable: the pipeline will say why
    with pytest.raises(ValueError):
        build_filters(None, "0.8:0.4")
    with pytest.raises(ValueError):
        build_filters(None, "lots")


def test_prices_roles_and_the_summary_file(many, tmp_path):
    prices = Prices.parse(["captioner=1:2", "writer=0.5:1.5", "final=10:10"])
    assert prices.for_stage("final") == Price(10, 10) and prices.for_stage("answers") == Price(1, 2)
    assert role_of("answers") == "captioner" and role_of("answer_rating") == "scorer" and role_of("final") == "writer"
    with pytest.raises(ValueError):
        Prices.parse(["painter=1:2"])
    events = []

    class Recorder(JobProgress):
        def start(self, total):
            events.append(("start", total))

        def skipped(self, n=1):
            events.append(("skipped", n))

        def result(self, record):
            events.append(("result", record.status))

    out = tmp_path / "o.jsonl"
    run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, limit=10, prices=prices))
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, limit=12, prices=prices), progress=Recorder())
    assert events[0] == ("start", 12) and events.count(("skipped", 1)) == 10 and events.count(("result", "ok")) == 2
    summary = json.loads(s.summary_path.read_text())
    usage = summary["run"]["usage"]
    # per image: caption 100+20 (captioner), caption_rating 240 (scorer, unpriced), final 50+30 at 10:10
    assert usage["by_stage"]["caption"]["cost_usd"] == pytest.approx(2 * (100 * 1 + 20 * 2) / 1e6)
    assert usage["by_stage"]["final"]["cost_usd"] == pytest.approx(2 * 80 * 10 / 1e6)
    assert usage["by_stage"]["caption_rating"]["cost_usd"] is None
    assert usage["by_role"]["scorer"]["prompt_tokens"] == 480
    assert usage["total_cost_usd"] == pytest.approx((2 * 140 + 2 * 800) / 1e6)
    assert summary["output"]["records"] == 12 and summary["output"]["usage"]["by_stage"]["caption"]["calls"] == 12
    assert summary["run"]["images_per_second"] > 0 and summary["fingerprint"] == "fake-fp-1"
    u = Usage()
    u.add_record({"caption": {"calls": 1, "prompt_tokens": 5, "completion_tokens": 1}})
    assert u.total_tokens == 6


def test_url_items_are_fetched_once_even_with_filters(tmp_path, monkeypatch):
    import importlib

    calls = []
    fetch_mod = importlib.import_module("scalecap.io.fetch")

    def fake_fetch(url, config):
        calls.append(url)
        return jpeg_bytes(40, 30)

    monkeypatch.setattr(fetch_mod, "fetch", fake_fetch)
    lst = tmp_path / "u.txt"
    lst.write_text("http://127.0.0.1:1/a.jpg\nhttp://127.0.0.1:1/b.jpg\n")
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(lst)], output=tmp_path / "o.jsonl",
                                            filters=build_filters(10, "0:1")))
    assert s.ok == 2 and sorted(calls) == ["http://127.0.0.1:1/a.jpg", "http://127.0.0.1:1/b.jpg"]
