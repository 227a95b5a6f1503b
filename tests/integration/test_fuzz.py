"""The listener under a deterministic mutation fuzzer (:mod:`tests.fuzz`), one damaged
film per association: it stays up, never answers 0000 to a film the project's reader
cannot decode, and takes a clean film afterwards.

The bar test sends 170 such films to a whole node and then a clean phantom film, whose
SEG and SR must still reach the PACS.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread

from pacsnode.jobs import JobStatus
from pacsnode.receive import StoreStatus
from pacsnode.training.phantom import make_phantom, write_phantom
from tests.films import make_film, to_bytes
from tests.fuzz import MUTATIONS, Fuzzer, Mutant, Sent, decodable, echo, send
from tests.integration.test_listener import Listener, free_port
from tests.integration.test_worker import FakePacs, _node, wait_for

SEED = 20_261_207


def fuzz(port: int, fuzzer: Fuzzer, count: int, work: Path) -> list[tuple[Mutant, Sent]]:
    """Send ``count`` inputs; fail at once on a 0000 for an undecodable film or a
    listener that stops answering."""
    results = []
    for mutant in fuzzer.mutants(count):
        sent = send(port, mutant, work)
        results.append((mutant, sent))
        if sent.status == StoreStatus.SUCCESS:
            assert decodable(mutant.data), f"0000 for an undecodable film: {mutant}"
        assert sent.outcome in ("answered", "not sent"), f"{mutant.mutation}: {sent}"
    assert echo(port)
    return results


def clean_film(uid: str, path: Path) -> Mutant:
    film = make_film()
    film.SOPInstanceUID = film.file_meta.MediaStorageSOPInstanceUID = uid
    path.write_bytes(to_bytes(film))
    return Mutant(-1, "none", "", path.read_bytes(), str(film.SOPClassUID), uid)


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[Listener]:
    node = Listener(tmp_path, PACSNODE_SECURITY__ALLOWED_CALLING_AETS="FUZZSCU")
    yield node
    node.scp.stop()


def test_the_fuzzer_is_deterministic() -> None:
    first, again = Fuzzer(SEED).mutants(24), Fuzzer(SEED).mutants(24)
    assert [m.data for m in first] == [m.data for m in again]
    assert Fuzzer(SEED).mutant(5).data != Fuzzer(SEED + 1).mutant(5).data
    assert [m.mutation for m in Fuzzer(SEED).mutants(len(MUTATIONS))] == [
        name for name, _ in MUTATIONS
    ]


def test_damaged_films_never_get_0000_and_a_clean_one_is_queued_after(
    listener: Listener, tmp_path: Path
) -> None:
    results = fuzz(listener.port, Fuzzer(SEED), 4 * len(MUTATIONS), tmp_path)
    statuses = Counter(sent.label for _, sent in results)
    assert statuses["not sent"] < len(results) // 4, statuses  # the node saw most of them
    kept = {m.sop_instance_uid for m, s in results if s.status == StoreStatus.SUCCESS}
    assert {job.sop_instance_uid for job in listener.queue.list(limit=1000)} == kept
    clean = clean_film("1.2.826.0.1.3680043.8.498.99", tmp_path / "clean.dcm")
    assert send(listener.port, clean, tmp_path).status == StoreStatus.SUCCESS
    job = listener.queue.find(clean.sop_instance_uid)
    assert job is not None and job.status is JobStatus.QUEUED


@pytest.fixture(scope="module")
def phantom(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantom")
    return write_phantom(make_phantom(424_243, 0, "lumbar"), out, preview=False)["dicom"]


@pytest.mark.slow
def test_bar_170_damaged_films_then_a_clean_film_gets_its_seg_and_sr(
    tmp_path: Path, phantom: Path
) -> None:
    pacs = FakePacs(free_port())
    pacs.start()
    node = _node(tmp_path, pacs.port)
    try:
        assert node.address is not None
        port = node.address[1]
        results = fuzz(port, Fuzzer(SEED + 1), 170, tmp_path)
        answered = [s for _, s in results if s.outcome == "answered"]
        assert len(answered) >= 170 * 3 // 4, Counter(s.label for _, s in results)
        assert all(thread.is_alive() for thread in node._threads), "a node loop died"
        source = dcmread(phantom, stop_before_pixels=True)
        clean = Mutant(
            -1, "none", "", phantom.read_bytes(), source.SOPClassUID, source.SOPInstanceUID
        )
        assert send(port, clean, tmp_path).status == StoreStatus.SUCCESS
        uids = {source.SOPInstanceUID}
        wait_for(
            lambda: (
                len([ds for ds in pacs.received if ds.StudyInstanceUID == source.StudyInstanceUID])
                == 3  # SEG, SR, GSPS
            ),
            seconds=240,
        )
        assert all(thread.is_alive() for thread in node._threads), "a node loop died"
        job = node.queue.find(source.SOPInstanceUID)
        assert job is not None and job.status is JobStatus.SUCCEEDED, uids
    finally:
        node.stop()
        pacs.stop()
