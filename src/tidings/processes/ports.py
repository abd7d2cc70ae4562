"""The ports a process listens on, taken before anything serves on them: a port that is
taken is a clear refusal, or a process that carries on without it, never a race."""

from __future__ import annotations

import errno
import socket

from tidings.kit.settings import Settings


class PortInUse(OSError):
    """The HTTP port is taken by another process."""


def listen(settings: Settings) -> socket.socket:
    """The HTTP port of ``settings``, listening already: taken here, before anything says
    "Listening", so that a busy port is a clear refusal and not a line after it.

    Raises:
        PortInUse: another process holds the port; the message names the settings.
        OSError: the host cannot be listened on (not an address of this machine, say).
    """
    try:
        listening = bind(settings.host, settings.port)
    except socket.gaierror as exc:
        raise OSError(exc.errno, f"cannot listen on {settings.host!r}: {exc.strerror}") from exc
    if listening is None:
        raise PortInUse(
            errno.EADDRINUSE,
            f"port {settings.port} on {settings.host} is already in use: set TIDINGS_PORT "
            "(or --port) to a free port, or stop the process that holds it",
        )
    return listening


def bind(host: str, port: int) -> socket.socket | None:
    """A port, bound here rather than by uvicorn so that two processes starting at once
    cannot both find it free: the loser learns at once (None) and carries on without.
    ``host`` may be an IPv4 or IPv6 address or a name.

    Raises:
        OSError: the host cannot be listened on for another reason than a taken port.
    """
    family, kind, proto, _name, address = socket.getaddrinfo(
        host or None,  # "" means every interface, as it does to bind()
        port,
        type=socket.SOCK_STREAM,
        flags=socket.AI_PASSIVE,
    )[0]
    sock = socket.socket(family, kind, proto)
    # Listening at once, the port is refused to every later bind (SO_REUSEADDR only
    # forgets closed connections).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            return None
        raise OSError(exc.errno, f"cannot listen on {host} port {port}: {exc.strerror}") from exc
    return sock
