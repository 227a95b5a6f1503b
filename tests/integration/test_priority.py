"""STAT priority through the real listener: the ``[[priority]]`` rules give each received
film its job's priority at enqueue, and an ER film overtakes a backlog of 20."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from pacsnode.audit import AuditEvent, AuditLog
from pacsnode.cli.main import main
from pacsnode.config import load_settings
from pacsnode.config.settings import PriorityRule
from pacsnode.db import create_schema, make_engine
from pacsnode.jobs import JobQueue
from pacsnode.receive import StorageSCP, StoreStatus
from tests.films import make_film
from tests.integration.test_listener import free_port

RULES = (
    PriorityRule(name="emergency", priority=100, calling_aets=("ER_DX1",)),
    PriorityRule(name="stat", priority=50, study_descriptions=("*STAT*",)),
    PriorityRule(name="ed", priority=40, departments=("emergency*",), modalities=("DX",)),
    PriorityRule(name="asked", priority=10, request_priorities=("HIGH",)),
    PriorityRule(name="research", priority=-5, calling_aets=("RESEARCH",)),
)


class Node:
    def __init__(self, tmp_path: Path) -> None:
        env = {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path / "data"),
            "PACSNODE_STORAGE__MIN_FREE_MB": "1",
            "PACSNODE_NODE__HOST": "127.0.0.1",
            "PACSNODE_NODE__PORT": str(free_port()),
        }
        # Rules come from the file only; a test sets them on the loaded settings.
        self.settings = dataclasses.replace(load_settings(None, env), priority=RULES)
        self.settings.storage.data_dir.mkdir(parents=True)
        self.engine = make_engine(self.settings.database.url)
        create_schema(self.engine)
        self.queue = JobQueue(self.engine)
        self.audit = AuditLog(self.engine)
        self.scp = StorageSCP(self.settings, self.queue, self.audit)
        self.scp.start()
        self.port = self.scp.address[1]

    def store(self, ds: Dataset, calling: str = "MODALITY1", priority: int = 2) -> int:
        ae = AE(ae_title=calling)
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="PACSNODE")
        assert assoc.is_established
        try:
            return int(assoc.send_c_store(ds, priority=priority).Status)
        finally:
            assoc.release()


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    node = Node(tmp_path)
    yield node
    node.scp.stop()
    node.engine.dispose()


def film(n: int, **attributes: str) -> Dataset:
    ds = make_film()
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.3680043.9.{n}"
    for name, value in attributes.items():
        setattr(ds, name, value)
    return ds


def test_an_er_film_overtakes_a_backlog_of_20(node: Node) -> None:
    for n in range(20):
        assert node.store(film(n)) == StoreStatus.SUCCESS
    er = film(99)
    assert node.store(er, calling="ER_DX1") == StoreStatus.SUCCESS

    first = node.queue.claim("worker", 30)
    assert first is not None and first.sop_instance_uid == er.SOPInstanceUID
    assert first.priority == 100
    backlog = [node.queue.claim("worker", 30) for _ in range(20)]
    uids = [job.sop_instance_uid for job in backlog if job is not None]
    assert uids == [f"1.2.826.0.1.3680043.9.{n}" for n in range(20)]  # then oldest first
    received = node.audit.query(event=AuditEvent.INSTANCE_RECEIVED, uid=er.SOPInstanceUID)
    assert received[0].details is not None
    assert (received[0].details["priority"], received[0].details["priority_rule"]) == (
        100,
        "emergency",
    )


@pytest.mark.parametrize(
    ("attributes", "calling", "asked", "expected"),
    [
        ({}, "MODALITY1", 2, 0),  # no rule: normal
        ({"StudyDescription": "XR C-spine lat STAT"}, "MODALITY1", 2, 50),
        ({"StudyDescription": "routine"}, "MODALITY1", 2, 0),
        ({"InstitutionalDepartmentName": "Emergency Dept"}, "MODALITY1", 2, 40),
        ({}, "MODALITY1", 1, 10),  # the C-STORE request's Priority HIGH
        ({}, "MODALITY1", 0, 0),  # MEDIUM
        ({"StudyDescription": "STAT"}, "ER_DX1", 1, 100),  # the highest match wins
        ({}, "RESEARCH", 2, -5),
    ],
)
def test_rules_match_sender_header_and_request(
    node: Node, attributes: dict[str, str], calling: str, asked: int, expected: int
) -> None:
    ds = film(1, **attributes)
    assert node.store(ds, calling=calling, priority=asked) == StoreStatus.SUCCESS
    job = node.queue.find(ds.SOPInstanceUID)
    assert job is not None and job.priority == expected


def test_queue_list_shows_the_priority(
    node: Node, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    node.store(film(1))
    node.store(film(2), calling="ER_DX1")
    monkeypatch.setenv("PACSNODE_STORAGE__DATA_DIR", str(node.settings.storage.data_dir))
    monkeypatch.delenv("PACSNODE_DATABASE__URL", raising=False)
    assert main(["queue", "list"]) == 0
    header, *rows = capsys.readouterr().out.splitlines()
    assert header.split()[:3] == ["ID", "STATUS", "PRIORITY"]
    assert [row.split()[1:3] for row in rows] == [["queued", "100"], ["queued", "0"]]
