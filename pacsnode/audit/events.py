"""The audit log's vocabulary: what happened, and how it ended.

A closed set, so a report can count events by kind and a typo cannot invent a new one.
"""

from __future__ import annotations

import enum

__all__ = ["AuditEvent", "Outcome"]


class AuditEvent(enum.Enum):
    """Something the node did or refused, worth answering for later."""

    ASSOCIATION_ACCEPTED = "association_accepted"
    ASSOCIATION_REJECTED = "association_rejected"
    ASSOCIATION_ABORTED = "association_aborted"
    """Aborted by the node mid-association (a PDU over the limit); the reason says why."""
    INSTANCE_RECEIVED = "instance_received"
    """Stored durably and queued for analysis."""
    INSTANCE_REFUSED = "instance_refused"
    """Answered with a failure status; nothing kept."""
    INSTANCE_IGNORED = "instance_ignored"
    """Stored, but the filter does not select it for analysis."""
    JOB_CLAIMED = "job_claimed"
    JOB_SUCCEEDED = "job_succeeded"
    JOB_FAILED = "job_failed"
    """An attempt failed; another will follow."""
    JOB_DEAD = "job_dead"
    """Given up; waiting for an administrator."""
    JOB_RELEASED = "job_released"
    RESULT_SENT = "result_sent"
    RESULT_FAILED = "result_failed"
    FILM_DELETED = "film_deleted"
    """A received film removed from the spool: its retention passed, or a purge."""
    RESULT_DELETED = "result_deleted"
    """A result object's file removed: its retention passed, or a purge."""
    ADMIN_ACTION = "admin_action"
    """An administrator's command (retry, cancel, purge...); the details say which."""
    NODE_STARTED = "node_started"
    NODE_STOPPED = "node_stopped"


class Outcome(enum.Enum):
    """How the audited action ended."""

    SUCCESS = "success"
    FAILURE = "failure"
    WARNING = "warning"
    """Done, but with something an administrator should look at."""
