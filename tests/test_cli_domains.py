"""``scalecap caption --domain/--route/--ocr/--no-degenerate-filter`` reach the record (tiny real models,
real tesseract on scikit-image's ``page`` photo)."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from scalecap.cli import app

runner = CliRunner()


@pytest.mark.slow
@pytest.mark.ocr
def test_a_declared_document_gets_ocr_evidence_in_the_record(tmp_path, document_images, tiny_models, tiny_settings):
    vlm, llm = str(tiny_models["qwen2vl"]), str(tiny_models["qwen2"])
    out = tmp_path / "out.jsonl"
    sets = [a for k, v in tiny_settings.items() for a in ("--set", f"{k}={v}")]
    res = runner.invoke(app, ["caption", str(document_images["page"]), "-o", str(out), "--captioner", vlm,
                              "--writer", llm, "--budget", "0", "--domain", "infographic_document", "--ocr", "auto",
                              "--no-degenerate-filter", "--no-progress", *sets])
    assert res.exit_code == 0, res.output
    (record,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert record["status"] == "ok", record["error"]
    assert record["domain"] == {"id": "infographic_document", "source": "declared", "confidence": None, "raw": None}
    assert "markers of the coins" in record["ocr"]["text"]
    s = record["fingerprint"]["settings"]
    assert (s["ocr"], s["domain"], s["route"], s["degenerate_filter"]) == ("auto", "infographic_document", "off", False)
    assert record["filter_hits"] == []


@pytest.mark.parametrize(("args", "message"), [(["--route", "sideways"], "route"), (["--ocr", "maybe"], "ocr"),
                                               (["--set", "degenerate_actions=loop=drop"], "unknown check 'loop'"),
                                               (["--judge", "--set", "judge_thresholds=beauty=3"],
                                                "unknown dimension 'beauty'"),
                                               (["--judge", "--set", "judge_thresholds=intent=4"], "intent=4 is not a score 1-3")])
def test_bad_values_are_errors_before_any_model_loads(tmp_path, args, message):
    res = runner.invoke(app, ["caption", str(tmp_path), "-o", str(tmp_path / "o.jsonl"), "--model", "nowhere", *args],
                        env={"COLUMNS": "300"})
    assert res.exit_code == 2 and message in res.output, res.output
