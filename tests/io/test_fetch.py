"""URL fetching against a local server on 127.0.0.1: every failure is an ImageError with a kind."""

from __future__ import annotations

import pytest

from scalecap.images import ImageError
from scalecap.io.fetch import FetchConfig, fetch, sniff_image_format

FAST = FetchConfig(max_bytes=2**20, connect_timeout=1.0, read_timeout=1.0, retries=0, allow_private_urls=True)


def kind_of(url: str, config: FetchConfig = FAST) -> str:
    with pytest.raises(ImageError) as exc:
        fetch(url, config)
    return exc.value.kind


def test_good_images_and_generic_content_types(http_server):
    assert sniff_image_format(fetch(f"{http_server}/ok.png", FAST)) == "png"
    assert sniff_image_format(fetch(f"{http_server}/ok.jpg", FAST)) == "jpg"
    assert sniff_image_format(fetch(f"{http_server}/octet.png", FAST)) == "png"


def test_each_failure_has_a_stable_kind(http_server, closed_port):
    assert kind_of(f"{http_server}/missing.png") == "http_404"
    assert kind_of(f"{http_server}/error500") == "http_500"
    assert kind_of(f"{http_server}/page.html") == "bad_content_type"
    assert kind_of(f"{http_server}/liar.png") == "not_an_image"
    assert kind_of(f"{http_server}/big.jpg") == "too_large"  # refused on Content-Length
    assert kind_of(f"{http_server}/endless.jpg") == "too_large"  # no length: abandoned while reading
    assert kind_of(f"http://127.0.0.1:{closed_port}/x.png") == "connection"
    assert kind_of("ftp://127.0.0.1/x.png") == "bad_url"
    # the server answers /slow.png after 3 s: "timeout" means the 1 s read timeout cut it short
    assert kind_of(f"{http_server}/slow.png") == "timeout"


def test_server_errors_are_retried_then_reported(http_server):
    config = FetchConfig(connect_timeout=1.0, read_timeout=1.0, retries=2, backoff=0.01, allow_private_urls=True)
    assert kind_of(f"{http_server}/error500", config) == "http_500"
    assert kind_of(f"{http_server}/missing.png", config) == "http_404"


def test_private_targets_are_refused_unless_allowed_also_after_a_redirect(http_server, monkeypatch):
    strict = FetchConfig(max_bytes=2**20, connect_timeout=1.0, read_timeout=1.0, retries=0)
    assert kind_of(f"{http_server}/ok.png", strict) == "private_url"
    for url in ("http://10.1.2.3/a.jpg", "http://169.254.169.254/latest/meta-data", "http://[::1]/a.png",
                "http://[::ffff:127.0.0.1]/a.png", "http://192.168.0.1/a.png", "http://localhost/a.png"):
        assert kind_of(url, strict) == "private_url", url
    # a redirect is followed hop by hop: the hop to the private address is checked (allowed here)
    assert sniff_image_format(fetch(f"{http_server}/redirect-to-ok", FAST)) == "png"
    assert kind_of(f"{http_server}/redirect-loop", FAST) == "too_many_redirects"

    # a public first hop (127.0.0.1 dressed as a public address for the check only) that redirects
    # to a private one: the second hop is refused
    import importlib
    import socket
    import types

    fetch_mod = importlib.import_module("scalecap.io.fetch")

    def resolve(host, *args, **kw):
        if host == "127.0.0.1":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", 0))]
        return socket.getaddrinfo(host, *args, **kw)

    monkeypatch.setattr(fetch_mod, "socket", types.SimpleNamespace(getaddrinfo=resolve, gaierror=socket.gaierror,
                                                                   SOCK_STREAM=socket.SOCK_STREAM))
    assert sniff_image_format(fetch(f"{http_server}/ok.png", strict)) == "png"
    with pytest.raises(ImageError) as exc:
        fetch(f"{http_server}/redirect-to-localhost", strict)
    assert exc.value.kind == "private_url" and "localhost is" in str(exc.value)
