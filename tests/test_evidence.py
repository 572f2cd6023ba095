"""OCR evidence in the pipeline: real tesseract on scikit-image's ``page`` photo, its text given to the
writer, and the final caption's quotes checked against it (a scripted backend writes the caption)."""

from __future__ import annotations

import pytest

from scalecap import ScaleCap
from scalecap.images import ImageItem
from scalecap.prompts import load_preset
from scalecap.testing.scripted import ScriptedBackend

pytestmark = pytest.mark.ocr
PROMPTS = load_preset("paper")
FIRST = "A printed page of a book about image segmentation."
REAL = 'The page says "determine markers of the coins and the background" in its second line.'
INVENTED = 'A footnote reads "Copyright 1998 Springer Verlag".'
PLAIN = "The text is black on a grey background."
FINAL = f"{REAL} {INVENTED} {PLAIN}"


def _backends():
    captioner = ScriptedBackend(default=FIRST,  # the paper's first-caption prompt, or a domain's
                                support={w: 0.9 for w in ("printed", "page", "book")}, base=0.25)
    writer = ScriptedBackend(rules=[(r"Basic Context:\n", FINAL)], default="", vision=False, can_score=False,
                             name="writer")
    return captioner, writer


def _run(image_path, meta=None, **settings):
    captioner, writer = _backends()
    sc = ScaleCap(captioner=captioner, scorer=captioner, writer=writer, tagger="lexicon", budget=0, **settings)
    item = ImageItem.from_path(image_path, id="page")
    item.meta.update(meta or {})
    return sc.caption(item), writer


def test_ocr_text_is_evidence_and_an_invented_quote_is_marked(document_images):
    r, writer = _run(document_images["page"], ocr="on")
    assert r.status == "ok", r.error
    assert "markers of the coins" in r.ocr.text and r.ocr.engine == "tesseract:eng"
    # the writer was given the OCR text before the final-caption prompt
    (final_call,) = writer.generations(r"Basic Context:")
    assert final_call.prompt.user.startswith(PROMPTS.evidence.split("{}")[0] + r.ocr.text)
    assert [(q.quote, q.supported, q.dropped) for q in r.ocr.quotes] == [
        ("determine markers of the coins and the background", True, False),
        ("Copyright 1998 Springer Verlag", False, False)]
    assert r.ocr.quotes[1].sentence == INVENTED
    assert r.final_caption == FINAL  # marked, not dropped
    assert "ocr" in r.timings
    assert r.fingerprint.settings["ocr"] == "on" and "evidence_prompt_hash" in r.fingerprint.settings


def test_dropping_removes_only_the_sentence_with_the_invented_quote(document_images):
    r, _ = _run(document_images["page"], ocr="on", drop_unsupported_quotes=True)
    assert r.final_caption == f"{REAL} {PLAIN}"
    assert [q.dropped for q in r.ocr.quotes] == [False, True]


def test_auto_reads_only_images_of_a_text_domain(document_images):
    off, writer = _run(document_images["page"], ocr="auto")
    assert off.ocr is None and "ocr" not in off.timings
    assert writer.generations(r"Basic Context:")[0].prompt.user.startswith("Basic Context:")
    on, _ = _run(document_images["page"], meta={"domain": "infographic_document"}, ocr="auto")
    assert on.status == "ok", on.error
    assert on.ocr is not None and "markers of the coins" in on.ocr.text
    assert on.domain.id == "infographic_document"


def test_ocr_off_is_the_default_and_sends_no_evidence(document_images):
    r, writer = _run(document_images["page"])
    assert r.ocr is None
    assert writer.generations(r"Basic Context:")[0].prompt.user.startswith("Basic Context:")
