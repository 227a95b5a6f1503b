"""Dice + BCE (the thoracic UNet paper): hand-checked values and its limits."""

from __future__ import annotations

import math

import pytest
import torch

from pacsnode.training.losses.dice_bce import DiceBCELoss, soft_dice


def test_soft_dice_by_hand() -> None:
    p = torch.tensor([[[1.0, 0.5], [0.0, 0.0]]])
    y = torch.tensor([[[1, 1], [0, 0]]])
    # 2 * (1 + 0.5) / (1.5 + 2) with smooth 0
    assert soft_dice(p, y, smooth=0.0).item() == pytest.approx(3.0 / 3.5)
    assert soft_dice(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2)).item() == 1.0


def test_loss_is_one_minus_dice_plus_bce() -> None:
    logits = torch.tensor([[[2.0, -1.0], [0.0, -3.0]]])
    target = torch.tensor([[[1, 1], [0, 0]]])
    p = torch.sigmoid(logits)
    dice = (2 * (p * target).sum() + 1) / (p.sum() + target.sum() + 1)
    bce = (
        -sum(
            math.log(pi) if yi else math.log(1 - pi)
            for pi, yi in zip(p.flatten().tolist(), target.flatten().tolist(), strict=True)
        )
        / 4
    )
    loss = DiceBCELoss()(logits[:, None], target)
    assert loss.item() == pytest.approx((1 - dice.item()) + bce, rel=1e-6)


def test_confident_correct_prediction_costs_almost_nothing() -> None:
    target = torch.zeros(2, 8, 8)
    target[:, 2:6, 2:6] = 1
    logits = (target * 2 - 1) * 20
    assert DiceBCELoss()(logits, target).item() < 1e-6


def test_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one channel"):
        DiceBCELoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 4, 4))
    with pytest.raises(ValueError, match="differ"):
        DiceBCELoss()(torch.zeros(1, 4, 4), torch.zeros(1, 4, 5))
