"""The localiser's data sources, augmentation, training loop (checkpoint and resume), weights
manifest and inference class, on tiny phantoms and a tiny network."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from pacsnode.analysis.localise import Localiser
from pacsnode.analysis.weights import file_sha256, load_weights
from pacsnode.cli.main import main
from pacsnode.errors import ModelError
from pacsnode.training.localiser.data import (
    DataError,
    film_pairs,
    folder_set,
    outline_mask,
    phantom_set,
)
from pacsnode.training.localiser.train import TrainConfig, augment, train_localiser

SIZE = 32


@pytest.fixture(scope="module")
def tiny_sets():
    """12 training and 4 validation phantoms rendered small (seeds used only here)."""
    common = {"size": SIZE, "render_px": 128, "cache": False}
    return phantom_set(71_001, 12, **common), phantom_set(71_002, 4, **common)


def _cfg(out: Path, **kw) -> TrainConfig:
    base = TrainConfig(
        arch="fcn",
        region_aware=True,
        out=out,
        width=4,
        size=SIZE,
        epochs=2,
        batch_size=4,
        lr=2e-3,
        seed=3,
        threads=1,
        device="cpu",
        data={"source": "test"},
        command="test",
    )
    return replace(base, **kw)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tiny_sets):
    out = tmp_path_factory.mktemp("run")
    train, val = tiny_sets
    return train_localiser(_cfg(out), train, val, log=lambda _: None)


# ---------------------------------------------------------------------------- data


def test_outline_mask_fills_the_polygon_by_pixel_centres():
    truth = {"vertebrae": [{"label": "C3", "outline": [[1, 1], [4, 1], [4, 3], [1, 3]]}]}
    mask = outline_mask(truth, (5, 6))
    expected = np.zeros((5, 6), bool)
    expected[1:3, 1:4] = True
    np.testing.assert_array_equal(mask, expected)


def test_outline_mask_rejects_a_degenerate_outline():
    with pytest.raises(DataError, match="C4"):
        outline_mask({"vertebrae": [{"label": "C4", "outline": [[1, 1], [2, 2]]}]}, (5, 5))


def test_phantom_set_masks_cover_the_spine(tiny_sets):
    train, _ = tiny_sets
    assert train.images.shape == (12, SIZE, SIZE) and train.images.dtype == np.float32
    assert train.images.min() >= 0.0 and train.images.max() <= 1.0
    fractions = train.masks.mean(axis=(1, 2))
    assert np.all(fractions > 0.005) and np.all(fractions < 0.4)
    assert train.names[0] == "71001-00000"


def test_phantom_set_cache_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("PACSNODE_CACHE", str(tmp_path))
    first = phantom_set(71_003, 2, size=SIZE, render_px=100)
    assert len(list(tmp_path.glob("*.npz"))) == 1
    second = phantom_set(71_003, 2, size=SIZE, render_px=100)
    assert second.source.startswith("cache")
    np.testing.assert_array_equal(first.images, second.images)
    np.testing.assert_array_equal(first.masks, second.masks)


def _png_film(folder: Path, name: str, *, mask: bool = True) -> None:
    film = np.zeros((60, 40), np.uint8)
    film[10:50, 15:25] = 200
    Image.fromarray(film).save(folder / f"{name}.png")
    if mask:
        Image.fromarray((film > 0).astype(np.uint8) * 255).save(folder / f"{name}.mask.png")


def test_folder_set_reads_png_films_with_masks_and_json_outlines(tmp_path):
    _png_film(tmp_path, "a")
    _png_film(tmp_path, "b", mask=False)
    outline = [[15, 10], [25, 10], [25, 50], [15, 50]]
    (tmp_path / "b.json").write_text(json.dumps({"vertebrae": [{"outline": outline}]}))
    (tmp_path / "set-manifest.json").write_text("{}")  # no film: not an annotation
    assert [f.name for f, _ in film_pairs(tmp_path)] == ["a.png", "b.png"]
    data = folder_set(tmp_path, size=SIZE)
    assert data.images.shape == (2, SIZE, SIZE)
    np.testing.assert_array_equal(data.masks[0], data.masks[1])
    assert data.masks[0].sum() > 20


def test_folder_errors_name_the_file(tmp_path):
    with pytest.raises(DataError, match="not a directory"):
        film_pairs(tmp_path / "missing")
    with pytest.raises(DataError, match="no annotated films"):
        film_pairs(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "lonely.mask.png")
    with pytest.raises(DataError, match=r"lonely\.mask\.png: no film"):
        film_pairs(tmp_path)
    (tmp_path / "lonely.mask.png").unlink()
    _png_film(tmp_path, "blank", mask=False)
    Image.fromarray(np.zeros((60, 40), np.uint8)).save(tmp_path / "blank.mask.png")
    with pytest.raises(DataError, match="marks no pixel"):
        folder_set(tmp_path)


# ---------------------------------------------------------------------------- augmentation


def test_augment_moves_film_and_mask_together():
    gen = torch.Generator().manual_seed(5)
    masks = torch.zeros(16, SIZE, SIZE, dtype=torch.bool)
    masks[:, 8:24, 13:19] = True
    images = masks.float()  # bright exactly where the mask is
    x, y = augment(images, masks, gen)
    assert x.shape == y.shape == (16, SIZE, SIZE) and y.dtype == torch.bool
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    agree = ((x > 0.4) == y).float().mean(dim=(1, 2))
    assert float(agree.min()) > 0.97
    # rotated, zoomed and shifted, yet not lost
    assert not torch.equal(y, masks)
    assert bool((y.sum(dim=(1, 2)) > 30).all())


def test_augment_keeps_the_padding_black():
    gen = torch.Generator().manual_seed(6)
    images = torch.zeros(4, SIZE, SIZE)
    x, _ = augment(images, images.bool(), gen)
    assert float(x.abs().max()) == 0.0


# ---------------------------------------------------------------------------- training


def test_training_writes_weights_with_a_true_manifest(trained):
    manifest = json.loads(trained.manifest.read_text())
    assert manifest["kind"] == "localiser" and manifest["name"] == "fcn-r"
    assert manifest["sha256"] == file_sha256(trained.weights)
    assert manifest["network"] == {"arch": "fcn", "width": 4}
    assert manifest["training"]["loss"].startswith("log loss + region-aware")
    assert [h["epoch"] for h in manifest["training"]["history"]] == [1, 2]
    assert manifest["training"]["best_epoch"] == trained.best_epoch
    losses = [h["log_loss"] for h in manifest["training"]["history"]]
    assert all(np.isfinite(losses))


def test_resume_continues_to_the_same_weights(tmp_path, tiny_sets, trained):
    train, val = tiny_sets
    out = tmp_path / "resumed"

    def interrupt(line: str) -> None:  # the checkpoint of epoch 1 is written before the log
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_localiser(_cfg(out), train, val, log=interrupt)
    assert not (out / "localiser.safetensors").exists()
    train_localiser(_cfg(out), train, val, resume=True, log=lambda _: None)
    straight = load_file(str(trained.weights.parent / "checkpoint.safetensors"))
    resumed = load_file(str(out / "checkpoint.safetensors"))
    for key, value in straight.items():
        if key.startswith("model."):
            torch.testing.assert_close(resumed[key], value, rtol=0, atol=0)


def test_resume_refuses_another_variant(tmp_path, tiny_sets, trained):
    train, val = tiny_sets
    out = trained.weights.parent
    with pytest.raises(DataError, match="another variant"):
        train_localiser(_cfg(out, arch="unet"), train, val, resume=True, log=lambda _: None)
    with pytest.raises(DataError, match="nothing to resume"):
        train_localiser(_cfg(tmp_path / "none"), train, val, resume=True, log=lambda _: None)


# ---------------------------------------------------------------------------- weights


def test_altered_weights_are_refused(tmp_path, trained):
    copy = tmp_path / "localiser.safetensors"
    copy.write_bytes(trained.weights.read_bytes())
    manifest = json.loads(trained.manifest.read_text())
    (tmp_path / "localiser.json").write_text(json.dumps(manifest))
    assert load_weights(copy, kind="localiser").manifest["name"] == "fcn-r"
    with pytest.raises(ModelError, match="not a 'segmenter'"):
        load_weights(copy, kind="segmenter")
    data = bytearray(copy.read_bytes())
    data[-1] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="altered or truncated"):
        Localiser.load(copy)
    (tmp_path / "localiser.json").unlink()
    with pytest.raises(ModelError, match=r"manifest .* not found"):
        Localiser.load(copy)
    with pytest.raises(ModelError, match="not found"):
        Localiser.load(tmp_path / "nothing.safetensors")


def test_weights_that_do_not_fit_the_network_are_refused(tmp_path, trained):
    manifest = json.loads(trained.manifest.read_text())
    manifest["network"]["width"] = 8
    copy = tmp_path / "localiser.safetensors"
    copy.write_bytes(trained.weights.read_bytes())
    (tmp_path / "localiser.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="do not fit"):
        Localiser.load(copy)


# ---------------------------------------------------------------------------- inference


def test_localiser_maps_its_answer_back_onto_the_film(trained, tiny_sets):
    localiser = Localiser.load(trained.weights, device="cpu")
    film = np.zeros((90, 50), np.float32)
    film[20:70, 20:30] = 0.8
    result = localiser.predict(film)
    assert result.mask.shape == film.shape and result.mask.dtype == bool
    assert result.probability.shape == (SIZE, SIZE)
    if result.found:
        assert result.regions >= 1
        (x0, y0), (x1, y1) = result.box.corners[0], result.box.corners[2]
        assert min(x0, x1) >= -2 and max(x0, x1) <= film.shape[1] + 2
        assert min(y0, y1) >= -2 and max(y0, y1) <= film.shape[0] + 2
    else:
        assert not result.mask.any() and result.regions == 0
    with pytest.raises(ValueError, match="2-D"):
        localiser.predict(np.zeros((2, 3, 4), np.float32))


# ---------------------------------------------------------------------------- CLI


def test_cli_train_on_a_folder_needs_validation_films(tmp_path, capsys):
    _png_film(tmp_path, "a")
    code = main(
        [
            "train",
            "localiser",
            "--arch",
            "fcn",
            "--data",
            str(tmp_path),
            "--out",
            str(tmp_path / "run"),
        ]
    )
    assert code == 1
    assert "--val-data" in capsys.readouterr().err


def test_cli_trains_on_a_folder_and_evaluate_refuses_its_seeds(tmp_path, capsys, trained):
    train_dir, val_dir = tmp_path / "train", tmp_path / "val"
    for d, names in ((train_dir, "abcdefgh"), (val_dir, "xy")):
        d.mkdir()
        for n in names:
            _png_film(d, n)
    out = tmp_path / "run"
    code = main(
        [
            "train",
            "localiser",
            "--arch",
            "unet",
            "--width",
            "4",
            "--depth",
            "2",
            "--size",
            "32",
            "--epochs",
            "1",
            "--batch-size",
            "4",
            "--threads",
            "1",
            "--data",
            str(train_dir),
            "--val-data",
            str(val_dir),
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((out / "localiser.json").read_text())
    assert manifest["training"]["data"]["n_train"] == 8
    assert manifest["training"]["command"].startswith("pacsnode train localiser --arch unet")
    # a model trained on phantom seed 71001 must not be evaluated on it
    manifest = json.loads(trained.manifest.read_text())
    manifest["training"]["data"] = {"source": "phantoms", "train_seed": 71_001, "val_seed": 2}
    trained.manifest.write_text(json.dumps(manifest))
    code = main(
        [
            "evaluate",
            "localiser",
            str(trained.weights),
            "--test-seed",
            "71001",
            "--out",
            str(tmp_path / "table"),
        ]
    )
    assert code == 1
    assert "held-out" in capsys.readouterr().err


def test_evaluate_writes_table_one_with_paired_tests(tmp_path, capsys, tiny_sets, trained):
    train, val = tiny_sets
    plain = train_localiser(
        _cfg(tmp_path / "fcn", region_aware=False, epochs=1), train, val, log=lambda _: None
    )
    films = tmp_path / "films"
    films.mkdir()
    for n in "pqr":
        _png_film(films, n)
    prefix = tmp_path / "table1"
    code = main(
        [
            "evaluate",
            "localiser",
            str(plain.weights.parent),
            str(trained.weights),
            "--data",
            str(films),
            "--out",
            str(prefix),
            "--quiet",
        ]
    )
    assert code == 0, capsys.readouterr().err
    results = json.loads(prefix.with_suffix(".json").read_text())
    assert results["n_films"] == 3 and set(results["summary"]) == {"fcn", "fcn-r"}
    for figure in results["summary"]["fcn-r"].values():
        if isinstance(figure, dict):
            assert 0.0 <= figure["mean"] <= 1.0
    assert set(results["t_tests"]) == {"fcn-r"}
    assert results["t_tests"]["fcn-r"]["node_sensitivity"]["versus"] == "fcn"
    table = prefix.with_suffix(".md").read_text()
    assert "| FCN |" in table and "| FCN-R |" in table


def test_calibrate_writes_a_swept_threshold_into_the_manifest(tmp_path, capsys, trained):
    run = tmp_path / "run"
    run.mkdir()
    for suffix in (".safetensors", ".json"):
        (run / f"localiser{suffix}").write_bytes(trained.weights.with_suffix(suffix).read_bytes())
    films = tmp_path / "films"
    films.mkdir()
    for n in "uv":
        _png_film(films, n)
    code = main(["calibrate", "localiser", str(run), "--data", str(films), "--quiet"])
    assert code == 0, capsys.readouterr().err
    manifest = json.loads((run / "localiser.json").read_text())
    sweep = manifest["calibration"]["sweep"]
    assert len(sweep) == 17 and manifest["calibration"]["films"] == 2
    youden = [s["sensitivity"] + s["specificity"] for s in sweep]
    assert manifest["threshold"] == sweep[int(np.argmax(youden))]["threshold"]
    assert Localiser.load(run / "localiser.safetensors").threshold == manifest["threshold"]
