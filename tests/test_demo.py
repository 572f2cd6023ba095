"""``scalecap demo``, the README's first command: real photos, tiny random models, records and report."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from scalecap.cli import app
from scalecap.demo import DEMO_SETTINGS, sample_photos
from scalecap.records import CaptionResult
from scalecap.testing.tiny_models import TINY_MODELS_VERSION

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_demo_writes_valid_records_and_a_report(tmp_path, tiny_models, monkeypatch):
    # the demo's model cache is the suite's (already built): a cache folder whose tiny-models-vN is it
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / f"tiny-models-v{TINY_MODELS_VERSION}").symlink_to(tiny_models["qwen2vl"].parent, target_is_directory=True)
    monkeypatch.setenv("SCALECAP_CACHE", str(cache))
    photos = sample_photos()
    assert len(photos) >= 4  # scikit-image's four at least

    out = tmp_path / "scalecap-demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--concurrency", "4"], env={"COLUMNS": "300"})
    assert res.exit_code == 0, res.output
    assert sorted(p.name for p in (out / "images").iterdir()) == sorted(p.name for p in photos)

    records = [CaptionResult.from_json(line) for line in (out / "captions.jsonl").read_text(encoding="utf-8").splitlines()]
    assert sorted(r.id for r in records) == sorted(p.name for p in photos)
    assert all(r.status == "ok" for r in records), [(r.id, r.error) for r in records if r.status != "ok"]
    for r in records:
        assert r.fingerprint is not None and r.fingerprint.tau == DEMO_SETTINGS["tau"]
        assert r.fingerprint.budget == DEMO_SETTINGS["budget"]
        assert r.sentences and all(s.kept == (s.score is not None and s.score > DEMO_SETTINGS["tau"])
                                   for s in r.sentences)
        assert r.usage["caption"].calls == 1 and r.usage["caption_rating"].calls >= 1
    assert any(r.questions for r in records)  # the demo shows questions and answers somewhere
    # the printed page is a declared document: its domain and (tesseract is installed here) OCR evidence
    page = next(r for r in records if r.id == "page.png")
    assert (page.domain.id, page.domain.source) == ("infographic_document", "declared")
    assert "markers of the coins" in page.ocr.text
    assert all(r.domain is None and r.ocr is None for r in records if r.id != "page.png")

    report = out / "report.html"
    html = report.read_text(encoding="utf-8")
    assert html.startswith("<!DOCTYPE html>") and all(r.id in html for r in records)
    assert "markers of the coins" in html and "infographic_document" in html  # the report shows both
    assert re.search(rf"captioned {len(photos)} of {len(photos)} photos in [\d.]+s", res.output), res.output
    assert f"audit report: {report}" in res.output and "gibberish by design" in res.output
