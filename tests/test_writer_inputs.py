"""What reaches the writer: only golden sentences and the kept sentences of kept answers.

This is the behaviour that defines ScaleCap (METHOD.md section 3, steps 2-6), so these tests read the
writer's actual prompts (every call is recorded by the scripted backend) rather than the record the
pipeline writes about itself. The scripted captioner/scorer decides, word by word, what the image
supports; the writer answers each prompt kind with a fixed text, so the expected prompts can be
written out in full.
"""

from __future__ import annotations

import re

import pytest
from PIL import Image

from scalecap import ScaleCap
from scalecap.prompts import load_preset
from scalecap.testing.scripted import ScriptedBackend
from scalecap.text.instructions import OBJECT_TEMPLATE, POSITION_TEMPLATE

PROMPTS = load_preset("paper")

CAPTION = ("A red cat sleeps on a wooden table. A purple dragon flies overhead. "
           "A blue mug stands beside the cat.")
GOLDEN = ["A red cat sleeps on a wooden table.", "A blue mug stands beside the cat."]
DROPPED_SENTENCE = "A purple dragon flies overhead."

# Answers: sentences built from supported words are kept, the others dropped.
ANSWERS = {
    OBJECT_TEMPLATE.format("cat"): "The cat has orange stripes. It wears a golden crown.",
    POSITION_TEMPLATE.format("cat"): "The cat lies in the centre.",
    OBJECT_TEMPLATE.format("table"): "The table has dark grain.",
    POSITION_TEMPLATE.format("table"): "A ghost floats nearby.",
    OBJECT_TEMPLATE.format("mug"): "A tiny elf hides inside.",
    POSITION_TEMPLATE.format("mug"): "The mug rests on the left. Seven unicorns gallop around.",
}
# Every sentence the rating must drop, and every answer that loses at least one sentence.
DROPPED_ANSWER_SENTENCES = ["It wears a golden crown.", "A ghost floats nearby.", "A tiny elf hides inside.",
                            "Seven unicorns gallop around."]
SUPPORTED = {"red", "cat", "sleeps", "wooden", "table", "blue", "mug", "stands", "beside", "orange",
             "stripes", "has", "lies", "centre", "dark", "grain", "rests", "left"}

INSTRUCTIONS = {
    GOLDEN[0]: "Describe more details about the cat.\nDescribe more details about the table.\n",
    GOLDEN[1]: "Describe more details about the mug.\nDescribe more details about the cat.\n",
    DROPPED_SENTENCE: "Describe more details about the dragon.\n",
}
OBJECT_SUMMARY, POSITION_SUMMARY, FINAL = "OBJECT-SUMMARY-7", "POSITION-SUMMARY-7", "FINAL-CAPTION-7"


def _captioner(caption: str = CAPTION, supported: set[str] = SUPPORTED) -> ScriptedBackend:
    rules = [(re.escape(PROMPTS.caption), caption)]
    rules += [(f"^{re.escape(instruction)}$", answer) for instruction, answer in ANSWERS.items()]
    return ScriptedBackend(rules=rules, support={w: 0.9 for w in supported}, base=0.25, name="scripted-vlm")


def _writer() -> ScriptedBackend:
    rules = [(re.escape(f"Sentence:\n{sentence}\nInstructions:\n") + "$", reply) for sentence, reply in INSTRUCTIONS.items()]
    rules += [(r"^Descriptions:\n[\s\S]*Collect all details", OBJECT_SUMMARY),
              (r"^Descriptions:\n[\s\S]*Extract and abstract only the position", POSITION_SUMMARY),
              (r"^Basic Context:\n", FINAL)]
    return ScriptedBackend(rules=rules, vision=False, can_score=False, name="scripted-writer")


def _image() -> Image.Image:
    return Image.new("RGB", (32, 24), (120, 60, 30))


def _run(captioner: ScriptedBackend, writer: ScriptedBackend, **settings):
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", tau=0.1, **settings)
    return sc.caption(_image(), id="scripted")


def _writer_prompts(writer: ScriptedBackend) -> list[str]:
    prompts = [c.prompt.user for c in writer.generations()]
    assert prompts, "the writer was never called"
    return prompts


def _instruction_sentence(prompt: str) -> str:
    head, sep, tail = prompt.rpartition("Sentence:\n")
    assert sep and tail.endswith("\nInstructions:\n"), prompt[-200:]
    return tail.removesuffix("\nInstructions:\n")


def test_rating_of_the_scripted_scene():
    # The premise of the tests below: the rating keeps and drops exactly what the script intends.
    captioner, writer = _captioner(), _writer()
    r = _run(captioner, writer)
    assert r.status == "ok", r.error
    assert [(s.text, s.kept) for s in r.sentences] == [(GOLDEN[0], True), (DROPPED_SENTENCE, False), (GOLDEN[1], True)]
    assert r.sentences[0].score == pytest.approx(0.65) and r.sentences[1].score == pytest.approx(0.0)
    assert not r.caption_fallback
    kept = {(q.object, q.kind): q.kept for q in r.questions}
    assert kept == {("cat", "object"): True, ("cat", "position"): True, ("table", "object"): True,
                    ("table", "position"): False, ("mug", "object"): False, ("mug", "position"): True}
    dropped = [s.text for q in r.questions for s in q.answer_sentences if not s.kept]
    assert sorted(dropped) == sorted(DROPPED_ANSWER_SENTENCES)
    assert r.final_caption == FINAL
    assert r.summaries.objects == OBJECT_SUMMARY and r.summaries.positions == POSITION_SUMMARY


def test_only_golden_sentences_become_instruction_prompts():
    captioner, writer = _captioner(), _writer()
    _run(captioner, writer)
    asked = [_instruction_sentence(p) for p in _writer_prompts(writer) if p.endswith("\nInstructions:\n")]
    assert sorted(asked) == sorted(GOLDEN)
    # and the captioner is asked about the objects of golden sentences only, de-duplicated, in order
    questions = [c.prompt.user for c in captioner.generations(r"^Describe more details")]
    assert questions == [t.format(o) for o in ("cat", "table", "mug") for t in (OBJECT_TEMPLATE, POSITION_TEMPLATE)]


def test_dropped_sentences_never_reach_any_writer_prompt():
    captioner, writer = _captioner(), _writer()
    _run(captioner, writer)
    prompts = _writer_prompts(writer)
    for dropped in [DROPPED_SENTENCE, *DROPPED_ANSWER_SENTENCES]:
        for prompt in prompts:
            assert dropped not in prompt, f"dropped sentence {dropped!r} reached the writer:\n{prompt}"
    for word in ("dragon", "crown", "ghost", "elf", "unicorns"):
        assert not any(word in p for p in prompts), word
    # The raw text of an answer that lost a sentence is never what the writer sees.
    for instruction, answer in ANSWERS.items():
        if any(d in answer for d in DROPPED_ANSWER_SENTENCES):
            assert not any(answer in p for p in prompts), answer


def test_summary_and_final_prompts_hold_exactly_the_kept_material():
    captioner, writer = _captioner(), _writer()
    _run(captioner, writer)
    prompts = _writer_prompts(writer)
    object_lines = [GOLDEN[0],
                    "Details about cat: The cat has orange stripes.",
                    "Details about table: The table has dark grain.",
                    GOLDEN[1]]  # the mug's only answer sentence was dropped, and the mug's details with it
    position_lines = ["Position about cat: The cat lies in the centre.",
                      "Position about mug: The mug rests on the left."]
    expected_object = PROMPTS.object_summary.replace("{}", "\n".join(object_lines), 1)
    expected_position = PROMPTS.position_summary.replace("{}", "\n".join(position_lines), 1)
    head, mid, tail, rest = PROMPTS.final.split("{}")
    expected_final = head + "\n".join(GOLDEN) + mid + OBJECT_SUMMARY + tail + POSITION_SUMMARY + rest
    summaries = [p for p in prompts if p.startswith("Descriptions:")]
    assert sorted(summaries) == sorted([expected_object, expected_position])
    assert [p for p in prompts if p.startswith("Basic Context:")] == [expected_final]
    # 2 instruction prompts + 2 summaries + 1 final: nothing else went to the writer
    assert len(prompts) == 5


def test_fallback_sends_the_whole_caption_and_the_record_says_so():
    # The image supports no word of the caption: nothing passes rating, so the whole caption stands in.
    captioner, writer = _captioner(supported={"orange", "stripes", "lies", "centre", "rests", "left", "has", "dark",
                                              "grain"}), _writer()
    r = _run(captioner, writer)
    assert r.status == "ok", r.error
    assert r.caption_fallback is True and not any(s.kept for s in r.sentences)
    assert any("no sentence of the first caption passed rating" in n for n in r.notes)
    whole = [GOLDEN[0], DROPPED_SENTENCE, GOLDEN[1]]
    prompts = _writer_prompts(writer)
    asked = [_instruction_sentence(p) for p in prompts if p.endswith("\nInstructions:\n")]
    assert sorted(asked) == sorted(whole)
    head, mid, _, _ = PROMPTS.final.split("{}")
    finals = [p for p in prompts if p.startswith("Basic Context:")]
    assert len(finals) == 1 and finals[0].startswith(head + "\n".join(whole) + mid)
    # answers are still rated: the dragon's answer was never scripted, so it is empty and dropped
    assert [q.kept for q in r.questions if q.object == "dragon"] == [False, False]


def test_an_answer_with_nothing_kept_drops_its_object_from_the_summaries():
    # All answer sentences unsupported, caption fully supported: nothing is left to summarise, so no
    # summary is requested (issue 13) and the golden sentences reach the final prompt as its context.
    supported = {"red", "sleeps", "wooden", "blue", "stands"}  # not the object names the answers repeat
    captioner, writer = _captioner(supported=supported), _writer()
    r = _run(captioner, writer)
    assert all(s.kept for s in r.sentences if s.text != DROPPED_SENTENCE)
    assert r.questions and not any(q.kept for q in r.questions)
    prompts = _writer_prompts(writer)
    summary_heads = (PROMPTS.object_summary.split("{}")[0], PROMPTS.position_summary.split("{}")[0])
    assert not any(p.startswith(summary_heads) for p in prompts)
    assert set(r.skipped) >= {"object_summary", "position_summary"}
    assert r.summaries.objects is None and r.summaries.positions is None
    assert any("\n".join(GOLDEN) in p for p in prompts if p.startswith(PROMPTS.final.split("{}")[0]))
    assert not any("Details about" in p or "Position about" in p for p in prompts)


# ---------------------------------------------------------------------------------------- question families
# A domain's question families (domains.py): asked about the whole image beside the object questions,
# rated the same way; only their kept sentences reach the writer (in the object summary's input).
DOC = "infographic_document"
FAMILY_ANSWERS = {
    "text_content": 'The page reads "Hello" at the top. A purple dragon signs it.',
    "layout": "The page has two columns.",
    "reading_order": "Seven unicorns gallop around.",  # nothing kept: the family is dropped
}
FAMILY_SUPPORTED = SUPPORTED | {"page", "reads", "hello", "top", "two", "columns"}


def _family_questions(domain: str = DOC) -> dict[str, str]:
    from scalecap.domains import load_domains

    d = load_domains()[domain]
    return {name: (d.folder / f"family_{name}.txt").read_text().strip() for name in d.families}


def _doc_captioner() -> ScriptedBackend:
    from scalecap.domains import load_domains

    doc_caption = (load_domains()[DOC].folder / "caption.txt").read_text()
    rules = [(f"^{re.escape(doc_caption)}$", CAPTION)]
    rules += [(f"^{re.escape(instruction)}$", answer) for instruction, answer in ANSWERS.items()]
    rules += [(f"^{re.escape(q)}$", FAMILY_ANSWERS[name]) for name, q in _family_questions().items()]
    return ScriptedBackend(rules=rules, support={w: 0.9 for w in FAMILY_SUPPORTED}, base=0.25, name="scripted-vlm")


def test_a_document_image_gets_its_families_and_only_their_kept_sentences_reach_the_writer():
    captioner, writer = _doc_captioner(), _writer()
    r = _run(captioner, writer, domain=DOC)
    assert r.status == "ok", r.error
    questions = _family_questions()
    assert list(questions) == ["text_content", "layout", "reading_order"]
    asked = [c.prompt.user for c in captioner.generations() if c.prompt.user in questions.values()]
    assert sorted(asked) == sorted(questions.values())  # each family once, with the image
    assert all(c.with_image for c in captioner.generations() if c.prompt.user in questions.values())
    families = [q for q in r.questions if q.kind == "family"]
    assert [(q.object, q.instruction, q.kept) for q in families] == [
        (name, questions[name], name != "reading_order") for name in questions]
    # rated like an object answer: under the family's question, with and without the image
    rated = [c for c in captioner.calls if c.kind == "score" and c.prompt.user == questions["layout"]]
    assert sorted(c.with_image for c in rated) == [False, True]
    prompts = _writer_prompts(writer)
    object_lines = [GOLDEN[0], "Details about cat: The cat has orange stripes.",
                    "Details about table: The table has dark grain.", GOLDEN[1],
                    'Details about the text content: The page reads "Hello" at the top.',
                    "Details about the layout: The page has two columns."]
    assert PROMPTS.object_summary.replace("{}", "\n".join(object_lines), 1) in prompts
    for dropped in ["A purple dragon signs it.", "Seven unicorns gallop around.", "reading order"]:
        assert not any(dropped in p for p in prompts), dropped
    assert not any(FAMILY_ANSWERS["text_content"] in p for p in prompts)
    # families do not count against N: N = 1 still asks all three (and one object with its twin)
    captioner = _doc_captioner()
    r = _run(captioner, _writer(), domain=DOC, budget=1)
    assert [q.kind for q in r.questions].count("family") == 3 and [q.kind for q in r.questions].count("object") == 1
    # N = 0: no question at all
    r = _run(_doc_captioner(), _writer(), domain=DOC, budget=0)
    assert r.questions == []


def test_families_alone_feed_the_object_summary_when_no_object_answer_survives():
    captioner, writer = _doc_captioner(), _writer()
    captioner.support = {w: 0.9 for w in ("red", "sleeps", "wooden", "blue", "stands", "page", "two", "columns")}
    r = _run(captioner, writer, domain=DOC)
    assert not any(q.kept for q in r.questions if q.kind != "family")
    summaries = [p for p in _writer_prompts(writer) if p.startswith("Descriptions:")]
    lines = GOLDEN + ['Details about the text content: The page reads "Hello" at the top.',
                      "Details about the layout: The page has two columns."]
    assert summaries == [PROMPTS.object_summary.replace("{}", "\n".join(lines), 1)]


def test_natural_images_get_no_family_question():
    for domain in (None, "natural"):
        captioner, writer = _captioner(), _writer()
        r = _run(captioner, writer, **({"domain": domain} if domain else {}))
        assert r.status == "ok", r.error
        assert {q.kind for q in r.questions} == {"object", "position"}
        asked = [c.prompt.user for c in captioner.generations()]
        assert asked[1:] and all(p.startswith("Describe more details about the") for p in asked[1:])
