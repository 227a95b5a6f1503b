"""The admin commands: queue list/show/retry/cancel/purge, audit, status and echo.

Each test runs ``pacsnode`` in-process against its own SQLite file; the echo tests talk
to an in-process pynetdicom Verification SCP and to a closed port.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from pacsnode.audit import AuditEvent, AuditLog, Outcome
from pacsnode.cli.main import main
from pacsnode.db import create_schema, make_engine
from pacsnode.jobs import DeliveryStatus, JobQueue, JobStatus

START = datetime(2025, 3, 1, 8, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        self.now += timedelta(seconds=1)  # every change a second later: a stable order
        return self.now


class FixedRandom:
    def random(self) -> float:
        return 0.5


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PACSNODE_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr("getpass.getuser", lambda: "alice")


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    monkeypatch.setenv("PACSNODE_STORAGE__DATA_DIR", str(data))
    return data


@pytest.fixture
def seeded(data_dir: Path) -> Path:
    seed(data_dir)
    return data_dir


def seed(data_dir: Path) -> None:
    """A database with job 1 SUCCEEDED (its SEG delivery DEAD), 2 DEAD, 3 QUEUED."""
    engine = make_engine(f"sqlite:///{data_dir / 'pacsnode.db'}")
    try:
        create_schema(engine)
        clock = FakeClock()
        queue = JobQueue(engine, clock=clock, rng=FixedRandom())
        audit = AuditLog(engine, clock=clock)

        def enqueue(n: int) -> int:
            return queue.enqueue(
                sop_instance_uid=f"1.2.3.{n}",
                study_instance_uid="1.2.3",
                series_instance_uid="1.2.3.0",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
                calling_ae="MODALITY1",
                spool_path=data_dir / "spool" / f"1.2.3.{n}.dcm",
            ).job.id

        first = enqueue(1)
        audit.record(
            AuditEvent.INSTANCE_RECEIVED,
            actor="AE MODALITY1",
            sop_instance_uid="1.2.3.1",
            study_instance_uid="1.2.3",
            job_id=first,
        )
        assert queue.claim("w", 60).id == first
        queue.succeed(first, "w")
        queue.add_delivery(
            first, destination="pacs", kind="SEG", sop_instance_uid="1.2.9.1", path="r.dcm"
        )
        delivery = queue.claim_delivery("w", 60)
        queue.delivery_failed(delivery.id, "w", "refused: 0xA900", retryable=False)

        second = enqueue(2)
        assert queue.claim("w", 60).id == second
        queue.fail(second, "w", "not a film: no pixel data\nsecond line", retryable=False)
        audit.record(AuditEvent.JOB_DEAD, Outcome.FAILURE, actor="worker w", job_id=second)
        enqueue(3)
    finally:
        engine.dispose()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, object]:
    code, out, _ = run(capsys, *argv, "--json")
    return code, json.loads(out)


def admin_entries(capsys: pytest.CaptureFixture[str]) -> list[dict]:
    code, entries = run_json(capsys, "audit", "--event", "admin_action")
    assert code == 0
    return entries


# --- start-up and an empty node ----------------------------------------------------------


def test_parser_imports_nothing_heavy() -> None:
    code = (
        "import sys, importlib; importlib.import_module('pacsnode.cli.main').build_parser(); "
        "print(sorted(m for m in ('numpy', 'torch', 'sqlalchemy', 'pynetdicom') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_node_without_a_database_shows_an_empty_queue(
    data_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(capsys, "queue", "list")
    assert code == 0
    assert out.splitlines()[0].split()[:2] == ["ID", "STATUS"] and "(no jobs)" in out
    assert "no database at" in err
    assert run_json(capsys, "queue", "list") == (0, [])
    code, status = run_json(capsys, "status")
    assert code == 0 and status["destinations"] == [] and status["oldest_waiting"] is None
    assert status["jobs"] == {s.value: 0 for s in JobStatus}
    assert status["deliveries"] == {s.value: 0 for s in DeliveryStatus}
    # Reading must not leave a database behind; changing refuses plainly.
    assert not (data_dir / "pacsnode.db").exists()
    code, _, err = run(capsys, "queue", "retry", "1")
    assert code == 1 and "no database at" in err and "pacsnode.db" in err


# --- queue ---------------------------------------------------------------------------------


def test_queue_list_table_and_json(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "queue", "list")
    assert code == 0 and err == ""
    header, *rows = out.splitlines()
    assert [row.split()[0] for row in rows] == ["3", "2", "1"]
    assert header.index("SOP INSTANCE UID") == rows[0].index("1.2.3.3")  # aligned
    dead = rows[1]
    assert dead.split()[1:5] == ["dead", "0", "1/3", "1.2.3.2"]  # priority 0: no rule
    assert "MODALITY1" in dead and "not a film: no pixel data" in dead
    assert "second line" not in out
    day, time = dead.split()[6:8]
    assert day == "2025-03-01" and time.startswith("08:00:") and time.endswith("Z")

    code, out, _ = run(capsys, "queue", "list", "--status", "DEAD")
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["2"]

    code, jobs = run_json(capsys, "queue", "list", "--limit", "2")
    assert code == 0 and [j["id"] for j in jobs] == [3, 2]
    assert jobs[1]["status"] == "dead" and jobs[1]["attempts"] == 1
    assert datetime.fromisoformat(jobs[1]["updated_at"]).utcoffset() == timedelta(0)
    assert jobs[1]["updated_at"].endswith("+00:00")
    assert jobs[1]["last_error"].endswith("second line")


def test_queue_list_rejects_an_unknown_status(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["queue", "list", "--status", "lost"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "'lost' is not a job status" in err
    assert all(s.value in err for s in JobStatus)


def test_queue_show_job_with_deliveries_and_audit(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "queue", "show", "1")
    assert code == 0
    assert out.startswith("job 1\n")
    assert "sop_instance_uid" in out and "1.2.3.1" in out and "succeeded" in out
    deliveries = out[out.index("deliveries (1)") :]
    assert "pacs" in deliveries and "SEG" in deliveries and "dead" in deliveries
    assert "refused: 0xA900" in deliveries
    assert "instance_received" in out[out.index("audit (1)") :]

    code, shown = run_json(capsys, "queue", "show", "1")
    assert shown["job"]["id"] == 1 and shown["job"]["status"] == "succeeded"
    assert shown["job"]["spool_path"].endswith("1.2.3.1.dcm")
    assert [(d["id"], d["status"], d["kind"]) for d in shown["deliveries"]] == [(1, "dead", "SEG")]
    assert [e["event"] for e in shown["audit"]] == ["instance_received"]

    code, _, err = run(capsys, "queue", "show", "99")
    assert code == 1 and "job 99 does not exist" in err


def test_retry_and_cancel_change_the_job_and_are_audited(
    seeded: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run(capsys, "queue", "retry", "2")
    assert code == 0 and "job 2 is queued again" in out
    code, jobs = run_json(capsys, "queue", "list", "--status", "queued")
    assert sorted(j["id"] for j in jobs) == [2, 3]
    assert next(j for j in jobs if j["id"] == 2)["attempts"] == 0

    # Job 3 is QUEUED: a retry is refused, clearly, and the refusal is audited too.
    code, _, err = run(capsys, "queue", "retry", "3")
    assert code == 1 and "job 3 is QUEUED" in err and "Traceback" not in err

    code, out, _ = run(capsys, "queue", "cancel", "3")
    assert code == 0 and "job 3 is cancelled" in out
    code, _, err = run(capsys, "queue", "cancel", "1")
    assert code == 1 and "SUCCEEDED" in err

    code, out, _ = run(capsys, "queue", "retry", "--delivery", "1")
    assert code == 0 and "delivery 1" in out and "pending" in out
    code, shown = run_json(capsys, "queue", "show", "1")
    assert shown["deliveries"][0]["status"] == "pending"

    entries = admin_entries(capsys)
    got = [(e["job_id"], e["outcome"], e["details"]) for e in reversed(entries)]
    assert got == [
        (2, "success", {"action": "retry", "from": "dead"}),
        (3, "failure", {"action": "retry", "from": "queued"}),
        (3, "success", {"action": "cancel", "from": "queued"}),
        (1, "failure", {"action": "cancel", "from": "succeeded"}),
        (1, "success", {"action": "retry", "delivery_id": 1}),
    ]
    assert {e["actor"] for e in entries} == {"cli:alice"}
    assert entries[-1]["sop_instance_uid"] == "1.2.3.2"
    assert "only DEAD, FAILED, CANCELLED" in entries[-2]["reason"]


def test_purge_needs_yes_deletes_files_with_rows_and_is_audited(
    seeded: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(seeded)  # job 1's SEG was written as the relative "r.dcm"
    (seeded / "spool").mkdir()
    films = [seeded / "spool" / f"1.2.3.{n}.dcm" for n in (1, 2, 3)]
    for film in films:
        film.write_bytes(b"DICM")
    (seeded / "r.dcm").write_bytes(b"SEG")
    purge = ["queue", "purge", "--status", "dead", "--status", "succeeded", "--older-than", "7d"]

    code, out, _ = run(capsys, *purge)
    assert code == 1 and "2 dead or succeeded jobs ended before" in out and "--yes" in out
    assert "1 deliveries, 2 films and 1 result files" in out
    assert len(run_json(capsys, "queue", "list")[1]) == 3
    assert all(film.exists() for film in films) and (seeded / "r.dcm").exists()

    # Job 1's only delivery is DEAD, not waiting to be sent: it goes too, with its file.
    code, out, _ = run(capsys, *purge, "--yes")
    assert code == 0 and "deleted 2 " in out and "2 films and 1 result files" in out
    assert [j["id"] for j in run_json(capsys, "queue", "list")[1]] == [3]
    assert [film.exists() for film in films] == [False, False, True]  # job 3 is queued
    assert not (seeded / "r.dcm").exists()
    (entry,) = admin_entries(capsys)
    assert entry["outcome"] == "success" and entry["actor"] == "cli:alice"
    assert entry["details"]["deleted"] == 2
    assert (entry["details"]["films"], entry["details"]["results"]) == (2, 1)
    assert entry["details"]["statuses"] == ["dead", "succeeded"]
    _, deleted = run_json(capsys, "audit", "--event", "film_deleted", "result_deleted")
    assert sorted((e["event"], e["job_id"]) for e in deleted) == [
        ("film_deleted", 1),
        ("film_deleted", 2),
        ("result_deleted", 1),
    ]
    assert all(e["actor"] == "cli:alice" and "purged" in e["reason"] for e in deleted)

    # Jobs that have not ended are never purged, whatever the cut-off.
    for state in ("queued", "running", "failed"):
        code, _, err = run(capsys, "queue", "purge", "--status", state, "--all-ended", "--yes")
        assert code == 1 and "never purged" in err
    code, out, _ = run(capsys, "queue", "purge", "--all-ended", "--yes")
    assert code == 0 and "deleted 0 " in out
    assert films[2].exists() and len(run_json(capsys, "queue", "list")[1]) == 1
    with pytest.raises(SystemExit):
        main(["queue", "purge", "--status", "dead", "--older-than", "7 days"])
    assert "not a duration" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a cut-off is required
        main(["queue", "purge", "--yes"])
    capsys.readouterr()


# --- audit ---------------------------------------------------------------------------------


def test_audit_filters(seeded: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "audit")
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:3] == ["TIME", "EVENT", "OUTCOME"]
    assert [row.split()[2] for row in rows] == ["job_dead", "instance_received"]

    def events(*argv: str) -> list[str]:
        code, entries = run_json(capsys, "audit", *argv)
        assert code == 0
        return [e["event"] for e in entries]

    assert events("--uid", "1.2.3") == ["instance_received"]  # the study UID
    assert events("--uid", "1.2.3.1") == ["instance_received"]
    assert events("--job", "2") == ["job_dead"]
    assert events("--event", "job_dead", "INSTANCE_RECEIVED") == ["job_dead", "instance_received"]
    assert events("--event", "admin_action") == []
    assert events("--limit", "1") == ["job_dead"]
    assert events("--since", "1h") == []
    received = run_json(capsys, "audit", "--event", "instance_received")[1][0]["time"]
    assert events("--since", received) == ["job_dead", "instance_received"]
    assert events("--since", (START + timedelta(days=1)).isoformat()) == []
    assert events("--since", "2025-03-01T08:00:00") == ["job_dead", "instance_received"]

    with pytest.raises(SystemExit):
        main(["audit", "--event", "coffee_break"])
    assert "admin_action" in capsys.readouterr().err


# --- status and echo -----------------------------------------------------------------------


# pynetdicom 3.0.4 drops, without closing, the socket of a refused connection
# (transport.py, AssociationSocket.connect); Python warns when it is collected.
pynetdicom_leaks_refused_socket = pytest.mark.filterwarnings(
    "ignore:unclosed <socket.socket:ResourceWarning"
)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def scp_port() -> Iterator[int]:
    ae = AE(ae_title="ECHOSCP")
    ae.add_supported_context(Verification)
    port = _closed_port()
    server = ae.start_server(("127.0.0.1", port), block=False)
    try:
        yield port
    finally:
        server.shutdown()


def _config(tmp_path: Path, scp_port: int, *, with_down: bool = True) -> Path:
    down = f"""
[[destinations]]
name = "down"
ae_title = "NOBODY"
host = "127.0.0.1"
port = {_closed_port()}

[[notify]]
name = "er-pager"
url = "https://pager.example.org:8443/hook?token=abc"
on = ["malalignment"]
"""
    path = tmp_path / ("all.toml" if with_down else "good.toml")
    path.write_text(
        f"""
[node]
ae_title = "ADMINTEST"
host = "0.0.0.0"
port = {scp_port}

[storage]
data_dir = "data"

[[destinations]]
name = "good"
ae_title = "ECHOSCP"
host = "127.0.0.1"
port = {scp_port}
"""
        + (down if with_down else "")
    )
    return path


@pynetdicom_leaks_refused_socket
def test_echo_targets(tmp_path: Path, scp_port: int, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(_config(tmp_path, scp_port))
    code, out, _ = run(capsys, "echo", "good", "--config", config)
    assert code == 0 and out.startswith("good: ok: ECHOSCP@127.0.0.1:")

    code, out, _ = run(capsys, "echo", "down", "--config", config, "--timeout", "2")
    assert code == 1 and out.startswith("down: FAILED: ")
    assert "NOBODY@127.0.0.1:" in out and "not listening" in out

    code, out, _ = run(capsys, "echo", f"ECHOSCP@127.0.0.1:{scp_port}", "--config", config)
    assert code == 0 and out.startswith(f"ECHOSCP@127.0.0.1:{scp_port}: ok")

    # No target: the node's own listener (on 0.0.0.0, so reached on loopback), then all.
    code, out, _ = run(capsys, "echo", "--config", config, "--timeout", "2")
    lines = out.splitlines()
    assert code == 1 and [line.split(":")[0] for line in lines] == ["this node", "good", "down"]
    assert lines[0].startswith(f"this node: ok: ADMINTEST@127.0.0.1:{scp_port}")
    assert "FAILED" in lines[2] and "FAILED" not in lines[1]

    code, _, err = run(capsys, "echo", "nowhere", "--config", config)
    assert code == 1 and "neither a destination (good, down) nor AE@HOST:PORT" in err


@pynetdicom_leaks_refused_socket
def test_status_counts_and_echoes(
    tmp_path: Path, scp_port: int, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, scp_port)
    (tmp_path / "data").mkdir()
    seed(tmp_path / "data")

    code, out, _ = run(capsys, "status", "--config", str(config), "--timeout", "2")
    assert code == 1
    assert "queued 1, running 0, succeeded 1, failed 0, dead 1" in out
    assert "pending 0, sent 0, failed 0, dead 1" in out
    assert "job 3, queued, waiting" in out and "2025-03-01 08:00" in out
    good = next(line for line in out.splitlines() if line.strip().startswith("good"))
    down = next(line for line in out.splitlines() if line.strip().startswith("down"))
    assert good.split()[1] == "ok" and down.split()[1] == "FAILED"
    pager = next(line for line in out.splitlines() if line.strip().startswith("er-pager"))
    assert pager.split()[1:] == ["https://pager.example.org:8443/hook", "malalignment"]
    assert "token" not in out  # a query may hold a credential: not shown

    code, status = run_json(capsys, "status", "--config", str(config), "--timeout", "2")
    assert code == 1 and status["ok"] is False
    assert status["jobs"] == {
        s.value: int(s.value in ("queued", "succeeded", "dead")) for s in JobStatus
    }
    assert status["oldest_waiting"]["job_id"] == 3
    assert status["oldest_waiting"]["age_seconds"] > 86_400
    assert [(d["name"], d["ok"]) for d in status["destinations"]] == [
        ("good", True),
        ("down", False),
    ]
    assert status["destinations"][0]["status"] == 0
    assert status["node"]["ae_title"] == "ADMINTEST"
    assert status["notify"] == [
        {"name": "er-pager", "url": "https://pager.example.org:8443/hook", "on": ["malalignment"]}
    ]

    good_only = _config(tmp_path, scp_port, with_down=False)
    code, out, _ = run(capsys, "status", "--config", str(good_only))
    assert code == 0 and "FAILED" not in out
    assert "notify        none configured" in out
