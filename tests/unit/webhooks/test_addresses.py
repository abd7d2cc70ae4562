"""Which addresses a webhook may be sent to: only the public internet, unless allowed."""

from __future__ import annotations

import ipaddress

import pytest

from tidings.webhooks import addresses

INTERNAL = [
    "127.0.0.1",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "169.254.169.254",  # link-local: cloud metadata
    "100.100.100.200",  # shared address space: a cloud's metadata service
    "100.64.0.1",
    "0.0.0.0",
    "192.0.0.8",  # IETF protocol assignments (global by Python 3.11's table)
    "192.0.0.9",
    "192.0.2.1",
    "198.18.0.1",
    "198.51.100.7",
    "203.0.113.7",
    "224.0.0.251",
    "239.255.255.250",
    "240.0.0.1",
    "255.255.255.255",
    "::",
    "::1",
    "::7f00:1",  # IPv4-compatible 127.0.0.1
    "::ffff:127.0.0.1",
    "::ffff:10.0.0.1",
    "::ffff:0:7f00:1",  # IPv4-translated 127.0.0.1 (::ffff:0:0:0/96, reserved)
    "::ffff:0:808:808",  # IPv4-translated, even of a public address
    "1::1",  # the rest of ::/8, reserved
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
    "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1
    "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo, client 192.0.2.45
    "2001:0:7f00:1::1",  # Teredo through a loopback server
    "2001:db8::1",
    "fc00::1",
    "fd12:3456::1",
    "fe80::1",
    "fec0::1",  # site-local (global by Python 3.11's table)
    "ff02::1",
    "ff0e::1",
    "100::1",
]
PUBLIC = [
    "8.8.8.8",
    "93.184.216.34",
    "2001:4860:4860::8888",
    "2606:4700:4700::1111",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",  # NAT64 of a public address (an IPv6-only network's DNS64)
    "2002:808:808::1",  # 6to4 of a public address
]


@pytest.mark.parametrize("address", INTERNAL)
def test_special_purpose_addresses_are_internal(address: str) -> None:
    assert addresses.is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_not(address: str) -> None:
    assert not addresses.is_internal(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", INTERNAL)
async def test_a_url_at_an_internal_address_is_refused_unless_allowed(address: str) -> None:
    shown = f"[{address}]" if ":" in address else address
    url = f"https://{shown}:8443/hook"
    with pytest.raises(addresses.Refused) as refused:
        await addresses.target_of(url, allow_private=False)
    assert ipaddress.ip_address(refused.value.address) == ipaddress.ip_address(address)
    allowed = await addresses.target_of(url, allow_private=True)
    assert allowed.url == f"https://{shown}:8443/hook".replace(address, str(refused.value.address))


async def test_a_name_is_resolved_once_and_the_connection_goes_to_the_address_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    answers = {"hooks.example": [["93.184.216.34", "2606:4700:4700::1111"]]}

    async def resolve(host: str, port: int) -> list[str]:
        return answers[host].pop(0)

    monkeypatch.setattr(addresses, "resolve", resolve)
    target = await addresses.target_of("https://hooks.example:8443/a?b=1", allow_private=False)
    assert target == addresses.Target(
        url="https://93.184.216.34:8443/a?b=1",
        host="hooks.example:8443",
        server_name="hooks.example",
    )
    assert answers["hooks.example"] == []


@pytest.mark.parametrize(
    "answer", [["127.0.0.1"], ["93.184.216.34", "10.0.0.7"], ["2606:4700:4700::1111", "::1"]]
)
async def test_a_name_with_any_internal_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, answer: list[str]
) -> None:
    async def resolve(host: str, port: int) -> list[str]:
        return answer

    monkeypatch.setattr(addresses, "resolve", resolve)
    with pytest.raises(addresses.Refused):
        await addresses.target_of("http://hooks.example/", allow_private=False)


async def test_an_international_name_is_resolved_and_sent_in_ascii(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        return ["2606:4700:4700::1111"]

    monkeypatch.setattr(addresses, "resolve", resolve)
    target = await addresses.target_of("http://bücher.example/hook", allow_private=False)
    assert asked == ["xn--bcher-kva.example"]
    assert target.url == "http://[2606:4700:4700::1111]/hook"
    assert target.host == "xn--bcher-kva.example"


@pytest.mark.parametrize(
    "url",
    [
        "http://0177.0.0.1/",
        "http://\u2460\u2461\u2466.0.0.1/",
        "http://[zz]/",
        "http://a..b/",
        "http://.a/",
        "http://" + "a" * 64 + ".example/",
        "http://" + ("a" * 60 + ".") * 5 + "example/",
    ],
)
def test_a_url_httpx_or_the_resolver_cannot_read_has_a_problem(url: str) -> None:
    assert addresses.problem_with(url)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example/a?b=1",
        "http://bücher.example/",
        "http://example.com./",
        "http://[::1]:8/",
    ],
)
def test_a_url_it_can_read_has_none(url: str) -> None:
    assert addresses.problem_with(url) is None


def test_a_url_is_shown_without_its_path_or_query() -> None:
    assert addresses.shown("https://hooks.example:8443/T0KEN?t=s3cret") == (
        "https://hooks.example:8443/…"
    )
    assert addresses.shown("http://[::1]/x") == "http://[::1]/…"
