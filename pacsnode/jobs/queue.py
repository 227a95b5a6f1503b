"""The durable queue: received instances wait here for analysis, results for sending.

Workers lease work, renew the lease while busy, and report success or failure; failures
back off and retry, then go to the dead letters. Every change is one database transaction.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Final, NamedTuple, TypeVar

from sqlalchemy import ColumnElement, Engine, and_, case, delete, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from pacsnode.audit.screen import screen_text
from pacsnode.config.settings import WorkerSettings
from pacsnode.db import Clock, aware_utc, make_sessionmaker, read_session, utc_now, write_session
from pacsnode.errors import JobStateError
from pacsnode.jobs.models import (
    DELETED_PATH,
    Delivery,
    DeliveryRecord,
    DeliveryStatus,
    Job,
    JobRecord,
    JobStatus,
)
from pacsnode.jobs.owner import ProcessOwner
from pacsnode.jobs.retry import RandomSource, RetryPolicy

__all__ = [
    "DEFAULT_DELIVERY_POLICY",
    "DEFAULT_JOB_POLICY",
    "ENDED",
    "Enqueued",
    "JobQueue",
    "Purged",
    "Reaped",
    "Reclaimed",
    "Remover",
]

log = logging.getLogger(__name__)

DEFAULT_JOB_POLICY: Final = RetryPolicy(max_attempts=3, base=30.0, cap=1800.0)
# Sends outlast a PACS outage of most of a day before they are dead-lettered.
DEFAULT_DELIVERY_POLICY: Final = RetryPolicy(max_attempts=30, base=60.0, cap=3600.0)

MAX_INTERRUPTIONS: Final = 5
"""Attempts of one job that may die with their process (given back each time, see
:meth:`JobQueue.reclaim_orphans`) before the job is dead-lettered: a film that crashes its
worker every time stops after this many crashes."""

_ERROR_CHARS: Final = 4000
_WAITING: Final = (JobStatus.QUEUED, JobStatus.FAILED)
_UNSENT: Final = (DeliveryStatus.PENDING, DeliveryStatus.FAILED)
_DONE: Final = (DeliveryStatus.SENT, DeliveryStatus.DEAD)

ENDED: Final = frozenset(
    {JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED, JobStatus.IGNORED}
)
"""Job states nothing moves a job out of by itself; only these lose their film or row."""

Remover = Callable[[Path], bool]
"""Deletes one file for the queue, inside the transaction that forgets it; False keeps
the file and its row as they are (say, a film re-sent since its job ended)."""


class Enqueued(NamedTuple):
    """What :meth:`JobQueue.enqueue` did."""

    job: Job
    """The job for the instance, new or existing."""
    existed: bool
    """The instance had been received before."""
    requeued: bool
    """It had, and its failed or dead job was put back in the queue."""


class Purged(NamedTuple):
    """What :meth:`JobQueue.purge` deleted (or, for a dry run, would delete)."""

    jobs: tuple[Job, ...]
    deliveries: tuple[Delivery, ...]


class Reaped(NamedTuple):
    """What :meth:`JobQueue.reap_expired` dead-lettered, for the audit log."""

    jobs: tuple[Job, ...]
    deliveries: tuple[Delivery, ...]


class Reclaimed(NamedTuple):
    """What :meth:`JobQueue.reclaim_orphans` took back from dead processes, as it was
    (with the dead owner), for the audit log."""

    jobs: tuple[Job, ...]
    deliveries: tuple[Delivery, ...]
    dead: tuple[Job, ...] = ()
    """Jobs dead-lettered instead: their process died under them too often."""


class JobQueue:
    """Analysis jobs and result deliveries in the node's database.

    Parameters
    ----------
    bind
        An engine from :func:`pacsnode.db.make_engine`, or a sessionmaker bound to one.
        Each call uses its own session, so one queue may serve many threads.
    job_policy
        Attempts and backoff of analysis jobs; its ``max_attempts`` is stamped on each
        job when it is queued (or re-queued by an administrator).
    delivery_policy
        The same for result deliveries.
    clock
        Returns the current UTC-aware time; tests pass a fake.
    rng
        Draws the backoff jitter; tests pass a seeded or fixed one.

    Notes
    -----
    Claims are safe between threads and processes. On PostgreSQL the candidate row is
    read ``FOR UPDATE SKIP LOCKED``, so concurrent workers take different jobs without
    waiting. On SQLite, which has no row locks, every changing transaction starts with
    ``BEGIN IMMEDIATE`` (see :func:`pacsnode.db.write_session`): the database's single
    write lock is taken before the candidate is read, so the read and the update are
    one atomic step and a second worker reads only after the first has committed.
    """

    def __init__(
        self,
        bind: Engine | sessionmaker[Session],
        *,
        job_policy: RetryPolicy = DEFAULT_JOB_POLICY,
        delivery_policy: RetryPolicy = DEFAULT_DELIVERY_POLICY,
        clock: Clock = utc_now,
        rng: RandomSource | None = None,
    ) -> None:
        self._sessions = make_sessionmaker(bind)
        self._job_policy = job_policy
        self._delivery_policy = delivery_policy
        self._clock = clock
        self._rng: RandomSource = random.Random() if rng is None else rng

    @classmethod
    def configured(cls, bind: Engine | sessionmaker[Session], worker: WorkerSettings) -> JobQueue:
        """The queue with the attempts and backoff of the node's ``[worker]`` settings."""
        return cls(
            bind,
            job_policy=RetryPolicy(
                worker.max_attempts, worker.backoff_base_seconds, worker.backoff_max_seconds
            ),
            delivery_policy=RetryPolicy(
                worker.delivery_max_attempts,
                worker.delivery_backoff_base_seconds,
                worker.delivery_backoff_max_seconds,
            ),
        )

    # --- receiving ---------------------------------------------------------------------

    def enqueue(
        self,
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        calling_ae: str,
        spool_path: Path | str,
        analyse: bool = True,
        priority: int = 0,
    ) -> Enqueued:
        """Queue a received instance for analysis, once per SOP Instance UID.

        A modality or PACS re-sending an instance is normal, so a known UID is not an
        error. What happens to its job depends on where the job stands:

        * QUEUED, RUNNING, SUCCEEDED: nothing; the instance is (being) analysed.
        * FAILED: made due now with the new file; its attempts are kept, so a sender
          that keeps re-sending a poison film cannot buy it endless attempts.
        * DEAD: queued afresh with the new file and the attempts reset. The node had
          given up; a deliberate re-send (a fixed file, a resolved fault) earns a new
          round.
        * CANCELLED: nothing; an administrator withdrew it and ``retry`` undoes that.
        * IGNORED: nothing; the filter passed it over, and ``retry`` analyses it anyway.

        Where retention had deleted the job's film, the job takes the new file.

        Parameters
        ----------
        spool_path
            Where the received file was written durably.
        analyse
            False records a new instance as IGNORED: kept, not analysed.
        priority
            Higher is claimed first (see :meth:`claim`); a re-sent instance whose job
            still waits keeps the higher of its old and new priority.

        Returns
        -------
        Enqueued
            The job, and whether it existed and was re-queued.
        """
        if not sop_instance_uid:
            raise ValueError("an instance needs a SOP Instance UID")
        try:
            return self._enqueue(
                sop_instance_uid,
                study_instance_uid,
                series_instance_uid,
                sop_class_uid,
                calling_ae,
                str(spool_path),
                analyse,
                priority,
            )
        except IntegrityError:
            # Two associations delivered the same instance at once and the other
            # inserted first (PostgreSQL; SQLite's write lock serialises them). The
            # second pass finds that row.
            return self._enqueue(
                sop_instance_uid,
                study_instance_uid,
                series_instance_uid,
                sop_class_uid,
                calling_ae,
                str(spool_path),
                analyse,
                priority,
            )

    def _enqueue(
        self,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        calling_ae: str,
        spool_path: str,
        analyse: bool,
        priority: int,
    ) -> Enqueued:
        with write_session(self._sessions) as session:
            now = self._now()
            record = session.scalars(
                select(JobRecord)
                .where(JobRecord.sop_instance_uid == sop_instance_uid)
                .with_for_update()
            ).one_or_none()
            if record is None:
                record = JobRecord(
                    sop_instance_uid=sop_instance_uid,
                    study_instance_uid=study_instance_uid,
                    series_instance_uid=series_instance_uid,
                    sop_class_uid=sop_class_uid,
                    calling_ae=calling_ae,
                    spool_path=spool_path,
                    status=JobStatus.QUEUED if analyse else JobStatus.IGNORED,
                    priority=priority,
                    attempts=0,
                    max_attempts=self._job_policy.max_attempts,
                    not_before=now,
                    created_at=now,
                    updated_at=now,
                )
                session.add(record)
                session.flush()
                log.info("job queued", extra=_job_context(record))
                return Enqueued(Job.of(record), existed=False, requeued=False)

            requeued = record.status in (JobStatus.FAILED, JobStatus.DEAD)
            if requeued:
                if record.status is JobStatus.DEAD:
                    record.attempts = 0
                record.status = JobStatus.QUEUED
                record.spool_path = spool_path
                record.calling_ae = calling_ae
                record.priority = max(record.priority, priority)
                record.not_before = now
                record.updated_at = now
                session.flush()
                log.info("job re-queued by a re-sent instance", extra=_job_context(record))
            elif record.status is JobStatus.QUEUED and priority > record.priority:
                # A STAT re-send of a film still waiting moves it up the queue.
                record.priority = priority
                record.updated_at = now
                session.flush()
            elif record.spool_path == DELETED_PATH:
                # Retention had deleted the film and the re-sent copy is on disk again:
                # the job owns it, so that retention deletes it too.
                record.spool_path = spool_path
                session.flush()
            return Enqueued(Job.of(record), existed=True, requeued=requeued)

    # --- the worker's side -------------------------------------------------------------

    def claim(self, worker_id: str, lease_seconds: float) -> Job | None:
        """Lease the due job of highest priority, the oldest of those, counting an attempt.

        Due are QUEUED jobs and FAILED ones whose backoff has passed, highest priority
        then oldest received first, and RUNNING jobs whose worker let the lease expire (it
        died, or :meth:`reclaim_orphans` found it dead) while attempts remain; those with
        none left are for :meth:`reap_expired`.

        Parameters
        ----------
        worker_id
            Names the worker; it must present it again to report on the job.
        lease_seconds
            How long the job stays the worker's without :meth:`heartbeat`.

        Returns
        -------
        Job or None
            The RUNNING job, or None when nothing is due.
        """
        lease = _lease(lease_seconds)
        with write_session(self._sessions) as session:
            now = self._now()
            record = _lease_oldest(session, JobRecord, _job_due(now), worker_id, now, lease)
            if record is None:
                return None
            record.status = JobStatus.RUNNING
            session.flush()
            log.debug("job claimed by %s", worker_id, extra=_job_context(record))
            return Job.of(record)

    def heartbeat(self, job_id: int, worker_id: str, lease_seconds: float) -> Job:
        """Extend the worker's lease to ``lease_seconds`` from now.

        Raises
        ------
        JobStateError
            The job is not RUNNING under this worker: its lease was lost to another.
        """
        lease = _lease(lease_seconds)
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_job(session, job_id, worker_id)
            record.lease_expires = now + lease
            record.updated_at = now
            session.flush()
            return Job.of(record)

    def succeed(self, job_id: int, worker_id: str) -> Job:
        """Mark the worker's job SUCCEEDED and end its lease.

        Raises
        ------
        JobStateError
            The job is not RUNNING under this worker.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_job(session, job_id, worker_id)
            record.status = JobStatus.SUCCEEDED
            _end_lease(record, now)
            session.flush()
            log.info("job succeeded", extra=_job_context(record))
            return Job.of(record)

    def fail(self, job_id: int, worker_id: str, error: str, *, retryable: bool = True) -> Job:
        """Record a failed attempt: FAILED with a backoff, or DEAD when none are left.

        Parameters
        ----------
        error
            What went wrong, for the administrator; clipped to 4000 characters.
        retryable
            False for failures another attempt cannot fix (e.g. not a film at all):
            the job goes DEAD at once.

        Raises
        ------
        JobStateError
            The job is not RUNNING under this worker.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_job(session, job_id, worker_id)
            record.last_error = _clip(error)
            if not retryable or record.attempts >= record.max_attempts:
                record.status = JobStatus.DEAD
                log.warning("job dead-lettered: %s", record.last_error, extra=_job_context(record))
            else:
                record.status = JobStatus.FAILED
                delay = self._job_policy.next_delay(record.attempts, self._rng)
                record.not_before = now + timedelta(seconds=delay)
                log.warning(
                    "job failed, retry in %.0f s: %s",
                    delay,
                    record.last_error,
                    extra=_job_context(record),
                )
            _end_lease(record, now)
            session.flush()
            return Job.of(record)

    def release(self, job_id: int, worker_id: str) -> Job:
        """Hand the worker's job back, due now, without counting the attempt.

        For a worker stopping cleanly (SIGTERM) in the middle of a job.

        Raises
        ------
        JobStateError
            The job is not RUNNING under this worker.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_job(session, job_id, worker_id)
            record.status = JobStatus.QUEUED
            record.attempts = max(0, record.attempts - 1)
            record.not_before = now
            _end_lease(record, now)
            session.flush()
            return Job.of(record)

    def reap_expired(self) -> Reaped:
        """Dead-letter leased work whose lease expired during its last attempt.

        A worker that dies mid-job (a film that crashes it, say) is recovered by the
        next claim while attempts remain; when none do, the work would otherwise stay
        leased forever. Workers call this before claiming and audit what it returns.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            jobs = session.scalars(
                select(JobRecord)
                .where(
                    JobRecord.status == JobStatus.RUNNING,
                    JobRecord.lease_expires <= now,
                    JobRecord.attempts >= JobRecord.max_attempts,
                )
                .order_by(JobRecord.id)
                .with_for_update(skip_locked=True)
            ).all()
            for job in jobs:
                job.status = JobStatus.DEAD
                job.last_error = _expired_message(job.lease_owner, job.attempts)
                _end_lease(job, now)
            deliveries = session.scalars(
                select(DeliveryRecord)
                .where(
                    DeliveryRecord.status.in_(_UNSENT),
                    DeliveryRecord.lease_expires <= now,
                    DeliveryRecord.attempts >= DeliveryRecord.max_attempts,
                )
                .order_by(DeliveryRecord.id)
                .with_for_update(skip_locked=True)
            ).all()
            for delivery in deliveries:
                delivery.status = DeliveryStatus.DEAD
                delivery.last_error = _expired_message(delivery.lease_owner, delivery.attempts)
                _end_lease(delivery, now)
            session.flush()
            return Reaped(
                tuple(Job.of(job) for job in jobs),
                tuple(Delivery.of(delivery) for delivery in deliveries),
            )

    def reclaim_orphans(self, owner: ProcessOwner | None = None) -> Reclaimed:
        """Take back at once the leases held by dead processes on this host.

        A lease records its owner's host, pid and process start (see
        :class:`~pacsnode.jobs.owner.ProcessOwner`). Leases of this host whose process is
        gone (killed, crashed, the host rebooted) are ended now instead of when they
        expire: the work is due at once, for the next claim. A job's interrupted attempt
        is given back and counted as an interruption instead: killing the node must not
        use up a film's attempts, yet a film that crashes its worker every time is
        dead-lettered after :data:`MAX_INTERRUPTIONS`. A delivery's attempt stays counted
        (it has many). Leases of other hosts wait out their (short) expiry.

        Cheap when nothing is orphaned: one read, and a write only for dead owners.

        Parameters
        ----------
        owner
            The process judging; this one by default (tests pass another).

        Returns
        -------
        Reclaimed
            The jobs and deliveries as they were, with their dead owner, for the audit,
            and the jobs dead-lettered for too many interruptions.
        """
        me = ProcessOwner.current() if owner is None else owner
        with read_session(self._sessions) as session:
            now = self._now()
            candidates = {
                model: [
                    row
                    for row in session.execute(
                        select(
                            model.id, model.lease_host, model.lease_pid, model.lease_process_start
                        ).where(due, model.lease_host == me.host, model.lease_expires > now)
                    ).tuples()
                    if me.is_dead(row[1], row[2], row[3])
                ]
                for model, due in (
                    (JobRecord, JobRecord.status == JobStatus.RUNNING),
                    (DeliveryRecord, DeliveryRecord.status.in_(_UNSENT)),
                )
            }
        if not any(candidates.values()):
            return Reclaimed((), ())
        taken: dict[type, list[Job | Delivery]] = {JobRecord: [], DeliveryRecord: []}
        dead: list[Job] = []
        with write_session(self._sessions) as session:
            now = self._now()
            for model, rows in candidates.items():
                for row_id, host, pid, start in rows:
                    record = session.get(model, row_id, with_for_update=True)
                    # Unchanged since the read: the same dead owner still holds it.
                    if (
                        record is None
                        or (record.lease_host, record.lease_pid, record.lease_process_start)
                        != (host, pid, start)
                        or record.lease_expires is None
                        or record.lease_expires <= now
                    ):
                        continue
                    if isinstance(record, JobRecord):
                        if record.interruptions + 1 >= MAX_INTERRUPTIONS:
                            record.interruptions += 1
                            record.status = JobStatus.DEAD
                            record.last_error = _clip(
                                f"its worker process died {record.interruptions} times while "
                                f"analysing it (last {record.lease_owner})"
                            )
                            _end_lease(record, now)
                            dead.append(Job.of(record))
                            continue
                        taken[model].append(Job.of(record))
                        record.attempts = max(0, record.attempts - 1)
                        record.interruptions += 1
                    else:
                        taken[model].append(Delivery.of(record))
                    # Expired now: the next claim takes it.
                    record.lease_expires = now
                    record.updated_at = now
            session.flush()
        jobs = tuple(j for j in taken[JobRecord] if isinstance(j, Job))
        deliveries = tuple(d for d in taken[DeliveryRecord] if isinstance(d, Delivery))
        for job in dead:
            log.warning("job dead-lettered: %s", job.last_error, extra={"job_id": job.id})
        if jobs or deliveries:
            log.warning(
                "reclaimed %d jobs and %d deliveries from dead processes on %s",
                len(jobs),
                len(deliveries),
                me.host,
            )
        return Reclaimed(jobs, deliveries, tuple(dead))

    # --- administration ----------------------------------------------------------------

    def retry(self, job_id: int) -> Job:
        """Queue a DEAD, FAILED, CANCELLED or IGNORED job again, due now, with fresh attempts.

        Raises
        ------
        JobStateError
            The job does not exist or is QUEUED, RUNNING or SUCCEEDED, or retention
            deleted its film (the sender must send it again).
        """
        allowed = (JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.IGNORED)
        with write_session(self._sessions) as session:
            now = self._now()
            record = _job_in(session, job_id, allowed, "retried")
            if record.spool_path == DELETED_PATH:
                raise JobStateError(
                    f"job {job_id}: its film was deleted by retention; send the film again"
                )
            record.status = JobStatus.QUEUED
            record.attempts = 0
            record.max_attempts = self._job_policy.max_attempts
            record.not_before = now
            record.updated_at = now
            session.flush()
            return Job.of(record)

    def cancel(self, job_id: int) -> Job:
        """Withdraw a job that is not running and has not succeeded.

        Its deliveries, if any, are left alone.

        Raises
        ------
        JobStateError
            The job does not exist or is RUNNING (release it or let its lease run
            out first), SUCCEEDED or already CANCELLED.
        """
        allowed = (JobStatus.QUEUED, JobStatus.FAILED, JobStatus.DEAD)
        with write_session(self._sessions) as session:
            now = self._now()
            record = _job_in(session, job_id, allowed, "cancelled")
            record.status = JobStatus.CANCELLED
            record.updated_at = now
            session.flush()
            return Job.of(record)

    def purge(
        self,
        statuses: Iterable[JobStatus],
        older_than: datetime,
        remove: Remover | None = None,
        *,
        dry_run: bool = False,
    ) -> Purged:
        """Delete ended jobs in ``statuses`` last changed before ``older_than``, with their
        deliveries and, through ``remove``, their files.

        A job with a result still to send (a PENDING or FAILED delivery) is kept, and so is
        one whose files ``remove`` declines or fails to delete (the error is raised and
        nothing is deleted).

        Parameters
        ----------
        remove
            Deletes a file (the film, each result object); called before the rows go,
            inside their transaction. None leaves the files where they are.
        dry_run
            Only find what would be deleted.

        Returns
        -------
        Purged
            The jobs and deliveries deleted, as they were.

        Raises
        ------
        ValueError
            ``statuses`` includes a state that has not ended (QUEUED, RUNNING, FAILED),
            which is never purged; or ``older_than`` is naive.
        """
        wanted = frozenset(statuses)
        live = sorted(status.name for status in wanted - ENDED)
        if live:
            raise ValueError(
                f"{', '.join(live)} jobs have not ended and are never purged; "
                "cancel them or let them finish"
            )
        cutoff = aware_utc(older_than, "older_than")
        if not wanted:
            return Purged((), ())
        unsent = (
            select(DeliveryRecord.id)
            .where(DeliveryRecord.job_id == JobRecord.id, DeliveryRecord.status.in_(_UNSENT))
            .exists()
        )
        with write_session(self._sessions) as session:
            records = session.scalars(
                select(JobRecord)
                .where(JobRecord.status.in_(wanted), JobRecord.updated_at < cutoff, ~unsent)
                .order_by(JobRecord.id)
                .with_for_update()
            ).all()
            jobs = tuple(Job.of(record) for record in records)
            deliveries = tuple(
                Delivery.of(record)
                for record in session.scalars(
                    select(DeliveryRecord)
                    .where(DeliveryRecord.job_id.in_([job.id for job in jobs]))
                    .order_by(DeliveryRecord.id)
                )
            )
            if dry_run or not jobs:
                return Purged(jobs, deliveries)
            if remove is not None:
                files = [job.spool_path for job in jobs] + [d.path for d in deliveries]
                for path in dict.fromkeys(f for f in files if f is not None):
                    if not remove(path):
                        raise JobStateError(f"{path} was kept; the purge deleted nothing")
            session.execute(
                delete(JobRecord).where(JobRecord.id.in_([job.id for job in jobs])),
                execution_options={"synchronize_session": False},
            )
        log.info("purged %d jobs and %d deliveries", len(jobs), len(deliveries))
        return Purged(jobs, deliveries)

    # --- retention ---------------------------------------------------------------------

    def films_to_delete(self, ended_before: datetime, limit: int = 100) -> tuple[Job, ...]:
        """Up to ``limit`` ended jobs, oldest first, last changed before ``ended_before``
        that still have their film."""
        cutoff = aware_utc(ended_before, "ended_before")
        with read_session(self._sessions) as session:
            return tuple(
                Job.of(record)
                for record in session.scalars(
                    select(JobRecord)
                    .where(
                        JobRecord.status.in_(ENDED),
                        JobRecord.updated_at < cutoff,
                        JobRecord.spool_path != DELETED_PATH,
                    )
                    .order_by(JobRecord.updated_at, JobRecord.id)
                    .limit(limit)
                )
            )

    def delete_film(self, job_id: int, ended_before: datetime, remove: Remover) -> Job | None:
        """Delete the film of a job that ended before ``ended_before`` and forget its path.

        The job is checked again under the write lock, so a film re-sent and re-queued
        meanwhile is kept. The job's state and ``updated_at`` are left as they were.

        Returns
        -------
        Job or None
            The job as it was before (with its film's path), or None when it no longer
            qualifies or ``remove`` kept the file.
        """
        cutoff = aware_utc(ended_before, "ended_before")
        with write_session(self._sessions) as session:
            record = session.get(JobRecord, job_id, with_for_update=True)
            if (
                record is None
                or record.status not in ENDED
                or record.updated_at >= cutoff
                or record.spool_path == DELETED_PATH
            ):
                return None
            before = Job.of(record)
            assert before.spool_path is not None
            if not remove(before.spool_path):
                return None
            record.spool_path = DELETED_PATH
            session.flush()
            return before

    def results_to_delete(self, done_before: datetime, limit: int = 100) -> tuple[Path, ...]:
        """Up to ``limit`` result files whose every delivery was sent or given up before
        ``done_before``, and which are still on disk as far as the queue knows."""
        cutoff = aware_utc(done_before, "done_before")
        undone = func.sum(case((DeliveryRecord.status.in_(_DONE), 0), else_=1))
        statement = (
            select(DeliveryRecord.path)
            .where(DeliveryRecord.path != DELETED_PATH)
            .group_by(DeliveryRecord.path)
            .having(undone == 0, func.max(DeliveryRecord.updated_at) < cutoff)
            .order_by(func.max(DeliveryRecord.updated_at))
            .limit(limit)
        )
        with read_session(self._sessions) as session:
            return tuple(Path(path) for path in session.scalars(statement))

    def delete_result(
        self, path: Path | str, done_before: datetime, remove: Remover
    ) -> tuple[Delivery, ...]:
        """Delete a result file whose every delivery was sent or given up before
        ``done_before``, and forget its path in those deliveries.

        Returns
        -------
        tuple of Delivery
            Its deliveries as they were, or none when it no longer qualifies or ``remove``
            kept the file.
        """
        cutoff = aware_utc(done_before, "done_before")
        with write_session(self._sessions) as session:
            records = session.scalars(
                select(DeliveryRecord)
                .where(DeliveryRecord.path == str(path))
                .order_by(DeliveryRecord.id)
                .with_for_update()
            ).all()
            if not records or any(r.status not in _DONE or r.updated_at >= cutoff for r in records):
                return ()
            before = tuple(Delivery.of(record) for record in records)
            if not remove(Path(path)):
                return ()
            for record in records:
                record.path = DELETED_PATH
            session.flush()
            return before

    def has_deliveries(self, job_id: int) -> bool:
        """Whether any result of the job was queued for sending."""
        with read_session(self._sessions) as session:
            found = session.scalars(
                select(DeliveryRecord.id).where(DeliveryRecord.job_id == job_id).limit(1)
            ).first()
            return found is not None

    def get(self, job_id: int) -> Job | None:
        """The job with this id, or None."""
        with read_session(self._sessions) as session:
            record = session.get(JobRecord, job_id)
            return None if record is None else Job.of(record)

    def find(self, sop_instance_uid: str) -> Job | None:
        """The job of the instance with this SOP Instance UID, or None."""
        with read_session(self._sessions) as session:
            record = session.scalars(
                select(JobRecord).where(JobRecord.sop_instance_uid == sop_instance_uid)
            ).one_or_none()
            return None if record is None else Job.of(record)

    def unfinished_films(self, calling_ae: str) -> tuple[Path, ...]:
        """The spool files of the jobs from ``calling_ae`` that are queued, running or
        waiting to retry: what that sender holds of the spool until they are analysed."""
        statement = select(JobRecord.spool_path).where(
            JobRecord.calling_ae == calling_ae,
            JobRecord.status.in_((JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.FAILED)),
        )
        with read_session(self._sessions) as session:
            return tuple(Path(path) for path in session.scalars(statement) if path)

    def list(self, status: JobStatus | None = None, limit: int = 100) -> tuple[Job, ...]:
        """Up to ``limit`` jobs, optionally of one status, most recently queued first."""
        statement = select(JobRecord).order_by(JobRecord.id.desc()).limit(limit)
        if status is not None:
            statement = statement.where(JobRecord.status == status)
        with read_session(self._sessions) as session:
            return tuple(Job.of(record) for record in session.scalars(statement))

    def counts_by_status(self) -> dict[JobStatus, int]:
        """How many jobs there are of each status, zeros included."""
        counts = dict.fromkeys(JobStatus, 0)
        with read_session(self._sessions) as session:
            rows = session.execute(
                select(JobRecord.status, func.count()).group_by(JobRecord.status)
            )
            for status, count in rows.tuples():
                counts[status] = count
        return counts

    def oldest_waiting(self) -> Job | None:
        """The longest-waiting QUEUED or FAILED job, or None: how far behind the node is."""
        with read_session(self._sessions) as session:
            record = session.scalars(
                select(JobRecord)
                .where(JobRecord.status.in_(_WAITING))
                .order_by(JobRecord.created_at, JobRecord.id)
                .limit(1)
            ).first()
            return None if record is None else Job.of(record)

    # --- deliveries --------------------------------------------------------------------

    def add_delivery(
        self,
        job_id: int,
        *,
        destination: str,
        kind: str,
        sop_instance_uid: str,
        path: Path | str,
        max_attempts: int | None = None,
    ) -> Delivery:
        """Queue a result object for sending, once per destination and SOP Instance UID.

        Parameters
        ----------
        destination
            A configured destination's (or ``[[notify]]`` receiver's) name.
        kind
            The object's kind, e.g. ``"SEG"`` or ``"SR"``; ``"notify"`` for an alert.
        sop_instance_uid
            The result object's SOP Instance UID (an alert's: its film's).
        path
            Its file, written durably before this call.
        max_attempts
            Sends before it is dead-lettered; None: the delivery policy's.

        Raises
        ------
        JobStateError
            No job has this id.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            job = session.get(JobRecord, job_id)
            if job is None:
                raise JobStateError(f"job {job_id} does not exist")
            record = session.scalars(
                select(DeliveryRecord)
                .where(
                    DeliveryRecord.destination == destination,
                    DeliveryRecord.sop_instance_uid == sop_instance_uid,
                )
                .with_for_update()
            ).one_or_none()
            if record is None:
                record = DeliveryRecord(
                    job_id=job_id,
                    destination=destination,
                    kind=kind,
                    sop_instance_uid=sop_instance_uid,
                    path=str(path),
                    status=DeliveryStatus.PENDING,
                    priority=job.priority,
                    attempts=0,
                    max_attempts=max_attempts or self._delivery_policy.max_attempts,
                    not_before=now,
                    created_at=now,
                    updated_at=now,
                )
                session.add(record)
                session.flush()
            elif record.path == DELETED_PATH:
                # Written again after retention deleted it: track the file once more.
                record.path = str(path)
                session.flush()
            return Delivery.of(record)

    def claim_delivery(self, worker_id: str, lease_seconds: float) -> Delivery | None:
        """Lease the due delivery of highest priority, the oldest of those, counting an
        attempt.

        Due are PENDING and FAILED deliveries past their backoff whose lease, if any,
        has expired and which have attempts left, whatever their job's state.
        """
        lease = _lease(lease_seconds)
        with write_session(self._sessions) as session:
            now = self._now()
            record = _lease_oldest(
                session, DeliveryRecord, _delivery_due(now), worker_id, now, lease
            )
            if record is None:
                return None
            session.flush()
            return Delivery.of(record)

    def delivery_sent(self, delivery_id: int, worker_id: str) -> Delivery:
        """Mark the sender's delivery SENT.

        Raises
        ------
        JobStateError
            The delivery is not leased to this sender.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_delivery(session, delivery_id, worker_id)
            record.status = DeliveryStatus.SENT
            _end_lease(record, now)
            session.flush()
            return Delivery.of(record)

    def delivery_failed(
        self, delivery_id: int, worker_id: str, error: str, *, retryable: bool = True
    ) -> Delivery:
        """Record a failed send: FAILED with a backoff, or DEAD when none are left.

        Parameters
        ----------
        retryable
            False when the destination refused the object for good (e.g. a DIMSE
            failure status other than out of resources): DEAD at once.

        Raises
        ------
        JobStateError
            The delivery is not leased to this sender.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_delivery(session, delivery_id, worker_id)
            record.last_error = _clip(error)
            if not retryable or record.attempts >= record.max_attempts:
                record.status = DeliveryStatus.DEAD
            else:
                record.status = DeliveryStatus.FAILED
                delay = self._delivery_policy.next_delay(record.attempts, self._rng)
                record.not_before = now + timedelta(seconds=delay)
            _end_lease(record, now)
            session.flush()
            return Delivery.of(record)

    def release_delivery(self, delivery_id: int, worker_id: str) -> Delivery:
        """Hand the sender's delivery back, due now, without counting the attempt.

        Raises
        ------
        JobStateError
            The delivery is not leased to this sender.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_delivery(session, delivery_id, worker_id)
            record.attempts = max(0, record.attempts - 1)
            record.not_before = now
            _end_lease(record, now)
            session.flush()
            return Delivery.of(record)

    def heartbeat_delivery(
        self, delivery_id: int, worker_id: str, lease_seconds: float
    ) -> Delivery:
        """Extend the sender's lease on a delivery to ``lease_seconds`` from now.

        Raises
        ------
        JobStateError
            The delivery is not leased to this sender: the lease was lost to another.
        """
        lease = _lease(lease_seconds)
        with write_session(self._sessions) as session:
            now = self._now()
            record = _held_delivery(session, delivery_id, worker_id)
            record.lease_expires = now + lease
            record.updated_at = now
            session.flush()
            return Delivery.of(record)

    def retry_delivery(self, delivery_id: int, *, max_attempts: int | None = None) -> Delivery:
        """Make a DEAD or FAILED delivery PENDING again, due now, with fresh attempts:
        ``max_attempts`` of them (its receiver's own bound), or the delivery policy's.

        Raises
        ------
        JobStateError
            It does not exist, is PENDING or SENT, or is being sent right now.
        """
        with write_session(self._sessions) as session:
            now = self._now()
            record = session.get(DeliveryRecord, delivery_id, with_for_update=True)
            if record is None:
                raise JobStateError(f"delivery {delivery_id} does not exist")
            leased = record.lease_expires is not None and record.lease_expires > now
            if record.status not in (DeliveryStatus.DEAD, DeliveryStatus.FAILED) or leased:
                state = f"being sent by {record.lease_owner}" if leased else record.status.name
                raise JobStateError(f"delivery {delivery_id} is {state}; it cannot be retried")
            if record.path == DELETED_PATH:
                raise JobStateError(
                    f"delivery {delivery_id}: its result file was deleted by retention"
                )
            record.status = DeliveryStatus.PENDING
            record.attempts = 0
            record.max_attempts = (
                self._delivery_policy.max_attempts if max_attempts is None else max_attempts
            )
            record.not_before = now
            _end_lease(record, now)
            session.flush()
            return Delivery.of(record)

    def get_delivery(self, delivery_id: int) -> Delivery | None:
        """The delivery with this id, or None."""
        with read_session(self._sessions) as session:
            record = session.get(DeliveryRecord, delivery_id)
            return None if record is None else Delivery.of(record)

    def list_deliveries(
        self,
        status: DeliveryStatus | None = None,
        job_id: int | None = None,
        limit: int = 100,
    ) -> tuple[Delivery, ...]:
        """Up to ``limit`` deliveries, optionally of one status or job, newest first."""
        statement = select(DeliveryRecord).order_by(DeliveryRecord.id.desc()).limit(limit)
        if status is not None:
            statement = statement.where(DeliveryRecord.status == status)
        if job_id is not None:
            statement = statement.where(DeliveryRecord.job_id == job_id)
        with read_session(self._sessions) as session:
            return tuple(Delivery.of(record) for record in session.scalars(statement))

    # --- helpers -----------------------------------------------------------------------

    def _now(self) -> datetime:
        return aware_utc(self._clock(), "the clock's time")


def _job_due(now: datetime) -> ColumnElement[bool]:
    return or_(
        and_(JobRecord.status.in_(_WAITING), JobRecord.not_before <= now),
        and_(
            JobRecord.status == JobStatus.RUNNING,
            JobRecord.lease_expires <= now,
            JobRecord.attempts < JobRecord.max_attempts,
        ),
    )


def _delivery_due(now: datetime) -> ColumnElement[bool]:
    return and_(
        DeliveryRecord.status.in_(_UNSENT),
        DeliveryRecord.not_before <= now,
        or_(DeliveryRecord.lease_expires.is_(None), DeliveryRecord.lease_expires <= now),
        DeliveryRecord.attempts < DeliveryRecord.max_attempts,
    )


def _held_job(session: Session, job_id: int, worker_id: str) -> JobRecord:
    record = session.get(JobRecord, job_id, with_for_update=True)
    if record is None:
        raise JobStateError(f"job {job_id} does not exist")
    if record.status is not JobStatus.RUNNING or record.lease_owner != worker_id:
        holder = f", leased to {record.lease_owner}" if record.lease_owner else ""
        raise JobStateError(
            f"job {job_id} is not held by {worker_id}: it is {record.status.name}{holder}"
        )
    return record


def _held_delivery(session: Session, delivery_id: int, worker_id: str) -> DeliveryRecord:
    record = session.get(DeliveryRecord, delivery_id, with_for_update=True)
    if record is None:
        raise JobStateError(f"delivery {delivery_id} does not exist")
    if record.status not in _UNSENT or record.lease_owner != worker_id:
        holder = f", leased to {record.lease_owner}" if record.lease_owner else ""
        raise JobStateError(
            f"delivery {delivery_id} is not held by {worker_id}: it is {record.status.name}{holder}"
        )
    return record


def _job_in(
    session: Session, job_id: int, allowed: tuple[JobStatus, ...], action: str
) -> JobRecord:
    record = session.get(JobRecord, job_id, with_for_update=True)
    if record is None:
        raise JobStateError(f"job {job_id} does not exist")
    if record.status not in allowed:
        names = ", ".join(status.name for status in allowed)
        raise JobStateError(
            f"job {job_id} is {record.status.name}; only {names} jobs can be {action}"
        )
    return record


_R = TypeVar("_R", JobRecord, DeliveryRecord)


def _lease_oldest(
    session: Session,
    model: type[_R],
    due: ColumnElement[bool],
    worker_id: str,
    now: datetime,
    lease: timedelta,
) -> _R | None:
    """Lock the due row of highest priority, oldest first, that no other transaction holds,
    lease it to ``worker_id`` (in this process) for ``lease`` from ``now`` and count an
    attempt; None when nothing is due."""
    record = session.scalars(
        select(model)
        .where(due)
        .order_by(model.priority.desc(), model.created_at, model.id)
        .limit(1)
        .with_for_update(skip_locked=True)
    ).first()
    if record is not None:
        owner = ProcessOwner.current()
        record.attempts += 1
        record.lease_owner = worker_id
        record.lease_expires = now + lease
        record.lease_host = owner.host
        record.lease_pid = owner.pid
        record.lease_process_start = owner.start
        record.updated_at = now
    return record


def _end_lease(record: JobRecord | DeliveryRecord, now: datetime) -> None:
    record.lease_owner = None
    record.lease_expires = None
    record.lease_host = None
    record.lease_pid = None
    record.lease_process_start = None
    record.updated_at = now


def _lease(seconds: float) -> timedelta:
    if not seconds > 0:
        raise ValueError(f"a lease must last a positive number of seconds, got {seconds}")
    return timedelta(seconds=seconds)


def _clip(error: str) -> str:
    """The error through the active patient screen, cut to the column's length."""
    error = screen_text(error) or ""
    return error if len(error) <= _ERROR_CHARS else error[: _ERROR_CHARS - 1] + "…"


def _expired_message(owner: str | None, attempts: int) -> str:
    return f"the lease of {owner} expired during attempt {attempts}, the last allowed"


def _job_context(record: JobRecord) -> dict[str, object]:
    return {"job_id": record.id, "sop_instance_uid": record.sop_instance_uid}
