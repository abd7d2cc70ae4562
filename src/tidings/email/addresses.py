"""Email addresses as they travel: an internationalised domain in its ASCII form (IDNA),
a local part outside ASCII kept as it is, for a server that speaks SMTPUTF8 (RFC 6531).

``bob@exämple.com`` is sent as ``bob@xn--exmple-cua.com``, which every server takes.
``bøb@example.com`` has no ASCII form: it goes only through a server that offers
SMTPUTF8, and otherwise that delivery fails and says why.
"""

from __future__ import annotations

import idna


def ascii_domain(domain: str) -> str:
    """``domain`` in ASCII: as it is when it already is, IDNA-encoded (UTS 46) otherwise.

    Raises:
        ValueError: a name IDNA cannot encode.
    """
    if domain.isascii():
        return domain
    try:
        return idna.encode(domain, uts46=True).decode("ascii")
    except idna.IDNAError as exc:
        raise ValueError(
            f"the domain {domain!r} is not a valid internationalised name: {exc}"
        ) from None


def for_sending(address: str) -> str:
    """``address`` with its domain in ASCII, the form envelopes and headers carry.

    Raises:
        ValueError: the domain cannot be encoded.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return address
    return f"{local}@{ascii_domain(domain)}"


def needs_smtputf8(address: str) -> bool:
    """Whether sending to (or from) ``address``, in its sending form, needs SMTPUTF8."""
    return not address.isascii()


def normalise(address: str) -> str:
    """The form addresses are compared in (the suppression list): trimmed, lower case,
    the domain in ASCII, so a bounce for ``bob@xn--exmple-cua.com`` matches a profile's
    ``bob@exämple.com``."""
    address = address.strip().lower()
    try:
        return for_sending(address)
    except ValueError:
        return address
