"""All SQL for the email channel's own state: the suppression list, and the development
mailbox that catches what would be sent."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from tidings.email import addresses
from tidings.kit.db import Database, among
from tidings.kit.tables import email_suppressions, mailbox


def normalise(address: str) -> str:
    """Addresses compare case-insensitively (in practice, whatever RFC 5321 allows), an
    internationalised domain in its ASCII form."""
    return addresses.normalise(address)


async def suppress(
    db: Database,
    conn: AsyncConnection,
    address: str,
    *,
    reason: str,
    detail: str | None,
    provider: str | None,
    now: dt.datetime,
) -> None:
    await conn.execute(
        db.insert_ignore(email_suppressions).values(
            address=normalise(address),
            reason=reason,
            detail=detail,
            provider=provider,
            created_at=now,
        )
    )


async def suppressed(conn: AsyncConnection, addresses: Iterable[str]) -> dict[str, str]:
    """address → reason, for those of ``addresses`` on the suppression list."""
    wanted = list({normalise(a) for a in addresses})
    found: dict[str, str] = {}
    for start in range(0, len(wanted), 1000):
        rows = await conn.execute(
            sa.select(email_suppressions.c.address, email_suppressions.c.reason).where(
                among(conn, email_suppressions.c.address, wanted[start : start + 1000])
            )
        )
        found.update({r.address: r.reason for r in rows})
    return found


async def unsuppress(conn: AsyncConnection, address: str) -> bool:
    result = await conn.execute(
        email_suppressions.delete().where(email_suppressions.c.address == normalise(address))
    )
    return result.rowcount > 0


async def catch(db: Database, conn: AsyncConnection, row: Mapping[str, Any]) -> None:
    """Keep one message in the development mailbox; keeping it again changes nothing."""
    await conn.execute(db.insert_ignore(mailbox).values(**row))


async def caught(conn: AsyncConnection, limit: int, recipient: str | None) -> list[Any]:
    """The newest ``limit`` messages in the mailbox, only those to ``recipient`` if given."""
    c = mailbox.c
    query = sa.select(mailbox)
    if recipient is not None:
        query = query.where(sa.func.lower(c.recipient) == recipient.lower())
    query = query.order_by(c.created_at.desc(), c.id.desc()).limit(limit)
    return list((await conn.execute(query)).mappings().all())


async def clear_mailbox(conn: AsyncConnection) -> int:
    """Empty the mailbox; how many messages it held."""
    result = await conn.execute(sa.delete(mailbox))
    return int(result.rowcount or 0)
