"""The reference-vertebra identifier: network shapes, the wider patch frame, patches that
show C2 and S1 upside down as other, the scores, a tiny training run whose weights load
(and are refused when altered), and the CLI's refusal of the test seed."""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from pacsnode.analysis.identify import CLASSES, CONTEXT, Identifier, identifier_frame
from pacsnode.analysis.networks import parameter_count
from pacsnode.analysis.networks.classifier import PatchClassifier
from pacsnode.analysis.patches import PatchFrame
from pacsnode.cli.identifier import add_identifier_commands
from pacsnode.errors import ModelError, PacsnodeError
from pacsnode.training.identifier import (
    IdentifierConfig,
    class_of,
    class_weights,
    identifier_patches,
    predict_probabilities,
    reversed_frame,
    sample_weights,
    score_identifier,
    train_identifier,
)
from pacsnode.training.identifier.data import IdentifierSet
from pacsnode.training.phantom import make_phantom
from pacsnode.training.segmenter.data import Jitter, normalise_patch, vertebra_frame

SEED = 424_277  # a test-only phantom seed
RENDER_PX = 500


@pytest.mark.parametrize(
    ("width", "depth", "size", "batch"),
    [(12, 4, 64, 2), (8, 3, 64, 1), (4, 4, 32, 3), (12, 4, 96, 2)],
)
def test_classifier_gives_one_score_per_class(width, depth, size, batch) -> None:
    net = PatchClassifier(width=width, depth=depth).eval()
    with torch.inference_mode():
        out = net(torch.randn(batch, 1, size, size))
    assert out.shape == (batch, len(CLASSES)) and torch.isfinite(out).all()


def test_default_classifier_is_small() -> None:
    count = parameter_count(PatchClassifier())
    assert 20_000 < count < 300_000
    assert count * 4 < 1 << 20  # float32 weights under 1 MiB


def test_identifier_frame_covers_context_times_the_segmenter_frame() -> None:
    seg = PatchFrame((120.0, 80.0), (0.3, 1.0), 1.25, 64)
    frame = identifier_frame(seg)
    assert frame.centre == seg.centre and frame.axis == seg.axis and frame.size == 64
    assert frame.scale == pytest.approx(1.25 * CONTEXT)
    # Same spine direction and CONTEXT times the film extent, whatever the patch sizes.
    small = identifier_frame(PatchFrame((0.0, 0.0), (1.0, 0.0), 2.0, 32), context=3.0)
    assert small.size == 64 and small.scale * small.size == pytest.approx(3.0 * 2.0 * 32)
    corner = frame.to_film(np.array([0.0]), np.array([0.0]))[0]
    seg_corner = seg.to_film(np.array([0.0]), np.array([0.0]))[0]
    assert np.allclose(corner - np.array(seg.centre), CONTEXT * (seg_corner - seg.centre))
    with pytest.raises(ValueError, match="context"):
        identifier_frame(seg, context=0.0)


@pytest.fixture(scope="module")
def patches() -> IdentifierSet:
    # Cases 0-2 of this seed: a cervical, a lumbar and a chest film (checked below).
    return identifier_patches(SEED, 3, render_px=RENDER_PX, jitter=Jitter())


def test_patch_set_labels_and_reverses_every_vertebra(patches) -> None:
    assert sorted(patches.regions) == ["cervical", "chest", "lumbar"]
    assert patches.images.shape[1:] == (64, 64) and len(patches) % 2 == 0
    up, down = ~patches.reversed, patches.reversed
    assert up.sum() == down.sum()
    # Upright, C2 and S1 are their classes, everything else other; reversed, all other.
    names = [label for _, label in patches.cases]
    for i, name in enumerate(names):
        expected = CLASSES.index(name) if name in ("C2", "S1") and up[i] else 0
        assert patches.labels[i] == expected, (i, name, bool(patches.reversed[i]))
    assert patches.class_counts()["C2"] == 1 and patches.class_counts()["S1"] == 1
    assert (patches.labels[down] == CLASSES.index("other")).all()
    assert class_of("C2") == 1 and class_of("C2", reversed_=True) == 0 and class_of("L3") == 0


def test_reversed_patch_is_the_upright_patch_turned_half_a_turn(patches) -> None:
    c2 = [i for i, (_, label) in enumerate(patches.cases) if label == "C2"]
    upright, turned = (c2[0], c2[1]) if not patches.reversed[c2[0]] else (c2[1], c2[0])
    assert patches.labels[upright] == CLASSES.index("C2")
    assert patches.labels[turned] == CLASSES.index("other") and patches.reversed[turned]
    assert np.allclose(np.rot90(patches.images[upright], 2), patches.images[turned], atol=1e-4)
    # The C2 patch shows what lies above the body: brighter skull base rows at the top,
    # which the turned patch shows at the bottom instead.
    assert not np.allclose(patches.images[upright], patches.images[turned], atol=0.1)
    frame = PatchFrame((10.0, 20.0), (0.0, 1.0), 1.5)
    turned_frame = reversed_frame(frame)
    assert turned_frame.axis == (-0.0, -1.0) and reversed_frame(turned_frame) == frame


def test_serving_and_training_share_one_normalisation() -> None:
    identify = importlib.import_module("pacsnode.analysis.identify")
    assert identify.normalise_patch is normalise_patch
    patch = np.random.default_rng(0).normal(3.0, 2.0, (64, 64))
    out = normalise_patch(patch)
    assert abs(float(out.mean())) < 1e-5 and float(out.std()) == pytest.approx(1.0, rel=1e-4)
    assert np.array_equal(normalise_patch(np.full((64, 64), 5.0)), np.zeros((64, 64)))


def test_class_weights_balance_the_classes() -> None:
    labels = np.array([0] * 90 + [1] * 6 + [2] * 4)
    w = class_weights(labels).numpy()
    totals = [w[c] * (labels == c).sum() for c in range(3)]
    assert np.allclose(totals, totals[0]) and np.isclose((w[labels]).mean(), 1.0)
    assert class_weights(np.array([0, 0, 1]))[2] == 0


def test_frames_past_a_reference_weigh_as_that_reference() -> None:
    labels = np.array([0] * 90 + [1] * 6 + [2] * 4)
    past = np.full(100, -1)
    past[:3] = 2  # three "other" frames below S1
    w = sample_weights(labels, past).numpy()
    by_class = class_weights(labels).numpy()
    assert np.allclose(w[:3], by_class[2]) and np.allclose(w[3:], by_class[labels[3:]])


def test_c3_and_l5_weigh_as_their_reference_when_asked() -> None:
    labels = np.array([0] * 90 + [1] * 6 + [2] * 4)
    past = np.full(100, -1)
    inside = np.full(100, -1)
    inside[:5], inside[5:7] = 1, 2  # five upright C3s, two upright L5s
    by_class = class_weights(labels).numpy()
    w = sample_weights(labels, past, inside).numpy()
    assert np.allclose(w[:5], by_class[1]) and np.allclose(w[5:7], by_class[2])
    assert np.allclose(w[7:], by_class[labels[7:]])
    assert np.allclose(sample_weights(labels, past).numpy(), by_class[labels])
    with pytest.raises(ValueError, match="marks"):
        sample_weights(labels, past, inside[:50])


def test_only_upright_c3_and_l5_patches_are_marked_inside() -> None:
    toy = _toy_set()  # C3 at patches 2 (upright), 3 (reversed) and 4 (upright)
    assert toy.inside.tolist() == [-1, -1, 1, -1, 1, -1, -1, -1, -1, -1]


def _toy_set() -> IdentifierSet:
    # Two cervical films and a chest film; film 0 has C2 at patch 0, film 1 at patch 4.
    labels = np.array([1, 0, 0, 0, 0, 1, 0, 0, 0, 0])
    rev = np.array([False, True, False, True, False, False, True, False, False, True])
    films = np.array([0, 0, 0, 0, 1, 1, 1, 1, 2, 2])
    names = ["C2", "C2", "C3", "C3", "C3", "C2", "C2", "C4", "T5", "T5"]
    return IdentifierSet(
        np.zeros((10, 4, 4), np.float32),
        labels,
        rev,
        films,
        regions=["cervical", "cervical", "chest"],
        cases=[(f"x-{f}", n) for f, n in zip(films, names, strict=True)],
    )


def test_reference_accuracy_counts_the_films_whose_best_c2_is_c2() -> None:
    toy = _toy_set()
    p = np.tile([[0.8, 0.1, 0.1]], (10, 1))
    p[0] = [0.3, 0.6, 0.1]  # film 0: the true C2 wins upright ...
    p[1] = [0.2, 0.7, 0.1]  # ... but its reversed patch scores higher still
    p[4] = [0.2, 0.5, 0.3]  # film 1: C3 beats the true C2 (patch 5)
    p[5] = [0.5, 0.4, 0.1]
    p[8] = [0.4, 0.1, 0.5]  # chest film: a false S1
    scores = score_identifier(toy, p)
    upright = scores["reference_accuracy"]["C2"]
    both = scores["reference_accuracy_both_orientations"]["C2"]
    assert (upright["films"], upright["correct"]) == (2, 1)
    assert (both["films"], both["correct"]) == (2, 0)
    assert both["wrong"] == [("x-0", "C2", True), ("x-1", "C3", False)]
    assert scores["reference_accuracy"]["S1"]["films"] == 0
    assert scores["chest_false_references"] == {"films": 1, "flagged": 1, "rate": 1.0}
    # Predictions: C2 for patches 0, 1, 4; S1 for patch 8; other for the rest.
    assert scores["confusion"] == [[5, 2, 1], [1, 1, 0], [0, 0, 0]]
    report = scores["report"]
    assert report["classes"]["C2"]["precision"] == pytest.approx(1 / 3)
    assert report["classes"]["C2"]["recall"] == pytest.approx(0.5)
    assert report["balanced_accuracy"] == pytest.approx((5 / 8 + 1 / 2) / 2)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, patches) -> Path:
    out = tmp_path_factory.mktemp("identifier")
    cfg = IdentifierConfig(out=out, width=4, depth=3, epochs=1, batch_size=16, threads=1)
    cfg.data = {"train": {"seed": SEED}, "val": {"seed": SEED + 1}, "render_px": RENDER_PX}
    return train_identifier(cfg, patches, patches, log=lambda _: None)


def test_training_writes_weights_that_load_and_match_their_manifest(trained, patches) -> None:
    manifest = json.loads(trained.with_suffix(".json").read_text())
    assert trained.name == "identifier.safetensors"
    assert manifest["kind"] == "identifier" and manifest["classes"] == list(CLASSES)
    assert manifest["sha256"] == __import__("hashlib").sha256(trained.read_bytes()).hexdigest()
    assert manifest["input"]["context"] == CONTEXT and manifest["input"]["size"] == 64
    assert manifest["training"]["best_epoch"] == 1
    assert len(manifest["training"]["history"]) == 1
    assert "val_macro_f1" in manifest["metrics"]["validation"]
    model = Identifier.load(trained)
    assert model.version == f"{manifest['name']}-{manifest['sha256'][:12]}"
    # On a film, the serving path cuts and scores the same patches as the training data.
    phantom = make_phantom(SEED, 0, size_px=RENDER_PX)
    frames = [vertebra_frame(v) for v in phantom.truth["vertebrae"]]
    prob = model.probabilities(phantom.radiograph.display, frames)
    assert prob.shape == (len(frames), 3) and np.allclose(prob.sum(axis=1), 1, atol=1e-5)
    plain = identifier_patches(SEED, 1, render_px=RENDER_PX, reverse=False)
    assert len(plain) == len(frames)
    expected = predict_probabilities(model.network, plain.images)
    assert np.allclose(prob, expected, atol=1e-5)
    assert model.probabilities(phantom.radiograph.display, []).shape == (0, 3)


def test_loading_refuses_altered_or_foreign_weights(trained, tmp_path) -> None:
    tampered = tmp_path / "identifier.safetensors"
    data = bytearray(trained.read_bytes())
    data[-5] ^= 0xFF
    tampered.write_bytes(bytes(data))
    manifest = json.loads(trained.with_suffix(".json").read_text())
    tampered.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError, match="does not match its manifest"):
        Identifier.load(tampered)
    tampered.write_bytes(trained.read_bytes())
    foreign = {**manifest, "kind": "segmenter"}
    tampered.with_suffix(".json").write_text(json.dumps(foreign))
    with pytest.raises(ModelError, match="not a 'identifier'"):
        Identifier.load(tampered)
    misfit = {**manifest, "network": {**manifest["network"], "width": 8}}
    tampered.with_suffix(".json").write_text(json.dumps(misfit))
    with pytest.raises(ModelError, match="do not fit"):
        Identifier.load(tampered)


def test_an_interrupted_run_resumes_to_the_same_weights(patches, tmp_path) -> None:
    class Interrupted(Exception):
        pass

    def interrupt(line: str) -> None:  # called after the epoch's checkpoint is written
        raise Interrupted(line)

    def config(out: Path) -> IdentifierConfig:
        return IdentifierConfig(out=out, width=4, depth=2, epochs=2, batch_size=16, threads=1)

    straight = train_identifier(config(tmp_path / "a"), patches, patches, log=lambda _: None)
    with pytest.raises(Interrupted, match="epoch 1/2"):
        train_identifier(config(tmp_path / "b"), patches, patches, log=interrupt)
    assert not (tmp_path / "b" / "identifier.safetensors").exists()
    resumed = train_identifier(
        config(tmp_path / "b"), patches, patches, resume=True, log=lambda _: None
    )
    assert resumed.read_bytes() == straight.read_bytes()  # the best epoch's weights
    last = [load_file(str(run.parent / "checkpoint.safetensors")) for run in (straight, resumed)]
    assert last[0].keys() == last[1].keys()
    assert all(torch.equal(last[0][k], last[1][k]) for k in last[0])  # and the last epoch's
    history = json.loads(resumed.with_suffix(".json").read_text())["training"]["history"]
    assert [h["epoch"] for h in history] == [1, 2]
    other = IdentifierConfig(out=tmp_path / "b", width=8, depth=2, epochs=3, batch_size=16)
    with pytest.raises(PacsnodeError, match="width"):
        train_identifier(other, patches, patches, resume=True, log=lambda _: None)


def _run_cli(argv: list[str]) -> int:
    """The identifier commands under a parser built as ``pacsnode.cli.main`` builds its own."""
    cli_main = importlib.import_module("pacsnode.cli.main")
    parser = argparse.ArgumentParser(prog="pacsnode")
    sub = parser.add_subparsers(dest="command")
    add_identifier_commands(functools.partial(cli_main._model_parser, sub))
    args = parser.parse_args(argv)
    args.argv = argv
    return int(args.func(args))


@pytest.mark.parametrize(
    "seeds",
    [["--val-seed", "9000"], ["--train-seed", "9000"], ["--train-seed", "5", "--val-seed", "5"]],
)
def test_cli_refuses_the_test_seed_for_training(seeds, tmp_path) -> None:
    with pytest.raises(PacsnodeError, match="seeds must differ"):
        _run_cli(["train", "identifier", *seeds, "--n-train", "1", "--out", str(tmp_path)])
    assert not any(tmp_path.iterdir())


def test_cli_refuses_to_test_on_a_training_seed(trained, tmp_path) -> None:
    argv = ["evaluate", "identifier", str(trained.parent), "--n-test", "1", "--quiet"]
    with pytest.raises(PacsnodeError, match="not a test set"):
        _run_cli([*argv, "--test-seed", str(SEED), "--out", str(tmp_path / "x")])
    assert _run_cli([*argv, "--test-seed", str(SEED + 7), "--out", str(tmp_path / "ok")]) == 0
    written = json.loads((tmp_path / "ok.json").read_text())
    assert written["data"]["seed"] == SEED + 7 and written["classes"] == list(CLASSES)
    assert "Reference accuracy" in (tmp_path / "ok.md").read_text()
    assert math.isclose(sum(map(sum, written["confusion"])), written["patches"])
