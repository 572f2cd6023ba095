"""The whole pipeline on tiny real models: budget, determinism, degenerate writers, two families."""

import pytest

from scalecap import ScaleCap
from scalecap.backends import model_config_from, open_backend
from scalecap.testing.scripted import RecordingBackend
from scalecap.text.instructions import OBJECT_TEMPLATE, POSITION_TEMPLATE

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def roles(tiny_models):
    vlm = str(tiny_models["qwen2vl"])
    return dict(captioner=vlm, scorer=vlm, writer=str(tiny_models["qwen2"]))


def objects_of(result):
    return [q.object for q in result.questions if q.kind == "object"]


def assert_final_written(r):
    """The final stage ran once and wrote tokens; an empty (all-whitespace) caption is said in the notes."""
    assert r.usage["final"].calls == 1 and r.usage["final"].completion_tokens > 0
    assert isinstance(r.final_caption, str) and r.final_caption.strip() == r.final_caption
    assert ("the writer returned an empty final caption" in r.notes) == (r.final_caption == "")


def test_full_trace_on_a_real_photo(roles, sample_images, tiny_settings):
    # tau=-1 keeps every sentence, so every stage downstream of rating has work to do
    writer = RecordingBackend(open_backend(model_config_from(roles["writer"])))
    r = ScaleCap(**dict(roles, writer=writer), budget=2, tau=-1.0, **tiny_settings).caption(sample_images["chelsea"],
                                                                                           id="chelsea")
    assert r.status == "ok" and r.error is None
    assert r.first_caption
    # summaries and final caption are the writer's replies to exactly those prompts
    reply = {kind: [c.reply.text.strip() for c in writer.generations(pattern)]
             for kind, pattern in (("objects", "Collect all details"), ("positions", "position information"),
                                   ("final", "^Basic Context:"))}
    assert reply == {"objects": [r.summaries.objects], "positions": [r.summaries.positions], "final": [r.final_caption]}
    assert r.sentences and all(s.kept for s in r.sentences) and not r.caption_fallback
    for s in r.sentences:
        assert r.first_caption[s.start:s.end] == s.text
    objs = objects_of(r)
    assert 1 <= len(objs) <= 2
    assert [q.instruction for q in r.questions] == [t.format(o) for o in objs for t in (OBJECT_TEMPLATE, POSITION_TEMPLATE)]
    assert set(r.usage) >= {"caption", "caption_rating", "instructions", "answers", "answer_rating",
                            "object_summary", "position_summary", "final"}
    assert r.usage["caption_rating"].calls == 2 and r.usage["answer_rating"].calls == 2 * len(r.questions)
    fp = r.fingerprint
    assert fp.models["captioner"]["model"] == roles["captioner"] and fp.budget == 2 and fp.tau == -1.0
    assert fp.tagger.startswith("spacy:") and fp.settings["constrained_instructions"] is True
    assert "total" in r.timings and "caption" in r.timings


@pytest.mark.parametrize("budget", [0, 1, 3])
def test_budget_caps_object_instructions(roles, sample_images, tiny_settings, budget):
    common = dict(tau=-1.0, **tiny_settings)
    everything = ScaleCap(**roles, **common).caption(sample_images["coffee"])
    available = len(objects_of(everything))
    assert available >= 1
    r = ScaleCap(**roles, budget=budget, **common).caption(sample_images["coffee"])
    assert objects_of(r) == objects_of(everything)[:budget]
    assert len(objects_of(r)) == min(budget, available)
    assert len(r.questions) == 2 * len(objects_of(r))  # each object brings its position twin
    assert r.status == "ok"
    assert_final_written(r)
    if budget == 0:
        assert "instructions" not in r.usage and "answers" not in r.usage


def test_same_inputs_give_byte_identical_records(roles, sample_images, tiny_settings):
    images = list(sample_images.values())
    runs = []
    for concurrency in (4, 2):
        sc = ScaleCap(**roles, budget=2, tau=0.0, **tiny_settings)
        runs.append({r.id: r.stable_json() for r in sc.caption_many(images, concurrency=concurrency)})
    assert runs[0] == runs[1] and len(runs[0]) == 4


def test_writer_without_instructions_still_writes_a_caption(roles, sample_images, tiny_settings):
    # Unconstrained, the random writer writes gibberish that holds no instruction line.
    sc = ScaleCap(**roles, tau=-1.0, constrain_instructions=False, **tiny_settings)
    r = sc.caption(sample_images["rocket"])
    assert r.status == "ok"
    assert r.usage["instructions"].calls >= 1 and r.questions == []
    assert_final_written(r)


def test_writer_that_runs_to_max_tokens_does_not_break(roles, sample_images, tiny_settings):
    # A random writer never emits end-of-text: every writer call ends at max tokens.
    settings = dict(tiny_settings, max_tokens_instructions=120)
    r = ScaleCap(**roles, tau=-1.0, budget=None, **settings).caption(sample_images["astronaut"])
    assert r.status == "ok"
    u = r.usage["instructions"]
    assert 0 < u.completion_tokens <= u.calls * 120
    assert len({q.object.casefold() for q in r.questions if q.kind == "object"}) == len(objects_of(r))


def test_llava_family_runs_every_stage(tiny_models, sample_images, tiny_settings):
    vlm = str(tiny_models["llava"])
    r = ScaleCap(captioner=vlm, scorer=vlm, writer=str(tiny_models["qwen2"]), budget=1, tau=-1.0,
                 **tiny_settings).caption(sample_images["astronaut"])
    assert r.status == "ok", r.error
    assert len(r.questions) == 2
    assert_final_written(r)


def test_one_model_plays_all_roles_and_is_loaded_once(tiny_models, sample_images, tiny_settings):
    sc = ScaleCap(model=str(tiny_models["qwen2vl"]), budget=1, **tiny_settings)
    assert sc.captioner is sc.scorer is sc.writer
    assert sc.caption(sample_images["coffee"]).status == "ok"


def test_text_only_scorer_is_refused_before_any_image(tiny_models):
    from scalecap.backends.base import CapabilityError

    with pytest.raises(CapabilityError, match="cannot take images"):
        ScaleCap(captioner=str(tiny_models["qwen2vl"]), scorer=str(tiny_models["qwen2"]), writer=str(tiny_models["qwen2"]))
