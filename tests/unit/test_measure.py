"""Body heights from masks of known shape: upright, tilted, wedged, and biconcave."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.draw import polygon2mask

from pacsnode.analysis.measure import body_heights

SHAPE = (300, 300)


def body(corners_xy: list[tuple[float, float]]) -> np.ndarray:
    """Mask of a polygon given as (x, y) film points; polygon2mask takes (row, col)."""
    return polygon2mask(SHAPE, [(y, x) for x, y in corners_xy])


def turned(points: list[tuple[float, float]], degrees: float, centre=(150.0, 150.0)):
    a = math.radians(degrees)
    cx, cy = centre
    return [
        (
            cx + (x - cx) * math.cos(a) - (y - cy) * math.sin(a),
            cy + (x - cx) * math.sin(a) + (y - cy) * math.cos(a),
        )
        for x, y in points
    ]


def test_an_upright_box_has_equal_heights_and_its_corners() -> None:
    # Front to the left (x smaller): AS (100, 110), AI (100, 190), PS (200, 110), PI (200, 190).
    mask = body([(100, 110), (200, 110), (200, 190), (100, 190)])
    h = body_heights(mask, axis=(0.0, 1.0), anterior=(-1.0, 0.0))
    assert h.anterior == pytest.approx(80, abs=1.5)
    assert h.posterior == pytest.approx(80, abs=1.5)
    assert h.middle == pytest.approx(80, abs=1.5)
    assert np.allclose(h.anterior_superior, (100.5, 110.5), atol=1.0)
    assert np.allclose(h.posterior_inferior, (199.5, 189.5), atol=1.0)
    assert h.height_ratio > 0.97


def test_an_anterior_wedge_on_a_tilted_spine() -> None:
    # Anterior height 48, posterior 80 (a 40 % wedge), the spine tilted 20 degrees.
    upright = [(100, 126), (200, 110), (200, 190), (100, 174)]
    tilt = 20.0
    mask = body(turned(upright, tilt))
    axis = (-math.sin(math.radians(tilt)), math.cos(math.radians(tilt)))
    front = (-math.cos(math.radians(tilt)), -math.sin(math.radians(tilt)))
    h = body_heights(mask, axis=axis, anterior=front)
    assert h.anterior == pytest.approx(48, abs=2.0)
    assert h.posterior == pytest.approx(80, abs=2.0)
    assert h.middle == pytest.approx(64, abs=2.0)
    assert h.height_ratio == pytest.approx(48 / 80, abs=0.04)


def test_a_biconcave_body_is_lowest_in_the_middle() -> None:
    # Both endplates bowed in by 12 pixels at the middle.
    top = [(x, 110 + 12 * math.sin(math.pi * (x - 100) / 100)) for x in range(100, 201, 5)]
    bottom = [(x, 190 - 12 * math.sin(math.pi * (x - 100) / 100)) for x in range(200, 99, -5)]
    h = body_heights(body(top + bottom), axis=(0.0, 1.0), anterior=(1.0, 0.0))
    assert h.middle == pytest.approx(80 - 24, abs=2.0)
    assert h.anterior == pytest.approx(80, abs=2.0) and h.posterior == pytest.approx(80, abs=2.0)


def _measured_turned(mask: np.ndarray, tilt: float):
    """Heights of a mask drawn upright (front to the left) and turned by ``tilt`` degrees."""
    a = math.radians(tilt)
    down, front = (-math.sin(a), math.cos(a)), (-math.cos(a), -math.sin(a))
    return body_heights(mask, axis=down, anterior=front)


def _plate_degrees(plate) -> float:
    (x0, y0), (x1, y1) = plate
    return math.degrees(math.atan2(y1 - y0, x1 - x0))


def _turn_between(a: float, b: float) -> float:
    """The angle (degrees) from direction ``a`` to ``b``, in [-180, 180): 180 and -180 are
    one direction (atan2 gives either for a level line, by the sign of a zero)."""
    return (b - a + 180.0) % 360.0 - 180.0


@pytest.mark.parametrize("tilt", [0.0, 25.0])
def test_a_mask_spilling_over_part_of_an_endplate_leaves_the_endplate_level(tilt) -> None:
    # A box (front to the left) whose mask spills 14 pixels into the disc below its
    # posterior third (a shoulder crossing C7): the inferior endplate keeps its angle.
    box = [(100, 110), (200, 110), (200, 190), (100, 190)]
    spill = [(165, 188), (200, 188), (200, 204), (165, 204)]
    h = _measured_turned(body(turned(box, tilt)) | body(turned(spill, tilt)), tilt)
    level = _plate_degrees(h.superior_endplate)
    assert abs(_turn_between(_plate_degrees(turned([(200, 0), (100, 0)], tilt)), level)) < 1.0
    assert abs(_turn_between(level, _plate_degrees(h.inferior_endplate))) < 1.5
    # A least-squares line through every edge pixel turns it by some 14 degrees.


@pytest.mark.parametrize("tilt", [0.0, 25.0])
def test_a_spill_at_one_corner_does_not_lengthen_that_wall(tilt) -> None:
    # An anterior wedge (front 48, back 80; front to the left) whose mask spills 16 pixels
    # into the disc under its anterior fifth: the spill's tip is not its anterior-inferior
    # corner. On the old corners, the anterior height read 64.
    wedge = [(100, 126), (200, 110), (200, 190), (100, 174)]
    spill = [(100, 172), (120, 172), (120, 190), (100, 190)]
    h = _measured_turned(body(turned(wedge, tilt)) | body(turned(spill, tilt)), tilt)
    assert h.anterior == pytest.approx(48, abs=2.5)
    assert h.posterior == pytest.approx(80, abs=2.0)
    corner = turned([(100, 174)], tilt)[0]
    assert math.dist(h.anterior_inferior, corner) < 5.0


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        body_heights(np.zeros(SHAPE, bool), (0.0, 1.0), (1.0, 0.0))
    mask = body([(100, 110), (200, 110), (200, 190), (100, 190)])
    with pytest.raises(ValueError, match="zero vector"):
        body_heights(mask, (0.0, 0.0), (1.0, 0.0))
    with pytest.raises(ValueError, match="parallel"):
        body_heights(mask, (0.0, 1.0), (0.0, -2.0))
