"""Integration fixtures: a throwaway PostgreSQL server, started from the system's binaries
for the session, with a fresh database for each test that asks for one.

Without PostgreSQL's server binaries (deploy/install.sh installs them) those tests skip.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import pytest
from sqlalchemy.engine import URL

if TYPE_CHECKING:
    import psycopg

PG_USER: Final = "pacsnode"
"""The superuser initdb creates; trust authentication, so no password."""

PG_SYSTEM_USER: Final = "postgres"
"""Who runs initdb and the server when the tests run as root, which both refuse."""


def _postgres_bin() -> Path | None:
    """The directory of initdb, pg_ctl and postgres: the newest Debian-style
    ``/usr/lib/postgresql/<major>/bin``, else wherever PATH has initdb."""
    versions = [
        path.parent
        for path in Path("/usr/lib/postgresql").glob("*/bin/initdb")
        if path.parent.parent.name.isdigit()
    ]
    if versions:
        return max(versions, key=lambda bin_dir: int(bin_dir.parent.name))
    initdb = shutil.which("initdb")
    return None if initdb is None else Path(initdb).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PostgresServer:
    """A PostgreSQL server of the test session, listening on 127.0.0.1 only."""

    bin_dir: Path
    base: Path
    """Holds the data directory, the unix socket and the server log; removed at the end."""
    port: int
    run_as: str | None
    """The system user to run the server binaries as (when we are root), else None."""
    _numbers: Iterator[int] = field(default_factory=lambda: itertools.count(1))

    @property
    def data_dir(self) -> Path:
        return self.base / "data"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    def url(self, database: str) -> str:
        """The SQLAlchemy URL of ``database`` on this server."""
        return URL.create(
            "postgresql+psycopg",
            username=PG_USER,
            host="127.0.0.1",
            port=self.port,
            database=database,
        ).render_as_string(hide_password=False)

    def run(self, program: str, *args: str) -> None:
        """Run one of the server's programs, as the system user when we are root."""
        command: Sequence[str] = [str(self.bin_dir / program), *args]
        if self.run_as is not None:
            command = ["runuser", "-u", self.run_as, "--", *command]
        # cwd: the system user may not be allowed into the directory pytest runs in.
        out = subprocess.run(
            command, cwd=self.base, capture_output=True, text=True, check=False, timeout=120
        )
        if out.returncode != 0:
            raise RuntimeError(
                f"{program} failed ({out.returncode}):\n{out.stdout}{out.stderr}\n"
                f"server log:\n{self._log_tail()}"
            )

    def start(self) -> None:
        self.run(
            "initdb",
            f"--pgdata={self.data_dir}",
            f"--username={PG_USER}",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C",
            "--no-sync",
        )
        options = " ".join(
            [
                "-c listen_addresses=127.0.0.1",
                f"-c port={self.port}",
                f"-c unix_socket_directories={self.base}",
                # A scratch server: durability would only slow the tests down.
                "-c fsync=off",
                "-c synchronous_commit=off",
                "-c full_page_writes=off",
            ]
        )
        # -w returns once the server accepts connections, or fails after -t seconds.
        self.run(
            "pg_ctl",
            "start",
            f"--pgdata={self.data_dir}",
            f"--log={self.log_file}",
            "-w",
            "-t",
            "60",
            "-o",
            options,
        )

    def stop(self) -> None:
        self.run("pg_ctl", "stop", f"--pgdata={self.data_dir}", "-m", "fast", "-w")

    def create_database(self) -> str:
        """Create an empty database ``test_N`` and return its name."""
        from psycopg import sql

        name = f"test_{next(self._numbers)}"
        with self._admin() as connection:
            connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any connection a failed test left open to it."""
        from psycopg import sql

        with self._admin() as connection:
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            connection.execute(sql.SQL("DROP DATABASE {}").format(sql.Identifier(name)))

    @contextlib.contextmanager
    def _admin(self) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
        import psycopg

        # Autocommit: CREATE and DROP DATABASE refuse to run inside a transaction.
        with psycopg.connect(
            host="127.0.0.1", port=self.port, user=PG_USER, dbname="postgres", autocommit=True
        ) as connection:
            yield connection

    def _log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _run_as() -> str | None:
    """The system user for the server binaries, None to run them as ourselves.

    Skips the test when we are root and there is no such user to hand them to.
    """
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        pytest.skip(f"running as root and there is no {PG_SYSTEM_USER!r} user to run initdb")
    if shutil.which("runuser") is None:
        pytest.skip("running as root and there is no runuser to run initdb as another user")
    return PG_SYSTEM_USER


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """A PostgreSQL server for the session, from the system's binaries; skips without them."""
    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, "
            "no initdb on PATH); deploy/install.sh installs them"
        )
    pytest.importorskip("psycopg", reason="the psycopg driver is in the 'test' extra")
    run_as = _run_as()
    # Not pytest's tmp_path: its parents are 0700 root, closed to the postgres user.
    base = Path(tempfile.mkdtemp(prefix="pacsnode-pg-"))
    server = PostgresServer(bin_dir, base, _free_port(), run_as)
    try:
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            os.chown(base, entry.pw_uid, entry.pw_gid)
        base.chmod(0o700)
        try:
            server.start()
        except BaseException:
            with contextlib.suppress(RuntimeError):
                server.stop()  # pg_ctl may have left a server that was slow to answer
            raise
        try:
            yield server
        finally:
            server.stop()
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """The SQLAlchemy URL of a database shared by the session's tests."""
    return postgres_server.url(postgres_server.create_database())


@pytest.fixture
def fresh_postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The SQLAlchemy URL of an empty database of this test's own, dropped after it."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
