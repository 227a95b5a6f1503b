"""The ER read-out's geometry on bodies of known shape: Cobb angles, vertebral lines,
slips and their grades, fitted endplates, the airway's edge, flags and the impression."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import pytest
from skimage.draw import polygon2mask

from pacsnode.analysis.findings import Deformity, Finding
from pacsnode.analysis.measure import BodyHeights, body_heights
from pacsnode.analysis.readout import (
    AIRWAY_NEAREST,
    Corners,
    airway_distance,
    build_readout,
    cobb_degrees,
    meyerding_grade,
    shared_step,
    slip_percent,
    step_offs_between,
)


def box(centre, width, height, tilt_deg, *, front=(1.0, 0.0)) -> Corners:
    """Corners of a rectangular body centred at ``centre`` (x, y), tilted by ``tilt_deg``
    (positive turns its anterior end down), front towards ``front``'s x sign."""
    a = math.radians(tilt_deg)
    sign = 1.0 if front[0] > 0 else -1.0
    f = np.array([sign * math.cos(a), math.sin(a)])  # to the front, tipped down by the tilt
    d = np.array([-sign * math.sin(a), math.cos(a)])  # down, square to the front
    c = np.asarray(centre, float)

    def at(u, v):
        p = c + u * f + v * d
        return (float(p[0]), float(p[1]))

    return Corners(
        at(width / 2, -height / 2),
        at(width / 2, height / 2),
        at(-width / 2, -height / 2),
        at(-width / 2, height / 2),
    )


def turn(corners: Corners, degrees: float) -> Corners:
    a = math.radians(degrees)
    r = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])

    def t(p):
        q = r @ np.asarray(p)
        return (float(q[0]), float(q[1]))

    return Corners(
        *(
            t(p)
            for p in (
                corners.anterior_superior,
                corners.anterior_inferior,
                corners.posterior_superior,
                corners.posterior_inferior,
            )
        )
    )


def mirror(corners: Corners) -> Corners:
    return Corners(
        *(
            (-x, y)
            for x, y in (
                corners.anterior_superior,
                corners.anterior_inferior,
                corners.posterior_superior,
                corners.posterior_inferior,
            )
        )
    )


def test_a_lordotic_pair_reads_positive_and_kyphotic_negative() -> None:
    # Upper endplate tipped up in front, lower tipped down: open to the front, lordosis.
    upper, lower = box((0, 0), 16, 14, -10), box((0, 60), 16, 14, 10)
    assert cobb_degrees(upper, "inferior", lower, "inferior") == pytest.approx(20.0, abs=0.01)
    assert cobb_degrees(lower, "inferior", upper, "inferior") == pytest.approx(-20.0, abs=0.01)


@pytest.mark.parametrize("degrees", [0.0, 37.0, 90.0, 180.0, 291.0])
def test_the_angle_does_not_depend_on_how_the_film_lies(degrees: float) -> None:
    upper, lower = box((0, 0), 16, 14, -8), box((0, 60), 16, 14, 6)
    expected = cobb_degrees(upper, "superior", lower, "superior")
    assert cobb_degrees(turn(upper, degrees), "superior", turn(lower, degrees), "superior") == (
        pytest.approx(expected, abs=1e-6)
    )
    assert cobb_degrees(mirror(upper), "superior", mirror(lower), "superior") == pytest.approx(
        expected, abs=1e-6
    )


def test_a_body_shifted_forward_steps_both_lines_and_slips() -> None:
    upper, lower = box((4.0, 0), 40, 26, 0), box((0, 36), 40, 26, 0)
    anterior, posterior = step_offs_between(upper, lower)
    assert anterior == pytest.approx(4.0) and posterior == pytest.approx(4.0)
    assert slip_percent(upper, lower) == pytest.approx(10.0)
    # Facing left, forward is -x: the same slip reads the same.
    assert slip_percent(mirror(upper), mirror(lower)) == pytest.approx(10.0)
    assert step_offs_between(box((-4.0, 0), 40, 26, 0), lower)[0] == pytest.approx(-4.0)


@pytest.mark.parametrize(
    ("percent", "grade"),
    [(-12, 0), (0, 0), (9.9, 0), (10, 1), (25, 1), (25.1, 2), (50, 2), (60, 3), (80, 4), (130, 5)],
)
def test_meyerding_grades(percent: float, grade: int) -> None:
    assert meyerding_grade(percent) == grade


def test_a_fitted_endplate_follows_a_tilted_body_with_rounded_corners() -> None:
    from skimage.morphology import disk, opening

    a = math.radians(12.0)
    f, d = np.array([math.cos(a), math.sin(a)]), np.array([-math.sin(a), math.cos(a)])
    c = np.array([150.0, 150.0])
    pts = [c + u * f + v * d for u, v in ((60, -45), (60, 45), (-60, 45), (-60, -45))]
    mask = polygon2mask((300, 300), [(p[1], p[0]) for p in pts])
    mask = opening(mask, disk(12))  # round the corners
    h = body_heights(mask, axis=tuple(d), anterior=tuple(f))
    for plate in (h.superior_endplate, h.inferior_endplate):
        (x0, y0), (x1, y1) = plate
        assert math.degrees(math.atan2(y1 - y0, x1 - x0)) == pytest.approx(12.0, abs=0.7)


def synthetic_neck(distance_px: float) -> tuple[np.ndarray, Corners]:
    """A film with a bright body facing right and a dark airway band starting
    ``distance_px`` in front of the body's anterior wall."""
    image = np.full((400, 400), 0.45, np.float32)
    image[150:250, 100:200] = 0.85  # the body: front wall at x = 200
    wall = 200 + distance_px
    image[:, round(wall) : round(wall) + 60] = 0.15  # the airway
    rng = np.random.default_rng(0)
    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    corners = Corners((199.5, 150.5), (199.5, 249.5), (100.5, 150.5), (100.5, 249.5))
    return image, corners


@pytest.mark.parametrize("distance", [15.0, 30.0, 70.0, 140.0])
def test_the_airway_edge_is_found_in_front_of_the_body(distance: float) -> None:
    image, corners = synthetic_neck(distance)
    found = airway_distance(image, corners)
    assert found is not None
    assert found[0] == pytest.approx(distance, abs=2.0)


def test_the_body_own_edge_is_not_the_wall_where_the_airway_lies_further() -> None:
    # Corners found 16 px inside the body: its cortex falls into the soft tissue just in
    # front of the corner, which reads as a wall unless the search starts further out.
    image, _ = synthetic_neck(100.0)
    inside = Corners((183.5, 150.5), (183.5, 249.5), (100.5, 150.5), (100.5, 249.5))
    near = airway_distance(image, inside)
    assert near is not None
    assert near[0] == pytest.approx(16.0, abs=2.0)
    far = airway_distance(image, inside, nearest=AIRWAY_NEAREST["C6"])
    assert far is not None
    assert far[0] == pytest.approx(116.0, abs=2.0)


def test_a_tube_airway_is_read_at_its_wall_from_the_falls_onset() -> None:
    # An airway tube 40 px across seen from the side: the path through air grows like a
    # chord from its wall at x = 260, steeply at first; then blurred as a detector would.
    from scipy.ndimage import gaussian_filter

    from pacsnode.analysis.readout import AIRWAY_ONSET

    image = np.full((400, 400), 0.45, np.float32)
    image[150:250, 100:200] = 0.85
    x = np.arange(400) + 0.5
    u = np.clip((x - 260.0) / 40.0, 0.0, 1.0)
    image -= (0.3 * np.sqrt(u * (2.0 - u)) * (x > 260.0)).astype(np.float32)[None, :]
    image = gaussian_filter(image, 4.0)
    corners = Corners((199.5, 150.5), (199.5, 249.5), (100.5, 150.5), (100.5, 249.5))
    steepest = airway_distance(image, corners)
    onset = airway_distance(image, corners, onset=AIRWAY_ONSET["C2"])
    assert steepest is not None and onset is not None
    assert abs(onset[0] - 60.0) < abs(steepest[0] - 60.0)
    assert onset[0] == pytest.approx(60.0, abs=2.0)


def test_no_airway_no_distance() -> None:
    image = np.full((400, 400), 0.45, np.float32)
    image[150:250, 100:200] = 0.85
    corners = Corners((199.5, 150.5), (199.5, 249.5), (100.5, 150.5), (100.5, 249.5))
    assert airway_distance(image, corners) is None


@dataclass(frozen=True)
class Body:
    label: str
    identified: bool
    centroid: tuple[float, float]
    heights: BodyHeights | None
    finding: Finding | None = None
    origin: str = "agreement"


def body_of(label: str, corners: Corners, *, identified: bool = True, grade: int = 0) -> Body:
    pts = np.array(
        [
            corners.anterior_superior,
            corners.anterior_inferior,
            corners.posterior_superior,
            corners.posterior_inferior,
        ]
    )
    mid = lambda a, b: ((a[0] + b[0]) / 2, (a[1] + b[1]) / 2)  # noqa: E731
    heights = BodyHeights(
        corners.anterior_superior,
        corners.anterior_inferior,
        corners.posterior_superior,
        corners.posterior_inferior,
        mid(corners.anterior_superior, corners.posterior_superior),
        mid(corners.anterior_inferior, corners.posterior_inferior),
        100.0,
        100.0,
        100.0,
    )
    finding = None
    if grade:
        finding = Finding(0.5, grade, Deformity.WEDGE, 100.0)
    c = pts.mean(axis=0)
    return Body(label, identified, (float(c[0]), float(c[1])), heights, finding)


def chain(shift_at: int | None = None, shift: float = 0.0, labels=None) -> list[Body]:
    """Six upright bodies 100 px tall, 130 px apart; those above ``shift_at`` moved forward."""
    labels = labels or ["C2", "C3", "C4", "C5", "C6", "C7"]
    out = []
    for i, label in enumerate(labels):
        x = 200.0 + (shift if shift_at is not None and i < shift_at else 0.0)
        out.append(body_of(label, box((x, 100.0 + 130 * i), 100, 100, 0)))
    return out


def test_a_shifted_level_is_flagged_in_mm_and_not_without_spacing() -> None:
    bodies = chain(shift_at=3, shift=40.0)  # 40 px = 4 mm at 0.1 mm a pixel
    readout = build_readout(bodies, None, 0.1)
    assert [s.level for s in readout.step_offs] == ["C2/C3", "C3/C4", "C4/C5", "C5/C6", "C6/C7"]
    assert readout.step_offs[2].anterior == pytest.approx(4.0)
    kinds = [(f.kind, f.level) for f in readout.flags]
    assert ("malalignment", "C4/C5") in kinds
    assert readout.slips[2].percent == pytest.approx(40.0) and readout.slips[2].grade == 2
    assert ("listhesis_grade2", "C4/C5") in kinds
    assert "step-off 4.0 mm at C4/C5" in readout.impression
    plain = build_readout(bodies, None, None)
    assert plain.unit == "px" and [f.kind for f in plain.flags] == ["listhesis_grade2"]


def test_a_missing_body_breaks_the_lines_and_names_must_follow_on() -> None:
    bodies = chain()
    del bodies[2]  # C4 not found: C3 and C5 are not neighbours
    readout = build_readout(bodies, None, 0.1)
    assert "C3/C5" not in [s.level for s in readout.step_offs]
    unnamed = [Body(f"V{i}", False, b.centroid, b.heights) for i, b in enumerate(bodies, 1)]
    assert "V2/V3" not in [s.level for s in build_readout(unnamed, None, 0.1).step_offs]


def test_cobb_needs_both_ends_named_and_a_grade_3_is_flagged() -> None:
    bodies = chain()
    bodies[3] = body_of("C5", box((200.0, 490.0), 100, 100, 0), grade=3)
    readout = build_readout(bodies, None, 0.1)
    assert [c.span for c in readout.cobb] == ["C2-C7"]
    assert readout.cobb[0].degrees == pytest.approx(0.0, abs=1e-6)
    assert ("fracture_grade3", "C5") in [(f.kind, f.level) for f in readout.flags]
    unnamed = [Body(f"V{i}", False, b.centroid, b.heights) for i, b in enumerate(bodies, 1)]
    assert build_readout(unnamed, None, 0.1).cobb == ()


def test_soft_tissue_over_the_limit_is_flagged() -> None:
    image, c2 = synthetic_neck(90.0)  # 9 mm at 0.1 mm a pixel: over C2's 7 mm
    bodies = [body_of("C2", c2)]
    readout = build_readout(bodies, image, 0.1)
    assert readout.soft_tissue[0].level == "C2"
    assert readout.soft_tissue[0].thickness == pytest.approx(9.0, abs=0.3)
    assert [f.kind for f in readout.flags] == ["soft_tissue"]
    assert "prevertebral soft tissue 9 mm at C2" in readout.impression


@pytest.mark.parametrize(
    ("anterior", "posterior", "shift"),
    [(4.0, 3.5, 3.5), (-4.0, -5.0, -4.0), (4.0, -1.0, 0.0), (0.0, 6.0, 0.0)],
)
def test_the_step_off_is_the_shift_both_lines_share(anterior, posterior, shift) -> None:
    assert shared_step(anterior, posterior) == pytest.approx(shift)


def test_one_line_stepping_alone_is_a_corner_not_malalignment() -> None:
    bodies = chain()
    moved = bodies[3].heights
    assert moved is not None
    # C5's posterior-superior corner lost 5 mm under a pedicle: only the posterior line steps.
    px, py = moved.posterior_superior
    bodies[3] = Body(
        "C5", True, bodies[3].centroid, replace(moved, posterior_superior=(px + 50, py))
    )
    readout = build_readout(bodies, None, 0.1)
    step = next(s for s in readout.step_offs if s.level == "C4/C5")
    assert abs(step.posterior) == pytest.approx(5.0) and step.largest == 0.0
    assert readout.flags == () and readout.slips[2].grade == 0


def test_alignment_is_not_read_beside_an_outline_the_semantic_path_alone_drew() -> None:
    """A body outlined only by the whole-spine UNet's leftover blob has corners where the
    blob was split: a 4 mm shift against it is listed as not read, not flagged, and the
    impression says so; its Cobb endplate still counts."""
    bodies = chain(shift_at=3, shift=40.0)
    bodies[3] = replace(bodies[3], origin="semantic_leftover")  # C5
    readout = build_readout(bodies, None, 0.1)
    assert readout.alignment_not_read == ("C4/C5", "C5/C6")
    assert [s.level for s in readout.step_offs] == ["C2/C3", "C3/C4", "C6/C7"]
    assert [s.level for s in readout.slips] == ["C2/C3", "C3/C4", "C6/C7"]
    assert readout.flags == ()
    assert "alignment not read at C4/C5, C5/C6 (outline from one path only)" in (readout.impression)
    assert [c.span for c in readout.cobb] == ["C2-C7"]
    confirmed = build_readout(chain(shift_at=3, shift=40.0), None, 0.1)
    assert confirmed.alignment_not_read == ()
    assert ("malalignment", "C4/C5") in [(f.kind, f.level) for f in confirmed.flags]
