"""Which URLs an endpoint may have, and which address a message to it goes to.

An endpoint's URL is http or https. Unless ``webhooks_allow_private`` is on, its host
must resolve only to addresses on the public internet: loopback, private, link-local,
shared (100.64.0.0/10, which cloud metadata services use), documentation, benchmarking,
multicast, reserved and every other special-purpose range are refused, also when they
hide in an IPv6 address (IPv4-mapped, IPv4-compatible, IPv4-translated, NAT64, 6to4,
Teredo).

A URL is read once, by httpx, when it is registered: one httpx would refuse to send to
(``http://0177.0.0.1/``, a host name with an empty or over-long label) is refused then,
with the reason, instead of failing at every attempt.

A message is sent to the very address that was checked: the host is resolved once per
attempt, every address it resolves to is checked, and the connection goes to the first
one, with the URL's host name kept for the Host header and for TLS (SNI and the
certificate check). A name that resolves to a public address when it is checked and to
an internal one when it is used (DNS rebinding) is never connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import urllib.parse
from dataclasses import dataclass

import httpx

MAX_URL_LENGTH = 2000
MAX_NAME_LENGTH = 253
ALLOW_PRIVATE_SETTING = "TIDINGS_WEBHOOKS_ALLOW_PRIVATE"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# ``is_global`` answers for most ranges, but not alike on every Python version (3.11
# calls 192.0.0.0/24 and fec0::/10 global): these are refused whatever it says.
_NOT_PUBLIC = tuple(
    ipaddress.ip_network(network)
    for network in (
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.88.99.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
        # Reserved by IETF: IPv4-compatible (::/96), IPv4-translated (::ffff:0:0:0/96)
        # and the rest of ::/8 (IPv4-mapped addresses are judged by the IPv4 inside).
        "::/8",
        "64:ff9b:1::/48",
        "100::/64",
        "2001::/23",
        "2001:db8::/32",
        "3fff::/20",
        "fc00::/7",
        "fe80::/10",
        "fec0::/10",
        "ff00::/8",
    )
)
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


class Refused(Exception):
    """The URL's host is, or resolves to, an address inside the deployment's network."""

    def __init__(self, address: str) -> None:
        super().__init__(address)
        self.address = address


class Unresolved(Exception):
    """The URL's host does not resolve."""


@dataclass(frozen=True)
class Target:
    """Where one attempt connects: ``url`` names the checked address itself; ``host`` is
    the Host header and ``server_name`` the name TLS expects, both from the endpoint's URL."""

    url: str
    host: str
    server_name: str


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
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL as exc:
        return f"The URL cannot be read: {exc}."
    host = _host_of(parsed)
    if not host:
        return "The URL has no host."
    if _literal(host) is None and not _resolvable_name(host):
        return (
            "The URL's host is not a valid DNS name: each part between dots is 1 to 63 "
            "characters, 253 in all."
        )
    return None


def _resolvable_name(host: str) -> bool:
    """Whether the resolver can be asked for ``host``: it encodes names as IDNA, which
    refuses an empty label and a label over 63 characters; DNS carries 253 in all."""
    try:
        host.encode("idna")
    except UnicodeError:
        return False
    return len(host.removesuffix(".")) <= MAX_NAME_LENGTH


def _literal(host: str) -> IPAddress | None:
    """The address ``host`` spells, if it is one."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def is_internal(ip: IPAddress) -> bool:
    """Whether ``ip`` is not on the public internet. An IPv6 address that carries an IPv4
    one (IPv4-mapped, NAT64, 6to4, Teredo) is judged by the IPv4 addresses it carries."""
    embedded = _embedded(ip)
    if embedded:
        return any(is_internal(inner) for inner in embedded)
    return (
        not ip.is_global
        or ip.is_multicast
        or ip.is_reserved
        or any(ip in net for net in _NOT_PUBLIC)
    )


def _embedded(ip: IPAddress) -> list[ipaddress.IPv4Address]:
    if not isinstance(ip, ipaddress.IPv6Address):
        return []
    if ip.ipv4_mapped is not None:
        return [ip.ipv4_mapped]
    if ip in _NAT64:
        return [ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)]
    if ip.sixtofour is not None:
        return [ip.sixtofour]
    if ip.teredo is not None:
        return list(ip.teredo)  # the Teredo server, and the client behind its NAT
    return []


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, as the system resolver answers.

    Raises:
        OSError: the name does not resolve.
    """
    found = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(sockaddr[0]) for *_rest, sockaddr in found))


async def addresses_of(url: str, *, allow_private: bool) -> list[IPAddress]:
    """The addresses ``url``'s host stands for, each checked.

    Raises:
        Refused: one of them is internal (and ``allow_private`` is off).
        Unresolved: the host does not resolve.
        httpx.InvalidURL: httpx cannot read the URL (one stored before it was checked).
    """
    parsed = httpx.URL(url)
    host = _host_of(parsed)
    literal = _literal(host)
    if literal is not None:
        found = [literal]
    else:
        if not allow_private and (host == "localhost" or host.endswith(".localhost")):
            raise Refused(host)
        try:
            answers = await resolve(host, parsed.port or _default_port(parsed.scheme))
        except (OSError, UnicodeError) as exc:
            # UnicodeError: the name is not one DNS can carry (an empty or long label).
            raise Unresolved(f"{host} does not resolve: {exc}") from None
        found = [ipaddress.ip_address(a.split("%", 1)[0]) for a in answers]
        if not found:
            raise Unresolved(f"{host} does not resolve")
    if not allow_private:
        for ip in found:
            if is_internal(ip):
                raise Refused(str(ip))
    return found


async def target_of(url: str, *, allow_private: bool) -> Target:
    """Where to send a message for ``url``: its first address, checked.

    Raises:
        Refused: the host is or resolves to an internal address.
        Unresolved: the host does not resolve.
        httpx.InvalidURL: httpx cannot read the URL.
    """
    ip = (await addresses_of(url, allow_private=allow_private))[0]
    parsed = httpx.URL(url)
    name = _host_of(parsed)
    # The Host header as httpx writes it from the URL: IDNA-encoded, the port if given.
    host = f"[{name}]" if ":" in name else name
    if parsed.port is not None:
        host = f"{host}:{parsed.port}"
    return Target(url=str(parsed.copy_with(host=str(ip))), host=host, server_name=name)


def _host_of(url: httpx.URL) -> str:
    """The URL's host in ASCII (a Unicode name IDNA-encoded), without an IPv6 zone."""
    return url.raw_host.decode("ascii").split("%", 1)[0]


def shown(url: str) -> str:
    """``url`` as logs may show it: scheme, host and port, never the path or query, which
    may hold a token (``https://hooks.example/…``)."""
    parts = urllib.parse.urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{'' if port is None else f':{port}'}/…"


def _default_port(scheme: str) -> int:
    return 443 if scheme == "https" else 80
