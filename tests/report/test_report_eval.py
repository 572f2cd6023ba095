"""Evaluation results in the report: ``scalecap report RUN --eval RESULT.json`` shows each metric's
compare table (arena and DCScore results made here with scripted judges, so the numbers are known)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image
from report_data import write_run
from typer.testing import CliRunner

from scalecap._sync import run_sync
from scalecap.eval.arena import Arena
from scalecap.eval.captions import from_mapping
from scalecap.eval.common import write_json
from scalecap.eval.dcscore import DCScore
from scalecap.eval.judged import ImageFinder
from scalecap.eval.runs import run_arena, run_dcscore
from scalecap.report import ReportError, build_report
from scalecap.testing.scripted import ScriptedBackend

DATA_RE = re.compile(r'<script type="application/json" id="scalecap-data">(.*?)</script>', re.DOTALL)


@pytest.fixture()
def results(tmp_path: Path) -> list[Path]:
    folder = tmp_path / "img"
    folder.mkdir()
    for k in ("x", "y"):
        Image.new("RGB", (16, 16), (10, 20, 30)).save(folder / f"{k}.png")
    finder = ImageFinder(folder)
    a = from_mapping({"x": "mine x", "y": "mine y"})
    b = from_mapping({"x": "base x", "y": "base y"})
    # the judge always prefers "mine": A wins both pairs -> score +100, win rate 100 %
    judge = ScriptedBackend(default=lambda p, q: "Reason: r\nVerdict: " + ("1" if "Caption 1:\nmine" in p.user else "2"))
    arena, _ = run_sync(run_arena(a, b, finder, Arena(judge)))
    # one unit per caption, the first judged true and the second false -> precision 50 %
    llm = ScriptedBackend(default=lambda p, q: "- unit " + p.user.split("Description:\n")[1][5], vision=False)
    vlm = ScriptedBackend(default=lambda p, q: "yes" if "unit x" in p.user else "no")
    dc, _ = run_sync(run_dcscore(a, finder, DCScore(llm, vlm)))
    paths = [tmp_path / "arena.json", tmp_path / "dcscore.json"]
    write_json(paths[0], arena)
    write_json(paths[1], dc)
    return paths


def test_report_carries_the_evaluation_tables(tmp_path: Path, results: list[Path]) -> None:
    run = write_run(tmp_path)
    out = tmp_path / "r.html"
    build_report(run, out, evaluations=results)
    data = json.loads(DATA_RE.search(out.read_text(encoding="utf-8")).group(1))
    ev = {e["metric"]: e for e in data["evaluations"]}
    assert set(ev) == {"arena", "dcscore"}
    arena = dict(zip(ev["arena"]["cols"], ev["arena"]["rows"][0]))
    assert (arena["score"], arena["win rate %"], arena["wins"], arena["losses"]) == (100.0, 100.0, 2, 0)
    dc = dict(zip(ev["dcscore"]["cols"], ev["dcscore"]["rows"][0]))
    assert dc["precision %"] == 50.0 and dc["recall %"] is None and dc["n"] == 2
    assert ev["dcscore"]["files"] == ["dcscore.json"]
    with pytest.raises(ReportError, match="not a scalecap eval result"):
        bad = tmp_path / "bad.json"
        bad.write_text("{}")
        build_report(run, out, evaluations=[bad])
    # without --eval there is no section
    build_report(run, out)
    assert json.loads(DATA_RE.search(out.read_text(encoding="utf-8")).group(1))["evaluations"] == []


def test_report_command_takes_eval(tmp_path: Path, results: list[Path]) -> None:
    import typer

    from scalecap.report.cli import report_command

    app = typer.Typer()
    app.command()(report_command)
    run = write_run(tmp_path)
    res = CliRunner().invoke(app, [str(run), "-o", str(tmp_path / "c.html"), "--eval", str(results[0]),
                                   "--eval", str(results[1]), "--no-thumbnails"])
    assert res.exit_code == 0, res.output
    data = json.loads(DATA_RE.search((tmp_path / "c.html").read_text(encoding="utf-8")).group(1))
    assert [e["metric"] for e in data["evaluations"]] == ["arena", "dcscore"]


@pytest.mark.browser
def test_evaluation_section_in_the_browser(tmp_path: Path, results: list[Path], watch) -> None:
    run = write_run(tmp_path)
    out = tmp_path / "r.html"
    build_report(run, out, evaluations=results)
    watch.open(out)
    page = watch.page
    assert page.locator("#evaluation h2").inner_text() == "Evaluation"
    row = page.inner_text("#evaluation table[data-metric='arena'] tbody tr")
    assert row.split("\t")[:5] == ["captions", "2", "100", "100", "2"]
    dc = page.inner_text("#evaluation table[data-metric='dcscore'] tbody tr").split("\t")
    assert dc[2:4] == ["50", "–"]
    watch.assert_clean()
