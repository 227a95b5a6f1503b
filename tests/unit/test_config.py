"""Settings: embedded defaults, the shipped file, environment overrides, and validation.

Every mistake must name its ``section.key``, and all mistakes must be reported together.
"""

from __future__ import annotations

import ipaddress
import textwrap
from pathlib import Path

import pytest

from pacsnode.config import (
    CR_IMAGE_STORAGE,
    DX_FOR_PRESENTATION_STORAGE,
    DX_FOR_PROCESSING_STORAGE,
    SECONDARY_CAPTURE_STORAGE,
    Destination,
    Unmatched,
    load_settings,
)
from pacsnode.config.settings import SHIPPED_MODELS_DIR
from pacsnode.errors import ConfigError, PacsnodeError

SHIPPED = Path(__file__).resolve().parents[2] / "config" / "pacsnode.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pacsnode.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path | None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    return caught.value.problems


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {})
    assert settings.source is None
    assert settings.node.ae_title == "PACSNODE"
    assert settings.node.host == "0.0.0.0"
    assert settings.node.port == 11112
    assert settings.storage.data_dir == tmp_path / "data"
    assert settings.storage.spool_dir == tmp_path / "data" / "spool"
    assert settings.database.url == f"sqlite:///{tmp_path / 'data' / 'pacsnode.db'}"
    assert settings.analysis.device == "cpu"
    assert settings.analysis.models_dir == SHIPPED_MODELS_DIR
    assert settings.destinations == ()
    assert settings.security.allowed_calling_aets == ()
    assert settings.filter.modalities == ("DX", "CR")
    assert settings.filter.body_parts == () and settings.filter.view_positions == ()
    assert settings.filter.sop_classes == (
        DX_FOR_PRESENTATION_STORAGE,
        DX_FOR_PROCESSING_STORAGE,
        CR_IMAGE_STORAGE,
        SECONDARY_CAPTURE_STORAGE,
    )
    assert settings.filter.unmatched is Unmatched.STORE


def test_sop_class_constants_match_pydicom() -> None:
    from pydicom import uid

    assert uid.DigitalXRayImageStorageForPresentation == DX_FOR_PRESENTATION_STORAGE
    assert uid.DigitalXRayImageStorageForProcessing == DX_FOR_PROCESSING_STORAGE
    assert uid.ComputedRadiographyImageStorage == CR_IMAGE_STORAGE
    assert uid.SecondaryCaptureImageStorage == SECONDARY_CAPTURE_STORAGE


def test_shipped_file_equals_the_embedded_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    # Defaults resolve against the working directory, the file's paths against its own.
    monkeypatch.chdir(SHIPPED.parent)
    shipped = load_settings(SHIPPED, {})
    assert shipped.source == SHIPPED
    assert shipped == load_settings(None, {})


def test_settings_are_frozen(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {})
    with pytest.raises(AttributeError):
        settings.node.port = 1  # type: ignore[misc]


def test_file_values_and_destinations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [node]
        ae_title = "  SPINE1 "
        port = 4242

        [security]
        allowed_calling_aets = ["MODALITY1", "PACS"]
        allowed_hosts = ["10.0.0.0/8", "192.168.1.7"]

        [filter]
        modalities = ["dx"]
        body_parts = ["SPINE", "LSPINE"]
        unmatched = "refuse"

        [[destinations]]
        name = "pacs"
        ae_title = "ORTHANC"
        host = "pacs.example.org"
        port = 4242

        [[destinations]]
        name = "archive"
        ae_title = "ARCHIVE"
        host = "10.0.0.9"
        port = 104
        """,
    )
    settings = load_settings(path, {})
    assert settings.node.ae_title == "SPINE1"
    assert settings.node.port == 4242
    assert settings.destinations == (
        Destination("pacs", "ORTHANC", "pacs.example.org", 4242),
        Destination("archive", "ARCHIVE", "10.0.0.9", 104),
    )
    assert settings.destination("archive").port == 104
    with pytest.raises(KeyError):
        settings.destination("nowhere")
    assert settings.filter.modalities == ("DX",)
    assert settings.filter.unmatched is Unmatched.REFUSE
    assert settings.security.allowed_hosts == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("192.168.1.7/32"),
    )


def test_relative_paths_resolve_against_the_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    etc = tmp_path / "etc"
    etc.mkdir()
    path = write(
        etc,
        """
        [storage]
        data_dir = "../state"
        [database]
        url = "sqlite:///db/queue.db"
        """,
    )
    settings = load_settings(path, {"PACSNODE_ANALYSIS__MODELS_DIR": "weights"})
    assert settings.storage.data_dir == tmp_path / "state"
    assert settings.storage.spool_dir == tmp_path / "state" / "spool"
    assert settings.database.url == f"sqlite:///{etc / 'db' / 'queue.db'}"
    # Defaults follow the file; environment values follow the working directory.
    assert settings.analysis.models_dir == elsewhere / "weights"
    # Unset, the models are the shipped ones wherever the file is.
    assert load_settings(path, {}).analysis.models_dir == SHIPPED_MODELS_DIR


def test_absolute_paths_and_other_databases_are_kept(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [storage]
        data_dir = "/srv/pacsnode"
        spool_dir = "/fast/spool"
        [database]
        url = "postgresql+psycopg2://pacsnode:secret@db.example.org/pacsnode"
        """,
    )
    settings = load_settings(path, {})
    assert settings.storage.data_dir == Path("/srv/pacsnode")
    assert settings.storage.spool_dir == Path("/fast/spool")
    assert settings.database.url == "postgresql+psycopg2://pacsnode:secret@db.example.org/pacsnode"
    assert "secret" not in repr(settings)


def test_environment_overrides_with_type_conversion(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        None,
        {
            "PACSNODE_NODE__PORT": "11113",
            "pacsnode_node__ae_title": "OTHER",
            "PACSNODE_DATABASE__URL": "sqlite:////var/lib/pacsnode/q.db",
            "PACSNODE_WORKER__LEASE_SECONDS": "90",
            "PACSNODE_WORKER__CONCURRENCY": " 2 ",
            "PACSNODE_FILTER__MODALITIES": "DX, CR ,RF",
            "PACSNODE_FILTER__SOP_CLASSES": "",
            "PACSNODE_FILTER__UNMATCHED": "REFUSE",
            "PACSNODE_SECURITY__ALLOWED_HOSTS": "127.0.0.1,::1",
            "PACSNODE_ANALYSIS__DEVICE": "cuda:1",
            # Not settings: no double underscore, or another program's prefix.
            "PACSNODE_CACHE": "/tmp/cache",
            "OTHER_NODE__PORT": "1",
        },
    )
    assert settings.node.port == 11113
    assert settings.node.ae_title == "OTHER"
    assert settings.database.url == "sqlite:////var/lib/pacsnode/q.db"
    assert settings.worker.lease_seconds == 90.0
    assert settings.worker.concurrency == 2
    assert settings.filter.modalities == ("DX", "CR", "RF")
    assert settings.filter.sop_classes == ()
    assert settings.filter.unmatched is Unmatched.REFUSE
    assert settings.security.allows_host("::1")
    assert settings.analysis.device == "cuda:1"


def test_environment_overrides_the_file_and_adds_destinations(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [node]
        port = 4000
        [[destinations]]
        name = "pacs"
        ae_title = "ORTHANC"
        host = "pacs1"
        port = 4242
        """,
    )
    settings = load_settings(
        path,
        {
            "PACSNODE_NODE__PORT": "5000",
            "PACSNODE_DESTINATIONS__0__HOST": "pacs2",
            "PACSNODE_DESTINATIONS__1__NAME": "backup",
            "PACSNODE_DESTINATIONS__1__AE_TITLE": "BACKUP",
            "PACSNODE_DESTINATIONS__1__HOST": "10.1.1.1",
            "PACSNODE_DESTINATIONS__1__PORT": "104",
        },
    )
    assert settings.node.port == 5000
    assert settings.destinations == (
        Destination("pacs", "ORTHANC", "pacs2", 4242),
        Destination("backup", "BACKUP", "10.1.1.1", 104),
    )


@pytest.mark.parametrize(
    ("toml", "where", "fragment"),
    [
        ('[node]\nae_title = "ABCDEFGHIJKLMNOPQ"', "node.ae_title", "at most 16"),
        ('[node]\nae_title = "BACK\\\\SLASH"', "node.ae_title", "backslash"),
        ('[node]\nae_title = "   "', "node.ae_title", "all spaces"),
        ('[node]\nae_title = "TAB\\tS"', "node.ae_title", "printable"),
        ("[node]\nport = 0", "node.port", "from 1 to 65535"),
        ("[node]\nport = 70000", "node.port", "from 1 to 65535"),
        ('[node]\nport = "11112"', "node.port", "expected a whole number, got a string"),
        ("[node]\nport = true", "node.port", "got a boolean"),
        ("[node]\nmax_associations = 0", "node.max_associations", "at least 1"),
        ("[node]\nprot = 11112", "node.prot", "unknown key"),
        ("[nodes]\nport = 11112", "nodes", "unknown section"),
        ("node = 5", "node", "expected a [node] table"),
        ("[storage]\nmin_free_mb = -1", "storage.min_free_mb", "at least 0"),
        ('[storage]\ndata_dir = ""', "storage.data_dir", "empty"),
        ('[database]\nurl = "not a url"', "database.url", "not an SQLAlchemy URL"),
        ('[database]\nurl = "nosuchdb://x/y"', "database.url", "unknown database dialect"),
        ('[security]\nallowed_calling_aets = "ANY"', "security.allowed_calling_aets", "a list"),
        (
            '[security]\nallowed_calling_aets = ["OK", "WAY_TOO_LONG_AE_TITLE"]',
            "security.allowed_calling_aets",
            "item 2",
        ),
        ('[security]\nallowed_hosts = ["pacs.local"]', "security.allowed_hosts", "CIDR"),
        ("[worker]\nconcurrency = 0", "worker.concurrency", "at least 1"),
        ("[worker]\nmax_attempts = 0", "worker.max_attempts", "at least 1"),
        ("[worker]\nlease_seconds = 0", "worker.lease_seconds", "positive"),
        ("[worker]\nbackoff_max_seconds = 5.0", "worker.backoff_max_seconds", "at least"),
        ('[analysis]\ndevice = "gpu"', "analysis.device", "auto, cpu, cuda, cuda:N"),
        ('[analysis]\ndevice = "cuda:x"', "analysis.device", "auto, cpu, cuda, cuda:N"),
        ('[filter]\nunmatched = "drop"', "filter.unmatched", "'store', 'refuse'"),
        ('[filter]\nmodalities = ["D-X"]', "filter.modalities", "code string"),
        ('[filter]\nmodalities = ["DX", "dx"]', "filter.modalities", "twice"),
        ('[filter]\nsop_classes = ["1.2.03"]', "filter.sop_classes", "not a DICOM UID"),
        ('[[destinations]]\nname = "x"', "destinations[0].host", "missing"),
        ("destinations = 3", "destinations", "[[destinations]]"),
    ],
)
def test_each_mistake_names_its_key(tmp_path: Path, toml: str, where: str, fragment: str) -> None:
    found = problems(write(tmp_path, toml + "\n"))
    assert any(p.startswith(f"{where}: ") and fragment in p for p in found), found


def test_destination_mistakes(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [[destinations]]
        name = "pacs"
        ae_title = "A"
        host = "h1"
        port = 104

        [[destinations]]
        name = "PACS"
        ae_title = "B"
        host = "h2"
        port = 99999
        hots = "typo"

        [[destinations]]
        name = "bad name!"
        ae_title = "C"
        host = "h3"
        port = 104
        """,
    )
    found = problems(path)
    assert "destinations[1].name: 'PACS' is already used by destinations[0]" in found
    assert any(p.startswith("destinations[1].port: must be from 1 to 65535") for p in found)
    assert "destinations[1].hots: unknown key" in found
    assert any(p.startswith("destinations[2].name: 'bad name!' is not a name") for p in found)


def test_environment_mistakes_name_the_variable(tmp_path: Path) -> None:
    found = problems(
        None,
        {
            "PACSNODE_NODE__PORT": "eleven",
            "PACSNODE_NODE__PROT": "1",
            "PACSNODE_NDOE__PORT": "1",
            "PACSNODE_NODE__PORT__X": "1",
            "PACSNODE_DESTINATIONS__3__HOST": "h",
            "PACSNODE_WORKER__LEASE_SECONDS": "soon",
        },
    )
    assert "node.port: 'eleven' is not a whole number (from PACSNODE_NODE__PORT)" in found
    assert "node.prot: unknown key (from PACSNODE_NODE__PROT)" in found
    assert "ndoe: unknown section (from PACSNODE_NDOE__PORT)" in found
    assert any(p.startswith("node: PACSNODE_NODE__PORT__X is not") for p in found)
    assert any(p.startswith("destinations[3]: no such destination") for p in found)
    assert any(p.startswith("worker.lease_seconds: 'soon'") for p in found)


def test_all_mistakes_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
        [node]
        ae_title = "THIS_TITLE_IS_TOO_LONG"
        port = 0

        [analysis]
        device = "tpu"

        [filter]
        unmatched = "discard"

        [[destinations]]
        name = "a"
        ae_title = "A"
        host = "h"
        port = 1

        [[destinations]]
        name = "a"
        ae_title = "B"
        host = "h"
        port = 2
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, {"PACSNODE_WORKER__CONCURRENCY": "0"})
    error = caught.value
    assert isinstance(error, PacsnodeError)
    keys = sorted(p.split(":")[0] for p in error.problems)
    assert keys == [
        "analysis.device",
        "destinations[1].name",
        "filter.unmatched",
        "node.ae_title",
        "node.port",
        "worker.concurrency",
    ]
    message = str(error)
    assert message.startswith(f"6 configuration mistakes in {path}:")
    assert all(problem in message for problem in error.problems)


def test_unreadable_files(tmp_path: Path) -> None:
    assert problems(tmp_path / "missing.toml") == (f"{tmp_path / 'missing.toml'}: no such file",)
    (found,) = problems(write(tmp_path, "[node\nport = 1\n"))
    assert "not valid TOML" in found


def test_security_helpers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    open_node = load_settings(None, {}).security
    assert open_node.allows_calling_ae("ANYONE") and open_node.allows_host("203.0.113.5")
    locked = load_settings(
        None,
        {
            "PACSNODE_SECURITY__ALLOWED_CALLING_AETS": "MODALITY1",
            "PACSNODE_SECURITY__ALLOWED_HOSTS": "10.0.0.0/8",
        },
    ).security
    assert locked.allows_calling_ae("MODALITY1 ")
    assert not locked.allows_calling_ae("INTRUDER")
    assert locked.allows_host("10.20.30.40")
    assert not locked.allows_host("192.168.0.1")
    assert not locked.allows_host("not-an-address")


@pytest.mark.parametrize(
    ("modality", "body_part", "view", "sop_class", "expected"),
    [
        ("DX", "SPINE", "LL", DX_FOR_PRESENTATION_STORAGE, True),
        ("cr", "LSPINE", None, CR_IMAGE_STORAGE, True),
        ("CT", "SPINE", "LL", DX_FOR_PRESENTATION_STORAGE, False),
        ("DX", "CHEST", "LL", DX_FOR_PRESENTATION_STORAGE, False),
        ("DX", None, "LL", DX_FOR_PRESENTATION_STORAGE, False),
        ("DX", "SPINE", "LL", "1.2.840.10008.5.1.4.1.1.2", False),
    ],
)
def test_filter_matches(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    modality: str | None,
    body_part: str | None,
    view: str | None,
    sop_class: str,
    expected: bool,
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(None, {"PACSNODE_FILTER__BODY_PARTS": "SPINE,LSPINE"})
    matched = settings.filter.matches(
        modality=modality, body_part=body_part, view_position=view, sop_class_uid=sop_class
    )
    assert matched is expected


def test_settings_compare_equal_whatever_their_source(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    from_file = load_settings(write(tmp_path, "[node]\nport = 4000\n"), {})
    from_env = load_settings(None, {"PACSNODE_NODE__PORT": "4000"})
    assert from_file.source == tmp_path / "pacsnode.toml" and from_env.source is None
    assert from_file == from_env
