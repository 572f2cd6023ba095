"""Connections pinned to the addresses that were checked (the DNS-rebinding defence of ``fetch``).

Checking a host's addresses and then letting the HTTP client connect by name is a time-of-check /
time-of-use gap: the client resolves the name a second time, and a hostile DNS server (TTL 0)
answers a public address to the check and 127.0.0.1 to the connect. So the check lives *in* the
connect: httpcore hands its network backend the host name and port of every new connection, and
``PinnedBackend.connect_tcp`` resolves that name once, refuses the connection if any of the
answers is loopback, private, link-local or otherwise not global, and opens the socket to one of
those very addresses (an IP literal: no second lookup). Everything above the socket still sees the
original name: the Host header comes from the URL, and httpcore starts TLS with the origin's host
name as SNI and for certificate verification, so https is checked against the name, not the IP.
Every redirect hop is a new request through the same transport, so it is checked the same way; a
pooled keep-alive connection is reused only for its own origin and was checked when it was opened.

An environment proxy (``HTTP(S)_PROXY``) would resolve the target itself, out of reach of this
check, so the pinned client does not use one (``fetch`` builds it with ``trust_env=False``).
"""

from __future__ import annotations

import ipaddress
import socket
import typing

import httpcore
import httpx


class TargetRefused(Exception):
    """A connection the address check refused; ``kind`` is the ImageError kind it becomes.

    Raised inside httpcore's connect (httpx lets exceptions that are not httpcore's pass through
    unchanged); ``fetch`` adds the URL and turns it into an ``ImageError``."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def is_forbidden(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Loopback, private, link-local, reserved or any other non-global address (an IPv4-mapped
    IPv6 address is judged as the IPv4 address it carries)."""
    mapped = getattr(ip, "ipv4_mapped", None)
    return not (mapped or ip).is_global


def checked_addresses(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, in resolver order, after one lookup; ``TargetRefused``
    if the name does not resolve (``connection``) or if any answer is forbidden (``private_url``:
    a name that answers one public and one private address is refused, not tried in order)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise TargetRefused("connection", f"cannot resolve {host!r} ({exc})") from None
    addresses: list[str] = []
    for info in infos:
        text = str(info[4][0])
        ip = ipaddress.ip_address(text.split("%")[0])
        if is_forbidden(ip):
            raise TargetRefused("private_url", f"{host} is {ip}, a loopback, private or link-local address; "
                                               "refused (--allow-private-urls fetches it)")
        if text not in addresses:
            addresses.append(text)
    if not addresses:
        raise TargetRefused("connection", f"cannot resolve {host!r} (no address)")
    return addresses


class PinnedBackend(httpcore.SyncBackend):
    """httpcore's socket backend, connecting only to addresses ``checked_addresses`` returned."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: typing.Iterable[typing.Any] | None = None) -> httpcore.NetworkStream:
        last: Exception | None = None
        for address in checked_addresses(host, port):
            try:  # an IP literal: create_connection does not consult DNS again
                return super().connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last


class PinnedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool uses ``PinnedBackend``.

    HTTPTransport has no parameter for a network backend, so its pool is rebuilt here with the same
    TLS context and limits; request handling, exception mapping and closing stay httpx's own."""

    def __init__(self, limits: httpx.Limits = httpx.Limits(max_connections=100, max_keepalive_connections=20)) -> None:
        super().__init__(limits=limits, trust_env=False)
        self._pool = httpcore.ConnectionPool(
            ssl_context=httpx.create_ssl_context(),  # system CAs (SSL_CERT_FILE/DIR honoured)
            max_connections=limits.max_connections,
            max_keepalive_connections=limits.max_keepalive_connections,
            keepalive_expiry=limits.keepalive_expiry,
            network_backend=PinnedBackend(),
        )
