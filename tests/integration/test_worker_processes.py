"""Analysis in worker processes: the node's own process decodes no pixel and runs no
network, a killed analysis process is replaced, and a node that cannot use its device
does not open its port."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacsnode.audit import AuditEvent
from pacsnode.config import load_settings
from pacsnode.errors import ModelError
from pacsnode.node import Node
from pacsnode.training.phantom import make_phantom, write_phantom
from tests.integration.test_listener import free_port
from tests.integration.test_worker import FakePacs, _send, wait_for


def _settings(tmp_path: Path, pacs_port: int, **extra: str):  # type: ignore[no-untyped-def]
    return load_settings(
        None,
        {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_NODE__HOST": "127.0.0.1",
            "PACSNODE_NODE__PORT": str(free_port()),
            "PACSNODE_WORKER__PROCESSES": "1",
            "PACSNODE_DESTINATIONS__0__NAME": "pacs",
            "PACSNODE_DESTINATIONS__0__AE_TITLE": "FAKEPACS",
            "PACSNODE_DESTINATIONS__0__HOST": "127.0.0.1",
            "PACSNODE_DESTINATIONS__0__PORT": str(pacs_port),
            **extra,
        },
    )


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("films")
    return [
        write_phantom(make_phantom(424_250, i, "lumbar"), out, preview=False)["dicom"]
        for i in range(2)
    ]


@pytest.fixture(scope="module")
def pacs() -> Iterator[FakePacs]:
    server = FakePacs(free_port())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory, pacs: FakePacs) -> Iterator[Node]:
    running = Node(_settings(tmp_path_factory.mktemp("node"), pacs.port))
    running.start()
    yield running
    running.stop(60)


def _results_for(pacs: FakePacs, film: Path) -> int:
    from pydicom import dcmread

    study = str(dcmread(film, stop_before_pixels=True).StudyInstanceUID)
    return sum(1 for ds in pacs.received if str(ds.StudyInstanceUID) == study)


def test_films_are_analysed_in_a_worker_process_not_the_listeners(
    node: Node, pacs: FakePacs, films: list[Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pacsnode.analysis.stack import Stack
    from pacsnode.imaging import reader

    # Neither decoding nor the stack may run in this process; the analysis process is
    # a fresh interpreter (spawn) and is not touched by these patches.
    monkeypatch.setattr(reader, "_decode", pytest.fail)
    monkeypatch.setattr(Stack, "read", pytest.fail)
    assert node._processes is not None
    pids = node._processes.pids
    assert len(pids) == 1 and os.getpid() not in pids
    assert _send(node, films[0]) == 0x0000
    wait_for(lambda: _results_for(pacs, films[0]) == 3, 120)  # SEG, SR, GSPS
    claims = [e for e in node.audit.query(limit=100) if e.event is AuditEvent.JOB_CLAIMED]
    assert claims and all(f":{pids[0]}:" in e.actor for e in claims)
    assert node._processes.versions.keys() == {
        "localiser",
        "detector",
        "semantic",
        "segmenter",
        "identifier",
        "orienter",
    }


def test_a_killed_analysis_process_is_replaced_and_analyses_the_next_film(
    node: Node, pacs: FakePacs, films: list[Path]
) -> None:
    assert node._processes is not None
    (old,) = node._processes.pids
    os.kill(old, signal.SIGKILL)
    deadline = time.monotonic() + 90
    while node._processes.pids in ([], [old]):
        assert time.monotonic() < deadline, "no new analysis process"
        time.sleep(0.2)
    assert _send(node, films[1]) == 0x0000
    wait_for(lambda: _results_for(pacs, films[1]) == 3, 180)


def test_a_cuda_device_torch_cannot_use_stops_the_start_before_the_port_opens(
    tmp_path: Path,
) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    node = Node(_settings(tmp_path, free_port(), PACSNODE_ANALYSIS__DEVICE="cuda"))
    try:
        with pytest.raises(ModelError, match=r"analysis process 0 could not start.*CUDA"):
            node.start()
        assert node.address is None
    finally:
        node.stop(10)
