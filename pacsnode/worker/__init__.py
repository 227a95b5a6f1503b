"""The worker: analyses queued films and sends their results, each on its own schedule."""

from pacsnode.worker.analyst import Analysis, Analyst, ResultFile, wants_capture
from pacsnode.worker.loops import DeliveryLoop, JobLoop, RetentionLoop, worker_name
from pacsnode.worker.retention import Retention, Swept

__all__ = [
    "Analysis",
    "Analyst",
    "DeliveryLoop",
    "JobLoop",
    "ResultFile",
    "Retention",
    "RetentionLoop",
    "Swept",
    "wants_capture",
    "worker_name",
]
