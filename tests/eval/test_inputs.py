"""Caption files, id matching, bad inputs (clear one-line errors), comparisons and provenance."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from scalecap.eval import compare as cmp
from scalecap.eval.captions import load_captions
from scalecap.eval.cli import app
from scalecap.eval.common import EvalInputError, KeyIndex, fill
from scalecap.eval.models import load_model_config, resolve_model
from scalecap.eval.prompts import load as load_prompt
from scalecap.eval.provenance import build
from scalecap.records import CaptionResult, Correction

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
runner = CliRunner()


def test_fill_is_safe_with_braces():
    assert fill("D: {}\nQ: {}", "x^{2} {}", "why?") == "D: x^{2} {}\nQ: why?"
    with pytest.raises(ValueError):
        fill("{} {}", "one")


def test_bundled_prompts_match_method_md():
    assert load_prompt("prism_answer") == ("You are an excellent text-based reasoning expert. You are required to answer "
                                          "the question based on the detailed description of the image.\n"
                                          "Description: {}\nQuestion: {}")
    assert load_prompt("extract_answer").startswith("Extract the brief answer from the analysis for the question.")
    assert load_prompt("extract_answer").endswith("Analysis:\n{}\n\nAnswer:")
    assert load_prompt("system") == "You are a helpful assistant."


def test_key_index_rule():
    idx = KeyIndex(["v1_0.png", "dir/v1_1.png", "COCO_val2014_000000000042.jpg", "a.jpg", "a.png"], numeric=True)
    assert idx.find("v1_0.png") == "v1_0.png"  # same string
    assert idx.find("v1_1.png") == "dir/v1_1.png"  # same file name
    assert idx.find("v1_0") == "v1_0.png"  # same stem
    assert idx.find("42") == "COCO_val2014_000000000042.jpg"  # same trailing number (numeric only)
    assert idx.find("000000000042.jpg") == "COCO_val2014_000000000042.jpg"
    assert idx.find("a") is None  # a.jpg and a.png tie: ambiguous, never matched silently
    assert idx.find("nothing", "v1_0") == "v1_0.png"  # queries in order of preference
    assert KeyIndex(["COCO_val2014_000000000042.jpg"]).find("42") is None  # numbers only when asked


def test_caption_formats(tmp_path):
    recs = [CaptionResult(id="img1", source="a/img1.jpg", status="ok", first_caption="first 1", final_caption="final 1"),
            CaptionResult(id="img2", source="a/img2.jpg", status="failed", error="CUDA OOM"),
            CaptionResult(id="img3", source="a/img3.jpg", status="ok", first_caption="first 3", final_caption=None)]
    p = tmp_path / "run.jsonl"
    p.write_text("".join(r.to_json() + "\n" for r in recs))
    cs = load_captions(p)
    assert cs.format == "scalecap-results" and cs.captions == {"img1": "final 1"}
    assert cs.unusable == {"img2": "record status failed: CUDA OOM", "img3": "no final_caption"}
    assert cs.lookup("img2.jpg") == ("img2", None, "record status failed: CUDA OOM")
    assert load_captions(p, "first_caption").captions == {"img1": "first 1", "img3": "first 3"}
    corrected = load_captions(p, "corrected_caption")  # none of these runs self-corrected
    assert corrected.captions == {} and corrected.unusable["img1"] == "no corrected_caption"
    recs[0].correction = Correction(caption="corrected 1")
    p.write_text("".join(r.to_json() + "\n" for r in recs))
    assert load_captions(p, "corrected_caption").captions == {"img1": "corrected 1"}
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"image_id": 7, "caption": "seven"}\n{"image_id": 7, "caption": "seven again"}\n')
    rs = load_captions(rows)
    assert rs.captions == {"7": "seven"} and rs.conflicts == ["7"]
    with pytest.raises(EvalInputError, match="no caption field for --field first_caption"):
        load_captions(rows, "first_caption")  # never falls back to a plain "caption"


@pytest.mark.parametrize("args, message", [
    (["chair", "missing.json", "-a", str(DATA / "coco_instances_mini.json")], "does not exist"),
    (["chair", str(DATA / "malformed.json"), "-a", str(DATA / "coco_instances_mini.json")], "is not valid JSON"),
    (["chair", str(DATA / "chair_captions.json"), "-a", str(DATA / "malformed.json")], "annotations"),
    (["vqa", str(DATA / "mcq_captions.json"), "-b", str(DATA / "bench_missing_answer.jsonl"), "--answerer", "x"],
     "lacks answer"),
    (["vqa", str(DATA / "mcq_captions.json"), "-b", str(DATA / "mcq.jsonl")], "an answerer model is needed"),
    (["vqa", str(DATA / "mcq_captions.json"), "-b", str(DATA / "mcq.jsonl"), "--answerer-model", "m"], "needs --api-base"),
    (["vqa", str(DATA / "mcq_captions.json"), "-b", str(DATA / "mcq.jsonl"), "--answerer", "/no/such/model"],
     "cannot load model"),
    (["compare", str(DATA / "chair_captions.json"), "--metric", "bleu"], "--metric must be"),
    (["compare", str(DATA / "chair_captions.json")], "not a scalecap eval result file"),
    (["capture", str(DATA / "capture_captions.json"), "-r", str(DATA / "malformed.json"), "--parser-llm", "x"],
     "not valid JSON"),
])
def test_bad_inputs_exit_2_with_one_line(args, message):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output
    assert "Traceback" not in res.output
    assert len([ln for ln in res.output.splitlines() if ln.strip()]) == 1


def test_model_config_files(tmp_path):
    (tmp_path / "flat.toml").write_text('backend = "openai"\nmodel = "qwen"\napi_base = "http://h:1/v1"\n')
    assert load_model_config(tmp_path / "flat.toml", "judge").api_base == "http://h:1/v1"
    (tmp_path / "run.toml").write_text('[models.a]\nmodel = "A"\n[models.b]\nmodel = "B"\n[roles]\njudge = "b"\n')
    assert load_model_config(tmp_path / "run.toml", "judge").model == "B"
    with pytest.raises(EvalInputError, match="defines 2 models"):
        load_model_config(tmp_path / "run.toml", "answerer")
    (tmp_path / "bad.toml").write_text('backend = "openai"\nmodel = "x"\n')
    with pytest.raises(EvalInputError, match="api_base"):
        load_model_config(tmp_path / "bad.toml", "judge")
    with pytest.raises(EvalInputError, match="only one of"):
        resolve_model("judge", "a", None, "b", "http://x")


def test_provenance_block(tmp_path):
    f = tmp_path / "d.txt"
    f.write_text("abc")
    p = build("m", "1", models={"judge": {"backend": "hf", "model": "x"}}, prompts={"p": "hello"}, data={"d": f}, seed=3)
    assert p["data"]["d"]["sha256"] == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert p["prompts"]["p"]["sha256"] == "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"
    assert p["seed"] == 3 and p["scalecap_version"] and p["timestamp"].endswith("+00:00")


def test_compare_chair_two_sets_markdown_and_csv(tmp_path):
    md = tmp_path / "t.md"
    res = runner.invoke(app, ["compare", str(DATA / "chair_captions.json"), str(DATA / "chair_captions_b.json"),
                              "--metric", "chair", "-a", str(DATA / "coco_instances_mini.json"),
                              "-a", str(DATA / "coco_captions_mini.json"), "--names", "A,B", "-o", str(md),
                              "--save-results", str(tmp_path / "res")])
    assert res.exit_code == 0, res.output
    lines = md.read_text().splitlines()
    assert lines[0].startswith("| captions | n | CHAIR_s % | CHAIR_i % |")
    assert lines[2].startswith("| A | 5 | 60.0 | 25.0 |")  # the hand-worked numbers of test_chair
    assert lines[3].startswith("| B | 5 | 0.0 | 0.0 |")  # B mentions only ground-truth objects
    # the saved results compare again, as result files, to CSV
    saved = sorted((tmp_path / "res").glob("*.json"))
    csv_out = tmp_path / "t.csv"
    res2 = runner.invoke(app, ["compare", *map(str, saved), "--format", "csv", "-o", str(csv_out)])
    assert res2.exit_code == 0, res2.output
    rows = csv_out.read_text().splitlines()
    assert rows[0].startswith("captions,n,CHAIR_s %") and rows[1].startswith("A,5,60.0,25.0")


def test_compare_refuses_mixed_metrics():
    with pytest.raises(EvalInputError, match="different metrics"):
        cmp.table([{"metric": "chair", "name": "a", "summary": {}}, {"metric": "capture", "name": "b", "summary": {}}])


def test_compare_vqa_table_columns():
    def doc(name, acc, cat_acc):
        b = {"items": 2, "evaluated": 2, "accuracy": acc, "accuracy_graded": acc, "ungraded": 0, "errors": 0,
             "missing_caption": 0}
        return {"metric": "vqa-prism", "name": name,
                "summary": {"overall": b, "per_category": {"ocr": {**b, "accuracy": cat_acc}}}}

    cols, rows = cmp.table([doc("x", 0.5, 0.25), doc("y", 1.0, 1.0)])
    assert cols[:4] == ["captions", "n", "accuracy %", "ocr %"]
    assert rows[0][:4] == ["x", 2, 50.0, 25.0] and rows[1][2] == 100.0
    assert "| x | 2 | 50.0 | 25.0 |" in cmp.to_markdown((cols, rows))
