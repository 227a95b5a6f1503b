"""Reading annotated training folders: outline JSON, label masks, BUU landmark CSVs, phantoms."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from skimage import draw

from pacsnode.errors import PacsnodeError
from pacsnode.training.annotations import (
    AnnotatedFilm,
    AnnotationError,
    phantom_film,
    read_folder,
)
from pacsnode.training.phantom import make_phantom, write_phantom
from pacsnode.training.phantom.geometry import polygon_mask, signed_area
from tests.films import make_film, to_bytes

ROWS, COLS = 300, 200
# Five vertebral bodies, top to bottom: (x0, y0, x1, y1) in pixel-corner coordinates.
BOXES = [(60.0, 20.0 + 55 * k, 140.0, 60.0 + 55 * k) for k in range(5)]


def _film_pixels() -> np.ndarray:
    img = np.full((ROWS, COLS), 40, dtype=np.uint8)
    for x0, y0, x1, y1 in BOXES:
        img[int(y0) : int(y1), int(x0) : int(x1)] = 200
    return img


def _write_png(path: Path, pixels: np.ndarray) -> Path:
    Image.fromarray(pixels).save(path)
    return path


def _rect(x0: float, y0: float, x1: float, y1: float) -> list[list[float]]:
    return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]


def _write_json(path: Path, data: object) -> Path:
    path.write_text(json.dumps(data, indent=1))
    return path


def _buu_rows(boxes: list[tuple[float, float, float, float]]) -> list[str]:
    """Superior then inferior endplate of each box, anterior (left) end first, tilted a
    little as real endplates are."""
    rows = []
    for x0, y0, x1, y1 in boxes:
        rows.append(f"{x0},{y0 + 2},{x1},{y0},0")
        rows.append(f"{x0 + 1},{y1},{x1},{y1 - 3},0")
    return rows


def _is_convex_clockwise(poly: np.ndarray) -> bool:
    """Every turn the same way (clockwise on screen): a simple convex polygon."""
    edges = np.roll(poly, -1, axis=0) - poly
    nxt = np.roll(edges, -1, axis=0)
    turns = edges[:, 0] * nxt[:, 1] - edges[:, 1] * nxt[:, 0]
    return bool(np.all(turns > 0))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())


def _centre_rows(film: AnnotatedFilm) -> list[float]:
    return [float(v.outline[:, 1].mean()) for v in film.vertebrae]


# --- outline JSON ----------------------------------------------------------------------


def test_outline_json_with_labels_and_corners(tmp_path: Path) -> None:
    pixels = _film_pixels()
    _write_png(tmp_path / "case1.png", pixels)
    # Listed out of order; names give the order.
    order = [2, 0, 1]
    vertebrae: list[dict[str, Any]] = []
    for k in order:
        x0, y0, x1, y1 = BOXES[k]
        vertebrae.append(
            {
                "label": f"L{k + 1}",
                "outline": _rect(x0, y0, x1, y1),
                "corners": {
                    "anterior_superior": [x0, y0],
                    "posterior_superior": [x1, y0],
                    "anterior_inferior": [x0, y1],
                    "posterior_inferior": [x1, y1],
                },
            }
        )
    del vertebrae[2]["corners"]["posterior_inferior"]
    _write_json(tmp_path / "case1.json", {"vertebrae": vertebrae})

    (film,) = read_folder(tmp_path)

    assert film.case_id == "case1"
    assert film.source == "outline-json"
    assert film.spacing_mm is None
    assert film.image.dtype == np.float32
    assert film.image.shape == (ROWS, COLS)
    np.testing.assert_allclose(film.image, pixels / 255.0, atol=1e-7)
    assert [v.label for v in film.vertebrae] == ["L1", "L2", "L3"]
    for k, v in enumerate(film.vertebrae):
        np.testing.assert_array_equal(v.outline, _rect(*BOXES[k]))
        assert signed_area(v.outline) > 0
        assert not v.outline.flags.writeable
    l1, l2, l3 = film.vertebrae
    assert l1.superior == ((60.0, 20.0), (140.0, 20.0))
    assert l1.inferior == ((60.0, 60.0), (140.0, 60.0))
    # L2 was listed last with one corner missing: its inferior endplate is unknown.
    assert l2.superior == ((60.0, 75.0), (140.0, 75.0))
    assert l2.inferior is None
    assert l3.superior is not None


def test_outline_json_unlabelled_sorted_by_height_and_turned_clockwise(tmp_path: Path) -> None:
    _write_png(tmp_path / "c.png", _film_pixels())
    anticlockwise = [list(reversed(_rect(*box))) for box in BOXES]
    listed = [anticlockwise[k] for k in (4, 1, 3, 0, 2)]
    _write_json(tmp_path / "c.json", {"vertebrae": [{"outline": o} for o in listed]})

    (film,) = read_folder(tmp_path)

    assert [v.label for v in film.vertebrae] == [None] * 5
    assert _centre_rows(film) == sorted(_centre_rows(film))
    for box, v in zip(BOXES, film.vertebrae, strict=True):
        assert signed_area(v.outline) > 0
        # Same polygon, same first point, run the other way.
        first = _rect(*box)[-1]
        np.testing.assert_array_equal(v.outline[0], first)
        assert sorted(map(tuple, v.outline.tolist())) == sorted(map(tuple, _rect(*box)))
        assert v.superior is None and v.inferior is None


def test_partly_named_film_is_ordered_by_height(tmp_path: Path) -> None:
    _write_png(tmp_path / "c.png", _film_pixels())
    # The names would order these the other way; with one unnamed, height decides.
    data = {
        "vertebrae": [
            {"label": "L1", "outline": _rect(*BOXES[3])},
            {"label": "L2", "outline": _rect(*BOXES[1])},
            {"outline": _rect(*BOXES[2])},
        ]
    }
    _write_json(tmp_path / "c.json", data)
    (film,) = read_folder(tmp_path)
    assert [v.label for v in film.vertebrae] == ["L2", None, "L1"]


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB"])
def test_png_depths(tmp_path: Path, mode: str) -> None:
    base = np.linspace(0.0, 1.0, ROWS * COLS).reshape(ROWS, COLS)
    if mode == "I;16":
        stored = np.rint(base * 65535).astype(np.uint16)
        expected = stored / 65535.0
    elif mode == "L":
        stored = np.rint(base * 255).astype(np.uint8)
        expected = stored / 255.0
    else:
        grey = np.rint(base * 255).astype(np.uint8)
        stored = np.stack([grey, grey, grey], axis=-1)
        stored[0, 0] = (255, 0, 0)  # pure red: luma 299/1000
        expected = grey / 255.0
        expected[0, 0] = 76 / 255.0
    _write_png(tmp_path / "c.png", stored)
    with Image.open(tmp_path / "c.png") as written:
        assert written.mode == mode
    _write_json(tmp_path / "c.json", {"vertebrae": [{"outline": _rect(*BOXES[0])}]})
    (film,) = read_folder(tmp_path)
    assert film.image.dtype == np.float32
    np.testing.assert_allclose(film.image, expected, atol=1e-6)


# --- label masks -----------------------------------------------------------------------


def _mask_shapes() -> tuple[np.ndarray, dict[int, tuple[float, float]]]:
    """A mask with an ellipse, a rectangle and a rotated quadrilateral, values not in
    vertical order; returns it and each value's centre (x, y)."""
    mask = np.zeros((ROWS, COLS), dtype=np.uint8)
    rr, cc = draw.ellipse(150, 100, 25, 45, shape=mask.shape)
    mask[rr, cc] = 1
    mask[30:70, 55:145] = 7
    rr, cc = draw.polygon([215, 225, 275, 265], [60, 140, 130, 50], shape=mask.shape)
    mask[rr, cc] = 3
    return mask, {7: (100.0, 50.0), 1: (100.0, 150.0), 3: (95.0, 245.0)}


def test_label_mask_outlines_match_the_mask(tmp_path: Path) -> None:
    mask, _ = _mask_shapes()
    _write_png(tmp_path / "m.png", _film_pixels())
    _write_png(tmp_path / "m.labels.png", mask)

    (film,) = read_folder(tmp_path)

    assert film.source == "label-mask"
    assert [v.label for v in film.vertebrae] == [None, None, None]
    # Head first by centroid row: value 7 (top), 1, 3 (bottom).
    assert _centre_rows(film) == sorted(_centre_rows(film))
    for value, v in zip((7, 1, 3), film.vertebrae, strict=True):
        assert v.outline.shape[1] == 2 and 3 <= len(v.outline) <= 128
        assert signed_area(v.outline) > 0
        assert v.superior is None and v.inferior is None
        assert _iou(polygon_mask(v.outline, mask.shape), mask == value) > 0.95
    # The rectangle keeps its corners: its outline lies on the pixel edges.
    top = film.vertebrae[0].outline
    assert top[:, 0].min() == pytest.approx(55.0) and top[:, 0].max() == pytest.approx(145.0)
    assert top[:, 1].min() == pytest.approx(30.0) and top[:, 1].max() == pytest.approx(70.0)


def test_label_mask_sixteen_bit_names_and_name_order(tmp_path: Path) -> None:
    mask8, _ = _mask_shapes()
    mask = np.zeros(mask8.shape, dtype=np.uint16)
    # 16-bit values; named so the top one is L3 and the bottom L1: the names decide.
    mask[mask8 == 7] = 3000
    mask[mask8 == 1] = 1000
    mask[mask8 == 3] = 513
    _write_png(tmp_path / "m.png", _film_pixels())
    _write_png(tmp_path / "m.labels.png", mask)
    with Image.open(tmp_path / "m.labels.png") as written:
        assert written.mode == "I;16"
    _write_json(tmp_path / "labels.json", {"513": "L1", "1000": "L2", "3000": "L3", "9": "L4"})

    (film,) = read_folder(tmp_path)

    assert [v.label for v in film.vertebrae] == ["L1", "L2", "L3"]
    for value, v in zip((513, 1000, 3000), film.vertebrae, strict=True):
        assert _iou(polygon_mask(v.outline, (ROWS, COLS)), mask == value) > 0.95


def test_label_mask_unnamed_value_and_big_smooth_outline(tmp_path: Path) -> None:
    mask = np.zeros((600, 500), dtype=np.uint8)
    rr, cc = draw.ellipse(200, 250, 120, 200, shape=mask.shape)
    mask[rr, cc] = 2
    mask[400:500, 100:400] = 5
    _write_png(tmp_path / "m.png", np.zeros(mask.shape, dtype=np.uint8))
    _write_png(tmp_path / "m.labels.png", mask)
    _write_json(tmp_path / "labels.json", {"2": "L4"})
    (film,) = read_folder(tmp_path)
    assert [v.label for v in film.vertebrae] == ["L4", None]
    ellipse = film.vertebrae[0].outline
    assert len(ellipse) <= 128
    assert _iou(polygon_mask(ellipse, mask.shape), mask == 2) > 0.98


def test_label_mask_holes_filled_and_largest_piece_kept(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    mask = np.zeros((ROWS, COLS), dtype=np.uint8)
    mask[50:150, 50:150] = 4
    mask[90:110, 90:110] = 0  # a hole
    mask[200:205, 20:25] = 4  # a stray speck of the same value
    _write_png(tmp_path / "m.png", _film_pixels())
    _write_png(tmp_path / "m.labels.png", mask)
    with caplog.at_level(logging.WARNING, logger="pacsnode.training.annotations"):
        (film,) = read_folder(tmp_path)
    (v,) = film.vertebrae
    expected = np.zeros_like(mask, dtype=bool)
    expected[50:150, 50:150] = True
    assert _iou(polygon_mask(v.outline, mask.shape), expected) > 0.99
    assert "m.labels.png" in caplog.text and "mask value 4" in caplog.text


def test_label_mask_touching_the_border_stays_inside(tmp_path: Path) -> None:
    mask = np.zeros((ROWS, COLS), dtype=np.uint8)
    mask[0:40, 0:COLS] = 1
    _write_png(tmp_path / "m.png", _film_pixels())
    _write_png(tmp_path / "m.labels.png", mask)
    (film,) = read_folder(tmp_path)
    outline = film.vertebrae[0].outline
    assert outline.min() >= 0.0 and outline[:, 0].max() <= COLS
    assert _iou(polygon_mask(outline, mask.shape), mask == 1) > 0.99


# --- landmark CSV ----------------------------------------------------------------------


def test_buu_csv_with_header_and_s1_row(tmp_path: Path) -> None:
    s1 = "62,300,138,288,0"
    lines = ["x1,y1,x2,y2,flag", *_buu_rows(BOXES), s1]
    (tmp_path / "buu.csv").write_text("\n".join(lines) + "\n")
    _write_png(tmp_path / "buu.png", np.zeros((320, COLS), dtype=np.uint8))

    (film,) = read_folder(tmp_path)

    assert film.source == "landmark-csv"
    assert [v.label for v in film.vertebrae] == ["L1", "L2", "L3", "L4", "L5"]
    assert _centre_rows(film) == sorted(_centre_rows(film))
    for (x0, y0, x1, y1), v in zip(BOXES, film.vertebrae, strict=True):
        assert v.superior == ((x0, y0 + 2), (x1, y0))
        assert v.inferior == ((x0 + 1, y1), (x1, y1 - 3))
        # The four endplate ends, as a simple polygon of positive (clockwise) area.
        assert v.outline.shape == (4, 2)
        assert sorted(map(tuple, v.outline.tolist())) == sorted([*v.superior, *v.inferior])
        assert _is_convex_clockwise(v.outline)
        assert signed_area(v.outline) > 0
        assert tuple(v.outline[0]) == v.superior[0]
    # The S1 line forms no outline: nothing reaches below L5's lower endplate.
    assert max(v.outline[:, 1].max() for v in film.vertebrae) == BOXES[-1][3]


def test_buu_quadrilateral_from_endplates_drawn_in_opposite_directions(tmp_path: Path) -> None:
    # Superior drawn anterior to posterior, inferior posterior to anterior; also a tall
    # narrow body, where pairing ends by index alone would draw a bow tie.
    lines = ["100,20,110,22,0", "110,120,100,118,0"]
    (tmp_path / "c.csv").write_text("\n".join(lines))
    _write_png(tmp_path / "c.png", _film_pixels())
    (film,) = read_folder(tmp_path)
    (v,) = film.vertebrae
    assert v.label is None
    assert _is_convex_clockwise(v.outline)
    raster = polygon_mask(v.outline, (ROWS, COLS)).sum()
    assert raster == pytest.approx(signed_area(v.outline), rel=0.1)
    assert v.inferior == ((110.0, 120.0), (100.0, 118.0))


@pytest.mark.parametrize(
    ("boxes", "s1", "labelled"),
    [
        (BOXES[:4], True, False),  # four vertebrae and S1: not the full lumbar chain
        (BOXES, False, False),  # five vertebrae, no S1 row: which five is unknown
    ],
)
def test_buu_names_only_the_full_lumbar_chain(
    tmp_path: Path, boxes: list[tuple[float, float, float, float]], s1: bool, labelled: bool
) -> None:
    lines = _buu_rows(boxes) + (["62,300,138,288,1"] if s1 else [])
    (tmp_path / "c.csv").write_text("\n".join(lines))
    _write_png(tmp_path / "c.png", np.zeros((320, COLS), dtype=np.uint8))
    (film,) = read_folder(tmp_path)
    assert len(film.vertebrae) == len(boxes)
    assert all(v.label is None for v in film.vertebrae) != labelled


def test_buu_unnamed_rows_bottom_up_come_out_head_first(tmp_path: Path) -> None:
    lines = _buu_rows(list(reversed(BOXES[:4])))
    (tmp_path / "c.csv").write_text("\r\n".join(lines) + "\r\n")
    _write_png(tmp_path / "c.png", _film_pixels())
    (film,) = read_folder(tmp_path)
    assert _centre_rows(film) == sorted(_centre_rows(film))
    assert film.vertebrae[0].superior == ((60.0, 22.0), (140.0, 20.0))


# --- errors ----------------------------------------------------------------------------


def _raises(match: str) -> pytest.RaisesExc[AnnotationError]:
    return pytest.raises(AnnotationError, match=match)


def test_annotation_error_is_a_pacsnode_error() -> None:
    assert issubclass(AnnotationError, PacsnodeError)


@pytest.mark.parametrize(
    ("lines", "bad_line", "why"),
    [
        (["x1,y1,x2,y2,flag", "60,20,140,20,0", "60,abc,140,60,0"], 3, "x1,y1,x2,y2"),
        (["60,20,140,20,0", "x1,y1,x2,y2,flag", "60,60,140,60,0"], 2, "x1,y1,x2,y2"),
        (["60,20,140,20,0", "", "60,60,140,60,0,7"], 3, "x1,y1,x2,y2"),
        (["60,20,140,20,0", "60,60,140"], 2, "x1,y1,x2,y2"),
        # Endplate lines that cross enclose no quadrilateral (a bow tie either way).
        (["60,100,140,160,0", "60,140,140,110,0"], 1, "do not bound a quadrilateral"),
        (["60,100,140,100,0", "60,100,140,100,0"], 1, "do not bound a quadrilateral"),
    ],
)
def test_bad_csv_names_file_and_line(
    tmp_path: Path, lines: list[str], bad_line: int, why: str
) -> None:
    (tmp_path / "c.csv").write_text("\n".join(lines))
    _write_png(tmp_path / "c.png", _film_pixels())
    with _raises(rf"c\.csv, line {bad_line}: .*{re.escape(why)}"):
        read_folder(tmp_path)


def test_csv_without_a_vertebra(tmp_path: Path) -> None:
    (tmp_path / "c.csv").write_text("x1,y1,x2,y2,flag\n62,300,138,288,0\n")
    _write_png(tmp_path / "c.png", _film_pixels())
    with _raises(r"c\.csv: no vertebra"):
        read_folder(tmp_path)


def test_csv_outline_outside_the_image_names_the_vertebra(tmp_path: Path) -> None:
    lines = [*_buu_rows(BOXES[:2]), "60,130,140,130,0", "60,170,240,170,0"]
    (tmp_path / "c.csv").write_text("\n".join(lines))
    _write_png(tmp_path / "c.png", _film_pixels())
    with _raises(r"c\.csv: vertebra on lines 5-6: .*outside the 200 x 300 image"):
        read_folder(tmp_path)


def test_json_outline_outside_the_image_names_the_vertebra(tmp_path: Path) -> None:
    _write_png(tmp_path / "c.png", _film_pixels())
    data = {
        "vertebrae": [
            {"label": "L3", "outline": _rect(*BOXES[0])},
            {"label": "L4", "outline": _rect(60, 250, 140, 300.5)},
        ]
    }
    _write_json(tmp_path / "c.json", data)
    with _raises(r"c\.json: vertebra 2 \(L4\): .*outside"):
        read_folder(tmp_path)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            '{\n "vertebrae": [\n  {"outline": [[1, 2],, ]}\n ]\n}',
            r"c\.json, line 3: not valid JSON",
        ),
        ('{"vertebrae": {}}', r'c\.json: expected an object with a "vertebrae" list'),
        (
            json.dumps({"vertebrae": [{"outline": _rect(*BOXES[0])}, {"label": "L2"}]}),
            r'c\.json: vertebra 2: expected an object with an "outline"',
        ),
        (
            json.dumps({"vertebrae": [{"outline": [[1, 2], [3, 4]]}]}),
            r"c\.json: vertebra 1 outline: expected at least 3",
        ),
        (
            json.dumps({"vertebrae": [{"outline": [[1, 2], [3, "x"], [5, 9]]}]}),
            r"c\.json: vertebra 1 outline: expected \[x, y\] numbers",
        ),
        (
            json.dumps({"vertebrae": [{"outline": [[1, 1], [2, 2], [3, 3]]}]}),
            r"c\.json: vertebra 1: the outline encloses no area",
        ),
        (
            json.dumps(
                {
                    "vertebrae": [
                        {"label": "L2", "outline": _rect(*BOXES[0])},
                        {"label": "L2", "outline": _rect(*BOXES[1])},
                    ]
                }
            ),
            r"c\.json: more than one vertebra named L2",
        ),
        (
            json.dumps({"rows": 301, "columns": 200, "vertebrae": []}),
            r"c\.json: annotated for a 301 x 200 image, but the image is 300 x 200",
        ),
        (
            json.dumps({"vertebrae": [{"outline": _rect(*BOXES[0]), "label": 3}]}),
            r"c\.json: vertebra 1: label must be",
        ),
    ],
)
def test_bad_outline_json_names_the_file(tmp_path: Path, text: str, match: str) -> None:
    _write_png(tmp_path / "c.png", _film_pixels())
    (tmp_path / "c.json").write_text(text)
    with _raises(match):
        read_folder(tmp_path)


def test_annotation_without_image_is_an_error(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", _film_pixels())
    _write_json(tmp_path / "a.json", {"vertebrae": [{"outline": _rect(*BOXES[0])}]})
    (tmp_path / "lonely.csv").write_text("\n".join(_buu_rows(BOXES[:1])))
    with _raises(r"lonely\.csv: annotation without an image"):
        read_folder(tmp_path)


def test_image_without_annotation_is_skipped_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_png(tmp_path / "a.png", _film_pixels())
    _write_json(tmp_path / "a.json", {"vertebrae": [{"outline": _rect(*BOXES[0])}]})
    _write_png(tmp_path / "b.png", _film_pixels())
    (tmp_path / "notes.txt").write_text("not a film")
    with caplog.at_level(logging.WARNING, logger="pacsnode.training.annotations"):
        films = read_folder(tmp_path)
    assert [f.case_id for f in films] == ["a"]
    assert "b.png" in caplog.text and "no annotation" in caplog.text


def test_folder_without_annotated_films_is_an_error(tmp_path: Path) -> None:
    with _raises("no annotated films"):
        read_folder(tmp_path)
    _write_png(tmp_path / "b.png", _film_pixels())
    with _raises("no annotated films"):
        read_folder(tmp_path)
    with _raises("not a folder"):
        read_folder(tmp_path / "b.png")


def test_two_annotations_for_one_film_is_an_error(tmp_path: Path) -> None:
    _write_png(tmp_path / "a.png", _film_pixels())
    _write_json(tmp_path / "a.json", {"vertebrae": [{"outline": _rect(*BOXES[0])}]})
    (tmp_path / "a.csv").write_text("\n".join(_buu_rows(BOXES[:1])))
    with _raises(r"case 'a' has 2 annotations \(a\.csv, a\.json\)"):
        read_folder(tmp_path)


def test_unreadable_images_name_the_file(tmp_path: Path) -> None:
    _write_json(tmp_path / "a.json", {"vertebrae": [{"outline": _rect(*BOXES[0])}]})
    (tmp_path / "a.png").write_bytes(b"not a png at all")
    with _raises(r"a\.png: not a readable PNG"):
        read_folder(tmp_path)
    _write_png(tmp_path / "a.png", _film_pixels())
    whole = (tmp_path / "a.png").read_bytes()
    (tmp_path / "a.png").write_bytes(whole[: len(whole) // 2])
    with _raises(r"a\.png: not a readable PNG: .*truncated"):
        read_folder(tmp_path)
    (tmp_path / "a.png").unlink()
    (tmp_path / "a.dcm").write_bytes(b"\0" * 400)
    with _raises(r"a\.dcm: .*not_dicom"):
        read_folder(tmp_path)
    (tmp_path / "a.dcm").unlink()
    Image.fromarray(_film_pixels()).save(tmp_path / "a.png", format="JPEG")
    with _raises(r"a\.png: not a PNG but JPEG"):
        read_folder(tmp_path)


@pytest.mark.parametrize(
    ("mask", "labels", "match"),
    [
        (np.zeros((ROWS, COLS, 3), dtype=np.uint8), None, r"m\.labels\.png: .*not mode RGB"),
        (np.zeros((ROWS - 1, COLS), dtype=np.uint8), None, r"m\.labels\.png: mask is 299 x 200"),
        (np.ones((ROWS, COLS), dtype=np.uint8), {"one": "L1"}, r"labels\.json: key 'one'"),
        (np.ones((ROWS, COLS), dtype=np.uint8), {"1": "L1", "2": "L1"}, r"labels\.json: .*L1"),
        (np.ones((ROWS, COLS), dtype=np.uint8), ["L1"], r"labels\.json: expected an object"),
    ],
)
def test_bad_label_masks_name_the_file(
    tmp_path: Path, mask: np.ndarray, labels: object, match: str
) -> None:
    _write_png(tmp_path / "m.png", _film_pixels())
    _write_png(tmp_path / "m.labels.png", mask)
    if labels is not None:
        _write_json(tmp_path / "labels.json", labels)
    with _raises(match):
        read_folder(tmp_path)


# --- folders of several kinds ----------------------------------------------------------


def _write_dicom(path: Path, spacing: tuple[float, float]) -> None:
    pixels = _film_pixels().astype(np.uint16) * 16
    path.write_bytes(to_bytes(make_film(pixels, bits_stored=12, imager_spacing=spacing)))


def test_mixed_folder(tmp_path: Path) -> None:
    _write_dicom(tmp_path / "a.dcm", (0.15, 0.15))
    _write_json(
        tmp_path / "a.json",
        {"vertebrae": [{"label": "C3", "outline": _rect(*BOXES[1])}]},
    )
    mask, _ = _mask_shapes()
    _write_png(tmp_path / "b.png", _film_pixels())
    _write_png(tmp_path / "b.labels.png", mask)
    _write_json(tmp_path / "labels.json", {"1": "T12", "3": "L1", "7": "T11"})
    (tmp_path / "c.csv").write_text("\n".join([*_buu_rows(BOXES), "62,290,138,280,0"]))
    _write_png(tmp_path / "c.png", _film_pixels())
    seen: list[int] = []

    films = read_folder(tmp_path, progress=seen.append)

    assert seen == [1, 2, 3]
    assert [(f.case_id, f.source) for f in films] == [
        ("a", "outline-json"),
        ("b", "label-mask"),
        ("c", "landmark-csv"),
    ]
    a, b, c = films
    assert a.spacing_mm == pytest.approx(0.15)
    assert a.image.shape == (ROWS, COLS) and a.image.dtype == np.float32
    assert a.image[int(BOXES[0][1]) + 5, 100] > a.image[5, 5]  # bone bright
    assert [v.label for v in b.vertebrae] == ["T11", "T12", "L1"]
    assert [v.label for v in c.vertebrae] == ["L1", "L2", "L3", "L4", "L5"]
    assert b.spacing_mm is None and c.spacing_mm is None


def test_dicom_with_non_square_pixels_has_no_spacing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    _write_dicom(tmp_path / "a.dcm", (0.15, 0.2))
    _write_json(tmp_path / "a.json", {"vertebrae": [{"outline": _rect(*BOXES[1])}]})
    with caplog.at_level(logging.WARNING, logger="pacsnode.training.annotations"):
        (film,) = read_folder(tmp_path)
    assert film.spacing_mm is None
    assert "not square" in caplog.text


# --- phantoms --------------------------------------------------------------------------


def _assert_same_vertebrae(got: AnnotatedFilm, truth: dict[str, object]) -> None:
    expected = truth["vertebrae"]
    assert isinstance(expected, list)
    assert [v.label for v in got.vertebrae] == [v["label"] for v in expected]
    for v, t in zip(got.vertebrae, expected, strict=True):
        np.testing.assert_array_equal(v.outline, np.array(t["outline"]))
        corners = t["corners"]
        assert v.superior == (
            tuple(corners["anterior_superior"]),
            tuple(corners["posterior_superior"]),
        )
        assert v.inferior == (
            tuple(corners["anterior_inferior"]),
            tuple(corners["posterior_inferior"]),
        )


def test_phantom_film_at_training_size() -> None:
    ph = make_phantom(1, 3, "cervical", size_px=256)
    film = phantom_film(ph)
    assert film.case_id == ph.case_id
    assert film.source == "phantom"
    assert film.spacing_mm == pytest.approx(ph.radiograph.spacing_mm)
    np.testing.assert_array_equal(film.image, ph.radiograph.display)
    assert max(film.image.shape) == 256
    assert [v.label for v in film.vertebrae] == ["C2", "C3", "C4", "C5", "C6", "C7"]
    _assert_same_vertebrae(film, ph.truth)


def test_written_phantom_folder_reads_back(tmp_path: Path) -> None:
    # write_phantom writes detector-resolution films only; this case is a small one.
    ph = make_phantom(1, 3, "cervical")
    paths = write_phantom(ph, tmp_path)
    assert paths["preview"].exists()  # the preview PNG beside the DICOM is not the film

    (film,) = read_folder(tmp_path)

    direct = phantom_film(ph)
    assert film.case_id == ph.case_id
    assert film.source == "outline-json"
    assert film.image.shape == ph.radiograph.display.shape
    assert film.spacing_mm is not None
    _assert_same_vertebrae(film, ph.truth)
    for read, made in zip(film.vertebrae, direct.vertebrae, strict=True):
        assert read.label == made.label
        np.testing.assert_array_equal(read.outline, made.outline)
        assert read.superior == made.superior and read.inferior == made.inferior
