"""The ``/metrics`` endpoint of a node running in this process: a film goes in, the PACS
gets its SEG and SR, and a scrape shows the C-STORE answers, every stage's latency, the
queue read from the database, the sends and the model versions.

The multiprocess side (``pacsnode serve`` with analysis processes, several nodes on one
database) is scraped in tests/e2e/test_several_hosts.py.
"""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydicom import dcmread
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from pacsnode.config import load_settings
from pacsnode.errors import ConfigError
from pacsnode.node import Node, Role
from pacsnode.receive.statuses import StoreStatus
from pacsnode.training.phantom import make_phantom, write_phantom
from tests.integration.test_listener import free_port
from tests.integration.test_worker import FakePacs, wait_for

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]

STACK_STAGES = (
    "localise",
    "region",
    "detect",
    "orient",
    "instance",
    "semantic",
    "ensemble",
    "identify",
    "measure",
)


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("films")
    return write_phantom(make_phantom(424_243, 0, "lumbar"), out, preview=False)["dicom"]


@pytest.fixture
def pacs() -> Iterator[FakePacs]:
    server = FakePacs(free_port())
    server.start()
    yield server
    server.stop()


def scrape(address: tuple[str, int]) -> Samples:
    """GET /metrics and parse it the way Prometheus does: (name, labels) -> value."""
    host, port = address
    with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=10) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _send(port: int, path: Path, *, ct: bool = False) -> int:
    ds = dcmread(path)
    if ct:  # a SOP class the node does not keep: answered 0122
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="PACSNODE")
    assert assoc.is_established
    try:
        return int(assoc.send_c_store(ds).Status)
    finally:
        assoc.release()


def test_a_scrape_after_a_film_shows_answers_stages_queue_sends_and_models(
    tmp_path: Path, film: Path, pacs: FakePacs
) -> None:
    settings = load_settings(
        None,
        {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_NODE__HOST": "127.0.0.1",
            "PACSNODE_NODE__PORT": str(free_port()),
            # Analysis in this process: its timings are counted in memory here.
            "PACSNODE_WORKER__PROCESSES": "0",
            "PACSNODE_METRICS__ENABLED": "true",
            "PACSNODE_METRICS__PORT": str(free_port()),
            "PACSNODE_DESTINATIONS__0__NAME": "pacs",
            "PACSNODE_DESTINATIONS__0__AE_TITLE": "FAKEPACS",
            "PACSNODE_DESTINATIONS__0__HOST": "127.0.0.1",
            "PACSNODE_DESTINATIONS__0__PORT": str(pacs.port),
        },
    )
    node = Node(settings)
    node.start()
    try:
        assert node.metrics_address == ("127.0.0.1", settings.metrics.port)
        assert node.address is not None
        before = scrape(node.metrics_address)
        assert value(before, "pacsnode_database_up") == 1
        assert value(before, "pacsnode_jobs", status="queued") == 0
        assert value(before, "pacsnode_queue_oldest_waiting_seconds") == 0

        assert _send(node.address[1], film) == StoreStatus.SUCCESS
        assert _send(node.address[1], film, ct=True) == StoreStatus.SOP_CLASS_NOT_SUPPORTED
        wait_for(lambda: len(pacs.received) == 3)  # SEG, SR, GSPS
        # The delivery loop records the send just after the PACS has the object.
        wait_for(
            lambda: value(scrape(node.metrics_address), "pacsnode_deliveries", status="sent") == 3
        )
        samples = scrape(node.metrics_address)
    finally:
        node.stop()

    assert value(samples, "pacsnode_cstore_responses_total", status="0x0000") == 1
    assert value(samples, "pacsnode_cstore_responses_total", status="0x0122") == 1
    assert value(samples, "pacsnode_jobs", status="succeeded") == 1
    assert value(samples, "pacsnode_jobs", status="queued") == 0
    assert value(samples, "pacsnode_deliveries", status="pending") == 0
    assert (
        value(samples, "pacsnode_delivery_attempts_total", destination="pacs", outcome="sent") == 3
    )
    counts = {
        stage: value(samples, "pacsnode_stage_seconds_count", stage=stage)
        for stage in ("receive", "read", *STACK_STAGES, "build", "deliver")
    }
    assert counts == {
        **{stage: 1 for stage in ("read", *STACK_STAGES, "build")},
        "receive": 2,
        "deliver": 3,
    }
    total = value(samples, "pacsnode_stage_seconds_sum", stage="localise")
    assert total is not None and 0 < total < 120
    assert value(samples, "pacsnode_stage_seconds_bucket", stage="localise", le="+Inf") == 1
    networks = {
        dict(labels)["network"]
        for (name, labels), v in samples.items()
        if name == "pacsnode_model_info" and v == 1
    }
    assert {"localiser", "segmenter", "identifier"} <= networks


def test_metrics_are_off_by_default_and_validated(tmp_path: Path) -> None:
    defaults = load_settings(None, {"PACSNODE_STORAGE__DATA_DIR": str(tmp_path)})
    assert not defaults.metrics.enabled
    assert (defaults.metrics.host, defaults.metrics.port) == ("127.0.0.1", 9112)
    with pytest.raises(ConfigError) as caught:
        load_settings(
            None,
            {
                "PACSNODE_METRICS__ENABLED": "maybe",
                "PACSNODE_METRICS__PORT": "70000",
                "PACSNODE_METRICS__HOST": " ",
            },
        )
    problems = "\n".join(caught.value.problems)
    for key in ("metrics.enabled", "metrics.port", "metrics.host"):
        assert key in problems
    with pytest.raises(ConfigError, match=r"metrics\.port: must differ from node\.port"):
        load_settings(None, {"PACSNODE_METRICS__ENABLED": "on", "PACSNODE_METRICS__PORT": "11112"})


def test_a_metrics_port_in_use_stops_the_node_before_it_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = load_settings(
            None,
            {
                "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
                "PACSNODE_NODE__HOST": "127.0.0.1",
                "PACSNODE_NODE__PORT": str(free_port()),
                "PACSNODE_METRICS__ENABLED": "true",
                "PACSNODE_METRICS__PORT": str(taken.getsockname()[1]),
            },
        )
        node = Node(settings, Role.RECEIVER)
        with pytest.raises(OSError):
            node.start()
        node.stop()
    assert node.address is None and node.metrics_address is None
