"""Every supported VLM family runs the whole pipeline in-process (tiny random models, real classes)."""

import pytest

from scalecap import ScaleCap
from scalecap.testing.scripted import ScriptedBackend
from scalecap.testing.tiny_models import build_tiny_models

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("family", ["qwen25vl", "qwen3vl", "idefics3"])
def test_family_runs_every_stage(family, tiny_models, sample_images, tiny_settings):
    folder = build_tiny_models(tiny_models["qwen2"].parent, (family,))[family]
    # The constrained writer may now rightly ask nothing; a scripted writer always asks about one
    # object, so that the family's captioner answers and its scorer rates the answers.
    writer = ScriptedBackend(rules=[("Sentence", "Describe more details about the cup.\n")], default="A cup.")
    sc = ScaleCap(captioner=str(folder), scorer=str(folder), writer=writer, budget=1, tau=-1.0, **tiny_settings)
    r = sc.caption(sample_images["coffee"])
    assert r.status == "ok", r.error
    assert r.sentences and len(r.questions) == 2
    assert r.usage["final"].calls == 1 and r.usage["final"].completion_tokens > 0 and r.final_caption
    assert r.usage["answer_rating"].calls == 4
