"""JSON over HTTP for model servers: one pooled session per event loop, our retry policy, no secret shown.

Why aiohttp and not httpx here: profiled with cProfile against a real vLLM server (12 images, 8 in
flight, 359 requests), httpx/httpcore spent more client CPU choosing a connection than anything
else: for every request its pool walks all connections, and each check asks the socket
(``getpeername`` and a ``poll``) whether it is still alive, ~44 syscalls per request and 8.4 s of 23 s.
That cost grows with the connections, which is why more images in flight made runs *slower*.
aiohttp's connector hands out a free connection in constant time. httpx stays for everything else
(URL fetching, the one-off synchronous calls).

Bodies are bytes built by the caller, so an image's multi-megabyte data URL can be spliced into the
JSON text once per request instead of being re-escaped by ``json.dumps`` each time.

Retries: 408/425/429/5xx, timeouts and dropped connections, with exponential backoff and jitter,
honouring ``Retry-After``; every other HTTP error raises at once. ``outstanding`` counts requests
sent and not yet answered, which is what admission control looks at to keep a server full.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp

from .._sync import at_loop_end
from .base import BackendError

log = logging.getLogger(__name__)

#: Statuses worth another try: rate limits, server overload and crashes, gateway trouble.
RETRY_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 6
    backoff_base: float = 0.5  # seconds; retry k waits about backoff_base * 2**k (jittered), capped
    backoff_max: float = 20.0
    timeout: float = 300.0


#: Statuses that, after every retry, mean the server is not there: a gateway with nothing behind it
#: (502) or a server that says it is unavailable (503). They count as ``backend_unreachable``.
DOWN_STATUS = frozenset({502, 503})


class HTTPStatusError(BackendError):
    """A request answered with an HTTP error status that is not retried (or ran out of retries)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message, "backend_auth" if status in (401, 403)
                         else "backend_not_found" if status == 404
                         else "backend_unreachable" if status in DOWN_STATUS else None)
        self.status = status


class JSONClient:
    """Pooled JSON requests to one server, at most ``max_connections`` at once."""

    def __init__(self, headers: dict[str, str], max_connections: int, policy: RetryPolicy,
                 redact: Callable[[str], str], label: str) -> None:
        self._headers = {**headers, "Content-Type": "application/json"}
        self.max_connections = max_connections
        self.policy = policy
        self._redact = redact
        self.label = label
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._sem: asyncio.Semaphore | None = None
        self.requests = 0
        self.retries = 0
        self.outstanding = 0
        self.demand = 0  # requests sent or waiting for a connection (admission.py)

    def _state(self) -> tuple[aiohttp.ClientSession, asyncio.Semaphore]:
        """The session of the running loop (sync wrappers run a new loop per call; a session cannot
        cross loops)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._session is None:
            n = self.max_connections
            self._session = aiohttp.ClientSession(
                headers=self._headers,
                connector=aiohttp.TCPConnector(limit=n, limit_per_host=n, ttl_dns_cache=300),
                timeout=aiohttp.ClientTimeout(total=self.policy.timeout, connect=min(self.policy.timeout, 10.0)),
                auto_decompress=True, trust_env=False)
            self._sem, self._loop = asyncio.Semaphore(n), loop
            at_loop_end(self._closer(self._session))
        assert self._sem is not None
        return self._session, self._sem

    async def call(self, method: str, url: str, body: Any = None, *, raw_body: bytes | None = None,
                   retry: bool = True, timeout: float | None = None) -> Any:
        """One JSON request with retries; returns the parsed JSON reply. ``timeout`` (seconds) replaces
        the policy's for this request (a health probe must not wait minutes on a silent server)."""
        session, sem = self._state()
        extra = {"timeout": aiohttp.ClientTimeout(total=timeout, connect=timeout)} if timeout is not None else {}
        data = raw_body if raw_body is not None else (None if body is None else json.dumps(body).encode())
        attempts = self.policy.max_retries + 1 if retry else 1
        what = f"{method} {urlsplit(url).path}"
        problem, status = "no attempt made", 0
        unreachable = False  # the last attempt could not reach the server at all (not a timeout)
        for attempt in range(attempts):
            retry_after: float | None = None
            try:
                self.demand += 1
                try:
                    async with sem:
                        self.requests += 1
                        self.outstanding += 1
                        try:
                            async with session.request(method, url, data=data, **extra) as resp:
                                payload = await resp.read()
                                status, headers = resp.status, resp.headers
                        finally:
                            self.outstanding -= 1
                finally:
                    self.demand -= 1
                if status < 400:
                    return json.loads(payload)
                problem = f"HTTP {status}: {_error_text(payload)}"
                if status not in RETRY_STATUS:
                    raise HTTPStatusError(self._redact(f"{what} to {self.label} failed: {problem}"), status)
                retry_after = _retry_after(headers.get("retry-after"))
            except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError,
                    json.JSONDecodeError, UnicodeDecodeError) as exc:
                kind = "timeout" if isinstance(exc, asyncio.TimeoutError) else type(exc).__name__
                problem = f"{kind}: {exc}" if str(exc) else kind
                status = 0
                unreachable = (isinstance(exc, aiohttp.ClientConnectionError)
                               and not isinstance(exc, asyncio.TimeoutError))
            except aiohttp.InvalidURL as exc:
                raise BackendError(self._redact(f"{what}: invalid URL {exc}")) from None
            if attempt + 1 < attempts:
                delay = min(self.policy.backoff_max, self.policy.backoff_base * 2 ** attempt) * (0.5 + random.random() / 2)
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.policy.backoff_max))
                self.retries += 1
                log.warning("%s", self._redact(f"{what} to {self.label}: {problem}; retry {attempt + 1}/"
                                                f"{attempts - 1} in {delay:.2f}s"))
                await asyncio.sleep(delay)
        message = self._redact(f"{what} to {self.label} failed after {attempts} attempt(s): {problem}")
        if status:
            raise HTTPStatusError(message, status)
        # refused or reset on every retry: the server is down (a timeout may be this request's alone)
        raise BackendError(message, "backend_unreachable" if unreachable else None)

    def _closer(self, session: aiohttp.ClientSession):
        async def close() -> None:
            if not session.closed:
                await session.close()
            if self._session is session:
                self._session = self._loop = None
        return close

    async def aclose(self) -> None:
        session, loop = self._session, self._loop
        self._session = self._loop = None
        if session is not None and not session.closed:
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if loop is running:
                await session.close()


def _error_text(payload: bytes) -> str:
    try:
        data = json.loads(payload)
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", err) if isinstance(err, dict) else err
        text = str(msg)
    except ValueError:
        text = payload.decode("utf-8", "replace")
    return " ".join(text.split())[:300]


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value or ""))
    except ValueError:
        return None


__all__ = ["DOWN_STATUS", "HTTPStatusError", "JSONClient", "RETRY_STATUS", "RetryPolicy"]
