"""The stack's own steps: outlines and film masks from working masks, the instance path's
geometry with true centres, choosing the reference vertebra and the chain's direction,
and one film through the shipped stack."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pacsnode.analysis.detect import Detection, TrainedUNet
from pacsnode.analysis.findings import Deformity, Finding
from pacsnode.analysis.patches import PatchFrame
from pacsnode.analysis.reading import SpineReading, Vertebra
from pacsnode.analysis.region import region_frame, working_image
from pacsnode.analysis.stack import (
    MODEL_FILES,
    REFERENCE_THRESHOLD,
    Stack,
    _body_frames,
    _chain_frames,
    _joined,
    _to_film,
    outline_of,
)
from pacsnode.analysis.weights import DEFAULT_MODELS_DIR
from pacsnode.training.annotations import phantom_film
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.geometry import polygon_mask
from pacsnode.training.region.data import spine_box, vertebra_geometry
from pacsnode.training.stack_eval import _Crop, match_masks
from pacsnode.worker.analyst import describe


def test_an_outline_traces_its_mask_clockwise() -> None:
    mask = np.zeros((60, 50), bool)
    mask[10:40, 12:30] = True
    mask[20:25, 30:35] = True
    outline = outline_of(mask)
    assert len(outline) <= 64
    x, y = outline[:, 0], outline[:, 1]
    assert np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y) > 0  # clockwise on screen
    redrawn = polygon_mask(outline, mask.shape)
    assert (redrawn & mask).sum() / (redrawn | mask).sum() > 0.93


def test_a_working_mask_lands_on_the_film_scaled() -> None:
    mask = np.zeros((40, 40), bool)
    mask[10:20, 5:15] = True
    film = _to_film(mask, (100, 200), 2.0, (400, 600))
    rows, cols = np.nonzero(film)
    assert (rows.min(), rows.max() + 1) == (220, 240)
    assert (cols.min(), cols.max() + 1) == (410, 430)
    assert film.sum() == 400


class _Oracle:
    """An identifier that answers a fixed table of probabilities (other, C2, S1)."""

    def __init__(self, table: np.ndarray) -> None:
        self.table = table
        self.threshold = REFERENCE_THRESHOLD

    def probabilities(self, _image, frames):
        return self.table[: len(frames)]


def _frames(n: int) -> list[PatchFrame]:
    return [PatchFrame((50.0, 20.0 + 30 * i), (0.0, 1.0), 1.0) for i in range(n)]


def _stack(identifier) -> Stack:
    return Stack(None, None, None, None, identifier, None)


def test_the_reference_is_the_more_probable_of_c2_and_s1() -> None:
    table = np.array([[0.1, 0.85, 0.05], [0.9, 0.05, 0.05], [0.2, 0.0, 0.8]])
    assert _stack(_Oracle(table))._reference(None, _frames(3)) == (0, "C2", pytest.approx(0.85))


def test_c2_is_the_topmost_candidate_and_s1_the_lowest() -> None:
    # A lordotic L5 may look like S1, a C3 like C2: the walk starts at the end of the chain.
    s1 = np.array([[1.0, 0.0, 0.0], [0.02, 0.0, 0.98], [0.01, 0.0, 0.99], [0.4, 0.0, 0.6]])
    assert _stack(_Oracle(s1))._reference(None, _frames(4)) == (3, "S1", pytest.approx(0.6))
    c2 = np.array([[0.3, 0.7, 0.0], [0.1, 0.9, 0.0], [1.0, 0.0, 0.0]])
    assert _stack(_Oracle(c2))._reference(None, _frames(3)) == (0, "C2", pytest.approx(0.7))


def test_no_reference_below_the_threshold() -> None:
    low = np.array([[1 - REFERENCE_THRESHOLD + 0.05, REFERENCE_THRESHOLD - 0.05, 0.0]] * 3)
    assert _stack(_Oracle(low))._reference(None, _frames(3)) is None
    assert _stack(_Oracle(low))._reference(None, []) is None


def test_body_frames_follow_the_curve_of_the_chain() -> None:
    masks = []
    for r, c in ((10, 10), (40, 20), (70, 40)):
        mask = np.zeros((100, 80), bool)
        mask[r - 5 : r + 5, c - 8 : c + 8] = True
        masks.append(mask)
    frames = _body_frames(masks, (100, 200), np.array([0.0, 1.0]))
    assert frames[0].centre == pytest.approx((110.0, 210.0))
    middle = np.asarray(frames[1].axis)
    assert middle == pytest.approx(np.array([30.0, 60.0]) / math.hypot(30, 60))
    last = np.asarray(frames[2].axis)
    assert last == pytest.approx(np.array([20.0, 30.0]) / math.hypot(20, 30))
    # Sized by the body's larger extent (16 px across its axis, give or take the tilt).
    assert 1.6 * 15 / 64 < frames[2].scale < 1.6 * 20 / 64


def test_chain_frames_follow_the_line_through_their_neighbours() -> None:
    region = PatchFrame((100.0, 100.0), (0.0, 1.0), 1.0, 32, 96)
    # Three bodies on a bend, given out of order: centres at v = 10, 40, 70.
    detections = [
        Detection((16.0, 40.0), 20.0, 0.9),
        Detection((10.0, 10.0), 20.0, 0.9),
        Detection((28.0, 70.0), 10.0, 0.9),
    ]
    frames = _chain_frames(region, detections)
    centres = [region.to_film(d.centre[0], d.centre[1]) for d in detections]
    assert [f.centre for f in frames] == [pytest.approx(tuple(c)) for c in centres]
    middle = np.asarray(frames[0].axis) / np.hypot(*frames[0].axis)
    expected = (centres[2] - centres[1]) / np.hypot(*(centres[2] - centres[1]))
    assert middle == pytest.approx(expected)
    assert frames[2].scale == pytest.approx(1.6 * 10.0 / 64)
    assert all(np.asarray(f.axis) @ (0.0, 1.0) > 0 for f in frames)


class _Votes:
    """An orienter that answers fixed probabilities (head first, front towards +u)."""

    def __init__(self, p: np.ndarray) -> None:
        self.p = p

    def probabilities(self, _image, frames):
        return self.p[: len(frames)]


def test_the_orienter_votes_turn_the_chain_and_find_the_front() -> None:
    region = PatchFrame((100.0, 100.0), (0.0, 1.0), 1.0, 32, 96)
    detections = [Detection((16.0, 10.0 + 30 * i), 20.0, 0.9) for i in range(3)]
    frames = _chain_frames(region, detections)
    tail_first = _Votes(np.array([[0.1, 0.9], [0.2, 0.8], [0.7, 0.6]]))
    stack = Stack(None, None, None, None, None, tail_first)
    down, front, turned = stack._orient(None, region, frames, detections)
    assert down == pytest.approx((0.0, -1.0))  # the head is at the region's far end
    assert front == pytest.approx((1.0, 0.0))  # the region's +u, whatever the head end
    assert all(np.asarray(f.axis) @ down > 0 for f in turned)
    head_first = Stack(None, None, None, None, None, _Votes(np.array([[0.9, 0.1]] * 3)))
    down, front, same = head_first._orient(None, region, frames, detections)
    assert down == pytest.approx((0.0, 1.0)) and front == pytest.approx((-1.0, 0.0))
    assert same == frames


def test_the_audit_sentence_names_the_span_and_the_grades() -> None:
    mask = np.ones((2, 2), bool)
    outline = np.array([[0.0, 0.0], [2.0, 0.0], [2.0, 2.0]])

    def vertebra(label: str, grade: int) -> Vertebra:
        finding = Finding(0.3 if grade else 0.0, grade, Deformity.WEDGE, 10.0, 0.8)
        return Vertebra(label, 0.97, True, mask, outline, (1.0, 1.0), None, finding, "agreement")

    reading = SpineReading((vertebra("C2", 0), vertebra("C3", 2)), "C2", {})
    assert (
        describe(reading)
        == "2 vertebrae C2-C3, named from C2 (p 0.97); deformity: C3 grade 2 (p 0.80)"
    )
    positional = SpineReading((vertebra("V1", 0),), None, {})
    assert describe(positional) == "1 vertebra V1, not identified (positions only)"
    doubted = SpineReading((vertebra("V1", 0),), None, {}, abstention="1 bodies above C2")
    assert describe(doubted) == (
        "1 vertebra V1, not identified (positions only: 1 bodies above C2)"
    )
    partial = SpineReading(
        (vertebra("C2", 0), vertebra("C3", 0), vertebra("V3", 0)),
        "C2",
        {},
        abstention="1 vertebra past a body too many left unnamed",
    )
    assert describe(partial) == (
        "3 vertebrae C2-V3, named from C2 (p 0.97), 1 vertebra past a body too many left unnamed"
    )


def test_true_centres_give_true_outlines_through_the_instance_path() -> None:
    segmenter = TrainedUNet.load(DEFAULT_MODELS_DIR / MODEL_FILES["segmenter"], "segmenter")
    stack = Stack(None, None, None, segmenter, None, None)
    film = phantom_film(make_phantom(31, 2, "lumbar", size_px=1400))
    work, factor = working_image(film.image)
    frame = region_frame(spine_box(film), factor=factor)
    detections = []
    for _, centre, _, extent in vertebra_geometry(film):
        c = frame.to_patch(centre[0] / factor, centre[1] / factor)
        detections.append(Detection((c[0], c[1]), extent / factor / frame.scale, 1.0))
    window = frame.footprint(work.shape)
    masks = stack._instances(work, _chain_frames(frame, detections), window)
    on_film = [_to_film(m, (window[0], window[2]), factor, film.image.shape) for m in masks]
    truth = [_Crop.of(polygon_mask(v.outline, film.image.shape)) for v in film.vertebrae]
    matched = match_masks(on_film, truth)
    assert matched.tp == len(truth)
    assert np.mean([dice for *_, dice in matched.pairs]) > 0.93


def test_one_film_through_the_shipped_stack() -> None:
    stack = Stack.load(DEFAULT_MODELS_DIR)
    phantom = make_phantom(32, 0, "cervical", size_px=1300)
    result = stack.read(phantom.radiograph.display, trace=True)
    reading = result.reading
    assert reading is not None and len(reading.vertebrae) >= 3
    assert set(result.seconds) >= {"localise", "detect", "instance", "semantic", "identify"}
    assert set(result.paths) == {"semantic", "instance"}
    shape = phantom.radiograph.display.shape
    for v in reading.vertebrae:
        assert v.mask.shape == shape and v.mask.any()
        assert (v.outline >= 0).all() and (v.outline[:, 0] <= shape[1]).all()
        assert v.heights is None or min(v.heights.anterior, v.heights.posterior) > 0
    assert set(reading.models) == set(MODEL_FILES)


def test_data_seeds_are_read_from_any_manifest_layout() -> None:
    from pacsnode.cli.stack import data_seeds

    manifest = {
        "training": {
            "data": {
                "train": {"seed": 1000, "films": 3},
                "val_seed": 2000,
                "folders": [{"seed": 5}],
            }
        }
    }
    assert data_seeds(manifest) == {1000, 2000, 5}
    assert data_seeds({}) == set()


def test_evaluate_stack_refuses_a_training_seed(tmp_path, capsys) -> None:
    from pacsnode.cli.main import main

    assert main(["evaluate", "stack", "--test-seed", "1000", "--out", str(tmp_path / "x")]) == 1
    assert "not a test set" in capsys.readouterr().err


def test_evaluate_stack_writes_its_report(tmp_path) -> None:
    import json

    from pacsnode.cli.main import main

    out = tmp_path / "eval"
    args = ["evaluate", "stack", "--n-test", "2", "--render-px", "600", "--test-seed", "9001"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    report = json.loads(out.with_suffix(".json").read_text())
    assert report["data"]["seed"] == 9001
    # In family and out of family, side by side.
    assert set(report["tiers"]) == {"randomised", "scanned"}
    assert "out of family" in report["data"]["tiers"]["scanned"]
    for table in report["tiers"].values():
        assert table["films"] == 2
        assert set(table["paths"]) == {"semantic", "instance", "ensemble"}
        assert 0.0 <= table["recall"] <= 1.0 and table["vertebrae"] > 0
        naming = table["naming"]["cervical_and_lumbar"]
        assert 0.0 <= naming["wrong_name_rate"] <= 1.0
        assert naming["named"] <= naming["matched"]
        assert 0.0 <= table["region"]["sensitivity"]["mean"] <= 1.0
        assert "false_grade2plus_rate" in table["fractures"]
    md = out.with_suffix(".md").read_text()
    assert "Semantic against instance against ensemble" in md
    assert "wrong-name rate" in md


def test_only_the_references_the_header_allows_are_taken() -> None:
    # A cervical header: an S1-looking body is never the reference.
    table = np.array([[0.1, 0.6, 0.3], [1.0, 0.0, 0.0], [0.02, 0.0, 0.98]])
    stack = _stack(_Oracle(table))
    assert stack._reference(None, _frames(3)) == (2, "S1", pytest.approx(0.98))
    assert stack._reference(None, _frames(3), frozenset({"C2"})) == (
        0,
        "C2",
        pytest.approx(0.6),
    )
    assert stack._reference(None, _frames(3), frozenset()) is None


@pytest.mark.parametrize("gap", [0, 3])
def test_c2s_dens_outlined_apart_is_joined_to_its_body_as_one_outline(gap) -> None:
    from scipy import ndimage

    from pacsnode.analysis.ensemble import Ensembled, Origin
    from pacsnode.analysis.naming import clearances

    dens = np.zeros((120, 100), bool)
    body = np.zeros_like(dens)
    dens[10:40, 40:60] = True  # the peg
    body[40 + gap : 80, 25:75] = True
    gap_px = clearances([dens, body])[0]
    joined = _joined(Ensembled(dens, Origin.AGREEMENT), Ensembled(body, Origin.AGREEMENT), gap_px)
    assert joined.origin is Origin.DENS_JOINED
    assert (joined.mask & dens).sum() == dens.sum() and (joined.mask & body).sum() == body.sum()
    assert ndimage.label(joined.mask)[1] == 1
    # Only the gap is filled: the mask grows by no more than the strip between the two.
    assert joined.area <= dens.sum() + body.sum() + gap * 20 + 2 * 20
