"""Unit tests for pacsnode.training.metrics.

Every expected number is worked out by hand in the comment beside it, so a test fails
when the metric drifts from the papers' definitions, not only when it changes.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest
from scipy import stats

from pacsnode.training import metrics as m


def strips(width: int, *spans: tuple[int, int]) -> list[np.ndarray]:
    """One ``(1, width)`` mask per ``[start, stop)`` column span: IoU is length arithmetic."""
    masks = []
    for start, stop in spans:
        mask = np.zeros((1, width), dtype=bool)
        mask[0, start:stop] = True
        masks.append(mask)
    return masks


# --------------------------------------------------------------------------- pixels

PRED_4X4 = np.array(
    [
        [1, 1, 1, 1],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)
TRUTH_4X4 = np.array(
    [
        [1, 1, 1, 0],
        [1, 1, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 0, 0],
    ]
)


def test_confusion_counts_hand_case() -> None:
    counts = m.confusion_counts(PRED_4X4, TRUTH_4X4)
    # tp: row 0 cols 0-2; fp: (0, 3); fn: (1, 0), (1, 1); tn: 16 - 6.
    assert counts == m.ConfusionCounts(tp=3, fp=1, fn=2, tn=10)
    assert counts.total == 16
    assert counts.accuracy == pytest.approx(13 / 16)  # (3 + 10) / 16 = 0.8125
    assert counts.dice == pytest.approx(6 / 9)  # 2·3 / (2·3 + 1 + 2)
    assert counts.iou == pytest.approx(3 / 6)  # 3 / (3 + 1 + 2)
    assert counts.sensitivity == pytest.approx(3 / 5)  # 3 / (3 + 2)
    assert counts.specificity == pytest.approx(10 / 11)  # 10 / (10 + 1)
    assert counts.precision == pytest.approx(3 / 4)  # 3 / (3 + 1)


def test_dice_and_jaccard_helpers_match_counts() -> None:
    assert m.dice_coefficient(PRED_4X4, TRUTH_4X4) == pytest.approx(6 / 9)
    assert m.jaccard_index(PRED_4X4.astype(bool), TRUTH_4X4.astype(float)) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("pred", "truth", "expected"),
    [
        # Both empty: nothing to find and nothing to reject, all rates 1.
        (
            np.zeros((2, 2)),
            np.zeros((2, 2)),
            {"dice": 1.0, "iou": 1.0, "sensitivity": 1.0, "specificity": 1.0, "accuracy": 1.0},
        ),
        # Everything predicted and true: tn + fp = 0, so specificity is 1 by convention.
        (
            np.ones((2, 2)),
            np.ones((2, 2)),
            {"dice": 1.0, "iou": 1.0, "sensitivity": 1.0, "specificity": 1.0, "precision": 1.0},
        ),
        # Empty prediction of a non-empty truth: tp = 0, fn = 1, tn = 3.
        (
            np.zeros((2, 2)),
            np.array([[1, 0], [0, 0]]),
            {"dice": 0.0, "iou": 0.0, "sensitivity": 0.0, "specificity": 1.0, "precision": 1.0},
        ),
    ],
)
def test_pixel_rates_with_empty_denominators(
    pred: np.ndarray, truth: np.ndarray, expected: dict[str, float]
) -> None:
    counts = m.confusion_counts(pred, truth)
    for name, value in expected.items():
        assert getattr(counts, name) == pytest.approx(value), name


# ---------------------------------------------------------------------------- shape

UNIT_SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]])


def test_point_to_square_distances() -> None:
    points = [
        (0.5, -1.0),  # beside the middle of the bottom edge: 1, not the 1.118 to a vertex
        (2.0, 2.0),  # beyond corner (1, 1): √(1² + 1²) = √2
        (0.5, 0.5),  # centre: 0.5 to every edge
        (0.2, 0.5),  # 0.2 from the left edge, which is the closing segment (0,1)→(0,0)
        (1.0, 0.3),  # on the right edge
    ]
    distances = m.point_to_curve_distances(points, UNIT_SQUARE)
    assert distances == pytest.approx([1.0, math.sqrt(2.0), 0.5, 0.2, 0.0])
    # Mean: (1 + 1.414214 + 0.5 + 0.2 + 0) / 5 = 0.622843.
    assert m.point_to_curve_distance(points, UNIT_SQUARE) == pytest.approx(
        (1.0 + math.sqrt(2.0) + 0.5 + 0.2) / 5
    )


def test_open_curve_drops_the_closing_segment() -> None:
    point = [(0.2, 0.5)]
    # Closed: the left edge x = 0 is 0.2 away. Open: nearest are the bottom and top
    # edges, 0.5 away (the right edge is 0.8).
    assert m.point_to_curve_distance(point, UNIT_SQUARE, closed=True) == pytest.approx(0.2)
    assert m.point_to_curve_distance(point, UNIT_SQUARE, closed=False) == pytest.approx(0.5)
    # Repeating the first vertex at the end closes the open curve explicitly.
    closed_by_hand = np.vstack([UNIT_SQUARE, UNIT_SQUARE[:1]])
    assert m.point_to_curve_distance(point, closed_by_hand, closed=False) == pytest.approx(0.2)
    assert m.point_to_curve_distance(point, closed_by_hand, closed=True) == pytest.approx(0.2)


def test_anisotropic_spacing_scales_x_by_columns_and_y_by_rows() -> None:
    spacing = (2.0, 0.5)  # (row_mm, col_mm): y pixels are 2 mm, x pixels 0.5 mm
    horizontal = [(0.0, 0.0), (4.0, 0.0)]  # x 0..4 px = 0..2 mm
    # (1, 3) px = (0.5, 6) mm: 6 mm straight above the segment.
    # (6, 0) px = (3, 0) mm: 1 mm past the end (2, 0) mm.
    distances = m.point_to_curve_distances(
        [(1.0, 3.0), (6.0, 0.0)], horizontal, closed=False, spacing=spacing
    )
    assert distances == pytest.approx([6.0, 1.0])

    # The nearest point itself moves with anisotropy. Segment (0,0)→(2,2) px becomes
    # (0,0)→(1,4) mm and point (2,0) px becomes (1,0) mm. Projection parameter
    # t = (1·1 + 0·4) / (1² + 4²) = 1/17, foot (1/17, 4/17), gap (16/17, −4/17),
    # distance √(256 + 16) / 17 = 4/√17 = 0.970143 mm (in pixels it is √2).
    diagonal = [(0.0, 0.0), (2.0, 2.0)]
    assert m.point_to_curve_distance([(2.0, 0.0)], diagonal, closed=False) == pytest.approx(
        math.sqrt(2.0)
    )
    assert m.point_to_curve_distance(
        [(2.0, 0.0)], diagonal, closed=False, spacing=spacing
    ) == pytest.approx(4.0 / math.sqrt(17.0))


def test_isotropic_spacing_scales_distances() -> None:
    # 0.5 mm pixels halve the unit-square distances: 1 px → 0.5 mm.
    assert m.point_to_curve_distance(
        [(0.5, -1.0)], UNIT_SQUARE, spacing=(0.5, 0.5)
    ) == pytest.approx(0.5)


def test_degenerate_curves() -> None:
    # A single vertex is a point: distance from (3, 4) to the origin is 5.
    assert m.point_to_curve_distance([(3.0, 4.0)], [(0.0, 0.0)]) == pytest.approx(5.0)
    assert m.point_to_curve_distance([(3.0, 4.0)], [(0.0, 0.0)], closed=False) == pytest.approx(5.0)
    # Repeated vertices make zero-length segments, which must not divide by zero.
    curve = [(0.0, 0.0), (0.0, 0.0), (2.0, 0.0)]
    assert m.point_to_curve_distance([(1.0, 1.0)], curve, closed=False) == pytest.approx(1.0)


def test_many_points_are_chunked_consistently() -> None:
    # More points than one chunk holds: every point on the circle of radius 2 about the
    # square's centre (0.5, 0.5) is checked against the per-point formula.
    angles = np.linspace(0.0, 2.0 * np.pi, 5000, endpoint=False)
    points = np.column_stack([0.5 + 2 * np.cos(angles), 0.5 + 2 * np.sin(angles)])
    curve = np.repeat(UNIT_SQUARE, 100, axis=0)  # 400 vertices, mostly repeats
    distances = m.point_to_curve_distances(points, curve)
    # Distance to the axis-aligned square [0, 1]²: norm of the per-axis excess.
    excess = np.maximum(np.abs(points - 0.5) - 0.5, 0.0)
    assert distances == pytest.approx(np.hypot(excess[:, 0], excess[:, 1]))


def test_mask_outline_of_one_pixel_is_a_diamond_in_corner_coordinates() -> None:
    mask = np.zeros((3, 4), dtype=bool)
    mask[1, 2] = True  # pixel spans x 2..3, y 1..2; centre (2.5, 1.5)
    outline = m.mask_outline(mask)
    # The 0.5 contour passes halfway between the centre and each 4-neighbour's centre,
    # i.e. through the midpoints of the pixel's edges; the closing vertex is not repeated.
    expected = {(2.5, 1.0), (3.0, 1.5), (2.5, 2.0), (2.0, 1.5)}
    assert {tuple(p) for p in outline.tolist()} == expected
    # Array-index coordinates put the centre at (2, 1).
    shifted = m.mask_outline(mask, pixel_centre_offset=0.0)
    assert {tuple(p) for p in shifted.tolist()} == {(x - 0.5, y - 0.5) for x, y in expected}


def test_rectangle_outline_matches_its_corner_origin_polygon() -> None:
    mask = np.zeros((8, 10), dtype=bool)
    mask[2:6, 3:8] = True  # rows 2..5, cols 3..7
    # In corner-origin (SR SCOORD) coordinates the pixels cover x 3..8, y 2..6.
    polygon = [(3.0, 2.0), (8.0, 2.0), (8.0, 6.0), (3.0, 6.0)]
    # Every outline vertex lies on a pixel edge, so the prediction→truth error is 0 up
    # to rounding. The contour cuts each corner diagonally (e.g. (3.5, 2)→(3, 2.5)), so
    # it is never more than 0.5 px from the polygon anywhere: the reverse direction,
    # polygon corner to chamfer, is 0.5/√2 = 0.353553 px.
    assert m.mask_to_curve_distance(mask, polygon) == pytest.approx(0.0, abs=1e-12)
    outline = m.mask_outline(mask)
    corner_gaps = m.point_to_curve_distances(polygon, outline)
    assert corner_gaps == pytest.approx([0.5 / math.sqrt(2.0)] * 4)
    assert corner_gaps.max() < 0.5
    # Getting the origin wrong moves the outline by (−0.5, −0.5): 16 of its 18 vertices
    # end 0.5 px off their edge; the two chamfer vertices at the bottom-left and
    # top-right corners slide along an edge and stay on it. Mean 16·0.5/18 = 4/9.
    assert m.mask_to_curve_distance(mask, polygon, pixel_centre_offset=0.0) == pytest.approx(4 / 9)


def test_mask_outline_closes_at_the_border_and_keeps_the_longest_piece() -> None:
    full = np.ones((3, 3), dtype=bool)
    frame = [(0.0, 0.0), (3.0, 0.0), (3.0, 3.0), (0.0, 3.0)]
    assert m.mask_to_curve_distance(full, frame) == pytest.approx(0.0, abs=1e-12)

    two_pieces = np.zeros((6, 8), dtype=bool)
    two_pieces[0, 0] = True  # a speck
    two_pieces[2:5, 3:7] = True  # the vertebra: x 3..7, y 2..5
    outline = m.mask_outline(two_pieces)
    assert outline[:, 0].min() == pytest.approx(3.0)
    assert outline[:, 1].max() == pytest.approx(5.0)


def test_empty_prediction_is_an_infinite_error_and_a_fit_failure() -> None:
    error = m.mask_to_curve_distance(np.zeros((4, 4)), UNIT_SQUARE)
    assert error == math.inf
    assert m.fit_failure([0.5, error]) == pytest.approx(0.5)


def test_fit_failure_is_strictly_above_threshold() -> None:
    # Above 2 px: 2.1 and 5.0; 2.0 itself is not a failure. 2 of 5 = 0.4.
    assert m.fit_failure([0.5, 1.9, 2.0, 2.1, 5.0]) == pytest.approx(0.4)
    # With a 1 mm threshold: 1.9, 2.0, 2.1, 5.0 fail: 4 of 5.
    assert m.fit_failure([0.5, 1.9, 2.0, 2.1, 5.0], threshold=1.0) == pytest.approx(0.8)


# ------------------------------------------------------------------------ instances


def test_iou_matrix_hand_values() -> None:
    preds = strips(12, (0, 8), (6, 12))
    truths = strips(12, (0, 10))
    iou = m.iou_matrix(preds, truths)
    # [0,8) vs [0,10): 8 / 10. [6,12) vs [0,10): overlap [6,10) = 4, union [0,12) = 12.
    assert iou == pytest.approx(np.array([[0.8], [4 / 12]]))
    assert m.iou_matrix([], truths).shape == (0, 1)
    assert m.iou_matrix(preds, np.zeros((0, 1, 12), dtype=bool)).shape == (2, 0)


def test_instance_forms_agree() -> None:
    # Labels 4 and 9 in a 3×4 image: a list, a (K, H, W) stack and the label image
    # itself must describe the same two instances, in increasing label order.
    labels = np.array([[4, 4, 0, 9], [4, 0, 0, 9], [0, 0, 0, 9]])
    masks, ids = m.masks_from_labels(labels)
    assert ids.tolist() == [4, 9]
    assert masks.sum(axis=(1, 2)).tolist() == [3, 3]
    # Prediction: label 4's pixels plus (1, 1) → IoU 3/4 with 4, 0 with 9.
    pred = masks[0].copy()
    pred[1, 1] = True
    expected = np.array([[0.75, 0.0]])
    assert m.iou_matrix([pred], labels) == pytest.approx(expected)
    assert m.iou_matrix(pred[None], list(masks)) == pytest.approx(expected)
    assert m.iou_matrix(pred.astype(np.uint8), masks) == pytest.approx(expected)


def test_hungarian_beats_greedy_on_overlapping_instances() -> None:
    # Overlapping truths T0 = [0,10) and T1 = [2,12); predictions P0 = [1,10), P1 = [0,8).
    # IoU(P0,T0) = 9/10 = 0.9       IoU(P0,T1) = |[2,10)| / |[1,12)| = 8/11 = 0.727273
    # IoU(P1,T0) = 8/10 = 0.8       IoU(P1,T1) = |[2,8)| / |[0,12)| = 6/12 = 0.5 (no match)
    # Greedy takes the best pair P0–T0 (0.9) and then P1 has only T1 at 0.5: 1 match.
    # The optimum is P0–T1 + P1–T0 = 0.727 + 0.8 = 1.527: 2 matches.
    preds = strips(12, (1, 10), (0, 8))
    truths = strips(12, (0, 10), (2, 12))
    match = m.match_instances(preds, truths)
    assert [(p.pred, p.truth) for p in match.pairs] == [(1, 0), (0, 1)]
    assert [p.iou for p in match.pairs] == pytest.approx([0.8, 8 / 11])
    assert (match.tp, match.fp, match.fn) == (2, 0, 0)
    assert match.unmatched_pred == () and match.unmatched_truth == ()


def test_iou_of_exactly_one_half_does_not_match() -> None:
    # [0,2) vs [0,4): 2 / 4 = 0.5, which is not strictly greater than 0.5.
    preds, truths = strips(4, (0, 2)), strips(4, (0, 4))
    assert m.iou_matrix(preds, truths)[0, 0] == 0.5
    match = m.match_instances(preds, truths)
    assert match.pairs == ()
    assert match.unmatched_pred == (0,) and match.unmatched_truth == (0,)
    # [0,3) vs [0,4): 3/4 matches.
    assert m.match_instances(strips(4, (0, 3)), truths).tp == 1


def test_sub_threshold_pairs_cannot_displace_a_match() -> None:
    # Raw-IoU assignment would take the anti-diagonal (0.49 + 0.49 = 0.98 > 0.55) and
    # keep nothing; only pairs above the threshold may compete, so (0, 0) is kept.
    match = m.match_iou_matrix([[0.55, 0.49], [0.49, 0.0]])
    assert match.pairs == (m.MatchedPair(pred=0, truth=0, iou=0.55),)
    # The matrix-level version of the greedy trap above.
    match = m.match_iou_matrix([[0.9, 0.8], [0.85, 0.1]])
    assert {(p.pred, p.truth) for p in match.pairs} == {(0, 1), (1, 0)}


def test_panoptic_quality_hand_case() -> None:
    # Truths [0,10), [10,20), [20,30). Predictions:
    #   [0,8)   vs T0: 8/10 = 0.8   (TP)
    #   [11,20) vs T1: 9/10 = 0.9   (TP)
    #   [20,24) vs T2: 4/10 = 0.4   (no match: one FP and T2 one FN)
    # SQ = (0.8 + 0.9) / 2 = 0.85; RQ = 2 / (2 + 1/2 + 1/2) = 2/3;
    # PQ = 1.7 / 3 = 0.566667 = SQ × RQ.
    truths = strips(30, (0, 10), (10, 20), (20, 30))
    preds = strips(30, (0, 8), (11, 20), (20, 24))
    pq = m.panoptic_quality(preds, truths)
    assert (pq.tp, pq.fp, pq.fn) == (2, 1, 1)
    assert pq.sq == pytest.approx(0.85)
    assert pq.rq == pytest.approx(2 / 3)
    assert pq.pq == pytest.approx(1.7 / 3)
    assert pq.pq == pytest.approx(pq.sq * pq.rq)

    # The same instances given as label images (0 background).
    truth_labels = np.zeros((1, 30), dtype=np.int32)
    truth_labels[0, :10], truth_labels[0, 10:20], truth_labels[0, 20:] = 1, 2, 3
    pred_labels = np.zeros((1, 30), dtype=np.uint8)
    pred_labels[0, :8], pred_labels[0, 11:20], pred_labels[0, 20:24] = 5, 7, 9
    assert m.panoptic_quality(pred_labels, truth_labels) == pq


@pytest.mark.parametrize(
    ("n_pred", "n_truth", "expected_pq", "counts"),
    [
        (0, 0, 1.0, (0, 0, 0)),  # nothing to find, nothing invented
        (1, 0, 0.0, (0, 1, 0)),
        (0, 1, 0.0, (0, 0, 1)),
    ],
)
def test_panoptic_quality_empty_conventions(
    n_pred: int, n_truth: int, expected_pq: float, counts: tuple[int, int, int]
) -> None:
    instance = strips(4, (0, 4))
    pq = m.panoptic_quality(instance * n_pred, instance * n_truth)
    assert pq.pq == expected_pq and pq.sq == expected_pq and pq.rq == expected_pq
    assert (pq.tp, pq.fp, pq.fn) == counts


def test_detection_scores() -> None:
    # Same layout as the PQ case: TP 2, FP 1, FN 1 → recall 2/3, precision 2/3.
    truths = strips(40, (0, 10), (10, 20), (20, 30))
    preds = strips(40, (0, 8), (11, 20), (20, 24))
    result = m.detection_scores(preds, truths)
    assert result == m.DetectionResult(tp=2, fp=1, fn=1)
    assert result.recall == pytest.approx(2 / 3)
    assert result.precision == pytest.approx(2 / 3)
    # A fourth, unmatched truth [30,40): recall 2/4, precision still 2/3.
    result = m.detection_scores(preds, [*truths, *strips(40, (30, 40))])
    assert result.recall == pytest.approx(0.5)
    assert result.precision == pytest.approx(2 / 3)
    # No truths and no predictions: nothing missed, nothing false.
    empty = m.detection_scores([], [])
    assert (empty.recall, empty.precision) == (1.0, 1.0)


def test_identification_accuracy() -> None:
    # Truths C3 [0,10), C4 [10,20), C5 [20,30), C6 [30,40) (missed by the model).
    # Predictions, deliberately out of order:
    #   P0 [21,30) named C6 → matches C5 (IoU 0.9), wrong name
    #   P1 [0,9)   named C3 → matches C3 (IoU 0.9), right
    #   P2 [10,19) named C4 → matches C4 (IoU 0.9), right
    # Matched 3, right 2: accuracy 2/3; over the 4 truths 2/4.
    truths = strips(40, (0, 10), (10, 20), (20, 30), (30, 40))
    preds = strips(40, (21, 30), (0, 9), (10, 19))
    result = m.identification_accuracy(preds, ["C6", "C3", "C4"], truths, ["C3", "C4", "C5", "C6"])
    assert result == m.IdentificationResult(n_correct=2, n_matched=3, n_pred=3, n_truth=4)
    assert result.accuracy == pytest.approx(2 / 3)
    assert result.accuracy_over_truths == pytest.approx(0.5)
    nothing = m.identification_accuracy([], [], truths, ["C3", "C4", "C5", "C6"])
    assert math.isnan(nothing.accuracy)
    assert nothing.accuracy_over_truths == 0.0


# -------------------------------------------------------------------------- grading

# Paired grades (A, B): (0,0)×3, (0,1), (1,0), (1,1)×2, (1,2), (2,2)×2. Table, A rows:
#        B=0  B=1  B=2 | row
#   A=0   3    1    0  |  4
#   A=1   1    2    1  |  4
#   A=2   0    0    2  |  2
#   col   4    3    3  | 10
GRADES_A = [0, 0, 0, 0, 1, 1, 1, 1, 2, 2]
GRADES_B = [0, 0, 0, 1, 0, 1, 1, 2, 2, 2]


def test_cohen_kappa_hand_table() -> None:
    # p_o = (3 + 2 + 2) / 10 = 0.7; p_e = (4·4 + 4·3 + 2·3) / 100 = 0.34;
    # kappa = (0.7 − 0.34) / (1 − 0.34) = 0.36 / 0.66 = 6/11 = 0.545455.
    assert m.cohen_kappa(GRADES_A, GRADES_B) == pytest.approx(6 / 11)
    # Linear weights |i − j|: observed disagreement (1 + 1 + 1) / 10 = 0.3; chance
    # Σ r_i c_j |i − j| / 100 = (4·3·1 + 4·3·2 + 4·4·1 + 4·3·1 + 2·4·2 + 2·3·1) / 100
    # = (12 + 24 + 16 + 12 + 16 + 6) / 100 = 0.86; kappa_w = 1 − 0.3/0.86 = 28/43 = 0.651163.
    assert m.cohen_kappa(GRADES_A, GRADES_B, weights="linear") == pytest.approx(28 / 43)
    # An unused grade 3 changes neither (the linear weights only rescale).
    assert m.cohen_kappa(GRADES_A, GRADES_B, n_grades=3) == pytest.approx(6 / 11)
    assert m.cohen_kappa(GRADES_A, GRADES_B, weights="linear", n_grades=3) == pytest.approx(28 / 43)


def test_grade_agreement() -> None:
    result = m.grade_agreement(GRADES_A, GRADES_B)
    assert result.n == 10
    assert result.exact == pytest.approx(0.7)
    assert result.kappa == pytest.approx(6 / 11)
    assert result.linear_kappa == pytest.approx(28 / 43)
    perfect = m.grade_agreement([0, 1, 2, 3], [0, 1, 2, 3])
    assert (perfect.exact, perfect.kappa, perfect.linear_kappa) == (1.0, 1.0, 1.0)


def test_kappa_is_nan_without_chance_disagreement() -> None:
    # Both raters call every vertebra grade 1: p_e = 1 and kappa = 0/0.
    result = m.grade_agreement([1, 1, 1], [1, 1, 1])
    assert result.exact == 1.0
    assert math.isnan(result.kappa) and math.isnan(result.linear_kappa)


# ---------------------------------------------------------------------- statistics


def test_paired_t_test_hand_case() -> None:
    # d = a − b = [1, 2, 3]: mean 2, sd 1, se 1/√3, t = 2√3 = 3.464102, df 2.
    # For 2 df the t CDF is closed-form, so the two-sided p = 1 − t/√(2 + t²)
    # = 1 − √(12/14) = 0.074180.
    result = m.paired_t_test([3.0, 5.0, 7.0], [2.0, 3.0, 4.0])
    assert result.t == pytest.approx(2 * math.sqrt(3))
    assert result.df == 2
    assert result.mean_difference == pytest.approx(2.0)
    assert result.p_value == pytest.approx(1 - math.sqrt(12 / 14))
    assert result.p_value == pytest.approx(2 * stats.t.sf(2 * math.sqrt(3), 2))
    assert not result.significant()
    assert result.significant(alpha=0.1)
    # Swapping the methods flips the sign only.
    swapped = m.paired_t_test([2.0, 3.0, 4.0], [3.0, 5.0, 7.0])
    assert swapped.t == pytest.approx(-result.t)
    assert swapped.p_value == pytest.approx(result.p_value)


def test_paired_t_test_agrees_with_scipy() -> None:
    a = [0.91, 0.88, 0.95, 0.90, 0.93]
    b = [0.89, 0.87, 0.92, 0.91, 0.90]
    ours = m.paired_t_test(a, b)
    reference = stats.ttest_rel(a, b)
    assert ours.t == pytest.approx(reference.statistic)
    assert ours.p_value == pytest.approx(reference.pvalue)


def test_paired_t_test_with_identical_differences() -> None:
    # d = [1, 1, 1]: zero spread, a certain non-zero shift.
    shifted = m.paired_t_test([2.0, 3.0, 4.0], [1.0, 2.0, 3.0])
    assert shifted.t == math.inf and shifted.p_value == 0.0 and shifted.mean_difference == 1.0
    lower = m.paired_t_test([1.0, 2.0, 3.0], [2.0, 3.0, 4.0])
    assert lower.t == -math.inf and lower.p_value == 0.0
    # d = [0, 0, 0]: no evidence either way.
    same = m.paired_t_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert math.isnan(same.t) and math.isnan(same.p_value) and same.mean_difference == 0.0


def test_summary_hand_case() -> None:
    # [1, 2, 3, 4]: mean 2.5, median 2.5, squared deviations 2.25 + 0.25 + 0.25 + 2.25
    # = 5, sample std √(5/3) = 1.290994.
    result = m.summary([1.0, 2.0, 3.0, 4.0])
    assert result == m.Summary(n=4, mean=2.5, std=pytest.approx(math.sqrt(5 / 3)), median=2.5)
    single = m.summary([0.9])
    assert (single.n, single.mean, single.median) == (1, 0.9, 0.9)
    assert math.isnan(single.std)


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: m.confusion_counts(np.zeros((2, 2)), np.zeros((2, 3))), "shape"),
        (lambda: m.confusion_counts(np.full((2, 2), 0.7), np.zeros((2, 2))), "only 0 and 1"),
        (lambda: m.confusion_counts(np.zeros((0, 2)), np.zeros((0, 2))), "no pixels"),
        (lambda: m.ConfusionCounts(tp=-1, fp=0, fn=0, tn=0), "non-negative"),
        (lambda: m.point_to_curve_distances([(0.0, 0.0, 0.0)], UNIT_SQUARE), r"\(N, 2\)"),
        (lambda: m.point_to_curve_distances([(0.0, 0.0)], np.zeros((0, 2))), "no vertices"),
        (lambda: m.point_to_curve_distances([(np.nan, 0.0)], UNIT_SQUARE), "non-finite"),
        (lambda: m.point_to_curve_distance(np.zeros((0, 2)), UNIT_SQUARE), "empty"),
        (lambda: m.point_to_curve_distance([(0, 0)], UNIT_SQUARE, spacing=(0.0, 1.0)), "spacing"),
        (lambda: m.point_to_curve_distance([(0, 0)], UNIT_SQUARE, spacing=(1.0,)), "spacing"),
        (lambda: m.mask_outline(np.zeros((3, 3))), "empty"),
        (lambda: m.mask_outline(np.ones((2, 2, 2))), "2-D"),
        (lambda: m.fit_failure([]), "empty"),
        (lambda: m.fit_failure([1.0, np.nan]), "nan"),
        (lambda: m.iou_matrix(strips(4, (0, 2)), strips(5, (0, 2))), "shape"),
        (lambda: m.iou_matrix([np.zeros((2, 2)), np.zeros((3, 3))], []), "one shape"),
        (lambda: m.iou_matrix(np.zeros((2, 2), dtype=float), []), "integer"),
        (lambda: m.match_iou_matrix([[0.6]], threshold=1.0), "threshold"),
        (lambda: m.match_iou_matrix([[1.5]]), r"\[0, 1\]"),
        (lambda: m.match_iou_matrix([0.6]), "2-D"),
        (lambda: m.identification_accuracy(strips(4, (0, 4)), [], [], []), "pred_names"),
        (lambda: m.identification_accuracy([], [], strips(4, (0, 4)), []), "truth_names"),
        (lambda: m.cohen_kappa([0, 1], [0]), "grades_b has 1"),
        (lambda: m.cohen_kappa([], []), "no grades"),
        (lambda: m.cohen_kappa([0, 4], [0, 1]), r"0\.\.3"),
        (lambda: m.cohen_kappa([0.5, 1.0], [0, 1]), "integer"),
        (lambda: m.cohen_kappa([0, 1], [0, 1], weights="quadratic"), "weights"),  # type: ignore[arg-type]
        (lambda: m.paired_t_test([1.0, 2.0], [1.0]), "scores_b has 1"),
        (lambda: m.paired_t_test([1.0], [2.0]), "at least 2"),
        (lambda: m.paired_t_test([1.0, np.inf], [2.0, 3.0]), "finite"),
        (lambda: m.summary([]), "empty"),
        (lambda: m.summary([1.0, np.nan]), "finite"),
    ],
)
def test_invalid_input_raises_value_error(call: Callable[[], object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        call()
