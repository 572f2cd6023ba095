"""The circuit breaker: after N images in a row fail because of the server, an outage is paused
through (probe, resume, re-run what it failed) and a refused key or a missing model stops the run
(exit code 3, finished records kept), instead of failing the whole dataset."""

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
from scalecap.outage import OutagePolicy
from scalecap.progress import JobProgress
from scalecap.records import CaptionResult
from scalecap.run import CaptionJob, run_job

FAST = OutagePolicy(wait=30.0, first_probe=0.01, max_probe_interval=0.02)


class _Server:
    """The state of a fake model server that the fake captioner and its probe share."""

    def __init__(self, up_after_probes: int | None = None) -> None:
        self.state = "up"  # "up" | "down" (refuses connections) | "auth" (refuses the key)
        self.probes = 0
        self.up_after_probes = up_after_probes  # a down server is back at this probe (None: never)

    async def check(self) -> None:
        self.probes += 1
        if self.state == "down" and self.up_after_probes is not None and self.probes >= self.up_after_probes:
            self.state = "up"
        if self.state == "down":
            raise BackendError("GET /v1/models to fake failed: connection refused", "backend_unreachable")
        if self.state == "auth":
            raise BackendError("GET /v1/models to fake failed: HTTP 401: bad key", "backend_auth")


class _OnServer(FakeCaptioner):
    """Captions while its server is up; the server turns ``then`` after ``healthy`` images."""

    def __init__(self, server: _Server, healthy: int, then: str = "down") -> None:
        super().__init__()
        self.server, self.healthy, self.then = server, healthy, then
        self.failures = 0
        self.backends = {"captioner": server, "scorer": server}  # one server: probed once per probe

    async def caption_item(self, item):
        if len(self.calls) == self.healthy:
            self.server.state = self.then
        if self.server.state == "up":
            return await super().caption_item(item)
        self.calls.append(item.id)
        self.failures += 1
        kind = "backend_unreachable" if self.server.state == "down" else "backend_auth"
        return CaptionResult(id=item.id, source=item.source, status="failed", error_kind=kind,
                             error="POST /v1/chat/completions to fake failed after 7 attempt(s)",
                             fingerprint=self.fingerprint)


class _Notices(JobProgress):
    def __init__(self) -> None:
        self.lines: list[str] = []

    def notice(self, line: str) -> None:
        self.lines.append(line)


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


def test_an_outage_that_ends_during_the_pause_fails_no_image(many, tmp_path):
    out, server, notices = tmp_path / "run.jsonl", _Server(up_after_probes=3), _Notices()
    captioner = _OnServer(server, healthy=5)
    s = run_job(captioner, CaptionJob(inputs=[str(many)], output=out, concurrency=3, stop_after=4, outage=FAST),
                progress=notices)
    assert (s.ok, s.failed, s.stopped, s.exit_code) == (30, 0, None, 0)
    assert server.probes == 3  # down, down, up
    assert len(notices.lines) == 2, notices.lines
    assert notices.lines[0].startswith("paused: 4 images in a row failed with backend_unreachable")
    assert notices.lines[1].startswith("resumed after") and "re-running the 4 images" in notices.lines[1]
    assert [(p["outcome"], p["probes"], p["rerun"]) for p in s.pauses] == [("resumed", 3, 4)]
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == [f"img{i:02d}.png" for i in range(30)]  # one record each
    assert all(r["status"] == "ok" for r in records)
    # every image the outage failed (the 4 of the streak, and those in flight when it paused) ran again
    assert captioner.failures >= 4 and len(captioner.calls) == 30 + captioner.failures
    summary = json.loads((tmp_path / "run.summary.json").read_text())
    assert summary["pauses"][0]["outcome"] == "resumed" and summary["exit_code"] == 0


def test_an_outage_at_the_end_of_the_input_is_waited_out_too(many, tmp_path):
    """The engine has taken the last image before the breaker trips (and one image of the outage
    fails alone, below the threshold): what the outage failed still runs again."""
    out, server = tmp_path / "run.jsonl", _Server(up_after_probes=2)
    captioner = _OnServer(server, healthy=28)
    s = run_job(captioner, CaptionJob(inputs=[str(many)], output=out, concurrency=4, stop_after=2, outage=FAST))
    assert (s.ok, s.failed, s.stopped, s.exit_code) == (30, 0, None, 0)
    assert captioner.failures == 2 and len(captioner.calls) == 32
    assert [p["outcome"] for p in s.pauses] == ["resumed"]
    assert all(r["status"] == "ok" for r in read_jsonl(out)) and len(read_jsonl(out)) == 30


def test_one_failure_below_the_threshold_at_the_end_is_re_run_after_a_probe(many, tmp_path):
    out, server = tmp_path / "run.jsonl", _Server(up_after_probes=1)
    captioner = _OnServer(server, healthy=29)
    s = run_job(captioner, CaptionJob(inputs=[str(many)], output=out, concurrency=1, stop_after=5, outage=FAST))
    assert (s.ok, s.failed, s.exit_code, server.probes, s.pauses) == (30, 0, 0, 1, [])  # up at once: no pause


def test_an_outage_longer_than_the_pause_stops_cleanly_and_the_next_run_finishes(many, tmp_path):
    out, server, notices = tmp_path / "run.jsonl", _Server(), _Notices()
    policy = OutagePolicy(wait=0.05, first_probe=0.01, max_probe_interval=0.01)
    s = run_job(_OnServer(server, healthy=5), CaptionJob(inputs=[str(many)], output=out, concurrency=1,
                                                         stop_after=4, outage=policy), progress=notices)
    assert s.stopped and s.stopped.startswith("stopped: the model server was still unreachable after")
    assert (s.ok, s.failed, s.exit_code) == (5, 4, 3)  # the 4 held images are recorded as failed
    assert server.probes >= 2 and [p["outcome"] for p in s.pauses] == ["stopped"]
    assert len(notices.lines) == 1 and notices.lines[0].startswith("paused:")
    assert len(read_jsonl(out)) == 9  # the other 21 were never attempted
    s = run_job(FakeCaptioner(), CaptionJob(inputs=[str(many)], output=out, concurrency=4, stop_after=4))
    assert (s.skipped, s.retried, s.ok, s.exit_code) == (5, 4, 25, 0)


def test_a_refused_key_stops_at_the_trip_without_pausing(many, tmp_path):
    out, server, notices = tmp_path / "run.jsonl", _Server(up_after_probes=1), _Notices()
    captioner = _OnServer(server, healthy=2, then="auth")
    s = run_job(captioner, CaptionJob(inputs=[str(many)], output=out, concurrency=1, stop_after=3, outage=FAST),
                progress=notices)
    assert s.stopped and "3 images in a row failed with backend_auth" in s.stopped
    assert (s.ok, s.failed, s.exit_code, len(captioner.calls)) == (2, 3, 3, 5)
    assert server.probes == 0 and notices.lines == [] and s.pauses == []
    assert len(read_jsonl(out)) == 5


def test_a_probe_refusing_the_key_during_a_pause_stops(many, tmp_path):
    server = _Server()
    captioner = _OnServer(server, healthy=1)

    async def check():  # the server comes back, but no longer takes our key
        server.probes += 1
        if server.probes >= 2:
            server.state = "auth"
        await _Server.check(server)

    captioner.backends = {"captioner": type("B", (), {"check": staticmethod(check)})()}
    s = run_job(captioner, CaptionJob(inputs=[str(many)], output=tmp_path / "o.jsonl", concurrency=1,
                                      stop_after=2, outage=FAST))
    assert s.stopped and s.stopped.startswith("stopped: probing the model server failed with backend_auth")
    assert (s.ok, s.failed, s.exit_code) == (1, 2, 3)


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
                                                    f"{base}/403", f"{base}/404", f"{base}/400",
                                                    f"{base}/502", f"{base}/503", f"{base}/500")]
    finally:
        server.shutdown()
        server.server_close()
    assert kinds == ["backend_unreachable", "backend_auth", "backend_auth", "backend_not_found", None,
                     "backend_unreachable", "backend_unreachable", None]  # 502/503 after every retry: down


class _AnswerFromBefore(FakeCaptioner):
    """``b`` was sent before the outage and answers after ``a`` failed; ``c`` fails after ``b``'s
    answer. Events fix that order whatever the thread pool does."""

    def __init__(self, server: _Server) -> None:
        super().__init__()
        self.server, self.failures = server, 0
        self.a_failed, self.b_answered = asyncio.Event(), asyncio.Event()
        self.backends = {"captioner": server}

    async def caption_item(self, item):
        if item.id == "b.png":
            await self.a_failed.wait()
            result = await super().caption_item(item)
            self.b_answered.set()
            return result
        if item.id == "c.png":
            await self.b_answered.wait()
        if self.server.state == "up":
            return await super().caption_item(item)
        self.calls.append(item.id)
        self.failures += 1
        if item.id == "a.png":
            self.a_failed.set()
        return CaptionResult(id=item.id, source=item.source, status="failed", error_kind="backend_unreachable",
                             error="POST /v1/chat/completions to fake failed after 7 attempt(s)",
                             fingerprint=self.fingerprint)


def test_an_answer_to_a_request_sent_before_the_failures_neither_resets_the_streak_nor_re_runs(tmp_path):
    """``b`` answers between ``a``'s and ``c``'s failures, but was admitted before ``a`` failed: it says
    nothing about the server now, so ``a`` stays held (no re-run into the outage) and the streak of two
    trips the pause, after which both run once more."""
    d = tmp_path / "abc"
    d.mkdir()
    for name in "abc":
        (d / f"{name}.png").write_bytes(png_bytes(8, 8))
    server = _Server(up_after_probes=1)
    server.state = "down"
    captioner = _AnswerFromBefore(server)
    s = run_job(captioner, CaptionJob(inputs=[str(d)], output=tmp_path / "o.jsonl", concurrency=3, stop_after=2,
                                      outage=FAST))
    assert (s.ok, s.failed, s.exit_code) == (3, 0, 0)
    assert captioner.failures == 2 and sorted(captioner.calls) == ["a.png", "a.png", "b.png", "c.png", "c.png"]
    assert server.probes == 1  # the trip's probe; with the streak reset by b, a would have re-run at once
