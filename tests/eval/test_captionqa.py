"""CaptionQA: the shuffle, the extra option, the 1/n + 0.05 rule, and a run with a tiny real model."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalecap.eval.benchmarks import BenchItem
from scalecap.eval.captionqa import CANNOT, QAResult, score_choice, shuffle_options, summarize
from scalecap.eval.cli import app
from scalecap.eval.common import EvalInputError

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
runner = CliRunner()

FOUR = BenchItem(id="q1", question="What colour is the bus?", answer="A",
                 options={"A": "red", "B": "blue", "C": "green", "D": "yellow"}, categories=["color"])
YESNO = BenchItem(id="q2", question="Is there a dog?", answer="yes", options={"A": "Yes", "B": "No"}, categories=["exist"])


def test_shuffle_is_seeded_per_item_and_keeps_the_key():
    a = shuffle_options(FOUR, 0)
    # pinned: the order is a function of (seed, id) only, the same in every process and Python version
    # (random.Random seeds a str through SHA-512, never through the per-process hash())
    assert a.order == ["C", "D", "A", "B"]
    assert [shuffle_options(FOUR, s).order for s in (1, 2)] == [["B", "C", "D", "A"], ["C", "B", "A", "D"]]
    # the question text and option texts do not enter the shuffle, the id does
    assert shuffle_options(dataclasses.replace(FOUR, question="Which colour?"), 0).order == a.order
    assert shuffle_options(dataclasses.replace(FOUR, id="q9"), 0).order != a.order
    assert a.options[a.key] == "red"  # the key follows its text
    orders = {tuple(shuffle_options(FOUR, s).order) for s in range(10)}
    assert len(orders) > 1  # the seed matters


def test_extra_option_only_for_non_yes_no():
    s = shuffle_options(FOUR, 3)
    assert s.cannot == "E" and s.options["E"] == CANNOT and len(s.options) == 5 and s.n_original == 4
    y = shuffle_options(YESNO, 3)
    assert y.yes_no and y.cannot is None and len(y.options) == 2


def test_scoring_rule():
    s = shuffle_options(FOUR, 0)
    wrong = next(k for k in s.options if k not in (s.key, s.cannot))
    assert score_choice(s.key, s) == (1.0, "correct")
    assert score_choice(wrong, s) == (0.0, "wrong")
    # "Cannot answer from the caption": 1/n + 0.05 with n = 4 original options = 0.30
    score, outcome = score_choice(s.cannot, s)
    assert outcome == "cannot" and score == pytest.approx(0.30)
    assert score_choice(None, s) == (0.0, "unextracted")
    three = BenchItem(id="t", question="?", answer="C", options={"A": "x", "B": "y", "C": "z"})
    t = shuffle_options(three, 1)
    assert score_choice(t.cannot, t)[0] == pytest.approx(1 / 3 + 0.05)


def test_bad_key_is_refused():
    with pytest.raises(EvalInputError, match="not one of its options"):
        shuffle_options(BenchItem(id="z", question="?", answer="F", options={"A": "x", "B": "y"}), 0)


def test_summary_on_known_outcomes():
    def r(i, score, outcome, cats):
        return QAResult(id=i, categories=cats, status="scored", score=score, outcome=outcome)

    items = [r("a", 1.0, "correct", ["x"]), r("b", 0.30, "cannot", ["x"]), r("c", 0.0, "wrong", ["y"]),
             r("d", 0.0, "unextracted", ["y"]), QAResult(id="e", categories=["y"], status="missing_caption")]
    s = summarize(items)
    # (1 + 0.30 + 0 + 0) / 4 evaluated = 0.325; category x: 1.3 / 2 = 0.65; y: 0 / 2
    assert s["overall"]["score"] == pytest.approx(0.325)
    assert s["per_category"]["x"]["score"] == pytest.approx(0.65) and s["per_category"]["y"]["score"] == 0.0
    assert s["overall"]["outcomes"] == {"cannot": 1, "correct": 1, "unextracted": 1, "wrong": 1}
    assert s["missing"]["ids"] == ["e"] and s["partial"]


@pytest.mark.slow
def test_captionqa_end_to_end_with_tiny_model(tiny_models, tmp_path):
    bench = tmp_path / "cqa.jsonl"
    rows = [json.loads(x) for x in (DATA / "mcq.jsonl").read_text().splitlines()]
    bench.write_text("\n".join(json.dumps(r) for r in rows if "options" in r) + "\n")  # CaptionQA: multiple choice
    out = tmp_path / "cqa.json"
    res = runner.invoke(app, ["captionqa", str(DATA / "mcq_captions.json"), "-b", str(bench),
                              "--answerer", str(tiny_models["qwen2"]), "--max-tokens", "4", "--extract-max-tokens", "4", "--seed", "7", "-o", str(out)])
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    assert doc["provenance"]["seed"] == 7 and doc["summary"]["missing"]["ids"] == ["q4"]
    items = {r["id"]: r for r in map(json.loads, out.with_name("cqa.items.jsonl").read_text().splitlines())}
    assert items["q1"]["n_options"] == 4 and not items["q1"]["yes_no"] and len(items["q1"]["order"]) == 4
    assert items["q4"]["yes_no"]  # yes/no: no extra option
    for q in ("q1", "q2"):
        assert items[q]["outcome"] in ("correct", "wrong", "cannot", "unextracted")
