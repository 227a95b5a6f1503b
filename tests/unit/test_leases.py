"""Lease owners and priority in the queue: a dead process's work is taken back at once,
a live or foreign one's is not; higher priority is claimed (and sent) first."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pacsnode.audit import AuditEvent, AuditLog
from pacsnode.db import create_schema, make_engine
from pacsnode.errors import JobStateError
from pacsnode.jobs import Enqueued, JobQueue, JobStatus, RetryPolicy
from pacsnode.jobs.owner import ProcessOwner, process_start
from pacsnode.jobs.queue import MAX_INTERRUPTIONS
from pacsnode.worker.loops import lease_renewed, reclaim_orphans
from tests.unit.test_jobs import FakeClock, FixedRandom, add_result, enqueue


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    create_schema(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def queue(engine: Engine, clock: FakeClock) -> JobQueue:
    return JobQueue(
        engine,
        job_policy=RetryPolicy(max_attempts=4, base=10.0, cap=25.0),
        delivery_policy=RetryPolicy(max_attempts=3, base=60.0, cap=600.0),
        clock=clock,
        rng=FixedRandom(0.5),
    )


def dead_process() -> tuple[int, str]:
    """The pid and start stamp of a process that has exited."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    start = process_start(child.pid)
    child.wait()
    assert start is not None
    return child.pid, start


def claimed_by(queue: JobQueue, owner: ProcessOwner, n: int = 1, lease: float = 30) -> int:
    """Job n, claimed in this process and then made to look leased to ``owner``."""
    job = enqueue(queue, n).job
    assert queue.claim("w", lease) is not None
    with queue._sessions.begin() as session:  # a test reaches in: no API forges owners
        from pacsnode.jobs.models import JobRecord

        record = session.get(JobRecord, job.id)
        assert record is not None
        record.lease_host, record.lease_pid = owner.host, owner.pid
        record.lease_process_start = owner.start
        record.lease_owner = f"{owner.host}:{owner.pid}:analysis-0"
    return job.id


# --- the owner -------------------------------------------------------------------------


def test_a_lease_records_host_pid_and_process_start(queue: JobQueue) -> None:
    enqueue(queue, 1)
    job = queue.claim("w", 30)
    me = ProcessOwner.current()
    assert job is not None and (job.lease_host, job.lease_pid) == (me.host, me.pid)
    assert job.lease_process_start == me.start and me.start is not None
    ended = queue.succeed(job.id, "w")
    assert (ended.lease_host, ended.lease_pid, ended.lease_process_start) == (None, None, None)


def test_the_owner_tells_dead_reused_and_foreign_processes_apart() -> None:
    me = ProcessOwner.current()
    pid, start = dead_process()
    assert me.is_dead(me.host, pid, start)  # gone
    assert not me.is_dead(me.host, me.pid, me.start)  # alive: this very process
    boot, namespace, ticks = me.start.split(":")  # type: ignore[union-attr]
    reused = f"{boot}:{namespace}:{int(ticks) - 1}"
    assert me.is_dead(me.host, me.pid, reused)  # the pid lives, but is another process
    assert me.is_dead(me.host, me.pid, f"another-boot:{namespace}:{ticks}")  # rebooted since
    assert not me.is_dead(me.host, pid, f"{boot}:other-namespace:{ticks}")  # a container
    assert not me.is_dead("elsewhere", pid, start)  # another host: wait for the lease
    assert not me.is_dead(me.host, None, None)  # a lease from before owners were kept


# --- reclaiming ------------------------------------------------------------------------


def test_a_dead_owners_job_is_due_at_once_and_audited(
    queue: JobQueue, engine: Engine, clock: FakeClock
) -> None:
    me = ProcessOwner.current()
    pid, start = dead_process()
    dead = dataclasses.replace(me, pid=pid, start=start)
    job_id = claimed_by(queue, dead)
    assert queue.claim("other", 30) is None  # leased for 30 s

    audit = AuditLog(engine, clock=clock)
    assert reclaim_orphans(queue, audit, "node:TEST") == 1
    entry = audit.query(event=AuditEvent.JOB_RELEASED)[0]
    assert entry.job_id == job_id and f"pid {pid}" in (entry.reason or "")
    assert entry.details is not None and entry.details["lease_pid"] == pid

    again = queue.claim("other", 30)  # at once, no clock moved
    assert again is not None and again.id == job_id
    assert (again.attempts, again.interruptions) == (1, 1)  # the killed one given back
    assert reclaim_orphans(queue, audit, "node:TEST") == 0  # its new owner is alive


def test_live_and_foreign_owners_keep_their_leases(queue: JobQueue) -> None:
    me = ProcessOwner.current()
    pid, start = dead_process()
    claimed_by(queue, me, 1)
    claimed_by(queue, dataclasses.replace(me, host="other-host", pid=pid, start=start), 2)
    assert queue.reclaim_orphans() == ((), (), ())
    assert queue.claim("w2", 30) is None


def test_a_film_whose_worker_keeps_dying_is_dead_lettered(queue: JobQueue) -> None:
    pid, start = dead_process()
    dead = dataclasses.replace(ProcessOwner.current(), pid=pid, start=start)
    job_id = claimed_by(queue, dead)
    for interruption in range(1, MAX_INTERRUPTIONS):
        reclaimed = queue.reclaim_orphans()
        assert [j.id for j in reclaimed.jobs] == [job_id] and not reclaimed.dead
        job = queue.claim("w", 30)
        assert job is not None and job.attempts == 1  # an interrupted attempt is given back
        assert job.interruptions == interruption
        claimed_by_again(queue, job_id, dead)
    reclaimed = queue.reclaim_orphans()
    assert reclaimed.jobs == () and [j.id for j in reclaimed.dead] == [job_id]
    after = queue.get(job_id)
    assert after is not None and after.status is JobStatus.DEAD
    assert f"died {MAX_INTERRUPTIONS} times" in (after.last_error or "")


def claimed_by_again(queue: JobQueue, job_id: int, owner: ProcessOwner) -> None:
    with queue._sessions.begin() as session:
        from pacsnode.jobs.models import JobRecord

        record = session.get(JobRecord, job_id)
        assert record is not None
        record.lease_pid, record.lease_process_start = owner.pid, owner.start


def test_a_dead_senders_delivery_is_due_at_once(queue: JobQueue) -> None:
    job = enqueue(queue, 1).job
    add_result(queue, job.id)
    delivery = queue.claim_delivery("sender", 30)
    assert delivery is not None and delivery.lease_pid == ProcessOwner.current().pid
    pid, start = dead_process()
    with queue._sessions.begin() as session:
        from pacsnode.jobs.models import DeliveryRecord

        record = session.get(DeliveryRecord, delivery.id)
        assert record is not None
        record.lease_pid, record.lease_process_start = pid, start
    assert queue.claim_delivery("sender2", 30) is None
    reclaimed = queue.reclaim_orphans()
    assert [d.id for d in reclaimed.deliveries] == [delivery.id]
    taken = queue.claim_delivery("sender2", 30)
    assert taken is not None and taken.id == delivery.id


def test_a_delivery_heartbeat_keeps_the_lease(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    add_result(queue, job.id)
    delivery = queue.claim_delivery("sender", 30)
    assert delivery is not None
    clock.advance(25)
    renewed = queue.heartbeat_delivery(delivery.id, "sender", 30)
    assert renewed.lease_expires == clock.now + timedelta(seconds=30)
    clock.advance(25)  # 50 s after the claim, 25 after the renewal
    assert queue.claim_delivery("other", 30) is None
    with pytest.raises(JobStateError):
        queue.heartbeat_delivery(delivery.id, "other", 30)
    queue.delivery_sent(delivery.id, "sender")
    with pytest.raises(JobStateError):
        queue.heartbeat_delivery(delivery.id, "sender", 30)


def test_lease_renewed_calls_until_the_block_ends() -> None:
    calls = threading.Event()
    count = []

    def renew() -> None:
        count.append(1)
        if len(count) >= 2:
            calls.set()

    with lease_renewed(renew, 0.03, "job 1"):
        assert calls.wait(5)
    settled = len(count)
    threading.Event().wait(0.05)
    assert len(count) == settled  # stopped with the block


# --- priority ----------------------------------------------------------------------------


def enqueue_with(queue: JobQueue, n: int, priority: int) -> Enqueued:
    return queue.enqueue(
        sop_instance_uid=f"1.2.826.0.1.{n}",
        study_instance_uid="1.2.826.0.1",
        series_instance_uid="1.2.826.0.1.0",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        calling_ae="ER_DX1" if priority else "MODALITY1",
        spool_path=Path("/spool") / f"{n}.dcm",
        priority=priority,
    )


def test_an_er_film_overtakes_a_backlog_of_20(queue: JobQueue, clock: FakeClock) -> None:
    for n in range(20):
        enqueue_with(queue, n, 0)
        clock.advance(1)
    er = enqueue_with(queue, 99, 100).job
    assert er.priority == 100
    order = []
    while (job := queue.claim("w", 30)) is not None:
        order.append(job.id)
        queue.succeed(job.id, "w")
    assert order[0] == er.id
    assert order[1:] == sorted(order[1:])  # the backlog stays oldest first


def test_results_of_a_higher_priority_job_are_sent_first(queue: JobQueue) -> None:
    low = enqueue_with(queue, 1, 0).job
    high = enqueue_with(queue, 2, 50).job
    add_result(queue, low.id, "2.25.1")
    add_result(queue, high.id, "2.25.2")
    first = queue.claim_delivery("sender", 30)
    assert first is not None and first.job_id == high.id and first.priority == 50


def test_a_stat_resend_raises_a_waiting_jobs_priority(queue: JobQueue) -> None:
    enqueue_with(queue, 1, 0)
    again = enqueue_with(queue, 1, 100)
    assert again.existed and again.job.priority == 100
    lower = enqueue_with(queue, 1, 0)
    assert lower.job.priority == 100  # never lowered by a routine re-send


def test_failed_jobs_keep_their_priority(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue_with(queue, 1, 100).job
    claimed = queue.claim("w", 30)
    assert claimed is not None
    failed = queue.fail(job.id, "w", "boom")
    assert failed.status is JobStatus.FAILED and failed.priority == 100
    clock.advance(60)
    again = queue.claim("w", 30)
    assert again is not None and again.priority == 100
