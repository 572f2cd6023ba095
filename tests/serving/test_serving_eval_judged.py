"""``scalecap eval arena`` and ``dcscore`` against a real vLLM server: every role served, replies
held to the formats by the server's structured outputs, so the random model's verdicts are well formed."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from scalecap.eval.arena import verdict_regex
from scalecap.eval.cli import app
from scalecap.eval.dcscore import units_regex

SERVED_NAME = "tiny-qwen2vl"  # the name the session server (conftest.py) serves the model under

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]
runner = CliRunner()


@pytest.fixture()
def inputs(sample_images, tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for k in ("astronaut", "coffee", "rocket"):
        (folder / sample_images[k].name).write_bytes(sample_images[k].read_bytes())
    a = tmp_path / "mine.json"
    b = tmp_path / "base.json"
    a.write_text(json.dumps({"astronaut": "An astronaut in a white suit with a flag.", "coffee": "A cup of coffee.",
                             "rocket": "A rocket on a launch pad."}))
    b.write_text(json.dumps({"astronaut": "A person.", "coffee": "A red cup.", "rocket": "A tower at night."}))
    refs = tmp_path / "refs.json"
    refs.write_text(json.dumps({"astronaut": ["An astronaut posing in front of a flag."]}))
    return folder, a, b, refs


def test_arena_and_dcscore_on_the_server(vllm_server, inputs, tmp_path):
    folder, a, b, refs = inputs
    served = ["--api-base", vllm_server.api_base]
    out = tmp_path / "arena.json"
    res = runner.invoke(app, ["arena", str(a), "--against", str(b), "--images", str(folder), "--judge-model",
                              SERVED_NAME, *served, "--max-tokens", "40", "--reason-chars", "16",
                              "--price", "judge=1:2", "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())["summary"]
    assert s["judged"] == 3 and s["errors"] == 0 and s["wins"] + s["ties"] + s["losses"] == 3
    for row in map(json.loads, out.with_name("arena.items.jsonl").read_text().splitlines()):
        assert [x["order"] for x in row["rounds"]] == ["ab", "ba"]
        assert all(re.fullmatch(verdict_regex(16), x["response"]) for x in row["rounds"]), row["rounds"]
        assert row["tokens"]["judge_prompt"] > 0 and row["cost_usd"] > 0

    out = tmp_path / "dc.json"
    res = runner.invoke(app, ["dcscore", str(a), "--images", str(folder), "-r", str(refs), "--decomposer-model",
                              SERVED_NAME, "--judge-model", SERVED_NAME, *served, "--max-units", "3",
                              "--unit-chars", "12", "--decompose-max-tokens", "60", "-o", str(out)])
    assert res.exit_code == 0, res.output
    s = json.loads(out.read_text())["summary"]
    assert s["scored"] == 3 and s["errors"] == 0 and 3 <= s["units"] <= 9
    rows = {r["id"]: r for r in map(json.loads, out.with_name("dc.items.jsonl").read_text().splitlines())}
    for r in rows.values():
        assert re.fullmatch(units_regex(3, 12), r["decomposition"]), r["decomposition"]
        assert all(u["response"] in ("yes", "no") for u in r["units"])
        assert r["precision"] == pytest.approx(r["n_supported"] / r["n_units"])
    assert rows["astronaut"]["n_reference_units"] >= 1 and rows["coffee"]["recall"] is None
    assert s["precision"] == pytest.approx(s["supported"] / s["units"])
