"""The region-aware loss (localisation paper, Eq. 2-6) on toy masks computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pacsnode.training.losses import RegionAwareLoss, region_weights


def _mask(rows: list[str]) -> np.ndarray:
    return np.array([[c == "#" for c in r] for r in rows])


def test_weights_three_regions() -> None:
    # Regions: A (area 6), B (area 2), C (area 1). N_r = 3, N_t = 1 -> factor 2.
    # E on B = 2 * (6 - 2) / 6 = 4/3; E on C = 2 * (6 - 1) / 6 = 5/3; E on A = 0.
    m = _mask(
        [
            "###...",
            "###...",
            "......",
            "....##",
            "......",
            "#.....",
        ]
    )
    e = region_weights(m)
    expected = np.zeros(m.shape)
    expected[3, 4:6] = 4 / 3
    expected[5, 0] = 5 / 3
    np.testing.assert_allclose(e, expected)


def test_weights_tie_for_largest_gets_nothing() -> None:
    # Two regions of area 4 and one of area 1: A_max = 4; the tied regions have A_q = A_max.
    # E on the single pixel = (3 - 1) * (4 - 1) / 4 = 1.5.
    m = _mask(
        [
            "##..##",
            "##..##",
            "......",
            "..#...",
        ]
    )
    e = region_weights(m)
    assert e[3, 2] == pytest.approx(1.5)
    assert e[:2].sum() == 0
    assert np.count_nonzero(e) == 1


@pytest.mark.parametrize(("connectivity", "expected_nonzero"), [(8, 0), (4, 1)])
def test_weights_connectivity(connectivity: int, expected_nonzero: int) -> None:
    # (2, 2) touches the 2x2 block only diagonally: one region under 8-connectivity; under
    # 4-connectivity two regions of areas 4 and 1, so E = (2 - 1) * (4 - 1) / 4 = 0.75 there.
    m = _mask(
        [
            "##..",
            "##..",
            "..#.",
            "....",
        ]
    )
    e = region_weights(m, connectivity=connectivity)
    assert np.count_nonzero(e) == expected_nonzero
    if connectivity == 4:
        assert e[2, 2] == pytest.approx(0.75)


def test_weights_single_region_and_empty() -> None:
    single = _mask([".##.", ".##.", "...."])
    assert not region_weights(single).any()
    assert not region_weights(np.zeros((4, 4), dtype=bool)).any()


def test_weights_reject_bad_input() -> None:
    with pytest.raises(ValueError, match="2-D"):
        region_weights(np.zeros((1, 4, 4), dtype=bool))
    with pytest.raises(ValueError, match="connectivity"):
        region_weights(np.zeros((4, 4), dtype=bool), connectivity=6)


def _scores(foreground: np.ndarray, margin: float = 2.0) -> torch.Tensor:
    fg = torch.from_numpy(foreground.astype(np.float32))
    return torch.stack([-margin * fg + margin * (1 - fg), margin * fg - margin * (1 - fg)])[None]


def test_region_term_zero_for_a_single_region() -> None:
    pred = _mask(["......", ".###..", ".###..", "......"])
    target = torch.from_numpy(pred.astype(np.int64))[None]
    loss = RegionAwareLoss(1.0)
    scores = _scores(pred).requires_grad_()
    terms = loss.terms(scores, target)
    assert terms["region"].item() == 0.0
    assert loss(scores, target).item() == pytest.approx(terms["log"].item())


def test_region_term_value_by_hand() -> None:
    # Islands of area 4 (largest) and 1: E = (2 - 1) * (4 - 1) / 4 = 0.75 on the island.
    # Softmax with scores (-2, 2): P(fg) = 1 / (1 + e^-4). Lr = 0.5 * 0.75 * P^2 / 16 pixels.
    pred = _mask(["##..", "##..", "....", "...#"])
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    terms = RegionAwareLoss(1.0).terms(_scores(pred), target)
    p = 1 / (1 + np.exp(-4.0))
    assert terms["region"].item() == pytest.approx(0.5 * 0.75 * p**2 / 16, rel=1e-5)


def test_log_term_is_cross_entropy() -> None:
    torch.manual_seed(0)
    scores = torch.randn(3, 2, 8, 8)
    target = (torch.rand(3, 8, 8) > 0.5).long()
    got = RegionAwareLoss(0.0)(scores, target)
    assert got.item() == pytest.approx(F.cross_entropy(scores, target).item(), rel=1e-6)


def test_gradient_suppresses_the_island() -> None:
    pred = _mask(["##....", "##....", "......", ".....#"])
    scores = _scores(pred, margin=1.0).requires_grad_()
    target = torch.from_numpy(pred.astype(np.int64))[None]
    target[0, 3, 5] = 0  # the island is a false positive
    terms = RegionAwareLoss(1.0).terms(scores, target)
    terms["region"].backward()
    grad = scores.grad[0]
    # Descent lowers the foreground score and raises the background score on the island only.
    assert grad[1, 3, 5] > 0 and grad[0, 3, 5] < 0
    assert grad[:, :2, :2].abs().sum() == 0


def test_truth_weighting_differs_on_false_islands() -> None:
    pred = _mask(["##..", "##..", "....", "...#"])
    target = torch.from_numpy(pred.astype(np.int64))[None]
    target[0, 3, 3] = 0
    by_pred = RegionAwareLoss(1.0, weighting="prediction").terms(_scores(pred), target)
    by_truth = RegionAwareLoss(1.0, weighting="truth").terms(_scores(pred), target)
    assert by_truth["region"].item() < by_pred["region"].item()


def test_loss_rejects_bad_shapes() -> None:
    loss = RegionAwareLoss()
    with pytest.raises(ValueError, match="scores"):
        loss(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="target"):
        loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 5, 4))
    with pytest.raises(ValueError, match="weighting"):
        RegionAwareLoss(weighting="other")
