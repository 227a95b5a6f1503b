"""Compressed films are decoded in decode-check child processes, not in the listener's:
a damaged codestream is refused, a hung decode is cut off at the timeout, and a child
that dies is replaced for the next film."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom.encaps import encapsulate, generate_frames
from pydicom.uid import JPEG2000Lossless

from pacsnode.errors import ImageReadError, ReadFailure
from pacsnode.receive.decodecheck import DecodeChecks
from tests.films import make_film, to_bytes


@pytest.fixture(scope="module")
def checks() -> Iterator[DecodeChecks]:
    pool = DecodeChecks(processes=1, timeout=30.0)
    pool.start()
    yield pool
    pool.stop()


@pytest.fixture(scope="module")
def films(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("decode")
    good = make_film()
    good.compress(JPEG2000Lossless, generate_instance_uid=False)
    bad = make_film()
    bad.compress(JPEG2000Lossless, generate_instance_uid=False)
    frame = next(generate_frames(bad.PixelData, number_of_frames=1))
    bad.PixelData = encapsulate([frame[: len(frame) // 2]])
    paths = {"good": folder / "good.dcm", "bad": folder / "bad.dcm"}
    paths["good"].write_bytes(to_bytes(good))
    paths["bad"].write_bytes(to_bytes(bad))
    return paths


def test_a_sound_film_passes(checks: DecodeChecks, films: dict[str, Path]) -> None:
    checks.check(films["good"])


def test_a_damaged_codestream_is_refused_as_the_reader_refuses_it(
    checks: DecodeChecks, films: dict[str, Path]
) -> None:
    with pytest.raises(ImageReadError, match="could not be decoded") as excinfo:
        checks.check(films["bad"])
    assert excinfo.value.reason is ReadFailure.CORRUPT_PIXEL_DATA
    assert str(films["bad"]) not in str(excinfo.value)  # no spool path in the answer


def test_the_decoding_happens_in_a_child(
    checks: DecodeChecks, films: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from pacsnode.imaging import reader

    monkeypatch.setattr(reader, "_decode", pytest.fail)  # this process must not decode
    checks.check(films["good"])


def test_a_child_that_died_is_replaced(checks: DecodeChecks, films: dict[str, Path]) -> None:
    child = checks._children[0]
    pid = child._process.pid
    os.kill(pid, signal.SIGKILL)
    child._process.join(10)
    checks.check(films["good"])
    assert child._process.pid != pid


def test_a_decode_past_the_timeout_is_cut_off_and_the_next_film_gets_a_fresh_child(
    films: dict[str, Path],
) -> None:
    pool = DecodeChecks(processes=1, timeout=30.0)
    pool.start()
    try:
        pool.timeout = 0.0  # no decode is that fast
        with pytest.raises(TimeoutError, match="took over"):
            pool.check(films["good"])
        pool.timeout = 30.0
        pool.check(films["good"])
        with pytest.raises(ImageReadError):
            pool.check(films["bad"])
    finally:
        pool.stop()
    assert pool._children[0]._process is None
