"""The schema: every table Tidings keeps, one definition for SQLite and PostgreSQL.

Importers use the package, not its modules: ``from tidings.kit import tables`` then
``tables.deliveries``. The names it offers:

- the metadata every table is registered in (``metadata``, with the naming convention of
  its constraints and indexes) and the column types the tables share (``UTCDateTime``,
  ``JSON``, ``Id``), from ``schema``;
- the tables, each defined in the module of the package that owns it: ``events``
  (``events``, ``idempotency_keys``), ``users`` (``users``, ``topics``,
  ``subscriptions``, ``erasures``), ``auth`` (``api_keys``), ``preferences``
  (``preference_sets``), ``planning`` (``dedup_marks``, ``throttle_hits``), ``channels``
  (``channel_addresses``), ``inbox`` (``inbox_items``, ``broadcasts``,
  ``broadcast_states``), ``email`` (``email_suppressions``, ``mailbox``), ``delivery``
  (``deliveries``, ``delivery_transitions``, ``digest_entries``, ``digests``, and
  ``every_delivery()``, the deliveries with the in-app ones that are only an inbox
  item), ``webhooks`` (``webhook_endpoints``, ``webhook_messages``,
  ``webhook_attempts``), and ``queue`` (``jobs``, ``dead_letters``).

Importing the package registers every table in ``metadata``, which the migrations compare
the database with.
"""

from __future__ import annotations

from tidings.kit.tables.auth import api_keys
from tidings.kit.tables.channels import channel_addresses
from tidings.kit.tables.delivery import (
    deliveries,
    delivery_transitions,
    digest_entries,
    digests,
    every_delivery,
)
from tidings.kit.tables.email import email_suppressions, mailbox
from tidings.kit.tables.events import events, idempotency_keys
from tidings.kit.tables.inbox import broadcast_states, broadcasts, inbox_items
from tidings.kit.tables.planning import dedup_marks, throttle_hits
from tidings.kit.tables.preferences import preference_sets
from tidings.kit.tables.queue import dead_letters, jobs
from tidings.kit.tables.schema import JSON, Id, UTCDateTime, metadata
from tidings.kit.tables.users import erasures, subscriptions, topics, users
from tidings.kit.tables.webhooks import webhook_attempts, webhook_endpoints, webhook_messages

__all__ = [
    "JSON",
    "Id",
    "UTCDateTime",
    "api_keys",
    "broadcast_states",
    "broadcasts",
    "channel_addresses",
    "dead_letters",
    "dedup_marks",
    "deliveries",
    "delivery_transitions",
    "digest_entries",
    "digests",
    "email_suppressions",
    "erasures",
    "events",
    "every_delivery",
    "idempotency_keys",
    "inbox_items",
    "jobs",
    "mailbox",
    "metadata",
    "preference_sets",
    "subscriptions",
    "throttle_hits",
    "topics",
    "users",
    "webhook_attempts",
    "webhook_endpoints",
    "webhook_messages",
]
