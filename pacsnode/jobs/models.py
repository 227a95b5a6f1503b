"""The queue's tables (analysis jobs, result deliveries) and the snapshots callers get.

Rows stay inside the queue; callers get frozen copies, never live ORM objects.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from datetime import datetime
from pathlib import Path
from typing import TypeVar

from sqlalchemy import CheckConstraint, Enum, ForeignKey, Index, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from pacsnode.db import Base

_S = TypeVar("_S")

__all__ = [
    "DELETED_PATH",
    "Delivery",
    "DeliveryRecord",
    "DeliveryStatus",
    "Job",
    "JobRecord",
    "JobStatus",
]

_UID = String(64)  # The UI value representation's maximum length.

DELETED_PATH = ""
"""What a path column holds once retention or a purge deleted the file; snapshots show
None. (An empty string, not NULL: the columns are NOT NULL in existing databases.)"""


class JobStatus(enum.Enum):
    """Where an analysis job stands."""

    QUEUED = "queued"
    """Waiting for a worker."""
    RUNNING = "running"
    """Claimed; the worker holds a lease that it must keep renewing."""
    SUCCEEDED = "succeeded"
    """Analysed; its results are in the deliveries."""
    FAILED = "failed"
    """An attempt failed; waiting until ``not_before`` for the next."""
    DEAD = "dead"
    """Out of attempts, or failed for good: the dead letters, for an administrator."""
    CANCELLED = "cancelled"
    """Withdrawn by an administrator."""
    IGNORED = "ignored"
    """Stored, but the node's filter does not select it for analysis; ``retry`` analyses it."""


class DeliveryStatus(enum.Enum):
    """Where the sending of one result object to one destination stands."""

    PENDING = "pending"
    """Not sent yet (possibly being sent under a lease)."""
    SENT = "sent"
    """Accepted by the destination."""
    FAILED = "failed"
    """A send failed; waiting until ``not_before`` for the next."""
    DEAD = "dead"
    """Out of attempts, or refused for good."""


def _status_type(kind: type[enum.Enum]) -> Enum:
    # Stored as the lower-case values in a VARCHAR with a CHECK, the same on every
    # backend, rather than as a PostgreSQL ENUM that needs ALTER TYPE to grow.
    return Enum(
        kind,
        native_enum=False,
        create_constraint=True,
        length=16,
        name=f"{kind.__name__.lower()}_value",
        values_callable=lambda members: [member.value for member in members],
        validate_strings=True,
    )


class JobRecord(Base):
    """One received instance to analyse; one row per SOP Instance UID."""

    __tablename__ = "jobs"
    __table_args__ = (
        # The claim query: due work by status and time, the highest priority first.
        Index("ix_jobs_status_not_before", "status", "not_before"),
        Index("ix_jobs_status_priority", "status", "priority"),
        CheckConstraint("attempts >= 0", name="ck_jobs_attempts"),
        CheckConstraint("max_attempts >= 1", name="ck_jobs_max_attempts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(_UID, unique=True)
    study_instance_uid: Mapped[str] = mapped_column(_UID, index=True)
    series_instance_uid: Mapped[str] = mapped_column(_UID)
    sop_class_uid: Mapped[str] = mapped_column(_UID)
    calling_ae: Mapped[str] = mapped_column(String(16))
    spool_path: Mapped[str] = mapped_column(String(4096))
    status: Mapped[JobStatus] = mapped_column(_status_type(JobStatus))
    # Claimed highest first, then oldest; set at enqueue by the [[priority]] rules.
    priority: Mapped[int] = mapped_column(server_default="0")
    attempts: Mapped[int]
    max_attempts: Mapped[int]
    # Attempts cut short because their process died (see JobQueue.reclaim_orphans): not
    # counted as attempts, but bounded on their own, so a film that crashes the node
    # cannot do it forever.
    interruptions: Mapped[int] = mapped_column(server_default="0")
    not_before: Mapped[datetime]
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[datetime | None]
    # The process holding the lease (pacsnode.jobs.owner): a node that starts reclaims
    # at once the leases of dead processes on its own host.
    lease_host: Mapped[str | None] = mapped_column(String(255))
    lease_pid: Mapped[int | None]
    lease_process_start: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class DeliveryRecord(Base):
    """One result object (SEG, SR, ...) to send to one destination."""

    __tablename__ = "deliveries"
    __table_args__ = (
        # A result object goes to a destination once, however often it is added.
        UniqueConstraint("destination", "sop_instance_uid", name="uq_deliveries_object"),
        Index("ix_deliveries_status_not_before", "status", "not_before"),
        Index("ix_deliveries_status_priority", "status", "priority"),
        CheckConstraint("attempts >= 0", name="ck_deliveries_attempts"),
        CheckConstraint("max_attempts >= 1", name="ck_deliveries_max_attempts"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    sop_instance_uid: Mapped[str] = mapped_column(_UID)
    path: Mapped[str] = mapped_column(String(4096))
    status: Mapped[DeliveryStatus] = mapped_column(_status_type(DeliveryStatus))
    # The job's priority when the result was queued: STAT results are sent first too.
    priority: Mapped[int] = mapped_column(server_default="0")
    attempts: Mapped[int]
    max_attempts: Mapped[int]
    not_before: Mapped[datetime]
    # Status stays PENDING or FAILED while a sender holds the lease.
    lease_owner: Mapped[str | None] = mapped_column(String(255))
    lease_expires: Mapped[datetime | None]
    lease_host: Mapped[str | None] = mapped_column(String(255))
    lease_pid: Mapped[int | None]
    lease_process_start: Mapped[str | None] = mapped_column(String(128))
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


@dataclass(frozen=True, slots=True)
class Job:
    """A job as it was when read; times are UTC-aware.

    Attributes
    ----------
    attempts
        Attempts started so far; a claim counts one, a release takes it back.
    not_before
        Earliest time the job may be claimed (the retry backoff).
    spool_path
        The received film, or None once retention deleted it.
    lease_owner, lease_expires
        The worker holding a RUNNING job and until when, else None.
    last_error
        The most recent failure's message, kept after a later success.
    priority
        Higher is claimed first; 0 unless a ``[[priority]]`` rule matched the film.
    lease_host, lease_pid, lease_process_start
        The process holding the lease (see :class:`pacsnode.jobs.owner.ProcessOwner`).
    interruptions
        Attempts whose process died under them on this host (a crash, kill -9): given
        back rather than counted in ``attempts``, up to ``MAX_INTERRUPTIONS``.
    """

    id: int
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    calling_ae: str
    spool_path: Path | None
    status: JobStatus
    attempts: int
    max_attempts: int
    not_before: datetime
    lease_owner: str | None
    lease_expires: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    priority: int = 0
    lease_host: str | None = None
    lease_pid: int | None = None
    lease_process_start: str | None = None
    interruptions: int = 0

    @classmethod
    def of(cls, record: JobRecord) -> Job:
        """Snapshot a row."""
        return _snapshot(cls, record, path_fields=("spool_path",))


@dataclass(frozen=True, slots=True)
class Delivery:
    """A result send as it was when read; times are UTC-aware.

    Attributes
    ----------
    destination
        The name of a configured destination.
    kind
        The result object's kind, e.g. ``"SEG"`` or ``"SR"``.
    sop_instance_uid
        The result object's SOP Instance UID.
    path
        The result object's file, or None once retention deleted it.
    lease_owner, lease_expires
        The sender holding it and until when, else None.
    priority
        Its job's priority when it was queued; higher is sent first.
    lease_host, lease_pid, lease_process_start
        The process holding the lease.
    """

    id: int
    job_id: int
    destination: str
    kind: str
    sop_instance_uid: str
    path: Path | None
    status: DeliveryStatus
    attempts: int
    max_attempts: int
    not_before: datetime
    lease_owner: str | None
    lease_expires: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime
    priority: int = 0
    lease_host: str | None = None
    lease_pid: int | None = None
    lease_process_start: str | None = None

    @classmethod
    def of(cls, record: DeliveryRecord) -> Delivery:
        """Snapshot a row."""
        return _snapshot(cls, record, path_fields=("path",))


def _snapshot(cls: type[_S], record: Base, *, path_fields: tuple[str, ...]) -> _S:
    """``cls`` filled from the row's columns of the same names (paths as ``Path``, a
    deleted file's as None)."""
    values = {f.name: getattr(record, f.name) for f in fields(cls)}  # type: ignore[arg-type]
    for name in path_fields:
        values[name] = None if values[name] == DELETED_PATH else Path(values[name])
    return cls(**values)
