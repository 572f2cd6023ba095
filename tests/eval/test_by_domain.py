"""Every metric broken down by the records' domain (``common.by_domain``), worked out by hand.

CHAIR runs through the CLI (no model needed) against the mini COCO ground truth of tests/data/eval:
image 1 {person, dog}, 2 {car, traffic light}, 3 {cat, couch, remote}, 4 {dining table, cup, laptop}.
The other metrics go through the same helper with their own aggregation (vqa, captionqa here; arena
and dcscore in their hand-worked tests; capture below on hand-written scene graphs).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalecap.eval import captionqa, vqa
from scalecap.eval.captions import from_mapping, load_captions
from scalecap.eval.cli import app
from scalecap.eval.common import NO_DOMAIN, UNKNOWN_DOMAIN, EvalInputError, by_domain
from scalecap.records import CaptionResult, DomainInfo, Question

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
ANNOTATIONS = ["-a", str(DATA / "coco_instances_mini.json"), "-a", str(DATA / "coco_captions_mini.json")]
runner = CliRunner()


def _record(id: str, final: str, domain: str | None, questions: int = 0, status: str = "ok") -> str:
    qs = [Question(object=f"object {i // 2}", kind="object" if i % 2 == 0 else "position", instruction="?")
          for i in range(questions)]
    r = CaptionResult(id=id, source=f"/images/{id}.jpg", status=status, final_caption=final, questions=qs,
                      domain=DomainInfo(id=domain, source="declared") if domain else None,
                      error="boom" if status != "ok" else None)
    return r.to_json() + "\n"


def _run(path: Path, natural_only: bool = False) -> Path:
    # mentions (* = hallucinated), words:
    #   1 natural   man=person, dog, bench*            8 words   recall 2/2   questions 4
    #   2 natural   car, bus*, traffic light           9 words   recall 2/2   questions 2
    #   3 document  cat, couch, remote                 8 words   recall 3/3   questions 6
    #   4 (none)    cup, dining table                  6 words   recall 2/3   questions 0
    recs = [_record("1", "A man walks a dog past a bench.", "natural", 4),
            _record("2", "A car and a bus at a traffic light.", "natural", 2)]
    if not natural_only:
        recs += [_record("3", "A cat on a couch with a remote.", "infographic_document", 6),
                 _record("4", "A cup on a dining table.", None)]
    path.write_text("".join(recs))
    return path


def test_chair_by_domain_through_the_cli(tmp_path):
    out = tmp_path / "chair.json"
    res = runner.invoke(app, ["chair", str(_run(tmp_path / "run.jsonl")), *ANNOTATIONS, "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    s, dom = doc["summary"], doc["by_domain"]
    assert list(dom) == [NO_DOMAIN, "infographic_document", "natural"]
    # natural: both captions hallucinate (CHAIR_s 1), 2 of 6 mentions (CHAIR_i 1/3), recall 4/4, (8 + 9) / 2 words
    n = dom["natural"]
    assert (n["captions"], n["chair_s"], n["chair_i"], n["recall"], n["mean_length_words"]) == (
        2, 1.0, pytest.approx(1 / 3), 1.0, 8.5)
    d = dom["infographic_document"]
    assert (d["captions"], d["chair_s"], d["chair_i"], d["recall"], d["mean_length_words"]) == (1, 0.0, 0.0, 1.0, 8.0)
    x = dom[NO_DOMAIN]
    assert (x["captions"], x["chair_s"], x["recall"], x["mean_length_words"]) == (1, 0.0, pytest.approx(2 / 3), 6.0)
    # all: 2 of 4 captions, 2 of 11 mentions, recall 9/10, 31 / 4 words
    assert (s["captions"], s["chair_s"], s["chair_i"], s["recall"], s["mean_length_words"]) == (
        4, 0.5, pytest.approx(2 / 11), pytest.approx(0.9), 7.75)
    assert "chair by domain" in res.output and "│ natural  │ 2 │" in res.output


def test_one_domain_gets_a_breakdown_only_when_asked(tmp_path):
    run = _run(tmp_path / "nat.jsonl", natural_only=True)
    res = runner.invoke(app, ["chair", str(run), *ANNOTATIONS, "-o", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    assert "by_domain" not in json.loads((tmp_path / "a.json").read_text()) and "by domain" not in res.output
    res = runner.invoke(app, ["chair", str(run), *ANNOTATIONS, "-o", str(tmp_path / "b.json"), "--by-domain"])
    doc = json.loads((tmp_path / "b.json").read_text())
    assert list(doc["by_domain"]) == ["natural"] and doc["by_domain"]["natural"]["chair_i"] == pytest.approx(1 / 3)


def test_compare_adds_a_row_per_domain_with_questions_per_domain(tmp_path):
    md = tmp_path / "t.md"
    res = runner.invoke(app, ["compare", str(_run(tmp_path / "run.jsonl")), "--metric", "chair", *ANNOTATIONS,
                              "--per-question", "-o", str(md), "--save-results", str(tmp_path / "saved")])
    assert res.exit_code == 0, res.output
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in md.read_text().splitlines()[2:]]
    # columns: name, n, CHAIR_s, CHAIR_i, recall, words, unknown ids, unusable, questions/image, CHAIR_s per question
    # questions per image: all (4 + 2 + 6 + 0) / 4 = 3 -> 50 / 3; natural (4 + 2) / 2 = 3 -> 100 / 3;
    # document 6 -> 0; (none) 0 questions -> no per-question number
    assert rows == [
        ["run", "4", "50.0", "18.18", "90.0", "7.8", "0", "0", "3.0", "16.667"],
        ["run · (none)", "1", "0.0", "0.0", "66.67", "6.0", "-", "-", "0.0", "-"],
        ["run · infographic_document", "1", "0.0", "0.0", "100.0", "8.0", "-", "-", "6.0", "0.0"],
        ["run · natural", "2", "100.0", "33.33", "100.0", "8.5", "-", "-", "3.0", "33.333"],
    ]
    # a saved result keeps its breakdown: comparing it again gives the same rows
    md2 = tmp_path / "t2.md"
    res = runner.invoke(app, ["compare", *map(str, (tmp_path / "saved").iterdir()), "--per-question", "-o", str(md2)])
    assert res.exit_code == 0, res.output
    assert md2.read_text() == md.read_text()


def test_domains_of_caption_files(tmp_path):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"id": "a", "caption": "x", "domain": "chart"}\n{"id": "b", "caption": "y", "domain": {"id": "ui"}}\n'
                    '{"id": "c", "caption": "z"}\n{"id": "d", "caption": "w", "domain": {"id": null}}\n')
    cs = load_captions(rows)
    assert [cs.domain_of(k) for k in "abcd"] == ["chart", "ui", NO_DOMAIN, UNKNOWN_DOMAIN]
    assert cs.domain_of(None) == NO_DOMAIN  # an item without a caption
    res = tmp_path / "res.jsonl"
    res.write_text(_record("r1", "A dog.", "natural") + _record("r2", "", "chart", status="failed")
                   + CaptionResult(id="r3", source="r3.png", status="ok", final_caption="A page.",
                                   domain=DomainInfo(id=None, source="routed", raw="??")).to_json() + "\n")
    cs = load_captions(res)
    # a failed record keeps its domain: its questions count as missing in that domain
    assert [cs.domain_of(k) for k in ("r1", "r2", "r3")] == ["natural", "chart", UNKNOWN_DOMAIN]
    rows.write_text('{"id": "a", "caption": "x", "domain": 5}\n')
    with pytest.raises(EvalInputError, match="domain is a int"):
        load_captions(rows)


def test_question_metrics_by_domain_through_the_shared_helper():
    cs = from_mapping({"p": "x", "q": "y"})
    cs.domains = {"p": "natural", "q": "chart"}
    items = [vqa.ItemResult(id="1", kind="mcq", categories=["c"], status="scored", score=1.0, caption_key="p"),
             vqa.ItemResult(id="2", kind="mcq", categories=["c"], status="scored", score=0.0, caption_key="p"),
             vqa.ItemResult(id="3", kind="yesno", categories=["c"], status="scored", score=1.0, caption_key="q"),
             vqa.ItemResult(id="4", kind="mcq", categories=["c"], status="missing_caption", caption_key=None)]
    groups = by_domain(items, lambda r: r.caption_key, cs.domain_of, vqa.summarize)
    # natural 1 of 2; chart 1 of 1; the item without a caption is (none): 1 item, 0 evaluated
    assert {k: (g["overall"]["items"], g["overall"]["evaluated"], g["overall"]["accuracy"]) for k, g in groups.items()} == {
        NO_DOMAIN: (1, 0, None), "chart": (1, 1, 1.0), "natural": (2, 2, 0.5)}
    qa = [captionqa.QAResult(id="1", categories=["c"], status="scored", score=0.3, outcome="cannot", caption_key="q"),
          captionqa.QAResult(id="2", categories=["c"], status="scored", score=1.0, outcome="correct", caption_key="q")]
    groups = by_domain(qa, lambda r: r.caption_key, cs.domain_of, captionqa.summarize)
    assert groups is None  # one domain only
    groups = by_domain(qa, lambda r: r.caption_key, cs.domain_of, captionqa.summarize, force=True)
    assert groups["chart"]["overall"]["score"] == pytest.approx(0.65)  # (0.3 + 1) / 2


def test_capture_by_domain(tmp_path):
    from test_capture_refined import SYN, FixedParser

    from scalecap.eval.capture import CaptureConfig, CaptureEvaluator, RuleLemmatizer
    from scalecap.eval.runs import run_capture

    ev = CaptureEvaluator(CaptureConfig(parser=FixedParser(), synonyms=SYN, lemmatizer=RuleLemmatizer()))
    cs = from_mapping({"i1": "An orange cat sleeps on a wooden table.", "i2": "A purple dragon flies."})
    cs.domains = {"i1": "natural", "i2": "synthetic_aesthetic"}
    refs = {"i1": ["An orange cat lies on a brown desk."], "i2": ["An orange cat lies on a brown desk."]}
    doc, samples = asyncio.run(run_capture(cs, refs, ev, None))
    by = {x["id"]: x for x in samples}
    assert list(doc["by_domain"]) == ["natural", "synthetic_aesthetic"]
    # one caption per domain: each domain's numbers are its caption's, the overall their mean
    for key, dom in (("i1", "natural"), ("i2", "synthetic_aesthetic")):
        assert doc["by_domain"][dom]["captions"] == 1
        assert doc["by_domain"][dom]["score"] == pytest.approx(by[key]["score"])
        assert doc["by_domain"][dom]["object_f1"] == pytest.approx(by[key]["object_f1"])
    assert by["i1"]["score"] > by["i2"]["score"]  # the dragon matches nothing of the cat
    assert doc["summary"]["score"] == pytest.approx((by["i1"]["score"] + by["i2"]["score"]) / 2)
