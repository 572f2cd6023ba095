"""Fixtures for the report tests: the hand-written run (see report_data.py) and headless Chromium.

Browser tests use Debian's Chromium (``/usr/bin/chromium``, or ``$SCALECAP_CHROMIUM``) driven by
the ``playwright`` package. Without a browser they skip (which fails the run unless
SCALECAP_ALLOW_SKIPS=1, see tests/conftest.py), and fail outright when ``CI`` is set.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from report_data import write_run


@pytest.fixture()
def crafted_run(tmp_path: Path) -> Path:
    return write_run(tmp_path)


# ------------------------------------------------------------------------------------ browser
CHROMIUM = os.environ.get("SCALECAP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


def _no_browser(reason: str):
    if _in_ci():
        pytest.fail(f"browser tests must run in CI: {reason} (install chromium: apt-get install -y chromium)")
    pytest.skip(f"{reason}; the browser tests need it (apt-get install -y chromium; pip install playwright)")


@pytest.fixture(scope="module")
def browser():
    # Module scope: Playwright's sync API keeps an event loop running in this thread while it is
    # open, which must not leak into the tests that follow.
    if not (Path(CHROMIUM).is_file() or shutil.which(CHROMIUM)):
        _no_browser(f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _no_browser("the playwright package is not installed (pip install playwright)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class PageWatch:
    """A page plus everything it did that a report must not do."""

    def __init__(self, page):
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        page.on("request", lambda r: self.requests.append(r.url))
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}")
                if m.type in ("error", "warning") else None)

        def on_dialog(d):
            self.dialogs.append(d.message)
            d.dismiss()
        page.on("dialog", on_dialog)

    def open(self, path: Path, wait_for: str = "[data-cards='1']") -> None:
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_selector(f"body{wait_for}", timeout=15_000)

    def assert_clean(self) -> None:
        foreign = [u for u in self.requests if not (u.startswith(("file:", "data:")))]
        assert foreign == [], f"the page made network requests: {foreign}"
        assert self.errors == [], f"the page logged errors: {self.errors}"
        assert self.dialogs == [], f"the page opened dialogs: {self.dialogs}"
        assert self.page.evaluate("window.scalecapReport.errors") == []


@pytest.fixture()
def watch(browser):
    ctx = browser.new_context(viewport={"width": 1280, "height": 900}, java_script_enabled=True)
    page = ctx.new_page()
    page.set_default_timeout(15_000)
    w = PageWatch(page)
    yield w
    ctx.close()
