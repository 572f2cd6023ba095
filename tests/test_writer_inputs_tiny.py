"""What reaches the writer, with tiny real models and a tau taken from their own scores.

Random weights give tiny contrasts (around 1e-4), so a fixed tau keeps or drops everything. Here
tau is the median of the first caption's sentence scores from a first run (the first caption and its
scores do not depend on tau), so that the second run keeps some sentences and drops others. The
writer is a real model wrapped in a recorder; its prompts are rebuilt from the record and compared.
"""

from __future__ import annotations

import re
import statistics

import pytest

from scalecap import ScaleCap
from scalecap.backends import model_config_from, open_backend
from scalecap.prompts import load_preset
from scalecap.testing.scripted import RecordingBackend, ScriptedBackend

pytestmark = pytest.mark.slow

PROMPTS = load_preset("paper")
CAPTION = ("A grey cat rests on a striped blanket. Two green plants stand by the window. "
           "Sunlight falls across the wooden floor. A small clock hangs on the wall. The room looks quiet and warm.")


def _answer(prompt, params) -> str:
    """Three sentences per question, each naming the object, so that no two questions share a sentence."""
    m = re.fullmatch(r"Describe more details about the (position of the )?(.+)\.", prompt.user)
    assert m, prompt.user
    o = m.group(2)
    if m.group(1):
        return f"The {o} is near the left edge. Above the {o} there is a shelf. Below the {o} lies a red rug."
    return f"The {o} has a smooth surface. The {o} shows a faded logo. Tiny scratches cover the {o}."


@pytest.fixture(scope="module")
def backends(tiny_models):
    return {"vlm": open_backend(model_config_from(str(tiny_models["qwen2vl"]))),
            "llm": open_backend(model_config_from(str(tiny_models["qwen2"])))}


def _golden(r) -> list[str]:
    return [s.text for s in r.sentences] if r.caption_fallback else [s.text for s in r.sentences if s.kept]


def _kept(q) -> str:
    return " ".join(s.text for s in q.answer_sentences if s.kept)


def _median_caption_tau(sc_kwargs, image) -> float:
    first = ScaleCap(**sc_kwargs(), tau=-1.0).caption(image)
    assert first.status == "ok", first.error
    scores = [s.score for s in first.sentences if s.score is not None]
    assert len(set(scores)) >= 2, f"need two distinct sentence scores to split on, got {scores}"
    return statistics.median(scores)


def _check_writer_prompts(r, writer: RecordingBackend, tau: float) -> None:
    """The writer's prompts are exactly what the record's kept material implies; nothing dropped leaks."""
    assert r.status == "ok", r.error
    for s in r.sentences + [s for q in r.questions for s in q.answer_sentences]:
        assert s.kept == (s.score is not None and s.score > tau), s
    golden = _golden(r)
    prompts = [c.prompt.user for c in writer.generations()]

    instructions = [p for p in prompts if p.endswith("\nInstructions:\n")]
    assert sorted(instructions) == sorted(PROMPTS.instructions.replace("{}", g, 1) for g in golden)

    object_prompts = [p for p in prompts if p.startswith("Descriptions:") and "Collect all details" in p]
    position_prompts = [p for p in prompts if p.startswith("Descriptions:") and "position information" in p]
    details = [f"Details about {q.object}: {_kept(q)}" for q in r.questions if q.kind == "object" and q.kept]
    positions = [f"Position about {q.object}: {_kept(q)}" for q in r.questions if q.kind == "position" and q.kept]
    # a summary with nothing to summarise is not requested at all (issue 13), and the record says so
    assert len(object_prompts) == (1 if details else 0) and len(position_prompts) == (1 if positions else 0)
    assert ("object_summary" in r.skipped) == (not details) and ("position_summary" in r.skipped) == (not positions)
    if details:
        lines = object_prompts[0].removeprefix("Descriptions:\n").split("\n\nCollect all details")[0].split("\n")
        assert sorted(lines) == sorted(golden + details)
        assert [line for line in lines if line in golden] == golden
    if positions:
        assert position_prompts[0] == PROMPTS.position_summary.replace("{}", "\n".join(positions), 1)

    head, mid, tail, rest = PROMPTS.final.split("{}")
    final = head + "\n".join(golden) + mid + (r.summaries.objects or "") + tail + (r.summaries.positions or "") + rest
    assert [p for p in prompts if p.startswith("Basic Context:")] == [final]
    assert len(prompts) == len(instructions) + len(object_prompts) + len(position_prompts) + 1

    writer_inputs = "\n".join(prompts)
    dropped = [s.text for s in r.sentences if not s.kept] if not r.caption_fallback else []
    dropped += [s.text for q in r.questions for s in q.answer_sentences if not s.kept]
    for text in dropped:
        assert text not in writer_inputs, f"dropped sentence {text!r} reached the writer"
    for q in r.questions:
        if q.kept and len(_kept(q)) < len(q.answer.strip()):
            assert q.answer.strip() not in writer_inputs, f"the raw answer of {q.instruction!r} reached the writer"


def test_real_scorer_and_writer_see_only_kept_sentences(backends, sample_images, tiny_settings):
    # Scripted captioner (so that the texts have several sentences), real tiny scorer and writer.
    captioner = ScriptedBackend(rules=[(re.escape(PROMPTS.caption), CAPTION)], default=_answer, can_score=False)

    def kwargs(**extra):
        return dict(captioner=captioner, scorer=backends["vlm"], writer=extra.get("writer", backends["llm"]),
                    budget=3, tagger="lexicon", **tiny_settings)

    # Which answers keep which sentences depends on the random weights, so the test looks, over the
    # four photos in order, for the first run in which every kind of decision occurs, and fails if none does.
    for name in ("chelsea", "coffee", "astronaut", "rocket"):
        tau = _median_caption_tau(kwargs, sample_images[name])
        writer = RecordingBackend(backends["llm"])
        r = ScaleCap(**kwargs(writer=writer), tau=tau).caption(sample_images[name])
        assert r.status == "ok", r.error
        kept = [s.kept for s in r.sentences]
        # Answer-level premises (a kept answer that lost a sentence) are not reachable with the tiny
        # writer since it may rightly ask a single question (issue 13); test_writer_inputs.py covers them.
        premises = any(kept) and not all(kept) and not r.caption_fallback and bool(r.questions)
        if premises:
            break
    else:
        pytest.fail("no photo gave both kept and dropped caption sentences and a question")
    _check_writer_prompts(r, writer, tau)


def test_all_real_models_writer_sees_only_kept_sentences(backends, sample_images, tiny_settings):
    # Every role a real tiny model; the coffee photo's first caption has two sentences, one on each side of tau.
    def kwargs(**extra):
        return dict(captioner=backends["vlm"], scorer=backends["vlm"], writer=extra.get("writer", backends["llm"]),
                    budget=2, tagger="lexicon", **tiny_settings)

    image = sample_images["coffee"]
    tau = _median_caption_tau(kwargs, image)
    writer = RecordingBackend(backends["llm"])
    r = ScaleCap(**kwargs(writer=writer), tau=tau).caption(image)
    kept = [s.kept for s in r.sentences]
    assert any(kept) and not all(kept) and not r.caption_fallback
    _check_writer_prompts(r, writer, tau)
