"""The reader collects the warnings of each read in the thread that reads, without the
process-wide lock it once took: other threads' warnings pass through untouched, and reads
in several threads overlap."""

from __future__ import annotations

import threading
import warnings

import pytest

from pacsnode.imaging import reader
from pacsnode.imaging.reader import captured_warnings, inspect_film
from tests.films import make_film, to_bytes


def test_a_read_collects_its_own_warnings_and_leaves_other_threads_alone() -> None:
    inside = threading.Event()
    warned = threading.Event()
    caught: list[warnings.WarningMessage] = []

    def read() -> None:
        with captured_warnings() as mine:
            inside.set()
            warned.wait(10)
            warnings.warn("about the film", UserWarning, stacklevel=1)
        caught.extend(mine)

    thread = threading.Thread(target=read)
    thread.start()
    assert inside.wait(10)
    # While the other thread is inside its read, this thread's warning is not its.
    with pytest.warns(UserWarning, match="not about any film"):
        warnings.warn("not about any film", UserWarning, stacklevel=1)
    warned.set()
    thread.join(10)
    assert [str(m.message) for m in caught] == ["about the film"]


def test_every_repetition_is_collected() -> None:
    # A check that looks for a warning ("end of file") must see it on every read, not
    # only on the first from that line of pydicom.
    with captured_warnings() as caught:
        for _ in range(3):
            warnings.warn("end of file reached", UserWarning, stacklevel=1)
    assert len(caught) == 3


def test_warnings_outside_a_read_still_reach_the_filters() -> None:
    with pytest.raises(UserWarning), warnings.catch_warnings():
        warnings.simplefilter("error")
        warnings.warn("outside", UserWarning, stacklevel=1)


def test_reads_in_threads_overlap(monkeypatch: pytest.MonkeyPatch) -> None:
    # Two reads that each wait inside for the other to be inside too: with a lock around
    # reading, the second would never get in.
    both = threading.Barrier(2, timeout=10)
    real = reader._check

    def meeting(*args, **kwargs):  # type: ignore[no-untyped-def]
        both.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(reader, "_check", meeting)
    data = to_bytes(make_film())
    errors: list[BaseException] = []

    def read() -> None:
        try:
            inspect_film(data)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not errors
    assert not hasattr(reader, "WARNINGS_LOCK")
