"""The pieces of bounded input: its settings, the bounded inflater, the incoming data set
that stops writing at its limit, and what ``pacsnode status`` says about open senders."""

from __future__ import annotations

import io
import os
import zlib
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian

from pacsnode.cli.main import main
from pacsnode.config import load_settings
from pacsnode.errors import ConfigError
from pacsnode.receive.inflate import InflateError, TooLargeInflated, inflate_file
from pacsnode.receive.intake import IncomingDataSet
from pacsnode.receive.statuses import Refusal, StoreStatus
from tests.films import encode, make_film


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("PACSNODE_"):
            monkeypatch.delenv(name)


# --- settings --------------------------------------------------------------------------------


def test_limits_default_to_what_the_docs_say(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {})
    assert settings.node.max_pdu_kb == 256 and settings.node.max_dataset_mb == 512
    assert settings.security.max_spool_share_per_ae == 0.5


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PACSNODE_NODE__MAX_PDU_KB", "2", "node.max_pdu_kb: must be from 4 to 65536, got 2"),
        ("PACSNODE_NODE__MAX_PDU_KB", "70000", "max_pdu_kb: must be from 4 to 65536, got 70000"),
        ("PACSNODE_NODE__MAX_DATASET_MB", "0", "node.max_dataset_mb: must be at least 1"),
        ("PACSNODE_SECURITY__MAX_SPOOL_SHARE_PER_AE", "0", "above 0 and at most 1, got 0.0"),
        ("PACSNODE_SECURITY__MAX_SPOOL_SHARE_PER_AE", "1.5", "above 0 and at most 1, got 1.5"),
    ],
)
def test_limits_out_of_range_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str, problem: str
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, {variable: value})
    assert any(problem in line for line in caught.value.problems), caught.value.problems


def test_a_share_of_one_is_no_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {"PACSNODE_SECURITY__MAX_SPOOL_SHARE_PER_AE": "1"})
    assert settings.security.max_spool_share_per_ae == 1.0


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("pacsnode.example.org", False),
    ],
)
def test_loopback_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, host: str, loopback: bool
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {"PACSNODE_NODE__HOST": host})
    assert settings.node.loopback_only is loopback


# --- the bounded inflater --------------------------------------------------------------------


def _deflated(tmp_path: Path, payload: bytes | None = None) -> Path:
    film = make_film()
    path = tmp_path / "deflated.dcm"
    if payload is None:
        path.write_bytes(encode(film, DeflatedExplicitVRLittleEndian))
        return path
    film.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    with path.open("wb") as out:
        out.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(out, film.file_meta)  # type: ignore[arg-type]
        out.write(payload)
    return path


def test_inflating_gives_the_same_film_in_explicit_vr_little_endian(tmp_path: Path) -> None:
    source = _deflated(tmp_path)
    target = io.BytesIO()
    size = inflate_file(source, target, limit=10**6)
    inflated = dcmread(io.BytesIO(target.getvalue()))
    assert inflated.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert inflated.PixelData == make_film().PixelData
    assert 0 < size < len(target.getvalue())


def test_inflating_stops_at_the_limit_not_at_the_end(tmp_path: Path) -> None:
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    bomb = b"".join(deflater.compress(bytes(1 << 20)) for _ in range(64)) + deflater.flush()
    source = _deflated(tmp_path, bomb)  # 64 MiB of zeros in some 64 kB
    target = io.BytesIO()
    with pytest.raises(TooLargeInflated) as caught:
        inflate_file(source, target, limit=3 << 20)
    assert caught.value.limit == 3 << 20
    # Stopped within one piece of the limit.
    assert len(target.getvalue()) <= (3 << 20) + (1 << 20) + 1024


def test_a_corrupt_deflate_stream_is_an_inflate_error(tmp_path: Path) -> None:
    source = _deflated(tmp_path, b"\xff" * 64)
    with pytest.raises(InflateError, match="corrupt"):
        inflate_file(source, io.BytesIO(), limit=10**6)


# --- the incoming data set -------------------------------------------------------------------


def test_an_incoming_data_set_stops_writing_past_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "incoming.dcm"
    over = Refusal(StoreStatus.OUT_OF_RESOURCES, "too large")
    with path.open("wb", buffering=0) as stream:
        incoming = IncomingDataSet(path, stream, "TESTSCU", limit=10, over_limit=over)
        assert incoming.write(b"12345") == 5 and incoming.file is incoming
        incoming.file.flush()
        assert path.read_bytes() == b"12345" and incoming.held == 5
        assert incoming.write(b"678901") == 6  # 11 bytes: one over
        assert incoming.refusal is over and incoming.held == 0
        incoming.write(b"more")
        assert incoming.received == 15
    assert path.read_bytes() == b""  # the disk given back at once
    incoming.discard()
    assert not path.exists()


def test_an_incoming_data_set_refused_from_the_start_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "incoming.dcm"
    refusal = Refusal(StoreStatus.OUT_OF_RESOURCES, "share used up")
    with path.open("wb", buffering=0) as stream:
        incoming = IncomingDataSet(path, stream, "TESTSCU", 0, refusal, refusal)
        incoming.write(b"x" * 100)
    assert path.read_bytes() == b"" and incoming.refusal is refusal


# --- pacsnode status -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environment", "line"),
    [
        ({}, "accepts any calling AE (from the network; [security] allowed_calling_aets"),
        (
            {"PACSNODE_NODE__HOST": "127.0.0.1"},
            "accepts any calling AE (from this machine only;",
        ),
        ({"PACSNODE_SECURITY__ALLOWED_CALLING_AETS": "CR1,DX2"}, "calling AEs CR1, DX2"),
    ],
)
def test_status_says_who_may_send(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    environment: dict[str, str],
    line: str,
) -> None:
    monkeypatch.setenv("PACSNODE_STORAGE__DATA_DIR", str(tmp_path / "data"))
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    [senders] = [text for text in out.splitlines() if text.startswith("senders")]
    assert line in senders
