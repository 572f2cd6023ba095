"""Fetching images over http(s), with the limits a web-scale dataset needs.

Every URL of a LAION-style list is a small adversary: dead links, HTML error pages served with
status 200, endless downloads, servers that accept the connection and never answer. ``fetch``
turns each of those into an ``ImageError`` with a stable ``kind`` (a per-image failure record),
never into a crash, a hang or an unbounded buffer:

- status: anything but 200 is ``http_<status>``; 429 and 5xx are retried (``retries`` times);
- content-type: ``image/*`` and the generic binary types are accepted, anything else (HTML, JSON,
  text) is ``bad_content_type``; the body must also start with the magic bytes of an image
  format (``not_an_image``), because servers lie about content types in both directions;
- size: ``Content-Length`` above ``max_bytes`` is refused before reading, and the body is read in
  chunks and abandoned as soon as it passes ``max_bytes`` (``too_large``);
- time: connect and read timeouts per operation plus a total deadline per attempt (``timeout``);
  refused or unreachable hosts are ``connection``;
- targets: a URL that cannot be requested at all is ``bad_url``; a host that resolves to a
  loopback, private or link-local address is ``private_url`` unless ``allow_private_urls``, checked
  again at every redirect hop (redirects are followed here, at most ``MAX_REDIRECTS``).

The target check cannot be a lookup before the request: the client would resolve the name again
when it connects, and a hostile DNS server can answer a public address to the check and 127.0.0.1
to the connect (DNS rebinding). So, unless private targets are allowed, the client's transport is
``pinned.PinnedTransport``: the name is resolved once, at connect time, every answer is checked,
and the socket goes to exactly a checked address, while the Host header, the TLS SNI and the
certificate check keep the URL's host name (see ``pinned`` for why that holds for http and https
and for every redirect hop). That client ignores ``HTTP(S)_PROXY`` (a proxy resolves names itself,
beyond the check); with ``allow_private_urls`` there is nothing to check and the environment's
proxy settings apply as httpx's defaults do.

One ``httpx.Client`` is shared per process and per configuration (connection pooling; the client
is thread-safe, and loaders run on the pipeline's worker threads). Loaders hold only the URL and the
configuration, so items pickle to Ray workers.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from ..images import ImageError
from ..records import escape_surrogates, has_surrogates

#: Content types accepted before the magic-bytes check.
_GENERIC_TYPES = {"application/octet-stream", "binary/octet-stream", "application/binary", ""}

_MAGIC: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "jpg"),
    (b"\x89PNG\r\n\x1a\n", 0, "png"),
    (b"GIF87a", 0, "gif"),
    (b"GIF89a", 0, "gif"),
    (b"WEBP", 8, "webp"),
    (b"BM", 0, "bmp"),
    (b"II*\x00", 0, "tif"),
    (b"MM\x00*", 0, "tif"),
)


def sniff_image_format(data: bytes) -> str | None:
    """The image format the magic bytes announce (jpg, png, gif, webp, bmp, tif), or None."""
    for magic, offset, ext in _MAGIC:
        if data[offset:offset + len(magic)] == magic:
            if ext == "webp" and data[:4] != b"RIFF":
                continue
            return ext
    return None


@dataclass(frozen=True)
class FetchConfig:
    """Limits for downloading one image."""

    max_bytes: int = 32 * 2**20
    connect_timeout: float = 10.0
    read_timeout: float = 30.0
    total_timeout: float = 120.0
    retries: int = 2
    backoff: float = 0.5
    user_agent: str = "scalecap (image captioning; https://github.com/)"
    #: Fetch URLs whose host is loopback, private or link-local (off: ``private_url`` failures).
    allow_private_urls: bool = False


MAX_REDIRECTS = 5
_clients: dict[FetchConfig, object] = {}
_clients_lock = threading.Lock()


def _client(config: FetchConfig):
    import httpx

    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            timeout = httpx.Timeout(config.read_timeout, connect=config.connect_timeout)
            options: dict = {}
            if not config.allow_private_urls:
                from .pinned import PinnedTransport

                options = dict(transport=PinnedTransport(), trust_env=False)
            client = httpx.Client(timeout=timeout, follow_redirects=False,
                                  headers={"User-Agent": config.user_agent}, **options)
            _clients[config] = client
        return client


def fetch(url: str, config: FetchConfig = FetchConfig()) -> bytes:
    """The bytes of the image at ``url``; an ``ImageError`` (with a stable kind) for anything else."""
    import httpx

    if not url.lower().startswith(("http://", "https://")):
        raise ImageError("bad_url", f"only http(s) URLs can be fetched: {_show(url)!r}")
    check_url(url)
    last: ImageError | None = None
    for attempt in range(config.retries + 1):
        if attempt:
            time.sleep(config.backoff * 2 ** (attempt - 1))
        try:
            return _fetch_once(url, config)
        except ImageError as exc:
            last = exc
            if not getattr(exc, "retryable", False):
                raise
        except httpx.TimeoutException as exc:
            last = ImageError("timeout", f"{_show(url)}: timed out ({type(exc).__name__})")
        except httpx.InvalidURL as exc:  # e.g. a redirect to a malformed location
            raise ImageError("bad_url", f"{_show(url)}: {_show(str(exc))}") from None
        except httpx.ConnectError as exc:
            last = ImageError("connection", f"{_show(url)}: cannot connect ({exc})")
        except (httpx.HTTPError, OSError) as exc:
            last = ImageError("http_error", f"{_show(url)}: {type(exc).__name__}: {exc}")
    assert last is not None
    raise last


#: Longest URL shown in a message (a manifest may hold a 64 KiB one).
_SHOWN = 200


def _show(text: str) -> str:
    text = escape_surrogates(text)
    return text if len(text) <= _SHOWN else text[:_SHOWN] + f"... ({len(text)} chars)"


def check_url(url: str) -> None:
    """Refuse a URL that cannot be requested (bad port, bad IPv4 address, control characters, too
    long, not valid Unicode) as ``bad_url``: httpx raises ``InvalidURL`` for these, which is not an
    ``HTTPError`` and so would escape every per-item handler."""
    import httpx

    if has_surrogates(url):
        raise ImageError("bad_url", f"{_show(url)}: not valid Unicode")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, UnicodeError) as exc:
        raise ImageError("bad_url", f"malformed URL {_show(url)!r}: {_show(str(exc))}") from None
    if not parsed.host:
        raise ImageError("bad_url", f"malformed URL {_show(url)!r}: no host")


def _fetch_once(url: str, config: FetchConfig) -> bytes:
    from .pinned import TargetRefused

    deadline = time.monotonic() + config.total_timeout
    for _ in range(MAX_REDIRECTS + 1):  # redirects are followed here, so that every hop is checked
        try:
            with _client(config).stream("GET", url) as response:
                if response.is_redirect:
                    location = response.headers.get("location", "")
                    url = str(response.url.join(location))
                    if not url.lower().startswith(("http://", "https://")):
                        raise ImageError("bad_url", f"redirected to {_show(url)!r}, not an http(s) URL")
                    check_url(url)
                    continue
                return _read_body(response, url, config, deadline)
        except TargetRefused as exc:  # raised by the pinned transport's connect: nothing was sent
            raise ImageError(exc.kind, f"{_show(url)}: {exc.detail}") from None
    raise ImageError("too_many_redirects", f"{_show(url)}: more than {MAX_REDIRECTS} redirects")


def _read_body(response, url: str, config: FetchConfig, deadline: float) -> bytes:
    status = response.status_code
    if status != 200:
        err = ImageError(f"http_{status}", f"{_show(url)}: HTTP {status} {response.reason_phrase}")
        err.retryable = status == 429 or status >= 500  # type: ignore[attr-defined]
        raise err
    ctype = response.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (ctype.startswith("image/") or ctype in _GENERIC_TYPES):
        raise ImageError("bad_content_type", f"{_show(url)}: content-type {ctype!r} is not an image")
    length = response.headers.get("content-length")
    if length and length.isdigit() and int(length) > config.max_bytes:
        raise ImageError("too_large", f"{_show(url)}: {int(length)} bytes exceeds the limit of {config.max_bytes}")
    buf = bytearray()
    for chunk in response.iter_bytes():
        buf += chunk
        if len(buf) > config.max_bytes:
            raise ImageError("too_large", f"{_show(url)}: more than {config.max_bytes} bytes (download abandoned)")
        if time.monotonic() > deadline:
            raise ImageError("timeout", f"{_show(url)}: download took longer than {config.total_timeout}s")
    data = bytes(buf)
    if sniff_image_format(data) is None:
        raise ImageError("not_an_image", f"{_show(url)}: the body is not a known image format "
                                         f"(content-type {ctype!r}, {len(data)} bytes)")
    return data


@dataclass(frozen=True)
class UrlLoader:
    """The lazy loader of one URL item (picklable: the URL and the limits, no client)."""

    url: str
    config: FetchConfig = FetchConfig()

    def __call__(self) -> bytes:
        return fetch(self.url, self.config)
