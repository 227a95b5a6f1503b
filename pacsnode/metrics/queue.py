"""Queue metrics read from the database at each scrape: jobs and deliveries by status and
how long the oldest waiting film has waited.

Read, not counted: the database is shared by every receiver and worker, on every host,
so any node's endpoint reports the whole queue, whichever process changed it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from pacsnode.db import Clock, make_sessionmaker, read_session, utc_now
from pacsnode.jobs import DeliveryStatus, JobStatus
from pacsnode.jobs.models import DeliveryRecord, JobRecord

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from sqlalchemy import Engine

__all__ = ["QueueCollector"]

log = logging.getLogger(__name__)

_WAITING = (JobStatus.QUEUED, JobStatus.FAILED)


class QueueCollector:
    """A Prometheus collector over the queue's tables.

    Three small aggregate queries in one read transaction a scrape: a ``GROUP BY status``
    of each table (both have a status index) and the oldest waiting job's time.

    Parameters
    ----------
    engine
        The node's database.
    clock
        The current UTC time; tests pass a fixed one.
    """

    def __init__(self, engine: Engine, clock: Clock = utc_now) -> None:
        self._sessions = make_sessionmaker(engine)
        self._clock = clock

    def describe(self) -> list[Metric]:
        # Names only, so registering does not query a database that may be away.
        return list(self._families(up=False))

    def collect(self) -> Iterator[Metric]:
        try:
            jobs, deliveries, oldest = self._read()
        except SQLAlchemyError as error:
            log.warning("metrics: queue database unavailable: %s", error)
            yield from self._families(up=False)
            return
        yield from self._families(up=True, jobs=jobs, deliveries=deliveries, oldest=oldest)

    def _read(self) -> tuple[dict[str, int], dict[str, int], float]:
        jobs = {status.value: 0 for status in JobStatus}
        deliveries = {status.value: 0 for status in DeliveryStatus}
        with read_session(self._sessions) as session:
            for status, count in session.execute(
                select(JobRecord.status, func.count()).group_by(JobRecord.status)
            ).tuples():
                jobs[status.value] = count
            for status, count in session.execute(
                select(DeliveryRecord.status, func.count()).group_by(DeliveryRecord.status)
            ).tuples():
                deliveries[status.value] = count
            first = session.scalar(
                select(func.min(JobRecord.created_at)).where(JobRecord.status.in_(_WAITING))
            )
        # min() keeps the column's type, so this is UTC-aware on every backend.
        oldest = 0.0 if first is None else (self._clock() - first).total_seconds()
        return jobs, deliveries, max(0.0, oldest)

    def _families(
        self,
        *,
        up: bool,
        jobs: dict[str, int] | None = None,
        deliveries: dict[str, int] | None = None,
        oldest: float = 0.0,
    ) -> Iterator[Metric]:
        from prometheus_client.core import GaugeMetricFamily

        yield GaugeMetricFamily(
            "pacsnode_database_up",
            "1 when the last scrape could read the queue database, else 0.",
            value=1 if up else 0,
        )
        if not up:
            return
        job_family = GaugeMetricFamily(
            "pacsnode_jobs", "Analysis jobs in the queue, by status.", labels=["status"]
        )
        for status, count in (jobs or {}).items():
            job_family.add_metric([status], count)
        yield job_family
        delivery_family = GaugeMetricFamily(
            "pacsnode_deliveries",
            "Result deliveries (one result object to one destination), by status.",
            labels=["status"],
        )
        for status, count in (deliveries or {}).items():
            delivery_family.add_metric([status], count)
        yield delivery_family
        yield GaugeMetricFamily(
            "pacsnode_queue_oldest_waiting_seconds",
            "Age of the oldest film waiting for analysis (queued, or failed and waiting "
            "for its retry); 0 when none waits.",
            value=oldest,
        )
