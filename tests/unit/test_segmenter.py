"""The patch segmenter's data, training and evaluation on a handful of phantoms: targets
match the true outlines, sets are reproducible, and the CLI trains, resumes and compares."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pacsnode.cli.main import main
from pacsnode.training.metrics import dice_coefficient
from pacsnode.training.phantom import make_phantom
from pacsnode.training.phantom.geometry import polygon_mask
from pacsnode.training.segmenter import (
    Jitter,
    PatchSet,
    phantom_patches,
    repeat_labels,
    vertebra_frame,
)

SEED = 424_250  # a test-only phantom seed


@pytest.fixture(scope="module")
def patches():
    return phantom_patches(SEED, 2, render_px=600, jitter=Jitter())


def test_targets_are_the_true_outlines_in_patch_coordinates(patches) -> None:
    assert len(patches) >= 8 and patches.images.shape[1:] == (64, 64)
    for mask, outline in zip(patches.masks, patches.outlines, strict=True):
        assert np.array_equal(mask.astype(bool), polygon_mask(outline, (64, 64)))
        # The body is centred and fits: jitter moves it, but not off the patch.
        assert 0.15 < mask.mean() < 0.6
    # Normalised patches: zero mean, unit spread.
    assert np.allclose(patches.images.mean(axis=(1, 2)), 0, atol=1e-4)


def test_patches_show_the_body_where_the_target_is(patches) -> None:
    # Bone is bright: inside the target the patch is brighter than around it.
    inside = [
        img[m.astype(bool)].mean() for img, m in zip(patches.images, patches.masks, strict=True)
    ]
    outside = [
        img[~m.astype(bool)].mean() for img, m in zip(patches.images, patches.masks, strict=True)
    ]
    assert np.mean(np.array(inside) > np.array(outside)) > 0.9


def test_sets_are_reproducible_and_frames_follow_the_truth(patches) -> None:
    again = phantom_patches(SEED, 2, render_px=600, jitter=Jitter())
    assert np.array_equal(again.images, patches.images) and again.cases == patches.cases
    vertebra = make_phantom(SEED, 0, size_px=600).truth["vertebrae"][2]
    frame = vertebra_frame(vertebra)
    outline = np.asarray(vertebra["outline"])
    uv = frame.to_patch(outline[:, 0], outline[:, 1])
    centred = polygon_mask(uv, (64, 64))
    rows, cols = np.nonzero(centred)
    assert abs(rows.mean() - 31.5) < 3 and abs(cols.mean() - 31.5) < 3
    # Unjittered, the true mask mapped back onto the film is the vertebra.
    film_mask = frame.mask_to_film(centred.astype(float), (600, 600))
    assert dice_coefficient(film_mask, polygon_mask(outline, (600, 600))) > 0.95


def test_reference_patches_are_drawn_more_often() -> None:
    labels = ["C2", "C3", "C4", "L5", "S1"]
    images = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 4, 4), np.float32)
    patches = PatchSet(
        images,
        (images > 1).astype(np.uint8),
        [np.full((3, 2), i, float) for i in range(5)],
        [float(i) for i in range(5)],
        [(f"case-{i}", label) for i, label in enumerate(labels)],
    )
    more = repeat_labels(patches, ("C2", "S1"), 3)
    assert [label for _, label in more.cases] == [*labels, "C2", "S1", "C2", "S1"]
    # Each repeat is its own patch, target and outline, not a neighbour's.
    for image, mask, outline, scale, (case, _) in zip(
        more.images, more.masks, more.outlines, more.scales, more.cases, strict=True
    ):
        k = int(case.split("-")[1])
        assert image[0, 0] == k and mask[0, 0] == (k > 1) and outline[0, 0] == k == scale
    assert repeat_labels(patches, ("C2", "S1"), 1) is patches
    with pytest.raises(ValueError, match="at least 1"):
        repeat_labels(patches, ("C2",), 0)


def test_cli_trains_resumes_and_compares(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    common = ["--n-train", "3", "--n-val", "1", "--render-px", "500", "--threads", "1"]
    common += ["--batch-size", "8", "--quiet"]
    for name, extra in (("unet", ["--reference-repeat", "3"]), ("unet-s", ["--shape-aware"])):
        out = tmp_path / name
        argv = ["train", "segmenter", *extra, *common, "--out", str(out)]
        assert main([*argv, "--epochs", "1"]) == 0
        if name == "unet-s":  # an interrupted run continues where it stopped
            assert main([*argv, "--epochs", "2", "--resume"]) == 0
        manifest = json.loads((out / "segmenter.json").read_text())
        assert manifest["name"] == name
        assert len(manifest["training"]["history"]) == (2 if name == "unet-s" else 1)
        data = manifest["training"]["data"]
        assert data["train"]["seed"] == 1000
        if name == "unet":  # the references drawn three times: at least the patches
            assert data["reference_repeat"] == 3
            assert data["train_draws"] >= data["train"]["patches"]
        else:
            assert "reference_repeat" not in data
    assert (
        main(
            [
                "evaluate",
                "segmenter",
                str(tmp_path / "unet"),
                str(tmp_path / "unet-s"),
                "--n-test",
                "2",
                "--out",
                str(tmp_path / "table"),
                "--quiet",
            ]
        )
        == 0
    )
    table = json.loads((tmp_path / "table.json").read_text())
    assert set(table["models"]) == {"unet", "unet-s"} and table["data"]["seed"] == 9000
    assert "| unet-s |" in (tmp_path / "table.md").read_text()
    # A test seed the models were trained on is refused.
    code = main(
        [
            "evaluate",
            "segmenter",
            str(tmp_path / "unet"),
            "--test-seed",
            "1000",
            "--n-test",
            "2",
            "--out",
            str(tmp_path / "bad"),
            "--quiet",
        ]
    )
    assert code == 1 and "not a test set" in capsys.readouterr().err
