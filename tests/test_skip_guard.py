"""The suite's conftest makes a skip fail the session (unless SCALECAP_ALLOW_SKIPS=1) and lists it.

Runs pytest in a subprocess on a temporary folder holding a copy of the real tests/conftest.py and a
tiny test file, so the hooks under test are exactly the suite's own.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CONFTEST = Path(__file__).with_name("conftest.py")

TESTS = '''
import pytest

def test_runs():
    assert 1 + 1 == 2

def test_needs_a_missing_tool():
    pytest.skip("no frobnicator installed")
'''

PASSING = '''
def test_runs():
    assert 1 + 1 == 2
'''

MODULE_SKIP = '''
import pytest
pytest.importorskip("scalecap_no_such_module")

def test_never_runs():
    pass
'''


def run_pytest(tmp_path: Path, files: dict[str, str], allow: str | None) -> subprocess.CompletedProcess:
    (tmp_path / "conftest.py").write_text(CONFTEST.read_text())
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if k != "SCALECAP_ALLOW_SKIPS"}
    if allow is not None:
        env["SCALECAP_ALLOW_SKIPS"] = allow
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(tmp_path),
                           str(tmp_path)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("allow", [None, "0", ""])
def test_a_skip_fails_the_session_and_is_listed(tmp_path, allow):
    res = run_pytest(tmp_path, {"test_tiny.py": TESTS}, allow)
    assert res.returncode == pytest.ExitCode.TESTS_FAILED, res.stdout + res.stderr
    assert "1 passed, 1 skipped" in res.stdout
    assert "1 test(s) skipped: the run fails; set SCALECAP_ALLOW_SKIPS=1 to allow skips" in res.stdout
    assert "SKIPPED test_tiny.py::test_needs_a_missing_tool: no frobnicator installed" in res.stdout


def test_allow_skips_lets_the_session_pass_and_still_lists_them(tmp_path):
    res = run_pytest(tmp_path, {"test_tiny.py": TESTS}, "1")
    assert res.returncode == pytest.ExitCode.OK, res.stdout + res.stderr
    assert "1 test(s) skipped: allowed by SCALECAP_ALLOW_SKIPS=1" in res.stdout
    assert "SKIPPED test_tiny.py::test_needs_a_missing_tool: no frobnicator installed" in res.stdout


def test_a_module_level_importorskip_counts_too(tmp_path):
    res = run_pytest(tmp_path, {"test_passing.py": PASSING, "test_mod.py": MODULE_SKIP}, None)
    assert res.returncode == pytest.ExitCode.TESTS_FAILED, res.stdout + res.stderr
    assert "SKIPPED test_mod.py: could not import 'scalecap_no_such_module'" in res.stdout


def test_no_skips_no_noise(tmp_path):
    res = run_pytest(tmp_path, {"test_passing.py": PASSING}, None)
    assert res.returncode == pytest.ExitCode.OK, res.stdout + res.stderr
    assert "skipped" not in res.stdout


def test_a_failure_stays_a_failure_with_skips_allowed(tmp_path):
    res = run_pytest(tmp_path, {"test_tiny.py": TESTS + "\ndef test_bad():\n    assert 2 + 2 == 5\n"}, "1")
    assert res.returncode == pytest.ExitCode.TESTS_FAILED, res.stdout + res.stderr
    assert "1 failed, 1 passed, 1 skipped" in res.stdout
