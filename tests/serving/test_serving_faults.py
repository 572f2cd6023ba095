"""Faults between the pipeline and a real vLLM server: stalls, a server killed and restarted, an
outage longer than the retry budget (paused through), an API key revoked mid-run (the run stops).

(Retries of 500s need no real server: tests/serving/test_http_backend_fake.py.)

A reverse proxy in front of the real server injects the HTTP faults; the kill is real (SIGKILL to the
server's process group, then a restart on the same port). Backoff and timeouts are small here.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import signal

import pytest

from scalecap import ScaleCap
from scalecap.backends.base import BackendError, ChatPrompt, GenerationParams
from scalecap.backends.openai_compat import OpenAIBackend
from scalecap.config import ModelConfig
from scalecap.engine import Engine
from scalecap.images import ImageItem, image_ref
from scalecap.outage import OutagePolicy
from scalecap.progress import JobProgress
from scalecap.run import CaptionJob, run_job

SERVED_NAME = "tiny-qwen2vl"  # the name the session server (conftest.py) serves the model under

pytestmark = [pytest.mark.vllm, pytest.mark.timeout(600)]  # server start-up included

FAST = {"backoff_base": 0.02, "backoff_max": 0.1}


def cfg(api_base: str, **kw) -> ModelConfig:
    kw = {**FAST, **kw}
    return ModelConfig(backend="openai", model=SERVED_NAME, api_base=api_base, **kw)


async def test_stalled_requests_time_out_and_retry(fault_proxy):
    backend = OpenAIBackend(cfg(fault_proxy.api_base, max_retries=3, timeout=3.0))
    await backend.probe()
    stalls = iter([True])  # the first chat request stalls, its retry goes through
    fault_proxy.stall, fault_proxy.stall_seconds = (lambda body: b"Hello?" in body and next(stalls, False)), 8.0
    g = await backend.generate(ChatPrompt("Hello?"), GenerationParams(max_tokens=4))
    assert g.completion_tokens == 4 and backend.retries == 1
    await backend.aclose()


async def test_persistent_stall_fails_that_image_only(fault_proxy, sample_images, tiny_settings):
    slow, fast = (image_ref(sample_images[k].read_bytes())[0] for k in ("coffee", "chelsea"))
    sender = OpenAIBackend(cfg(fault_proxy.api_base))  # the image bytes the pipeline's backend sends
    await sender.probe()
    marker = sender._images.get(slow, *sender._budget(), fmt=sender.image_format)[5000:5064].encode()  # a piece of it
    await sender.aclose()
    fault_proxy.stall, fault_proxy.stall_seconds = (lambda body: marker in body), 12.0
    # the timeout leaves room for a slow but healthy request on a busy 2-core machine
    c = cfg(fault_proxy.api_base, max_retries=1, timeout=4.0)
    sc = ScaleCap(captioner=c, scorer=c, writer=c, budget=1, tau=-1.0, **tiny_settings)
    items = [ImageItem.from_path(sample_images["coffee"], id="slow"), ImageItem.from_path(sample_images["chelsea"], id="fast")]
    results = {r.id: r async for r in Engine(sc, concurrency=2).run(items)}
    assert results["slow"].status == "failed" and "timeout" in results["slow"].error
    assert results["slow"].error_kind == "model"
    assert results["fast"].status == "ok", results["fast"].error
    assert fast.key != slow.key
    await sc.aclose()


async def test_server_killed_mid_run_and_restarted(vllm_server, sample_images, tiny_settings):
    """Images in flight when the server dies fail (recorded, the run goes on); later ones succeed."""
    c = cfg(vllm_server.api_base, max_retries=2)
    sc = ScaleCap(captioner=c, scorer=c, writer=c, budget=1, tau=-1.0, **tiny_settings)
    backend = sc.captioner
    assert isinstance(backend, OpenAIBackend)
    restarted = asyncio.Event()
    names = ["astronaut", "chelsea", "coffee", "rocket"]

    async def source():
        for name in names[:2]:
            yield ImageItem.from_path(sample_images[name], id=name)
        await restarted.wait()
        for name in names[2:]:
            yield ImageItem.from_path(sample_images[name], id=name)

    async def kill_and_restart():
        start = backend.requests
        while backend.requests < start + 4:  # both images are in flight
            await asyncio.sleep(0.01)
        await asyncio.to_thread(vllm_server.kill, signal.SIGKILL)
        await asyncio.to_thread(vllm_server.start)
        await asyncio.to_thread(vllm_server.wait_ready)
        restarted.set()

    killer = asyncio.create_task(kill_and_restart())
    results = {r.id: r async for r in Engine(sc, concurrency=2).run(source())}
    await killer
    for name in names[:2]:
        assert results[name].status == "failed", name
        assert "failed after 3 attempt(s)" in results[name].error
    for name in names[2:]:
        assert results[name].status == "ok", results[name].error
    await sc.aclose()


def _photos(tmp_path, sample_images, names):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in names:
        shutil.copy(sample_images[name], folder / f"{name}{sample_images[name].suffix}")
    return folder


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_outage_longer_than_the_retry_budget_is_paused_through(fault_proxy, sample_images, tiny_settings,
                                                                   tmp_path):
    """The server goes away after the first image (every connection dropped: ~0.1 s of retries, far
    less than the outage); the run pauses, probes through the proxy until it is back, and finishes
    with every image ok."""
    folder = _photos(tmp_path, sample_images, ["astronaut", "chelsea", "coffee"])
    c = cfg(fault_proxy.api_base, max_retries=2)
    sc = ScaleCap(captioner=c, scorer=c, writer=c, budget=1, tau=-1.0, **tiny_settings)
    fault_proxy.outage.up_after_probes = 4
    lines: list[str] = []
    progress = JobProgress()
    progress.notice = lines.append

    def outage_after_first(result):
        if result.status == "ok" and not fault_proxy.outage.dropped:
            fault_proxy.outage.down = True

    out = tmp_path / "run.jsonl"
    s = run_job(sc, CaptionJob(inputs=[str(folder)], output=out, concurrency=2, stop_after=2,
                               outage=OutagePolicy(wait=120.0, first_probe=0.2, max_probe_interval=0.5)),
                on_result=outage_after_first, progress=progress)
    asyncio.run(sc.aclose())
    assert fault_proxy.outage.dropped > 0 and fault_proxy.outage.probes_while_down == 4
    assert (s.ok, s.failed, s.stopped, s.exit_code) == (3, 0, None, 0), (s.failures, s.stopped)
    assert [p["outcome"] for p in s.pauses] == ["resumed"] and s.pauses[0]["rerun"] >= 1
    # 2 images fail in a row (the trip), or 1 when the second finished before the outage began and
    # the third is held at the end of the input: both pause the same way
    assert re.match(r"paused: [12] images in a row failed with backend_unreachable", lines[0]), lines
    assert lines[1].startswith("resumed after"), lines
    assert sorted((r["id"], r["status"]) for r in _records(out)) == [
        ("astronaut.png", "ok"), ("chelsea.png", "ok"), ("coffee.png", "ok")]


def test_a_key_revoked_mid_run_stops_after_the_trip(fault_proxy, sample_images, tiny_settings, tmp_path,
                                                    monkeypatch):
    """The proxy plays a server started with ``--api-key``; a wrong key fails before any image, a
    key revoked after the first image stops the run after ``stop_after`` images, the rest untouched."""
    monkeypatch.setenv("SCALECAP_TEST_KEY", "sk-right")
    fault_proxy.key = "sk-right"
    c = cfg(fault_proxy.api_base, max_retries=1, api_key_env="SCALECAP_TEST_KEY")
    monkeypatch.setenv("SCALECAP_TEST_KEY", "sk-wrong")
    with pytest.raises(BackendError, match="HTTP 401"):
        ScaleCap(captioner=c, scorer=c, writer=c, budget=1, tau=-1.0, **tiny_settings)
    monkeypatch.setenv("SCALECAP_TEST_KEY", "sk-right")
    sc = ScaleCap(captioner=c, scorer=c, writer=c, budget=1, tau=-1.0, **tiny_settings)
    folder = _photos(tmp_path, sample_images, ["astronaut", "chelsea", "coffee", "rocket"])

    def revoke_after_first(result):
        if result.status == "ok":
            fault_proxy.key = "sk-rotated"

    out = tmp_path / "run.jsonl"
    s = run_job(sc, CaptionJob(inputs=[str(folder)], output=out, concurrency=1, stop_after=2,
                               outage=OutagePolicy(wait=120.0)), on_result=revoke_after_first)
    asyncio.run(sc.aclose())
    assert s.stopped and "2 images in a row failed with backend_auth" in s.stopped
    assert (s.ok, s.failed, s.exit_code, s.pauses) == (1, 2, 3, [])
    assert len(_records(out)) == 3  # the fourth image was never attempted: no record, the next run does it
    assert fault_proxy.refused >= 2
