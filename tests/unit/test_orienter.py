"""The orienter's data and training: labels follow the frame (turned frames are not head
first; the front is where the annotated anterior corners are), unknown fronts are masked,
and a short run writes weights that load only as an orienter."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pacsnode.analysis.orient import Orienter, orienter_frame
from pacsnode.errors import ModelError
from pacsnode.training.annotations import AnnotatedFilm, phantom_film
from pacsnode.training.orienter import OrienterConfig, orienter_set, score_orienter, train_orienter
from pacsnode.training.phantom import make_phantom
from pacsnode.training.segmenter.data import Jitter

STILL = Jitter(0.0, 0.0, 0.0)


@pytest.fixture(scope="module")
def films() -> list[AnnotatedFilm]:
    return [phantom_film(make_phantom(7, i, size_px=600)) for i in range(4)]


@pytest.fixture(scope="module")
def data(films):
    return orienter_set(films, seed=0, jitter=STILL)


def test_every_vertebra_gives_a_labelled_patch(films, data) -> None:
    assert len(data) == sum(len(f.vertebrae) for f in films)
    assert data.images.shape[1:] == (64, 64)
    assert set(np.unique(data.head_first)) == {0.0, 1.0}  # both ways, drawn at random
    assert set(np.unique(data.front)) <= {0.0, 1.0}  # phantoms know where the front is


def test_a_turned_patch_is_the_upright_patch_upside_down(films) -> None:
    a = orienter_set(films[:1], seed=1, jitter=STILL)
    b = orienter_set(films[:1], seed=2, jitter=STILL)
    differs = np.nonzero(a.head_first != b.head_first)[0]
    assert differs.size  # the two seeds turned some vertebra differently
    i = int(differs[0])
    upright, turned = (a, b) if a.head_first[i] else (b, a)
    assert np.allclose(turned.images[i], upright.images[i][::-1, ::-1], atol=1e-4)
    # Turning also swaps the sides, so the front label flips with it.
    assert turned.front[i] == 1.0 - upright.front[i]


def test_fronts_of_unknown_annotations_are_masked(films) -> None:
    film = films[0]
    unknown = AnnotatedFilm(film.case_id, film.image, film.vertebrae, None, "landmark-csv")
    assert (orienter_set([unknown], seed=0).front == -1.0).all()


def test_the_frame_is_the_context_around_the_segmenter_frame() -> None:
    from pacsnode.analysis.patches import PatchFrame

    frame = PatchFrame((100.0, 50.0), (0.0, 1.0), 1.5)
    wide = orienter_frame(frame)
    assert wide.centre == frame.centre and wide.axis == frame.axis
    assert wide.scale == pytest.approx(3.0) and wide.size == 64


def test_a_short_run_writes_weights_that_load(data, tmp_path) -> None:
    cfg = OrienterConfig(out=tmp_path, width=2, epochs=1, batch_size=8, threads=1)
    weights = train_orienter(cfg, data, data, log=lambda _: None)
    manifest = json.loads(weights.with_suffix(".json").read_text())
    assert manifest["kind"] == "orienter" and manifest["outputs"] == ["head_first", "front_plus_u"]
    orienter = Orienter.load(weights)
    from pacsnode.analysis.patches import PatchFrame

    frames = [PatchFrame((300.0, 300.0), (0.0, 1.0), 1.0)] * 3
    p = orienter.probabilities(np.random.default_rng(0).random((600, 600)), frames)
    assert p.shape == (3, 2) and ((p >= 0) & (p <= 1)).all()
    assert set(score_orienter(orienter.network, data)) == {"head_first", "front"}
    manifest["kind"] = "identifier"
    weights.with_suffix(".json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError):
        Orienter.load(weights)
