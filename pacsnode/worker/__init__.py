"""The worker: analyses queued films and sends their results, each on its own schedule."""

from pacsnode.worker.analyst import Analysis, Analyst, ResultFile
from pacsnode.worker.loops import DeliveryLoop, JobLoop, worker_name

__all__ = ["Analysis", "Analyst", "DeliveryLoop", "JobLoop", "ResultFile", "worker_name"]
