"""The localisation paper's low-resolution frame: pad, resize, map back; largest region; box."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pacsnode.analysis.lowres import SquareFrame, largest_component, oriented_box


@pytest.mark.parametrize(("rows", "cols"), [(300, 200), (200, 300), (250, 250), (1001, 640)])
def test_pad_is_centred_and_round_trips(rows: int, cols: int) -> None:
    frame = SquareFrame(rows, cols, 100)
    image = np.zeros((rows, cols), dtype=np.float32)
    image[rows // 4 : rows // 2, cols // 3 : 2 * cols // 3] = 1.0
    low = frame.to_lowres(image)
    assert tuple(low.shape) == (1, 1, 100, 100)
    back = frame.to_film(low[0, 0])
    assert back.shape == (rows, cols)
    # A block survives the trip to within the low-resolution pixel size.
    agree = ((back >= 0.5) == (image >= 0.5)).mean()
    assert agree > 0.98


def test_padding_is_zero_and_symmetric() -> None:
    frame = SquareFrame(400, 200, 100)
    assert frame.offset == (0, 100)
    low = frame.to_lowres(np.ones((400, 200), dtype=np.float32))[0, 0].numpy()
    assert np.allclose(low[:, :20], 0.0, atol=1e-6) and np.allclose(low[:, -20:], 0.0, atol=1e-6)
    assert np.allclose(low[:, 30:70], 1.0, atol=1e-3)


def test_mask_to_lowres_keeps_a_thin_spine_connected() -> None:
    # A 2000-px film with a 60-px wide diagonal band: still one region at 100 x 100.
    rows = cols = 2000
    yy, xx = np.mgrid[0:rows, 0:cols]
    band = np.abs(yy - xx) < 60
    low = SquareFrame(rows, cols, 100).mask_to_lowres(band)
    from scipy import ndimage

    assert ndimage.label(low, structure=np.ones((3, 3)))[1] == 1


def test_shape_errors() -> None:
    frame = SquareFrame(10, 20, 8)
    with pytest.raises(ValueError, match="image shape"):
        frame.to_lowres(np.zeros((20, 10)))
    with pytest.raises(ValueError, match="map shape"):
        frame.to_film(np.zeros((9, 9)))


def test_largest_component() -> None:
    m = np.zeros((6, 6), dtype=bool)
    m[0:2, 0:3] = True  # area 6
    m[4, 4:6] = True  # area 2
    out = largest_component(m)
    assert out.sum() == 6 and out[0:2, 0:3].all()
    assert not largest_component(np.zeros((3, 3), dtype=bool)).any()


def test_oriented_box_axis_aligned() -> None:
    m = np.zeros((10, 20), dtype=bool)
    m[2:5, 3:13] = True  # rows 2-4, cols 3-12: x from 3 to 13, y from 2 to 5
    box = oriented_box(m)
    assert box is not None
    assert box.length == pytest.approx(10.0)
    assert box.width == pytest.approx(3.0)
    assert box.angle_deg == pytest.approx(0.0, abs=1e-6) or box.angle_deg == pytest.approx(180.0)
    xs = sorted(c[0] for c in box.corners)
    ys = sorted(c[1] for c in box.corners)
    assert xs[0] == pytest.approx(3.0) and xs[-1] == pytest.approx(13.0)
    assert ys[0] == pytest.approx(2.0) and ys[-1] == pytest.approx(5.0)


def test_oriented_box_diagonal() -> None:
    yy, xx = np.mgrid[0:200, 0:200]
    band = (np.abs(yy - xx) < 5) & (xx > 20) & (xx < 180)
    box = oriented_box(band)
    assert box is not None
    assert box.angle_deg == pytest.approx(45.0, abs=1.0)
    assert box.length > 200 and box.width < 15
    assert oriented_box(np.zeros((4, 4), dtype=bool)) is None


@pytest.mark.parametrize(("rows", "cols"), [(2500, 2000), (333, 1000), (400, 400)])
def test_resize_matches_torch_on_the_padded_square(rows: int, cols: int) -> None:
    frame = SquareFrame(rows, cols, 100)
    image = torch.rand(rows, cols, generator=torch.Generator().manual_seed(rows))
    r0, c0 = frame.offset
    padded = F.pad(image[None, None], (c0, frame.side - cols - c0, r0, frame.side - rows - r0))
    expected = F.interpolate(
        padded, size=(100, 100), mode="bicubic", antialias=True, align_corners=False
    )
    torch.testing.assert_close(frame.to_lowres(image), expected, rtol=0, atol=2e-6)
    low = torch.rand(100, 100, generator=torch.Generator().manual_seed(cols))
    up = F.interpolate(low[None, None], size=(frame.side,) * 2, mode="bilinear")[0, 0]
    np.testing.assert_allclose(
        frame.to_film(low), up[r0 : r0 + rows, c0 : c0 + cols].numpy(), rtol=0, atol=2e-6
    )


def test_film_window_holds_everything_a_lowres_box_maps_to() -> None:
    frame = SquareFrame(1500, 1000, 100)
    low = np.zeros((100, 100), np.float32)
    low[30:61, 40:52] = np.random.default_rng(1).random((31, 12))
    full = frame.to_film(low)
    r0, r1, c0, c1 = frame.film_window((30, 61, 40, 52))
    outside = full.copy()
    outside[r0:r1, c0:c1] = 0
    assert not outside.any()
    np.testing.assert_array_equal(frame.to_film(low, (r0, r1, c0, c1)), full[r0:r1, c0:c1])
    box = oriented_box(full > 0.5)
    part = oriented_box(full[r0:r1, c0:c1] > 0.5).translated(c0, r0)
    np.testing.assert_allclose(part.corners, box.corners, atol=1e-6)


def test_spine_regions_join_fragments_along_the_axis_and_leave_specks() -> None:
    from pacsnode.analysis.localise import spine_regions

    binary = np.zeros((100, 100), bool)
    binary[10:50, 45:55] = True  # the largest piece of the spine
    binary[56:70, 46:56] = True  # the same spine past a gap, on its axis
    binary[75:80, 47:53] = True  # and further down
    binary[20:24, 85:89] = True  # a speck beside it: bowel gas
    keep = spine_regions(binary, binary)
    assert keep[60, 50] and keep[77, 50]
    assert not keep[22, 87]


def test_spine_regions_follow_a_lower_threshold_between_pieces() -> None:
    from pacsnode.analysis.localise import spine_regions

    binary = np.zeros((60, 60), bool)
    binary[5:20, 25:35] = True
    binary[30:34, 50:54] = True  # off the axis, but joined by probability
    linked = binary.copy()
    linked[18:32, 30:52] = True
    assert spine_regions(binary, linked)[31, 51]
    assert not spine_regions(binary, binary)[31, 51]
