"""Which URLs an endpoint may have: http or https, and, unless allowed, no address
inside the deployment's own network (loopback, private, link-local...)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse

MAX_URL_LENGTH = 2000


def problem_with(url: str) -> str | None:
    """Why ``url`` cannot be an endpoint's address, or None when its shape is fine."""
    if len(url) > MAX_URL_LENGTH:
        return f"The URL is longer than {MAX_URL_LENGTH} characters."
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError as exc:
        return f"The URL cannot be read: {exc}."
    if parts.scheme not in ("http", "https"):
        return "The URL must start with http:// or https://."
    if not parts.hostname:
        return "The URL has no host."
    if parts.username is not None or parts.password is not None:
        return "The URL must not carry credentials."
    return None


def _internal(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return (
        ip.is_private
        or ip.is_loopback
        or ip.is_link_local
        or ip.is_multicast
        or ip.is_reserved
        or ip.is_unspecified
    )


async def internal_address(url: str) -> str | None:
    """An address inside the deployment's network that ``url``'s host is or resolves
    to, or None. A host that does not resolve is not refused here: sending to it fails
    and is logged like any other failure."""
    host = urllib.parse.urlsplit(url).hostname or ""
    try:
        return host if _internal(host) else None
    except ValueError:
        pass
    if host == "localhost" or host.endswith(".localhost"):
        return host
    try:
        found = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return None
    for _family, _type, _proto, _name, sockaddr in found:
        address = str(sockaddr[0])
        if _internal(address):
            return address
    return None
