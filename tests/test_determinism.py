"""Cross-process determinism: the same ``scalecap caption`` run in two fresh interpreters with
different ``PYTHONHASHSEED`` values writes the same records, byte for byte, but for timings.

Hash seeds change the iteration order of sets and str-keyed hashing; any set iteration, hash-based
de-duplication or id derived from ``hash()`` that leaked into a record would show up here. The run
uses the tiny real models (greedy decoding, the default), tau = -1 so that every stage runs, and
one image in flight so that the order of records in the file is the input order.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parent.parent

#: The only record field that may differ between the two runs: wall-clock seconds per stage.
TIME_DEPENDENT_RECORD_FIELDS = ("timings",)
#: The only summary fields that may differ: the end time and the run's seconds and rate.
TIME_DEPENDENT_SUMMARY_FIELDS = (("finished_at",), ("run", "seconds"), ("run", "images_per_second"))


def run_caption(workdir: Path, hash_seed: str, images: list[Path], tiny_models, tiny_settings) -> subprocess.CompletedProcess:
    workdir.mkdir()
    vlm = str(tiny_models["qwen2vl"])
    sets = [a for k, v in tiny_settings.items() for a in ("--set", f"{k}={v}")]
    cmd = [sys.executable, "-m", "scalecap", "caption", *map(str, images), "-o", "captions.jsonl",
           "--captioner", vlm, "--scorer", vlm, "--writer", str(tiny_models["qwen2"]),
           "--budget", "2", "--tau", "-1", "--concurrency", "1", *sets]
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    res = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def without_time(line: str) -> tuple[str, list[str]]:
    """The record's JSON text without its time-dependent fields (key order and float text kept)."""
    record = json.loads(line)
    stages = sorted(record["timings"])
    for field in TIME_DEPENDENT_RECORD_FIELDS:
        del record[field]
    return json.dumps(record, ensure_ascii=False), stages


def summary_without_time(path: Path) -> dict:
    summary = json.loads(path.read_text())
    for keys in TIME_DEPENDENT_SUMMARY_FIELDS:
        parent = summary
        for k in keys[:-1]:
            parent = parent[k]
        assert isinstance(parent.pop(keys[-1]), (int, float, str))
    return summary


def test_two_processes_with_different_hash_seeds_write_the_same_records(tmp_path, sample_images, tiny_models,
                                                                        tiny_settings):
    images = [sample_images["chelsea"], sample_images["coffee"]]
    for name, seed in (("a", "1"), ("b", "4242")):
        run_caption(tmp_path / name, seed, images, tiny_models, tiny_settings)
    lines = {name: (tmp_path / name / "captions.jsonl").read_text(encoding="utf-8").splitlines() for name in "ab"}
    assert len(lines["a"]) == len(lines["b"]) == 2
    records = [json.loads(line) for line in lines["a"]]
    assert [r["id"] for r in records] == ["chelsea.png", "coffee.png"]
    # every stage ran (questions asked and answered, both summaries written) for both images
    assert all(r["status"] == "ok" and r["questions"] and r["skipped"] == {} for r in records)
    for line_a, line_b in zip(lines["a"], lines["b"]):
        (text_a, stages_a), (text_b, stages_b) = without_time(line_a), without_time(line_b)
        assert text_a == text_b
        assert stages_a == stages_b  # the same stages were timed; only the seconds differ
    assert summary_without_time(tmp_path / "a" / "captions.summary.json") == \
        summary_without_time(tmp_path / "b" / "captions.summary.json")
