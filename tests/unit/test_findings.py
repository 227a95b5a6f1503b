"""Genant grades and deformity shapes from body heights, checked by hand."""

from __future__ import annotations

import pytest

from pacsnode.analysis.findings import Deformity, genant_grade, read_findings
from pacsnode.analysis.measure import BodyHeights


def body(anterior: float, middle: float, posterior: float) -> BodyHeights:
    origin = (0.0, 0.0)
    return BodyHeights(origin, origin, origin, origin, origin, origin, anterior, middle, posterior)


@pytest.mark.parametrize(
    ("loss", "grade"), [(0.0, 0), (0.199, 0), (0.2, 1), (0.249, 1), (0.25, 2), (0.40, 2), (0.41, 3)]
)
def test_genant_thresholds(loss: float, grade: int) -> None:
    assert genant_grade(loss) == grade


def test_genant_refuses_nonsense() -> None:
    with pytest.raises(ValueError):
        genant_grade(-0.1)


def test_a_normal_chain_has_no_findings() -> None:
    chain = [body(30, 29, 30), body(31, 30, 31), body(32, 31, 32)]
    assert [f.grade for f in read_findings(chain)] == [0, 0, 0]
    assert all(f.deformity is Deformity.NONE for f in read_findings(chain))


def test_wedge_biconcave_and_crush() -> None:
    chain = [
        body(30, 30, 30),
        body(17, 27, 30),  # anterior 43 % lower: severe wedge, past 40 %
        body(30, 30, 30),
        body(30, 23, 30),  # middle 23 % lower: mild biconcave
        body(30, 30, 30),
        body(13, 13, 14),  # flattened as a whole, 57 % below its neighbours: severe crush
        body(30, 30, 30),
    ]
    findings = read_findings(chain)
    assert [(f.grade, f.deformity) for f in findings] == [
        (0, Deformity.NONE),
        (3, Deformity.WEDGE),
        (0, Deformity.NONE),
        (1, Deformity.BICONCAVE),
        (0, Deformity.NONE),
        (3, Deformity.CRUSH),
        (0, Deformity.NONE),
    ]
    assert findings[1].height_loss == pytest.approx(13 / 30)
    assert findings[5].expected_height == 30


def test_an_empty_chain_and_a_lone_body() -> None:
    assert read_findings([]) == []
    [alone] = read_findings([body(18.5, 28, 30)])  # 38 % lower: moderate, past the margin
    assert alone is not None and alone.grade == 2 and alone.deformity is Deformity.WEDGE


def test_a_moderate_grade_needs_its_margin() -> None:
    from pacsnode.analysis.findings import MODERATE_MARGIN, SEVERE_MARGIN, called_grade

    assert called_grade(0.26) == 1  # just past 25 %: mild, not moderate
    assert called_grade(0.25 + MODERATE_MARGIN - 0.001) == 1
    assert called_grade(0.25 + MODERATE_MARGIN + 0.001) == 2
    assert called_grade(0.40 + SEVERE_MARGIN - 0.001) == 2
    assert called_grade(0.40 + SEVERE_MARGIN + 0.001) == 3
    assert called_grade(0.22) == 1 and called_grade(0.1) == 0
    # a severe margin never lets a severe reading fall below the moderate call's bound
    assert called_grade(0.41, margin=0.2, severe_margin=0.0) == 1


def test_c2_and_s1_are_measured_but_not_graded() -> None:
    dens_tall_c2 = body(34, 20, 34)  # C2's corners run up its dens
    chain = [dens_tall_c2, body(13, 12, 13), body(13, 12, 13)]
    labels = ["C2", "C3", "C4"]
    findings = read_findings(chain, labels)
    assert findings[0] is None
    # C2's dens does not raise its neighbours' expected height: C3 reads normal
    assert findings[1] is not None and findings[1].grade == 0
    unnamed = read_findings(chain)[1]  # unnamed, the dens would have made C3 a fracture
    assert unnamed is not None and unnamed.grade == 3
    assert read_findings([body(30, 30, 30), body(30, 30, 30)], ["L5", "S1"])[1] is None
    with pytest.raises(ValueError):
        read_findings(chain, labels[:2])


@pytest.mark.parametrize(
    ("doubtful", "why"),
    [
        (body(29, 26, 12), "posterior wall lost under an intact front"),
        (body(18, 29, 16), "middle height above both corners"),
        (body(30, 60, 45), "mask grown far past its neighbours"),
    ],
)
def test_a_doubtful_shape_is_never_called_moderate_or_severe(
    doubtful: BodyHeights, why: str
) -> None:
    chain = [body(30, 29, 30), body(30, 29, 30), doubtful, body(30, 29, 30), body(30, 29, 30)]
    finding = read_findings(chain)[2]
    assert finding is not None and finding.height_loss > 0.4, why
    assert finding.grade == 1, why


def test_a_true_wedge_or_crush_keeps_its_severe_call() -> None:
    chain = [body(30, 29, 30), body(30, 29, 30), body(14, 22, 29), body(30, 29, 30)]
    assert read_findings(chain)[2].grade == 3  # type: ignore[union-attr]
    chain[2] = body(15, 16, 17)
    assert read_findings(chain)[2].grade == 3  # type: ignore[union-attr]


def test_grade_confidence_is_a_probability_that_falls_near_the_bounds() -> None:
    from pacsnode.analysis.findings import grade_confidence

    assert grade_confidence(0.02, 0, sd=0.06) > 0.99
    assert grade_confidence(0.19, 0, sd=0.06) < 0.65
    assert grade_confidence(0.6, 3, sd=0.06) > 0.99
    total = sum(grade_confidence(0.23, g) for g in range(4))
    assert total == pytest.approx(1.0)
    assert grade_confidence(0.32, 2) > grade_confidence(0.27, 2)


def test_findings_carry_their_confidence() -> None:
    chain = [body(30.0, 30.0, 30.0), body(30.0, 30.0, 30.0), body(30.0, 30.0, 30.0)]
    assert all(0.9 < f.confidence <= 1.0 for f in read_findings(chain))
