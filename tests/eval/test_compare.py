"""``scalecap eval compare`` over the issue-15 stages, through the CLI, on CHAIR (no model needed):
the caption fields of one results file as rows (first vs final vs self-corrected), and fixed N vs
the adaptive budget with the questions each image was asked. Every number is worked out by hand
against the mini COCO ground truth of tests/data/eval (see test_chair.py for how it is built):
image 1 {person, dog}, 2 {car, traffic light}, 3 {cat, couch, remote}, 4 {dining table, cup, laptop}.
"""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from scalecap.eval.cli import app
from scalecap.records import AdaptiveBudget, CaptionResult, Correction, Question

DATA = Path(__file__).resolve().parent.parent / "data" / "eval"
ANNOTATIONS = ["-a", str(DATA / "coco_instances_mini.json"), "-a", str(DATA / "coco_captions_mini.json")]
runner = CliRunner()


def _record(id: str, first: str | None = None, final: str | None = None, corrected: str | None = None,
            questions: int = 0, adaptive: bool = False, status: str = "ok") -> dict:
    qs = [Question(object=f"object {i // 2}", kind="object" if i % 2 == 0 else "position", instruction="?")
          for i in range(questions)]
    budget = (AdaptiveBudget(wave_size=1, threshold=0.25, max_objects=4, planned=4, asked=questions // 2,
                             saved=4 - questions // 2, stop="novelty") if adaptive else None)
    r = CaptionResult(id=id, source=f"/images/{id}.jpg", status=status, first_caption=first, final_caption=final,
                      correction=Correction(caption=corrected) if corrected is not None else None,
                      questions=qs, adaptive_budget=budget, error="boom" if status != "ok" else None)
    return json.loads(r.model_dump_json())


def _write(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def _md_rows(path: Path) -> list[list[str]]:
    return [[c.strip() for c in line.strip("|").split("|")] for line in path.read_text().splitlines()[2:]]


def test_first_final_corrected_of_one_results_file(tmp_path):
    results = _write(tmp_path / "run.jsonl", [
        _record("1", "A man walks a dog next to a fire hydrant.", "A man walks a dog past a bench.",
                "A man walks a dog."),
        _record("2", "A car at a traffic light.", "A car and a bus at a traffic light.", "A car at a traffic light."),
        _record("3", "A cat on a couch.", "A cat on a couch with a remote."),  # never self-corrected
        _record("4", "A cup on a dining table.", "A cup and a laptop on a dining table.",
                "A cup, a laptop and a teddy bear on a dining table."),
    ])
    md = tmp_path / "fields.md"
    res = runner.invoke(app, ["compare", str(results), "--metric", "chair", *ANNOTATIONS,
                              "--fields", "first_caption,final_caption,corrected_caption", "-o", str(md),
                              "--save-results", str(tmp_path / "saved")])
    assert res.exit_code == 0, res.output
    assert md.read_text().splitlines()[0].startswith("| captions | n | CHAIR_s % | CHAIR_i % | recall % |")
    # first: mentions 1 {man=person, dog, fire hydrant*} 2 {car, traffic light} 3 {cat, couch}
    #   4 {cup, dining table}: 1 of 9 mentions, 1 of 4 captions hallucinated; recall (2+2+2+2)/(2+2+3+3)
    # final: 1 {man, dog, bench*} 2 {car, bus*, traffic light} 3 {cat, couch, remote} 4 {cup, laptop,
    #   dining table}: 2 of 12 mentions, 2 of 4 captions; recall (2+2+3+3)/10
    # corrected: image 3 has none (unusable, not scored); 1 {man, dog} 2 {car, traffic light}
    #   4 {cup, laptop, teddy bear*, dining table}: 1 of 8 mentions, 1 of 3 captions; recall (2+2+3)/7
    assert [r[:5] + r[6:] for r in _md_rows(md)] == [
        ["first_caption", "4", "25.0", "11.11", "80.0", "0", "0"],
        ["final_caption", "4", "50.0", "16.67", "100.0", "0", "0"],
        ["corrected_caption", "3", "33.33", "12.5", "100.0", "0", "1"],
    ]
    saved = {p.name: json.loads(p.read_text()) for p in (tmp_path / "saved").iterdir()}
    assert saved["chair-corrected_caption.json"]["provenance"]["settings"]["caption_field"] == "corrected_caption"


def test_fixed_n_against_adaptive_per_question(tmp_path):
    fixed = _write(tmp_path / "fixed.jsonl", [
        _record("1", final="A man walks a dog past a bench.", questions=4),
        _record("2", final="A car at a traffic light.", questions=4),
    ])
    adaptive = _write(tmp_path / "auto.jsonl", [
        _record("1", final="A man walks a dog.", questions=2, adaptive=True),
        _record("2", final="A car and a bus at a traffic light.", questions=4, adaptive=True),
        _record("3", status="failed", questions=8, adaptive=True),  # failed: neither scored nor counted
    ])
    csv_out = tmp_path / "budget.csv"
    res = runner.invoke(app, ["compare", str(fixed), str(adaptive), "--metric", "chair", *ANNOTATIONS,
                              "--per-question", "--names", "N=2,auto:2", "--format", "csv", "-o", str(csv_out),
                              "--save-results", str(tmp_path / "saved")])
    assert res.exit_code == 0, res.output
    head, *rows = [line.split(",") for line in csv_out.read_text().splitlines()]
    assert head[-2:] == ["questions/image", "CHAIR_s % per question"]
    # fixed: image 1 hallucinates a bench, 2 nothing -> CHAIR_s 50 %; 4 questions each -> 50 / 4 = 12.5
    # adaptive: image 2 hallucinates a bus -> 50 %; (2 + 4) / 2 = 3 questions -> 50 / 3 = 16.667
    assert [(r[0], r[1], r[2], r[-2], r[-1]) for r in rows] == [("N=2", "2", "50.0", "4.0", "12.5"),
                                                               ("auto:2", "2", "50.0", "3.0", "16.667")]
    # the saved results keep the counts, so they compare again per question without the records
    saved = sorted((tmp_path / "saved").glob("*.json"))
    assert json.loads((tmp_path / "saved" / "chair-auto:2.json").read_text())["questions_asked"] == {
        "images": 2, "questions": 6, "adaptive": 2, "per_image": 3.0}
    md = tmp_path / "again.md"
    res = runner.invoke(app, ["compare", *map(str, saved), "--per-question", "-o", str(md)])
    assert res.exit_code == 0, res.output
    assert sorted((r[0], r[-2], r[-1]) for r in _md_rows(md)) == [("N=2", "4.0", "12.5"), ("auto:2", "3.0", "16.667")]


def test_compare_field_and_question_errors(tmp_path):
    mapping = DATA / "chair_captions.json"
    res = runner.invoke(app, ["compare", str(mapping), "--metric", "chair", *ANNOTATIONS, "--per-question"])
    assert res.exit_code == 2 and "not a scalecap results file" in res.output
    res = runner.invoke(app, ["compare", str(mapping), "--fields", "first_caption,final_caption"])
    assert res.exit_code == 2 and "--fields needs --metric" in res.output
    res = runner.invoke(app, ["compare", str(mapping), "--metric", "chair", *ANNOTATIONS,
                              "--fields", "final_caption,final_caption"])
    assert res.exit_code == 2 and "distinct" in res.output
    results = _write(tmp_path / "r.jsonl", [_record("1", "A dog.", "A dog.")])
    res = runner.invoke(app, ["compare", str(results), "--metric", "chair", *ANNOTATIONS,
                              "--fields", "first_caption,final_caption", "--names", "only-one"])
    assert res.exit_code == 2 and "1 name(s) for 2 row(s)" in res.output
    saved = tmp_path / "saved"
    assert runner.invoke(app, ["compare", str(results), "--metric", "chair", *ANNOTATIONS,
                               "--save-results", str(saved)]).exit_code == 0
    res = runner.invoke(app, ["compare", *map(str, saved.glob("*.json")), "--per-question"])
    assert res.exit_code == 2 and "no questions_asked" in res.output
