"""Self-correction (issue 15): the correction turn is rated like everything else.

A scripted captioner decides word by word what the image supports, so the test knows which corrected
sentences must survive. The writer's final caption holds a hallucinated sentence (the dragon); the
correction removes it, adds one supported sentence and invents one the image does not support (the
crown): the removal must stay, the invention must never reach the corrected caption, and the diff
must say exactly that.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from PIL import Image

import scalecap.prompts
from scalecap import ScaleCap
from scalecap.correction import kept_text, sentence_diff
from scalecap.prompts import load_preset
from scalecap.records import ScoredSentence
from scalecap.testing.scripted import ScriptedBackend

PROMPTS = load_preset("paper")
PROMPTS_DIR = Path(scalecap.prompts.__file__).parent / "paper"

FIRST = "A red cat sleeps on a wooden table. A blue mug stands beside the cat."
FINAL = "A red cat sleeps on a wooden table. A purple dragon flies overhead. A blue mug stands beside the cat."
CORRECTED = ("A red cat sleeps on a wooden table. The cat has orange stripes. A golden crown glitters nearby. "
             "A blue mug stands beside the cat.")
# Scored with the lexicon tagger: every content word of the crown sentence (golden, crown, glitters,
# nearby) has p = p' = 0.25, so its score is 0 < tau = 0.1; each other sentence has a word at
# p = 0.9, score 0.65 > tau.
SUPPORTED = {"red", "cat", "sleeps", "wooden", "table", "blue", "mug", "stands", "beside", "orange", "stripes"}


def _captioner(correction: str = CORRECTED) -> ScriptedBackend:
    rules = [(re.escape(PROMPTS.caption), FIRST), (re.escape(PROMPTS.correct), correction)]
    return ScriptedBackend(rules=rules, support={w: 0.9 for w in SUPPORTED}, base=0.25, name="scripted-vlm")


def _writer(final: str = FINAL) -> ScriptedBackend:
    return ScriptedBackend(rules=[(r"^Basic Context:\n", final)], default="", vision=False, can_score=False,
                           name="scripted-writer")


def _run(captioner: ScriptedBackend, writer: ScriptedBackend | None = None, **settings):
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer or _writer(), tagger="lexicon", tau=0.1,
                  budget=0, **settings)
    return sc.caption(Image.new("RGB", (32, 24), (120, 60, 30)), id="scripted")


def test_an_unsupported_correction_is_dropped_and_a_removal_stays():
    captioner = _captioner()
    r = _run(captioner, self_correct=True)
    assert r.status == "ok", r.error
    assert r.first_caption == FIRST and r.final_caption == FINAL
    assert r.corrected_caption == ("A red cat sleeps on a wooden table. The cat has orange stripes. "
                                   "A blue mug stands beside the cat.")
    assert r.correction.diff.model_dump() == {
        "added": ["The cat has orange stripes."],
        "removed": ["A purple dragon flies overhead."],
        "kept": ["A red cat sleeps on a wooden table.", "A blue mug stands beside the cat."],
        "rejected": ["A golden crown glitters nearby."],
    }
    (round_,) = r.correction.rounds
    assert round_.input == FINAL and round_.output == CORRECTED and round_.accepted
    assert [(s.text, s.kept) for s in round_.sentences] == [
        ("A red cat sleeps on a wooden table.", True), ("The cat has orange stripes.", True),
        ("A golden crown glitters nearby.", False), ("A blue mug stands beside the cat.", True)]
    assert [s.score for s in round_.sentences] == pytest.approx([0.65, 0.65, 0.0, 0.65])

    # the correction turn is the same conversation: image, P_cap, the final caption as the reply
    (turn,) = captioner.generations(re.escape(PROMPTS.correct))
    assert turn.prompt.image is not None and turn.prompt.history == ((PROMPTS.caption, FINAL),)
    assert turn.params.temperature == 0.0 and turn.params.max_tokens == 1024
    # and the reply was rated like a first caption: under P_cap, with and without the image
    scored = [c for c in captioner.calls if c.kind == "score" and c.text == CORRECTED]
    assert sorted(c.with_image for c in scored) == [False, True]
    assert all(c.prompt.user == PROMPTS.caption and c.prompt.history == () for c in scored)
    assert r.usage["correction"].calls == 1 and r.usage["correction_rating"].calls == 2
    assert r.fingerprint.settings["self_correct"] is True and r.fingerprint.settings["correction_rounds"] == 1


def test_a_correction_with_nothing_supported_changes_nothing():
    r = _run(_captioner("A golden crown glitters nearby. Seven unicorns gallop around."), self_correct=True)
    (round_,) = r.correction.rounds
    assert not round_.accepted and round_.caption == FINAL and r.corrected_caption == FINAL
    assert r.correction.diff.added == [] and r.correction.diff.removed == []
    assert r.correction.diff.rejected == ["A golden crown glitters nearby.", "Seven unicorns gallop around."]


def test_rounds_chain_and_each_round_re_checks_the_last_result():
    captioner = _captioner()
    r = _run(captioner, self_correct=True, correction_rounds=2)
    first, second = r.correction.rounds
    assert second.input == first.caption == r.corrected_caption
    turns = captioner.generations(re.escape(PROMPTS.correct))
    assert [t.prompt.history for t in turns] == [((PROMPTS.caption, FINAL),), ((PROMPTS.caption, first.caption),)]
    # round 2 got the same reply: nothing new to add or remove, the crown rejected again
    assert second.diff.added == [] and second.diff.removed == [] and len(second.diff.kept) == 3
    # the overall diff is final -> corrected, the crown listed once
    assert r.correction.diff.added == ["The cat has orange stripes."]
    assert r.correction.diff.removed == ["A purple dragon flies overhead."]
    assert r.correction.diff.rejected == ["A golden crown glitters nearby."]
    assert r.usage["correction"].calls == 2 and r.usage["correction_rating"].calls == 4


def test_off_by_default_and_an_empty_final_caption_is_not_corrected():
    captioner = _captioner()
    r = _run(captioner)
    assert r.correction is None and r.corrected_caption is None and "correction" not in r.usage
    assert captioner.generations(re.escape(PROMPTS.correct)) == []
    r = _run(_captioner(), _writer(final=""), self_correct=True)
    assert r.correction is None and "final caption is empty" in r.skipped["correction"]


def test_a_preset_without_the_correction_prompt_is_refused(tmp_path):
    preset = tmp_path / "mine"
    preset.mkdir()
    for name in ("system", "caption", "instructions", "object_summary", "position_summary", "final"):
        shutil.copy(PROMPTS_DIR / f"{name}.txt", preset / f"{name}.txt")
    assert load_preset(str(preset)).correct is None
    ScaleCap(captioner=_captioner(), writer=_writer(), preset=str(preset), tagger="lexicon")  # fine without it
    with pytest.raises(ValueError, match="lacks correct.txt"):
        ScaleCap(captioner=_captioner(), writer=_writer(), preset=str(preset), tagger="lexicon", self_correct=True)


def test_kept_text_keeps_the_separators_of_the_kept_sentences():
    text = "- A cat.\n- A dragon.\n- A mug."
    sentences = [ScoredSentence(text=t, start=text.index(t), end=text.index(t) + len(t), score=None, kept=k)
                 for t, k in (("- A cat.", True), ("- A dragon.", False), ("- A mug.", True))]
    assert kept_text(text, sentences) == "- A cat.\n- A mug."
    diff = sentence_diff(["A  cat sleeps.", "A dog."], ["a cat sleeps.", "A mug."])
    assert (diff.added, diff.removed, diff.kept) == (["A mug."], ["A dog."], ["a cat sleeps."])



def test_servers_get_the_correction_turn_as_one_conversation():
    """What the HTTP and in-process vLLM backends send: the image in the first user turn only."""
    from scalecap.backends.base import ChatPrompt, chat_messages

    image = object()  # chat_messages never looks inside the image part
    prompt = ChatPrompt(user="check it", system="sys", image=image, history=(("describe", "A cat."),))
    part = {"type": "image_url", "image_url": {"url": "SLOT"}}
    assert chat_messages(prompt, part) == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [part, {"type": "text", "text": "describe"}]},
        {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "check it"}]
    assert chat_messages(prompt.without_image(), None, answer="A mug.")[1:] == [
        {"role": "user", "content": "describe"}, {"role": "assistant", "content": "A cat."},
        {"role": "user", "content": "check it"}, {"role": "assistant", "content": "A mug."}]
    # without history, exactly the single-turn messages of before
    assert chat_messages(ChatPrompt(user="q", image=image), part) == [
        {"role": "user", "content": [part, {"type": "text", "text": "q"}]}]
