"""``pacsnode evaluate stack``'s read-out figures: hand-made read-outs against a hand-made
truth, the weighted kappa on a worked example, and the report when no read-out was made."""

from __future__ import annotations

import math

import pytest

from pacsnode.analysis.readout import (
    FLAG_KINDS,
    CobbAngle,
    Flag,
    ReadOut,
    Slip,
    SoftTissue,
    StepOff,
)
from pacsnode.cli.stack import markdown_report
from pacsnode.training.metrics import cohen_kappa
from pacsnode.training.stack_eval import (
    FilmScore,
    Matched,
    ReadoutScore,
    compare_readout,
    readout_figures,
    summarise,
)

LINE = ((0.0, 0.0), (1.0, 0.0))


def _truth(**over) -> dict:
    truth = {
        "unit": "mm",
        "cobb": [{"span": "C2-C7", "degrees": 20.0}],
        "step_offs": [
            {"upper": "C4", "lower": "C5", "anterior": 0.5, "posterior": 0.0},
            {"upper": "C5", "lower": "C6", "anterior": 4.0, "posterior": 3.5},
        ],
        "slips": [
            {"upper": "C4", "lower": "C5", "percent": 2.0, "grade": 0},
            {"upper": "C5", "lower": "C6", "percent": 30.0, "grade": 2},
        ],
        "soft_tissue": [
            {"level": "C2", "thickness": 4.0, "corner": [0, 0], "airway": [4, 0]},
            {"level": "C6", "thickness": 23.0, "corner": [0, 0], "airway": [23, 0]},
        ],
        "flags": {
            "malalignment": ["C5/C6"],
            "soft_tissue": ["C6"],
            "fracture_grade3": [],
            "listhesis_grade2": ["C5/C6"],
        },
    }
    truth.update(over)
    return truth


def _readout(unit: str = "mm", scale: float = 1.0, flags=()) -> ReadOut:
    """The stack's read-out with its own names ("V4"...): lengths divided by ``scale``."""
    return ReadOut(
        unit=unit,
        mm_per_pixel=None if unit == "px" else 0.2,
        cobb=(CobbAngle("C2", "inferior", "C7", "inferior", 23.0, LINE, LINE),),
        step_offs=(
            StepOff("V4", "V5", 1.5 / scale, 0.0, LINE, LINE),
            StepOff("V5", "V6", 2.0 / scale, 3.5 / scale, LINE, LINE),
            StepOff("V6", "V7", 9.0, 9.0, LINE, LINE),  # V7 matches nothing
        ),
        slips=(Slip("V4", "V5", 6.0, 1), Slip("V5", "V6", 20.0, 1)),
        soft_tissue=(SoftTissue("C6", 21.0 / scale, LINE[0], LINE[1]),),
        flags=tuple(flags),
        impression="",
    )


MATCHED = {"V4": "C4", "V5": "C5", "V6": "C6"}


def test_a_readout_is_compared_on_matched_pairs_and_names() -> None:
    score = compare_readout(
        _readout(flags=[Flag("fracture_grade3", "C5", "high", "")]), _truth(), MATCHED, 0.2
    )
    assert score.available and not score.in_pixels
    assert score.cobb == {"C2-C7": (20.0, 23.0)}
    assert score.steps == [("C4/C5", (0.5, 0.0), (1.5, 0.0)), ("C5/C6", (4.0, 3.5), (2.0, 3.5))]
    assert score.unmatched_pairs == 1
    assert score.slips == [("C4/C5", 2.0, 6.0, 0, 1), ("C5/C6", 30.0, 20.0, 2, 1)]
    assert score.soft_tissue == {"C2": (4.0, None), "C6": (23.0, 21.0)}
    assert score.flags == {
        "malalignment": (True, False),
        "soft_tissue": (True, False),
        "fracture_grade3": (False, True),
        "listhesis_grade2": (True, False),
    }


def test_a_readout_in_pixels_is_scaled_by_the_true_spacing() -> None:
    score = compare_readout(_readout("px", scale=0.2), _truth(), MATCHED, 0.2)
    assert score.in_pixels
    assert score.steps[1][2] == pytest.approx((2.0, 3.5))
    assert score.soft_tissue["C6"][1] == pytest.approx(21.0)


def _film(readout: ReadoutScore | None, grades=()) -> FilmScore:
    return FilmScore("x", "cervical", 0, Matched([], 0, 0), grades=list(grades), readout=readout)


def test_figures_over_films() -> None:
    first = compare_readout(_readout(), _truth(), MATCHED, 0.2)
    flagged = [Flag(k, "C5/C6", "high", "") for k in ("malalignment", "listhesis_grade2")]
    quiet = _truth(
        flags={k: [] for k in FLAG_KINDS},
        cobb=[{"span": "C2-C7", "degrees": -5.0}, {"span": "L1-S1", "degrees": 40.0}],
    )
    second = compare_readout(_readout(flags=flagged), quiet, MATCHED, 0.2)
    films = [_film(first, [(0, 0), (3, 2)]), _film(second), _film(None), _film(ReadoutScore(False))]
    figures = readout_figures(films)
    assert figures["films_with_truth"] == 3 and figures["films_read"] == 2
    assert figures["cobb"]["C2-C7"] == {
        "films": 2,
        "carried": 2,
        "carried_fraction": 1.0,
        "mae_degrees": pytest.approx((3.0 + 28.0) / 2),
    }
    assert figures["cobb"]["L1-S1"]["carried_fraction"] == 0.0
    assert math.isnan(figures["cobb"]["L1-S1"]["mae_degrees"])
    steps = figures["step_offs_mm"]
    # Per film: anterior errors 1.0 and 2.0, posterior 0.0 and 0.0.
    assert steps["pairs"] == 4 and steps["unmatched_read_pairs"] == 2
    assert steps["anterior"]["mean"] == pytest.approx(1.5)
    assert steps["both_lines"]["mean"] == pytest.approx(0.75)
    assert steps["both_lines"]["p95"] == pytest.approx(2.0)
    slips = figures["slips"]
    assert slips["percent_points"]["mean"] == pytest.approx(7.0)
    # (true, read) grades: (0, 1), (2, 1) twice each.
    assert slips["meyerding_linear_kappa"] == pytest.approx(
        cohen_kappa([0, 2, 0, 2], [1, 1, 1, 1], weights="linear", n_grades=6), nan_ok=True
    )
    assert figures["soft_tissue"]["C2"]["read"] == 0
    assert figures["soft_tissue"]["C6"]["error_mm"]["mean"] == pytest.approx(2.0)
    mal = figures["flags"]["malalignment"]
    assert (mal["tp"], mal["fn"], mal["fp"], mal["tn"]) == (0, 1, 1, 0)
    assert mal["sensitivity"] == 0.0 and mal["specificity"] == 0.0
    grade3 = figures["flags"]["fracture_grade3"]
    assert math.isnan(grade3["sensitivity"]) and grade3["specificity"] == 1.0
    assert figures["genant"]["vertebrae"] == 2
    assert figures["genant"]["linear_kappa"] == pytest.approx(
        cohen_kappa([0, 3], [0, 2], weights="linear")
    )


def test_without_a_readout_the_figures_are_not_available() -> None:
    figures = readout_figures([_film(ReadoutScore(False), [(1, 1), (0, 0)]), _film(None)])
    assert figures["available"] is False and figures["films_with_truth"] == 1
    assert "not available" in figures["note"]
    assert figures["genant"]["linear_kappa"] == 1.0
    table = {
        "tiers": {"classic": summarise([_film(ReadoutScore(False))])},
        "data": {"source": "phantoms"},
    }
    report = markdown_report(table)
    assert "| classic | not available (1 films with truth) |" in report


def test_the_report_shows_the_readout() -> None:
    score = compare_readout(_readout(), _truth(), MATCHED, 0.2)
    table = {"tiers": {"drr": summarise([_film(score)])}, "data": {"source": "phantoms"}}
    report = markdown_report(table)
    assert "## ER read-out against the truth" in report
    assert "| drr | 1/1 | 1/1 | 3.0 |" in report
    assert "| drr | malalignment | 1 | 0.000 |" in report


@pytest.mark.parametrize("n_grades", [3, 6])
def test_linear_kappa_on_a_worked_example(n_grades: int) -> None:
    # Counts (rows true 0-2, columns read 0-2): [[2, 1, 0], [0, 2, 1], [0, 0, 2]], N = 8.
    # Weights |i - j| / (k - 1): observed disagreement (0.5 + 0.5) / 8 = 1/8; chance
    # disagreement from the margins (3, 3, 2) x (2, 3, 3): 28 / 64. Kappa 1 - (1/8)/(28/64)
    # = 5/7, whatever the number of grades beyond those used.
    true = [0, 0, 0, 1, 1, 1, 2, 2]
    read = [0, 0, 1, 1, 1, 2, 2, 2]
    assert cohen_kappa(true, read, weights="linear", n_grades=n_grades) == pytest.approx(5 / 7)
