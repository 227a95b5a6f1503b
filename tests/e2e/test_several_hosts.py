"""Several hosts, for real: one ``pacsnode serve --role receiver`` and two ``--role worker``
processes on one PostgreSQL database and one shared data directory (spool and results),
the way docs/monitoring-and-hosts.md deploys them.

One worker is SIGKILLed while it analyses a film; the other takes the job over once the
lease runs out and the film's SEG and SR reach Orthanc exactly once. Every process serves
``/metrics``; the scrapes show what each of them did and the queue they share.

The three processes run on this machine, as separate hosts would run them: nothing is
shared but the database and the data directory.
"""

from __future__ import annotations

import functools
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import Engine, create_engine, text

from tests.e2e.conftest import (
    NODE_AE,
    Film,
    Orthanc,
    _kill_group,
    _start_process,
    echoscu,
    free_ports,
    storescu,
    tail,
    wait_until,
    write_node_config,
)

# The session's PostgreSQL server (skips without PostgreSQL's binaries).
from tests.integration.conftest import fresh_postgres_url, postgres_server  # noqa: F401

pytestmark = [pytest.mark.slow, pytest.mark.dcmtk]

LEASE_SECONDS = 4.0
"""Short, so the survivor takes over within seconds; renewed every third of it."""

TAKEOVER_TIMEOUT = 180.0
"""From the kill to the SEG and SR in Orthanc, on two busy cores: lease, then analysis."""

_OWNER_PID = re.compile(r":(\d+):")


@functools.cache
def _uts_namespaces() -> list[str] | None:
    """How to run a command under a host name of its own (a UTS namespace), or None."""
    for prefix in (["unshare", "--uts"], ["unshare", "--uts", "--map-root-user"]):
        try:
            done = subprocess.run(
                [*prefix, "sh", "-c", "hostname pacsnode-probe && hostname"],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode == 0 and done.stdout.strip() == "pacsnode-probe":
            return prefix
    return None


def _as_host(name: str) -> list[str]:
    """Run as host ``name`` where namespaces allow: a survivor then cannot see that the
    victim's process is gone and must wait out its lease, as on another machine. Else
    the same host name for all, and the survivor reclaims the dead process's lease."""
    prefix = _uts_namespaces()
    if prefix is None:
        return []
    return [*prefix, "sh", "-c", 'hostname "$0" && exec "$@"', f"pacsnode-{name}"]


@dataclass
class Serve:
    """One ``pacsnode serve`` process with its role, metrics port and log."""

    name: str
    role: str
    config: Path
    log_path: Path
    metrics_port: int
    env: dict[str, str]
    process: subprocess.Popen[bytes] | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        command = [*_as_host(self.name), sys.executable, "-m", "pacsnode", "serve"]
        command += ["--config", str(self.config)]
        env = {**self.env, "PACSNODE_METRICS__PORT": str(self.metrics_port)}
        self.process, self._log = _start_process(
            [*command, "--role", self.role], self.log_path, cwd=self.config.parent, env=env
        )

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Until it prints where its metrics are (after its models are loaded)."""

        def ready() -> bool:
            if self.process is not None and self.process.poll() is not None:
                pytest.fail(f"{self.name} exited {self.process.returncode}:\n{self.tail()}")
            return "metrics on http://" in self.log_path.read_text(errors="replace")

        wait_until(ready, timeout=timeout, message=lambda: f"{self.name} not ready\n{self.tail()}")

    def kill9(self) -> None:
        if self.process is not None:
            _kill_group(self.process)
        if self._log is not None:
            self._log.close()
            self._log = None

    def owns(self, pid: int) -> bool:
        """Whether ``pid`` is this process or one it started (its process group)."""
        if self.process is None:
            return False
        try:
            return os.getpgid(pid) == self.process.pid
        except ProcessLookupError:
            return False

    def scrape(self) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = response.read().decode()
        return {
            (sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(body)
            for sample in family.samples
        }

    def tail(self) -> str:
        return f"--- {self.name} log:\n{tail(self.log_path)}"


@pytest.fixture
def database(fresh_postgres_url: str) -> Iterator[tuple[str, Engine]]:  # noqa: F811
    engine = create_engine(fresh_postgres_url)
    yield fresh_postgres_url, engine
    engine.dispose()


def _job(engine: Engine, sop_instance_uid: str) -> dict[str, object] | None:
    with engine.connect() as connection:
        row = connection.execute(
            text(
                "SELECT id, status, attempts, lease_owner FROM jobs WHERE sop_instance_uid = :uid"
            ),
            {"uid": sop_instance_uid},
        ).first()
    return None if row is None else dict(row._mapping)


def _rows(engine: Engine, sql: str, **params: object) -> list[dict[str, object]]:
    try:
        with engine.connect() as connection:
            return [dict(r._mapping) for r in connection.execute(text(sql), params)]
    except Exception:  # the schema is not there yet
        return []


def test_a_worker_killed_mid_job_is_taken_over_by_the_other(
    tmp_path: Path,
    films: list[Film],
    orthanc: Orthanc,
    database: tuple[str, Engine],
) -> None:
    url, engine = database
    film = films[2]  # uncompressed: any worker reads it the same way
    (dicom_port,) = free_ports(1)
    receiver_metrics, metrics_a, metrics_b = free_ports(3)
    data_dir = tmp_path / "shared"  # the shared mount: spool and results
    config = tmp_path / "pacsnode.toml"
    write_node_config(config, port=dicom_port, data_dir=data_dir, destinations=[orthanc])
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PACSNODE_")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env |= {
        "PYTHONUNBUFFERED": "1",
        "PACSNODE_DATABASE__URL": url,
        "PACSNODE_WORKER__LEASE_SECONDS": str(LEASE_SECONDS),
        "PACSNODE_WORKER__PROCESSES": "1",
        "PACSNODE_METRICS__ENABLED": "true",
    }
    receiver = Serve(
        "receiver", "receiver", config, tmp_path / "receiver.log", receiver_metrics, env
    )
    workers = [
        Serve(name, "worker", config, tmp_path / f"{name}.log", port, env)
        for name, port in (("worker-a", metrics_a), ("worker-b", metrics_b))
    ]
    everyone = [receiver, *workers]

    def logs() -> str:
        return "\n".join(serve.tail() for serve in everyone)

    try:
        receiver.start()
        receiver.wait_ready()
        wait_until(
            lambda: echoscu(dicom_port, aec=NODE_AE).returncode == 0,
            timeout=60,
            message=logs,
        )
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.wait_ready()

        sent = storescu(film.path, dicom_port)
        assert sent.succeeded, str(sent)

        # Kill whichever worker claims the film as soon as it holds it.
        def running() -> dict[str, object] | None:
            job = _job(engine, film.sop_instance_uid)
            return job if job is not None and job.get("status") == "running" else None

        claimed = wait_until(running, timeout=120, interval=0.05, message=logs)
        match = _OWNER_PID.search(str(claimed["lease_owner"]))
        assert match, claimed
        owner_pid = int(match.group(1))
        victims = [w for w in workers if w.owns(owner_pid)]
        assert len(victims) == 1, f"lease owner {claimed['lease_owner']} is neither worker"
        (victim,) = victims
        (survivor,) = [w for w in workers if w is not victim]
        victim.kill9()
        killed_at = time.monotonic()
        after_kill = _job(engine, film.sop_instance_uid)
        assert after_kill is not None and after_kill["status"] == "running", (
            f"the job ended before the kill could land: {after_kill}"
        )

        results = orthanc.wait_for_results(film, timeout=TAKEOVER_TIMEOUT)
        takeover = time.monotonic() - killed_at
        how = "lease expiry" if _uts_namespaces() else "dead process reclaimed on this host"
        print(f"\ntakeover ({how}): SEG, SR and GSPS in Orthanc {takeover:.1f} s after SIGKILL")
        # Let the survivor finish whatever it would still do, then count again.
        time.sleep(LEASE_SECONDS + 2)
        results = orthanc.results_for(film)
        assert (len(results.segs), len(results.srs), len(results.prs)) == (1, 1, 1), results

        job = _job(engine, film.sop_instance_uid)
        assert job is not None and job["status"] == "succeeded", job
        deliveries = _rows(
            engine,
            "SELECT kind, status, attempts FROM deliveries WHERE job_id = :job",
            job=job["id"],
        )
        assert sorted((d["kind"], d["status"], d["attempts"]) for d in deliveries) == [
            ("gsps", "sent", 1),
            ("seg", "sent", 1),
            ("sr", "sent", 1),
        ]
        audit = _rows(
            engine,
            "SELECT event, actor FROM audit_log WHERE job_id = :job ORDER BY id",
            job=job["id"],
        )
        # The victim may have died before auditing its claim; the survivor's is there.
        claims = [str(row["actor"]) for row in audit if row["event"] == "job_claimed"]
        assert len([a for a in claims if f":{owner_pid}:" not in a]) == 1, audit
        succeeded = [str(row["actor"]) for row in audit if row["event"] == "job_succeeded"]
        assert len(succeeded) == 1 and f":{owner_pid}:" not in succeeded[0], audit
        assert [row["event"] for row in audit].count("result_sent") == 3, audit

        # Each process's endpoint: what it did, and the queue they all share.
        front = receiver.scrape()
        assert front[("pacsnode_cstore_responses_total", frozenset({("status", "0x0000")}))] == 1
        assert front[("pacsnode_stage_seconds_count", frozenset({("stage", "receive")}))] == 1
        back = survivor.scrape()
        for scrape in (front, back):
            assert scrape[("pacsnode_jobs", frozenset({("status", "succeeded")}))] == 1
            assert scrape[("pacsnode_deliveries", frozenset({("status", "sent")}))] == 3
        for stage in ("read", "localise", "measure", "build"):
            assert back[("pacsnode_stage_seconds_count", frozenset({("stage", stage)}))] == 1
        sent_label = frozenset({("destination", "pacs"), ("outcome", "sent")})
        assert back[("pacsnode_delivery_attempts_total", sent_label)] == 3
        assert any(name == "pacsnode_model_info" for name, _labels in back), sorted(back)
    finally:
        for serve in everyone:
            serve.kill9()
