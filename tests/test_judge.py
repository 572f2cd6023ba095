"""The judge post-filter: five scores 1-3 with the image, constrained like the router; a caption under
a threshold stays in the output as ``rejected`` (resume skips it, exports and caption writers skip it)."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from scalecap import ScaleCap
from scalecap.images import ImageItem
from scalecap.io.exporters import export_llava
from scalecap.io.journal import read_records
from scalecap.judge import DIMENSIONS, REGEX, parse, rethreshold
from scalecap.pricing import Prices
from scalecap.prompts import load_preset
from scalecap.run import CaptionJob, run_job
from scalecap.testing.scripted import ScriptedBackend

PAPER = load_preset("paper")
FINAL = "A red cat sleeps on a wooden table."
ALL_TOP = "\n".join(f"{d}: 3 | fine" for d in DIMENSIONS)
ONE_TWO = ALL_TOP.replace("completeness: 3 | fine", "completeness: 2 | the table's legs are not described")


def _judge_reply(prompt, params):
    """All top for a red image, a 2 on completeness for any other."""
    return ALL_TOP if prompt.image.pil.getpixel((0, 0))[0] > 100 else ONE_TWO


def _backends():
    captioner = ScriptedBackend(rules=[(r"^You are judging", _judge_reply)], default="A red cat sleeps on a table.",
                                support={"cat": 0.9, "red": 0.9}, base=0.25, can_constrain=True)
    writer = ScriptedBackend(default=FINAL, vision=False, can_score=False, name="writer")
    return captioner, writer


def _pipeline(**settings):
    captioner, writer = _backends()
    return ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", budget=0,
                    judge_filter=True, **settings), captioner


def _png(path, colour):
    Image.new("RGB", (32, 24), colour).save(path)
    return path


def test_an_all_top_caption_is_kept_and_the_judge_saw_the_image_and_the_caption(tmp_path):
    sc, captioner = _pipeline()
    r = sc.caption(ImageItem.from_path(_png(tmp_path / "red.png", (200, 30, 30)), id="red"))
    assert r.status == "ok", r.error
    assert [(s.dimension, s.score, s.reason) for s in r.judge.scores] == [(d, 3, "fine") for d in DIMENSIONS]
    assert r.judge.kept and r.judge.below == [] and r.judge.thresholds == dict.fromkeys(DIMENSIONS, 3)
    (call,) = captioner.generations(r"^You are judging")
    assert call.with_image and call.params.regex == REGEX  # constrained, as the router is
    assert call.prompt.user == PAPER.judge.replace("{}", FINAL, 1)
    assert r.usage["judge"].calls == 1 and "judge" in r.timings
    assert "judge_prompt_hash" in r.fingerprint.settings and r.fingerprint.models["judge"] == r.fingerprint.models["captioner"]


def test_a_caption_with_a_two_is_rejected_with_its_verdicts(tmp_path):
    sc, _ = _pipeline()
    r = sc.caption(ImageItem.from_path(_png(tmp_path / "blue.png", (20, 30, 200)), id="blue"))
    assert r.status == "rejected" and r.error is None
    assert r.final_caption == FINAL  # kept in the record, only the status says no
    assert r.judge.below == ["completeness"] and not r.judge.kept
    assert r.judge.scores[1].model_dump() == {"dimension": "completeness", "score": 2,
                                              "reason": "the table's legs are not described"}
    # a lower threshold on that dimension keeps it, from the stored scores alone
    again = rethreshold(r, per_dimension={"completeness": 2})
    assert again.status == "ok" and again.judge.kept and again.judge.thresholds["completeness"] == 2
    assert rethreshold(again).status == "rejected"
    # configured the same way for a run
    sc2, _ = _pipeline(judge_thresholds="completeness=2")
    assert sc2.caption(ImageItem.from_path(tmp_path / "blue.png", id="blue")).status == "ok"


def test_rejected_items_are_counted_not_exported_and_not_redone(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    _png(images / "red.png", (200, 30, 30))
    _png(images / "blue.png", (20, 30, 200))
    out = tmp_path / "run.jsonl"
    sc, _ = _pipeline()
    s = run_job(sc, CaptionJob(inputs=[str(images)], output=out, format="sidecar",
                               prices=Prices.parse(["captioner=1:2"])))
    assert (s.ok, s.rejected, s.failed, s.exit_code) == (1, 1, 0, 0)
    assert (images / "red.txt").read_text() == FINAL + "\n" and not (images / "blue.txt").exists()
    assert {r.id: r.status for r in read_records(out)} == {"red.png": "ok", "blue.png": "rejected"}
    summary = json.loads(s.summary_path.read_text())
    assert summary["run"]["rejected"] == 1 and summary["output"]["by_status"] == {"ok": 1, "rejected": 1}
    judge = summary["run"]["usage"]["by_stage"]["judge"]  # priced as the model that judged (the captioner)
    assert judge["role"] == "captioner" and judge["calls"] == 2 and judge["cost_usd"] == pytest.approx(
        (judge["prompt_tokens"] * 1 + judge["completion_tokens"] * 2) / 1e6) and judge["cost_usd"] > 0
    report = export_llava(out, tmp_path / "llava.json")
    assert (report.exported, report.skipped_by_status) == (1, {"rejected": 1})
    assert [row["id"] for row in json.loads((tmp_path / "llava.json").read_text())] == ["red.png"]
    # resume: the rejected item is final, nothing is captioned again
    sc, captioner = _pipeline()
    s = run_job(sc, CaptionJob(inputs=[str(images)], output=out, format="sidecar"))
    assert (s.skipped, s.processed, s.exit_code) == (2, 0, 0) and captioner.calls == []


def test_an_unparsable_judge_reply_fails_the_item_instead_of_guessing(tmp_path):
    captioner = ScriptedBackend(rules=[(r"^You are judging", "Looks great to me!")], default="A red cat.",
                                support={"cat": 0.9}, can_constrain=False)
    writer = ScriptedBackend(default=FINAL, vision=False, can_score=False, name="writer")
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", budget=0, judge_filter=True)
    r = sc.caption(ImageItem.from_path(_png(tmp_path / "red.png", (200, 30, 30)), id="red"))
    assert (r.status, r.error_kind) == ("failed", "judge_unparsed") and r.final_caption == FINAL
    assert captioner.generations(r"^You are judging")[0].params.regex is None


def test_parse_reads_an_unconstrained_reply_and_refuses_a_missing_dimension():
    reply = "Here you go.\n" + ONE_TWO.replace("intent: 3", "Intent : 1")
    assert [s.score for s in parse(reply)] == [3, 2, 3, 1, 3]
    assert parse(ALL_TOP.replace("intent: 3 | fine\n", "")) is None


@pytest.mark.slow
def test_judge_on_a_tiny_real_model_gives_five_scores_in_range(tiny_models, sample_images):
    """The judge alone on the tiny real VLM (constrained decoding through xgrammar), with short
    reasons so that the random model's reply stays cheap; the record's verdict is what it parsed."""
    from scalecap._sync import run_sync
    from scalecap.backends import model_config_from, open_backend
    from scalecap.images import image_ref
    from scalecap.judge import Judge, regex
    from scalecap.stages import Trace

    backend = open_backend(model_config_from(str(tiny_models["qwen2vl"])))
    judge = Judge(backend, PAPER.judge, PAPER.system, 3, {}, max_tokens=160, seed=0, reason_chars=6)
    if not judge.constrained:
        pytest.fail("the transformers backend cannot constrain decoding here (xgrammar missing)")
    assert judge.params.regex == regex(6)
    import io

    small = io.BytesIO()  # few image tokens: the prompt's prefill is most of a tiny model's time
    Image.open(sample_images["chelsea"]).convert("RGB").resize((112, 84)).save(small, "PNG")
    image, _ = image_ref(small.getvalue())
    trace = Trace.new()
    verdict = run_sync(judge(trace, image, FINAL))
    assert [s.dimension for s in verdict.scores] == list(DIMENSIONS)
    assert all(1 <= s.score <= 3 and len(s.reason) <= 6 for s in verdict.scores)
    assert verdict.kept == all(s.score == 3 for s in verdict.scores)
    assert verdict.below == [s.dimension for s in verdict.scores if s.score < 3]
    assert trace.usage["judge"].calls == 1 and trace.usage["judge"].completion_tokens > 0
    run_sync(backend.aclose())
