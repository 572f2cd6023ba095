"""The report as a user sees it, in headless Chromium (Debian's /usr/bin/chromium via playwright).

Every test fails if the page requests anything but file: or data: URLs, logs a JavaScript error or
warning, or opens a dialog (see ``PageWatch`` in conftest). Screenshots go to pytest's tmp_path.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest
from report_data import HOSTILE, filterable_run, many_records

from scalecap.report import build_report

pytestmark = pytest.mark.browser


def wait_js(page, expr: str, arg=None, timeout: float = 30.0) -> None:
    """Poll a JS function until it returns something truthy.

    (Playwright's wait_for_function evaluates its predicate with eval() inside the page, which the
    report's Content-Security-Policy forbids, as it should; page.evaluate is not subject to it.)
    """
    deadline = time.monotonic() + timeout
    while True:
        if page.evaluate(expr, arg):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expr} ({arg!r})")
        page.wait_for_timeout(25)


def stat(page, key: str) -> str:
    return page.inner_text(f"[data-stat='{key}'] .v")


def set_tau(page, value: float) -> None:
    """Move the slider the way a user does: set its value, then fire the input event."""
    page.eval_on_selector("#tau-slider", "(s, v) => { s.value = String(v); s.dispatchEvent(new Event('input', {bubbles: true})); }",
                          value)
    wait_js(page, "v => window.scalecapReport.tau && Math.abs(window.scalecapReport.tau.value - v) < 1e-9", value)


def visible_cards(page) -> list[str]:
    return page.eval_on_selector_all("#cards article.card h3.rid", "els => els.map(e => e.textContent)")


def wait_cards(page, n: int) -> None:
    wait_js(page, "n => document.querySelectorAll('#cards article.card').length === n", n)


def test_single_file_report(crafted_run: Path, tmp_path: Path, watch) -> None:
    out = tmp_path / "report.html"
    build_report(crafted_run, out, prices={"*": (0.5, 1.5)})
    watch.open(out)
    page = watch.page

    # overview numbers
    assert stat(page, "records") == "8"
    assert stat(page, "ok") == "4"
    assert stat(page, "failed") == "2"
    assert stat(page, "filtered") == "2"
    assert stat(page, "unreadable") == "3"
    assert stat(page, "sentences") == "7 / 14"
    assert stat(page, "cost").startswith("$")
    caption_row = page.inner_text("#stage-table tbody tr:first-child")
    assert "caption" in caption_row and "5,520" in caption_row and "193" in caption_row
    assert page.locator("#chart-scores svg rect").count() > 0
    assert page.locator("#unreadable tbody tr").count() == 3

    # a card: final caption, a kept and a dropped sentence with their scores
    card = page.locator("#card-0")
    assert "A cozy living room: a large gray three-cushion sofa" in card.locator(".final").inner_text()
    kept = page.locator("#r0-c0")
    assert "kept" in kept.get_attribute("class") and "0.4213" in kept.locator(".score").inner_text()
    dropped = page.locator("#r0-c2")
    assert "dropped" in dropped.get_attribute("class")
    assert dropped.inner_text().startswith("There is a cat sleeping on the windowsill.")
    assert "0.0412" in dropped.locator(".score").inner_text()
    # token detail on click: content tokens marked, the maximum outlined
    page.click("#r0-c1")
    assert page.locator("#card-0 .tokbox .tok.content.max").inner_text().strip() == "television"
    # questions: a dropped one says so
    page.click("#card-0 details.qdetails > summary")
    # the list is built by the details' toggle event, a task after the click: wait until it is built
    page.wait_for_selector("#card-0 details.qdetails[open][data-built='1'] .qlist")
    assert page.locator("#card-0 .qlist li.dropped").count() == 2
    # a failed image shows its error
    assert "CUDA out of memory" in page.locator("#card-5 .error").inner_text()

    # tau: lower it, decisions flip from dropped to kept; raise it, the other way
    assert stat(page, "flip-kd") == "0" and stat(page, "flip-dk") == "0"
    set_tau(page, 0.05)
    assert stat(page, "flip-dk") == "5" and stat(page, "flip-kd") == "0"
    assert stat(page, "flip-ans-dk") == "2"
    assert page.locator("#flip-list li").count() == 7
    set_tau(page, 0.3)
    assert stat(page, "flip-kd") == "4" and stat(page, "flip-dk") == "0"
    assert stat(page, "flip-ans-kd") == "5"
    page.wait_for_selector("#r0-c4.flip")  # the card marks the sentence that would flip
    # a flip links to its card
    page.click("#flip-list li:first-child a")
    wait_cards(page, 1)
    page.wait_for_selector(".sent.hl")
    page.click("text=Back to the list")
    wait_cards(page, 8)
    # an answer sentence's flip opens the card's questions at that sentence
    page.click("#flip-list a[href*='&s=a'] >> nth=0")
    wait_cards(page, 1)
    page.wait_for_selector(".qlist .sent.hl.flip")
    page.click("text=Back to the list")
    wait_cards(page, 8)
    page.fill("#tau-number", "0.1")
    wait_js(page, "() => window.scalecapReport.tau.value === 0.1")
    assert stat(page, "flip-kd") == "0" and stat(page, "flip-dk") == "0"

    # search and filters
    page.fill("#search", "street_42")
    wait_cards(page, 1)
    assert visible_cards(page) == ["street_42"]
    page.fill("#search", "cabinet")  # caption text
    wait_cards(page, 2)  # "cabinet" and "cabinets"
    assert sorted(visible_cards(page)) == ["coco_000139", "kitchen_remote"]
    page.fill("#search", "")
    wait_cards(page, 8)
    page.select_option("#f-status", "1")
    wait_cards(page, 2)
    assert visible_cards(page) == ["broken_7", "oom_3"]
    page.select_option("#f-status", "-1")
    # a run without corrections, domains, OCR or filter hits gets no filter for them
    assert page.locator("#f-corr, #f-domain, #f-ocr, #f-hits").count() == 0
    page.fill("#f-rmin", "0.6")
    wait_cards(page, 1)
    assert visible_cards(page) == ["web_<b>hostile</b>"]

    # hostile text is text
    hostile = page.locator("#card-1")
    assert hostile.locator(".final").inner_text() == "Final: " + " ".join(HOSTILE)
    assert hostile.locator("h3.rid").inner_text() == "web_<b>hostile</b>"
    assert page.locator("img[src='x'], #cards b, #cards i, a[href^='javascript']").count() == 0
    assert page.evaluate("document.scripts.length") == 2
    page.screenshot(path=str(tmp_path / "single.png"), full_page=True)
    page.fill("#f-rmin", "0")
    wait_cards(page, 8)
    page.screenshot(path=str(tmp_path / "single-full.png"), full_page=True)
    watch.assert_clean()


def test_correction_domain_ocr_and_hit_filters(tmp_path: Path, watch) -> None:
    out = tmp_path / "f.html"
    build_report(filterable_run(tmp_path), out)
    watch.open(out)
    page = watch.page
    wait_cards(page, 6)
    labels = page.eval_on_selector_all("#f-corr option", "os => os.map(o => o.textContent)")
    assert labels == ["all", "caption changed (2)", "correction rejected (2)", "ran, caption unchanged (2)",
                      "not self-corrected (2)"]

    def pick(select: str, value: str, ids: list[str]) -> None:
        page.select_option(select, value)
        # the cards are rebuilt after the change event: wait for the new list, not just a count
        wait_js(page, "ids => JSON.stringify(Array.from(document.querySelectorAll('#cards article.card h3.rid'),"
                      " e => e.textContent)) === JSON.stringify(ids)", ids)

    pick("#f-corr", "changed", ["c_changed", "c_both"])
    assert page.locator("#card-2 .badge", has_text="correction rejected (1/2 rounds)").count() == 1
    pick("#f-corr", "rejected", ["c_rejected", "c_both"])
    pick("#f-corr", "unchanged", ["c_rejected", "c_same"])
    pick("#f-corr", "none", ["doc_page", "plain"])
    pick("#f-domain", "2", ["doc_page"])  # filters combine: not self-corrected and infographic_document
    pick("#f-corr", "", ["doc_page"])
    pick("#f-domain", "-1", ["plain"])
    pick("#f-domain", "1", ["c_same"])  # (unknown): routed, no domain named
    pick("#f-domain", "-2", ["c_changed", "c_rejected", "c_both", "c_same", "doc_page", "plain"])
    pick("#f-ocr", "unsupported", ["doc_page"])
    pick("#f-ocr", "read", ["c_same", "doc_page"])
    pick("#f-ocr", "", ["c_changed", "c_rejected", "c_both", "c_same", "doc_page", "plain"])
    pick("#f-hits", "0", ["c_changed"])  # refusal
    pick("#f-hits", "any", ["c_changed", "doc_page"])
    page.fill("#search", "domain:infographic_document")
    wait_cards(page, 1)
    page.click("text=Clear filters")
    wait_cards(page, 6)
    assert page.eval_on_selector("#f-hits", "s => s.value") == ""
    watch.assert_clean()


def test_folder_report_from_another_place(tmp_path: Path, watch) -> None:
    run = many_records(120, tmp_path)
    built = tmp_path / "built"
    build_report(run, built / "report.html", single_file_limit=50, chunk_size=16)
    moved = tmp_path / "elsewhere" / "copy"
    moved.mkdir(parents=True)
    shutil.copy(built / "report.html", moved / "report.html")
    shutil.copytree(built / "report_files", moved / "report_files")
    shutil.rmtree(built)  # the page must need nothing at the place it was written
    watch.open(moved / "report.html")
    page = watch.page
    wait_js(page, "() => window.scalecapReport.ready.scores && window.scalecapReport.ready.search")
    assert stat(page, "records") == "120"
    assert stat(page, "failed") == "7"  # i % 17 == 5 for i < 120
    wait_cards(page, 25)
    assert visible_cards(page)[0] == "safari_0000"
    assert page.locator("#card-1 img.thumb").count() == 1  # a thumbnail from the folder
    assert page.evaluate("document.querySelector('#card-1 img.thumb').naturalWidth") > 0
    assert page.locator("#card-0 .ph").count() == 1  # a missing file: placeholder

    # page flip
    page.click(".resultbar .pager .next >> nth=0")
    wait_js(page, "() => (document.querySelector('#cards article.card h3.rid') || {}).textContent === 'safari_0025'")
    assert "Showing 26–50 of 120" in page.inner_text("#result-count")
    # search for one id
    page.fill("#search", "safari_0042")
    wait_cards(page, 1)
    assert visible_cards(page) == ["safari_0042"]
    page.fill("#search", "giraffe")
    wait_js(page, "() => document.getElementById('result-count').textContent.includes('of 30 matching')")
    page.fill("#search", "")
    # tau
    set_tau(page, 0.05)
    assert int(stat(page, "flip-dk").replace(",", "")) > 0
    flipping = sum(1 for i in range(120)
                   if any(0.05 < x <= 0.1 for x in (0.05 + (i % 7) * 0.04, 0.02 + (i % 5) * 0.03, 0.08 + (i % 3) * 0.02)))
    page.check("#f-flips")
    wait_js(page, "n => document.getElementById('result-count').textContent.includes(' of ' + n + ' matching')",
            f"{flipping}")
    page.screenshot(path=str(tmp_path / "folder.png"), full_page=True)
    watch.assert_clean()
    requested = [u for u in watch.requests if "/chunks/" in u]
    assert requested and all(u.startswith((moved / "report_files").as_uri()) for u in requested)
