"""s5jax.labels: class list, label lists ↔ slot arrays ↔ one-hot / multi-hot / query vectors."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s5jax import labels as L


def test_class_table():
    assert L.NUM_CLASSES == len(L.CLASSES) == 18
    assert L.CLASSES[0] == "AlarmClock" and L.CLASSES[15] == "Speech"
    assert L.CLASSES[-1] == "VacuumCleaner"
    assert list(L.CLASSES) == sorted(L.CLASSES)  # baseline order is alphabetical
    assert (L.MAX_SOURCES, L.EMPTY, L.SILENCE) == (3, -1, "silence")


def test_class_index():
    assert L.class_index("Speech") == 15
    assert L.class_index(4) == 4
    assert L.class_index(np.int32(17)) == 17
    assert all(L.class_index(name) == i for i, name in enumerate(L.CLASSES))


@pytest.mark.parametrize(
    "bad, match",
    [
        ("Dog", "unknown class name 'Dog'"),
        ("speech", "unknown class name 'speech'"),  # case-sensitive
        (18, "label index 18 out of range"),
        (-1, "label index -1 out of range"),
        (np.int64(99), "label index 99 out of range"),
        (True, "label True"),
        (1.0, "label 1.0"),
        (None, "label None"),
    ],
)
def test_class_index_errors(bad, match):
    with pytest.raises(ValueError, match=match):
        L.class_index(bad)


def test_to_slots_single_and_batch():
    np.testing.assert_array_equal(L.to_slots(["Speech", 3]), [15, 3, -1])
    assert L.to_slots(["Speech"]).dtype == np.int32
    out = L.to_slots([["Speech"], [], ["Pour", "Pour", 0], ["silence", "Cough"]])
    assert out.shape == (4, 3) and out.dtype == np.int32
    np.testing.assert_array_equal(out, [[15, -1, -1], [-1, -1, -1], [14, 14, 0], [5, -1, -1]])
    np.testing.assert_array_equal(L.to_slots([]), [-1, -1, -1])  # empty single list
    np.testing.assert_array_equal(L.to_slots([[]], max_sources=2), [[-1, -1]])
    np.testing.assert_array_equal(L.to_slots([[1, 2, 3, 4]], max_sources=4), [[1, 2, 3, 4]])


def test_to_slots_errors():
    with pytest.raises(ValueError, match="has 4 labels; at most 3 allowed"):
        L.to_slots(["Speech", "Pour", "Cough", "Dishes"])
    with pytest.raises(ValueError, match="at most 1 allowed"):
        L.to_slots([["Speech"], ["Pour", "Cough"]], max_sources=1)
    with pytest.raises(ValueError, match="unknown class name 'Dog'"):
        L.to_slots([["Speech"], ["Dog"]])
    with pytest.raises(ValueError, match="label index 18 out of range"):
        L.to_slots([18])
    with pytest.raises(ValueError, match="expected a sequence of labels, not a string"):
        L.to_slots([["Speech"], "Pour"])


def test_from_slots():
    assert L.from_slots(np.array([[15, 14, -1], [-1, -1, -1]])) == [["Speech", "Pour"], []]
    assert L.from_slots(np.array([0, 0, -1])) == [["AlarmClock", "AlarmClock"]]
    assert L.names([15, np.int32(0)]) == ["Speech", "AlarmClock"]


def test_one_hot_multi_hot_query_active():
    slots = np.array([[15, 3, -1], [-1, -1, -1], [2, 2, 17]], np.int32)
    oh = np.asarray(L.one_hot(slots))
    assert oh.shape == (3, 3, 18) and oh.dtype == np.float32
    expected = np.zeros((3, 3, 18), np.float32)
    for b, s in zip(*np.nonzero(slots >= 0), strict=True):
        expected[b, s, slots[b, s]] = 1
    np.testing.assert_array_equal(oh, expected)
    assert np.all(oh[1] == 0) and np.all(oh[0, 2] == 0)  # empty slots are all-zero rows

    mh = np.asarray(L.multi_hot(slots))
    assert mh.shape == (3, 18)
    np.testing.assert_array_equal(mh.sum(-1), [2, 0, 2])  # repeats count once
    assert mh[2, 2] == 1 and mh[2, 17] == 1

    q = np.asarray(L.query(slots))
    assert q.shape == (3, 54)
    np.testing.assert_array_equal(q, expected.reshape(3, 54))
    assert q[0, 15] == 1 and q[0, 18 + 3] == 1 and q[2, 36 + 17] == 1

    np.testing.assert_array_equal(L.active(slots), slots >= 0)
    assert np.asarray(L.one_hot(slots[0], np.int32)).dtype == np.int32


label_lists = st.lists(st.lists(st.integers(0, 17), max_size=3), min_size=1, max_size=5)


@settings(max_examples=50, deadline=None)
@given(label_lists)
def test_round_trips(lists):
    slots = L.to_slots(lists)
    assert slots.shape == (len(lists), 3)
    names = L.from_slots(slots)
    assert names == [[L.CLASSES[i] for i in row] for row in lists]
    np.testing.assert_array_equal(L.to_slots(names), slots)  # names → slots → names
    np.testing.assert_array_equal(
        np.asarray(L.multi_hot(slots)).sum(-1), [len(set(r)) for r in lists]
    )
