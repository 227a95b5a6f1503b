"""The spine region frame and the region networks' data: rectangular frames, the working
image, the frame from the localiser's box, target channels drawn where the vertebrae are,
peak decoding, and a short training run that writes loadable weights."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from pacsnode.analysis.detect import (
    DETECTOR_KIND,
    SEMANTIC_KIND,
    TrainedUNet,
    find_peaks,
    read_detections,
)
from pacsnode.analysis.lowres import oriented_box
from pacsnode.analysis.patches import PatchFrame
from pacsnode.analysis.region import (
    REGION_ACROSS,
    REGION_ALONG,
    WORKING_SIDE,
    normalise_region,
    region_frame,
    working_image,
)
from pacsnode.errors import ModelError
from pacsnode.training.annotations import phantom_film
from pacsnode.training.phantom import make_phantom
from pacsnode.training.region.data import (
    CHANNELS,
    RegionJitter,
    region_set,
    spine_box,
    vertebra_geometry,
)
from pacsnode.training.region.train import (
    RegionConfig,
    detection_scores,
    detector_terms,
    train_region_network,
)


def test_a_rectangular_frame_maps_points_there_and_back() -> None:
    frame = PatchFrame((300.0, 200.0), (0.2, 1.0), 1.7, size=40, length=120)
    assert frame.shape == (120, 40)
    u, v = np.array([0.0, 20.0, 40.0]), np.array([0.0, 60.0, 120.0])
    xy = frame.to_film(u, v)
    assert np.allclose(xy[1], (300.0, 200.0))  # the centre of the rectangle
    assert np.allclose(frame.to_patch(xy[:, 0], xy[:, 1]), np.stack([u, v], 1))
    assert frame.extract(np.ones((500, 500), np.float32)).shape == (120, 40)


def test_a_turned_frame_sees_the_patch_upside_down() -> None:
    film = np.random.default_rng(0).random((300, 300)).astype(np.float32)
    frame = PatchFrame((150.0, 150.0), (0.3, 1.0), 1.0, size=32, length=48)
    assert np.allclose(frame.turned().extract(film), frame.extract(film)[::-1, ::-1], atol=1e-5)


def test_a_scaled_frame_covers_the_same_part_of_a_larger_film() -> None:
    frame = PatchFrame((100.0, 80.0), (1.0, 2.0), 1.5, size=16, length=24)
    big = frame.scaled(2.5)
    u, v = np.array([3.0, 10.0]), np.array([7.0, 20.0])
    assert np.allclose(big.to_film(u, v), 2.5 * frame.to_film(u, v))


def test_the_working_image_is_the_film_reduced_to_the_training_size() -> None:
    film = np.zeros((2000, 1600), np.float32)
    film[500:1500, 700:900] = 1.0
    work, factor = working_image(film)
    assert max(work.shape) == WORKING_SIDE
    assert factor == pytest.approx(2.5, rel=1e-3)
    assert work[400, 320] == pytest.approx(1.0)  # inside the bar, mapped
    assert work.mean() == pytest.approx(film.mean(), rel=0.01)
    small = np.ones((600, 500), np.float32)
    assert working_image(small)[1] == 1.0


def test_the_region_frame_follows_the_box_and_keeps_its_aspect() -> None:
    mask = np.zeros((1000, 800), bool)
    rows, cols = np.mgrid[0:1000, 0:800]
    # A bar 600 long and 100 wide, tilted 20 degrees from vertical.
    angle = math.radians(20)
    along = (cols + 0.5 - 400) * math.sin(angle) + (rows + 0.5 - 500) * math.cos(angle)
    across = (cols + 0.5 - 400) * math.cos(angle) - (rows + 0.5 - 500) * math.sin(angle)
    mask[(np.abs(along) < 300) & (np.abs(across) < 50)] = True
    box = oriented_box(mask)
    frame = region_frame(box, factor=2.0)
    assert frame.shape == (REGION_ALONG, REGION_ACROSS)
    assert frame.centre == pytest.approx((200.0, 250.0), abs=0.5)
    axis = np.asarray(frame.axis) / np.hypot(*frame.axis)
    assert axis[1] > 0  # down the image
    assert abs(axis @ (math.sin(angle), math.cos(angle))) == pytest.approx(1.0, abs=1e-3)
    # The bar, with its margins, fits inside the frame on the working image.
    corners = frame.to_film(np.array([0, REGION_ACROSS]), np.array([0, REGION_ALONG]))
    assert np.hypot(*(corners[1] - corners[0])) * 2.0 > math.hypot(600, 100)


def test_normalised_regions_have_zero_mean_and_unit_spread() -> None:
    region = np.random.default_rng(1).random((REGION_ALONG, REGION_ACROSS)) * 0.3 + 0.2
    out = normalise_region(region)
    assert out.dtype == np.float32
    assert abs(float(out.mean())) < 1e-4
    assert float(out.std()) == pytest.approx(1.0, rel=1e-3)


def test_peaks_are_found_at_their_subpixel_centres() -> None:
    rows, cols = np.mgrid[0:100, 0:60] + 0.5
    heat = np.zeros((100, 60))
    for u, v in ((20.3, 30.6), (40.0, 70.2)):
        heat = np.maximum(heat, np.exp(-((cols - u) ** 2 + (rows - v) ** 2) / (2 * 2.0**2)))
    peaks = find_peaks(heat, threshold=0.5)
    assert len(peaks) == 2
    found = sorted((round(u, 1), round(v, 1)) for u, v, _ in peaks)
    assert found[0] == pytest.approx((20.3, 30.6), abs=0.25)
    assert found[1] == pytest.approx((40.0, 70.2), abs=0.25)
    assert find_peaks(heat * 0.3, threshold=0.5) == []


def test_detections_read_the_size_at_the_peak() -> None:
    out = np.zeros((2, 64, 32), np.float32)
    out[0] = -8.0
    out[0, 30:33, 14:17] = 4.0
    out[0, 31, 15] = 6.0
    out[1] = math.log(25.0)
    (d,) = read_detections(out)
    assert d.centre == pytest.approx((15.5, 31.5), abs=0.1)
    assert d.extent == pytest.approx(25.0)
    assert d.score > 0.99


@pytest.fixture(scope="module")
def films():
    return [phantom_film(make_phantom(5, i, size_px=500)) for i in range(3)]


def test_targets_mark_each_vertebra_where_it_lies(films) -> None:
    film = films[0]
    box = spine_box(film)
    frame = region_frame(box)
    data = region_set([film], name="t", frames_per_film=1, seed=0, jitter=None, cache=False)
    assert data.targets.shape == (1, len(CHANNELS), REGION_ALONG, REGION_ACROSS)
    target = data.targets[0].astype(np.float32)
    geometry = vertebra_geometry(film)
    assert len(data.centres[0]) == len(geometry) == len(film.vertebrae)
    for (_, centre, _, extent), (u, v) in zip(geometry, data.centres[0], strict=True):
        assert np.allclose(frame.to_film(u, v), centre, atol=1e-6)
        r, c = int(v), int(u)
        assert target[0, r, c] == 1.0  # the centre lies in its body
        assert target[1, r, c] > 0.8  # near the top of its heatmap peak
        assert math.exp(target[2, r, c]) == pytest.approx(extent / frame.scale, rel=1e-2)
    assert target[1].max() <= 1.0


def test_reversed_frames_turn_image_and_targets_together(films) -> None:
    always = RegionJitter(shift=0.0, angle_deg=0.0, scale=0.0, reverse=1.0)
    never = RegionJitter(shift=0.0, angle_deg=0.0, scale=0.0, reverse=0.0)
    a = region_set(films[:1], name="a", frames_per_film=1, seed=0, jitter=always, cache=False)
    b = region_set(films[:1], name="b", frames_per_film=1, seed=0, jitter=never, cache=False)
    # The same window turned half a turn. (CLAHE's tiles do not turn with the window, so
    # the images agree closely, not exactly.)
    turned = b.images[0][::-1, ::-1].astype(np.float32).ravel()
    assert np.corrcoef(a.images[0].astype(np.float32).ravel(), turned)[0, 1] > 0.99
    assert np.array_equal(a.targets[0][0], b.targets[0][0][::-1, ::-1])


def test_perfect_outputs_score_perfectly_and_the_loss_is_finite(films) -> None:
    data = region_set(films, name="p", frames_per_film=1, seed=0, jitter=None, cache=False)
    outputs = []
    for target in data.targets.astype(np.float32):
        heat = np.clip(target[1], 1e-4, 1 - 1e-4)
        outputs.append(np.stack([np.log(heat / (1 - heat)), target[2]]))
    scores = detection_scores(outputs, data, range(len(data)))
    assert scores["precision"] == scores["recall"] == 1.0
    assert scores["size_error"] < 0.05
    half = [np.stack([o[0], o[1] - math.log(2)]) for o in outputs]
    assert detection_scores(half, data, range(len(data)))["size_error"] == pytest.approx(
        0.5, abs=0.05
    )
    none = [np.stack([np.full_like(o[0], -10.0), o[1]]) for o in outputs]
    assert detection_scores(none, data, range(len(data)))["recall"] == 0.0
    terms = detector_terms(
        torch.from_numpy(np.stack(outputs)), torch.from_numpy(data.targets.astype(np.float32))
    )
    assert all(torch.isfinite(v) for v in terms.values())
    assert float(terms["size"]) < 0.05


@pytest.mark.parametrize("kind", [DETECTOR_KIND, SEMANTIC_KIND])
def test_a_short_run_writes_weights_that_load(films, tmp_path, kind) -> None:
    data = region_set(films, name="r", frames_per_film=1, seed=0, jitter=None, cache=False)
    cfg = RegionConfig(kind=kind, out=tmp_path / kind, width=2, epochs=1, batch_size=2, threads=1)
    weights = train_region_network(cfg, data, data, log=lambda _: None)
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["kind"] == kind and manifest["training"]["epochs"] == 1
    model = TrainedUNet.load(weights, kind)
    channels = 2 if kind == DETECTOR_KIND else 1
    assert model.outputs(data.images[0]).shape == (channels, REGION_ALONG, REGION_ACROSS)
    other = SEMANTIC_KIND if kind == DETECTOR_KIND else DETECTOR_KIND
    with pytest.raises(ModelError):
        TrainedUNet.load(weights, other)
