"""``X-Forwarded-For`` and ``X-Forwarded-Proto``, believed only from trusted proxies.

Behind a reverse proxy every connection comes from the proxy; the client's address (in logs and
the refused-token watch) and the scheme the client used (in ``meta.location``) are in headers
the proxy sets. Anyone can send those headers, so they are read only when the connection's peer
is in ``[server].trusted_proxies``. The client is then the right-most address of
``X-Forwarded-For`` that is not itself a trusted proxy (as nginx's ``real_ip_recursive``), so a
client cannot choose its address by sending the header itself: proxies append to it.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_SCHEMES = frozenset({"http", "https"})


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    # An IPv4 peer on a dual-stack socket shows as ::ffff:a.b.c.d.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(text: str, trusted: Sequence[Network]) -> bool:
    address = _address(text)
    return address is not None and any(address in network for network in trusted)


def client_address(peer: str, forwarded_for: str | None, trusted: Sequence[Network]) -> str:
    """The client's address: the peer's, unless the peer is a trusted proxy that forwarded."""
    if not forwarded_for or not _trusted(peer, trusted):
        return peer
    hops = [_address(part) for part in forwarded_for.split(",")]
    if not hops or any(hop is None for hop in hops):
        return peer  # a malformed header is not believed
    for hop in reversed(hops):
        if not _trusted(str(hop), trusted):
            return str(hop)
    return str(hops[0])


def forwarded_middleware(trusted: Sequence[Network]) -> Middleware:
    """A middleware that sets ``request.remote`` and ``request.scheme`` from the proxy's
    headers when the peer is trusted; without trusted proxies it changes nothing."""

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        peer = request.remote
        if not trusted or peer is None or not _trusted(peer, trusted):
            return await handler(request)
        changes: dict[str, str] = {}
        remote = client_address(peer, request.headers.get("X-Forwarded-For"), trusted)
        if remote != peer:
            changes["remote"] = remote
        # The nearest proxy's value is the last one: it is the one that saw the client.
        proto = request.headers.get("X-Forwarded-Proto", "").rpartition(",")[2].strip().lower()
        if proto in _SCHEMES:
            changes["scheme"] = proto
        if not changes:
            return await handler(request)
        return await handler(request.clone(**changes))  # type: ignore[arg-type]

    return forwarded
