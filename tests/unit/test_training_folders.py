"""A hospital retrains on its own annotated films: ``--data DIR`` for the segmenter and the
region networks reads a folder (here one written by ``write_phantom``, the outline JSON
format, and one of landmark CSVs) and writes loadable weights that say where their data
came from."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pacsnode.analysis.detect import TrainedUNet
from pacsnode.cli.main import main
from pacsnode.training.annotations import read_folder
from pacsnode.training.phantom import make_phantom, write_phantom
from pacsnode.training.segmenter.data import Jitter, folder_patches


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("annotated")
    write_phantom(make_phantom(1, 3, "cervical"), out, preview=False)
    return out


@pytest.fixture(scope="module")
def landmarks(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A PNG film of five bright boxes and their endplate rows, as BUU ships them."""
    out = tmp_path_factory.mktemp("buu")
    image = np.full((700, 400), 40, np.uint8)
    rows = []
    for i in range(5):
        top, bottom = 80 + 110 * i, 160 + 110 * i
        image[top:bottom, 150:260] = 200
        rows += [f"150,{top},260,{top},0", f"150,{bottom},260,{bottom},0"]
    rows.append("150,640,260,640,0")  # S1's superior endplate
    Image.fromarray(image).save(out / "case1.png")
    (out / "case1.csv").write_text("\n".join(rows) + "\n")
    return out


def test_folder_patches_follow_the_outlines(folder, landmarks) -> None:
    films = read_folder(folder)
    patches = folder_patches(films)
    assert len(patches) == len(films[0].vertebrae)
    # Unjittered, the body fills the middle of its patch as in the phantom patches.
    assert all(m[32, 32] == 1 for m in patches.masks)
    buu = folder_patches(read_folder(landmarks), jitter=Jitter(), seed=3)
    assert [label for _, label in buu.cases] == ["L1", "L2", "L3", "L4", "L5"]
    assert 0.2 < buu.masks.mean() < 0.6


def test_segmenter_trains_on_a_folder(folder, tmp_path) -> None:
    out = tmp_path / "seg"
    args = ["train", "segmenter", "--data", str(folder), "--val-data", str(folder)]
    args += ["--width", "2", "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet"]
    assert main(args) == 0
    manifest = json.loads((out / "segmenter.json").read_text())
    assert manifest["training"]["data"]["train"]["folder"] == str(folder)
    assert TrainedUNet.load(out / "segmenter.safetensors", "segmenter")


def test_folder_data_needs_a_validation_folder(folder, tmp_path, capsys) -> None:
    args = ["train", "detector", "--data", str(folder), "--out", str(tmp_path), "--quiet"]
    assert main(args) == 1
    assert "--val-data" in capsys.readouterr().err


def test_detector_trains_on_a_folder(folder, tmp_path) -> None:
    out = tmp_path / "det"
    args = ["train", "detector", "--data", str(folder), "--val-data", str(folder)]
    args += ["--frames", "2", "--width", "2", "--epochs", "1", "--batch-size", "2"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    manifest = json.loads((out / "detector.json").read_text())
    assert manifest["training"]["data"]["train"]["source"] == str(folder)
    assert TrainedUNet.load(out / "detector.safetensors", "detector")


def test_segmenter_trains_on_outline_frames_of_phantoms(tmp_path) -> None:
    out = tmp_path / "seg"
    args = ["train", "segmenter", "--shape-aware", "--frames", "outline", "--n-train", "2"]
    args += ["--n-val", "1", "--render-px", "400", "--width", "2", "--epochs", "1"]
    args += ["--batch-size", "4", "--out", str(out), "--quiet"]
    assert main(args) == 0
    data = json.loads((out / "segmenter.json").read_text())["training"]["data"]
    assert data["frames"] == "outline extent" and data["train"]["seed"] == 1000
    assert main([*args[:-3], "--train-seed", "9000", "--out", str(out), "--quiet"]) == 1


def test_identifier_outline_frames_take_in_the_dens() -> None:
    from pacsnode.training.identifier.data import identifier_patches

    # Case (1, 3) is cervical: its first vertebra is C2, whose outline includes the dens.
    corners = identifier_patches(1, 1, start=3, region="cervical", render_px=500)
    outline = identifier_patches(1, 1, start=3, region="cervical", render_px=500, frames="outline")
    assert len(corners) == len(outline) > 0
    assert corners.cases == outline.cases
    assert not np.allclose(corners.images[0], outline.images[0])


def test_identifier_trains_on_a_folder_with_frames_past_the_reference(folder, tmp_path) -> None:
    out = tmp_path / "ident"
    args = ["train", "identifier", "--data", str(folder), "--val-data", str(folder), "--beyond"]
    args += ["--width", "2", "--epochs", "1", "--batch-size", "4", "--out", str(out), "--quiet"]
    assert main([*args, "--neighbours"]) == 0
    training = json.loads((out / "identifier.json").read_text())["training"]
    assert "C3 and L5" in training["loss"]
    data = training["data"]
    assert data["train"]["source"] == str(folder) and data["frames"] == "outline"
    assert data["train"]["classes"]["C2"] == 1 and "beyond" in data
    from pacsnode.analysis.identify import Identifier

    assert Identifier.load(out / "identifier.safetensors").context == 2.0


def test_a_folder_without_references_cannot_train_the_identifier(landmarks, tmp_path, capsys):
    # The landmark film names L1 to L5 only (S1 has no inferior endplate): nothing to learn.
    args = ["train", "identifier", "--data", str(landmarks), "--val-data", str(landmarks)]
    assert main([*args, "--out", str(tmp_path), "--quiet"]) == 1
    assert "no whole C2 or S1" in capsys.readouterr().err


def test_frames_past_a_reference_lie_beyond_it_and_count_as_other(folder) -> None:
    from pacsnode.analysis.identify import CLASSES
    from pacsnode.training.identifier.data import BEYOND, film_patches, region_of

    [film] = read_folder(folder)
    assert region_of(film) == "cervical"
    plain = film_patches([(film, None)], reverse=False)
    past = film_patches([(film, None)], reverse=False, beyond=True)
    assert len(past) == len(plain) + 1  # one C2, nothing past the film's last vertebra
    [extra] = [i for i, (_, label) in enumerate(past.cases) if label == BEYOND["C2"]]
    assert past.labels[extra] == CLASSES.index("other")
    assert plain.cases[0][1] == "C2" and plain.labels[0] == CLASSES.index("C2")
    # As far above C2 as C3 lies below: the patch differs from C2's own.
    assert not np.allclose(past.images[extra], plain.images[0])


def test_frames_past_a_reference_need_outline_frames(tmp_path, capsys) -> None:
    args = ["train", "identifier", "--frames", "corners", "--beyond", "--out", str(tmp_path)]
    assert main([*args, "--quiet"]) == 1
    assert "--beyond needs --frames outline" in capsys.readouterr().err
