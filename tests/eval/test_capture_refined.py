"""Refined CAPTURE on a hand-worked case: every expected number derived by hand in the comments."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from scalecap.eval.capture import Elements, TableSynonyms, score_pair
from scalecap.eval.capture_refined import is_yes, refined_attributes, refined_pair

SYN = TableSynonyms([["table", "desk"]])
CAND = Elements(objects=["cat", "table", "lamp", "dragon"],
                attributes=["orange", "sleeping", "wooden", "bright", "purple"],
                relations=[("cat", "on", "table"), ("dragon", "above", "cat")],
                attribute_pairs=[("cat", "orange"), ("cat", "sleeping"), ("table", "wooden"), ("lamp", "bright"),
                                 ("dragon", "purple")])
REF = Elements(objects=["cat", "desk"], attributes=["orange", "wooden", "brown"], relations=[("cat", "on", "desk")],
               attribute_pairs=[("cat", "orange"), ("desk", "wooden"), ("desk", "brown")])
EXTRA = ["lamp"]  # in the image, in no reference
CAND_TEXT, REF_TEXT = "CANDIDATE CAPTION", "REFERENCE TEXT"


async def judge(questions):
    """A judge that knows the truth: the cat is on the table/desk; there is no dragon."""
    truth = {(REF_TEXT, "cat on table"): "Yes.", (REF_TEXT, "dragon above cat"): "No, there is no dragon.",
             (CAND_TEXT, "cat on desk"): "yes"}
    return [truth[q] for q in questions]


def test_refined_capture_by_hand():
    out = asyncio.run(refined_pair(CAND, REF, CAND_TEXT, REF_TEXT, EXTRA, SYN, judge))
    # Objects. Precision against ref + extra = [cat, desk, lamp]: cat exact, lamp exact, table~desk
    # synonym -> 3 of 4 (the dragon is wrong) = 0.75. Recall against ref only: cat, desk -> 2/2 = 1.
    # F1 = 2 * 0.75 * 1 / 1.75 = 6/7.
    o = out["object"]
    assert (o["precision"], o["recall"], o["f1"]) == pytest.approx((0.75, 1.0, 6 / 7), abs=1e-5)
    # Attributes, per object pair (cat-cat 1.0, table-desk 1.0). Candidate side: cat {orange, sleeping},
    # table {wooden}, dragon {purple} = 4 (lamp's "bright" is unverifiable: lamp matches only an extra
    # object). Matched: cat orange, table wooden = 2 -> P = 2/4 = 0.5. Reference side: 3 attributes,
    # 2 matched -> R = 2/3. F1 = 2 * 0.5 * (2/3) / (0.5 + 2/3) = 4/7.
    a = out["attribute"]
    assert (a["n_cand"], a["n_ref"]) == (4, 3)
    assert (a["precision"], a["recall"], a["f1"]) == pytest.approx((0.5, 2 / 3, 4 / 7), abs=1e-5)
    # Relations: candidate "cat on table" yes, "dragon above cat" no -> P = 1/2; reference "cat on desk"
    # found in the candidate -> R = 1/1. F1 = 2 * 0.5 * 1 / 1.5 = 2/3.
    r = out["relation"]
    assert (r["precision"], r["recall"], r["f1"]) == pytest.approx((0.5, 1.0, 2 / 3), abs=1e-5)
    # Score = (0.5 * 6/7 + 0.5 * 4/7 + 0.2 * 2/3) / 1.2 = (5/7 + 2/15) / 1.2 = (89/105) / 1.2 = 0.706349...
    assert out["score"] == pytest.approx((0.5 * 6 / 7 + 0.5 * 4 / 7 + 0.2 * 2 / 3) / 1.2, abs=1e-5)
    assert out["score"] == pytest.approx(0.706349, abs=1e-5)
    # Against plain CAPTURE on the same elements: the lamp is an error there (object P = 2/4) and
    # attributes are one bag (orange, wooden of 5 -> P = 2/5).
    plain = score_pair(CAND, REF, SYN)
    assert plain["object"]["precision"] == pytest.approx(0.5, abs=1e-5)
    assert plain["attribute"]["precision"] == pytest.approx(0.4, abs=1e-5)


class TwoDimEmbedder:
    """Fixed unit vectors: kitten and cat at cosine 0.8."""

    vectors = {"kitten": [0.8, 0.6], "cat": [1.0, 0.0]}

    def encode(self, texts):
        return np.array([self.vectors[t] for t in texts])


def test_attributes_are_weighted_by_object_similarity():
    # kitten-cat pair only through the soft stage, weight cos = 0.8*1 + 0.6*0 = 0.8; the one attribute
    # each (orange) matches exactly -> credit 0.8 on both sides -> P = R = 0.8/1.
    cand = Elements(objects=["kitten"], attribute_pairs=[("kitten", "orange")])
    ref = Elements(objects=["cat"], attribute_pairs=[("cat", "orange")])
    a = refined_attributes(cand, ref, [], None, TwoDimEmbedder())
    assert a["pairs"] == [["kitten", "cat", 0.8]]
    assert (a["precision"], a["recall"]) == pytest.approx((0.8, 0.8), abs=1e-5)
    # without an embedder the pair is not made: nothing matched
    assert refined_attributes(cand, ref, [], None)["precision"] == pytest.approx(0.0)


@pytest.mark.parametrize("reply, yes", [("Yes.", True), ("**yes**", True), ("yes, it is", True), ("No", False),
                                        ("", False), ("Yesterday", False), ("It is yes", False)])
def test_yes_is_the_first_word(reply, yes):
    assert is_yes(reply) is yes


# ----------------------------------------------------------------------------- over a corpus

GRAPHS = {
    "An orange cat sleeps on a wooden table.": "( cat , is , orange ) , ( cat , sleeping on , table ) , ( table , is , wooden )",
    "A purple dragon flies.": "( dragon , is , purple )",
    "A lamp glows.": "( lamp )",
    "An orange cat lies on a brown desk.": "( cat , is , orange ) , ( cat , on , desk ) , ( desk , is , brown )",
}


class FixedParser:
    """Scene graphs written out by hand (the parser is a model the user supplies; not under test here)."""

    kind = "fixed"

    async def parse(self, sentences):
        return [GRAPHS[s] for s in sentences]

    def describe(self):
        return {"kind": "fixed"}


def test_refined_beside_capture_over_a_corpus(tmp_path):
    from scalecap.eval.capture import CaptureConfig, CaptureEvaluator, RuleLemmatizer, evaluate
    from scalecap.eval.capture_refined import Refined, load_extra_objects, make_judge
    from scalecap.eval.captions import from_mapping
    from scalecap.testing.scripted import ScriptedBackend

    judge_llm = ScriptedBackend(rules=[("is this true: cat sleeping on table", "Yes"),
                                       ("is this true: cat on desk", "yes.")], default="no", vision=False)
    prompt = "Description:\n{}\n\nBased only on the description above, is this true: {}? Answer yes or no."
    extra_file = tmp_path / "extra.json"
    extra_file.write_text('{"img1": ["Lamps"]}')
    refined = Refined(make_judge(judge_llm, prompt, None), load_extra_objects(extra_file, RuleLemmatizer().noun))
    ev = CaptureEvaluator(CaptureConfig(parser=FixedParser(), synonyms=SYN, lemmatizer=RuleLemmatizer()))
    caption = "An orange cat sleeps on a wooden table. A purple dragon flies. A lamp glows."
    reference = "An orange cat lies on a brown desk."
    summary, samples = asyncio.run(evaluate(from_mapping({"img1": caption}), {"img1": [reference]}, ev, refined=refined))
    (s,) = samples
    r = s["refined"]
    assert r["extra_objects"] == ["lamp"]  # "Lamps", lemmatised like a parsed object
    # objects [cat, table, dragon, lamp] vs [cat, desk] + extra [lamp]: P = 3/4, R = 2/2, F1 = 6/7
    assert (r["object_precision"], r["object_recall"]) == pytest.approx((0.75, 1.0), abs=1e-5)
    # attributes: cat {orange} ~ cat {orange} 1, table {wooden} ~ desk {brown} 0, dragon {purple} 0:
    # P = 1/3, R = 1/2, F1 = 2 * (1/6) / (5/6) = 0.4
    assert (r["attribute_precision"], r["attribute_recall"], r["attribute_f1"]) == pytest.approx((1 / 3, 0.5, 0.4), abs=1e-5)
    # relations: "cat sleeping on table" found in the reference, "cat on desk" in the caption: P = R = 1
    assert (r["relation_precision"], r["relation_recall"]) == pytest.approx((1.0, 1.0), abs=1e-5)
    # (0.5 * 6/7 + 0.5 * 0.4 + 0.2 * 1) / 1.2 = 0.690476...
    assert r["score"] == pytest.approx(0.690476, abs=1e-5)
    assert summary["refined"]["score"] == pytest.approx(r["score"]) and summary["refined"]["captions"] == 1
    # CAPTURE itself, side by side: the lamp is an error there -> object P = 2/4
    assert s["object_precision"] == pytest.approx(0.5, abs=1e-5) and summary["score"] == pytest.approx(s["score"])
    # the judge saw the reference for the caption's relation and the caption for the reference's
    asked = [c.prompt.user for c in judge_llm.generations()]
    assert [a.split("\n")[1] for a in asked] == [reference, caption]


def test_refined_cli_needs_a_judge_and_judge_options_need_refined(tmp_path):
    from typer.testing import CliRunner

    from scalecap.eval.cli import app

    data = Path(__file__).resolve().parent.parent / "data" / "eval"
    base = ["capture", str(data / "capture_captions.json"), "-r", str(data / "capture_refs.json"),
            "--parser-model", "m", "--api-base", "http://127.0.0.1:9/v1"]
    res = CliRunner().invoke(app, base + ["--refined"])
    assert res.exit_code == 2 and "LLM judge" in res.output
    res = CliRunner().invoke(app, base + ["--judge-model", "j"])
    assert res.exit_code == 2 and "belong to --refined" in res.output


@pytest.mark.slow
def test_refined_capture_cli_on_tiny_models(tiny_models, tmp_path):
    """Both variants side by side, through the CLI, with a real (tiny, random) parser and judge."""
    import json

    from typer.testing import CliRunner

    from scalecap.eval.cli import app

    data = Path(__file__).resolve().parent.parent / "data" / "eval"
    qwen2 = str(tiny_models["qwen2"])
    extra = tmp_path / "extra.json"
    extra.write_text('{"img1": ["lamp"]}')
    out = tmp_path / "capture.json"
    res = CliRunner().invoke(app, ["capture", str(data / "capture_captions.json"), "-r", str(data / "capture_refs.json"),
                                   "--parser-llm", qwen2, "--parser-max-tokens", "6", "--refined", "--judge", qwen2,
                                   "--extra-objects", str(extra), "--details", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    s = doc["summary"]
    assert s["captions"] == 2 and s["refined"]["captions"] == 2 and 0.0 <= s["refined"]["score"] <= 1.0
    assert doc["provenance"]["models"]["refined"]["judge"]["model"] == qwen2
    assert "relation_judge" in doc["provenance"]["prompts"] and doc["provenance"]["settings"]["refined"] is True
    rows = [json.loads(x) for x in out.with_name("capture.items.jsonl").read_text().splitlines()]
    assert all("refined" in r and len(r["refined"]["pairs"]) == len(r["pairs"]) for r in rows)
    assert "refined CAPTURE" in res.output
