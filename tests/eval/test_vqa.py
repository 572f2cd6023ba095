"""Caption-only VQA (Prism protocol): arithmetic on known judge outputs, and end to end with a tiny real model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalecap.eval.benchmarks import load_benchmark, question_with_options
from scalecap.eval.captions import load_captions
from scalecap.eval.cli import app
from scalecap.eval.vqa import ItemResult, grade_outputs, summarize

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
# The MM-Vet questions, copied into the repository's test data (see tests/data/README.md).
MMVET_Q = Path(__file__).resolve().parents[1] / "data" / "mmvet_questions.json"
MMVET_C = Path(__file__).resolve().parent.parent / "data" / "mmvet_scalecap_captions.jsonl"

runner = CliRunner()


# ----------------------------------------------------------------------------- pure: grades and sums

def test_grade_outputs_retries_then_gives_up_with_reason():
    assert grade_outputs(["0.7"], 3) == ("scored", 0.7, "ok")
    assert grade_outputs(["blah", "0.8 because"], 3) == ("scored", 0.8, "ok")
    status, score, reason = grade_outputs(["blah"], 3)
    assert (status, score) == ("pending", None)
    status, score, reason = grade_outputs(["x", "", "9"], 3)
    assert (status, score) == ("ungraded", None)
    assert reason == "no score after 3 attempt(s): score 9 outside [0, 1]"
    # a readable grade after the allowed attempts does not count
    assert grade_outputs(["x", "0.5"], 1)[0] == "ungraded"


def _item(id, kind, cats, status, score=None, prediction=None, reason=None):
    return ItemResult(id=id, kind=kind, categories=cats, status=status, score=score, prediction=prediction, reason=reason)


def test_summary_on_known_scores():
    # Judge replies and their grades: o1 "0.5" -> 0.5; o2 "blah" then "0.8 because" -> 0.8; o3 never a number.
    g1, g2, g3 = grade_outputs(["0.5"], 2), grade_outputs(["blah", "0.8 because"], 2), grade_outputs(["x", "y"], 2)
    items = [
        _item("q1", "mcq", ["color"], "scored", 1.0, "A"),
        _item("q2", "mcq", ["count"], "scored", 0.0, None, "no option could be read"),
        _item("o1", "open", ["ocr", "math"], g1[0], g1[1]),
        _item("o2", "open", ["ocr"], g2[0], g2[1]),
        _item("o3", "open", ["math"], g3[0], g3[1], reason=g3[2]),
        _item("m1", "open", ["ocr"], "missing_caption", reason="no caption for this id"),
    ]
    s = summarize(items)
    o = s["overall"]
    # evaluated: 5 (m1 has no caption); scored: q1 q2 o1 o2; sum = 1 + 0 + 0.5 + 0.8 = 2.3
    assert (o["items"], o["evaluated"], o["scored"], o["ungraded"], o["missing_caption"]) == (6, 5, 4, 1, 1)
    assert o["unextracted"] == 1  # q2 named no option
    assert o["score_sum"] == pytest.approx(2.3)
    assert o["accuracy"] == pytest.approx(2.3 / 5)  # ungraded counts 0: 0.46
    assert o["accuracy_graded"] == pytest.approx(2.3 / 4)  # 0.575
    pc = s["per_category"]
    assert pc["color"]["accuracy"] == 1.0 and pc["count"]["accuracy"] == 0.0
    # ocr: o1 0.5 + o2 0.8 over 2 evaluated (m1 missing)
    assert pc["ocr"]["accuracy"] == pytest.approx(0.65) and pc["ocr"]["missing_caption"] == 1
    # math: o1 0.5, o3 ungraded -> 0.5 / 2 = 0.25; graded only 0.5 / 1
    assert pc["math"]["accuracy"] == pytest.approx(0.25) and pc["math"]["accuracy_graded"] == pytest.approx(0.5)
    assert s["missing"]["ids"] == ["m1"] and s["partial"] and not s["complete"]
    assert s["ungraded"] == [{"id": "o3", "reason": "no score after 2 attempt(s): no number in reply 'y'"}]
    assert s["per_kind"]["mcq"]["accuracy"] == 0.5


def test_summary_of_nothing_is_none_not_a_crash():
    s = summarize([_item("m", "open", [], "missing_caption")])
    assert s["overall"]["accuracy"] is None and s["overall"]["accuracy_graded"] is None


# ----------------------------------------------------------------------------- benchmark formats

def test_mmvet_format_and_caption_lookup_by_image():
    bench = load_benchmark(MMVET_Q)
    assert bench.format == "mmvet" and len(bench.items) == 218
    v12 = next(it for it in bench.items if it.id == "v1_2")
    assert v12.kind == "open" and v12.categories == ["ocr", "math"] and v12.image == "v1_1.png"
    caps = load_captions(MMVET_C)
    assert caps.format == "rows" and len(caps.captions) == 200 and not caps.conflicts  # 218 lines, 200 images
    key, text, why = caps.lookup(*v12.caption_keys)
    assert key == "v1_1.png" and text.startswith("Image Caption Enhanced") and why is None
    first = load_captions(MMVET_C, "first_caption")
    assert first.lookup("v1_0.png")[1].startswith("The image contains a mathematical equation")


def test_jsonl_and_tsv_benchmarks():
    bench = load_benchmark(DATA / "mcq.jsonl")
    kinds = {it.id: it.kind for it in bench.items}
    assert kinds == {"q1": "mcq", "q2": "mcq", "q3": "yesno", "q4": "mcq"}
    q2 = bench.items[1]
    assert q2.answer_letter() == "B"  # the answer is given as the option text "two"
    assert question_with_options(q2) == "How many people are on the bus?\nOptions:\nA. one\nB. two\nC. three"
    tsv = load_benchmark(DATA / "vlmeval.tsv")
    assert [it.options for it in tsv.items] == [{"A": "cat", "B": "dog", "C": "bird"}, {"A": "sunny", "B": "rainy"}]
    assert tsv.items[0].answer_letter() == "B" and tsv.items[0].caption_keys == ("1",)


# ----------------------------------------------------------------------------- end to end, tiny real model

@pytest.fixture(scope="module")
def qwen2(tiny_models):
    return str(tiny_models["qwen2"])


@pytest.mark.slow
def test_mmvet_end_to_end_with_tiny_model(qwen2, tmp_path):
    out = tmp_path / "vqa.json"
    res = runner.invoke(app, ["vqa", str(MMVET_C), "-b", str(MMVET_Q), "--answerer", qwen2, "--judge", qwen2,
                              "--limit", "5", "--max-tokens", "8", "--judge-max-tokens", "4", "--judge-attempts", "2",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    o = doc["summary"]["overall"]
    assert o["items"] == 5 and o["evaluated"] == 5 and o["missing_caption"] == 0
    assert o["scored"] + o["ungraded"] + o["errors"] == 5 and o["errors"] == 0
    # the random judge (fixed weights) writes gibberish: items are ungraded, each says why, and the run reports
    assert o["ungraded"] >= 1 and len(doc["summary"]["ungraded"]) == o["ungraded"]
    for u in doc["summary"]["ungraded"]:
        assert u["reason"].startswith("no score after 2 attempt(s): ")
    rows = [json.loads(line) for line in out.with_name("vqa.items.jsonl").read_text().splitlines()]
    assert [r["id"] for r in rows] == ["v1_0", "v1_1", "v1_2", "v1_3", "v1_4"]
    assert all(len(r["judge_outputs"]) in (1, 2) and r["tokens"]["answerer_prompt"] > 100 for r in rows)
    assert rows[2]["caption_key"] == "v1_1.png"  # v1_2 asks about image v1_1.png
    prov = doc["provenance"]
    assert prov["metric"] == "vqa-prism" and prov["models"]["answerer"]["backend"] == "hf"
    assert prov["data"]["benchmark"]["sha256"] and prov["data"]["captions"]["sha256"]
    assert set(prov["prompts"]) == {"system", "prism_answer", "extract_answer", "judge_open"}
    assert "overall" in res.output and "ungraded" in res.output


@pytest.mark.slow
def test_partial_caption_file_says_which_are_missing(qwen2, tmp_path):
    lines = MMVET_C.read_text().splitlines()[:3]  # captions of v1_0.png and v1_1.png only
    caps = tmp_path / "some.jsonl"
    caps.write_text("\n".join(lines) + "\n")
    out = tmp_path / "r.json"
    res = runner.invoke(app, ["vqa", str(caps), "-b", str(MMVET_Q), "--answerer", qwen2, "--judge", qwen2,
                              "--limit", "5", "--max-tokens", "4", "--judge-max-tokens", "2", "--judge-attempts", "1",
                              "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())["summary"]
    assert s["partial"] and s["missing"]["count"] == 2 and s["missing"]["ids"] == ["v1_3", "v1_4"]
    assert s["overall"]["evaluated"] == 3
    assert "partial" in res.output and "v1_3" in res.output


@pytest.mark.slow
def test_multiple_choice_end_to_end_uses_the_extractor(qwen2, tmp_path):
    out = tmp_path / "mcq.json"
    res = runner.invoke(app, ["vqa", str(DATA / "mcq_captions.json"), "-b", str(DATA / "mcq.jsonl"),
                              "--answerer", qwen2, "--max-tokens", "6", "--extract-max-tokens", "4", "-o", str(out)])
    assert res.exit_code == 0, res.output
    rows = {r["id"]: r for r in map(json.loads, out.with_name("mcq.items.jsonl").read_text().splitlines())}
    assert rows["q4"]["status"] == "missing_caption"  # img_c has no caption
    for q in ("q1", "q2", "q3"):
        r = rows[q]
        assert r["status"] == "scored" and r["score"] in (0.0, 1.0)
        if r["prediction"] is None:  # gibberish: the rule failed, the extractor was asked, and it says so
            assert r["extractor_output"] is not None and "could be read" in r["reason"]
    assert rows["q3"]["kind"] == "yesno"


def test_open_questions_without_judge_fail_clearly(tmp_path):
    res = runner.invoke(app, ["vqa", str(MMVET_C), "-b", str(MMVET_Q), "--answerer", "whatever", "--limit", "2"])
    assert res.exit_code == 2
    assert "need a judge model" in res.output and "Traceback" not in res.output


def test_captions_no_question_uses_are_reported():
    from scalecap.eval.captions import from_mapping

    caps = from_mapping({"img_a.jpg": "a bus", "stray.jpg": "never asked about"})
    items = [ItemResult(id="q1", kind="mcq", categories=[], status="scored", score=1.0, prediction="A",
                        caption_key="img_a.jpg")]
    s = summarize(items, caps)
    assert s["captions"]["unused"] == 1 and s["captions"]["unused_ids"] == ["stray.jpg"]
