"""URL fetching against a local server on 127.0.0.1: every failure is an ImageError with a kind."""

from __future__ import annotations

import pytest

from scalecap.images import ImageError
from scalecap.io.fetch import FetchConfig, fetch, sniff_image_format

FAST = FetchConfig(max_bytes=2**20, connect_timeout=1.0, read_timeout=1.0, retries=0)


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
    config = FetchConfig(connect_timeout=1.0, read_timeout=1.0, retries=2, backoff=0.01)
    assert kind_of(f"{http_server}/error500", config) == "http_500"
    assert kind_of(f"{http_server}/missing.png", config) == "http_404"
