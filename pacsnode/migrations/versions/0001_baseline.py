"""The schema of pacsnode 0.1.0, as its ``create_all`` made it: jobs, deliveries and the
append-only audit log with its triggers.

A database made before migrations existed has these tables and no ``alembic_version``:
:func:`pacsnode.migrations.upgrade` stamps it with this revision instead of running it.
Written out by hand, not from the models, so that it stays this schema when they change.

Revision ID: 0001
Revises:
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_UID = sa.String(64)
_TIME = sa.DateTime(timezone=True)

# The append-only guards, as pacsnode.audit.log wrote them in 0.1.0.
_SQLITE_TRIGGERS = tuple(
    f"CREATE TRIGGER audit_log_no_{op_name.lower()} BEFORE {op_name} ON audit_log "
    "BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END"
    for op_name in ("UPDATE", "DELETE")
)
_POSTGRESQL_TRIGGERS = (
    """CREATE OR REPLACE FUNCTION audit_log_refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION USING
        MESSAGE = 'audit_log is append-only: ' || TG_OP || ' refused',
        ERRCODE = 'insufficient_privilege';
END;
$$""",
    """CREATE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
FOR EACH ROW EXECUTE FUNCTION audit_log_refuse_change()""",
    """CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
FOR EACH STATEMENT EXECUTE FUNCTION audit_log_refuse_change()""",
)


def _leased_columns() -> list[sa.Column]:
    """The columns jobs and deliveries share, from ``status`` to ``updated_at``."""
    return [
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", _TIME, nullable=False),
        sa.Column("lease_owner", sa.String(255), nullable=True),
        sa.Column("lease_expires", _TIME, nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", _TIME, nullable=False),
        sa.Column("updated_at", _TIME, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("time", _TIME, nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("sop_instance_uid", _UID, nullable=True),
        sa.Column("study_instance_uid", _UID, nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("event", "time", "job_id", "sop_instance_uid", "study_instance_uid"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    dialect = op.get_bind().dialect.name
    triggers = {"sqlite": _SQLITE_TRIGGERS, "postgresql": _POSTGRESQL_TRIGGERS}
    for statement in triggers.get(dialect, ()):
        op.execute(statement)

    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("sop_instance_uid", _UID, nullable=False),
        sa.Column("study_instance_uid", _UID, nullable=False),
        sa.Column("series_instance_uid", _UID, nullable=False),
        sa.Column("sop_class_uid", _UID, nullable=False),
        sa.Column("calling_ae", sa.String(16), nullable=False),
        sa.Column("spool_path", sa.String(4096), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_leased_columns(),
        sa.PrimaryKeyConstraint("id"),
        sa.CheckConstraint("attempts >= 0", name="ck_jobs_attempts"),
        sa.CheckConstraint("max_attempts >= 1", name="ck_jobs_max_attempts"),
        sa.UniqueConstraint("sop_instance_uid"),
        sa.CheckConstraint(
            "status IN ('queued', 'running', 'succeeded', 'failed', 'dead', 'cancelled', "
            "'ignored')",
            name="jobstatus_value",
        ),
    )
    op.create_index("ix_jobs_status_not_before", "jobs", ["status", "not_before"])
    op.create_index("ix_jobs_study_instance_uid", "jobs", ["study_instance_uid"])

    op.create_table(
        "deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("destination", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("sop_instance_uid", _UID, nullable=False),
        sa.Column("path", sa.String(4096), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        *_leased_columns(),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("destination", "sop_instance_uid", name="uq_deliveries_object"),
        sa.CheckConstraint("attempts >= 0", name="ck_deliveries_attempts"),
        sa.CheckConstraint("max_attempts >= 1", name="ck_deliveries_max_attempts"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], ondelete="CASCADE"),
        sa.CheckConstraint(
            "status IN ('pending', 'sent', 'failed', 'dead')", name="deliverystatus_value"
        ),
    )
    op.create_index("ix_deliveries_job_id", "deliveries", ["job_id"])
    op.create_index("ix_deliveries_status_not_before", "deliveries", ["status", "not_before"])


def downgrade() -> None:
    op.drop_table("deliveries")
    op.drop_table("jobs")
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TABLE audit_log")
        op.execute("DROP FUNCTION audit_log_refuse_change()")
    else:
        op.drop_table("audit_log")
