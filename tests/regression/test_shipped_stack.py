"""The shipped stack (six networks) re-run on the fixed phantoms ``models/stack.json``
names must give the figures recorded there, within a tolerance for other CPUs; each
weight file must match its manifest, and all of them together stay under 25 MB."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pacsnode.analysis.stack import MODEL_FILES, Stack
from pacsnode.analysis.weights import file_sha256
from pacsnode.cli.stack import data_seeds
from pacsnode.training.phantom.appearance import HELD_OUT_FAMILIES
from pacsnode.training.stack_eval import regression_figures

MODELS = Path(__file__).resolve().parents[2] / "models"
TOLERANCE = 0.02  # absolute, on fractions
MM_TOLERANCE = 0.2  # absolute, on mean read-out errors in mm
POINTS_TOLERANCE = 1.0  # absolute, on the mean slip error in percentage points


@pytest.fixture(scope="module")
def record() -> dict:
    return json.loads((MODELS / "stack.json").read_text())


@pytest.mark.parametrize("kind", sorted(MODEL_FILES))
def test_each_weight_file_matches_its_manifest(kind, record) -> None:
    weights = MODELS / MODEL_FILES[kind]
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["sha256"] == file_sha256(weights)
    assert manifest["bytes"] == weights.stat().st_size
    assert manifest["training"]["command"].startswith(f"pacsnode train {kind}")
    # The recorded evaluation is on films none of the networks saw.
    assert record["evaluation"]["data"]["seed"] not in data_seeds(manifest)
    assert record["regression"]["seed"] not in data_seeds(manifest)
    # Nor did any network see the out-of-family appearance.
    held_out = record["regression_out_of_family"]["appearance"]
    assert held_out in HELD_OUT_FAMILIES
    assert held_out not in json.dumps(manifest["training"])


def test_the_record_names_the_shipped_networks(record) -> None:
    assert record["models"] == Stack.load(MODELS).versions


def test_all_weights_together_stay_under_25_mb() -> None:
    total = sum((MODELS / name).stat().st_size for name in MODEL_FILES.values())
    assert total == sum(p.stat().st_size for p in MODELS.glob("*.safetensors"))
    assert total < 25 * 2**20


@pytest.fixture(scope="module")
def stack() -> Stack:
    return Stack.load(MODELS)


def _rerun(stack: Stack, recorded: dict) -> dict:
    """The regression figures of a recorded set, measured again."""
    return regression_figures(
        stack,
        seed=recorded["seed"],
        start=recorded["start"],
        n=recorded["n"],
        size_px=recorded["size_px"],
        appearance=recorded.get("appearance", "classic"),
    )


def test_the_shipped_stack_reproduces_its_recorded_figures(record, stack) -> None:
    recorded = record["regression"]
    measured = _rerun(stack, recorded)
    for key in ("recall", "precision", "dice", "identification_accuracy"):
        assert measured[key] == pytest.approx(recorded["figures"][key], abs=TOLERANCE), key
    same = sum(
        a == b for a, b in zip(measured["labels"], recorded["figures"]["labels"], strict=True)
    )
    assert same >= len(recorded["figures"]["labels"]) - 1  # one film may differ by rounding
    _readout_holds(measured["readout"], recorded["figures"]["readout"])


def _readout_holds(measured: dict, recorded: dict) -> None:
    """The ER read-out's errors against the truth are no worse than recorded."""
    assert measured["films_read"] == recorded["films_read"]
    if not recorded["films_read"]:
        return
    assert abs(measured["step_off_pairs"] - recorded["step_off_pairs"]) <= 1
    assert measured["step_off_error_mm"] <= recorded["step_off_error_mm"] + MM_TOLERANCE
    assert measured["slip_error_points"] <= recorded["slip_error_points"] + POINTS_TOLERANCE
    assert measured["soft_tissue_read"] >= recorded["soft_tissue_read"] - 1
    if recorded["soft_tissue_read"]:
        assert measured["soft_tissue_error_mm"] <= recorded["soft_tissue_error_mm"] + MM_TOLERANCE


def test_out_of_family_figures_hold(record, stack) -> None:
    """The stack on films of an appearance family it was never trained, validated or
    tuned on: its recorded figures, and above all no more wrong names than recorded."""
    recorded = record["regression_out_of_family"]
    measured = _rerun(stack, recorded)
    figures = recorded["figures"]
    for key in ("recall", "precision", "dice", "identification_accuracy", "region_sensitivity"):
        assert measured[key] == pytest.approx(figures[key], abs=TOLERANCE), key
    assert measured["wrong_name_rate"] <= figures["wrong_name_rate"] + TOLERANCE
    _readout_holds(measured["readout"], figures["readout"])
