"""The degenerate-output filter in the pipeline: each hit a reason code in the record, an action per
check (mark, drop the sentence, retry once with a higher repetition penalty), and no false hit on
436 real captions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from scalecap import ScaleCap
from scalecap.backends.base import Generation
from scalecap.config import Settings
from scalecap.prompts import load_preset
from scalecap.screen import Screen
from scalecap.testing.scripted import ScriptedBackend

PROMPTS = load_preset("paper")
DATA = Path(__file__).resolve().parent / "data"
FIRST = "A red cat sleeps on a wooden table."
LOOP = "The cat is red. " + "The cat has a long tail. " * 6
REFUSAL = "I'm sorry, but I can't help with identifying people in images."
FINAL = "A red cat sleeps on a wooden table, its long tail hanging over the edge."


def _captioner(first=FIRST, answer=LOOP, retry_answer=None) -> ScriptedBackend:
    def answer_reply(prompt, params):
        return retry_answer if retry_answer is not None and params.repetition_penalty > 1.0 else answer

    rules = [(re.escape(PROMPTS.caption), first), (r"^Describe more details about the position", "On the table."),
             (r"^Describe more details about", answer_reply)]
    return ScriptedBackend(rules=rules, support={w: 0.9 for w in ("red", "cat", "tail", "table", "long")}, base=0.25)


def _writer(final=FINAL) -> ScriptedBackend:
    return ScriptedBackend(rules=[(r"^Basic Context:\n", final), (r"Instructions:", "Describe more details about the cat.")],
                           default="The cat.", vision=False, can_score=False, name="writer")


def _run(captioner, writer=None, **settings):
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer or _writer(), tagger="lexicon", tau=0.1,
                  budget=1, **settings)
    return sc.caption(Image.new("RGB", (32, 24), (120, 60, 30)), id="x")


def test_a_looping_answer_is_marked_by_default_and_left_as_it_is():
    r = _run(_captioner())
    assert r.status == "ok", r.error
    obj = next(q for q in r.questions if q.kind == "object")
    assert obj.answer == LOOP.strip()
    assert [(h.stage, h.code, h.action, h.value) for h in obj.filter_hits] == [("answers", "repetition", "mark", 6)]
    assert r.filter_hits == []  # first and final captions are clean
    assert r.fingerprint.settings["degenerate_filter"] is True


def test_drop_removes_the_repeats_of_a_looping_sentence():
    r = _run(_captioner(), degenerate_actions="repetition=drop")
    obj = next(q for q in r.questions if q.kind == "object")
    assert obj.answer == "The cat is red. The cat has a long tail."
    assert [(h.code, h.action) for h in obj.filter_hits] == [("repetition", "drop")]


def test_retry_asks_again_with_a_higher_penalty_and_keeps_the_better_text():
    captioner = _captioner(retry_answer="The cat is red and has a long tail.")
    r = _run(captioner, degenerate_actions={"repetition": "retry"}, degenerate_retry_penalty=1.3)
    obj = next(q for q in r.questions if q.kind == "object")
    assert obj.answer == "The cat is red and has a long tail."
    assert [(h.code, h.action, h.retry) for h in obj.filter_hits] == [("repetition", "retry", False)]
    asks = [c.params.repetition_penalty for c in captioner.generations(r"^Describe more details about the cat")]
    assert asks == [1.0, 1.3]
    assert r.usage["answers"].calls == 3  # object, its retry, position


def test_a_retry_that_still_loops_keeps_the_first_text_and_records_both():
    r = _run(_captioner(), degenerate_actions={"repetition": "retry"})
    obj = next(q for q in r.questions if q.kind == "object")
    assert obj.answer == LOOP.strip()
    assert [(h.code, h.action, h.retry) for h in obj.filter_hits] == [("repetition", "retry", False),
                                                                       ("repetition", "mark", True)]


def test_a_refusing_writer_and_a_chinese_first_caption_are_in_the_record():
    first = "A red cat sleeps on a wooden table. 这张图片展示了一只红色的猫，它正在一张木桌上睡觉，尾巴垂在桌边。"
    r = _run(_captioner(first=first), _writer(final=REFUSAL))
    assert [(h.stage, h.code) for h in r.filter_hits] == [("caption", "script_drift"), ("final", "refusal")]
    assert r.final_caption == REFUSAL  # marked, not changed


def test_drop_removes_a_drifting_sentence():
    first = "A red cat sleeps on a wooden table. 这张图片展示了一只红色的猫，它正在一张木桌上睡觉，尾巴垂在桌边。"
    r = _run(_captioner(first=first), degenerate_actions="script_drift=drop")
    assert r.first_caption == FIRST
    assert [(h.stage, h.code, h.action) for h in r.filter_hits] == [("caption", "script_drift", "drop")]


def test_the_filter_can_be_turned_off():
    r = _run(_captioner(), _writer(final=REFUSAL), degenerate_filter=False)
    assert r.filter_hits == [] and all(q.filter_hits == [] for q in r.questions)


def test_unknown_check_in_actions_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown check 'loops'"):
        Settings(degenerate_actions="loops=drop")


def test_no_false_hit_on_436_real_captions_with_the_default_settings():
    """The filter's defaults (Settings) hit only the three first captions that really degenerated
    (see tests/text/test_degenerate.py): 433 of 436 real captions pass."""
    screen = Screen(Settings())
    rows = [json.loads(line) for line in (DATA / "mmvet_scalecap_captions.jsonl").read_text().splitlines()]
    hit = {(row["image_file"], f) for row in rows for f in ("ori_caption", "final_caption")
           if screen.check(Generation(row[f], 0, 0, "stop"))}
    assert len(rows) * 2 == 436
    assert hit == {("v1_69.jpg", "ori_caption"), ("v1_151.jpg", "ori_caption"), ("v1_25.png", "ori_caption")}
