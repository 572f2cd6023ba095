"""Domains: the data-declared label set, the router (constrained, on tiny real models), declared
domains overriding it, and each domain's preset being the one the pipeline sends."""

from __future__ import annotations

import re

import pytest
from PIL import Image

from scalecap import ScaleCap
from scalecap.domains import BUNDLED, load_domains
from scalecap.images import ImageItem
from scalecap.prompts import load_preset
from scalecap.testing.scripted import ScriptedBackend

PAPER = load_preset("paper")
DOMAINS = load_domains()
IMAGE = Image.new("RGB", (32, 24), (120, 60, 30))


def _item(meta=None):
    import io

    buf = io.BytesIO()
    IMAGE.save(buf, "PNG")
    return ImageItem(id="x", source="<mem>", data=buf.getvalue(), meta=dict(meta or {}))


def _scripted(route_reply="ui 2"):
    captioner = ScriptedBackend(rules=[(r"^Which domain", route_reply)], default="A red cat sleeps on a table.",
                                support={"cat": 0.9, "red": 0.9}, base=0.25, can_constrain=True)
    writer = ScriptedBackend(default="A red cat sleeps on a table.", vision=False, can_score=False, name="writer")
    return captioner, writer


def _run(captioner, writer, meta=None, **settings):
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", budget=0, **settings)
    return sc.caption(_item(meta))


def test_the_eight_image_domains_are_data():
    assert list(DOMAINS) == ["natural", "structure_math", "infographic_document", "medical", "ui", "code",
                             "knowledge_education", "synthetic_aesthetic"]
    assert not (BUNDLED / "natural" / "caption.txt").exists()  # natural: the paper's preset as it is


@pytest.mark.parametrize("domain", list(DOMAINS))
def test_each_declared_domain_uses_its_own_first_caption_prompt(domain):
    captioner, writer = _scripted()
    r = _run(captioner, writer, meta={"domain": domain})
    assert r.status == "ok", r.error
    assert r.domain.model_dump() == {"id": domain, "source": "declared", "confidence": None, "raw": None}
    folder = DOMAINS[domain].folder
    expected = (folder / "caption.txt").read_text() if (folder / "caption.txt").exists() else PAPER.caption
    first_calls = [c for c in captioner.calls if c.kind == "generate"]
    assert [c.prompt.user for c in first_calls] == [expected]  # no routing call: the domain was declared
    # the caption was rated under the prompt that wrote it
    assert {c.prompt.user for c in captioner.calls if c.kind == "score"} == {expected}
    assert "routing" not in r.usage


def test_routing_picks_the_domain_and_its_preset_and_is_counted():
    captioner, writer = _scripted("code 3")
    r = _run(captioner, writer, route="auto")
    assert r.domain.model_dump() == {"id": "code", "source": "routed", "confidence": 3, "raw": None}
    route_call, first_call = [c for c in captioner.calls if c.kind == "generate"]
    assert route_call.params.regex.startswith("(natural|structure_math|") and route_call.with_image
    assert "- ui: UI & Interaction:" in route_call.prompt.user
    assert first_call.prompt.user == (DOMAINS["code"].folder / "caption.txt").read_text()
    assert r.usage["routing"].calls == 1 and "routing" in r.timings


def test_a_declared_domain_overrides_the_router_and_the_run_level_domain():
    captioner, writer = _scripted("code 3")
    r = _run(captioner, writer, meta={"domain": "medical"}, route="auto", domain="ui")
    assert (r.domain.id, r.domain.source) == ("medical", "declared")
    r = _run(*_scripted("code 3"), route="auto", domain="ui")
    assert (r.domain.id, r.domain.source) == ("ui", "declared")


def test_an_unknown_declared_domain_is_ignored_with_a_note_or_fails_the_run():
    # a data column "domain" may hold labels of its own: recorded, noted, the run's preset used
    r = _run(*_scripted(), meta={"domain": "astrology"})
    assert r.status == "ok" and (r.domain.id, r.domain.source, r.domain.raw) == (None, "declared", "astrology")
    assert any("astrology" in n for n in r.notes)
    r = _run(*_scripted("code 3"), meta={"domain": "astrology"}, route="auto")
    assert (r.domain.id, r.domain.source) == ("code", "routed") and "declared_domain" in r.skipped
    r = _run(*_scripted(), meta={"domain": "astrology"}, domain="ui")
    assert (r.domain.id, r.domain.source) == ("ui", "declared")
    with pytest.raises(ValueError, match="not a known domain"):
        _run(*_scripted(), domain="astrology")


def test_a_user_domain_is_a_folder(tmp_path):
    folder = tmp_path / "satellite"
    folder.mkdir()
    (folder / "domain.toml").write_text('name = "Satellite"\norder = 9\ndescription = "aerial and satellite views"\n')
    (folder / "caption.txt").write_text("Describe this satellite image: land cover, roads, buildings, water.")
    (folder / "final.txt").write_text("Seen from above:\n{}\nDetails:\n{}\nWhere:\n{}\nWrite one map-like paragraph.")
    captioner, writer = _scripted("satellite 1")
    r = _run(captioner, writer, route="auto", domains_dir=str(tmp_path))
    assert (r.domain.id, r.domain.confidence) == ("satellite", 1)
    assert captioner.generations()[1].prompt.user.startswith("Describe this satellite image")
    (final,) = writer.generations()
    assert final.prompt.user.startswith("Seen from above:\n") and final.prompt.user.endswith("map-like paragraph.")
    (folder / "system.txt").write_text("You are a map.")
    with pytest.raises(ValueError, match="system.txt comes from the run's preset"):
        _run(*_scripted(), meta={"domain": "satellite"}, domains_dir=str(tmp_path))


@pytest.mark.slow
def test_router_on_a_tiny_real_model_returns_a_label_of_the_set(tiny_models, sample_images, tiny_settings):
    vlm = str(tiny_models["qwen2vl"])
    sc = ScaleCap(captioner=vlm, scorer=vlm, writer=str(tiny_models["qwen2"]), route="auto", budget=0,
                  **tiny_settings)
    if not sc.router.constrained:
        pytest.fail("the transformers backend cannot constrain decoding here (xgrammar missing)")
    r = sc.caption(sample_images["chelsea"], id="chelsea")
    assert r.status == "ok", r.error
    assert r.domain.source == "routed" and r.domain.id in DOMAINS and r.domain.confidence in (1, 2, 3)
    assert r.usage["routing"].calls == 1 and r.usage["routing"].completion_tokens > 0
    assert r.fingerprint.models["router"] == r.fingerprint.models["captioner"]


def test_a_question_family_is_files_and_a_line_in_domain_toml(tmp_path):
    folder = tmp_path / "satellite"
    folder.mkdir()
    toml = 'name = "Satellite"\norder = 9\ndescription = "aerial views"\nfamilies = ["roads"]\n'
    (folder / "domain.toml").write_text(toml)
    (folder / "family_roads.txt").write_text("Describe the roads visible in the image.\n")
    captioner, writer = _scripted()
    captioner.rules = [(r"^Describe the roads", "A red road crosses the cat."), *captioner.rules]
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", budget=2,
                  domains_dir=str(tmp_path))
    r = sc.caption(_item({"domain": "satellite"}))
    assert r.status == "ok", r.error
    (family,) = [q for q in r.questions if q.kind == "family"]
    assert (family.object, family.instruction, family.kept) == ("roads", "Describe the roads visible in the image.", True)
    assert family.answer == "A red road crosses the cat."
    hashes = sc.presets.hashes()
    assert hashes["natural"] == PAPER.sha256[:16]  # natural: the paper's prompts, no family
    (folder / "family_roads.txt").write_text("Describe the roads and rivers.\n")
    assert ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon",
                    domains_dir=str(tmp_path)).presets.hashes()["satellite"] != hashes["satellite"]
    (folder / "domain.toml").write_text(toml.replace('["roads"]', '["roads", "rivers"]'))
    with pytest.raises(ValueError, match="family 'rivers' has no family_rivers.txt"):
        load_domains(tmp_path)


def test_the_bundled_families():
    assert {d: DOMAINS[d].families for d in DOMAINS if DOMAINS[d].families} == {
        "structure_math": ("axes", "series", "values", "trends"),
        "infographic_document": ("text_content", "layout", "reading_order"),
        "medical": ("modality", "anatomy", "findings"),
        "ui": ("elements", "state", "layout"),
        "code": ("language", "purpose", "structure")}
    assert "diagnos" in (DOMAINS["medical"].folder / "family_findings.txt").read_text()  # visible features only
