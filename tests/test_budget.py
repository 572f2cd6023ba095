"""The adaptive budget (issue 15): questions in waves, stopped by novelty or by MAX.

A scripted captioner answers each question with a fixed text and supports a fixed set of words, so
every wave's novelty can be worked out by hand (lexicon tagger: every word that is not a function
word is a content word; "the", "is", "has", "on", "in", "a" are function words).

Known before any wave, from the one golden sentence "A red cat sleeps on a wooden table.":
    {red, cat, sleeps, wooden, table}
"""

from __future__ import annotations

import re

import pytest
from PIL import Image

from scalecap import ScaleCap
from scalecap.config import Settings
from scalecap.prompts import load_preset
from scalecap.testing.scripted import ScriptedBackend
from scalecap.text.instructions import OBJECT_TEMPLATE, POSITION_TEMPLATE

PROMPTS = load_preset("paper")
CAPTION = "A red cat sleeps on a wooden table."
OBJECTS = ["cat", "table", "mug", "lamp", "rug", "book"]
INSTRUCTIONS = "".join(OBJECT_TEMPLATE.format(o) + "\n" for o in OBJECTS)
SUPPORTED = {"red", "cat", "sleeps", "wooden", "table", "orange", "stripes", "lies", "centre", "dark", "grain",
             "stands", "left", "mug", "blue", "rests", "right", "lamp", "glows", "hangs", "overhead"}

# Wave 1 (cat, table) when answers repeat what is known:
#   words in order: red, cat, sleeps, table, wooden -> 5 words, none new -> novelty 0/5 = 0.0
REPEATING = {
    OBJECT_TEMPLATE.format("cat"): "The red cat sleeps.",
    POSITION_TEMPLATE.format("cat"): "The cat sleeps on the table.",
    OBJECT_TEMPLATE.format("table"): "The wooden table.",
    POSITION_TEMPLATE.format("table"): "The table is red.",
}
# Wave 1 (cat, table) when answers add detail. The crown sentence fails rating (no supported word),
# so its words never count:
#   words: cat, orange, stripes, lies, centre, table, dark, grain, stands, left (10)
#   new:   orange, stripes, lies, centre, dark, grain, stands, left (8) -> novelty 8/10 = 0.8
ADDING_1 = {
    OBJECT_TEMPLATE.format("cat"): "The cat has orange stripes. It wears a golden crown.",
    POSITION_TEMPLATE.format("cat"): "The cat lies in the centre.",
    OBJECT_TEMPLATE.format("table"): "The table has dark grain.",
    POSITION_TEMPLATE.format("table"): "The table stands on the left.",
}
# Wave 2 (mug, lamp), all new: mug, blue, rests, right, lamp, glows, hangs, overhead -> 8/8 = 1.0
ADDING_2 = {
    OBJECT_TEMPLATE.format("mug"): "The mug is blue.",
    POSITION_TEMPLATE.format("mug"): "The mug rests on the right.",
    OBJECT_TEMPLATE.format("lamp"): "The lamp glows.",
    POSITION_TEMPLATE.format("lamp"): "The lamp hangs overhead.",
}
# Wave 2 (mug, lamp) mostly repeating wave 1:
#   words: mug, red, stands, left, lamp, dark, grain, centre (8); new: mug, lamp (2) -> 2/8 = 0.25
FADING_2 = {
    OBJECT_TEMPLATE.format("mug"): "The mug is red.",
    POSITION_TEMPLATE.format("mug"): "The mug stands on the left.",
    OBJECT_TEMPLATE.format("lamp"): "The lamp has dark grain.",
    POSITION_TEMPLATE.format("lamp"): "The lamp is in the centre.",
}
# Rug and book get the default, empty answer: nothing kept -> novelty 0.0.


def _captioner(answers: dict[str, str]) -> ScriptedBackend:
    rules = [(re.escape(PROMPTS.caption), CAPTION)]
    rules += [(f"^{re.escape(q)}$", a) for q, a in answers.items()]
    return ScriptedBackend(rules=rules, support={w: 0.9 for w in SUPPORTED}, base=0.25, name="scripted-vlm")


def _writer() -> ScriptedBackend:
    return ScriptedBackend(rules=[(r"Instructions:\n$", INSTRUCTIONS), (r"^Basic Context:\n", "FINAL")],
                           default="SUMMARY", vision=False, can_score=False, name="scripted-writer")


def _run(captioner: ScriptedBackend, **settings):
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=_writer(), tagger="lexicon", tau=0.1, wave_size=2,
                  constrain_instructions=False, **settings)
    return sc.caption(Image.new("RGB", (32, 24), (120, 60, 30)), id="scripted")


def _objects(r) -> list[str]:
    return [q.object for q in r.questions if q.kind == "object"]


def test_answers_that_repeat_known_content_stop_after_the_first_wave():
    r = _run(_captioner(REPEATING), budget="auto")
    b = r.adaptive_budget
    assert (b.stop, b.planned, b.asked, b.saved, b.max_objects) == ("novelty", 6, 2, 4, None)
    (wave,) = b.waves
    assert wave.objects == ["cat", "table"] and wave.words == ["red", "cat", "sleeps", "table", "wooden"]
    assert wave.new_words == [] and wave.novelty == 0.0
    assert _objects(r) == ["cat", "table"] and r.usage["answers"].calls == 4


def test_answers_that_keep_adding_stop_at_max():
    captioner = _captioner({**ADDING_1, **ADDING_2})
    r = _run(captioner, budget="auto:4")
    b = r.adaptive_budget
    assert (b.stop, b.planned, b.asked, b.saved, b.max_objects) == ("max", 4, 4, 0, 4)
    assert [w.objects for w in b.waves] == [["cat", "table"], ["mug", "lamp"]]
    assert [w.novelty for w in b.waves] == [0.8, 1.0]
    assert b.waves[0].new_words == ["orange", "stripes", "lies", "centre", "dark", "grain", "stands", "left"]
    assert b.waves[1].new_words == ["mug", "blue", "rests", "right", "lamp", "glows", "hangs", "overhead"]
    # waves are sequential: wave 2's first question comes after every call of wave 1
    users = [c.prompt.user for c in captioner.calls]
    first_wave2 = users.index(OBJECT_TEMPLATE.format("mug"))
    assert max(i for i, u in enumerate(users) if "table" in u) < first_wave2
    # all waves asked: the same questions, in the same order, as the fixed budget N = MAX
    fixed = _run(_captioner({**ADDING_1, **ADDING_2}), budget=4)
    assert fixed.adaptive_budget is None
    assert [q.model_dump() for q in r.questions] == [q.model_dump() for q in fixed.questions]


@pytest.mark.parametrize("threshold, stop, asked, novelties", [
    (0.3, "novelty", 4, [0.8, 0.25]),             # 0.25 < 0.3: stop after wave 2
    (0.25, "exhausted", 6, [0.8, 0.25, 0.0]),     # 0.25 is not below 0.25: wave 3 runs, then nothing is left
])
def test_the_threshold_decides_between_waves(threshold, stop, asked, novelties):
    r = _run(_captioner({**ADDING_1, **FADING_2}), budget="auto", novelty_threshold=threshold)
    b = r.adaptive_budget
    assert (b.stop, b.asked, b.saved) == (stop, asked, 6 - asked)
    assert [w.novelty for w in b.waves] == novelties
    assert len(_objects(r)) == asked
    assert r.fingerprint.settings["adaptive_budget"] is True
    assert r.fingerprint.settings["novelty_threshold"] == threshold and r.fingerprint.budget is None


def test_auto_budget_settings_parse_and_enter_the_fingerprint():
    assert (Settings(budget="auto:12").budget, Settings(budget="auto:12").adaptive_budget) == (12, True)
    assert (Settings(budget="auto").budget, Settings(budget="auto").adaptive_budget) == (None, True)
    assert Settings(budget="12").adaptive_budget is False
    with pytest.raises(ValueError, match="auto:MAX"):
        Settings(budget="auto:many")
    fixed, auto = (_run(_captioner(REPEATING), budget=b).fingerprint for b in (4, "auto:4"))
    assert fixed.budget == auto.budget == 4 and fixed.id != auto.id
