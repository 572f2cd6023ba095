"""Arena: order swapping, ties, the CapArena-Auto score, unreadable verdicts and resume, worked by hand
with a scripted judge; then end to end through the CLI on a tiny real VLM."""

from __future__ import annotations

import json
import re

import pytest
from PIL import Image
from typer.testing import CliRunner

from scalecap._sync import run_sync
from scalecap.eval.arena import Arena, ArenaSettings, combine, parse_verdict, verdict_regex, winner
from scalecap.eval.captions import from_mapping
from scalecap.eval.cli import app
from scalecap.eval.common import EvalInputError
from scalecap.eval.judged import ImageFinder, RolePrices
from scalecap.eval.runs import run_arena
from scalecap.testing.scripted import ScriptedBackend

runner = CliRunner()
_PAIR = re.compile(r"Caption 1:\n(.*?)\n\nCaption 2:\n(.*?)\n\n", re.S)

# What the scripted judge does per image id (A's caption is "a-<id>", B's "b-<id>"):
#   win1, win2: always prefers A, in both orders          -> A wins
#   bias:       always picks Caption 1 (position bias)    -> A then B: disagree -> tie
#   lose:       always prefers B                          -> loss
#   half:       "tie" when A is first, A when B is first  -> tie vs A: disagree -> tie
#   garbled:    no verdict at all when B is shown first   -> error (not a win, not a loss)
IDS = ["win1", "bias", "lose", "half", "garbled", "win2"]


def judge_reply(prompt, params) -> str:
    c1, c2 = _PAIR.search(prompt.user).groups()
    a_first = c1.startswith("a-")
    key = c1.split("-", 1)[1].split()[0]
    if key.startswith("win"):
        v = "1" if a_first else "2"
    elif key == "bias":
        v = "1"
    elif key == "lose":
        v = "2" if a_first else "1"
    elif key == "half":
        v = "tie" if a_first else "2"
    else:
        return "I like both of them." if not a_first else "Reason: fine\nVerdict: 1"
    return f"Reason: {key} decides it\nVerdict: {v}"


@pytest.fixture()
def images(tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for i, k in enumerate(IDS):
        Image.new("RGB", (32, 24), (40 * i, 100, 200)).save(folder / f"{k}.png")
    return ImageFinder(folder)


def sets():
    a = from_mapping({k: f"a-{k} caption" for k in IDS})
    b = from_mapping({k: f"b-{k} caption" for k in IDS})
    return a, b


def test_verdict_parsing_and_the_format_constraint():
    assert parse_verdict("Reason: more detail\nVerdict: 2") == ("2", "more detail")
    assert parse_verdict("thinking... Verdict: 1 ... no wait.\nReason: x\nVerdict: **Tie**") == ("tie", "x")
    assert parse_verdict("Verdict: Caption 1") == ("1", None)
    assert parse_verdict("Caption 1 is better.") == (None, None)
    assert parse_verdict("Verdict: 3") == (None, None)
    rx = verdict_regex(10)
    assert re.fullmatch(rx, "Reason: abc\nVerdict: tie")
    assert not re.fullmatch(rx, "Reason: 12345678901\nVerdict: 1")  # reason longer than 10 characters
    # A as Caption 1 ("ab") or as Caption 2 ("ba")
    assert [winner(v, True) for v in ("1", "2", "tie")] == ["a", "b", "tie"]
    assert [winner(v, False) for v in ("1", "2", "tie")] == ["b", "a", "tie"]
    assert combine("a", "a") == "a" and combine("b", "b") == "b" and combine("a", "b") == "tie"
    assert combine("tie", "a") == "tie" and combine("tie", "tie") == "tie"


def test_hand_worked_battles(images, tmp_path):
    judge = ScriptedBackend(default=judge_reply)
    engine = Arena(judge, settings=ArenaSettings(concurrency=3), prices=RolePrices.parse(["judge=1:2"], ("judge",)))
    a, b = sets()
    a.domains = {"win1": "natural", "bias": "natural", "lose": "natural", "half": "chart", "garbled": "chart"}
    doc, rows = run_sync(run_arena(a, b, images, engine, items_path=tmp_path / "items.jsonl"))
    by = {r["id"]: r for r in rows}
    assert [r["id"] for r in rows] == IDS
    assert {k: by[k]["outcome"] for k in IDS} == {"win1": "a", "bias": "tie", "lose": "b", "half": "tie",
                                                  "garbled": None, "win2": "a"}
    assert by["garbled"]["status"] == "error" and "order ba" in by["garbled"]["reason"]
    # both orders were asked, with the image, A first then B first
    assert len(judge.calls) == 2 * len(IDS) and all(c.with_image for c in judge.calls)
    assert [x["order"] for x in by["bias"]["rounds"]] == ["ab", "ba"]
    assert [x["winner"] for x in by["bias"]["rounds"]] == ["a", "b"]
    assert by["win1"]["rounds"][1]["reason"] == "win1 decides it"
    s = doc["summary"]
    # judged pairs: 5 (garbled is an error). wins: win1, win2 = 2; ties: bias, half = 2; losses: lose = 1.
    # score A = 100 * (wins - losses) / judged = 100 * (2 - 1) / 5 = 20; score B = -20.
    # win rate A = (wins + ties / 2) / judged = (2 + 1) / 5 = 0.6; win rate B = (1 + 1) / 5 = 0.4.
    # Verdict "1" among the 10 judged rounds: win1 ab, win2 ab, bias ab + ba, lose ba = 5 -> 0.5.
    # Orders that disagree: bias (a vs b), half (tie vs a) = 2.
    assert (s["pairs"], s["judged"], s["wins"], s["ties"], s["losses"], s["errors"]) == (6, 5, 2, 2, 1, 1)
    assert s["score_a"] == pytest.approx(20.0) and s["score_b"] == pytest.approx(-20.0)
    assert s["win_rate_a"] == pytest.approx(0.6) and s["win_rate_b"] == pytest.approx(0.4)
    assert s["first_position_rate"] == pytest.approx(0.5) and s["order_disagreements"] == 2
    # by domain: natural = win1 (win), bias (tie), lose (loss): score 0, win rate 1.5 / 3;
    # chart = half (tie), garbled (error): 1 judged, score 0, win rate 0.5; win2 has no domain: (none), one win
    dom = doc["by_domain"]
    assert list(dom) == ["(none)", "chart", "natural"]
    assert [(d["judged"], d["wins"], d["ties"], d["losses"], d["errors"], d["score_a"], d["win_rate_a"])
            for d in dom.values()] == [(1, 1, 0, 0, 0, 100.0, 1.0), (1, 0, 1, 0, 1, 0.0, 0.5), (3, 1, 1, 1, 0, 0.0, 0.5)]
    assert sum(d["cost"]["cost_usd"] for d in dom.values()) == pytest.approx(s["cost"]["cost_usd"])
    # cost: the scripted backend counts words; judge priced at $1 / $2 per 1M prompt / completion tokens
    t = by["win1"]["tokens"]
    assert by["win1"]["cost_usd"] == pytest.approx((t["judge_prompt"] * 1 + t["judge_completion"] * 2) / 1e6)
    assert s["cost"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    # the items file holds every pair with its verdicts and reasons
    lines = [json.loads(x) for x in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert [x["id"] for x in lines] == IDS and lines[0]["rounds"][0]["reason"] == "win1 decides it"


def test_constrained_judge_gets_the_format_regex(images):
    judge = ScriptedBackend(default=judge_reply, can_constrain=True)
    a, b = sets()
    run_sync(run_arena(a, b, images, Arena(judge, settings=ArenaSettings(reason_max_chars=50)), limit=1))
    assert {c.params.regex for c in judge.calls} == {verdict_regex(50)}
    plain = ScriptedBackend(default=judge_reply)
    run_sync(run_arena(a, b, images, Arena(plain), limit=1))
    assert {c.params.regex for c in plain.calls} == {None}  # never sent to a backend that cannot constrain


def test_missing_caption_and_image_are_recorded(images):
    a = from_mapping({"win1": "a-win1", "nothere": "a-x", "bias": "a-bias"})
    b = from_mapping({"win1": "b-win1", "nothere": "b-x"})
    doc, rows = run_sync(run_arena(a, b, images, Arena(ScriptedBackend(default=judge_reply))))
    assert [(r["id"], r["status"]) for r in rows] == [("win1", "scored"), ("nothere", "missing_image"),
                                                      ("bias", "missing_caption")]
    assert doc["summary"]["judged"] == 1 and doc["summary"]["partial"]


class Stop(Exception):
    """An interruption (not a per-item failure): the evaluation stops here."""


def test_resume_after_an_interruption(images, tmp_path):
    a, b = sets()
    full_items = tmp_path / "full.jsonl"
    full, _ = run_sync(run_arena(a, b, images, Arena(ScriptedBackend(default=judge_reply),
                                                     settings=ArenaSettings(concurrency=1)), items_path=full_items))
    calls = {"n": 0}

    def dying(prompt, params):
        calls["n"] += 1
        if calls["n"] > 4:  # pairs win1 and bias finished (2 calls each), the third dies
            raise Stop()
        return judge_reply(prompt, params)

    items = tmp_path / "items.jsonl"
    with pytest.raises(Stop):
        run_sync(run_arena(a, b, images, Arena(ScriptedBackend(default=dying), settings=ArenaSettings(concurrency=1)),
                           items_path=items))
    kept = [json.loads(x)["id"] for x in items.read_text().splitlines()]
    assert kept == ["win1", "bias"]
    with open(items, "a") as f:
        f.write('{"id": "lose", "sta')  # the line being written when the process died
    # without --resume the journal is not clobbered
    with pytest.raises(EvalInputError, match="--resume"):
        run_sync(run_arena(a, b, images, Arena(ScriptedBackend(default=judge_reply)), items_path=items))
    # other settings: refused
    with pytest.raises(EvalInputError, match="other models, prompts or settings"):
        run_sync(run_arena(a, b, images, Arena(ScriptedBackend(default=judge_reply),
                                               settings=ArenaSettings(max_tokens=99)), items_path=items, resume=True))
    judge = ScriptedBackend(default=judge_reply)
    doc, rows = run_sync(run_arena(a, b, images, Arena(judge, settings=ArenaSettings(concurrency=1)),
                                   items_path=items, resume=True))
    # only the 4 unfinished pairs were judged; garbled (an error) would be retried on another resume
    assert len(judge.calls) == 2 * 4 and doc["summary"]["resumed"] == 2
    strip = lambda d: {k: v for k, v in d["summary"].items() if k != "resumed"}  # noqa: E731
    assert strip(doc) == strip(full)
    assert items.read_text() == full_items.read_text()  # the same file as a run that never stopped

    # a resume retries the failed pair: with a judge that reads well, garbled is now judged
    fixed = ScriptedBackend(default=lambda p, q: "Reason: ok\nVerdict: tie")
    doc2, _ = run_sync(run_arena(a, b, images, Arena(fixed, settings=ArenaSettings(concurrency=1)),
                                 items_path=items, resume=True))
    assert len(fixed.calls) == 2 and doc2["summary"]["errors"] == 0 and doc2["summary"]["ties"] == 3


def test_a_text_only_judge_is_refused():
    with pytest.raises(EvalInputError, match="vision"):
        Arena(ScriptedBackend(vision=False))


# ----------------------------------------------------------------------------- tiny real model

def test_arena_end_to_end_with_tiny_vlm(tiny_models, sample_images, tmp_path):
    folder = tmp_path / "img"
    folder.mkdir()
    for k in ("astronaut", "coffee"):
        (folder / sample_images[k].name).write_bytes(sample_images[k].read_bytes())
    a = tmp_path / "mine.json"
    b = tmp_path / "base.json"
    a.write_text(json.dumps({"astronaut": "An astronaut in a white suit.", "coffee": "A cup of coffee."}))
    b.write_text(json.dumps({"astronaut": "A person.", "coffee": "A red cup of tea on a saucer."}))
    out = tmp_path / "arena.json"
    args = ["arena", str(a), "--against", str(b), "--images", str(folder), "--judge", str(tiny_models["qwen2vl"]),
            "--max-tokens", "40", "--reason-chars", "12", "--price", "judge=0.5:1.5", "-o", str(out)]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    doc = json.loads(out.read_text())
    s = doc["summary"]
    # constrained decoding: every random reply is a well-formed verdict
    assert s["judged"] == 2 and s["errors"] == 0 and s["wins"] + s["ties"] + s["losses"] == 2
    rows = [json.loads(x) for x in out.with_name("arena.items.jsonl").read_text().splitlines()]
    for r in rows:
        for x in r["rounds"]:
            assert re.fullmatch(verdict_regex(12), x["response"]), x["response"]
            assert x["verdict"] in ("1", "2", "tie")
        assert r["cost_usd"] > 0
    assert s["cost"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows))
    # an existing items file is not overwritten; --resume keeps both pairs and judges nothing new
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = runner.invoke(app, args + ["--resume"])
    assert resumed.exit_code == 0, resumed.output
    assert json.loads(out.read_text())["summary"]["resumed"] == 2
    # in compare, against the same baseline
    cmp_out = tmp_path / "cmp.md"
    res = runner.invoke(app, ["compare", str(a), str(b), "--metric", "arena", "--against", str(b), "--images",
                              str(folder), "--judge", str(tiny_models["qwen2vl"]), "--max-tokens", "40",
                              "--reason-chars", "12", "-o", str(cmp_out)])
    assert res.exit_code == 0, res.output
    head, _, mine, base = cmp_out.read_text().splitlines()
    assert "win rate %" in head and mine.startswith("| mine | 2 | ") and base.startswith("| base | 2 | ")
    assert mine.endswith("| 0 | base |")  # no errors, against base


# ----------------------------------------------------------------------------- inputs

def test_images_from_the_sources_of_a_results_file(tmp_path):
    from scalecap.eval.judged import result_sources
    from scalecap.records import CaptionResult

    (tmp_path / "pics").mkdir()
    Image.new("RGB", (8, 8)).save(tmp_path / "pics" / "one.png")
    rows = [CaptionResult(id="one", source="pics/one.png", status="ok", final_caption="x"),
            CaptionResult(id="two", source="pics/gone.png", status="ok", final_caption="y"),
            CaptionResult(id="web", source="https://example.org/w.jpg", status="ok", final_caption="z")]
    run = tmp_path / "run.jsonl"
    run.write_text("".join(r.to_json() + "\n" for r in rows))
    finder = ImageFinder(None, result_sources(run), base=tmp_path)
    assert finder.find("one") == tmp_path / "pics" / "one.png"
    assert finder.find("two") is None and finder.find("web") is None  # missing file; URLs are not fetched


def test_bad_inputs_end_with_exit_2_and_one_line(tmp_path):
    a = tmp_path / "a.json"
    a.write_text(json.dumps({"x": "cap"}))
    res = runner.invoke(app, ["arena", str(a), "--against", str(a), "--judge", "whatever"])
    assert res.exit_code == 2 and "--images" in res.output
    img = tmp_path / "img"
    img.mkdir()
    Image.new("RGB", (8, 8)).save(img / "x.png")
    res = runner.invoke(app, ["arena", str(a), "--against", str(a), "--images", str(img), "--judge", "j",
                              "--price", "writer=1"])
    assert res.exit_code == 2 and "not a role of this metric" in res.output
    res = runner.invoke(app, ["arena", str(a), "--against", str(a), "--images", str(img)])
    assert res.exit_code == 2 and "a judge model is needed" in res.output
    res = runner.invoke(app, ["dcscore", str(a), "--images", str(img), "--judge", "j"])
    assert res.exit_code == 2 and "a decomposer model is needed" in res.output
    res = runner.invoke(app, ["dcscore", str(a), "--images", str(tmp_path / "nope"), "--judge", "j"])
    assert res.exit_code == 2 and "is not a folder" in res.output
    res = runner.invoke(app, ["arena", str(a), "--against", str(a), "--images", str(img), "--judge", "j", "--resume",
                              "-o", str(tmp_path / "r.json")])
    assert res.exit_code == 2 and "does not exist" in res.output
