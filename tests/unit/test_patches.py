"""Vertebra patches: the identity frame is a crop, points map there and back, and a mask
segmented in a turned, scaled patch lands where it was on the film."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pacsnode.analysis.patches import PatchFrame


def test_an_upright_unit_frame_is_a_crop() -> None:
    film = np.arange(200 * 150, dtype=np.float32).reshape(200, 150)
    frame = PatchFrame(centre=(75.0, 100.0), axis=(0.0, 1.0), scale=1.0, size=64)
    assert np.array_equal(frame.extract(film), film[68:132, 43:107])


def test_points_go_there_and_back() -> None:
    frame = PatchFrame(centre=(300.0, 410.0), axis=(0.3, 1.0), scale=2.5)
    u, v = np.array([0.0, 10.5, 63.0]), np.array([5.0, 32.0, 64.0])
    xy = frame.to_film(u, v)
    assert np.allclose(frame.to_patch(xy[:, 0], xy[:, 1]), np.stack([u, v], 1))
    # The patch centre is the frame's centre; one patch pixel down the patch is one
    # scale step along the spine axis.
    assert np.allclose(frame.to_film(np.array(32.0), np.array(32.0)), (300.0, 410.0))
    step = frame.to_film(np.array(32.0), np.array(33.0)) - (300.0, 410.0)
    assert np.allclose(step, 2.5 * np.array([0.3, 1.0]) / math.hypot(0.3, 1.0))


def test_a_tilted_spine_stands_upright_in_the_patch() -> None:
    # A bright bar along the spine axis, tilted 30 degrees from vertical.
    rows, cols = np.mgrid[0:300, 0:300]
    angle = math.radians(30)
    axis = (math.sin(angle), math.cos(angle))
    across = (cols + 0.5 - 150) * axis[1] - (rows + 0.5 - 150) * axis[0]
    film = (np.abs(across) < 10).astype(np.float32)
    patch = PatchFrame((150.0, 150.0), axis, scale=2.0).extract(film)
    column_mass = patch.sum(axis=0)
    # The bar (20 px wide, 10 patch px) runs straight down the patch's middle columns.
    assert column_mass[27:37].min() > 60 and column_mass[:20].max() < 1
    assert column_mass[44:].max() < 1


@pytest.mark.parametrize(("angle", "scale"), [(0.0, 1.0), (25.0, 2.0), (-40.0, 3.5)])
def test_a_patch_mask_maps_back_onto_its_film_region(angle: float, scale: float) -> None:
    shape = (400, 360)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    # Small enough to fit the 64-pixel patch at scale 1.
    vertebra = ((cols + 0.5 - 170) / 26) ** 2 + ((rows + 0.5 - 210) / 20) ** 2 <= 1
    a = math.radians(angle)
    frame = PatchFrame((170.0, 210.0), (math.sin(a), math.cos(a)), scale=scale)
    patch = frame.extract(vertebra.astype(np.float32))
    back = frame.mask_to_film(patch, shape)
    inter = np.logical_and(back, vertebra).sum()
    assert inter / np.logical_or(back, vertebra).sum() > 0.9


def test_bad_frames_and_masks_are_refused() -> None:
    with pytest.raises(ValueError, match="zero vector"):
        PatchFrame((0.0, 0.0), (0.0, 0.0), 1.0)
    with pytest.raises(ValueError, match="scale"):
        PatchFrame((0.0, 0.0), (0.0, 1.0), 0.0)
    with pytest.raises(ValueError, match="patch shape"):
        PatchFrame((0.0, 0.0), (0.0, 1.0), 1.0).mask_to_film(np.zeros((8, 8)), (10, 10))
    off_film = PatchFrame((-500.0, -500.0), (0.0, 1.0), 1.0)
    assert not off_film.mask_to_film(np.ones((64, 64)), (100, 100)).any()
