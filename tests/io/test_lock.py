"""One writer per output: a second run (another process) is refused while the first holds the
output, and a first run killed with SIGKILL leaves nothing that blocks the next."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from iohelpers import FakeCaptioner, png_bytes, read_jsonl

from scalecap.io.lock import OutputLock, OutputLocked
from scalecap.run import CaptionJob, run_job

ROOT = Path(__file__).resolve().parents[2]

HOLDER = textwrap.dedent("""
    import asyncio, sys
    sys.path[:0] = [{root!r}, {tests!r}]
    from iohelpers import FakeCaptioner
    from scalecap.run import CaptionJob, run_job

    class Slow(FakeCaptioner):
        async def caption_item(self, item):
            await asyncio.sleep(0.5)
            return await super().caption_item(item)

    run_job(Slow(), CaptionJob(inputs=[{folder!r}], output={out!r}, concurrency=1, format={fmt!r}))
""")


def _start_holder(folder: Path, out: Path, fmt: str, lock: Path) -> subprocess.Popen:
    code = HOLDER.format(root=str(ROOT), tests=str(ROOT / "tests"), folder=str(folder), out=str(out), fmt=fmt)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for _ in range(600):  # until the holder has written its pid into the lock file
        if lock.exists() and f"pid {proc.pid} " in lock.read_text():
            return proc
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode())
        time.sleep(0.05)
    proc.kill()
    raise AssertionError("the first run never took the lock")


@pytest.fixture()
def folder(tmp_path) -> Path:
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(40):
        (d / f"i{i:02d}.png").write_bytes(png_bytes(8 + i, 8))
    return d


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_a_second_writer_is_refused_and_a_killed_one_does_not_block(folder, tmp_path, fmt):
    out = tmp_path / ("run.jsonl" if fmt == "jsonl" else "pq")
    lock = tmp_path / "run.jsonl.lock" if fmt == "jsonl" else out / ".scalecap.lock"
    proc = _start_holder(folder, out, fmt, lock)
    try:
        with pytest.raises(OutputLocked, match=rf"being written by another scalecap run \(pid {proc.pid} "):
            run_job(FakeCaptioner(), CaptionJob(inputs=[str(folder)], output=out, format=fmt))
        # the CLI refuses before loading any model, in one line, with a nonzero exit code
        res = subprocess.run([sys.executable, "-m", "scalecap.cli", "caption", str(folder), "-o", str(out),
                              "--format", fmt, "--model", "no-such-model", "--no-progress"],
                             capture_output=True, text=True, timeout=120,
                             env={**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400"})
        assert res.returncode == 2, res.stderr
        assert f"being written by another scalecap run (pid {proc.pid} " in res.stderr
        assert "Traceback" not in res.stderr
        journal = out if fmt == "jsonl" else out / "records.jsonl"
        for _ in range(600):  # let the first run finish a record before it is killed
            if journal.exists() and journal.read_bytes().count(b"\n") >= 1:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(folder)], output=out, format=fmt))
    assert s.skipped + s.ok == 40 and s.failed == 0
    assert 0 < s.skipped < 40  # the killed run had finished some, which were kept
    ids = [r["id"] for r in read_jsonl(journal)]
    assert sorted(ids) == sorted(set(ids)) and len(ids) == 40


def test_the_lock_is_per_output_and_released_after_the_run(tmp_path):
    a, b = OutputLock(tmp_path / "a.lock"), OutputLock(tmp_path / "b.lock")
    with a, b:
        with pytest.raises(OutputLocked):  # another open file description: refused even in-process
            OutputLock(tmp_path / "a.lock").acquire()
    OutputLock(tmp_path / "a.lock").probe()
    OutputLock(tmp_path / "never.lock").probe()
    assert not (tmp_path / "never.lock").exists()
