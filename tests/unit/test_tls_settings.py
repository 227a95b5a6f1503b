"""[tls] and the destinations' TLS keys: defaults, environment overrides, and every mistake
found at start-up with its ``section.key``, files loaded as the listener would."""

from __future__ import annotations

import ssl
import textwrap
from pathlib import Path

import pytest

from pacsnode.config import Destination, TlsSettings, load_settings
from pacsnode.config.tls import client_context, server_context, subject_of
from pacsnode.errors import ConfigError
from tests.tls import Certificates, make_certificates


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certs"))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "pacsnode.toml"
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def problems(path: Path | None, environ: dict[str, str] | None = None) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ or {})
    return caught.value.problems


def tls_section(certs: Certificates, **extra: str) -> str:
    lines = [
        "[tls]",
        f'certificate = "{certs.node.certificate}"',
        f'private_key = "{certs.node.private_key}"',
        f'ca_certificates = "{certs.ca.certificate}"',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def test_no_tls_by_default(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_settings(None, {}).tls is None
    # An empty [tls] table is no TLS either (and not an error).
    assert load_settings(write(tmp_path, "[tls]\n"), {}).tls is None


def test_tls_from_the_file_with_its_defaults(tmp_path: Path, certs: Certificates) -> None:
    settings = load_settings(write(tmp_path, tls_section(certs)), {})
    assert settings.tls == TlsSettings(
        certificate=certs.node.certificate,
        private_key=certs.node.private_key,
        ca_certificates=certs.ca.certificate,
        require_client_certificate=True,
        minimum_version="TLSv1.2",
        handshake_timeout_seconds=10.0,
    )


def test_relative_tls_paths_resolve_against_the_file(tmp_path: Path, certs: Certificates) -> None:
    # The certificates sit beside the file, as in /etc/pacsnode/.
    text = tls_section(certs).replace(f"{certs.ca.folder}/", "")
    path = certs.ca.folder / "pacsnode.toml"
    path.write_text(text)
    settings = load_settings(path, {})
    assert settings.tls is not None and settings.tls.certificate == certs.node.certificate


def test_tls_from_the_environment(tmp_path: Path, certs: Certificates) -> None:
    settings = load_settings(
        None,
        {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path),
            "PACSNODE_TLS__CERTIFICATE": str(certs.node.certificate),
            "PACSNODE_TLS__PRIVATE_KEY": str(certs.node.private_key),
            "PACSNODE_TLS__REQUIRE_CLIENT_CERTIFICATE": "no",
            "PACSNODE_TLS__MINIMUM_VERSION": "tlsv1.3",
            "PACSNODE_TLS__HANDSHAKE_TIMEOUT_SECONDS": "2.5",
        },
    )
    assert settings.tls is not None
    assert settings.tls.ca_certificates is None  # not needed when certificates are not
    assert settings.tls.require_client_certificate is False
    assert settings.tls.minimum_version == "TLSv1.3"
    assert settings.tls.handshake_timeout_seconds == 2.5


def test_tls_mistakes_name_their_key(tmp_path: Path, certs: Certificates) -> None:
    path = write(
        tmp_path,
        """
        [tls]
        certificate = "missing.pem"
        minimum_version = "TLSv1.1"
        require_client_certificate = "yes"
        handshake_timeout_seconds = 0
        """,
    )
    found = problems(path)
    assert "tls.private_key: missing" in found
    assert any(p.startswith("tls.minimum_version: 'TLSv1.1' is not one of") for p in found)
    assert "tls.require_client_certificate: expected true or false, got a string" in found
    assert any(p.startswith("tls.handshake_timeout_seconds: must be a positive") for p in found)


def test_tls_requires_the_ca_when_client_certificates_are(
    tmp_path: Path, certs: Certificates
) -> None:
    text = tls_section(certs).replace(f'ca_certificates = "{certs.ca.certificate}"\n', "")
    assert problems(write(tmp_path, text)) == ("tls.ca_certificates: missing",)


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("certificate", "no such file"),
        ("private_key", "no such file"),
        ("ca_certificates", "no such file"),
    ],
)
def test_tls_files_must_exist(tmp_path: Path, certs: Certificates, key: str, fragment: str) -> None:
    text = tls_section(certs)
    original = {
        "certificate": certs.node.certificate,
        "private_key": certs.node.private_key,
        "ca_certificates": certs.ca.certificate,
    }[key]
    found = problems(write(tmp_path, text.replace(str(original), str(tmp_path / "gone.pem"))))
    assert len(found) == 1 and found[0].startswith(f"tls.{key}: ") and fragment in found[0]


def test_tls_files_must_load(tmp_path: Path, certs: Certificates) -> None:
    # Another certificate's key: does not match.
    mismatched = tls_section(certs).replace(
        str(certs.node.private_key), str(certs.modality.private_key)
    )
    found = problems(write(tmp_path, mismatched))
    assert len(found) == 1 and found[0].startswith("tls.private_key: "), found
    assert "KEY_VALUES_MISMATCH" in found[0]
    # A CA file that holds no certificate.
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    found = problems(
        write(tmp_path, tls_section(certs).replace(str(certs.ca.certificate), str(junk)))
    )
    assert len(found) == 1 and found[0].startswith("tls.ca_certificates: "), found


def test_destination_tls_takes_the_node_certificate_unless_given(
    tmp_path: Path, certs: Certificates
) -> None:
    path = write(
        tmp_path,
        tls_section(certs)
        + textwrap.dedent(
            f"""
            [[destinations]]
            name = "pacs"
            ae_title = "PACS"
            host = "localhost"
            port = 2762
            tls = true

            [[destinations]]
            name = "archive"
            ae_title = "ARCHIVE"
            host = "localhost"
            port = 2762
            tls = true
            ca_certificates = "{certs.other_ca.certificate}"
            certificate = "{certs.pacs.certificate}"
            private_key = "{certs.pacs.private_key}"

            [[destinations]]
            name = "plain"
            ae_title = "PLAIN"
            host = "localhost"
            port = 104
            """
        ),
    )
    settings = load_settings(path, {})
    assert settings.destination("pacs") == Destination(
        "pacs",
        "PACS",
        "localhost",
        2762,
        tls=True,
        ca_certificates=certs.ca.certificate,
        certificate=certs.node.certificate,
        private_key=certs.node.private_key,
    )
    archive = settings.destination("archive")
    assert archive.ca_certificates == certs.other_ca.certificate
    assert archive.certificate == certs.pacs.certificate
    assert settings.destination("plain") == Destination("plain", "PLAIN", "localhost", 104)


def test_destination_tls_without_tls_section_uses_the_system_trust_store(
    tmp_path: Path,
) -> None:
    settings = load_settings(
        None,
        {
            "PACSNODE_STORAGE__DATA_DIR": str(tmp_path),
            "PACSNODE_DESTINATIONS__0__NAME": "pacs",
            "PACSNODE_DESTINATIONS__0__AE_TITLE": "PACS",
            "PACSNODE_DESTINATIONS__0__HOST": "pacs.example.org",
            "PACSNODE_DESTINATIONS__0__PORT": "2762",
            "PACSNODE_DESTINATIONS__0__TLS": "true",
        },
    )
    (destination,) = settings.destinations
    assert destination.tls and destination.ca_certificates is None
    assert destination.certificate is None and destination.private_key is None
    context = client_context(destination)
    assert context.verify_mode is ssl.CERT_REQUIRED and context.check_hostname


def test_destination_tls_mistakes(tmp_path: Path, certs: Certificates) -> None:
    path = write(
        tmp_path,
        f"""
        [[destinations]]
        name = "a"
        ae_title = "A"
        host = "h"
        port = 104
        ca_certificates = "{certs.ca.certificate}"

        [[destinations]]
        name = "b"
        ae_title = "B"
        host = "h"
        port = 104
        tls = true
        certificate = "{certs.pacs.certificate}"

        [[destinations]]
        name = "c"
        ae_title = "C"
        host = "h"
        port = 104
        tls = "on"

        [[destinations]]
        name = "d"
        ae_title = "D"
        host = "h"
        port = 104
        tls = true
        ca_certificates = "{tmp_path / "nowhere.pem"}"
        """,
    )
    found = problems(path)
    assert "destinations[0].ca_certificates: only with tls = true" in found
    assert "destinations[1].private_key: missing (needed with certificate)" in found
    assert "destinations[2].tls: expected true or false, got a string" in found
    assert any(
        p.startswith("destinations[3].ca_certificates: ") and "no such file" in p for p in found
    )
    assert len(found) == 4, found


def test_contexts(tmp_path: Path, certs: Certificates) -> None:
    tls = TlsSettings(certs.node.certificate, certs.node.private_key, certs.ca.certificate)
    server = server_context(tls)
    assert server.verify_mode is ssl.CERT_REQUIRED
    assert server.minimum_version is ssl.TLSVersion.TLSv1_2
    optional = TlsSettings(
        certs.node.certificate,
        certs.node.private_key,
        certs.ca.certificate,
        require_client_certificate=False,
        minimum_version="TLSv1.3",
    )
    assert server_context(optional).verify_mode is ssl.CERT_OPTIONAL
    assert server_context(optional).minimum_version is ssl.TLSVersion.TLSv1_3
    client = client_context(
        Destination("p", "P", "localhost", 1, tls=True, ca_certificates=certs.ca.certificate)
    )
    assert client.verify_mode is ssl.CERT_REQUIRED and client.check_hostname


def test_subject_of() -> None:
    cert = {"subject": ((("organizationName", "Hospital"),), (("commonName", "DX_ROOM1"),))}
    assert subject_of(cert) == "CN=DX_ROOM1,O=Hospital"
    assert subject_of({}) is None and subject_of(None) is None


def test_the_shipped_file_documents_every_tls_key() -> None:
    shipped = (Path(__file__).resolve().parents[2] / "config" / "pacsnode.toml").read_text()
    assert "# [tls]\n" in shipped
    for key in TlsSettings.__dataclass_fields__:
        assert f"\n# {key} = " in shipped, key
    for key in ("tls", "ca_certificates", "certificate", "private_key"):
        assert f"\n# {key} = " in shipped.split("# [[destinations]]", 1)[1], key
