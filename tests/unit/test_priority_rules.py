"""``[[priority]]`` rules: how the file is read and checked, and what a rule matches."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacsnode.config import load_settings
from pacsnode.config.settings import PriorityRule
from pacsnode.errors import ConfigError
from pacsnode.receive.priority import request_priority, rule_priority
from tests.films import make_film


def settings_of(tmp_path: Path, text: str, **environ: str):
    path = tmp_path / "pacsnode.toml"
    path.write_text(text)
    return load_settings(path, environ)


def test_rules_are_read_in_file_order(tmp_path: Path) -> None:
    settings = settings_of(
        tmp_path,
        """
[[priority]]
name = "er"
priority = 100
calling_aets = ["ER_DX1", " ER_DX2 "]

[[priority]]
priority = -5
study_descriptions = "*research*"
request_priorities = "low"
modalities = ["dx"]
""",
    )
    er, research = settings.priority
    assert er == PriorityRule(name="er", priority=100, calling_aets=("ER_DX1", "ER_DX2"))
    assert research.name == "priority[1]" and research.priority == -5
    assert research.study_descriptions == ("*research*",)
    assert research.request_priorities == ("LOW",) and research.modalities == ("DX",)
    assert load_settings(None, {}).priority == ()  # none by default


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("[[priority]]\npriority = 5\n", "priority[0]: no condition"),
        ('[[priority]]\ncalling_aets = ["A"]\n', "priority[0].priority: missing"),
        ('[[priority]]\npriority = 5000\ncalling_aets = ["A"]\n', "priority[0].priority"),
        ('[[priority]]\npriority = 1\nrequest_priorities = "URGENT"\n', "not one of HIGH"),
        ('[[priority]]\npriority = 1\ndepartments = [""]\n', "must not be empty"),
        ('[[priority]]\npriority = 1\ncolour = "red"\n', "priority[0].colour: unknown key"),
        ("[priority]\npriority = 1\n", "priority: expected [[priority]] tables"),
    ],
)
def test_mistakes_are_reported(tmp_path: Path, text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as raised:
        settings_of(tmp_path, text)
    assert any(problem in line for line in raised.value.problems), raised.value.problems


def test_rules_cannot_come_from_the_environment(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"file only"):
        settings_of(tmp_path, "", PACSNODE_PRIORITY__PRIORITY="5")


def test_patterns_are_whole_value_shell_patterns_ignoring_case() -> None:
    rule = PriorityRule(name="stat", priority=50, study_descriptions=("*STAT*", "urgent"))

    def matches(description: str | None) -> bool:
        return rule.matches(
            calling_ae="X",
            modality="DX",
            study_description=description,
            department=None,
            request_priority="MEDIUM",
        )

    assert matches("XR c-spine stat") and matches("URGENT") and matches(" Urgent ")
    assert not matches("urgently") and not matches("") and not matches(None)


def test_the_highest_matching_rule_wins(tmp_path: Path) -> None:
    film = make_film()
    film.StudyDescription = "STAT lateral"
    film.InstitutionalDepartmentName = "Emergency"
    path = tmp_path / "film.dcm"
    film.save_as(path, enforce_file_format=True)
    rules = (
        PriorityRule(name="stat", priority=50, study_descriptions=("*STAT*",)),
        PriorityRule(name="ed", priority=70, departments=("emerg*",)),
        PriorityRule(name="other", priority=90, calling_aets=("OTHER",)),
    )
    found = rule_priority(rules, path=path, calling_ae="X", modality="DX", request=None)
    assert (found.priority, found.rule and found.rule.name) == (70, "ed")
    none = rule_priority((), path=path, calling_ae="X", modality="DX", request=None)
    assert none == (0, None)


def test_request_priority_names() -> None:
    assert [request_priority(code) for code in (0, 1, 2, 7, None)] == [
        "MEDIUM",
        "HIGH",
        "LOW",
        None,
        None,
    ]
