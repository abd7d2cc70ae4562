"""key scopes and idempotency namespaces: an idempotency key belongs to the API key that
used it; existing keys keep what they could do; events may carry profile fields only for
their own deliveries

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-28 09:00:00.000000
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

LEGACY_NAMESPACE = "legacy"
"""The namespace of a stored idempotency key whose event no longer says which API key
published it (removed by retention, or published before keys were recorded)."""

GRANDFATHERED = (
    "users:read",
    "users:write",
    "users:erase",
    "topics:read",
    "topics:write",
    "preferences:read",
    "preferences:write",
)
"""What every producer key could do before keys had capability scopes: existing keys keep
it so a deployment works the same after the upgrade; new keys get only what they are
given."""

SCOPED_MARKER = "!scoped"
"""Left by the downgrade on every key that already had explicit scopes, so that the next
upgrade does not widen it: the schema before 0008 reads it as a type pattern that no
type matches. Keys created under that schema carry no marker and are grandfathered, as
they could do everything there."""


def upgrade() -> None:
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.add_column(sa.Column("recipient_profiles", JSON, nullable=True))
    _namespace_idempotency_keys()
    _grandfather_keys()


def _namespace_idempotency_keys() -> None:
    op.add_column("idempotency_keys", sa.Column("namespace", sa.String(length=64), nullable=True))
    op.execute(
        "UPDATE idempotency_keys SET namespace = (SELECT events.api_key_id FROM events "
        "WHERE events.id = idempotency_keys.event_id)"
    )
    op.execute(
        sa.text(
            "UPDATE idempotency_keys SET namespace = :legacy WHERE namespace IS NULL"
        ).bindparams(legacy=LEGACY_NAMESPACE)
    )
    if op.get_bind().dialect.name == "sqlite":
        _copy_idempotency_keys(("tenant", "namespace", "key"), with_namespace=True)
        return
    op.alter_column("idempotency_keys", "namespace", existing_type=sa.String(64), nullable=False)
    op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
    op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["tenant", "namespace", "key"])


def _copy_idempotency_keys(primary_key: tuple[str, ...], *, with_namespace: bool) -> None:
    """SQLite cannot alter a primary key: copy the rows into a table built with the new one."""
    columns = ["tenant", *(["namespace"] if with_namespace else []), "key"]
    columns += ["body_hash", "event_id", "created_at"]
    op.create_table(
        "idempotency_keys_copy",
        sa.Column("tenant", sa.String(length=200), nullable=False),
        *([sa.Column("namespace", sa.String(length=64), nullable=False)] if with_namespace else []),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("body_hash", sa.String(length=64), nullable=False),
        sa.Column("event_id", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint(*primary_key, name="pk_idempotency_keys"),
    )
    listed = ", ".join(columns)
    op.execute(
        f"INSERT INTO idempotency_keys_copy ({listed}) SELECT {listed} FROM idempotency_keys"
    )
    op.drop_table("idempotency_keys")
    op.rename_table("idempotency_keys_copy", "idempotency_keys")


def _grandfather_keys() -> None:
    api_keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("scopes", JSON))
    bind = op.get_bind()
    for key_id, scopes in bind.execute(sa.select(api_keys.c.id, api_keys.c.scopes)).all():
        held = list(scopes or [])
        if SCOPED_MARKER in held:
            held.remove(SCOPED_MARKER)
            bind.execute(api_keys.update().where(api_keys.c.id == key_id).values(scopes=held))
            continue
        if "admin" in held:
            continue
        added = held + [scope for scope in GRANDFATHERED if scope not in held]
        if added != held:
            bind.execute(api_keys.update().where(api_keys.c.id == key_id).values(scopes=added))


def downgrade() -> None:
    # Two API keys may have used the same idempotency key; only one row per (tenant, key)
    # can stay under the old primary key: the earliest claim.
    op.execute(
        "DELETE FROM idempotency_keys WHERE EXISTS (SELECT 1 FROM idempotency_keys AS o "
        "WHERE o.tenant = idempotency_keys.tenant AND o.key = idempotency_keys.key "
        "AND (o.created_at < idempotency_keys.created_at OR (o.created_at = "
        "idempotency_keys.created_at AND o.namespace < idempotency_keys.namespace)))"
    )
    if op.get_bind().dialect.name == "sqlite":
        _copy_idempotency_keys(("tenant", "key"), with_namespace=False)
    else:
        op.drop_constraint("pk_idempotency_keys", "idempotency_keys", type_="primary")
        op.create_primary_key("pk_idempotency_keys", "idempotency_keys", ["tenant", "key"])
        op.drop_column("idempotency_keys", "namespace")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_column("recipient_profiles")
    _mark_scoped_keys()


def _mark_scoped_keys() -> None:
    """Scopes stay (the old schema's code ignores what it does not know); every key gets
    the marker that keeps the next upgrade from granting it what it was never given."""
    api_keys = sa.table("api_keys", sa.column("id", sa.String), sa.column("scopes", JSON))
    bind = op.get_bind()
    for key_id, scopes in bind.execute(sa.select(api_keys.c.id, api_keys.c.scopes)).all():
        held = list(scopes or [])
        if "admin" not in held and SCOPED_MARKER not in held:
            marked = [*held, SCOPED_MARKER]
            bind.execute(api_keys.update().where(api_keys.c.id == key_id).values(scopes=marked))
