"""Evaluation metrics that reproduce the tables of the vertebra segmentation papers.

Pixel counts, point-to-curve shape error, instance matching, panoptic quality, naming
accuracy, Genant grade agreement and the paired t-test; numpy/scipy/skimage only.

Coordinate convention
---------------------
Masks are indexed ``mask[row, col]``. Points and curves are ``(N, 2)`` arrays in
``(x, y) = (col, row)`` order, in pixels, measured from the top-left corner of the
top-left pixel, as DICOM SR SCOORD does: the centre of pixel ``[r, c]`` is at
``(c + 0.5, r + 0.5)``. :func:`mask_outline` applies that half-pixel shift
(``pixel_centre_offset``) so outlines of masks and polygon ground truth read from SR
line up. Physical spacing is given as ``(row_mm, col_mm)``, the DICOM PixelSpacing
order.

Empty denominators
------------------
A pixel rate whose denominator is zero is 1.0: there was nothing to find or nothing
to reject, so nothing was got wrong (two empty masks have Dice 1, IoU 1). Panoptic
quality is 1.0 when there are neither predictions nor truths, and 0.0 when only one
side is empty. Statistics that are undefined (a kappa with no chance disagreement,
an identification accuracy with no matched pair) are ``nan``.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Literal, NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import optimize, sparse, stats
from skimage import measure

__all__ = [
    "ConfusionCounts",
    "DetectionResult",
    "GradeAgreement",
    "IdentificationResult",
    "InstanceMatch",
    "MatchedPair",
    "PairedTTest",
    "PanopticQuality",
    "Summary",
    "cohen_kappa",
    "confusion_counts",
    "detection_scores",
    "dice_coefficient",
    "fit_failure",
    "grade_agreement",
    "identification_accuracy",
    "iou_matrix",
    "jaccard_index",
    "mask_outline",
    "mask_to_curve_distance",
    "masks_from_labels",
    "match_instances",
    "match_iou_matrix",
    "paired_t_test",
    "panoptic_quality",
    "point_to_curve_distance",
    "point_to_curve_distances",
    "summary",
]

#: Instances as a list of binary masks, a ``(K, H, W)`` stack or a 2-D label image.
Instances = Sequence[npt.ArrayLike] | np.ndarray

# Bounds the (points × segments × 2) temporaries of the distance computation to a few
# tens of MB whatever the outline and curve lengths.
_DISTANCE_CHUNK_ELEMENTS = 1 << 20


def _rate(numerator: int, denominator: int) -> float:
    # One place for the "nothing to get wrong" convention of the module docstring.
    return 1.0 if denominator == 0 else numerator / denominator


def _as_binary(mask: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype == bool:
        return arr
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a boolean or 0/1 numeric array, got dtype {arr.dtype}")
    # A probability map or label image passed by mistake would otherwise be silently
    # thresholded at "non-zero" and give plausible-looking but wrong numbers.
    if not np.isin(arr, (0, 1)).all():
        raise ValueError(f"{name} must contain only 0 and 1 (or be boolean)")
    return arr.astype(bool)


def _binary_pair(pred: npt.ArrayLike, truth: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    p = _as_binary(pred, "pred")
    t = _as_binary(truth, "truth")
    if p.shape != t.shape:
        raise ValueError(f"pred has shape {p.shape} but truth has shape {t.shape}")
    if p.size == 0:
        raise ValueError("masks have no pixels")
    return p, t


# --------------------------------------------------------------------------- pixels


@dataclass(frozen=True)
class ConfusionCounts:
    """Pixel counts of a binary prediction against a binary truth.

    Rates with a zero denominator are 1.0 (see the module docstring).

    Attributes
    ----------
    tp
        Pixels in both the prediction and the truth.
    fp
        Pixels in the prediction only.
    fn
        Pixels in the truth only.
    tn
        Pixels in neither.
    """

    tp: int
    fp: int
    fn: int
    tn: int

    def __post_init__(self) -> None:
        for field in ("tp", "fp", "fn", "tn"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 0:
                raise ValueError(f"{field} must be a non-negative integer, got {value!r}")

    @classmethod
    def from_masks(cls, pred: npt.ArrayLike, truth: npt.ArrayLike) -> ConfusionCounts:
        """Count the four cells for two binary masks of the same shape.

        Parameters
        ----------
        pred
            Predicted mask, boolean or 0/1.
        truth
            Ground-truth mask, boolean or 0/1, same shape as ``pred``.

        Raises
        ------
        ValueError
            If the shapes differ, a mask is not binary, or the masks have no pixels.
        """
        p, t = _binary_pair(pred, truth)
        tp = int(np.count_nonzero(p & t))
        fp = int(np.count_nonzero(p)) - tp
        fn = int(np.count_nonzero(t)) - tp
        return cls(tp=tp, fp=fp, fn=fn, tn=p.size - tp - fp - fn)

    @property
    def total(self) -> int:
        """Number of pixels compared."""
        return self.tp + self.fp + self.fn + self.tn

    @property
    def accuracy(self) -> float:
        """Pixel accuracy (TP + TN) / total, as a fraction (the papers print %)."""
        return _rate(self.tp + self.tn, self.total)

    @property
    def dice(self) -> float:
        """Dice similarity coefficient 2TP / (2TP + FP + FN)."""
        return _rate(2 * self.tp, 2 * self.tp + self.fp + self.fn)

    @property
    def iou(self) -> float:
        """Intersection over union (Jaccard index) TP / (TP + FP + FN)."""
        return _rate(self.tp, self.tp + self.fp + self.fn)

    @property
    def sensitivity(self) -> float:
        """Sensitivity (recall) TP / (TP + FN)."""
        return _rate(self.tp, self.tp + self.fn)

    @property
    def specificity(self) -> float:
        """Specificity TN / (TN + FP)."""
        return _rate(self.tn, self.tn + self.fp)

    @property
    def precision(self) -> float:
        """Precision (positive predictive value) TP / (TP + FP)."""
        return _rate(self.tp, self.tp + self.fp)


def confusion_counts(pred: npt.ArrayLike, truth: npt.ArrayLike) -> ConfusionCounts:
    """Count TP, FP, FN and TN pixels; see :meth:`ConfusionCounts.from_masks`."""
    return ConfusionCounts.from_masks(pred, truth)


def dice_coefficient(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Dice coefficient of two binary masks; 1.0 when both are empty."""
    return ConfusionCounts.from_masks(pred, truth).dice


def jaccard_index(pred: npt.ArrayLike, truth: npt.ArrayLike) -> float:
    """Intersection over union of two binary masks; 1.0 when both are empty."""
    return ConfusionCounts.from_masks(pred, truth).iou


# ---------------------------------------------------------------------------- shape


def _as_points(points: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(points, dtype=float)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name} must be an (N, 2) array of (x, y) points, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains non-finite coordinates")
    return arr


def _xy_scale(spacing: tuple[float, float] | None) -> np.ndarray | None:
    if spacing is None:
        return None
    arr = np.asarray(spacing, dtype=float)
    if arr.shape != (2,) or not np.isfinite(arr).all() or (arr <= 0).any():
        raise ValueError(f"spacing must be two positive numbers (row_mm, col_mm), got {spacing!r}")
    # Points are (x, y) = (col, row) while spacing is (row, col): swap.
    return arr[::-1]


def mask_outline(mask: npt.ArrayLike, *, pixel_centre_offset: float = 0.5) -> np.ndarray:
    """Return the boundary of a binary mask as a closed polygon of ``(x, y)`` points.

    The boundary is the 0.5 iso-contour of the zero-padded mask, so it runs along pixel
    edges (halfway between inside and outside pixel centres) with corners cut
    diagonally, and it closes even where the mask touches the image border. Where the
    mask has several pieces or holes, the contour of greatest length is returned.

    Parameters
    ----------
    mask
        Binary mask indexed ``[row, col]``.
    pixel_centre_offset
        Coordinate of the centre of the first pixel. 0.5 (default) gives coordinates
        from the top-left corner of the top-left pixel, as DICOM SR SCOORD; 0.0 gives
        array-index coordinates with pixel centres on integers, as scikit-image.

    Returns
    -------
    np.ndarray
        ``(K, 2)`` vertices in ``(x, y) = (col, row)`` order, pixels, first vertex not
        repeated at the end (treat it as a closed curve).

    Raises
    ------
    ValueError
        If the mask is not 2-D and binary, or is empty.
    """
    m = _as_binary(mask, "mask")
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D, got shape {m.shape}")
    if not m.any():
        raise ValueError("mask is empty; it has no outline")
    # Padding closes contours at the image border instead of leaving open strands.
    contours = measure.find_contours(np.pad(m.astype(float), 1), 0.5)

    def length(c: np.ndarray) -> float:
        return float(np.hypot(*np.diff(c, axis=0).T).sum())

    rc = max(contours, key=length)
    if len(rc) > 1 and np.array_equal(rc[0], rc[-1]):
        # A repeated closing vertex would count twice in a mean over points.
        rc = rc[:-1]
    # Undo the padding, then move from pixel-centre to the chosen origin.
    rc = rc - 1.0 + pixel_centre_offset
    return np.ascontiguousarray(rc[:, ::-1])


def point_to_curve_distances(
    points: npt.ArrayLike,
    curve: npt.ArrayLike,
    *,
    closed: bool = True,
    spacing: tuple[float, float] | None = None,
) -> np.ndarray:
    """Distance from each point to the nearest point of a polyline.

    The distance is exact point-to-segment distance, so a point beside the middle of
    an edge is measured to that edge, not to its end vertices.

    Parameters
    ----------
    points
        ``(N, 2)`` points, ``(x, y)`` order, pixels.
    curve
        ``(M, 2)`` polyline vertices, ``(x, y)`` order, pixels.
    closed
        Whether the segment from the last vertex back to the first is part of the
        curve (a polygon). A repeated closing vertex is harmless.
    spacing
        ``(row_mm, col_mm)`` pixel spacing. When given, x is scaled by the column
        spacing and y by the row spacing before measuring, and distances are in mm;
        otherwise they are in pixels.

    Returns
    -------
    np.ndarray
        ``(N,)`` distances.

    Raises
    ------
    ValueError
        If an array is not ``(·, 2)`` or not finite, the curve has no vertex, or the
        spacing is not two positive numbers.
    """
    pts = _as_points(points, "points")
    crv = _as_points(curve, "curve")
    if len(crv) == 0:
        raise ValueError("curve has no vertices")
    scale = _xy_scale(spacing)
    if scale is not None:
        pts = pts * scale
        crv = crv * scale

    if closed:
        starts, ends = crv, np.roll(crv, -1, axis=0)
    elif len(crv) == 1:
        starts, ends = crv, crv
    else:
        starts, ends = crv[:-1], crv[1:]
    direction = ends - starts
    length2 = np.einsum("ij,ij->i", direction, direction)
    # Zero-length segments (repeated vertices) reduce to their start point.
    safe_length2 = np.where(length2 > 0, length2, 1.0)

    out = np.empty(len(pts))
    chunk = max(1, _DISTANCE_CHUNK_ELEMENTS // len(starts))
    for lo in range(0, len(pts), chunk):
        p = pts[lo : lo + chunk, None, :]
        offset = p - starts[None, :, :]
        t = np.einsum("nsk,sk->ns", offset, direction) / safe_length2
        t = np.clip(np.where(length2 > 0, t, 0.0), 0.0, 1.0)
        nearest = starts[None, :, :] + t[..., None] * direction[None, :, :]
        gap = p - nearest
        out[lo : lo + chunk] = np.sqrt(np.einsum("nsk,nsk->ns", gap, gap).min(axis=1))
    return out


def point_to_curve_distance(
    points: npt.ArrayLike,
    curve: npt.ArrayLike,
    *,
    closed: bool = True,
    spacing: tuple[float, float] | None = None,
) -> float:
    """Mean distance from the points to a polyline (average point-to-curve error).

    Parameters are those of :func:`point_to_curve_distances`.

    Raises
    ------
    ValueError
        As :func:`point_to_curve_distances`, or if there are no points.
    """
    distances = point_to_curve_distances(points, curve, closed=closed, spacing=spacing)
    if len(distances) == 0:
        raise ValueError("points is empty; the mean distance is undefined")
    return float(distances.mean())


def mask_to_curve_distance(
    pred_mask: npt.ArrayLike,
    truth_curve: npt.ArrayLike,
    *,
    closed: bool = True,
    spacing: tuple[float, float] | None = None,
    pixel_centre_offset: float = 0.5,
) -> float:
    """Mean distance from the outline of a predicted mask to a ground-truth curve.

    This is the shape error of the shape-aware segmentation paper: the predicted
    curve is the mask's boundary (:func:`mask_outline`) and each of its vertices is
    measured to the ground-truth curve.

    Parameters
    ----------
    pred_mask
        Predicted binary mask indexed ``[row, col]``.
    truth_curve
        ``(M, 2)`` ground-truth curve, ``(x, y)`` order, pixels, in the same origin
        as ``pixel_centre_offset`` (corner origin by default, as SR SCOORD).
    closed
        Whether the ground-truth curve is a closed polygon.
    spacing
        ``(row_mm, col_mm)``; when given the result is in mm.
    pixel_centre_offset
        Passed to :func:`mask_outline`.

    Returns
    -------
    float
        Mean distance; ``inf`` when the prediction is empty, so that
        :func:`fit_failure` counts a missed vertebra as a failure.
    """
    m = _as_binary(pred_mask, "pred_mask")
    if m.ndim == 2 and not m.any():
        return math.inf
    outline = mask_outline(m, pixel_centre_offset=pixel_centre_offset)
    return point_to_curve_distance(outline, truth_curve, closed=closed, spacing=spacing)


def fit_failure(errors: npt.ArrayLike, threshold: float = 2.0) -> float:
    """Share of cases whose mean point-to-curve error exceeds ``threshold``.

    Parameters
    ----------
    errors
        Per-vertebra mean point-to-curve errors (pixels in the paper); ``inf`` counts
        as a failure.
    threshold
        Error above which (strictly) a fit has failed; 2 px in the paper.

    Returns
    -------
    float
        Fraction in [0, 1] (the paper prints %).

    Raises
    ------
    ValueError
        If there are no errors, or any is ``nan`` or negative.
    """
    arr = np.asarray(errors, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError("errors is empty")
    if np.isnan(arr).any() or (arr < 0).any():
        raise ValueError("errors must be non-negative numbers (inf allowed), not nan")
    return float(np.count_nonzero(arr > threshold) / arr.size)


# ------------------------------------------------------------------------ instances


class MatchedPair(NamedTuple):
    """One prediction matched to one truth."""

    pred: int
    truth: int
    iou: float


@dataclass(frozen=True)
class InstanceMatch:
    """One-to-one matching of predicted to true instances.

    Attributes
    ----------
    pairs
        Matched pairs, ordered by truth index.
    n_pred
        Number of predicted instances.
    n_truth
        Number of true instances.
    """

    pairs: tuple[MatchedPair, ...]
    n_pred: int
    n_truth: int

    @property
    def tp(self) -> int:
        """Number of matched pairs."""
        return len(self.pairs)

    @property
    def fp(self) -> int:
        """Number of unmatched predictions."""
        return self.n_pred - self.tp

    @property
    def fn(self) -> int:
        """Number of unmatched truths."""
        return self.n_truth - self.tp

    @property
    def unmatched_pred(self) -> tuple[int, ...]:
        """Indices of predictions left without a truth."""
        matched = {p.pred for p in self.pairs}
        return tuple(i for i in range(self.n_pred) if i not in matched)

    @property
    def unmatched_truth(self) -> tuple[int, ...]:
        """Indices of truths left without a prediction."""
        matched = {p.truth for p in self.pairs}
        return tuple(i for i in range(self.n_truth) if i not in matched)


def masks_from_labels(labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Split a label image into one binary mask per non-zero label.

    Parameters
    ----------
    labels
        2-D integer (or boolean) image, 0 for background.

    Returns
    -------
    masks
        ``(K, H, W)`` boolean stack, in increasing label order.
    ids
        ``(K,)`` the label of each mask.
    """
    arr = np.asarray(labels)
    _check_label_image(arr, "labels")
    ids = np.unique(arr)
    ids = ids[ids != 0]
    return arr[None, :, :] == ids[:, None, None], ids


def _check_label_image(arr: np.ndarray, name: str) -> None:
    if arr.ndim != 2:
        raise ValueError(f"{name} must be a 2-D label image, got shape {arr.shape}")
    if arr.dtype != bool and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must have an integer dtype, got {arr.dtype}")


def _indicator(rows: np.ndarray, cols: np.ndarray, n: int, size: int) -> sparse.csr_array:
    ones = np.ones(len(rows), dtype=np.int64)
    return sparse.csr_array((ones, (rows, cols)), shape=(n, size))


def _as_instances(
    instances: Instances, name: str
) -> tuple[sparse.csr_array, tuple[int, ...] | None]:
    # Instances become a sparse (K, H·W) 0/1 indicator matrix, so that all pairwise
    # intersections are one exact integer product costing only the instance pixels,
    # not K dense copies of a film. The image shape is None for an empty list.
    if isinstance(instances, np.ndarray):
        if instances.ndim == 2:
            _check_label_image(instances, name)
            flat = instances.ravel()
            pixels = np.flatnonzero(flat)
            ids, rows = np.unique(flat[pixels], return_inverse=True)
            return _indicator(rows, pixels, len(ids), flat.size), instances.shape
        if instances.ndim == 3:
            k, h, w = instances.shape
            stack = _as_binary(instances, name).reshape(k, h * w)
            rows, pixels = np.nonzero(stack)
            return _indicator(rows, pixels, *stack.shape), instances.shape[1:]
        raise ValueError(
            f"{name} must be a label image (H, W) or a mask stack (K, H, W), "
            f"got shape {instances.shape}"
        )
    if len(instances) == 0:
        return _indicator(np.zeros(0, np.intp), np.zeros(0, np.intp), 0, 0), None
    masks = [_as_binary(m, f"{name}[{i}]") for i, m in enumerate(instances)]
    shapes = {m.shape for m in masks}
    if len(shapes) != 1 or masks[0].ndim != 2:
        raise ValueError(f"{name} must all be 2-D masks of one shape, got shapes {sorted(shapes)}")
    per_mask = [np.flatnonzero(m) for m in masks]
    rows = np.repeat(np.arange(len(masks)), [len(p) for p in per_mask])
    return _indicator(rows, np.concatenate(per_mask), len(masks), masks[0].size), masks[0].shape


def iou_matrix(preds: Instances, truths: Instances) -> np.ndarray:
    """Intersection over union of every predicted with every true instance.

    Parameters
    ----------
    preds
        Predicted instances: a list of binary masks, a ``(K, H, W)`` stack, or a 2-D
        integer label image (0 background).
    truths
        True instances, in any of the same forms.

    Returns
    -------
    np.ndarray
        ``(n_pred, n_truth)`` IoU values; 0 for pairs involving an empty mask.

    Raises
    ------
    ValueError
        If the masks are not binary or the prediction and truth shapes differ.
    """
    p, pred_shape = _as_instances(preds, "preds")
    t, truth_shape = _as_instances(truths, "truths")
    if p.shape[0] == 0 or t.shape[0] == 0:
        return np.zeros((p.shape[0], t.shape[0]))
    if pred_shape != truth_shape:
        raise ValueError(
            f"pred instances have shape {pred_shape} but truth instances have shape {truth_shape}"
        )
    inter = (p @ t.T).toarray().astype(float)
    union = p.sum(axis=1)[:, None] + t.sum(axis=1)[None, :] - inter
    # Empty instances have union 0 with each other; they never match.
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold < 1.0:
        raise ValueError(f"IoU threshold must be in [0, 1), got {threshold!r}")


def match_iou_matrix(iou: npt.ArrayLike, threshold: float = 0.5) -> InstanceMatch:
    """Match predictions (rows) to truths (columns) one to one from their IoUs.

    The assignment is Hungarian (:func:`scipy.optimize.linear_sum_assignment`) and
    maximises the summed IoU over pairs with IoU strictly above ``threshold``; pairs
    at or below it are zeroed first so they cannot displace a valid match. With
    non-overlapping instances and a threshold of 0.5 every truth has at most one
    candidate (Kirillov et al.), so this equals any other matching; it matters when
    instances overlap, where greedy best-first matching can lose matches.

    Parameters
    ----------
    iou
        ``(n_pred, n_truth)`` IoU matrix.
    threshold
        A pair matches only if its IoU is strictly greater.

    Returns
    -------
    InstanceMatch
        The kept pairs and the instance counts.
    """
    _check_threshold(threshold)
    arr = np.asarray(iou, dtype=float)
    if arr.ndim != 2:
        raise ValueError(f"iou must be a 2-D (n_pred, n_truth) matrix, got shape {arr.shape}")
    if arr.size and (not np.isfinite(arr).all() or (arr < 0).any() or (arr > 1).any()):
        raise ValueError("iou values must lie in [0, 1]")
    n_pred, n_truth = arr.shape
    if arr.size == 0:
        return InstanceMatch(pairs=(), n_pred=n_pred, n_truth=n_truth)
    weights = np.where(arr > threshold, arr, 0.0)
    rows, cols = optimize.linear_sum_assignment(weights, maximize=True)
    pairs = sorted(
        (
            MatchedPair(int(r), int(c), float(arr[r, c]))
            for r, c in zip(rows, cols, strict=True)
            if arr[r, c] > threshold
        ),
        key=lambda p: p.truth,
    )
    return InstanceMatch(pairs=tuple(pairs), n_pred=n_pred, n_truth=n_truth)


def match_instances(preds: Instances, truths: Instances, threshold: float = 0.5) -> InstanceMatch:
    """Match predicted to true instances one to one at IoU > ``threshold``.

    Parameters
    ----------
    preds
        Predicted instances (see :func:`iou_matrix` for the accepted forms).
    truths
        True instances.
    threshold
        A pair matches only if its IoU is strictly greater; 0.5 as in panoptic quality.

    Returns
    -------
    InstanceMatch
        Pairs are indices into ``preds`` and ``truths`` (into the increasing label
        order for label images).
    """
    _check_threshold(threshold)
    return match_iou_matrix(iou_matrix(preds, truths), threshold)


@dataclass(frozen=True)
class PanopticQuality:
    """Panoptic quality of Kirillov et al. for one class, PQ = SQ × RQ.

    Attributes
    ----------
    pq
        Sum of matched IoU / (TP + FP/2 + FN/2).
    sq
        Segmentation quality: mean IoU of the matched pairs (0 when none).
    rq
        Recognition quality: TP / (TP + FP/2 + FN/2).
    tp
        Matched pairs.
    fp
        Unmatched predictions.
    fn
        Unmatched truths.
    """

    pq: float
    sq: float
    rq: float
    tp: int
    fp: int
    fn: int


def panoptic_quality(
    preds: Instances, truths: Instances, threshold: float = 0.5
) -> PanopticQuality:
    """Panoptic quality of predicted against true instances.

    Parameters
    ----------
    preds
        Predicted instances (see :func:`iou_matrix`).
    truths
        True instances.
    threshold
        Matching IoU threshold (strictly greater); Kirillov et al. fix 0.5, which
        makes the matching unique for non-overlapping instances.

    Returns
    -------
    PanopticQuality
        All of PQ, SQ and RQ are 1.0 when there are neither predictions nor truths
        (nothing to find, nothing invented) and 0.0 when only one side is empty.
    """
    match = match_instances(preds, truths, threshold)
    tp, fp, fn = match.tp, match.fp, match.fn
    if tp + fp + fn == 0:
        return PanopticQuality(pq=1.0, sq=1.0, rq=1.0, tp=0, fp=0, fn=0)
    iou_sum = math.fsum(p.iou for p in match.pairs)
    denominator = tp + 0.5 * fp + 0.5 * fn
    sq = iou_sum / tp if tp else 0.0
    rq = tp / denominator
    return PanopticQuality(pq=iou_sum / denominator, sq=sq, rq=rq, tp=tp, fp=fp, fn=fn)


@dataclass(frozen=True)
class DetectionResult:
    """Instance detection counts at one IoU threshold.

    Attributes
    ----------
    tp
        Matched pairs.
    fp
        Unmatched predictions.
    fn
        Unmatched truths.
    """

    tp: int
    fp: int
    fn: int

    @property
    def recall(self) -> float:
        """TP / (TP + FN); 1.0 when there are no truths."""
        return _rate(self.tp, self.tp + self.fn)

    @property
    def precision(self) -> float:
        """TP / (TP + FP); 1.0 when there are no predictions."""
        return _rate(self.tp, self.tp + self.fp)


def detection_scores(
    preds: Instances, truths: Instances, threshold: float = 0.5
) -> DetectionResult:
    """Detection recall and precision with one-to-one matching at IoU > ``threshold``.

    Parameters
    ----------
    preds
        Predicted instances (see :func:`iou_matrix`).
    truths
        True instances.
    threshold
        Matching IoU threshold (strictly greater).
    """
    match = match_instances(preds, truths, threshold)
    return DetectionResult(tp=match.tp, fp=match.fp, fn=match.fn)


@dataclass(frozen=True)
class IdentificationResult:
    """How many matched vertebrae carry the right name.

    Attributes
    ----------
    n_correct
        Matched pairs whose predicted name equals the true name.
    n_matched
        Matched pairs (IoU above the threshold).
    n_pred
        Predicted instances.
    n_truth
        True instances.
    """

    n_correct: int
    n_matched: int
    n_pred: int
    n_truth: int

    @property
    def accuracy(self) -> float:
        """Matched vertebrae with the right name / matched vertebrae; nan if none matched."""
        return self.n_correct / self.n_matched if self.n_matched else math.nan

    @property
    def accuracy_over_truths(self) -> float:
        """Correctly found and named vertebrae / true vertebrae; nan if there are none."""
        return self.n_correct / self.n_truth if self.n_truth else math.nan


def identification_accuracy(
    preds: Instances,
    pred_names: Sequence[Hashable],
    truths: Instances,
    truth_names: Sequence[Hashable],
    threshold: float = 0.5,
) -> IdentificationResult:
    """Share of matched vertebrae whose predicted name (e.g. ``"L3"``) is right.

    Instances are matched by IoU exactly as :func:`match_instances`, ignoring names,
    so a well-segmented but misnamed vertebra counts against naming, not detection.

    Parameters
    ----------
    preds
        Predicted instances (see :func:`iou_matrix`).
    pred_names
        One name per predicted instance, in the same order.
    truths
        True instances.
    truth_names
        One name per true instance, in the same order.
    threshold
        Matching IoU threshold (strictly greater).

    Raises
    ------
    ValueError
        If a names list does not have one entry per instance.
    """
    match = match_instances(preds, truths, threshold)
    if len(pred_names) != match.n_pred:
        raise ValueError(f"{len(pred_names)} pred_names for {match.n_pred} predicted instances")
    if len(truth_names) != match.n_truth:
        raise ValueError(f"{len(truth_names)} truth_names for {match.n_truth} true instances")
    correct = sum(pred_names[p.pred] == truth_names[p.truth] for p in match.pairs)
    return IdentificationResult(
        n_correct=int(correct), n_matched=match.tp, n_pred=match.n_pred, n_truth=match.n_truth
    )


# -------------------------------------------------------------------------- grading


def _grades(grades: npt.ArrayLike, name: str, n_grades: int) -> np.ndarray:
    arr = np.asarray(grades)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of grades, got shape {arr.shape}")
    if arr.size and arr.dtype.kind not in "iu":
        raise ValueError(f"{name} must hold integer grades, got dtype {arr.dtype}")
    if arr.size and ((arr < 0).any() or (arr >= n_grades).any()):
        raise ValueError(f"{name} must hold grades in 0..{n_grades - 1}")
    return arr.astype(np.intp)


def cohen_kappa(
    grades_a: npt.ArrayLike,
    grades_b: npt.ArrayLike,
    *,
    weights: Literal["linear"] | None = None,
    n_grades: int = 4,
) -> float:
    """Cohen's kappa between two raters' integer grades.

    Parameters
    ----------
    grades_a
        Grades of rater (or method) A, integers in ``0..n_grades-1``.
    grades_b
        Grades of rater B for the same cases, in the same order.
    weights
        ``None`` for unweighted kappa; ``"linear"`` to weight a disagreement by
        ``|i - j| / (n_grades - 1)``.
    n_grades
        Number of ordinal grades; 4 for Genant (0 normal, 1 mild, 2 moderate,
        3 severe).

    Returns
    -------
    float
        Kappa in [-1, 1]; ``nan`` when the chance disagreement is zero (both raters
        gave every case the same single grade), where kappa is undefined.

    Raises
    ------
    ValueError
        If the lists differ in length, are empty, or hold grades out of range.
    """
    if n_grades < 2:
        raise ValueError(f"n_grades must be at least 2, got {n_grades}")
    if weights not in (None, "linear"):
        raise ValueError(f"weights must be None or 'linear', got {weights!r}")
    a = _grades(grades_a, "grades_a", n_grades)
    b = _grades(grades_b, "grades_b", n_grades)
    if len(a) != len(b):
        raise ValueError(f"grades_a has {len(a)} grades but grades_b has {len(b)}")
    if len(a) == 0:
        raise ValueError("no grades to compare")
    observed = np.zeros((n_grades, n_grades))
    np.add.at(observed, (a, b), 1.0)
    observed /= len(a)
    expected = np.outer(observed.sum(axis=1), observed.sum(axis=0))
    i, j = np.indices((n_grades, n_grades))
    disagreement = np.abs(i - j) / (n_grades - 1) if weights == "linear" else (i != j) * 1.0
    # kappa = 1 - observed disagreement / chance disagreement; for 0/1 weights this is
    # the familiar (p_o - p_e) / (1 - p_e).
    chance = float((disagreement * expected).sum())
    if chance == 0.0:
        return math.nan
    return 1.0 - float((disagreement * observed).sum()) / chance


@dataclass(frozen=True)
class GradeAgreement:
    """Agreement between two sets of Genant grades.

    Attributes
    ----------
    n
        Number of graded vertebrae.
    exact
        Fraction with identical grades.
    kappa
        Unweighted Cohen's kappa (``nan`` where undefined).
    linear_kappa
        Linearly weighted Cohen's kappa (``nan`` where undefined).
    """

    n: int
    exact: float
    kappa: float
    linear_kappa: float


def grade_agreement(
    grades_a: npt.ArrayLike, grades_b: npt.ArrayLike, *, n_grades: int = 4
) -> GradeAgreement:
    """Exact agreement and Cohen's kappas of two paired lists of grades.

    Parameters are those of :func:`cohen_kappa`.
    """
    kappa = cohen_kappa(grades_a, grades_b, n_grades=n_grades)
    linear = cohen_kappa(grades_a, grades_b, weights="linear", n_grades=n_grades)
    a = np.asarray(grades_a)
    b = np.asarray(grades_b)
    return GradeAgreement(n=len(a), exact=float(np.mean(a == b)), kappa=kappa, linear_kappa=linear)


# ---------------------------------------------------------------------- statistics


def _finite_1d(values: npt.ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(
            f"{name} must be finite; count failed cases (e.g. inf distances of empty "
            "predictions) separately, as fit_failure does"
        )
    return arr


@dataclass(frozen=True)
class PairedTTest:
    """Result of a two-sided paired t-test on A − B.

    Attributes
    ----------
    t
        t statistic; ±inf when all differences are equal and non-zero, nan when all
        are zero.
    df
        Degrees of freedom, n − 1.
    p_value
        Two-sided p-value; 0.0 for infinite t, nan for nan t.
    mean_difference
        Mean of A − B.
    """

    t: float
    df: int
    p_value: float
    mean_difference: float

    def significant(self, alpha: float = 0.05) -> bool:
        """Whether the difference is significant at level ``alpha`` (5% in the papers)."""
        return bool(self.p_value < alpha)


def paired_t_test(scores_a: npt.ArrayLike, scores_b: npt.ArrayLike) -> PairedTTest:
    """Paired t-test between two methods' per-case scores.

    Parameters
    ----------
    scores_a
        Per-case scores of method A (e.g. Dice per test image).
    scores_b
        Scores of method B on the same cases, in the same order.

    Returns
    -------
    PairedTTest
        The statistic is ``mean(d) / (sd(d) / sqrt(n))`` with ``d = a - b`` and the
        sample standard deviation (ddof 1). When every difference is the same the
        standard error is zero: t is ±inf (p 0.0) if that difference is non-zero and
        nan (p nan) if it is zero, as there is then no evidence either way.

    Raises
    ------
    ValueError
        If the lengths differ, there are fewer than 2 pairs, or a score is not finite.
    """
    a = _finite_1d(scores_a, "scores_a")
    b = _finite_1d(scores_b, "scores_b")
    if len(a) != len(b):
        raise ValueError(f"scores_a has {len(a)} values but scores_b has {len(b)}")
    if len(a) < 2:
        raise ValueError(f"a paired t-test needs at least 2 pairs, got {len(a)}")
    d = a - b
    df = len(d) - 1
    mean = float(d.mean())
    # Compare exactly: identical differences can still give a tiny non-zero float sd.
    if np.all(d == d[0]):
        if d[0] == 0:
            return PairedTTest(t=math.nan, df=df, p_value=math.nan, mean_difference=0.0)
        return PairedTTest(
            t=math.copysign(math.inf, d[0]), df=df, p_value=0.0, mean_difference=float(d[0])
        )
    t = mean / (float(d.std(ddof=1)) / math.sqrt(len(d)))
    p = 2.0 * float(stats.t.sf(abs(t), df))
    return PairedTTest(t=t, df=df, p_value=p, mean_difference=mean)


@dataclass(frozen=True)
class Summary:
    """Per-case metric summarised as the papers tabulate it.

    Attributes
    ----------
    n
        Number of cases.
    mean
        Mean.
    std
        Sample standard deviation (ddof 1), the "mean ± std over test images" of the
        papers; nan for a single case.
    median
        Median.
    """

    n: int
    mean: float
    std: float
    median: float


def summary(values: npt.ArrayLike) -> Summary:
    """Mean, sample standard deviation, median and count of per-case values.

    Raises
    ------
    ValueError
        If there are no values or any is not finite.
    """
    arr = _finite_1d(np.ravel(values), "values")
    if arr.size == 0:
        raise ValueError("values is empty")
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return Summary(n=int(arr.size), mean=float(arr.mean()), std=std, median=float(np.median(arr)))
