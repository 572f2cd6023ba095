"""Fixtures for the serving tests: one real vLLM OpenAI server per session, plus small fakes.

The server runs the tiny Qwen2-VL folder on 127.0.0.1 (a free port), logs to a file, and is always
stopped by its process group id (never by name), also when a test fails. ``FakeClosedAPI`` plays a
closed API (it lists models and chats, but refuses vLLM's extra fields such as ``prompt_logprobs``,
as OpenAI does); ``FaultProxy`` sits in front of the real server and injects 500s and slow responses.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from collections.abc import Callable
from typing import Any

import httpx
import pytest

SERVED_NAME = "tiny-qwen2vl"
STARTUP_TIMEOUT = 420.0  # a loaded 2-core machine has needed over 180 s


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VLLMServer:
    """A ``vllm.entrypoints.openai.api_server`` child process in its own process group."""

    def __init__(self, model_dir: Path, workdir: Path) -> None:
        self.model_dir, self.workdir = model_dir, workdir
        self.port = free_port()
        self.log_path = workdir / "vllm_server.log"
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def api_base(self) -> str:
        return self.root + "/v1"

    def start(self) -> None:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1",
               "DO_NOT_TRACK": "1", "VLLM_CACHE_ROOT": str(self.workdir / "vllm_cache")}
        cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(self.model_dir),
               "--served-model-name", SERVED_NAME, "--host", "127.0.0.1", "--port", str(self.port),
               "--dtype", "float32", "--enforce-eager", "--max-model-len", "2048",
               "--limit-mm-per-prompt", '{"image":4,"video":0}']
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== start {self.starts} {time.ctime()}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.starts += 1

    def wait_ready(self, timeout: float = STARTUP_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(f"vLLM server exited during start-up; log tail:\n{self.log_tail()}")
            try:
                if httpx.get(self.root + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"vLLM server not healthy after {timeout:.0f}s; log tail:\n{self.log_tail()}")

    def kill(self, sig: int = signal.SIGKILL, wait: float = 30.0) -> None:
        """Signal the whole process group (API server, engine core, worker), then reap."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        try:
            os.killpg(proc.pid, sig)
            proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        except ProcessLookupError:
            pass
        # children that outlived their parent are still in the group
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def stop(self) -> None:
        self.kill(signal.SIGTERM, wait=20.0)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "<no log>"


@pytest.fixture(scope="session")
def vllm_server(tiny_models, tmp_path_factory) -> VLLMServer:
    yield from _serve(lambda workdir: Path(tiny_models["qwen2vl"]), tmp_path_factory.mktemp("vllm"))


@pytest.fixture(scope="module")
def digit_vllm_server(tiny_models, tmp_path_factory) -> VLLMServer:
    """A second server, for one module, on the digit-writing copy of tiny Qwen2-VL (its greedy text
    always re-tokenises to the generated ids; see scalecap.testing.tiny_models.build_digit_model)."""
    from scalecap.testing.tiny_models import build_digit_model

    yield from _serve(lambda workdir: build_digit_model(tiny_models["qwen2vl"], workdir / "digit-qwen2vl"),
                      tmp_path_factory.mktemp("vllm-digits"))


def _serve(model_dir, workdir: Path):
    """Start a server on ``model_dir(workdir)``, yield it, always stop it (a fixture body)."""
    if importlib.util.find_spec("vllm") is None:
        pytest.skip("vLLM is not installed")
    server = VLLMServer(Path(model_dir(workdir)).resolve(), workdir)
    try:
        server.start()
        server.wait_ready()
        yield server
    finally:
        server.stop()


# --------------------------------------------------------------------------- fake HTTP servers
class _QuietServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client gave up: fine
        pass


class _Running:
    """A stdlib HTTP server on 127.0.0.1 in a daemon thread."""

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = _QuietServer(("127.0.0.1", 0), handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class Outage:
    """An outage a fake server or proxy plays: while ``down``, every request's connection is closed
    unanswered (what a client sees of a server that died mid-request); with ``up_after_probes`` = k,
    the k-th ``GET /v1/models`` of the outage (the run's probe) ends it."""

    def __init__(self) -> None:
        self.down = False
        self.up_after_probes: int | None = None
        self.probes_while_down = 0
        self.dropped = 0
        self._lock = threading.Lock()

    def drops(self, handler: BaseHTTPRequestHandler) -> bool:
        with self._lock:
            if self.down and handler.command == "GET" and handler.path == "/v1/models":
                self.probes_while_down += 1
                if self.up_after_probes is not None and self.probes_while_down >= self.up_after_probes:
                    self.down = False
            if self.down:
                self.dropped += 1
                handler.close_connection = True
            return self.down


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, payload: bytes | dict, ctype: str = "application/json") -> None:
        data = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass


#: The request fields OpenAI's chat completions accept (a subset is enough for our requests).
OPENAI_FIELDS = {"model", "messages", "max_tokens", "max_completion_tokens", "temperature", "seed", "stop", "top_p",
                 "n", "logprobs", "top_logprobs", "frequency_penalty", "presence_penalty", "stream", "user"}


class FakeClosedAPI(_Running):
    """A closed API: lists ``gpt-fake``, chats, rejects unknown fields with 400 like OpenAI does.

    ``unauthorized``: "all" refuses every request with 401, "chat" only chat completions; the 401
    message echoes the Authorization header, as a careless server might (the key must not leak).
    """

    def __init__(self, unauthorized: str | None = None) -> None:
        self.unauthorized = unauthorized
        self.bodies: list[dict] = []
        fake = self

        class H(_Handler):
            def _deny(self) -> None:
                self._send(401, {"error": {"message": f"Incorrect API key provided: {self.headers.get('Authorization')}",
                                           "type": "invalid_request_error"}})

            def do_GET(self) -> None:
                if fake.unauthorized == "all":
                    return self._deny()
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [{"id": "gpt-fake", "object": "model",
                                                                          "owned_by": "openai"}]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                body = json.loads(self._body() or b"{}")
                fake.bodies.append(body)
                if fake.unauthorized in ("all", "chat"):
                    return self._deny()
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                unknown = sorted(set(body) - OPENAI_FIELDS)
                if unknown:
                    return self._send(400, {"error": {"message": f"Unrecognized request argument supplied: {unknown[0]}"}})
                self._send(200, {"id": "x", "object": "chat.completion", "model": body.get("model"), "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": "Describe more details about the cat.\n"},
                     "finish_reason": "stop"}], "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}})

        super().__init__(H)


class FaultProxy(_Running):
    """A reverse proxy to ``upstream`` that can fail or stall requests.

    ``fail_next``: answer the next k POSTs with 500. ``stall``: a predicate on the request body;
    matching POSTs wait ``stall_seconds`` before being forwarded. ``outage``: the server is gone
    (``Outage``). ``key``: requests without ``Bearer <key>`` get vLLM's ``--api-key`` answer, 401
    (the session server has no key; the proxy plays one). Every POST body is recorded.
    """

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        self.outage = Outage()
        self.key: str | None = None
        self.refused = 0
        self.fail_next = 0
        self.stall: Callable[[bytes], bool] | None = None
        self.stall_seconds = 0.0
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        proxy = self

        class H(_Handler):
            def _forward(self, method: str, body: bytes | None) -> None:
                try:
                    r = httpx.request(method, proxy.upstream + self.path, content=body, timeout=60,
                                      headers={"Content-Type": "application/json"} if body is not None else None)
                except httpx.HTTPError as exc:
                    return self._send(502, {"error": {"message": f"proxy: {exc}"}})
                self._send(r.status_code, r.content, r.headers.get("content-type", "application/json"))

            def _refuses(self) -> bool:
                if proxy.outage.drops(self):
                    return True
                if proxy.key is not None and self.headers.get("Authorization") != f"Bearer {proxy.key}":
                    with proxy.lock:
                        proxy.refused += 1
                    self._send(401, {"error": "Unauthorized"})
                    return True
                return False

            def do_GET(self) -> None:
                if not self._refuses():
                    self._forward("GET", None)

            def do_POST(self) -> None:
                body = self._body()
                if self._refuses():
                    return
                with proxy.lock:
                    proxy.bodies.append(body)
                    fail = proxy.fail_next > 0
                    if fail:
                        proxy.fail_next -= 1
                if fail:
                    return self._send(500, {"error": {"message": "injected failure"}})
                if proxy.stall is not None and proxy.stall(body):
                    time.sleep(proxy.stall_seconds)
                self._forward("POST", body)

        super().__init__(H)


@pytest.fixture
def fault_proxy(vllm_server):
    proxy = FaultProxy(vllm_server.root)
    yield proxy
    proxy.close()


@pytest.fixture
def fake_closed_api():
    made: list[FakeClosedAPI] = []

    def make(**kw: Any) -> FakeClosedAPI:
        made.append(FakeClosedAPI(**kw))
        return made[-1]

    yield make
    for f in made:
        f.close()


class FakeVLLM(_Running):
    """A stdlib stand-in for a vLLM OpenAI server, for the HTTP backend's own tests (no vLLM needed).

    Speaks what ``OpenAIBackend`` uses: ``/v1/models`` (owned_by "vllm"), ``/tokenize`` and
    ``/detokenize`` with one token per character (id = code point), and ``/v1/chat/completions``
    for generation and for scoring (``prompt_logprobs``: one entry per character of a flat chat
    template, None first, as vLLM does). The log-prob of each character is ``logprob(char,
    with_image)``, chosen here so that tests can compute what the backend must parse. ``reply(body)``
    picks a generation's text; ``fail_next`` answers the next k chat requests with 500. Every chat
    request body is kept in ``bodies``. ``outage`` plays a dead server (``Outage``).
    """

    MODEL = "fake-vlm"

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.fail_next = 0
        self.reply: Callable[[dict], str] = lambda body: "A red car."
        self.outage = Outage()
        fake = self

        class H(_Handler):
            def do_GET(self) -> None:
                if fake.outage.drops(self):
                    return
                if self.path == "/v1/models":
                    return self._send(200, {"object": "list", "data": [
                        {"id": fake.MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 4096}]})
                self._send(404, {"error": {"message": "not found"}})

            def do_POST(self) -> None:
                raw = self._body()
                if fake.outage.drops(self):
                    return
                body = json.loads(raw or b"{}")
                if self.path == "/tokenize":
                    return self._send(200, {"tokens": [ord(c) for c in body["prompt"]], "count": len(body["prompt"])})
                if self.path == "/detokenize":
                    return self._send(200, {"prompt": "".join(chr(t) for t in body["tokens"])})
                if self.path != "/v1/chat/completions":
                    return self._send(404, {"error": {"message": "not found"}})
                fake.bodies.append(body)
                if fake.fail_next > 0:
                    fake.fail_next -= 1
                    return self._send(500, {"error": {"message": "injected failure"}})
                prompt, with_image = fake.template(body["messages"])
                if "prompt_logprobs" in body:
                    entries = [None] + [{str(ord(c)): {"logprob": fake.logprob(c, with_image), "rank": 1,
                                                       "decoded_token": c}} for c in prompt[1:]]
                    return self._send(200, {"id": "s", "object": "chat.completion", "prompt_logprobs": entries,
                                            "choices": [{"index": 0, "message": {"role": "assistant", "content": "."},
                                                         "finish_reason": "length"}],
                                            "usage": {"prompt_tokens": len(prompt), "completion_tokens": 1}})
                text = fake.reply(body)
                self._send(200, {"id": "g", "object": "chat.completion", "model": body.get("model"), "choices": [
                    {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                    "usage": {"prompt_tokens": len(prompt), "completion_tokens": len(text)}})

        super().__init__(H)

    @staticmethod
    def logprob(char: str, with_image: bool) -> float:
        return -(ord(char) % 7) / 10 - (0.0 if with_image else 0.9)

    @staticmethod
    def template(messages: list[dict]) -> tuple[str, bool]:
        """A flat chat template: ``<role>`` then the text of each message, an image as ``[img]``."""
        out, with_image = [], False
        for m in messages:
            content = m["content"]
            if isinstance(content, list):
                parts = []
                for p in content:
                    if p["type"] == "image_url":
                        with_image = True
                        parts.append("[img]")
                    else:
                        parts.append(p["text"])
                content = "".join(parts)
            out.append(f"<{m['role']}>" + content)
        return "".join(out), with_image


@pytest.fixture
def fake_vllm():
    fake = FakeVLLM()
    yield fake
    fake.close()
