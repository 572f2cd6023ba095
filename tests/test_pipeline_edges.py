"""Issue 13: the method at its edges, on the scripted backend (the real protocol, chosen outputs)."""

from scalecap import ScaleCap
from scalecap.testing.scripted import ScriptedBackend



def test_empty_first_caption_is_a_failed_record(sample_images):
    model = ScriptedBackend(default="   ")
    r = ScaleCap(model=model, tau=-1.0).caption(sample_images["coffee"])
    assert r.status == "failed" and r.error_kind == "empty_caption"
    assert not [c for c in model.generations() if "Descriptions" in c.prompt.user or "Basic Context" in c.prompt.user]


def test_budget_zero_skips_the_summaries_and_says_why(sample_images):
    model = ScriptedBackend(rules=[(r"Describe this image|image", "A red car is parked. A man walks.")],
                            default="A red car is parked.")
    r = ScaleCap(model=model, tau=-1.0, budget=0).caption(sample_images["coffee"])
    assert r.status == "ok", r.error
    assert "position_summary" in r.skipped and "object_summary" in r.skipped
    assert "position_summary" not in r.usage and "object_summary" not in r.usage
    assert r.summaries.positions is None
    assert r.usage["final"].calls == 1


def test_scorer_defaults_to_the_captioner():
    cap, writer = ScriptedBackend(name="cap"), ScriptedBackend(name="writer")
    sc = ScaleCap(model=writer, captioner=cap)
    assert sc.scorer is cap and sc.fingerprint.settings["scorer_is_captioner"] is True
    other = ScaleCap(captioner=cap, scorer=writer, writer=writer)
    assert other.fingerprint.settings["scorer_is_captioner"] is False


def test_context_window_setting_turns_the_guard_on():
    writer = ScriptedBackend(context_window=None)
    assert ScaleCap(model=writer).guard.window is None
    sc = ScaleCap(model=writer, context_window=2048)
    assert sc.guard.window == 2048 and sc.fingerprint.settings["context_window"] == 2048


def test_fallback_record_has_golden_sentences(sample_images):
    model = ScriptedBackend(default="A red car is parked. A man walks.")
    r = ScaleCap(model=model, tau=10.0, budget=0).caption(sample_images["coffee"])
    assert r.caption_fallback and r.golden_sentences == ["A red car is parked.", "A man walks."]


def test_config_file_scorer_defaults_to_the_captioner():
    from scalecap.config import RunConfig

    cfg = RunConfig.from_mapping({"models": {"a": {"model": "A"}, "b": {"model": "B"}},
                                  "roles": {"model": "a", "captioner": "b"}})
    assert cfg.scorer.model == "B" and cfg.writer.model == "A"
