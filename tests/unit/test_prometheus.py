"""Prometheus metrics in multiprocess mode: what analysis processes count, forked or
spawned, reaches the one endpoint of their node, next to the queue read from SQLite.

Run in a fresh interpreter: prometheus_client picks its mode when first imported, and
this test process has imported it already.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from pacsnode.metrics.server import METRICS_SUBDIR, MULTIPROC_ENV

SCRIPT = textwrap.dedent(
    """
    import multiprocessing
    import sys
    import urllib.request
    from pathlib import Path

    from pacsnode.metrics import use_multiprocess_dir


    def analyse() -> None:
        from pacsnode.metrics import process_metrics

        metrics = process_metrics()
        metrics.analysed({"localise": 0.4, "build": 0.02})
        metrics.models_loaded({"localiser": "1.0"})


    if __name__ == "__main__":
        data = Path(sys.argv[1])
        directory = use_multiprocess_dir(data)
        assert directory is not None and directory.parent == data / "metrics", directory

        from pacsnode.config.settings import MetricsSettings
        from pacsnode.db import create_schema, make_engine
        from pacsnode.metrics import MetricsEndpoint

        engine = make_engine(f"sqlite:///{data / 'queue.db'}")
        create_schema(engine)
        endpoint = MetricsEndpoint(MetricsSettings(True, "127.0.0.1", int(sys.argv[2])), engine)
        endpoint.start()
        endpoint.metrics.store_answered(0x0000, 0.01)
        for method in ("fork", "spawn"):
            child = multiprocessing.get_context(method).Process(target=analyse)
            child.start()
            child.join()
            assert child.exitcode == 0, method
        url = "http://127.0.0.1:%d/metrics" % endpoint.address[1]
        sys.stdout.write(urllib.request.urlopen(url, timeout=10).read().decode())
        endpoint.stop()
    """
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_forked_and_spawned_processes_count_into_one_endpoint(tmp_path: Path) -> None:
    script = tmp_path / "node.py"
    script.write_text(SCRIPT)
    data = tmp_path / "data"
    # A directory left by a dead process of this host goes; another host's stays.
    host = socket.gethostname()
    stale, foreign = data / METRICS_SUBDIR / f"{host}-999999999", data / METRICS_SUBDIR / "x-1"
    lookalike = data / METRICS_SUBDIR / f"{host}-b-1"  # host "<this>-b", pid 1
    stale.mkdir(parents=True)
    foreign.mkdir()
    lookalike.mkdir()
    env = {k: v for k, v in os.environ.items() if k != MULTIPROC_ENV}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    done = subprocess.run(
        [sys.executable, str(script), str(data), str(_free_port())],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    samples = {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(done.stdout)
        for sample in family.samples
    }
    assert samples[("pacsnode_cstore_responses_total", frozenset({("status", "0x0000")}))] == 1
    localise = frozenset({("stage", "localise")})
    assert samples[("pacsnode_stage_seconds_count", localise)] == 2
    assert abs(samples[("pacsnode_stage_seconds_sum", localise)] - 0.8) < 1e-9
    model = frozenset({("network", "localiser"), ("version", "1.0")})
    assert samples[("pacsnode_model_info", model)] == 1
    assert samples[("pacsnode_jobs", frozenset({("status", "queued")}))] == 0
    assert samples[("pacsnode_database_up", frozenset())] == 1
    assert not stale.exists() and foreign.exists() and lookalike.exists()


def _families(collector: object) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in collector.collect()  # type: ignore[attr-defined]
        for sample in family.samples
    }


def test_the_queue_is_read_at_each_scrape(tmp_path: Path) -> None:
    from pacsnode.db import create_schema, make_engine
    from pacsnode.jobs import JobQueue
    from pacsnode.metrics.queue import QueueCollector
    from tests.unit.test_jobs import FakeClock, add_result, enqueue

    engine = make_engine(f"sqlite:///{tmp_path / 'queue.db'}")
    create_schema(engine)
    clock = FakeClock()
    queue = JobQueue(engine, clock=clock)
    collector = QueueCollector(engine, clock=clock)
    empty = _families(collector)
    assert empty[("pacsnode_database_up", frozenset())] == 1
    assert empty[("pacsnode_queue_oldest_waiting_seconds", frozenset())] == 0
    assert empty[("pacsnode_jobs", frozenset({("status", "queued")}))] == 0

    first = enqueue(queue, 1).job
    clock.advance(30)
    enqueue(queue, 2)
    done = queue.claim("w", 60)
    assert done is not None and done.id == first.id
    add_result(queue, done.id)
    queue.succeed(done.id, "w")
    clock.advance(45)
    samples = _families(collector)
    assert samples[("pacsnode_jobs", frozenset({("status", "queued")}))] == 1
    assert samples[("pacsnode_jobs", frozenset({("status", "succeeded")}))] == 1
    assert samples[("pacsnode_deliveries", frozenset({("status", "pending")}))] == 1
    # The oldest waiting film is the second: received 45 s ago.
    assert samples[("pacsnode_queue_oldest_waiting_seconds", frozenset())] == 45
    engine.dispose()


def test_a_database_that_is_away_reads_as_down(tmp_path: Path) -> None:
    from pacsnode.db import make_engine
    from pacsnode.metrics.queue import QueueCollector

    # No schema: every query fails, as when the server is away.
    engine = make_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    samples = _families(QueueCollector(engine))
    assert samples == {("pacsnode_database_up", frozenset()): 0}
    engine.dispose()
