"""Addresses as they travel and as the suppression list compares them."""

from __future__ import annotations

import pytest

from tidings.email import addresses, repository


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("bob@example.com", "bob@example.com"),
        ("bob@exämple.com", "bob@xn--exmple-cua.com"),
        ("bøb@example.com", "bøb@example.com"),
        ("Zoë@Bücher.Example", "Zoë@xn--bcher-kva.example"),
    ],
)
def test_the_domain_travels_in_ascii(given: str, sent: str) -> None:
    assert addresses.for_sending(given) == sent
    assert addresses.needs_smtputf8(sent) == (not sent.isascii())


def test_a_bounce_for_the_ascii_form_matches_the_profiles_address() -> None:
    assert repository.normalise(" Bob@ExÄmple.COM ") == "bob@xn--exmple-cua.com"
    assert repository.normalise("bob@XN--EXMPLE-CUA.com") == "bob@xn--exmple-cua.com"


def test_a_domain_idna_cannot_encode_is_refused() -> None:
    with pytest.raises(ValueError, match="not a valid internationalised name"):
        addresses.for_sending("bob@ex\u202eample.com")
