"""Lease owners (host, pid, process start) so a node reclaims a dead process's work at
once, the count of a job's attempts cut short that way, and job priority for the
``[[priority]]`` rules.

Only columns and indexes are added: SQLite's batch mode alters the tables in place (no
copy), so the audit log and its triggers are untouched.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("jobs", "deliveries")


def upgrade() -> None:
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            # Existing rows get priority 0: the normal one.
            batch.add_column(
                sa.Column("priority", sa.Integer(), nullable=False, server_default="0")
            )
            batch.add_column(sa.Column("lease_host", sa.String(255), nullable=True))
            batch.add_column(sa.Column("lease_pid", sa.Integer(), nullable=True))
            batch.add_column(sa.Column("lease_process_start", sa.String(128), nullable=True))
            batch.create_index(f"ix_{table}_status_priority", ["status", "priority"])
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(
            sa.Column("interruptions", sa.Integer(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("interruptions")
    for table in _TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_index(f"ix_{table}_status_priority")
            for column in ("lease_process_start", "lease_pid", "lease_host", "priority"):
                batch.drop_column(column)
