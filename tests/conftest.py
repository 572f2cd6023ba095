"""Shared fixtures: tiny random-initialised models with real architectures, built once per machine.

The models are built offline by ``scalecap.testing.tiny_models`` into a cache folder
(``$SCALECAP_TEST_MODELS``, default ``.cache/test-models`` in the repository) and reused by later
runs; building all of them takes about ten seconds.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def _models_root() -> Path:
    return Path(os.environ.get("SCALECAP_TEST_MODELS", ROOT / ".cache" / "test-models"))


@pytest.fixture(scope="session")
def tiny_models() -> dict[str, Path]:
    """kind -> folder for tiny-qwen2vl (VLM), tiny-qwen2 (text LLM), tiny-llava (VLM)."""
    from scalecap.testing.tiny_models import build_tiny_models

    import torch

    torch.set_num_threads(2)
    return build_tiny_models(_models_root(), ("qwen2vl", "qwen2", "llava"))


@pytest.fixture(scope="session")
def sample_images() -> dict[str, Path]:
    """Real photographs shipped inside the scikit-image wheel, as files on disk."""
    skimage_data = pytest.importorskip("skimage.data")
    folder = Path(skimage_data.__file__).parent
    names = {"astronaut": "astronaut.png", "chelsea": "chelsea.png", "coffee": "coffee.png", "rocket": "rocket.jpg"}
    return {k: folder / v for k, v in names.items()}


@pytest.fixture(scope="session")
def document_images() -> dict[str, Path]:
    """Real photographs of printed text from the scikit-image wheel (``page``: a book page under
    uneven light; ``text``: hand-written and printed words), for OCR tests."""
    skimage_data = pytest.importorskip("skimage.data")
    folder = Path(skimage_data.__file__).parent
    return {"page": folder / "page.png", "text": folder / "text.png"}


@pytest.fixture(scope="session")
def tiny_settings() -> dict:
    """Small token limits so that random models (which rarely emit EOS) finish quickly."""
    return dict(max_tokens_caption=48, max_tokens_instructions=40, max_tokens_answer=32, max_tokens_summary=48)


# ------------------------------------------------------------------------------------ skips
# A green run must mean every test ran: a skipped test (a missing browser, vLLM, Ray, spaCy, ...)
# fails the session and is listed with its reason. SCALECAP_ALLOW_SKIPS=1 opts out explicitly, e.g.
# on a laptop without Chromium; the list is printed either way.
ALLOW_SKIPS_ENV = "SCALECAP_ALLOW_SKIPS"
_skipped: list[tuple[str, str]] = []


def _skips_allowed() -> bool:
    return os.environ.get(ALLOW_SKIPS_ENV, "").strip() == "1"


def _record_skip(report) -> None:
    if report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _skipped.append((report.nodeid, reason.removeprefix("Skipped: ")))


def pytest_collectreport(report) -> None:  # module-level importorskip
    _record_skip(report)


def pytest_runtest_logreport(report) -> None:  # skips in tests and fixtures
    _record_skip(report)


def pytest_sessionfinish(session, exitstatus) -> None:
    if _skipped and not _skips_allowed() and exitstatus == pytest.ExitCode.OK:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    if not _skipped:
        return
    verdict = (f"allowed by {ALLOW_SKIPS_ENV}=1" if _skips_allowed()
               else f"the run fails; set {ALLOW_SKIPS_ENV}=1 to allow skips")
    terminalreporter.section(f"{len(_skipped)} test(s) skipped: {verdict}", sep="=", red=True, bold=True)
    for nodeid, reason in _skipped:
        terminalreporter.line(f"SKIPPED {nodeid}: {reason}")
