"""Blocking calls close the HTTP session of the loop they ran on (no "Unclosed client session").

The sync API runs a fresh event loop per call; an aiohttp session cannot outlive its loop, and one
left open warned at garbage collection and leaked its connections.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scalecap._sync import run_sync
from scalecap.backends.http_client import JSONClient, RetryPolicy


class _Echo(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers["Content-Length"]))
        reply = json.dumps({"got": json.loads(body)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def echo_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/echo"
    server.shutdown()


def test_each_blocking_call_closes_its_session(echo_url):
    client = JSONClient({}, 4, RetryPolicy(max_retries=0), lambda s: s, "echo")
    sessions = []

    async def one(i: int):
        reply = await client.call("POST", echo_url, {"i": i})
        sessions.append(client._session)
        return reply

    assert [run_sync(one(i)) for i in range(3)] == [{"got": {"i": i}} for i in range(3)]
    assert len({id(s) for s in sessions}) == 3  # one session per loop ...
    assert all(s.closed for s in sessions)  # ... each closed before its loop ended
    assert client._session is None
