"""The report without a browser: numbers, escaping, layouts, prices, the command."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import math
import re
from pathlib import Path

import pytest
import typer
from PIL import Image
from report_data import EXPECTED, HOSTILE, filterable_run, many_records, write_run
from typer.testing import CliRunner

from scalecap.report import (
    Price,
    PriceError,
    Prices,
    ReportError,
    build_report,
    json_for_html,
)
from scalecap.report.cli import report_command
from scalecap.report.data import quantize_score

DATA_RE = re.compile(r'<script type="application/json" id="scalecap-data">(.*?)</script>', re.DOTALL)
ASSETS = Path(__file__).resolve().parents[2] / "scalecap" / "report" / "assets"


def page_data(html_path: Path) -> tuple[str, dict]:
    text = html_path.read_text(encoding="utf-8")
    blocks = DATA_RE.findall(text)
    assert len(blocks) == 1
    return text, json.loads(blocks[0])


def markup(html: str) -> str:
    """The page without the contents of its script and style elements."""
    return re.sub(r"(<script[^>]*>|<style>).*?(</script>|</style>)", r"\1\2", html, flags=re.DOTALL)


def js_payload(path: Path, call: str) -> list:
    """The arguments of a data file ``window.CALL([N,] JSON.parse("..."));``."""
    text = path.read_text(encoding="utf-8")
    m = re.fullmatch(rf'window\.{call}\((?:(\d+),)?JSON\.parse\(("[^\n]*")\)\);\n', text)
    assert m, text[:200]
    for ch in "<>&\u2028\u2029":
        assert ch not in text
    data = json.loads(json.loads(m.group(2)))
    return [int(m.group(1)), data] if m.group(1) is not None else [data]


# ------------------------------------------------------------------------------ numbers
def test_summary_numbers_on_crafted_run(crafted_run: Path, tmp_path: Path) -> None:
    prices = Prices.parse(["captioner=0.2:0.8", "scorer=0.1", "final=1:2"], prompt=0.5, completion=1.5)
    s = build_report(crafted_run, tmp_path / "report.html", prices=prices)
    assert s.layout == "single" and s.files_dir is None
    for key in ("records", "ok", "failed", "filtered", "unreadable", "sentences", "sentences_kept",
                "answer_sentences", "answer_sentences_kept", "questions", "questions_kept", "fallbacks"):
        assert getattr(s, key) == EXPECTED[key], key
    assert s.failures_by_kind == EXPECTED["failures_by_kind"]
    assert s.filtered_by_reason == EXPECTED["filtered_by_reason"]
    assert {k: (v.calls, v.prompt_tokens, v.completion_tokens) for k, v in s.stages.items()} == EXPECTED["stages"]
    assert list(s.stages) == list(EXPECTED["stages"])  # pipeline order
    # cost: stage price, else role price, else the default
    want = {
        "caption": Price(0.2, 0.8), "answers": Price(0.2, 0.8),
        "caption_rating": Price(0.1, 0.1), "answer_rating": Price(0.1, 0.1),
        "final": Price(1, 2),
        "instructions": Price(0.5, 1.5), "object_summary": Price(0.5, 1.5), "position_summary": Price(0.5, 1.5),
    }
    total = 0.0
    for stage, (_calls, p, c) in EXPECTED["stages"].items():
        cost = (p * want[stage].prompt + c * want[stage].completion) / 1e6
        assert s.stages[stage].cost == pytest.approx(cost)
        total += cost
    assert s.total_cost == pytest.approx(total)
    assert s.total_tokens == sum(p + c for _, p, c in EXPECTED["stages"].values())
    assert s.unpriced_stages == [] and s.unused_prices == []
    assert s.score_modes == {"prob": 8} and s.taus == {"prob": [0.1]}
    assert s.records_with_tokens == 1
    # kept ratio per ok image: 3/6, 3/4, 0/2, 1/2; the failed oom_3 has no sentences
    kr = s.histograms["kept_ratio"]
    assert kr.n == 4 and kr.edges[0] == 0.0 and kr.edges[-1] == 1.0
    assert kr.counts[0] == 1 and kr.counts[10] == 2 and kr.counts[15] == 1
    sh = s.score_histograms["prob"]
    assert sh.n == 13  # 14 sentences, one without a content word
    assert sh.edges[0] <= 0.0412 and sh.edges[-1] >= 0.512
    assert s.histograms["caption_words"].n == 4
    assert s.histograms["tokens_per_image"].n == 5  # four ok images + the failed one with usage


def test_prices_without_default_leave_stages_unpriced(crafted_run: Path, tmp_path: Path) -> None:
    s = build_report(crafted_run, tmp_path / "r.html", prices={"captioner": (0.2, 0.8), "typo_stage": 1.0})
    assert s.stages["caption"].cost == pytest.approx((5520 * 0.2 + 193 * 0.8) / 1e6)
    assert s.stages["final"].cost is None
    assert "final" in s.unpriced_stages and "caption" not in s.unpriced_stages
    assert s.unused_prices == ["typo_stage"]
    s2 = build_report(crafted_run, tmp_path / "r2.html")
    assert s2.total_cost is None and not s2.prices_given
    assert all(v.cost is None for v in s2.stages.values())


def test_price_parsing() -> None:
    p = Prices.parse(["caption=0.2:0.8", "writer=3", "*=0.1:0.4"])
    assert p.for_stage("caption") == Price(0.2, 0.8)
    assert p.for_stage("final") == Price(3, 3)  # role
    assert p.for_stage("answer_rating") == Price(0.1, 0.4)  # default
    assert Prices.parse([], prompt=1.0).for_stage("x") == Price(1.0, 0.0)
    assert not Prices.parse([]).given
    for bad in ("caption", "caption=", "=1:2", "caption=a:b", "caption=-1", "caption=1:nan"):
        with pytest.raises(PriceError):
            Prices.parse([bad])


def test_unreadable_lines_are_counted_and_listed(crafted_run: Path, tmp_path: Path) -> None:
    s = build_report(crafted_run, tmp_path / "r.html")
    assert [u.line for u in s.unreadable_lines] == [4, 9, 12]  # the blank line 5 is no record and no error
    assert "JSON" in s.unreadable_lines[0].error
    assert "UTF-8" in s.unreadable_lines[1].error
    assert s.unreadable_lines[2].error.startswith("status")
    _, data = page_data(tmp_path / "r.html")
    assert data["overview"]["unreadable"] == 3
    assert [u["line"] for u in data["overview"]["unreadable_lines"]] == [4, 9, 12]
    assert data["index"]["ids"] == ["coco_000139", "web_<b>hostile</b>", "street_42", "kitchen_remote",
                                   "broken_7", "oom_3", "icon_16", "dup_0139"]


def test_empty_and_all_malformed_runs(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    s = build_report(empty, tmp_path / "empty.html")
    assert s.records == 0 and s.unreadable == 0 and (tmp_path / "empty.html").is_file()
    bad = tmp_path / "bad.jsonl"
    bad.write_text("not json\n[1, 2]\n{\"id\": 1}\n")
    s = build_report(bad, tmp_path / "bad.html")
    assert s.records == 0 and s.unreadable == 3
    with pytest.raises(ReportError):
        build_report(tmp_path / "missing.jsonl", tmp_path / "x.html")


# ------------------------------------------------------------------------------ escaping
def test_json_for_html_escapes_and_round_trips() -> None:
    nasty = ["</script><script>alert(1)</script>", "<!-- x", "a & b > c", "\u2028\u2029", "{{DATA}}",
             "\"quoted\" \\ back", "emoji \U0001F600", "\x00\x1f"]
    text = json_for_html({"v": nasty})
    for ch in "<>&\u2028\u2029":
        assert ch not in text
    assert json.loads(text) == {"v": nasty}


def test_hostile_text_stays_data(crafted_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    build_report(crafted_run, out)
    html, data = page_data(out)
    block = DATA_RE.search(html)
    outside = markup(html)
    for needle in ("alert(", "onerror", "javascript:", "<img", "{{", "<b>", "<i>"):
        assert needle not in outside, needle
    for ch in "<>&\u2028\u2029":
        assert ch not in block.group(1)
    # exactly our two script elements: the data block and the page script
    assert len(re.findall(r"<script\b", html, re.IGNORECASE)) == 2
    assert len(re.findall(r"</script", html, re.IGNORECASE)) == 2
    # the data parses back to exactly what the run holds
    rec = data["records"][1]
    assert rec["id"] == "web_<b>hostile</b>"
    assert rec["final"] == "Final: " + " ".join(HOSTILE)
    assert HOSTILE[0] in rec["first"] and "\u2028" in rec["first"] and "{{SCRIPT}}" in rec["first"]
    assert rec["q"][0]["o"] == "sign <i>x</i>" and rec["meta"]["html"] == HOSTILE[0]
    # sentence offsets index the caption (the page slices the text with them)
    s3 = rec["sent"][3]
    assert rec["first"][s3["a"]:s3["b"]].startswith("Someone wrote </script>")
    assert data["search"][1].startswith("web_<b>hostile</b> images/sign.png a sign reads <script>")


def test_content_security_policy_allows_only_our_script(crafted_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "r.html"
    build_report(crafted_run, out)
    html = out.read_text(encoding="utf-8")
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    script = re.search(r"<script>(.*?)</script>", html, re.DOTALL).group(1)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert f"'sha256-{digest}'" in csp.replace("&#x27;", "'")
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert csp.startswith(("default-src &#x27;none&#x27;", "default-src 'none'"))
    assert "http" not in csp


def test_page_script_uses_no_html_sinks() -> None:
    js = (ASSETS / "report.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function",
                 "fetch(", "XMLHttpRequest", "</script", "<script", "<!--"):
        assert sink not in js, sink
    for asset in ASSETS.iterdir():
        text = asset.read_text(encoding="utf-8")
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), asset.name  # no CDN, no fonts


# ------------------------------------------------------------------------------ thumbnails
def test_thumbnails_embedded_as_data_uris(crafted_run: Path, tmp_path: Path) -> None:
    s = build_report(crafted_run, tmp_path / "r.html", thumb_size=96)
    _, data = page_data(tmp_path / "r.html")
    recs = {r["id"]: r for r in data["records"]}
    # absolute path, path relative to the run file, and a second record of the same file share thumbnails
    assert s.thumbnails == 3 and s.placeholders == 4
    assert recs["dup_0139"]["th"] == recs["coco_000139"]["th"]
    for rid in ("coco_000139", "web_<b>hostile</b>", "street_42"):
        uri = data["thumbs"][recs[rid]["th"]]
        assert uri.startswith("data:image/jpeg;base64,")
        im = Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))
        assert im.format == "JPEG" and max(im.size) <= 96
    assert "th" not in recs["kitchen_remote"]  # an http source: placeholder, but a link
    assert recs["kitchen_remote"]["href"] == "https://images.example.org/kitchen.jpg"
    assert "th" not in recs["broken_7"] and "href" not in recs["broken_7"]
    assert recs["coco_000139"]["href"].startswith("file:///")
    s2 = build_report(crafted_run, tmp_path / "r2.html", images_root=tmp_path / "nowhere")
    assert s2.thumbnails == 1  # only the absolute path is found (its name under the root is not)
    s3 = build_report(crafted_run, tmp_path / "r3.html", thumbnails=False)
    assert s3.thumbnails == 0 and page_data(tmp_path / "r3.html")[1]["thumbs"] == []


# ------------------------------------------------------------------------------ layouts
def test_folder_layout_writes_relative_data_files(tmp_path: Path) -> None:
    run = many_records(60, tmp_path)
    out = tmp_path / "site" / "big report.html"
    s = build_report(run, out, single_file_limit=10, chunk_size=8)
    assert s.layout == "folder" and s.records == 60
    files = tmp_path / "site" / "big report_files"
    assert s.files_dir == files
    html, data = page_data(out)
    assert data["layout"] == "folder" and data["files"] == "big%20report_files/"
    assert "records" not in data and "search" not in data and "scores" not in data
    assert len(data["index"]["ids"]) == 60
    # nothing in the page points at an absolute location or the network
    outside = markup(html)
    outside = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", outside)
    assert str(tmp_path) not in outside
    assert re.findall(r"""\b(?:src|href)\s*=""", outside) == []  # the markup loads nothing itself
    assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", outside)
    assert str(tmp_path) not in json.dumps(data["index"]) and data["files"] == "big%20report_files/"
    chunk_files = sorted((files / "chunks").iterdir())
    assert [p.name for p in chunk_files] == [f"c{i:05d}.js" for i in range(8)]
    seen = []
    for i, p in enumerate(chunk_files):
        n, recs = js_payload(p, "scalecapReportChunk")
        assert n == i and len(recs) == (8 if i < 7 else 4)
        seen.extend(r["seq"] for r in recs)
    assert seen == list(range(60))
    (search,) = js_payload(files / "search.js", "scalecapReportSearch")
    assert len(search) == 60 and search[42].startswith("safari_0042 ")
    (scores,) = js_payload(files / "scores.js", "scalecapReportScores")
    assert len(scores["cap"]["off"]) == 61 and len(scores["cap"]["s"]) == 180 == len(scores["cap"]["k"])
    assert sorted(p.name for p in (files / "thumbs").iterdir()) == ["t0.jpg"]
    assert (files / ".scalecap-report").is_file()
    assert s.bytes_written > out.stat().st_size


def test_layout_switch_and_foreign_folder(tmp_path: Path) -> None:
    run = many_records(12, tmp_path)
    out = tmp_path / "r.html"
    build_report(run, out, single_file_limit=5)
    assert (tmp_path / "r_files" / "chunks").is_dir()
    build_report(run, out)  # single file now: our stale folder goes
    assert not (tmp_path / "r_files").exists()
    foreign = tmp_path / "mine_files"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    with pytest.raises(ReportError):
        build_report(run, tmp_path / "mine.html", single_file_limit=5)
    assert (foreign / "precious.txt").read_text() == "keep me"
    build_report(run, tmp_path / "mine.html")  # single file: the foreign folder is left alone
    assert (foreign / "precious.txt").is_file()


def test_scores_keep_their_side_of_tau() -> None:
    tau = 0.1
    for score in (0.10000001, 0.099999999, 0.1, 0.12345678, -0.5, 1e-9, 0.100049999):
        q = quantize_score(score, tau)
        assert (q > tau) == (score > tau)
        assert abs(q - score) <= 1e-3 * max(abs(score), 1e-6) + 1e-9
    assert quantize_score(None, tau) is None and quantize_score(math.inf, tau) is None
    assert quantize_score(0.123456, None) == 0.1235


def test_page_index_matches_stored_decisions(crafted_run: Path, tmp_path: Path) -> None:
    build_report(crafted_run, tmp_path / "r.html")
    _, data = page_data(tmp_path / "r.html")
    sc, ix = data["scores"], data["index"]
    # at the run's own tau the stored scores reproduce every stored decision
    for j, s in enumerate(sc["cap"]["s"]):
        assert (s is not None and s > 0.1) == (sc["cap"]["k"][j] == "1")
    for j, s in enumerate(sc["ans"]["s"]):
        assert (s is not None and s > 0.1) == (sc["ans"]["k"][j] == "1")
    assert ix["status"] == [0, 0, 0, 0, 1, 1, 2, 2]
    assert ix["ratio"] == [0.5, 0.75, 0.0, 0.5, None, None, None, None]
    assert [data["reasons"][r] if r >= 0 else None for r in ix["reason"]] == [
        None, None, None, None, "unreadable", "model", "too_small", "duplicate"]
    tok = data["records"][0]["sent"][1]["tok"]
    assert ["television", 0.3107, 1] in [[t[0].strip(), t[1], t[2]] for t in tok]


# ------------------------------------------------------------------------------ command
def test_report_command(tmp_path: Path) -> None:
    run = write_run(tmp_path)
    app = typer.Typer()
    app.command("report")(report_command)
    app.command("noop")(lambda: None)  # a second command keeps "report" a subcommand, as in scalecap's CLI
    runner = CliRunner()
    out = tmp_path / "out" / "report.html"
    res = runner.invoke(app, ["report", str(run), "-o", str(out), "--price", "captioner=0.2:0.8",
                              "--price-prompt", "0.5", "--price-completion", "1.5", "--single-file-limit", "4",
                              "--chunk-size", "3", "--no-thumbnails"])
    assert res.exit_code == 0, res.output
    assert out.is_file() and (tmp_path / "out" / "report_files" / "chunks" / "c00002.js").is_file()
    assert str(out) in res.output
    res = runner.invoke(app, ["report", str(run), "-o", str(tmp_path / "x.html"), "--price", "caption"])
    assert res.exit_code == 2 and "NAME=PROMPT" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "nope.jsonl")])
    assert res.exit_code == 1
    res = runner.invoke(app, ["report", str(run)])  # default output: beside the run
    assert res.exit_code == 0 and (tmp_path / "run.html").is_file()


def test_mixed_score_modes_and_missing_fingerprint(tmp_path: Path) -> None:
    from report_data import FINGERPRINT, sent

    logit_fp = {**FINGERPRINT, "id": "logit000000000001", "score_mode": "logit", "tau": 1.0}
    text = "A red kite flies over the beach. Two people watch it."
    recs = [
        {"id": "p1", "source": "a.jpg", "status": "ok", "first_caption": text, "fingerprint": FINGERPRINT,
         "sentences": [sent(text, "A red kite flies over the beach.", 0.31, True),
                       sent(text, "Two people watch it.", 0.02, False)]},
        {"id": "l1", "source": "b.jpg", "status": "ok", "first_caption": text, "fingerprint": logit_fp,
         "sentences": [sent(text, "A red kite flies over the beach.", 3.7, True),
                       sent(text, "Two people watch it.", 0.4, False)]},
        {"id": "n1", "source": "c.jpg", "status": "ok", "first_caption": text,
         "sentences": [sent(text, "A red kite flies over the beach.", 0.5, True)]},
    ]
    run = tmp_path / "mixed.jsonl"
    run.write_text("".join(json.dumps(r) + "\n" for r in recs))
    s = build_report(run, tmp_path / "mixed.html")
    assert s.score_modes == {"prob": 1, "logit": 1}
    assert s.taus == {"prob": [0.1], "logit": [1.0]}
    assert set(s.score_histograms) == {"prob", "logit", "unknown"}
    _, data = page_data(tmp_path / "mixed.html")
    assert data["index"]["fp"] == [0, 1, -1]
    assert [f["score_mode"] for f in data["overview"]["fingerprints"]] == ["prob", "logit"]


def test_corrections_and_adaptive_budgets_are_shown_and_searchable() -> None:
    from scalecap.records import AdaptiveBudget, CaptionResult, Correction, SentenceDiff, Wave
    from scalecap.report.data import Collector

    rec = CaptionResult(
        id="c1", source="c1.jpg", status="ok", first_caption="A cat.", final_caption="A cat. A dragon.",
        correction=Correction(caption="A cat. A mug.", diff=SentenceDiff(
            added=["A mug."], removed=["A dragon."], kept=["A cat."], rejected=["A crown."])),
        adaptive_budget=AdaptiveBudget(wave_size=2, threshold=0.25, max_objects=4, planned=4, asked=2, saved=2,
                                       stop="novelty", waves=[Wave(objects=["cat", "mug"], words=["cat"],
                                                                   new_words=[], novelty=0.0)]))
    plain = CaptionResult(id="p1", source="p1.jpg", status="ok", final_caption="A dog.")
    col = Collector()
    d = col.add(rec)
    assert d["corr"] == {"c": "A cat. A mug.", "add": ["A mug."], "rm": ["A dragon."], "rej": ["A crown."], "n": 0, "na": 0}
    assert d["ab"] == {"stop": "novelty", "asked": 2, "planned": 4, "nov": [0.0]}
    words = col.search_text(rec).split()
    assert {"mug.", "corrected", "corrected:added", "corrected:removed", "corrected:rejected",
            "budget:novelty"} <= set(words)
    assert "corr" not in col.add(plain) and "corrected" not in col.search_text(plain).split()


def test_domains_ocr_evidence_and_filter_hits_are_shown_and_searchable() -> None:
    from scalecap.records import CaptionResult, DomainInfo, FilterHit, OcrEvidence, Question, QuoteMark
    from scalecap.report.data import Collector

    rec = CaptionResult(
        id="d1", source="page.png", status="ok", first_caption="A page.", final_caption='It reads "Springer".',
        domain=DomainInfo(id="infographic_document", source="routed", confidence=2),
        ocr=OcrEvidence(engine="tesseract:eng", text="markers of the coins",
                        quotes=[QuoteMark(sentence='It reads "Springer".', quote="Springer", similarity=0.3,
                                          supported=False)]),
        filter_hits=[FilterHit(stage="final", code="refusal", detail="starts as a refusal")],
        questions=[Question(object="page", kind="object", instruction="Describe more details about the page.",
                            filter_hits=[FilterHit(stage="answers", code="repetition", detail="loop", action="drop")])])
    col = Collector()
    d = col.add(rec)
    assert d["dom"] == {"id": "infographic_document", "src": "routed", "conf": 2}
    assert d["ocr"] == {"eng": "tesseract:eng", "text": "markers of the coins",
                        "q": [{"q": "Springer", "ok": False, "sim": 0.3, "drop": False}]}
    assert [(h["st"], h["c"], h["a"]) for h in d["fh"]] == [("final", "refusal", "mark"), ("answers", "repetition", "drop")]
    words = set(col.search_text(rec).split())
    assert {"domain:infographic_document", "domain:routed", "ocr", "ocr:unsupported", "filter:refusal",
            "filter:repetition"} <= words
    plain = CaptionResult(id="p1", source="p1.jpg", status="ok", final_caption="A dog.")
    assert not {"dom", "ocr", "fh"} & set(col.add(plain)) and "filter" not in col.search_text(plain).split()


def test_filter_columns_for_corrections_domains_ocr_and_hits(tmp_path: Path) -> None:
    build_report(filterable_run(tmp_path), tmp_path / "f.html")
    _, data = page_data(tmp_path / "f.html")
    ix = data["index"]
    # bits: 1 ran, 2 caption changed, 4 a round rejected (records in filterable_run's order)
    assert ix["corr"] == [1 | 2, 1 | 4, 1 | 2 | 4, 1, 0, 0]
    assert data["domains"] == ["natural", "(unknown)", "infographic_document"]
    assert ix["dom"] == [0, 0, 0, 1, 2, -1]
    assert ix["ocr"] == [0, 0, 0, 1, 2, 0]  # 1 read, 2 a quote not in the OCR text
    assert data["hit_codes"] == ["refusal", "repetition"]
    assert ix["fh"] == [[0, 1], [], [], [], [1], []]
    assert [r["corr"]["na"] for r in data["records"][:4]] == [0, 1, 1, 0]


def test_rejected_captions_and_judge_verdicts_are_in_the_report(tmp_path):
    from scalecap.records import CaptionResult, JudgeScore, JudgeVerdict

    dims = ["accuracy", "completeness", "reasoning_rigour", "intent", "professionalism"]

    def verdict(low: str | None) -> JudgeVerdict:
        scores = [JudgeScore(dimension=d, score=2 if d == low else 3, reason=f"<b>{d}</b> ok") for d in dims]
        return JudgeVerdict(scores=scores, thresholds={d: 3 for d in dims}, below=[low] if low else [],
                            kept=low is None)

    recs = [CaptionResult(id="kept", source="a.jpg", status="ok", final_caption="A cat.", judge=verdict(None)),
            CaptionResult(id="rej", source="b.jpg", status="rejected", final_caption="A dragon.",
                          judge=verdict("accuracy"))]
    run = tmp_path / "judged.jsonl"
    run.write_text("".join(r.to_json() + "\n" for r in recs), encoding="utf-8")
    summary = build_report(run, tmp_path / "j.html")
    html, data = page_data(tmp_path / "j.html")
    assert summary.records == 2 and data["overview"]["rejected"] == 1 and data["overview"]["ok"] == 1
    assert data["index"]["status"] == [0, 3]
    judged = {r["id"]: r["judge"] for r in data["records"]}
    assert judged["rej"]["kept"] is False and judged["rej"]["below"] == ["accuracy"]
    assert [s["v"] for s in judged["rej"]["s"]] == [2, 3, 3, 3, 3] and judged["kept"]["kept"] is True
    assert "<b>accuracy</b>" not in markup(html)  # reasons are data, never markup
