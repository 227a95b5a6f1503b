"""Naming from the reference vertebra: down from C2, up from S1, positions otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from pacsnode.analysis.naming import SPINE_ORDER, chain_labels, name_chain, skipped_vertebrae


def test_the_spine_has_24_presacral_vertebrae_and_s1() -> None:
    assert len(SPINE_ORDER) == 25 and SPINE_ORDER[1] == "C2" and SPINE_ORDER[-1] == "S1"
    assert SPINE_ORDER[7] == "T1" and SPINE_ORDER[19] == "L1"


def test_down_from_c2() -> None:
    named = name_chain(8, (0, "C2", 0.97))
    assert chain_labels(named) == ["C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2"]
    assert all(n.identified and n.confidence == 0.97 for n in named)


def test_up_from_s1_at_the_bottom() -> None:
    named = name_chain(7, (6, "S1", 0.9))
    assert chain_labels(named) == ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]


def test_a_vertebra_above_c2_is_c1_and_one_below_s1_is_only_a_position() -> None:
    assert chain_labels(name_chain(3, (1, "C2", 1.0))) == ["C1", "C2", "C3"]
    below = name_chain(3, (1, "S1", 1.0))
    assert chain_labels(below) == ["L5", "S1", "V3"] and not below[2].identified


def test_without_a_reference_names_are_positions() -> None:
    named = name_chain(3, None)
    assert chain_labels(named) == ["V1", "V2", "V3"]
    assert not any(n.identified for n in named) and all(n.confidence == 0 for n in named)


@pytest.mark.parametrize(
    ("count", "reference", "message"),
    [
        (3, (3, "C2", 0.5), "outside a chain"),
        (3, (0, "L3", 0.5), "C2 or S1"),
        (3, (0, "C2", 1.5), "confidence"),
        (-1, None, "non-negative"),
    ],
)
def test_bad_input_is_refused(count: int, reference, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        name_chain(count, reference)


def test_a_lost_vertebra_is_stepped_over() -> None:
    # L2 was not found: L1 lies two steps above L3.
    centres = [(0, 0), (0, 12), (0, 36), (0, 48), (0, 60), (0, 72)]
    skipped = skipped_vertebrae(centres, [10] * 6)
    assert skipped == [0, 1, 0, 0, 0]
    named = name_chain(6, (5, "S1", 0.9), skipped)
    assert chain_labels(named) == ["T12", "L1", "L3", "L4", "L5", "S1"]
    assert chain_labels(name_chain(4, (0, "C2", 1.0), [0, 2, 0])) == ["C2", "C3", "C6", "C7"]


def test_gaps_are_judged_against_body_size() -> None:
    # Bigger bodies further down sit further apart: no gap is lost there.
    centres = [(0, 0), (0, 10), (0, 22), (0, 36), (0, 52)]
    assert skipped_vertebrae(centres, [8, 9, 11, 12, 14]) == [0, 0, 0, 0]
    assert skipped_vertebrae([(0, 0), (0, 10), (0, 50)], [8, 8, 8]) == [0, 0]  # too short
    assert skipped_vertebrae([], []) == []
    with pytest.raises(ValueError, match="sizes"):
        skipped_vertebrae([(0, 0)] * 4, [1] * 3)
    with pytest.raises(ValueError, match="skipped"):
        name_chain(3, (0, "C2", 1.0), [0])


def test_no_gap_is_judged_beside_a_fragment() -> None:
    # The top mask covers only a sliver of its body: its centre sits high, its size small.
    centres = [(0, -6), (0, 12), (0, 24), (0, 36), (0, 48)]
    assert skipped_vertebrae(centres, [4, 10, 10, 10, 10]) == [0, 0, 0, 0]
    assert skipped_vertebrae(centres, [10, 10, 10, 10, 10]) == [1, 0, 0, 0]


# --- safe naming ---------------------------------------------------------------------------

from pacsnode.analysis.naming import naming_doubt, references_for  # noqa: E402


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["CSPINE", None, None, None], {"C2"}),
        (["LSPINE"], {"S1"}),
        (["SSPINE"], {"S1"}),
        (["CHEST"], set()),
        (["TSPINE"], set()),
        (["SPINE", "XR WHOLE SPINE LATERAL"], {"C2", "S1"}),
        ([None, "XR CERVICAL SPINE LATERAL"], {"C2"}),
        ([None, None, "Lat LWS", None], {"S1"}),
        ([None, "", None, None], {"C2", "S1"}),
        (["HAND"], {"C2", "S1"}),
        (["WHOLESPINE"], {"C2", "S1"}),
    ],
)
def test_references_follow_the_header(texts, expected) -> None:
    assert references_for(texts) == frozenset(expected)


def test_body_part_examined_decides_before_the_descriptions() -> None:
    assert references_for(["LSPINE", "XR CERVICAL SPINE"]) == frozenset({"S1"})


def test_a_chain_with_bodies_above_c2_is_doubted() -> None:
    named = name_chain(5, (1, "C2", 0.9))
    assert "above" in naming_doubt(named, (1, "C2", 0.9))


def test_a_chain_with_bodies_below_s1_is_doubted() -> None:
    named = name_chain(5, (2, "S1", 0.9))
    assert "below" in naming_doubt(named, (2, "S1", 0.9))


def test_a_chain_running_past_the_spine_is_doubted() -> None:
    named = name_chain(26, (25, "S1", 0.9))
    assert "past the end" in naming_doubt(named, (25, "S1", 0.9))


def test_body_size_must_fit_the_reference_region() -> None:
    neck = name_chain(6, (0, "C2", 0.9))
    assert naming_doubt(neck, (0, "C2", 0.9), [15.0] * 6) is None
    assert "too large" in naming_doubt(neck, (0, "C2", 0.9), [22.0] * 6)
    assert naming_doubt(neck, (0, "C2", 0.9), None) is None  # no spacing: not judged
    low_back = name_chain(6, (5, "S1", 0.9))
    assert naming_doubt(low_back, (5, "S1", 0.9), [30.0] * 6) is None
    assert "too small" in naming_doubt(low_back, (5, "S1", 0.9), [21.0] * 6)


def test_no_reference_no_doubt() -> None:
    assert naming_doubt(name_chain(4, None), None, [15.0] * 4) is None


def _inputs(prob, n=None, sizes_mm=None, references=frozenset({"C2", "S1"})):
    import numpy as np

    from pacsnode.analysis.naming import NamingInputs

    prob = np.asarray(prob, float)
    n = len(prob) if n is None else n
    return NamingInputs(
        prob, [(50.0, 20.0 + 30 * i) for i in range(n)], [25.0] * n, sizes_mm, references
    )


def test_two_vertebrae_that_look_alike_leave_the_chain_unnamed() -> None:
    # The sacrum below S1 at 0.99, the true S1 at 0.98: which is S1 cannot be told.
    table = [[1, 0, 0], [1, 0, 0], [0.02, 0, 0.98], [0.01, 0, 0.99]]
    names, reference, doubt = _inputs(table).name(0.5)
    assert reference is None and "look like S1" in doubt
    assert not any(n.identified for n in names)
    # A clear S1 with a weaker look-alike above it is still named.
    table = [[1, 0, 0], [1, 0, 0], [0.4, 0, 0.6], [0.01, 0, 0.99]]
    names, reference, doubt = _inputs(table).name(0.5)
    assert reference == (3, "S1", pytest.approx(0.99)) and doubt is None
    assert [n.label for n in names] == ["L3", "L4", "L5", "S1"]


def test_the_header_and_the_threshold_decide_together() -> None:
    table = [[0.1, 0.9, 0.0], [1, 0, 0], [1, 0, 0], [1, 0, 0]]
    assert _inputs(table).name(0.5)[1] == (0, "C2", pytest.approx(0.9))
    assert _inputs(table).name(0.95)[1] is None
    assert _inputs(table, references=frozenset({"S1"})).name(0.5)[1] is None


def test_a_c2_without_its_dens_is_doubted() -> None:
    neck = name_chain(5, (0, "C2", 0.99))
    assert naming_doubt(neck, (0, "C2", 0.99), None, [60.0, 48.0, 49.0, 50.0, 51.0]) is None
    doubt = naming_doubt(neck, (0, "C2", 0.99), None, [50.0, 49.0, 50.0, 52.0, 51.0])
    assert "no dens" in doubt


def test_a_c2_too_near_the_body_below_is_doubted() -> None:
    # C2's body with C1's arch and the dens outlined above it as a body of its own: the
    # "C2" on top sits near the next body, every name below would be one level off.
    neck = name_chain(6, (0, "C2", 0.99))
    sizes = [60.0, 48.0, 47.0, 48.0, 49.0, 48.0]
    split = [
        (100.0, 100.0),
        (100.0, 143.0),
        (100.0, 203.0),
        (100.0, 263.0),
        (100.0, 323.0),
        (100.0, 383.0),
    ]
    doubt = naming_doubt(neck, (0, "C2", 0.99), None, sizes, split)
    assert doubt is not None and "split in two" in doubt
    whole = [(100.0, 80.0), *split[1:]]  # the dens lifts a whole C2's centre
    assert naming_doubt(neck, (0, "C2", 0.99), None, sizes, whole) is None
    assert naming_doubt(neck, (0, "C2", 0.99), None, sizes, None) is None  # not judged


def test_clearances_are_the_disc_spaces_between_neighbouring_masks() -> None:
    from pacsnode.analysis.naming import clearances

    masks = [np.zeros((40, 12), bool) for _ in range(3)]
    masks[0][0:10, 2:10] = True
    masks[1][15:25, 2:10] = True  # rows 10 to 14 empty: 5 pixels of disc
    masks[2][25:35, 3:9] = True  # touches the one above
    assert clearances(masks) == [5.0, 0.0]
    overlapping = masks[2].copy()
    overlapping[20:25, 3:9] = True
    assert clearances([masks[1], overlapping]) == [0.0]
    assert clearances(masks[:1]) == []
    with pytest.raises(ValueError, match="empty"):
        clearances([masks[0], np.zeros((40, 12), bool)])
    with pytest.raises(ValueError, match="shapes"):
        clearances([masks[0], np.zeros((4, 4), bool)])


def test_a_c2_touching_the_body_below_is_doubted() -> None:
    # C1's ring with the dens outlined above C2's body: no disc between the two, where the
    # rest of the neck has one. Large enough for a dens and far enough for C2_GAP.
    neck = name_chain(6, (0, "C2", 0.99))
    sizes = [66.0, 52.0, 50.0, 51.0, 52.0, 53.0]
    doubt = naming_doubt(neck, (0, "C2", 0.99), None, sizes, None, [0.0, 20.0, 22.0, 19.0, 21.0])
    assert doubt is not None and "C1 and the dens" in doubt
    # A true C2 has a disc below it, thinner than most is fine.
    assert (
        naming_doubt(neck, (0, "C2", 0.99), None, sizes, None, [9.0, 20.0, 22.0, 19.0, 21.0])
        is None
    )
    # S1 is not judged by it: L5 and S1 may touch.
    back = name_chain(6, (5, "S1", 0.99))
    assert (
        naming_doubt(back, (5, "S1", 0.99), None, None, None, [20.0, 22.0, 19.0, 21.0, 0.0]) is None
    )


def test_naming_inputs_pass_the_clearances_to_the_check() -> None:
    from dataclasses import replace

    table = [[0.1, 0.9, 0.0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]]
    plain = _inputs(table)
    plain = replace(plain, sizes=[32.0, 25.0, 25.0, 25.0, 25.0])  # C2 with its dens
    assert plain.name(0.5)[2] is None
    touching = replace(plain, clearances=[0.0, 5.0, 5.0, 5.0])
    names, reference, doubt = touching.name(0.5)
    assert reference is not None and "C1 and the dens" in doubt
    assert not any(n.identified for n in names)


@pytest.mark.parametrize(
    ("top", "clearance", "references", "p_c2", "apart"),
    [
        (26.0, 0.0, {"C2", "S1"}, 0.99, True),  # the dens on C2's body, no disc between
        (26.0, 1.0, {"C2"}, 0.60, True),  # a hair apart, the header says neck
        (26.0, 5.0, {"C2", "S1"}, 0.99, False),  # a disc below: a C3 taken for C2
        (32.0, 0.0, {"C2", "S1"}, 0.99, False),  # large enough to carry its own dens
        (26.0, 0.0, {"S1"}, 0.99, False),  # a lumbar film has no C2
        (26.0, 0.0, {"C2", "S1"}, 0.40, False),  # not taken for C2
    ],
)
def test_the_dens_apart_from_c2s_body(top, clearance, references, p_c2, apart) -> None:
    from dataclasses import replace

    from pacsnode.analysis.naming import dens_apart

    table = [[1 - p_c2, p_c2, 0.0], [1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 0, 0]]
    inputs = replace(
        _inputs(table, references=frozenset(references)),
        sizes=[top, 25.0, 25.0, 25.0, 25.0],
        clearances=[clearance, 5.0, 5.0, 5.0],
    )
    assert dens_apart(inputs, 0.5) is apart
    # Where it holds, the chain as it stands is left unnamed by the checks.
    if apart:
        assert not any(n.identified for n in inputs.name(0.5)[0])


def test_no_dens_apart_without_clearances_or_bodies_below() -> None:
    from dataclasses import replace

    from pacsnode.analysis.naming import dens_apart

    table = [[0.01, 0.99, 0.0], [1, 0, 0], [1, 0, 0]]
    short = replace(_inputs(table), sizes=[26.0, 25.0, 25.0], clearances=[0.0, 5.0])
    assert not dens_apart(short, 0.5)
    table.append([1, 0, 0])
    unmeasured = replace(_inputs(table), sizes=[26.0, 25.0, 25.0, 25.0], clearances=None)
    assert not dens_apart(unmeasured, 0.5)
    # A film where the ensemble kept no body (a no-header chest film, say) has no chain.
    empty = replace(_inputs(np.zeros((0, 3))), sizes=[], clearances=[])
    assert not dens_apart(empty, 0.5)


def test_a_gap_too_short_for_one_vertebra_is_crowded() -> None:
    from pacsnode.analysis.naming import crowded_gaps

    column = [(50.0, 30.0 * i) for i in range(6)]
    assert crowded_gaps(column, [25.0] * 6) == [False] * 5
    # A split mask between the third and fourth bodies halves the gaps beside it.
    split = [*column[:3], (50.0, 75.0), *column[3:]]
    assert crowded_gaps(split, [25.0] * 7) == [False, False, True, True, False, False]
    assert crowded_gaps(column[:3], [25.0] * 3) == [False, False]  # too few to judge


def test_a_body_beside_the_column_is_off_axis() -> None:
    from pacsnode.analysis.naming import off_axis

    column = [(50.0 + 2 * i, 30.0 * i) for i in range(5)]
    assert off_axis(column, [25.0] * 5) == [False] * 5
    beside = [*column[:3], (10.0, 95.0), *column[3:]]  # the trachea, say, beside T1
    flags = off_axis(beside, [25.0] * 6)
    assert flags[3] and not flags[0] and not flags[-1]


def test_names_stop_before_a_body_too_many() -> None:
    from pacsnode.analysis.naming import stop_at_anomalies

    named = name_chain(6, (0, "C2", 0.99))
    out, unnamed = stop_at_anomalies(named, 0, [False, False, True, False, False])
    assert chain_labels(out) == ["C2", "C3", "C4", "V4", "V5", "V6"] and unnamed == 3
    named = name_chain(6, (5, "S1", 0.99))
    out, unnamed = stop_at_anomalies(
        named, 5, [False] * 5, [False, True, False, False, False, False]
    )
    assert chain_labels(out) == ["V1", "V2", "L3", "L4", "L5", "S1"] and unnamed == 2
    out, unnamed = stop_at_anomalies(named, 5, [False] * 5)
    assert out == named and unnamed == 0
    with pytest.raises(ValueError, match="gaps"):
        stop_at_anomalies(named, 5, [False] * 4)


def test_a_chain_with_a_false_body_is_named_only_up_to_it() -> None:
    from pacsnode.analysis.naming import NamingInputs

    # C2 to C5 down the column, then a detection beside it, then C6 and C7.
    centres = [(50.0, 20.0), (51.0, 50.0), (52.0, 80.0), (53.0, 110.0), (5.0, 125.0)]
    centres += [(54.0, 140.0), (55.0, 170.0)]
    prob = np.zeros((7, 3))
    prob[:, 0] = 1.0
    prob[0] = [0.01, 0.99, 0.0]
    sizes = [30.0, 25.0, 25.0, 25.0, 25.0, 25.0, 25.0]
    inputs = NamingInputs(prob, centres, sizes, None, frozenset({"C2"}))
    names, reference, doubt = inputs.name(0.5)
    assert reference[:2] == (0, "C2")
    assert chain_labels(names) == ["C2", "C3", "C4", "C5", "V5", "V6", "V7"]
    assert "3 vertebrae past a gap too short or too long to count by" in doubt


def test_a_gap_between_none_and_one_lost_vertebra_is_unclear() -> None:
    from pacsnode.analysis.naming import CLEAR_LOSS, GAP_RATIO, unclear_gaps

    column = [(50.0, 30.0 * i) for i in range(7)]
    assert unclear_gaps(column, [25.0] * 7) == [False] * 6
    # A partial mask's centre off its body widens one gap by half: zero or one lost?
    wide = [*column[:4], *((x, y + 16.0) for x, y in column[4:])]
    ratios_wide = (30.0 + 16.0) / 30.0
    assert GAP_RATIO < ratios_wide < CLEAR_LOSS
    assert unclear_gaps(wide, [25.0] * 7) == [False, False, False, True, False, False]
    # A whole vertebra lost doubles the gap: stepped over, not unclear.
    lost = [*column[:4], *((x, y + 30.0) for x, y in column[4:])]
    assert unclear_gaps(lost, [25.0] * 7) == [False] * 6
    # Beside the reference no gap is counted, so a wide one there is unclear.
    assert unclear_gaps(lost, [25.0] * 7, reference=3)[3]


def test_names_walked_from_s1_stop_at_an_unclear_gap() -> None:
    from pacsnode.analysis.naming import NamingInputs

    # T11 to S1 down the column, with L4's centre pulled 16 px up by a partial mask.
    centres = [(50.0, 30.0 * i) for i in range(8)]
    centres[5] = (50.0, 30.0 * 5 - 16.0)
    prob = np.zeros((8, 3))
    prob[:, 0] = 1.0
    prob[7] = [0.01, 0.0, 0.99]
    inputs = NamingInputs(prob, centres, [25.0] * 8, None, frozenset({"S1"}))
    names, reference, doubt = inputs.name(0.5)
    assert reference[:2] == (7, "S1")
    # The gap below that body reads as one lost vertebra, which would name it L3 and every
    # body above one too high; it is unclear, so the names stop at L5.
    assert chain_labels(names) == ["V1", "V2", "V3", "V4", "V5", "V6", "L5", "S1"]
    assert "6 vertebrae past a gap too short or too long to count by" in doubt


def test_calibration_never_names_from_a_minority_reference() -> None:
    from pacsnode.analysis.naming import NamingInputs
    from pacsnode.training.identifier.calibrate import (
        MIN_THRESHOLD,
        THRESHOLDS,
        CalibrationFilm,
        choose_threshold,
    )

    # A true C2 the identifier gives 0.4: right at 0.3, but never named from.
    prob = np.array([[0.6, 0.4, 0.0]] + [[0.98, 0.01, 0.01]] * 5)
    centres = [(100.0, y) for y in (0.0, 62.0, 110.0, 160.0, 210.0, 260.0)]
    inputs = NamingInputs(prob, centres, [26, 20, 20, 20, 20, 20], None, frozenset({"C2"}))
    film = CalibrationFilm(inputs, ["C2", "C3", "C4", "C5", "C6", "C7"], "case")
    assert choose_threshold([film], 1.0, thresholds=(0.3, 0.5))[0] == 0.3
    threshold, sweep = choose_threshold([film], 1.0)
    assert min(THRESHOLDS) == MIN_THRESHOLD == threshold == 0.5
    assert sweep[0]["named"] == 0 and sweep[0]["matched"] == 6
