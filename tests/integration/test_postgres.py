"""The queue, the audit log and the node on a real PostgreSQL server (tests/integration/
conftest.py starts one; these tests skip where PostgreSQL is not installed).

The unit tests run the same behaviours on SQLite; here row locks, SKIP LOCKED, unique
violations between concurrent inserts, timestamptz and the audit triggers are real.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.uid import (
    ComprehensiveSRStorage,
    GrayscaleSoftcopyPresentationStateStorage,
    SegmentationStorage,
)
from sqlalchemy import Engine, delete, event, inspect, text, update
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import SQLAlchemyError

from pacsnode.audit import AuditEvent, AuditLog, AuditRecord, Outcome
from pacsnode.config import load_settings
from pacsnode.db import create_schema, make_engine
from pacsnode.errors import JobStateError
from pacsnode.jobs import DeliveryStatus, JobQueue, JobStatus, RetryPolicy
from pacsnode.node import Node
from pacsnode.training.phantom import make_phantom, write_phantom
from tests.integration.test_listener import free_port
from tests.integration.test_worker import FakePacs, _events, _send, wait_for
from tests.unit.test_jobs import START, FakeClock, FixedRandom, add_result, enqueue

# Fail instead of hanging if a claim that should skip a locked row waits for it.
NO_WAITING: dict[str, Any] = {"connect_args": {"options": "-c lock_timeout=10000"}}


@pytest.fixture
def url(fresh_postgres_url: str) -> str:
    return fresh_postgres_url


@pytest.fixture
def engine(url: str) -> Iterator[Engine]:
    engine = make_engine(url, **NO_WAITING)
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


def run_threads(count: int, work: Callable[[int], None]) -> None:
    """Run ``work(i)`` in ``count`` threads at once; re-raise the first error."""
    errors: list[BaseException] = []
    start = threading.Barrier(count)

    def run(index: int) -> None:
        try:
            start.wait()
            work(index)
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "a thread hung"
    if errors:
        raise errors[0]


# --- the schema ----------------------------------------------------------------------------


def test_the_schema_is_created_once_and_left_alone_after(url: str) -> None:
    engine = make_engine(url)
    try:
        create_schema(engine)
        create_schema(engine)  # every start-up runs it
        tables = inspect(engine)
        assert {"jobs", "deliveries", "audit_log"} <= set(tables.get_table_names())
        columns = {column["name"]: column["type"] for column in tables.get_columns("jobs")}
        assert getattr(columns["created_at"], "timezone", False)  # timestamptz
        with engine.connect() as connection:
            triggers = connection.execute(
                text(
                    "SELECT tgname FROM pg_trigger"
                    " WHERE tgrelid = 'audit_log'::regclass AND NOT tgisinternal"
                )
            ).scalars()
            assert sorted(triggers) == ["audit_log_append_only", "audit_log_no_truncate"]
    finally:
        engine.dispose()


def test_processes_starting_together_create_the_schema_once(url: str) -> None:
    # A receiver and its workers start at once on an empty database.
    def start_up(_index: int) -> None:
        own = make_engine(url)
        try:
            create_schema(own)
        finally:
            own.dispose()

    run_threads(4, start_up)
    engine = make_engine(url)
    try:
        assert {"jobs", "deliveries", "audit_log"} <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_times_come_back_utc_aware_whatever_the_session_time_zone(url: str) -> None:
    # The server hands timestamptz back in the session's TimeZone: make that not UTC.
    engine = make_engine(url, connect_args={"options": "-c TimeZone=Asia/Kolkata"})
    try:
        create_schema(engine)
        paris = timezone(timedelta(hours=2))
        moment = datetime(2025, 6, 1, 10, 0, 0, 123456, tzinfo=paris)
        queue = JobQueue(engine, clock=lambda: moment)
        job = enqueue(queue, 1).job
        assert job.created_at == datetime(2025, 6, 1, 8, 0, 0, 123456, tzinfo=UTC)
        stored = queue.get(job.id)
        assert stored is not None and stored.created_at == job.created_at
        assert stored.created_at.tzinfo is UTC and stored.not_before.tzinfo is UTC
        entry = AuditLog(engine, clock=lambda: moment).record(AuditEvent.NODE_STARTED, actor="test")
        (read,) = AuditLog(engine).query(since=moment - timedelta(microseconds=1))
        assert read.time == entry.time == moment and read.time.tzinfo is UTC
        assert AuditLog(engine).query(since=moment + timedelta(microseconds=1)) == ()
        with pytest.raises(ValueError, match="timezone-aware"):
            JobQueue(engine, clock=lambda: datetime(2025, 1, 1)).claim("w1", 60)
    finally:
        engine.dispose()


# --- enqueue -------------------------------------------------------------------------------


def test_enqueue_is_idempotent_on_the_sop_instance_uid(queue: JobQueue, clock: FakeClock) -> None:
    first = enqueue(queue, 1)
    assert not first.existed and not first.requeued
    assert first.job.status is JobStatus.QUEUED and first.job.created_at == START
    clock.advance(5)
    again = enqueue(queue, 1, spool="/elsewhere")
    assert again.existed and not again.requeued and again.job == first.job
    queue.claim("w1", 60)
    queue.fail(first.job.id, "w1", "not a film", retryable=False)
    resent = enqueue(queue, 1, spool="/new")
    assert resent.existed and resent.requeued
    assert resent.job.status is JobStatus.QUEUED and resent.job.attempts == 0
    assert resent.job.spool_path == Path("/new/1.dcm")
    assert queue.counts_by_status()[JobStatus.QUEUED] == 1


def test_an_insert_that_loses_the_race_finds_the_winners_job(
    engine: Engine, url: str, clock: FakeClock
) -> None:
    """The IntegrityError path of enqueue, made certain.

    Another transaction inserts the instance's row and holds it uncommitted, so the
    enqueue's SELECT ... FOR UPDATE finds nothing and its INSERT waits on the unique
    index. When the other commits, the INSERT fails and the retry must find that row.
    """
    queue = JobQueue(engine, clock=clock)
    done: list[Any] = []
    violations: list[str] = []

    @event.listens_for(engine, "handle_error")
    def seen(context: ExceptionContext) -> None:
        violations.append(type(context.original_exception).__name__)

    with engine.connect() as rival:
        rival.execute(
            text(
                "INSERT INTO jobs (sop_instance_uid, study_instance_uid, series_instance_uid,"
                " sop_class_uid, calling_ae, spool_path, status, attempts, max_attempts,"
                " not_before, created_at, updated_at) VALUES ('1.2.826.0.1.7', '1.2', '1.2.3',"
                " '1.2.840.10008.5.1.4.1.1.1.1', 'OTHER', '/other/7.dcm', 'queued', 0, 3,"
                " :now, :now, :now)"
            ),
            {"now": START},
        )
        racer = threading.Thread(target=lambda: done.append(enqueue(queue, 7)))
        racer.start()
        wait_for(lambda: _waiting_on_a_lock(engine), seconds=10)
        assert not done
        rival.commit()
    racer.join(30)
    assert violations == ["UniqueViolation"]  # the INSERT failed and was retried
    assert len(done) == 1
    result = done[0]
    assert result.existed and not result.requeued
    assert result.job.calling_ae == "OTHER" and result.job.spool_path == Path("/other/7.dcm")
    assert sum(queue.counts_by_status().values()) == 1


def _waiting_on_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        waiting = connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return waiting > 0


def test_concurrent_enqueues_of_one_instance_make_one_job(engine: Engine, url: str) -> None:
    racers = 8
    results: list[Any] = [None] * racers

    def work(index: int) -> None:
        own = make_engine(url, **NO_WAITING)
        try:
            results[index] = enqueue(JobQueue(own), 1, spool=f"/spool{index}")
        finally:
            own.dispose()

    run_threads(racers, work)
    assert sum(not result.existed for result in results) == 1
    assert len({result.job.id for result in results}) == 1
    counts = JobQueue(engine).counts_by_status()
    assert counts[JobStatus.QUEUED] == sum(counts.values()) == 1


# --- claims and leases ---------------------------------------------------------------------


def test_concurrent_workers_never_claim_the_same_job(engine: Engine, url: str) -> None:
    workers, jobs = 4, 30
    setup = JobQueue(engine)
    for n in range(workers * jobs):
        enqueue(setup, n)
    claimed: list[list[int]] = [[] for _ in range(workers)]

    def work(index: int) -> None:
        # Its own engine, hence its own connections, like another process.
        own = make_engine(url, **NO_WAITING)
        try:
            queue = JobQueue(own)
            while (job := queue.claim(f"w{index}", 300)) is not None:
                claimed[index].append(job.id)
                queue.succeed(job.id, f"w{index}")
        finally:
            own.dispose()

    run_threads(workers, work)
    every = [job_id for ids in claimed for job_id in ids]
    assert len(every) == len(set(every)) == workers * jobs
    assert sum(1 for ids in claimed if ids) > 1  # they really competed
    counts = setup.counts_by_status()
    assert counts[JobStatus.SUCCEEDED] == sum(counts.values()) == workers * jobs


def test_a_claim_skips_a_row_another_transaction_holds(
    engine: Engine, queue: JobQueue, clock: FakeClock
) -> None:
    oldest = enqueue(queue, 1).job
    clock.advance(1)
    newer = enqueue(queue, 2).job
    with engine.connect() as holder:
        holder.execute(text("SELECT id FROM jobs WHERE id = :id FOR UPDATE"), {"id": oldest.id})
        began = time.monotonic()
        claimed = queue.claim("w1", 60)  # would hit lock_timeout if it waited
        assert time.monotonic() - began < 5
        assert claimed is not None and claimed.id == newer.id
        holder.rollback()
    again = queue.claim("w2", 60)
    assert again is not None and again.id == oldest.id


def test_an_expired_lease_is_reclaimed_then_reaped(engine: Engine, clock: FakeClock) -> None:
    queue = JobQueue(engine, job_policy=RetryPolicy(max_attempts=2), clock=clock)
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    clock.advance(59)
    assert queue.claim("w2", 60) is None
    queue.heartbeat(job.id, "w1", 60)
    clock.advance(59)
    assert queue.claim("w2", 60) is None
    clock.advance(1)
    reclaimed = queue.claim("w2", 60)
    assert reclaimed is not None and reclaimed.id == job.id
    assert reclaimed.lease_owner == "w2" and reclaimed.attempts == 2
    with pytest.raises(JobStateError, match="leased to w2"):
        queue.succeed(job.id, "w1")
    assert queue.reap_expired() == ((), ())  # w2's lease still runs
    clock.advance(61)
    assert queue.claim("w3", 60) is None  # no attempt left to give
    reaped = queue.reap_expired()
    assert [dead.id for dead in reaped.jobs] == [job.id]
    assert reaped.jobs[0].status is JobStatus.DEAD and reaped.jobs[0].lease_owner is None
    assert "w2" in (reaped.jobs[0].last_error or "")
    assert queue.reap_expired() == ((), ())


def test_failures_back_off_then_go_dead(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    delays = []
    for attempt in (1, 2, 3):
        claimed = queue.claim("w1", 60)
        assert claimed is not None and claimed.attempts == attempt
        failed = queue.fail(job.id, "w1", f"error {attempt}")
        assert failed.status is JobStatus.FAILED
        delay = (failed.not_before - clock.now).total_seconds()
        delays.append(delay)
        clock.advance(delay - 0.5)
        assert queue.claim("w1", 60) is None  # still backing off
        clock.advance(0.5)
    assert delays == [5.0, 10.0, 12.5]
    assert queue.claim("w1", 60) is not None
    assert queue.fail(job.id, "w1", "error 4").status is JobStatus.DEAD


# --- deliveries and purge ------------------------------------------------------------------


def test_deliveries_are_claimed_sent_failed_and_reaped(queue: JobQueue, clock: FakeClock) -> None:
    job = enqueue(queue, 1).job
    queue.claim("w1", 60)
    delivery_id = add_result(queue, job.id)
    assert add_result(queue, job.id) == delivery_id  # idempotent
    other_id = add_result(queue, job.id, uid="2.25.200")
    queue.succeed(job.id, "w1")

    claimed = queue.claim_delivery("s1", 30)
    assert claimed is not None and claimed.id == delivery_id and claimed.attempts == 1
    second = queue.claim_delivery("s2", 30)
    assert second is not None and second.id == other_id
    assert queue.claim_delivery("s3", 30) is None  # both leased
    failed = queue.delivery_failed(delivery_id, "s1", "association rejected")
    assert failed.status is DeliveryStatus.FAILED
    assert failed.not_before == clock.now + timedelta(seconds=30)
    assert queue.delivery_sent(other_id, "s2").status is DeliveryStatus.SENT
    with pytest.raises(JobStateError, match="not held by s2"):
        queue.delivery_sent(delivery_id, "s2")

    clock.advance(30)
    retaken = queue.claim_delivery("s2", 30)
    assert retaken is not None and retaken.id == delivery_id and retaken.attempts == 2
    clock.advance(31)  # s2 dies holding it
    third = queue.claim_delivery("s3", 30)
    assert third is not None and third.attempts == 3  # the last one
    clock.advance(31)  # and so does s3
    assert queue.claim_delivery("s1", 30) is None
    reaped = queue.reap_expired()
    assert reaped.jobs == () and [d.id for d in reaped.deliveries] == [delivery_id]
    assert reaped.deliveries[0].status is DeliveryStatus.DEAD

    retried = queue.retry_delivery(delivery_id)
    assert retried.status is DeliveryStatus.PENDING and retried.attempts == 0
    assert queue.claim_delivery("s1", 30) is not None
    assert queue.delivery_sent(delivery_id, "s1").status is DeliveryStatus.SENT
    assert {d.status for d in queue.list_deliveries(job_id=job.id)} == {DeliveryStatus.SENT}
    settled = queue.get(job.id)
    assert settled is not None and settled.status is JobStatus.SUCCEEDED


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

    every_final = [JobStatus.SUCCEEDED, JobStatus.DEAD, JobStatus.CANCELLED]
    purged = queue.purge(every_final, clock.now - timedelta(seconds=5))
    assert sorted(job.id for job in purged.jobs) == [old_done.id, old_dead.id]
    assert queue.get(old_done.id) is None and queue.get(old_dead.id) is None
    assert queue.get_delivery(sent.id) is None  # ON DELETE CASCADE
    assert queue.get(undelivered.id) is not None  # a result still to send keeps it
    assert queue.get(recent.id) is not None  # too recent
    assert queue.get(old_running.id) is not None


def test_retention_finds_and_forgets_files(queue: JobQueue, clock: FakeClock) -> None:
    done, waiting = enqueue(queue, 1).job, enqueue(queue, 2).job
    queue.claim("w1", 3600)
    queue.succeed(done.id, "w1")
    for destination in ("pacs", "archive"):
        queue.add_delivery(
            done.id, destination=destination, kind="SEG", sop_instance_uid="2.25.1", path="/s"
        )
        claimed = queue.claim_delivery("s1", 30)
        assert claimed is not None
        queue.delivery_sent(claimed.id, "s1")
    clock.advance(10)
    cutoff = clock.now - timedelta(seconds=5)
    assert [job.id for job in queue.films_to_delete(cutoff)] == [done.id]  # not the queued
    assert [str(path) for path in queue.results_to_delete(cutoff)] == ["/s"]
    removed: list[str] = []

    def remove(path: object) -> bool:
        removed.append(str(path))
        return True

    assert queue.delete_film(done.id, cutoff, remove) is not None
    assert len(queue.delete_result("/s", cutoff, remove)) == 2
    assert queue.delete_film(waiting.id, cutoff, remove) is None  # never a live job's film
    assert removed == [str(done.spool_path), "/s"]
    assert queue.films_to_delete(cutoff) == () and queue.results_to_delete(cutoff) == ()
    assert queue.get(done.id).spool_path is None  # type: ignore[union-attr]


# --- the audit log -------------------------------------------------------------------------


@pytest.fixture
def audit(engine: Engine, clock: FakeClock) -> AuditLog:
    log = AuditLog(engine, clock=clock)
    log.record(AuditEvent.NODE_STARTED, actor="os-user alice")
    clock.advance(1)
    log.record(
        AuditEvent.INSTANCE_RECEIVED,
        actor="AE MODALITY1 @ 10.0.0.5:4242",
        sop_instance_uid="1.2.3.1",
        study_instance_uid="1.2.3",
        job_id=1,
        details={"bytes": 1_048_576, "nested": {"frames": [1, 2]}},
    )
    clock.advance(1)
    log.record(
        AuditEvent.JOB_FAILED,
        Outcome.WARNING,
        actor="worker w1",
        sop_instance_uid="1.2.3.1",
        study_instance_uid="1.2.3",
        job_id=1,
        reason="timeout",
    )
    return log


def test_audit_entries_come_back_filtered(audit: AuditLog) -> None:
    events = [entry.event for entry in audit.query()]
    assert events == [AuditEvent.JOB_FAILED, AuditEvent.INSTANCE_RECEIVED, AuditEvent.NODE_STARTED]
    (received,) = audit.query(event=AuditEvent.INSTANCE_RECEIVED)
    assert received.details == {"bytes": 1_048_576, "nested": {"frames": [1, 2]}}
    assert received.time == START + timedelta(seconds=1) and received.time.tzinfo is UTC
    assert [e.event for e in audit.query(since=START + timedelta(seconds=1))] == events[:2]
    assert len(audit.query(uid="1.2.3")) == len(audit.query(uid="1.2.3.1")) == 2
    assert [e.reason for e in audit.query(job_id=1, event=AuditEvent.JOB_FAILED)] == ["timeout"]
    assert audit.query(uid="9.9") == () and len(audit.query(limit=1)) == 1


@pytest.mark.parametrize(
    "statement",
    [
        text("UPDATE audit_log SET actor = 'someone else'"),
        update(AuditRecord).values(reason="rewritten"),
        text("DELETE FROM audit_log"),
        delete(AuditRecord).where(AuditRecord.id == 1),
        text("TRUNCATE audit_log"),
    ],
    ids=["raw-update", "orm-update", "raw-delete", "orm-delete", "truncate"],
)
def test_the_database_refuses_changes_to_the_audit_log(
    audit: AuditLog, engine: Engine, statement: object
) -> None:
    before = audit.query()
    with pytest.raises(SQLAlchemyError, match="append-only") as refused, engine.begin() as db:
        db.execute(statement)  # type: ignore[call-overload]
    assert getattr(refused.value.orig, "sqlstate", None) == "42501"  # insufficient_privilege
    assert audit.query() == before
    create_schema(engine)  # a restart neither fails nor unguards the table
    with pytest.raises(SQLAlchemyError, match="append-only"), engine.begin() as db:
        db.execute(statement)  # type: ignore[call-overload]


# --- the node ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("films")
    return write_phantom(make_phantom(424_243, 0, "lumbar"), out, preview=False)["dicom"]


def test_the_node_runs_on_postgresql(
    tmp_path: Path, film: Path, url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The node keeps its engine for its lifetime; collect it to close its connections.
    engines: list[Engine] = []

    def recording_make_engine(*args: Any, **kwargs: Any) -> Engine:
        engines.append(make_engine(*args, **kwargs))
        return engines[-1]

    monkeypatch.setattr("pacsnode.node.make_engine", recording_make_engine)
    pacs = FakePacs(free_port())
    pacs.start()
    settings = load_settings(
        None,
        {
            "PACSNODE_DATABASE__URL": url,
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_NODE__HOST": "127.0.0.1",
            "PACSNODE_NODE__PORT": str(free_port()),
            "PACSNODE_DESTINATIONS__0__NAME": "pacs",
            "PACSNODE_DESTINATIONS__0__AE_TITLE": "FAKEPACS",
            "PACSNODE_DESTINATIONS__0__HOST": "127.0.0.1",
            "PACSNODE_DESTINATIONS__0__PORT": str(pacs.port),
        },
    )
    assert settings.database.url == url
    node = Node(settings)
    try:
        node.start()
        assert _send(node, film) == 0
        wait_for(lambda: len(pacs.received) == 3)
        wait_for(lambda: _events(node).count(AuditEvent.RESULT_SENT) == 3)
    finally:
        node.stop()
        pacs.stop()
        for engine in engines:
            engine.dispose()

    kinds = sorted(str(ds.SOPClassUID) for ds in pacs.received)
    assert kinds == sorted(
        [SegmentationStorage, ComprehensiveSRStorage, GrayscaleSoftcopyPresentationStateStorage]
    )
    source = dcmread(film, stop_before_pixels=True)
    # Read back with a connection of our own: the rows are in PostgreSQL.
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            assert connection.dialect.name == "postgresql"
            job = connection.execute(
                text("SELECT status, attempts FROM jobs WHERE sop_instance_uid = :uid"),
                {"uid": str(source.SOPInstanceUID)},
            ).one()
            assert tuple(job) == ("succeeded", 1)
            sent = connection.execute(text("SELECT status FROM deliveries")).scalars().all()
            assert sent == ["sent", "sent", "sent"]
            events = connection.execute(text("SELECT event FROM audit_log ORDER BY id")).scalars()
            events = list(events)
    finally:
        engine.dispose()
    assert events[0] == AuditEvent.NODE_STARTED.value
    assert events[-1] == AuditEvent.NODE_STOPPED.value
    for expected in (AuditEvent.INSTANCE_RECEIVED, AuditEvent.JOB_CLAIMED):
        assert events.count(expected.value) == 1
    assert events.count(AuditEvent.RESULT_SENT.value) == 3
