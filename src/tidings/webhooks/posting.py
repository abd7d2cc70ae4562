"""One attempt at a webhook message: a POST to the address the endpoint's host was
checked to have, all of it within a deadline.

An attempt, from resolving the host to the last byte of the answer read, ends after
``webhooks_timeout_seconds`` whatever the receiver does; of the answer, only the status
and the size are kept (``RESPONSE_READ_LIMIT`` bytes read at most).
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from tidings import __version__
from tidings.webhooks import addresses

RESPONSE_READ_LIMIT = 65_536
"""How much of a receiver's answer is read, only to count its size: the log keeps the
status and the size, never the content, which the producer must not see through us."""


@dataclass(frozen=True)
class Attempt:
    """How one POST went."""

    status: int | None
    error: str | None
    duration_ms: int
    response: str | None
    """The size of the receiver's answer (``"6 bytes"``), never its content; ``"at
    least 6 bytes"`` when the deadline came while it was still arriving."""

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


class Clients:
    """The HTTP clients of one batch, one per host name.

    Connections are pooled by the address they go to; a client per name keeps a
    connection whose certificate was checked for one name from carrying a request for
    another name that resolves to the same address.
    """

    def __init__(
        self,
        timeout_seconds: float,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        self._timeout = timeout_seconds
        self._transport = transport
        self._verify = verify
        self._clients: dict[str, httpx.AsyncClient] = {}

    @property
    def timeout_seconds(self) -> float:
        """How long one attempt may take in all (httpx's own timeout is per read)."""
        return self._timeout

    def of(self, name: str) -> httpx.AsyncClient:
        """The client for requests to host ``name``."""
        found = self._clients.get(name)
        if found is None:
            found = self._clients[name] = httpx.AsyncClient(
                timeout=self._timeout,
                follow_redirects=False,
                # No proxy from the environment: the connection goes to the checked address.
                trust_env=False,
                verify=self._verify,
                transport=self._transport,
                headers={"user-agent": f"Tidings-Webhooks/{__version__}"},
            )
        return found

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        clients, self._clients = list(self._clients.values()), {}
        for client in clients:
            await client.aclose()


async def post(
    clients: Clients,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    *,
    allow_private: bool,
) -> Attempt:
    """POST ``content`` to ``url``, at the address its host was checked to have, all of
    it within the clients' ``timeout_seconds``.

    The check runs at every attempt, not only when the endpoint was registered: the
    name may resolve elsewhere now. The connection then goes to the address checked,
    never to a second answer of the resolver, with the URL's host name for the Host
    header and for TLS (SNI and the certificate's name).

    The deadline covers the whole attempt: resolving, connecting, sending, the status
    and headers, and reading the answer to count its size. httpx's own timeout is per
    read, so a receiver sending a byte now and then would hold the attempt for as long
    as it likes without it. When the deadline comes after the status arrived, the
    status stands (a 2xx is a success: the receiver has taken the message) and the
    size is what had arrived; before it, the attempt failed.
    """
    started = time.perf_counter()

    def took() -> int:
        return int((time.perf_counter() - started) * 1000)

    answer = _Answer()
    timeout_seconds = clients.timeout_seconds
    deadline = asyncio.timeout(timeout_seconds)
    try:
        async with deadline:
            return await _attempt(clients, url, content, headers, allow_private, answer, took)
    except TimeoutError:
        if not deadline.expired():
            raise
    if answer.status is None:
        return Attempt(None, f"timeout: no answer within {timeout_seconds:g} s", took(), None)
    error = None if 200 <= answer.status < 300 else f"HTTP {answer.status}"
    return Attempt(answer.status, error, took(), f"at least {answer.size} bytes")


@dataclass
class _Answer:
    """What has arrived of the receiver's answer so far."""

    status: int | None = None
    size: int = 0


async def _attempt(
    clients: Clients,
    url: str,
    content: bytes,
    headers: Mapping[str, str],
    allow_private: bool,
    answer: _Answer,
    took: Callable[[], int],
) -> Attempt:
    try:
        target = await addresses.target_of(url, allow_private=allow_private)
    except addresses.Refused as exc:
        return Attempt(None, f"refused: {exc.address} is an internal address", took(), None)
    except addresses.Unresolved as exc:
        return Attempt(None, str(exc)[:1000], took(), None)
    except httpx.InvalidURL as exc:
        # Stored before URLs were read with httpx when registered: fix it with PATCH.
        return Attempt(None, f"invalid URL: {exc}"[:1000], took(), None)
    extensions = {"sni_hostname": target.server_name} if target.url.startswith("https") else {}
    try:
        async with clients.of(target.server_name).stream(
            "POST",
            target.url,
            content=content,
            headers={**headers, "host": target.host},
            extensions=extensions,
        ) as response:
            answer.status = response.status_code
            size = await _answer_size(response, answer)
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:1000], took(), None)
    error = None if response.is_success else f"HTTP {response.status_code}"
    return Attempt(response.status_code, error, took(), size)


async def _answer_size(response: httpx.Response, answer: _Answer) -> str:
    """How big the answer is, reading no more of it than ``RESPONSE_READ_LIMIT``; what
    has arrived is counted in ``answer`` as it comes."""
    async for chunk in response.aiter_raw():
        answer.size += len(chunk)
        if answer.size > RESPONSE_READ_LIMIT:
            return f"more than {RESPONSE_READ_LIMIT} bytes"
    return f"{answer.size} bytes"
