"""``[[destinations]] send``: which result objects each destination gets. Validated at
start-up; the job loop queues each destination only the kinds it names, and the burned-in
Secondary Capture is made only when some destination takes it."""

from __future__ import annotations

import textwrap
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from pacsnode.audit import AuditLog
from pacsnode.config import DEFAULT_SEND, RESULT_KINDS, Destination, load_settings
from pacsnode.db import create_schema, make_engine
from pacsnode.errors import ConfigError
from pacsnode.export.uids import ExportKind
from pacsnode.jobs import JobQueue
from pacsnode.worker import Analysis, JobLoop, ResultFile, wants_capture


def _settings(tmp_path: Path, sends: list[str | None]) -> object:
    tables = []
    for index, send in enumerate(sends):
        line = "" if send is None else f"send = {send}\n"
        tables.append(
            f'[[destinations]]\nname = "d{index}"\nae_title = "PACS"\nhost = "h"\n'
            f"port = {104 + index}\n{line}"
        )
    path = tmp_path / "pacsnode.toml"
    path.write_text("\n".join(tables), encoding="utf-8")
    return load_settings(path, {})


def test_the_kinds_are_the_export_kinds() -> None:
    assert tuple(kind.value for kind in ExportKind) == RESULT_KINDS
    assert set(DEFAULT_SEND) == {"seg", "sr", "gsps"}


def test_send_defaults_and_accepts_any_kinds(tmp_path: Path) -> None:
    settings = _settings(tmp_path, [None, '["SR", "sc"]', '["seg", "sr", "gsps", "sc"]'])
    sends = [d.send for d in settings.destinations]  # type: ignore[attr-defined]
    assert sends == [DEFAULT_SEND, ("sr", "sc"), ("seg", "sr", "gsps", "sc")]
    assert Destination("x", "X", "h", 104).send == DEFAULT_SEND


def test_send_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "pacsnode.toml"
    path.write_text(
        textwrap.dedent(
            """
            [[destinations]]
            name = "pacs"
            ae_title = "PACS"
            host = "h"
            port = 104
            """
        ),
        encoding="utf-8",
    )
    settings = load_settings(path, {"PACSNODE_DESTINATIONS__0__SEND": "seg, sc"})
    assert settings.destinations[0].send == ("seg", "sc")


@pytest.mark.parametrize(
    ("send", "problem"),
    [
        ('["seg", "xray"]', "destinations[0].send: item 2: 'xray' is not one of seg, sr, gsps, sc"),
        ("[]", "destinations[0].send: sends nothing; give some of seg, sr, gsps, sc"),
        ('["sr", "sr"]', "destinations[0].send: lists the same value twice"),
        ('"seg"', "destinations[0].send: expected a list, got a string"),
    ],
)
def test_a_bad_send_is_a_clear_config_error(tmp_path: Path, send: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        _settings(tmp_path, [send])
    assert caught.value.problems == (problem,)


def test_capture_is_wanted_only_when_a_destination_takes_it() -> None:
    plain = Destination("a", "A", "h", 104)
    capture = Destination("b", "B", "h", 105, send=("sc",))
    assert not wants_capture([plain]) and not wants_capture([])
    assert wants_capture([plain, capture])


class _Analyst:
    """Stands in for the stack: every film gives the four result objects."""

    def __init__(self, results_dir: Path) -> None:
        self.algorithm = SimpleNamespace(version="stack-test")
        self.results_dir = results_dir

    def directory_for(self, sop_instance_uid: str) -> Path:
        return self.results_dir / sop_instance_uid

    def analyse(self, path: Path) -> Analysis:
        results = tuple(
            ResultFile(kind, f"2.25.{number}", self.results_dir / f"{kind}.dcm")
            for number, kind in enumerate(RESULT_KINDS, start=1)
        )
        return Analysis(results, "4 vertebrae", 0.1, {})


def test_the_job_loop_queues_each_destination_only_its_kinds(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'q.db'}")
    create_schema(engine)
    queue = JobQueue(engine)
    queue.enqueue(
        sop_instance_uid="1.2.3.4",
        study_instance_uid="1.2.3",
        series_instance_uid="1.2.3.5",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.1.1",
        calling_ae="TESTSCU",
        spool_path=tmp_path / "film.dcm",
    )
    destinations = (
        Destination("pacs", "PACS", "h", 104),
        Destination("viewer", "VIEWER", "h", 105, send=("sc",)),
        Destination("archive", "ARCHIVE", "h", 106, send=("seg", "sr")),
    )
    loop = JobLoop(
        "analysis-0",
        queue,
        AuditLog(engine),
        threading.Event(),
        analyst=_Analyst(tmp_path / "results"),  # type: ignore[arg-type]
        destinations=destinations,
        lease_seconds=30,
    )
    assert loop.step() is True
    queued = sorted((d.destination, d.kind) for d in queue.list_deliveries())
    assert queued == [
        ("archive", "seg"),
        ("archive", "sr"),
        ("pacs", "gsps"),
        ("pacs", "seg"),
        ("pacs", "sr"),
        ("viewer", "sc"),
    ]
    engine.dispose()
