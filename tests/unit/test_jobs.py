"""The durable queue on a SQLite file: idempotent enqueue, leases, retries, deliveries.

A fake clock and a fixed random source make every backoff exact.
"""

from __future__ import annotations

import dataclasses
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from pacsnode.db import create_schema, make_engine, make_sessionmaker
from pacsnode.errors import JobStateError
from pacsnode.jobs import (
    DeliveryStatus,
    Enqueued,
    JobQueue,
    JobStatus,
    RetryPolicy,
)
from tests.together import run_together

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self, start: datetime = START) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


class FixedRandom:
    """Always draws the same fraction of the backoff ceiling."""

    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queue.db'}"


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url)
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


def enqueue(queue: JobQueue, n: int, spool: str = "/spool") -> Enqueued:
    return queue.enqueue(
        sop_instance_uid=f"1.2.826.0.1.{n}",
        study_instance_uid="1.2.826.0.1",
        series_instance_uid="1.2.826.0.1.0",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        calling_ae="MODALITY1",
        spool_path=Path(spool) / f"{n}.dcm",
    )


# --- the database set-up ---------------------------------------------------------------


def test_sqlite_connections_are_set_up_for_a_durable_queue(engine: Engine) -> None:
    with engine.connect() as connection:
        pragma = connection.exec_driver_sql
        assert pragma("PRAGMA journal_mode").scalar() == "wal"
        assert pragma("PRAGMA synchronous").scalar() == 2  # FULL
        assert pragma("PRAGMA foreign_keys").scalar() == 1
        assert pragma("PRAGMA busy_timeout").scalar() == 30_000


def test_connections_opening_a_new_database_together_all_get_wal(tmp_path: Path) -> None:
    # Switching a new file to WAL is not covered by the busy timeout: SQLite fails one of
    # two connections at once rather than let them deadlock. Before make_engine retried
    # the switch, about one round in ten failed here on a loaded machine.
    for round_ in range(24):
        url = f"sqlite:///{tmp_path / f'new{round_}.db'}"

        def open_one(url: str = url) -> None:
            own = make_engine(url)
            try:
                with own.connect() as connection:
                    mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar()
                    assert mode == "wal"
            finally:
                own.dispose()

        assert run_together(open_one, 6) == [], f"round {round_}"


def test_plain_sqlite_engines_are_refused(url: str) -> None:
    plain = create_engine(url)
    try:
        with pytest.raises(ValueError, match="make_engine"):
            JobQueue(plain)
    finally:
        plain.dispose()


def test_a_sessionmaker_is_accepted(engine: Engine, clock: FakeClock) -> None:
    queue = JobQueue(make_sessionmaker(engine), clock=clock)
    assert enqueue(queue, 1).job.id == 1


def test_naive_times_are_refused(engine: Engine) -> None:
    queue = JobQueue(engine, clock=lambda: datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        enqueue(queue, 1)


def test_times_are_stored_and_returned_in_utc(engine: Engine) -> None:
    paris = timezone(timedelta(hours=2))
    queue = JobQueue(engine, clock=lambda: datetime(2025, 6, 1, 10, 0, tzinfo=paris))
    job = enqueue(queue, 1).job
    assert job.created_at == datetime(2025, 6, 1, 8, 0, tzinfo=UTC)
    stored = queue.get(job.id)
    assert stored is not None and stored.created_at.tzinfo is UTC
    assert stored.created_at == job.created_at


# --- enqueue -------------------------------------------------------------------------------


def test_enqueue_is_idempotent_on_the_sop_instance_uid(queue: JobQueue, clock: FakeClock) -> None:
    first = enqueue(queue, 1)
    assert not first.existed and not first.requeued
    job = first.job
    assert job.status is JobStatus.QUEUED and job.attempts == 0 and job.max_attempts == 4
    assert job.not_before == job.created_at == job.updated_at == START
    assert job.spool_path == Path("/spool/1.dcm") and job.calling_ae == "MODALITY1"

    clock.advance(5)
    again = enqueue(queue, 1, spool="/elsewhere")
    assert again.existed and not again.requeued
    assert again.job == job
    assert queue.counts_by_status()[JobStatus.QUEUED] == 1


def test_snapshots_are_immutable(queue: JobQueue) -> None:
    job = enqueue(queue, 1).job
    with pytest.raises(dataclasses.FrozenInstanceError):
        job.status = JobStatus.DEAD  # type: ignore[misc]


def test_a_resent_dead_job_gets_a_fresh_round(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    queue.fail(job.id, "w1", "not a film", retryable=False)
    clock.advance(100)
    again = enqueue(queue, 1, spool="/new")
    assert again.existed and again.requeued
    assert again.job.status is JobStatus.QUEUED
    assert again.job.attempts == 0
    assert again.job.spool_path == Path("/new/1.dcm")
    assert again.job.not_before == clock.now
    assert again.job.last_error == "not a film"


def test_a_resent_failed_job_is_due_now_but_keeps_its_attempts(
    queue: JobQueue, clock: FakeClock
) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    failed = queue.fail(job.id, "w1", "timeout")
    assert failed.not_before > clock.now
    again = enqueue(queue, 1, spool="/new")
    assert again.requeued
    assert again.job.status is JobStatus.QUEUED
    assert again.job.attempts == 1
    assert again.job.not_before == clock.now
    assert queue.claim("w2", 60) is not None


@pytest.mark.parametrize("final", ["running", "succeeded", "cancelled"])
def test_a_resent_instance_leaves_other_jobs_alone(queue: JobQueue, final: str) -> None:
    job = enqueue(queue, 1).job
    if final != "cancelled":
        queue.claim("w1", 60)
    if final == "succeeded":
        queue.succeed(job.id, "w1")
    if final == "cancelled":
        queue.cancel(job.id)
    before = queue.get(job.id)
    again = enqueue(queue, 1, spool="/new")
    assert again.existed and not again.requeued
    assert again.job == before


# --- claims and leases ---------------------------------------------------------------------


def test_claims_take_the_oldest_due_job_first(queue: JobQueue, clock: FakeClock) -> None:
    ids = []
    for n in (3, 1, 2):
        ids.append(enqueue(queue, n).job.id)
        clock.advance(1)
    claimed = [queue.claim(f"w{i}", 60) for i in range(4)]
    assert [job.id if job else None for job in claimed] == [*ids, None]
    first = claimed[0]
    assert first is not None
    assert first.status is JobStatus.RUNNING
    assert first.attempts == 1
    assert first.lease_owner == "w0"
    assert first.lease_expires == clock.now + timedelta(seconds=60)


def test_claim_rejects_a_non_positive_lease(queue: JobQueue) -> None:
    with pytest.raises(ValueError, match="positive"):
        queue.claim("w1", 0)


def test_concurrent_workers_never_claim_the_same_job(url: str, engine: Engine) -> None:
    workers, jobs = 8, 20
    setup = JobQueue(engine)
    for n in range(workers * jobs):
        enqueue(setup, n)

    claimed: dict[str, list[int]] = {f"w{i}": [] for i in range(workers)}
    errors: list[BaseException] = []
    start = threading.Barrier(workers)

    def work(worker_id: str) -> None:
        # Its own engine, hence its own connections and sessions, like another process.
        own = make_engine(url)
        try:
            queue = JobQueue(own)
            start.wait()
            while (job := queue.claim(worker_id, 300)) is not None:
                claimed[worker_id].append(job.id)
                queue.succeed(job.id, worker_id)
        except BaseException as error:
            errors.append(error)
        finally:
            own.dispose()

    threads = [threading.Thread(target=work, args=(worker,)) for worker in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    every = [job_id for ids in claimed.values() for job_id in ids]
    assert len(every) == len(set(every)) == workers * jobs
    assert sum(1 for ids in claimed.values() if ids) > 1  # they really competed
    counts = setup.counts_by_status()
    assert counts[JobStatus.SUCCEEDED] == workers * jobs
    assert sum(counts.values()) == workers * jobs


def test_an_expired_lease_lets_another_worker_reclaim(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    clock.advance(59)
    assert queue.claim("w2", 60) is None
    clock.advance(1)
    reclaimed = queue.claim("w2", 60)
    assert reclaimed is not None and reclaimed.id == job.id
    assert reclaimed.lease_owner == "w2" and reclaimed.attempts == 2
    # The first worker has lost the job; whatever it reports is refused.
    for report in (
        lambda: queue.succeed(job.id, "w1"),
        lambda: queue.fail(job.id, "w1", "late"),
        lambda: queue.heartbeat(job.id, "w1", 60),
        lambda: queue.release(job.id, "w1"),
    ):
        with pytest.raises(JobStateError, match="leased to w2"):
            report()
    assert queue.succeed(job.id, "w2").status is JobStatus.SUCCEEDED


def test_heartbeat_keeps_the_lease(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    clock.advance(50)
    renewed = queue.heartbeat(job.id, "w1", 60)
    assert renewed.lease_expires == clock.now + timedelta(seconds=60)
    clock.advance(50)
    assert queue.claim("w2", 60) is None


def test_reports_on_unknown_jobs_are_refused(queue: JobQueue) -> None:
    with pytest.raises(JobStateError, match="does not exist"):
        queue.succeed(42, "w1")


def test_a_worker_dying_on_its_last_attempt_is_reaped(engine: Engine, clock: FakeClock) -> None:
    queue = JobQueue(engine, job_policy=RetryPolicy(max_attempts=1), clock=clock)
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    clock.advance(61)
    assert queue.claim("w2", 60) is None  # no attempt left to give
    reaped = queue.reap_expired()
    assert [dead.id for dead in reaped.jobs] == [job.id]
    dead = reaped.jobs[0]
    assert dead.status is JobStatus.DEAD and dead.lease_owner is None
    assert dead.last_error is not None and "w1" in dead.last_error
    assert queue.reap_expired() == ((), ())


# --- failure, backoff, dead letters --------------------------------------------------------


def test_failures_back_off_then_go_dead(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    # base 10 s, cap 25 s, the drawn fraction always 0.5: delays 5, 10, 12.5 s.
    delays = []
    for attempt in (1, 2, 3):
        claimed = queue.claim("w1", 60)
        assert claimed is not None and claimed.attempts == attempt
        failed = queue.fail(job.id, "w1", f"error {attempt}")
        assert failed.status is JobStatus.FAILED
        assert failed.lease_owner is None and failed.last_error == f"error {attempt}"
        delay = (failed.not_before - clock.now).total_seconds()
        delays.append(delay)
        clock.advance(delay - 0.5)
        assert queue.claim("w1", 60) is None  # still backing off
        clock.advance(0.5)
    assert delays == [5.0, 10.0, 12.5]

    assert queue.claim("w1", 60) is not None
    dead = queue.fail(job.id, "w1", "error 4")
    assert dead.status is JobStatus.DEAD and dead.attempts == 4
    clock.advance(3600)
    assert queue.claim("w1", 60) is None


def test_a_permanent_failure_goes_dead_at_once(queue: JobQueue) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    dead = queue.fail(job.id, "w1", "x" * 10_000, retryable=False)
    assert dead.status is JobStatus.DEAD and dead.attempts == 1
    assert dead.last_error is not None and len(dead.last_error) == 4000


def test_release_does_not_count_an_attempt(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    released = queue.release(job.id, "w1")
    assert released.status is JobStatus.QUEUED
    assert released.attempts == 0 and released.lease_owner is None
    again = queue.claim("w2", 60)
    assert again is not None and again.id == job.id and again.attempts == 1


# --- retry policy --------------------------------------------------------------------------


def test_retry_policy_ceiling_doubles_up_to_the_cap() -> None:
    policy = RetryPolicy(max_attempts=10, base=2.0, cap=30.0)
    assert [policy.ceiling(n) for n in range(1, 7)] == [2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert policy.ceiling(10_000) == 30.0
    assert RetryPolicy(base=2.0, cap=30.0, jitter=False).next_delay(3, FixedRandom(0.0)) == 8.0
    with pytest.raises(ValueError):
        policy.ceiling(0)


def test_full_jitter_stays_below_the_ceiling_and_is_reproducible() -> None:
    policy = RetryPolicy(max_attempts=10, base=2.0, cap=30.0)
    draws = [policy.next_delay(n, random.Random(7)) for n in range(1, 9)]
    assert draws == [policy.next_delay(n, random.Random(7)) for n in range(1, 9)]
    assert all(0.0 <= d < policy.ceiling(n) for n, d in enumerate(draws, start=1))


@pytest.mark.parametrize(
    "arguments", [{"max_attempts": 0}, {"base": 0.0}, {"base": 10.0, "cap": 5.0}]
)
def test_retry_policy_rejects_nonsense(arguments: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**arguments)  # type: ignore[arg-type]


# --- administration ------------------------------------------------------------------------


def test_retry_requeues_with_fresh_attempts(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    queue.fail(job.id, "w1", "bad", retryable=False)
    clock.advance(10)
    retried = queue.retry(job.id)
    assert retried.status is JobStatus.QUEUED and retried.attempts == 0
    assert retried.not_before == clock.now
    with pytest.raises(JobStateError, match="only DEAD, FAILED, CANCELLED"):
        queue.retry(job.id)
    with pytest.raises(JobStateError, match="does not exist"):
        queue.retry(999)


def test_cancel(queue: JobQueue) -> None:
    waiting = enqueue(queue, 1).job
    running = enqueue(queue, 2).job
    assert queue.claim("w1", 60) == queue.get(waiting.id)
    assert queue.claim("w1", 60) == queue.get(running.id)
    queue.release(waiting.id, "w1")

    cancelled = queue.cancel(waiting.id)
    assert cancelled.status is JobStatus.CANCELLED
    with pytest.raises(JobStateError, match="RUNNING"):
        queue.cancel(running.id)
    queue.succeed(running.id, "w1")
    assert queue.claim("w1", 60) is None  # a cancelled job is never claimed
    assert queue.retry(waiting.id).status is JobStatus.QUEUED


def test_purge(queue: JobQueue, clock: FakeClock) -> None:
    old_done, old_dead, old_running, undelivered = (enqueue(queue, n).job for n in range(4))
    for _ in range(4):
        queue.claim("w1", 3600)
    queue.succeed(old_done.id, "w1")
    queue.fail(old_dead.id, "w1", "bad", retryable=False)
    queue.succeed(undelivered.id, "w1")
    sent = queue.add_delivery(
        old_done.id, destination="pacs", kind="SEG", sop_instance_uid="2.25.2", path="/s"
    )
    queue.claim_delivery("s1", 30)
    queue.delivery_sent(sent.id, "s1")
    queue.add_delivery(
        undelivered.id, destination="pacs", kind="SR", sop_instance_uid="2.25.1", path="/r"
    )
    clock.advance(10)
    recent = enqueue(queue, 9).job
    queue.cancel(recent.id)

    with pytest.raises(ValueError, match="RUNNING"):
        queue.purge([JobStatus.RUNNING, JobStatus.DEAD], clock.now)
    with pytest.raises(ValueError, match="timezone-aware"):
        queue.purge([JobStatus.DEAD], datetime(2030, 1, 1))
    assert queue.purge([], clock.now) == ((), ())
    with pytest.raises(ValueError, match="QUEUED, RUNNING"):  # not ended: never purged
        queue.purge([JobStatus.QUEUED, JobStatus.RUNNING], clock.now)

    every_final = [JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED]
    purged = queue.purge(every_final, clock.now - timedelta(seconds=5))
    assert sorted(job.id for job in purged.jobs) == [old_done.id, old_dead.id]
    assert [d.id for d in purged.deliveries] == [sent.id]
    assert queue.get(old_done.id) is None and queue.get(old_dead.id) is None
    assert queue.get_delivery(sent.id) is None  # its deliveries went with it
    assert queue.get(undelivered.id) is not None  # a result still to send keeps it
    assert queue.get(recent.id) is not None  # too recent
    assert queue.get(old_running.id) is not None


def test_listing_and_counting(queue: JobQueue, clock: FakeClock) -> None:
    assert queue.oldest_waiting() is None
    jobs = []
    for n in range(5):
        jobs.append(enqueue(queue, n).job)
        clock.advance(1)
    queue.claim("w1", 60)  # takes jobs[0]
    queue.claim("w1", 60)  # takes jobs[1]
    queue.fail(jobs[1].id, "w1", "bad", retryable=False)

    assert [job.id for job in queue.list()] == [j.id for j in reversed(jobs)]
    assert [job.id for job in queue.list(JobStatus.QUEUED, limit=2)] == [jobs[4].id, jobs[3].id]
    assert queue.list(JobStatus.DEAD) == (queue.get(jobs[1].id),)
    assert queue.find(jobs[2].sop_instance_uid) == jobs[2]
    assert queue.find("9.9.9") is None and queue.get(999) is None
    assert queue.counts_by_status() == {
        JobStatus.QUEUED: 3,
        JobStatus.RUNNING: 1,
        JobStatus.SUCCEEDED: 0,
        JobStatus.FAILED: 0,
        JobStatus.DEAD: 1,
        JobStatus.CANCELLED: 0,
        JobStatus.IGNORED: 0,
    }
    assert queue.oldest_waiting() == jobs[2]


# --- deliveries ----------------------------------------------------------------------------


def add_result(queue: JobQueue, job_id: int, uid: str = "2.25.100") -> int:
    return queue.add_delivery(
        job_id, destination="pacs", kind="SEG", sop_instance_uid=uid, path=f"/out/{uid}.dcm"
    ).id


def test_add_delivery_is_idempotent(queue: JobQueue) -> None:
    job = enqueue(queue, 1).job
    first = queue.add_delivery(
        job.id, destination="pacs", kind="SEG", sop_instance_uid="2.25.1", path="/a"
    )
    again = queue.add_delivery(
        job.id, destination="pacs", kind="SEG", sop_instance_uid="2.25.1", path="/b"
    )
    other = queue.add_delivery(
        job.id, destination="archive", kind="SEG", sop_instance_uid="2.25.1", path="/a"
    )
    assert again == first and other.id != first.id
    assert first.status is DeliveryStatus.PENDING and first.path == Path("/a")
    assert queue.list_deliveries(job_id=job.id) == (other, first)
    with pytest.raises(JobStateError, match="does not exist"):
        add_result(queue, 999)


def test_deliveries_retry_on_their_own_schedule(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    delivery_id = add_result(queue, job.id)
    queue.succeed(job.id, "w1")

    # The PACS is down: three attempts, 30 s then 60 s apart (base 60, fraction 0.5).
    for attempt, delay in ((1, 30.0), (2, 60.0)):
        claimed = queue.claim_delivery("s1", 30)
        assert claimed is not None and claimed.id == delivery_id
        assert claimed.attempts == attempt
        assert queue.claim_delivery("s2", 30) is None  # leased to s1
        failed = queue.delivery_failed(delivery_id, "s1", "association rejected")
        assert failed.status is DeliveryStatus.FAILED
        assert failed.not_before == clock.now + timedelta(seconds=delay)
        assert queue.claim_delivery("s1", 30) is None
        clock.advance(delay)

    assert queue.claim_delivery("s1", 30) is not None
    dead = queue.delivery_failed(delivery_id, "s1", "association rejected")
    assert dead.status is DeliveryStatus.DEAD
    # The analysis was never touched: one attempt, still succeeded, nothing to claim.
    settled = queue.get(job.id)
    assert settled is not None
    assert settled.status is JobStatus.SUCCEEDED and settled.attempts == 1
    assert queue.claim("w1", 60) is None

    clock.advance(10)
    retried = queue.retry_delivery(delivery_id)
    assert retried.status is DeliveryStatus.PENDING and retried.attempts == 0
    claimed = queue.claim_delivery("s2", 30)
    assert claimed is not None
    sent = queue.delivery_sent(delivery_id, "s2")
    assert sent.status is DeliveryStatus.SENT and sent.lease_owner is None
    assert queue.claim_delivery("s1", 30) is None
    with pytest.raises(JobStateError, match="cannot be retried"):
        queue.retry_delivery(delivery_id)


def test_delivery_leases(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    delivery_id = add_result(queue, job.id)
    queue.claim_delivery("s1", 30)
    with pytest.raises(JobStateError, match="cannot be retried"):
        queue.retry_delivery(delivery_id)
    with pytest.raises(JobStateError, match="leased to s1"):
        queue.delivery_sent(delivery_id, "s2")

    released = queue.release_delivery(delivery_id, "s1")
    assert released.attempts == 0 and released.lease_owner is None
    queue.claim_delivery("s1", 30)
    clock.advance(30)
    taken_over = queue.claim_delivery("s2", 30)
    assert taken_over is not None and taken_over.lease_owner == "s2"
    assert taken_over.attempts == 2
    with pytest.raises(JobStateError):
        queue.delivery_failed(delivery_id, "s1", "late")

    queue.delivery_failed(delivery_id, "s2", "refused", retryable=False)
    assert queue.list_deliveries(DeliveryStatus.DEAD)[0].id == delivery_id


def test_a_sender_dying_on_its_last_attempt_is_reaped(engine: Engine, clock: FakeClock) -> None:
    queue = JobQueue(engine, delivery_policy=RetryPolicy(max_attempts=1), clock=clock)
    job = enqueue(queue, 1).job
    delivery_id = add_result(queue, job.id)
    queue.claim_delivery("s1", 30)
    clock.advance(31)
    assert queue.claim_delivery("s2", 30) is None
    reaped = queue.reap_expired()
    assert reaped.jobs == ()
    assert [d.id for d in reaped.deliveries] == [delivery_id]
    assert reaped.deliveries[0].status is DeliveryStatus.DEAD


def test_an_unselected_instance_is_kept_ignored_until_an_administrator_retries_it(
    queue: JobQueue,
) -> None:
    ignored = queue.enqueue(
        sop_instance_uid="1.2.826.0.1.77",
        study_instance_uid="1.2.826.0.1",
        series_instance_uid="1.2.826.0.1.0",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        calling_ae="MODALITY1",
        spool_path="/spool/77.dcm",
        analyse=False,
    ).job
    assert ignored.status is JobStatus.IGNORED
    assert queue.claim("w1", 60) is None  # never analysed on its own
    again = enqueue(queue, 77)
    assert again.existed and not again.requeued and again.job.status is JobStatus.IGNORED
    assert queue.retry(ignored.id).status is JobStatus.QUEUED
    claimed = queue.claim("w1", 60)
    assert claimed is not None and claimed.id == ignored.id
