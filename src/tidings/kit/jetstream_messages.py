"""What an outbox row becomes on JetStream: one message per partition's share of it.

A row's kind names its stage; its payload goes to the partition of its recipient
(``payload["user"]``), or is cut into one share per partition by the kind's splitter.
Each share is a message on ``<prefix>.<stage>.<lane>.<partition>`` whose id names the
row, so JetStream drops a second publish of the same row. Messages are measured, with
their headers, against the server's payload limit before any is sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import nats
import orjson

from tidings.kit.jetstream_streams import Topology
from tidings.kit.queue import Splitter, partition_of


class UnroutableError(Exception):
    """An outbox row no stream takes: a kind no stage takes, or a payload that cannot
    be split into partitions."""


def by_user(payload: Mapping[str, Any], partitions: int, *, fallback: str) -> int:
    """The partition of a job that concerns one person (``payload["user"]``)."""
    user = payload.get("user")
    return partition_of(user if isinstance(user, str) else fallback, partitions)


def outgoing(
    row: Any, topology: Topology, splitters: Mapping[str, Splitter], max_payload: int
) -> list[tuple[str, bytes, dict[str, str]]]:
    """The (subject, body, headers) of each partition's share of ``row``.

    Raises:
        UnroutableError: no stage takes the row's kind, or its splitter failed.
        nats.errors.MaxPayloadError: a message is larger than the server takes (the
            client would refuse it only after taking a slot it never gives back,
            and the server drops the connection of one that slips through).
    """
    found = []
    for subject, message_id, body in messages(row, topology, splitters):
        headers = {**(row.headers or {}), "Nats-Msg-Id": message_id}
        size = len(body) + _header_size(headers)
        if size > max_payload:
            raise nats.errors.MaxPayloadError(
                f"{size} bytes with headers, the server takes at most {max_payload}"
            )
        found.append((subject, body, headers))
    return found


def messages(
    row: Any, topology: Topology, splitters: Mapping[str, Splitter]
) -> list[tuple[str, str, bytes]]:
    """The (subject, message id, body) of each partition's share of an outbox row.

    Raises:
        UnroutableError: no stage takes the row's kind, or its splitter failed.
    """
    try:
        return _shares(row, topology, splitters)
    except Exception as exc:
        raise UnroutableError(f"cannot be routed to a stream: {exc!r}") from exc


def _shares(
    row: Any, topology: Topology, splitters: Mapping[str, Splitter]
) -> list[tuple[str, str, bytes]]:
    stage = topology.stage_of(row.kind)
    partitions = topology.partitions
    split = splitters.get(row.kind)
    if split is not None:
        shares = split(row.payload, partitions)
    else:
        shares = {by_user(row.payload, partitions, fallback=row.id): row.payload}
    # The id names the row (its job id and the instant it was written), so a relay
    # that publishes the same row twice is deduplicated, while a later job that
    # reuses the id, once this one is gone, is not.
    written = int(row.created_at.timestamp() * 1_000_000)
    return [
        (
            topology.subject(stage, row.lane, partition),
            f"{row.id}@{written}#{partition}",
            orjson.dumps({"id": row.id, "kind": row.kind, "payload": payload}),
        )
        for partition, payload in sorted(shares.items())
    ]


def _header_size(headers: Mapping[str, str]) -> int:
    """The bytes ``headers`` take on the wire (``NATS/1.0``, a line each, a blank line),
    which count towards the server's payload limit."""
    return len(b"NATS/1.0\r\n\r\n") + sum(
        len(key.encode()) + len(value.encode()) + 4 for key, value in headers.items()
    )
