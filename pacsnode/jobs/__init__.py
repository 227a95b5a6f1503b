"""The durable job queue between the C-STORE listener, the analysis worker and the sender.

:class:`JobQueue` hands out immutable :class:`Job` and :class:`Delivery` snapshots.
"""

from pacsnode.jobs.models import Delivery, DeliveryStatus, Job, JobStatus
from pacsnode.jobs.queue import (
    DEFAULT_DELIVERY_POLICY,
    DEFAULT_JOB_POLICY,
    ENDED,
    Enqueued,
    JobQueue,
    Purged,
    Reaped,
    Reclaimed,
    Remover,
)
from pacsnode.jobs.retry import RandomSource, RetryPolicy

__all__ = [
    "DEFAULT_DELIVERY_POLICY",
    "DEFAULT_JOB_POLICY",
    "ENDED",
    "Delivery",
    "DeliveryStatus",
    "Enqueued",
    "Job",
    "JobQueue",
    "JobStatus",
    "Purged",
    "RandomSource",
    "Reaped",
    "Reclaimed",
    "Remover",
    "RetryPolicy",
]
