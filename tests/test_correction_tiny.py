"""Self-correction and the adaptive budget end to end on tiny real models, through the CLI.

Random models write random text, so the numbers cannot be predicted; what must hold is the shape:
the correction turn ran once in the captioner's real chat template (image first, the final caption
as the assistant's turn), its sentences were rated, the corrected caption is exactly the kept ones,
and the waves add up to the questions asked, at most MAX.
"""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scalecap.backends import model_config_from, open_backend
from scalecap.backends.base import ChatPrompt
from scalecap.cli import app
from scalecap.correction import kept_text
from scalecap.prompts import load_preset
from scalecap.records import CaptionResult

pytestmark = pytest.mark.slow
PROMPTS = load_preset("paper")


def test_self_correct_and_auto_budget_through_the_cli(tmp_path, sample_images, tiny_models, tiny_settings):
    # the tiny VLM plays every role: the tiny text LLM writes empty final captions for these photos
    vlm = str(tiny_models["qwen2vl"])
    out = tmp_path / "out.jsonl"
    sets = [a for k, v in {**tiny_settings, "max_tokens_correction": 32, "wave_size": 2}.items()
            for a in ("--set", f"{k}={v}")]
    res = CliRunner().invoke(app, ["caption", str(sample_images["chelsea"]), str(sample_images["coffee"]),
                                   "-o", str(out), "--model", vlm,
                                   "--tau", "-1", "--self-correct", "--budget", "auto:4", "--no-progress", *sets])
    assert res.exit_code == 0, res.output
    records = [CaptionResult.model_validate(json.loads(line)) for line in out.read_text().splitlines()]
    assert sorted(r.id for r in records) == ["chelsea.png", "coffee.png"]
    for r in records:
        assert r.status == "ok", r.error
        fs = r.fingerprint.settings
        assert fs["self_correct"] is True and fs["adaptive_budget"] is True and r.fingerprint.budget == 4
        # the adaptive budget: waves of at most 2 objects, adding up to what was asked, never past MAX
        b = r.adaptive_budget
        assert b.max_objects == 4 and b.wave_size == 2 and b.asked <= 4 and b.saved == b.planned - b.asked
        assert [len(w.objects) for w in b.waves] and all(len(w.objects) <= 2 for w in b.waves)
        assert [o for w in b.waves for o in w.objects] == [q.object for q in r.questions if q.kind == "object"]
        assert b.stop in ("novelty", "max", "exhausted") and (b.stop != "max" or b.asked == 4)
        # the correction: one round on the final caption, rated, the corrected caption its kept sentences
        if not r.final_caption:  # a random writer may write nothing: then there is nothing to re-check
            assert r.correction is None and "correction" in r.skipped and "correction" not in r.usage
            continue
        (rnd,) = r.correction.rounds
        assert rnd.input == r.final_caption and rnd.sentences
        for s in rnd.sentences:
            assert rnd.output[s.start:s.end] == s.text
        assert rnd.accepted == any(s.kept for s in rnd.sentences)
        expected = kept_text(rnd.output, rnd.sentences) if rnd.accepted else r.final_caption
        assert r.corrected_caption == rnd.caption == expected
        assert r.usage["correction"].calls == 1 and r.usage["correction_rating"].calls == 2
        assert r.usage["correction"].completion_tokens > 0
    assert any(r.correction for r in records), "no record exercised the correction"

def test_the_correction_turn_renders_as_one_conversation(tiny_models, sample_images):
    """The real chat templates: one image, in the first user turn; the caption as the assistant's reply."""
    from scalecap.images import image_ref

    vlm = open_backend(model_config_from(str(tiny_models["qwen2vl"])))
    image, _ = image_ref(sample_images["chelsea"].read_bytes(), 64_000_000)
    prompt = ChatPrompt(user=PROMPTS.correct, system=PROMPTS.system, image=image,
                        history=((PROMPTS.caption, "A CAT ON A MAT."),))
    text = vlm._chat_text(prompt)
    assert text.count("<|vision_start|>") == 1
    assert text.index("<|vision_start|>") < text.index(PROMPTS.caption) < text.index("A CAT ON A MAT.") \
        < text.index(PROMPTS.correct)
    assert text.count("<|im_start|>assistant") == 2 and text.endswith("<|im_start|>assistant\n")
    assert vlm._chat_text(prompt.without_image()).count("<|vision_start|>") == 0
    writer = open_backend(model_config_from(str(tiny_models["qwen2"])))
    text = writer._chat_text(ChatPrompt(user="second", history=(("first", "reply"),)))
    assert text.index("first") < text.index("reply") < text.index("second")
