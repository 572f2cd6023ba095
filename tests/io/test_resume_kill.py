"""kill -9 at random moments, several times in a row, then let the run finish: every image has
exactly one record, no line is torn, and the records equal those of an uninterrupted run.

The command is run as a user runs it (a subprocess of ``scalecap caption`` with the tiny real
models), once for the JSONL journal and once for sharded Parquet output (2 records per shard, so
that kills land around shard commits). Set SCALECAP_KILL_SEED to replay a sequence of kills.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from iohelpers import copy_photos, model_args

from scalecap.io.sinks import read_parquet_records
from scalecap.records import CaptionResult

pytestmark = pytest.mark.slow

NAMES = ["astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "brick.png"]
CLI = [sys.executable, "-c", "from scalecap.cli import main; main()"]


@pytest.fixture(scope="module")
def kill_images(tmp_path_factory, sample_images) -> Path:
    return copy_photos(tmp_path_factory, sample_images, NAMES, "photos ü")


def _env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def _cmd(tiny_models, images: Path, out: Path, *extra: str) -> list[str]:
    return [*CLI, "caption", str(images), "-o", str(out), "--concurrency", "4", "--no-progress",
            *model_args(tiny_models), *extra]


@pytest.fixture(scope="module")
def reference(tiny_models, kill_images, tmp_path_factory) -> dict[str, str]:
    """An uninterrupted run, in a subprocess like the killed ones (same threads, same numerics)."""
    out = tmp_path_factory.mktemp("ref") / "ref.jsonl"
    res = subprocess.run(_cmd(tiny_models, kill_images, out), env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    recs = [CaptionResult.from_json(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert sorted(r.id for r in recs) == sorted(NAMES) and all(r.ok for r in recs)
    return {r.id: r.stable_json() for r in recs}


def _complete_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _kill_repeatedly(cmd: list[str], journal: Path, cycles: int, rng: random.Random) -> int:
    """Start the command ``cycles`` times, killing it with SIGKILL at a random moment each time:
    the first time during start-up, later ones just after 1-2 more records (then a random delay)."""
    kills = 0
    for cycle in range(cycles):
        before = _complete_lines(journal)
        proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if cycle == 0:
            time.sleep(rng.uniform(1.0, 4.0))
        else:
            target, deadline = before + rng.randint(1, 2), time.monotonic() + 120
            while proc.poll() is None and _complete_lines(journal) < target and time.monotonic() < deadline:
                time.sleep(0.02)
            time.sleep(rng.uniform(0.0, 0.6))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            kills += 1
        proc.wait(timeout=60)
        if proc.returncode == 0:
            break
    return kills


def _seed() -> int:
    seed = int(os.environ.get("SCALECAP_KILL_SEED", random.randrange(10**6)))
    print(f"kill sequence seed: SCALECAP_KILL_SEED={seed}")
    return seed


def _assert_same_as_reference(records: list[CaptionResult], reference: dict[str, str]) -> None:
    ids = [r.id for r in records]
    assert len(ids) == len(set(ids)), "an image has two records"
    assert sorted(ids) == sorted(reference), "an image has no record"
    for r in records:
        assert r.stable_json() == reference[r.id], f"{r.id} differs from the uninterrupted run"


def _read_journal_strict(path: Path) -> list[CaptionResult]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n"), "torn last line"
    return [CaptionResult.from_json(line) for line in raw.decode("utf-8").splitlines()]


def test_kill_9_then_resume_jsonl(tiny_models, kill_images, reference, tmp_path):
    rng = random.Random(_seed())
    out = tmp_path / "run.jsonl"
    cmd = _cmd(tiny_models, kill_images, out)
    kills = _kill_repeatedly(cmd, out, cycles=3, rng=rng)
    assert kills >= 2
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_as_reference(_read_journal_strict(out), reference)
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["output"]["records"] == len(NAMES)


def test_kill_9_then_resume_parquet_shards(tiny_models, kill_images, reference, tmp_path):
    rng = random.Random(_seed() + 1)
    out = tmp_path / "pq"
    cmd = _cmd(tiny_models, kill_images, out, "--format", "parquet", "--shard-size", "2")
    kills = _kill_repeatedly(cmd, out / "records.jsonl", cycles=3, rng=rng)
    assert kills >= 2
    res = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_as_reference(list(read_parquet_records(out)), reference)
    _assert_same_as_reference(_read_journal_strict(out / "records.jsonl"), reference)
    index = [json.loads(line) for line in (out / "_shards.jsonl").read_text().splitlines()]
    assert sorted(e["file"] for e in index) == sorted(p.name for p in out.glob("part-*.parquet"))
    assert not list(out.glob("*.tmp"))
