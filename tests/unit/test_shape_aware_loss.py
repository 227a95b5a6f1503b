"""The shape-aware term (Eq. 4) on toy masks: E is the mean point-to-curve distance,
only mismatched pixels carry it, and a perfect prediction pays nothing extra."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pacsnode.training.losses.shape_aware import (
    ShapeAwareLoss,
    boundary,
    curve_distance,
    shape_weights_batch,
)


def square(r0: int, r1: int, c0: int, c1: int, shape: tuple[int, int] = (16, 16)) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[r0:r1, c0:c1] = True
    return mask


def scores_for(mask: np.ndarray, confidence: float = 3.0) -> torch.Tensor:
    fg = torch.from_numpy(mask.astype(np.float32)) * 2 - 1  # +1 inside, -1 outside
    return torch.stack([-confidence * fg, confidence * fg])[None]


def test_boundary_is_the_ring_of_the_mask() -> None:
    ring = boundary(square(2, 6, 2, 6))
    assert ring.sum() == 12 and not ring[3:5, 3:5].any()


def test_curve_distance_by_hand() -> None:
    truth = square(4, 10, 4, 10)
    assert curve_distance(truth, truth) == 0.0
    # The 6 x 6 square moved one column right. Of its 20 outline pixels, 10 lie on the
    # truth's outline (top and bottom rows but their last pixel) and 10 one pixel off it
    # (those two last pixels and both 4-pixel sides): mean 10 / 20.
    assert curve_distance(square(4, 10, 5, 11), truth) == pytest.approx(0.5)
    # A far-off island raises the mean: its whole outline is far from the truth.
    island = truth | square(13, 15, 13, 15)
    assert curve_distance(island, truth) > 1.0


def test_empty_masks() -> None:
    empty = np.zeros((16, 16), bool)
    assert curve_distance(empty, empty) == 0.0
    assert curve_distance(empty, square(4, 10, 4, 10)) == pytest.approx(math.hypot(16, 16))
    assert curve_distance(square(4, 10, 4, 10), empty) == pytest.approx(math.hypot(16, 16))


def test_weights_sit_on_mismatched_pixels_only() -> None:
    truth = square(4, 10, 4, 10)
    predicted = square(4, 10, 5, 11)
    e = shape_weights_batch(torch.from_numpy(predicted)[None], torch.from_numpy(truth)[None])[0]
    mismatch = torch.from_numpy(predicted != truth)
    assert torch.all(e[~mismatch] == 0)
    assert torch.allclose(e[mismatch], torch.tensor(curve_distance(predicted, truth)))


def test_loss_is_log_loss_plus_weighted_log_loss_on_mismatch() -> None:
    truth = square(4, 10, 4, 10)
    predicted = square(4, 10, 5, 11)
    scores = scores_for(predicted)
    target = torch.from_numpy(truth.astype(np.int64))[None]
    parts = ShapeAwareLoss().terms(scores, target)
    per_pixel = F.cross_entropy(scores, target, reduction="none")[0]
    e = curve_distance(predicted, truth)
    mismatch = torch.from_numpy(predicted != truth)
    assert parts["log"].item() == pytest.approx(per_pixel.sum().item() / 256)
    assert parts["shape"].item() == pytest.approx(e * per_pixel[mismatch].sum().item() / 256)
    assert ShapeAwareLoss(0.0)(scores, target).item() == pytest.approx(parts["log"].item())


def test_a_correct_prediction_pays_no_shape_term_and_gradients_flow() -> None:
    truth = square(4, 10, 4, 10)
    target = torch.from_numpy(truth.astype(np.int64))[None]
    assert ShapeAwareLoss().terms(scores_for(truth), target)["shape"].item() == 0.0
    scores = scores_for(square(4, 10, 5, 11)).requires_grad_()
    ShapeAwareLoss()(scores, target).backward()
    assert scores.grad is not None and scores.grad.abs().sum() > 0


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="scores"):
        ShapeAwareLoss()(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="target"):
        ShapeAwareLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="shape_weight"):
        ShapeAwareLoss(-1.0)
