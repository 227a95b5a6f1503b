"""[worker] processes and torch_threads: sized to the machine unless set, validated."""

from __future__ import annotations

import pytest

from pacsnode.config import load_settings
from pacsnode.config import settings as settings_module
from pacsnode.errors import ConfigError


def test_processes_default_to_the_cores_and_threads_share_them_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 8)
    worker = load_settings(None).worker
    assert (worker.processes, worker.torch_threads) == (8, 1)
    worker = load_settings(None, {"PACSNODE_WORKER__PROCESSES": "2"}).worker
    assert (worker.processes, worker.torch_threads) == (2, 4)
    worker = load_settings(None, {"PACSNODE_WORKER__PROCESSES": "3"}).worker
    assert (worker.processes, worker.torch_threads) == (3, 2)


def test_zero_processes_analyses_in_the_node_process_with_every_core(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(settings_module, "usable_cores", lambda: 4)
    worker = load_settings(None, {"PACSNODE_WORKER__PROCESSES": "0"}).worker
    assert (worker.processes, worker.torch_threads) == (0, 4)


def test_both_can_be_set_in_the_file(tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "pacsnode.toml"
    path.write_text("[worker]\nprocesses = 3\ntorch_threads = 2\n")
    worker = load_settings(path).worker
    assert (worker.processes, worker.torch_threads) == (3, 2)


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        ("PACSNODE_WORKER__PROCESSES", "-1", "worker.processes: must be from 0 to 256"),
        ("PACSNODE_WORKER__TORCH_THREADS", "0", "worker.torch_threads: must be from 1 to 256"),
        ("PACSNODE_WORKER__PROCESSES", "two", "worker.processes: 'two' is not a whole number"),
    ],
)
def test_bad_values_are_refused(variable: str, value: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        load_settings(None, {variable: value})


def test_usable_cores_is_at_least_one() -> None:
    assert settings_module.usable_cores() >= 1
