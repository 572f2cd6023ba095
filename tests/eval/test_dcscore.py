"""DCScore: unit precision and recall worked by hand with scripted models, unreadable replies as
recorded failures, resume; then end to end through the CLI on tiny real models."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from scalecap._sync import run_sync
from scalecap.eval.captions import from_mapping
from scalecap.eval.cli import app
from scalecap.eval.dcscore import DCScore, DCScoreSettings, parse_units, parse_yes_no, units_regex
from scalecap.eval.judged import ImageFinder
from scalecap.eval.runs import run_dcscore
from scalecap.testing.scripted import ScriptedBackend

runner = CliRunner()

CAPTIONS = {"c1": "A red bus under a blue sky, with two dogs.", "c2": "A cat.", "c3": "A strange thing.", "c4": ""}
REFS = {"c1": ["A red bus beside a tree."], "c2": ["A cat on a sofa.", "A lamp and a cat."]}
# decomposer: text -> its units
UNITS = {"A red bus under a blue sky, with two dogs.": ["a red bus", "a blue sky", "two dogs"],
         "A cat.": ["a cat"], "A strange thing.": ["a strange thing"],
         "A red bus beside a tree.": ["a red bus", "a tree"],
         "A cat on a sofa.": ["a cat", "a sofa"], "A lamp and a cat.": ["a lamp", "a cat"]}
# judge: is the unit true of the image? ("a strange thing" gets an unreadable reply)
TRUE = {"a red bus": "yes", "a blue sky": "yes", "two dogs": "no", "a cat": "Yes.", "a strange thing": "maybe"}
# matcher: (the caption's units contain ...) reference unit -> covered?
COVERED = {"a red bus": "yes", "a tree": "no", "a cat": "yes", "a sofa": "yes", "a lamp": "no"}


def decompose(prompt, params):
    text = prompt.user.split("Description:\n", 1)[1].split("\n\nWrite one unit", 1)[0]
    return "".join(f"- {u}\n" for u in UNITS[text])


def statement(prompt) -> str:
    return prompt.user.split("Statement: ", 1)[1].split("\n", 1)[0]


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for i, k in enumerate(CAPTIONS):
        Image.new("RGB", (24, 24), (50 * i, 20, 90)).save(folder / f"{k}.jpg")
    return ImageFinder(folder)


def models():
    llm = ScriptedBackend(rules=[(r"^Break the image description", decompose),
                                 (r"^Below are the information units", lambda p, q: COVERED[statement(p)])],
                          vision=False)
    vlm = ScriptedBackend(default=lambda p, q: TRUE[statement(p)])
    return llm, vlm


def test_parsing():
    assert parse_units("- a red bus\n- two dogs\n- a red bus\n") == ["a red bus", "two dogs"]
    assert parse_units("Units:\n1. a  cat\n2) a sofa\n* a lamp") == ["a cat", "a sofa", "a lamp"]
    assert parse_units("a cat\na sofa\n") == ["a cat", "a sofa"]  # no bullets: the lines
    assert parse_units("Here are the units:\na cat") == ["a cat"]
    assert parse_units("") == [] and parse_units("-  \n") == []
    assert [parse_yes_no(x) for x in ("yes", "No.", " **Yes**", "maybe", "", "yesterday")] == \
        [True, False, True, None, None, None]
    rx = units_regex(2, 5)
    assert re.fullmatch(rx, "- a cat\n- dog\n") and not re.fullmatch(rx, "- a cat\n- b\n- c\n")
    assert not re.fullmatch(rx, "- abcdef\n") and not re.fullmatch(rx, "-  cat\n") and not re.fullmatch(rx, "")


def test_hand_worked_precision_and_recall(images, tmp_path):
    llm, vlm = models()
    engine = DCScore(llm, vlm, settings=DCScoreSettings(concurrency=2))
    caps = from_mapping(CAPTIONS)
    caps.domains = {"c1": "natural", "c2": "infographic_document"}  # c3, c4: no domain
    doc, rows = run_sync(run_dcscore(caps, images, engine, references=REFS, items_path=tmp_path / "items.jsonl"))
    by = {r["id"]: r for r in rows}
    # c1: units a red bus (yes), a blue sky (yes), two dogs (no)          -> P = 2/3
    #     reference units a red bus (covered), a tree (not)               -> R = 1/2
    #     F1 = 2 * 2/3 * 1/2 / (2/3 + 1/2) = (2/3) / (7/6) = 4/7
    assert (by["c1"]["n_units"], by["c1"]["n_supported"], by["c1"]["n_reference_units"], by["c1"]["n_covered"]) == (3, 2, 2, 1)
    assert by["c1"]["precision"] == pytest.approx(2 / 3) and by["c1"]["recall"] == pytest.approx(1 / 2)
    assert by["c1"]["f1"] == pytest.approx(4 / 7)
    # c2: unit a cat (yes)                                                 -> P = 1
    #     two references: a cat, a sofa + a lamp, a cat -> units a cat, a sofa, a lamp (a cat once)
    #     covered a cat, a sofa; not a lamp                                -> R = 2/3
    #     F1 = 2 * 1 * 2/3 / (1 + 2/3) = (4/3) / (5/3) = 4/5
    assert [u["text"] for u in by["c2"]["reference_units"]] == ["a cat", "a sofa", "a lamp"]
    assert by["c2"]["precision"] == 1.0 and by["c2"]["recall"] == pytest.approx(2 / 3)
    assert by["c2"]["f1"] == pytest.approx(4 / 5)
    # c3: the judge's "maybe" is neither yes nor no -> a recorded failure, not a verdict
    assert by["c3"]["status"] == "error" and "'maybe'" in by["c3"]["reason"]
    # c4: an empty caption has no units (no model call) and no references: scored, no numbers
    assert by["c4"]["status"] == "scored" and by["c4"]["precision"] is None and by["c4"]["recall"] is None
    s = doc["summary"]
    # pooled over c1, c2 (and c4, which adds nothing): units 3 + 1 = 4, supported 2 + 1 = 3 -> P = 3/4
    # reference units 2 + 3 = 5, covered 1 + 2 = 3 -> R = 3/5; F1 = 2 * 3/4 * 3/5 / (3/4 + 3/5) = 0.9 / 1.35 = 2/3
    assert (s["units"], s["supported"], s["reference_units"], s["covered"]) == (4, 3, 5, 3)
    assert s["precision"] == pytest.approx(3 / 4) and s["recall"] == pytest.approx(3 / 5) and s["f1"] == pytest.approx(2 / 3)
    assert s["hallucination_rate"] == pytest.approx(1 / 4)
    # macro: P = (2/3 + 1) / 2 = 5/6; R = (1/2 + 2/3) / 2 = 7/12; F1 = (4/7 + 4/5) / 2 = 24/35
    assert s["macro"]["precision"] == pytest.approx(5 / 6) and s["macro"]["recall"] == pytest.approx(7 / 12)
    assert s["macro"]["f1"] == pytest.approx(24 / 35)
    assert (s["captions"], s["scored"], s["errors"], s["no_references"]) == (4, 3, 1, 1)
    # by domain, pooled the same way: natural = c1 (P 2/3, R 1/2, F1 4/7), infographic_document = c2
    # (P 1, R 2/3, F1 4/5), (none) = c3 (an error) and c4 (scored, no units): no numbers
    dom = doc["by_domain"]
    assert list(dom) == ["(none)", "infographic_document", "natural"]
    assert (dom["natural"]["precision"], dom["natural"]["recall"], dom["natural"]["f1"]) == pytest.approx((2 / 3, 1 / 2, 4 / 7))
    assert (dom["infographic_document"]["precision"], dom["infographic_document"]["f1"]) == pytest.approx((1.0, 4 / 5))
    assert (dom["(none)"]["captions"], dom["(none)"]["scored"], dom["(none)"]["errors"], dom["(none)"]["precision"]) == (
        2, 1, 1, None)
    # the reference "A lamp and a cat." and the others were decomposed once each, the matcher saw c1's units
    decomps = [c.prompt.user for c in llm.generations("^Break")]
    assert len(decomps) == 3 + 3  # c1, c2, c3 + three reference texts
    match = next(c.prompt.user for c in llm.generations("^Below") if "Statement: a tree" in c.prompt.user)
    assert "- a red bus\n- a blue sky\n- two dogs" in match
    assert all(c.with_image for c in vlm.calls) and not any(c.with_image for c in llm.calls)
    # every unit and verdict is in the items file
    lines = {json.loads(x)["id"]: json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()}
    assert [(u["text"], u["supported"]) for u in lines["c1"]["units"]] == [("a red bus", True), ("a blue sky", True),
                                                                          ("two dogs", False)]
    assert lines["c1"]["tokens"]["judge_prompt"] > 0 and lines["c1"]["tokens"]["decomposer_completion"] > 0


def test_without_references_precision_only(images):
    llm, vlm = models()
    caps = from_mapping({k: CAPTIONS[k] for k in ("c1", "c2")})
    doc, _ = run_sync(run_dcscore(caps, images, DCScore(llm, vlm)))
    s = doc["summary"]
    assert s["precision"] == pytest.approx(3 / 4) and s["recall"] is None and s["f1"] is None
    assert not llm.generations("^Below")  # no matching without references


def test_unparseable_decomposition_is_a_failure(images):
    llm = ScriptedBackend(default="", vision=False)  # an empty reply: no unit from a non-empty caption
    _, vlm = models()
    doc, rows = run_sync(run_dcscore(from_mapping({"c2": "A cat."}), images, DCScore(llm, vlm)))
    assert rows[0]["status"] == "error" and "no unit" in rows[0]["reason"] and doc["summary"]["precision"] is None


def test_constrained_backends_get_the_regexes(images):
    llm = ScriptedBackend(rules=[(r"^Break", decompose)], vision=False, can_constrain=True)
    vlm = ScriptedBackend(default=lambda p, q: TRUE[statement(p)], can_constrain=True)
    run_sync(run_dcscore(from_mapping({"c2": "A cat."}), images,
                         DCScore(llm, vlm, settings=DCScoreSettings(max_units=7, unit_max_chars=30))))
    assert [c.params.regex for c in llm.calls] == [units_regex(7, 30)]
    assert [c.params.regex for c in vlm.calls] == ["(yes|no)"]


class Stop(Exception):
    pass


def test_resume_after_an_interruption(images, tmp_path):
    caps = from_mapping({k: CAPTIONS[k] for k in ("c1", "c2", "c4")})
    full_items = tmp_path / "full.jsonl"
    llm, vlm = models()
    full, _ = run_sync(run_dcscore(caps, images, DCScore(llm, vlm, settings=DCScoreSettings(concurrency=1)),
                                   references=REFS, items_path=full_items))
    llm, vlm = models()

    def dying(p, q):
        if statement(p) == "a cat":  # c1 is done, c2 dies at its judge
            raise Stop()
        return TRUE[statement(p)]

    vlm.default = dying
    items = tmp_path / "items.jsonl"
    with pytest.raises(Stop):
        run_sync(run_dcscore(caps, images, DCScore(llm, vlm, settings=DCScoreSettings(concurrency=1)),
                             references=REFS, items_path=items))
    assert [json.loads(x)["id"] for x in items.read_text().splitlines()] == ["c1"]
    llm, vlm = models()
    doc, _ = run_sync(run_dcscore(caps, images, DCScore(llm, vlm, settings=DCScoreSettings(concurrency=1)),
                                  references=REFS, items_path=items, resume=True))
    assert doc["summary"]["resumed"] == 1
    assert [statement(c.prompt) for c in vlm.calls] == ["a cat"]  # only c2's unit (c4 has none)
    strip = lambda d: {k: v for k, v in d["summary"].items() if k != "resumed"}  # noqa: E731
    assert strip(doc) == strip(full) and items.read_text() == full_items.read_text()


# ----------------------------------------------------------------------------- tiny real models

def test_dcscore_end_to_end_with_tiny_models(tiny_models, sample_images, tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for k in ("chelsea", "rocket"):
        (folder / sample_images[k].name).write_bytes(sample_images[k].read_bytes())
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"chelsea": "A ginger cat lies on a wooden floor.", "rocket": "A rocket on a launch pad."}))
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"chelsea": ["A tabby cat looking up."]}))
    out = tmp_path / "dc.json"
    res = runner.invoke(app, ["dcscore", str(caps), "--images", str(folder), "-r", str(refs),
                              "--decomposer", str(tiny_models["qwen2"]), "--judge", str(tiny_models["qwen2vl"]),
                              "--max-units", "3", "--unit-chars", "12", "--decompose-max-tokens", "60",
                              "--price", "*=1", "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())["summary"]
    assert s["scored"] == 2 and s["errors"] == 0
    rows = {json.loads(x)["id"]: json.loads(x) for x in out.with_name("dc.items.jsonl").read_text().splitlines()}
    for r in rows.values():
        # constrained decoding: a well-formed list from the random decomposer, yes/no from the random judge
        assert re.fullmatch(units_regex(3, 12), r["decomposition"]), r["decomposition"]
        assert 1 <= r["n_units"] <= 3 and all(u["response"] in ("yes", "no") for u in r["units"])
        assert r["precision"] == pytest.approx(r["n_supported"] / r["n_units"])
        assert r["cost_usd"] > 0
    assert rows["chelsea"]["n_reference_units"] >= 1 and rows["rocket"]["recall"] is None
    assert s["units"] == sum(r["n_units"] for r in rows.values())
    assert s["precision"] == pytest.approx(sum(r["n_supported"] for r in rows.values()) / s["units"])
    # the result file compares
    md = tmp_path / "cmp.md"
    res = runner.invoke(app, ["compare", str(out), str(out), "--names", "x,y", "-o", str(md)])
    assert res.exit_code == 0, res.output
    head, _, x, y = md.read_text().splitlines()
    assert "precision %" in head and x.startswith("| x | 2 | ") and y.startswith("| y | 2 | ")
    assert f"| {round(100 * s['precision'], 2)} |" in x
