"""Appearance families of the phantom generator and the training loops' augmentation."""

from __future__ import annotations

import argparse
import itertools

import numpy as np
import pytest
import torch

from pacsnode.cli._args import training_appearance
from pacsnode.training.augment import augment_appearance
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.appearance import (
    ALL_FAMILIES,
    HELD_OUT_FAMILIES,
    TRAINING_FAMILIES,
    Appearance,
    draw_appearance,
)


def test_classic_is_the_default_and_unchanged_by_the_new_stream() -> None:
    a = make_phantom(3, 1, "lumbar", size_px=256)
    b = make_phantom(3, 1, "lumbar", size_px=256, appearance="classic")
    assert a.appearance == Appearance()
    assert np.array_equal(a.radiograph.display, b.radiograph.display)
    assert a.truth["appearance"] == "classic"


@pytest.mark.parametrize("family", ALL_FAMILIES)
def test_each_family_is_deterministic_and_keeps_the_truth(family: str) -> None:
    a = make_phantom(3, 2, "cervical", size_px=256, appearance=family)
    b = make_phantom(3, 2, "cervical", size_px=256, appearance=family)
    classic = make_phantom(3, 2, "cervical", size_px=256)
    assert np.array_equal(a.radiograph.display, b.radiograph.display)
    assert a.truth["appearance"] == family
    # Same anatomy and outlines whatever the look.
    assert [v["outline"] for v in a.truth["vertebrae"]] == [
        v["outline"] for v in classic.truth["vertebrae"]
    ]
    d = a.radiograph.display
    assert d.dtype == np.float32 and d.min() >= 0.0 and d.max() <= 1.0
    if family != "classic":
        assert not np.array_equal(d, classic.radiograph.display)


def test_bone_stays_brighter_than_the_disc_spaces_in_every_family() -> None:
    for family in ALL_FAMILIES:
        p = make_phantom(11, 0, "lumbar", size_px=400, appearance=family)
        vs = p.truth["vertebrae"]
        img = p.radiograph.display
        inside, gaps = [], []
        for upper, lower in itertools.pairwise(vs):
            cu = np.array(upper["centroid"])
            cl = np.array(lower["centroid"])
            mid = (
                np.array(upper["endplate_midpoints"]["inferior"])
                + np.array(lower["endplate_midpoints"]["superior"])
            ) / 2
            for c in (cu, cl):
                inside.append(img[int(c[1]), int(c[0])])
            gaps.append(img[int(mid[1]), int(mid[0])])
        assert np.mean(inside) > np.mean(gaps), family


def test_randomised_draws_only_training_families() -> None:
    rng = np.random.default_rng(0)
    drawn = {draw_appearance("randomised", rng).family for _ in range(400)}
    assert drawn == set(TRAINING_FAMILIES)
    assert not drawn & set(HELD_OUT_FAMILIES)


def test_training_commands_refuse_the_held_out_families() -> None:
    for family in HELD_OUT_FAMILIES:
        with pytest.raises(argparse.ArgumentTypeError, match="held out"):
            training_appearance(family)
    assert training_appearance("randomised") == "randomised"
    with pytest.raises(argparse.ArgumentTypeError, match="unknown"):
        training_appearance("sepia")
    with pytest.raises(ValueError, match="unknown appearance"):
        draw_appearance("sepia", np.random.default_rng(0))


def _batch() -> tuple[torch.Tensor, torch.Tensor]:
    p = make_phantom(5, 1, "lumbar", size_px=256)
    d = torch.from_numpy(p.radiograph.display[:64, :64].copy())
    x = torch.stack([d * (0.5 + 0.1 * k) for k in range(16)])
    x = (x - x.mean((1, 2), keepdim=True)) / x.std((1, 2), keepdim=True)
    return x, (x > 0.3).to(torch.uint8)


def test_augmentation_keeps_each_image_normalised_and_is_reproducible() -> None:
    x, y = _batch()
    a, ya = augment_appearance(x, torch.Generator().manual_seed(1), y)
    b, yb = augment_appearance(x, torch.Generator().manual_seed(1), y)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    assert a.shape == x.shape and ya.shape == y.shape and ya.dtype == y.dtype
    assert torch.allclose(a.mean((1, 2)), x.mean((1, 2)), atol=1e-4)
    assert torch.allclose(a.std((1, 2)), x.std((1, 2)), atol=1e-3)
    assert not torch.equal(a, x)
    assert set(torch.unique(ya).tolist()) <= {0, 1}


def test_elastic_deformation_moves_the_targets_with_the_image() -> None:
    from pacsnode.training.augment import AppearanceAugment

    x, y = _batch()
    only_elastic = AppearanceAugment(
        p_curve=0, p_filter=0, p_noise=0, p_elastic=1.0, p_erase=0, p_jpeg=0, elastic_px=0.08
    )
    a, ya = augment_appearance(x.float(), torch.Generator().manual_seed(2), y, only_elastic)
    assert not torch.equal(ya, y)
    # Where the image is bright, the moved mask still says so.
    agree = ((a > 0.3) == ya.bool()).float().mean()
    assert agree > 0.9
