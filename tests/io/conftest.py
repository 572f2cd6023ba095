"""Fixtures for the I/O tests: an instant fake captioner (for the I/O machinery only), image
folders with awkward names, a local HTTP server on 127.0.0.1, CLI arguments for the tiny models."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest
from iohelpers import FakeCaptioner, _gif, _webp, jpeg_bytes, png_bytes


@pytest.fixture()
def fake():
    return FakeCaptioner()


@pytest.fixture()
def small_folder(tmp_path) -> Path:
    """Six small images, with spaces, unicode and a subfolder in their names."""
    d = tmp_path / "my images ü"
    (d / "sub dir").mkdir(parents=True)
    (d / "a.png").write_bytes(png_bytes(10, 20))
    (d / "b photo.jpg").write_bytes(jpeg_bytes(30, 20))
    (d / "çafé ☕.png").write_bytes(png_bytes(40, 25))
    (d / "sub dir" / "c.png").write_bytes(png_bytes(12, 12))
    (d / "sub dir" / "d.webp").write_bytes(_webp())
    (d / "sub dir" / "e.gif").write_bytes(_gif())
    (d / "notes.txt").write_text("not an image: ignored by folder listing")
    return d


# ---------------------------------------------------------------------------------------- http
class _Handler(http.server.BaseHTTPRequestHandler):
    routes: dict = {}
    #: The paths requested, in order (a fresh list per server).
    seen: list = []

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):  # noqa: N802
        self.seen.append(self.path)
        route = self.routes.get(self.path)
        if route is None:
            self.send_error(404, "Not Found")
            return
        kind = route[0]
        if kind == "image":
            _, body, ctype = route
            self.send_response(200)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif kind == "chunked_big":  # no Content-Length: the client must stop reading by itself
            _, total = route
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Connection", "close")
            self.end_headers()
            chunk = b"\xff\xd8\xff" + b"\0" * 65533
            sent = 0
            try:
                while sent < total:
                    self.wfile.write(chunk)
                    sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif kind == "slow":
            _, seconds = route
            time.sleep(seconds)
            try:
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.end_headers()
                self.wfile.write(png_bytes())
            except (BrokenPipeError, ConnectionResetError):
                pass
        elif kind == "status":
            self.send_error(route[1])
        elif kind == "redirect":  # to a path on this server, under the host name given
            _, host, path = route
            self.send_response(302)
            self.send_header("Location", f"http://{host}:{self.server.server_address[1]}{path}")
            self.send_header("Content-Length", "0")
            self.end_headers()


def _routes() -> dict:
    return {
        "/ok.png": ("image", png_bytes(20, 10), "image/png"),
        "/ok.jpg": ("image", jpeg_bytes(22, 11), "image/jpeg"),
        "/octet.png": ("image", png_bytes(8, 8), "application/octet-stream"),
        "/page.html": ("image", b"<html><body>not an image</body></html>", "text/html; charset=utf-8"),
        "/liar.png": ("image", b"<html>I claim to be a PNG</html>", "image/png"),
        "/big.jpg": ("image", b"\xff\xd8\xff" + b"\0" * (3 * 2**20), "image/jpeg"),
        "/endless.jpg": ("chunked_big", 8 * 2**20),
        "/slow.png": ("slow", 3.0),
        "/error500": ("status", 500),
        "/redirect-to-ok": ("redirect", "127.0.0.1", "/ok.png"),
        "/redirect-loop": ("redirect", "127.0.0.1", "/redirect-loop"),
        "/redirect-to-localhost": ("redirect", "localhost", "/ok.png"),
    }


def _serve(host: str, port: int = 0, wrap=None) -> tuple[http.server.ThreadingHTTPServer, list]:
    """A started server on ``host:port`` with the test routes, and the list of paths it was asked for."""
    seen: list = []
    handler = type("H", (_Handler,), {"routes": _routes(), "seen": seen})
    server = http.server.ThreadingHTTPServer((host, port), handler)
    if wrap is not None:  # e.g. a TLS context's wrap_socket
        server.socket = wrap(server.socket)
    server.daemon_threads = True
    # a short poll: shutdown() waits up to one poll interval, at every test's teardown
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    return server, seen


def _stop(*servers: http.server.ThreadingHTTPServer) -> None:
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture()
def http_server():
    """A local HTTP server on 127.0.0.1 with routes for every failure the fetcher handles."""
    server, _ = _serve("127.0.0.1")
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        _stop(server)


@pytest.fixture()
def twin_servers():
    """Start two servers on one port: a stand-in for a public host on 127.0.0.2 and the "private"
    service on 127.0.0.1 that a rebinding DNS answer points at. ``start(wrap=None)`` returns (port,
    paths asked of the public one, paths asked of the private one); ``wrap`` (a TLS context's
    ``wrap_socket``) makes the public one https."""
    started: list = []

    def start(wrap=None) -> tuple[int, list, list]:
        private, private_seen = _serve("127.0.0.1")
        started.append(private)
        port = private.server_address[1]
        public, public_seen = _serve("127.0.0.2", port, wrap)
        started.append(public)
        return port, public_seen, private_seen

    try:
        yield start
    finally:
        _stop(*started)


@pytest.fixture()
def closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


