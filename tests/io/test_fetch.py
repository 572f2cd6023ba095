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


STRICT = FetchConfig(max_bytes=2**20, connect_timeout=1.0, read_timeout=1.0, retries=0)


@pytest.fixture()
def rebinding_dns(monkeypatch):
    """A hostile DNS server for ``rebind.test`` (TTL 0): its answers are popped from the list the
    test sets, for every lookup by anyone (``socket.getaddrinfo`` itself is replaced, so a second
    lookup by httpx would be seen too); ``lookups`` counts them. 127.0.0.2 plays a public address
    (the tests are offline), everything else keeps the real rule."""
    import ipaddress
    import socket

    from scalecap.io import pinned

    real_lookup, real_rule = socket.getaddrinfo, pinned.is_forbidden
    dns = type("DNS", (), {"answers": [], "lookups": 0})()

    def lookup(host, port, *args, **kw):
        if host != "rebind.test":
            return real_lookup(host, port, *args, **kw)
        dns.lookups += 1
        answer = dns.answers.pop(0) if len(dns.answers) > 1 else dns.answers[0]
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port or 0)) for ip in answer]

    monkeypatch.setattr(socket, "getaddrinfo", lookup)
    monkeypatch.setattr(pinned, "is_forbidden", lambda ip: ip != ipaddress.ip_address("127.0.0.2") and real_rule(ip))
    return dns


def test_the_connection_goes_to_the_address_that_was_checked(twin_servers, rebinding_dns):
    """First answer public, every later one 127.0.0.1: the one lookup is the checked one, and the
    socket goes to it; nothing reaches the private service (before the fix, httpx looked the name up
    again to connect and sent the request to 127.0.0.1)."""
    port, public_seen, private_seen = twin_servers()
    rebinding_dns.answers = [["127.0.0.2"], ["127.0.0.1"]]
    assert sniff_image_format(fetch(f"http://rebind.test:{port}/ok.png", STRICT)) == "png"
    assert (public_seen, private_seen, rebinding_dns.lookups) == (["/ok.png"], [], 1)

    # the server closed that connection (HTTP/1.0), so the next fetch connects again: the lookup
    # now answers 127.0.0.1, and the connect itself refuses it before a byte is sent
    assert kind_of(f"http://rebind.test:{port}/ok.jpg", STRICT) == "private_url"
    assert (public_seen, private_seen, rebinding_dns.lookups) == (["/ok.png"], [], 2)


def test_a_name_with_one_private_answer_among_public_ones_is_refused(twin_servers, rebinding_dns):
    port, public_seen, private_seen = twin_servers()
    rebinding_dns.answers = [["127.0.0.2", "127.0.0.1"]]
    with pytest.raises(ImageError) as exc:
        fetch(f"http://rebind.test:{port}/ok.png", STRICT)
    assert exc.value.kind == "private_url" and "rebind.test is 127.0.0.1" in str(exc.value)
    assert (public_seen, private_seen) == ([], [])


def test_a_public_first_hop_redirecting_to_a_private_host_is_refused_at_the_hop(twin_servers, rebinding_dns):
    port, public_seen, private_seen = twin_servers()
    with pytest.raises(ImageError) as exc:
        fetch(f"http://127.0.0.2:{port}/redirect-to-localhost", STRICT)
    assert exc.value.kind == "private_url" and "localhost is" in str(exc.value)
    assert (public_seen, private_seen) == (["/redirect-to-localhost"], [])


def test_allowed_private_targets_are_fetched_by_name(twin_servers, rebinding_dns):
    port, public_seen, private_seen = twin_servers()
    rebinding_dns.answers = [["127.0.0.1"]]
    assert sniff_image_format(fetch(f"http://rebind.test:{port}/ok.png", FAST)) == "png"
    assert (public_seen, private_seen) == ([], ["/ok.png"])


def test_https_is_verified_against_the_host_name_while_connecting_to_the_checked_address(
        twin_servers, rebinding_dns, tmp_path, monkeypatch):
    """The socket goes to the checked IP, but SNI and the certificate check use the URL's name:
    a certificate for rebind.test is accepted, one for another name is not."""
    pytest.importorskip("cryptography")  # to make the certificates; not a dependency of scalecap
    import ssl

    good_cert, good_key = _self_signed(tmp_path, "rebind.test")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(good_cert, good_key)
    port, public_seen, private_seen = twin_servers(lambda sock: ctx.wrap_socket(sock, server_side=True))
    rebinding_dns.answers = [["127.0.0.2"], ["127.0.0.1"]]
    monkeypatch.setenv("SSL_CERT_FILE", str(good_cert))  # the test's own CA: the self-signed cert
    config = FetchConfig(max_bytes=2**20, connect_timeout=1.0, read_timeout=1.0, retries=0,
                         user_agent="tls-test")  # a client of its own, built with this CA file
    assert sniff_image_format(fetch(f"https://rebind.test:{port}/ok.png", config)) == "png"
    assert (public_seen, private_seen, rebinding_dns.lookups) == (["/ok.png"], [], 1)

    other_cert, _ = _self_signed(tmp_path, "other.test")
    monkeypatch.setenv("SSL_CERT_FILE", str(other_cert))
    rebinding_dns.answers = [["127.0.0.2"]]
    config = FetchConfig(max_bytes=2**20, connect_timeout=1.0, read_timeout=1.0, retries=0, user_agent="tls-other")
    assert kind_of(f"https://rebind.test:{port}/ok.png", config) == "connection"  # certificate refused
    assert (public_seen, private_seen) == (["/ok.png"], [])


def _self_signed(folder, name: str):
    """A self-signed certificate for ``name`` and its key, as PEM files."""
    import datetime

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.crt", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                                           serialization.NoEncryption()))
    return cert_path, key_path
