"""The shipped localiser, re-run on the fixed held-out phantoms its manifest names, must give
the figures recorded there (within a tolerance: other CPUs round differently), and must load
only through its manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pacsnode.analysis.localise import Localiser
from pacsnode.analysis.weights import file_sha256
from pacsnode.training.localiser.evaluate import phantom_films, score_film

MODELS = Path(__file__).resolve().parents[2] / "models"
WEIGHTS = MODELS / "localiser.safetensors"
TOLERANCE = 0.01  # absolute, on fractions


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(WEIGHTS.with_suffix(".json").read_text())


def test_manifest_describes_the_file(manifest):
    assert manifest["sha256"] == file_sha256(WEIGHTS)
    assert manifest["bytes"] == WEIGHTS.stat().st_size
    assert manifest["training"]["command"].startswith("pacsnode train localiser")
    data = manifest["training"]["data"]
    evaluation = manifest["evaluation"]
    held_out = evaluation["test_seed"]
    assert held_out not in (data["train_seed"], data["val_seed"])


def test_shipped_localiser_beats_the_papers_best_figures(manifest):
    # Issue 3's bar, on the node's output over the 100 held-out films of the manifest.
    figures = manifest["evaluation"]["figures"]
    assert figures["node_sensitivity"]["mean"] > 0.936
    assert figures["node_specificity"]["mean"] > 0.977


def test_all_weights_stay_small():
    total = sum(p.stat().st_size for p in MODELS.glob("*.safetensors"))
    assert total < 25 * 2**20


def test_shipped_weights_reproduce_their_recorded_figures(manifest):
    recorded = manifest["evaluation"]["regression"]
    localiser = Localiser.load(WEIGHTS, device="cpu")
    films = phantom_films(recorded["test_seed"], recorded["n"], start=recorded["start"])
    scores = [score_film(localiser, film) for film in films]
    measured = {
        "node_sensitivity": np.mean([s["node"]["sensitivity"] for s in scores]),
        "node_specificity": np.mean([s["node"]["specificity"] for s in scores]),
        "lowres_dice": np.mean([s["lowres"]["dice"] for s in scores]),
    }
    for key, value in measured.items():
        assert value == pytest.approx(recorded[key], abs=TOLERANCE), key
