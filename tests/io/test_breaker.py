"""The circuit breaker: a dead server, a refused key or a missing model stops the run after N
images in a row (exit code 3, finished records kept) instead of failing the whole dataset."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading

import pytest
from iohelpers import FakeCaptioner, png_bytes, read_jsonl

from scalecap.backends.base import BackendError
from scalecap.backends.http_client import JSONClient, RetryPolicy
from scalecap.breaker import Breaker
from scalecap.records import CaptionResult
from scalecap.run import CaptionJob, run_job


class _ServerDies(FakeCaptioner):
    """Healthy for the first ``healthy`` images, then every call fails as a dead server's would."""

    def __init__(self, healthy: int, kind: str = "backend_unreachable") -> None:
        super().__init__()
        self.healthy, self.kind = healthy, kind

    async def caption_item(self, item):
        if len(self.calls) >= self.healthy:
            self.calls.append(item.id)
            return CaptionResult(id=item.id, source=item.source, status="failed", error_kind=self.kind,
                                 error="POST /v1/chat/completions to server failed after 7 attempt(s): refused",
                                 fingerprint=self.fingerprint)
        return await super().caption_item(item)


@pytest.fixture()
def many(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    for i in range(30):
        (d / f"img{i:02d}.png").write_bytes(png_bytes(8 + i, 8))
    return d


def test_a_dead_server_stops_the_run_and_the_next_run_finishes(many, tmp_path):
    out = tmp_path / "run.jsonl"
    dying = _ServerDies(healthy=3)
    s = run_job(dying, CaptionJob(inputs=[str(many)], output=out, concurrency=1, stop_after=5))
    assert s.stopped and "5 images in a row failed with backend_unreachable" in s.stopped
    assert (s.ok, s.failed, s.exit_code) == (3, 5, 3)
    assert len(dying.calls) == 8  # the other 22 images were never attempted
    assert len(read_jsonl(out)) == 8
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["stopped"] == s.stopped and summary["exit_code"] == 3
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, concurrency=4, stop_after=5))
    assert (s.skipped, s.retried, s.ok, s.exit_code, s.stopped) == (3, 5, 27, 0, None)
    assert sorted(r["id"] for r in read_jsonl(out)) == [f"img{i:02d}.png" for i in range(30)]


def test_stop_after_zero_never_stops(many, tmp_path):
    s = run_job(_ServerDies(healthy=0, kind="backend_auth"),
                CaptionJob(inputs=[str(many)], output=tmp_path / "o.jsonl", stop_after=0))
    assert (s.failed, s.stopped, s.exit_code) == (30, None, 1)


def test_only_an_ok_resets_the_streak_and_a_new_kind_restarts_it():
    def rec(status, kind=None):
        return CaptionResult(id="x", source="x", status=status, error_kind=kind, error="e")

    b = Breaker(3)
    assert b.observe(rec("failed", "backend_auth")) is None
    assert b.observe(rec("failed", "not_an_image")) is None  # a bad image says nothing about the server
    assert b.observe(rec("filtered")) is None
    assert b.observe(rec("failed", "backend_auth")) is None
    assert b.observe(rec("failed", "backend_unreachable")) is None  # another kind: a new streak of 1
    assert b.observe(rec("ok")) is None
    assert [b.observe(rec("failed", "backend_not_found")) for _ in range(3)][-1].startswith(
        "stopped after 3 images in a row failed with backend_not_found")


class _Status(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        status = int(self.path.strip("/"))
        body = json.dumps({"error": {"message": f"status {status}"}}).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def test_the_http_client_names_server_side_failures(closed_port):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Status)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"

    async def kind_of(url: str) -> str | None:
        client = JSONClient({}, 2, RetryPolicy(max_retries=1, backoff_base=0.01, timeout=5.0), lambda s: s, "test")
        try:
            await client.call("POST", url, {})
        except BackendError as exc:
            return exc.kind
        finally:
            await client.aclose()
        raise AssertionError("no error")

    try:
        kinds = [asyncio.run(kind_of(u)) for u in (f"http://127.0.0.1:{closed_port}/v1", f"{base}/401",
                                                    f"{base}/403", f"{base}/404", f"{base}/400")]
    finally:
        server.shutdown()
        server.server_close()
    assert kinds == ["backend_unreachable", "backend_auth", "backend_auth", "backend_not_found", None]
