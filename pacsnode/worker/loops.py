"""The worker's two loops: analyse queued films, and send their results.

They are separate on purpose: a PACS outage holds up sends, never analysis, and a sent
result is never analysed again. Each loop is a thread that leases one item at a time.
"""

from __future__ import annotations

import abc
import contextlib
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from pacsnode.audit import AuditEvent, AuditLog, Outcome, PatientScreen, screening
from pacsnode.config.settings import Destination, NotifyTarget
from pacsnode.errors import JobStateError
from pacsnode.export.notify import NOTIFY_KIND, post_alert, screened_values
from pacsnode.export.sender import send_file
from pacsnode.jobs import Delivery, Job, JobQueue, JobStatus
from pacsnode.metrics import NO_METRICS, NoMetrics
from pacsnode.worker.alerts import queue_alerts
from pacsnode.worker.analyst import Analyst, is_permanent
from pacsnode.worker.retention import SWEEP_SECONDS, Retention

__all__ = [
    "DeliveryLoop",
    "JobLoop",
    "RetentionLoop",
    "lease_renewed",
    "reclaim_orphans",
    "worker_name",
]

log = logging.getLogger(__name__)

POLL_SECONDS = 1.0
"""How long an idle loop waits before asking the queue again."""


def worker_name(role: str) -> str:
    """A lease owner name that tells hosts, processes and loops apart."""
    return f"{socket.gethostname()}:{os.getpid()}:{role}"


class _Loop(threading.Thread, abc.ABC):
    """A thread that repeats :meth:`step` until stopped, resting when there is nothing."""

    def __init__(self, name: str, queue: JobQueue, audit: AuditLog, stop: threading.Event) -> None:
        super().__init__(name=name, daemon=True)
        self.worker_id = worker_name(name)
        self.queue = queue
        self.audit = audit
        self.stop = stop
        self.wake = threading.Event()
        """Set by whoever queues work in this process, so an idle loop need not wait out
        its poll; work queued by other processes is found by polling."""

    def run(self) -> None:
        log.info("%s started", self.worker_id)
        while not self.stop.is_set():
            try:
                busy = self.step()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                # The database may be away for a moment, or a native decoder panicked
                # (a PanicException is no Exception): never let the loop die of it.
                log.exception("%s: step failed; trying again shortly", self.worker_id)
                busy = False
            if not busy and not self.stop.is_set():
                self.wake.wait(POLL_SECONDS)
                self.wake.clear()
        log.info("%s stopped", self.worker_id)

    @abc.abstractmethod
    def step(self) -> bool:
        """Do one item's work; False when there was nothing to do."""

    def _screened(self, screen: PatientScreen, work: Callable[[], bool]) -> bool:
        """Run ``work`` with ``screen`` active, its failure logged under it too (the log
        line of :meth:`run` would come after the screen is gone)."""
        with screening(screen):
            try:
                return work()
            except (KeyboardInterrupt, SystemExit):
                raise
            except BaseException:
                log.exception("%s: step failed; trying again shortly", self.worker_id)
                return False

    def _record(self, event: AuditEvent, outcome: Outcome, **fields: Any) -> None:
        try:
            self.audit.record(event, outcome, actor=f"worker:{self.worker_id}", **fields)
        except Exception:
            log.exception("audit entry %s could not be written", event.value)


class JobLoop(_Loop):
    """Claims analysis jobs, runs the stack, and queues one delivery per result and
    destination that takes its kind.

    Parameters
    ----------
    analyst
        The loaded analysis stack.
    destinations
        Where results go, each the kinds its ``send`` names (the analyst builds the
        Secondary Capture only when one of them takes it:
        :func:`~pacsnode.worker.analyst.wants_capture`).
    lease_seconds
        How long a claim lasts without renewal; renewed every third of it while busy.
    on_results
        Called after a job has queued deliveries, to wake the delivery loop.
    metrics
        Times each stage of an analysed film (read, the stack's stages, build).
    notify
        The ``[[notify]]`` receivers: an alert is queued to each whose ``on`` names a
        flag of the film's read-out.
    """

    def __init__(
        self,
        name: str,
        queue: JobQueue,
        audit: AuditLog,
        stop: threading.Event,
        *,
        analyst: Analyst,
        destinations: Sequence[Destination],
        lease_seconds: float,
        on_results: Callable[[], None] | None = None,
        metrics: NoMetrics = NO_METRICS,
        notify: Sequence[NotifyTarget] = (),
    ) -> None:
        super().__init__(name, queue, audit, stop)
        self.analyst = analyst
        self.notify = tuple(notify)
        self.destinations = tuple(destinations)
        self.lease_seconds = lease_seconds
        self.on_results = on_results
        self.metrics = metrics

    def step(self) -> bool:
        self._reap()
        job = self.queue.claim(self.worker_id, self.lease_seconds)
        if job is None:
            return False
        # Whatever this film makes go wrong, its patient values stay out of the log,
        # the audit reasons and the job's last error.
        return self._screened(_screen_of(job.spool_path), lambda: self._work(job))

    def _work(self, job: Job) -> bool:
        fields = _job_fields(job)
        if self.stop.is_set():
            self.queue.release(job.id, self.worker_id)
            self._record(AuditEvent.JOB_RELEASED, Outcome.SUCCESS, reason="node stopping", **fields)
            return True
        self._record(
            AuditEvent.JOB_CLAIMED,
            Outcome.SUCCESS,
            details={"attempt": job.attempts, "max_attempts": job.max_attempts},
            **fields,
        )
        try:
            if job.spool_path is None:  # retention deleted it; `queue retry` refuses this
                raise FileNotFoundError("the film was deleted by retention; send it again")
            with self._lease_kept(job):
                analysis = self.analyst.analyse(job.spool_path)
                sends = 0
                for result in analysis.results:
                    for destination in self.destinations:
                        if result.kind not in destination.send:
                            continue
                        sends += 1
                        self.queue.add_delivery(
                            job.id,
                            destination=destination.name,
                            kind=result.kind,
                            sop_instance_uid=result.sop_instance_uid,
                            path=result.path,
                        )
                alerts = queue_alerts(
                    self.queue,
                    job,
                    analysis,
                    self.notify,
                    self.analyst.directory_for(job.sop_instance_uid),
                    self.analyst.algorithm.version,
                )
        except Exception as exc:
            self._failed(job, exc)
            return True
        self.queue.succeed(job.id, self.worker_id)
        self.metrics.analysed(analysis.stages)
        if (sends or alerts) and self.on_results is not None:
            self.on_results()
        if analysis.results and not self.destinations:
            outcome, reason = Outcome.WARNING, f"{analysis.finding}; no destinations configured"
        elif analysis.results:
            outcome, reason = Outcome.SUCCESS, analysis.finding
        else:
            outcome, reason = Outcome.WARNING, analysis.finding
        self._record(
            AuditEvent.JOB_SUCCEEDED,
            outcome,
            reason=reason,
            details={
                "seconds": round(analysis.seconds, 3),
                "results": {r.kind: r.sop_instance_uid for r in analysis.results},
                "model_version": self.analyst.algorithm.version,
                "alerts": list(alerts),
            },
            **fields,
        )
        return True

    def _failed(self, job: Job, exc: Exception) -> None:
        permanent = is_permanent(exc)
        message = f"{type(exc).__name__}: {exc}"
        if permanent:
            log.warning("job %d failed for good: %s", job.id, message)
        else:
            log.exception("job %d failed", job.id)
        try:
            after = self.queue.fail(job.id, self.worker_id, message, retryable=not permanent)
        except JobStateError as lost:
            # The lease ran out meanwhile and another worker may hold it: not ours to end.
            log.warning("job %d: %s", job.id, lost)
            return
        dead = after.status is JobStatus.DEAD
        self._record(
            AuditEvent.JOB_DEAD if dead else AuditEvent.JOB_FAILED,
            Outcome.FAILURE if dead else Outcome.WARNING,
            reason=message,
            details={
                "attempt": after.attempts,
                "max_attempts": after.max_attempts,
                "retryable": not permanent,
                "next_attempt": None if dead else after.not_before.isoformat(),
            },
            **_job_fields(job),
        )

    def _reap(self) -> None:
        # A worker process of this host that died (a crash, kill -9, the OOM killer) is
        # found by its pid and start, and its work taken back without waiting out the
        # lease; another host's waits for expiry.
        reclaim_orphans(self.queue, self.audit, f"worker:{self.worker_id}")
        reaped = self.queue.reap_expired()
        for job in reaped.jobs:
            self._record(
                AuditEvent.JOB_DEAD, Outcome.FAILURE, reason=job.last_error, **_job_fields(job)
            )
        for delivery in reaped.deliveries:
            self._record(
                AuditEvent.RESULT_FAILED,
                Outcome.FAILURE,
                reason=delivery.last_error,
                job_id=delivery.job_id,
                sop_instance_uid=delivery.sop_instance_uid,
                details={"destination": delivery.destination, "dead": True},
            )

    @contextlib.contextmanager
    def _lease_kept(self, job: Job) -> Iterator[None]:
        """Renew the job's lease in the background while the block runs."""
        with lease_renewed(
            lambda: self.queue.heartbeat(job.id, self.worker_id, self.lease_seconds),
            self.lease_seconds,
            f"job {job.id}",
        ):
            yield


class DeliveryLoop(_Loop):
    """Sends result objects by C-STORE, and alerts by HTTP POST, one delivery at a time,
    retrying on the deliveries' own schedule.

    Parameters
    ----------
    destinations
        The configured destinations, by name.
    calling_ae
        The node's AE title.
    lease_seconds
        How long a claimed delivery is held.
    metrics
        Times each send (stage ``deliver``) and counts how sends end.
    notify
        The ``[[notify]]`` receivers, by name: where ``notify`` deliveries go.
    """

    def __init__(
        self,
        name: str,
        queue: JobQueue,
        audit: AuditLog,
        stop: threading.Event,
        *,
        destinations: Sequence[Destination],
        calling_ae: str,
        lease_seconds: float,
        metrics: NoMetrics = NO_METRICS,
        notify: Sequence[NotifyTarget] = (),
    ) -> None:
        super().__init__(name, queue, audit, stop)
        self.destinations = {d.name: d for d in destinations}
        self.notify = {n.name: n for n in notify}
        self.calling_ae = calling_ae
        self.lease_seconds = lease_seconds
        self.metrics = metrics

    def step(self) -> bool:
        delivery = self.queue.claim_delivery(self.worker_id, self.lease_seconds)
        if delivery is None:
            return False
        # A result object carries its film's patient module, an alert its accession
        # number; the receiver may quote them back.
        return self._screened(_delivery_screen(delivery), lambda: self._send(delivery))

    def _send(self, delivery: Delivery) -> bool:
        if self.stop.is_set():
            self.queue.release_delivery(delivery.id, self.worker_id)
            return True
        send = self._sender(delivery)
        if send is None:
            self._failed(
                delivery,
                f"destination {delivery.destination!r} is no longer configured",
                retryable=False,
            )
            return True
        if delivery.path is None:
            self._failed(delivery, "the result file was deleted by retention", retryable=False)
            return True
        started = time.perf_counter()
        try:
            # A slow PACS can hold a send past the short lease: renew it meanwhile, so
            # no other sender takes the object over and sends it twice.
            with lease_renewed(
                lambda: self.queue.heartbeat_delivery(
                    delivery.id, self.worker_id, self.lease_seconds
                ),
                self.lease_seconds,
                f"delivery {delivery.id}",
            ):
                result = send(delivery.path)
        except Exception as exc:  # the results file is missing or damaged
            self._failed(delivery, f"cannot read {delivery.path}: {exc}", retryable=False)
            return True
        finally:
            self.metrics.observe("deliver", time.perf_counter() - started)
        if result.ok:
            self.queue.delivery_sent(delivery.id, self.worker_id)
            self.metrics.delivery_ended(delivery.destination, "sent")
            self._record(
                AuditEvent.RESULT_SENT,
                Outcome.SUCCESS,
                reason=result.detail,
                **self._fields(delivery),
            )
        else:
            self._failed(delivery, result.detail, retryable=result.retryable)
        return True

    def _sender(self, delivery: Delivery) -> Callable[[Path], Any] | None:
        """How to send the delivery, by its kind; None when its target is gone."""
        if delivery.kind == NOTIFY_KIND:
            target = self.notify.get(delivery.destination)
            return None if target is None else lambda path: post_alert(path, target)
        destination = self.destinations.get(delivery.destination)
        if destination is None:
            return None
        return lambda path: send_file(path, destination, self.calling_ae)

    def _failed(self, delivery: Delivery, reason: str, *, retryable: bool) -> None:
        after = self.queue.delivery_failed(delivery.id, self.worker_id, reason, retryable=retryable)
        self.metrics.delivery_ended(delivery.destination, after.status.value)
        log.warning(
            "delivery %d (%s to %s) failed, attempt %d of %d: %s",
            delivery.id,
            delivery.kind,
            delivery.destination,
            after.attempts,
            after.max_attempts,
            reason,
        )
        fields = self._fields(delivery)
        fields["details"] |= {
            "attempt": after.attempts,
            "max_attempts": after.max_attempts,
            "dead": after.status.value == "dead",
            "next_attempt": after.not_before.isoformat(),
        }
        self._record(AuditEvent.RESULT_FAILED, Outcome.FAILURE, reason=reason, **fields)

    def _fields(self, delivery: Delivery) -> dict[str, Any]:
        job = self.queue.get(delivery.job_id)
        return {
            "job_id": delivery.job_id,
            "sop_instance_uid": delivery.sop_instance_uid,
            "study_instance_uid": None if job is None else job.study_instance_uid,
            "details": {
                "destination": delivery.destination,
                "kind": delivery.kind,
                "source_sop_instance_uid": None if job is None else job.sop_instance_uid,
            },
        }


class RetentionLoop(_Loop):
    """Runs the retention sweep when the node starts and every ``interval`` seconds after.

    Parameters
    ----------
    retention
        The sweep, with the node's retention settings.
    interval
        Seconds between sweeps.
    """

    def __init__(
        self,
        name: str,
        queue: JobQueue,
        audit: AuditLog,
        stop: threading.Event,
        *,
        retention: Retention,
        interval: float = SWEEP_SECONDS,
    ) -> None:
        super().__init__(name, queue, audit, stop)
        self.retention = retention
        self.interval = interval
        self._due = time.monotonic()

    def step(self) -> bool:
        now = time.monotonic()
        if now < self._due:
            return False
        # Set first: a sweep that fails waits for the next turn rather than spinning.
        self._due = now + self.interval
        self.retention.sweep()
        return False


@contextlib.contextmanager
def lease_renewed(renew: Callable[[], object], lease_seconds: float, what: str) -> Iterator[None]:
    """Call ``renew`` every third of ``lease_seconds`` in a background thread while the
    block runs, until it raises :class:`JobStateError` (the lease was lost)."""
    done = threading.Event()

    def keep() -> None:
        while not done.wait(lease_seconds / 3):
            try:
                renew()
            except JobStateError as exc:
                log.warning("%s: lease lost: %s", what, exc)
                return
            except Exception:
                log.exception("%s: heartbeat failed", what)

    keeper = threading.Thread(target=keep, name=f"lease-{what.replace(' ', '-')}", daemon=True)
    keeper.start()
    try:
        yield
    finally:
        done.set()
        keeper.join()


def reclaim_orphans(queue: JobQueue, audit: AuditLog, actor: str) -> int:
    """Take back the leases of dead processes on this host (see
    :meth:`JobQueue.reclaim_orphans`), one ``job_released`` audit entry each; returns how
    many. Never raises: a failure is logged and the leases expire as before."""
    try:
        reclaimed = queue.reclaim_orphans()
    except Exception:
        log.exception("could not reclaim the leases of dead processes")
        return 0
    for job in reclaimed.dead:
        try:
            audit.record(
                AuditEvent.JOB_DEAD,
                Outcome.FAILURE,
                actor=actor,
                job_id=job.id,
                sop_instance_uid=job.sop_instance_uid,
                study_instance_uid=job.study_instance_uid,
                reason=job.last_error,
                details={"interruptions": job.interruptions},
            )
        except Exception:
            log.exception("audit entry job_dead could not be written")
    for item in (*reclaimed.jobs, *reclaimed.deliveries):
        delivery = isinstance(item, Delivery)
        owner = f"{item.lease_host} pid {item.lease_pid}"
        try:
            audit.record(
                AuditEvent.JOB_RELEASED,
                Outcome.WARNING,
                actor=actor,
                job_id=item.job_id if isinstance(item, Delivery) else item.id,
                sop_instance_uid=item.sop_instance_uid,
                reason=f"lease owner {item.lease_owner} ({owner}) is dead; "
                f"{'delivery' if delivery else 'job'} due again at once",
                details={
                    "reclaimed": "delivery" if delivery else "job",
                    "delivery_id": item.id if delivery else None,
                    "lease_owner": item.lease_owner,
                    "lease_host": item.lease_host,
                    "lease_pid": item.lease_pid,
                    "attempt": item.attempts,
                    "interruptions": item.interruptions + 1 if isinstance(item, Job) else None,
                },
            )
        except Exception:
            log.exception("audit entry job_released could not be written")
    return len(reclaimed.jobs) + len(reclaimed.deliveries)


def _screen_of(path: Path | None) -> PatientScreen:
    return PatientScreen() if path is None else PatientScreen.of(path)


def _delivery_screen(delivery: Delivery) -> PatientScreen:
    path = delivery.path
    if delivery.kind == NOTIFY_KIND and path is not None:
        return PatientScreen(loader=lambda: screened_values(path))
    return _screen_of(path)


def _job_fields(job: Job) -> dict[str, Any]:
    return {
        "job_id": job.id,
        "sop_instance_uid": job.sop_instance_uid,
        "study_instance_uid": job.study_instance_uid,
    }
