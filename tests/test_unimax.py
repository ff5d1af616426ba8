"""Tests of hyperllama_lib.corpus.unimax against hand-computed allocations."""
from __future__ import annotations

import pytest

from hyperllama_lib.corpus.unimax import epochs, unimax


def test_worked_example_like_the_paper():
    # Five languages shaped like the paper's situation: two small ones hit the 6-epoch cap,
    # the other three share what is left equally.
    available = {"swe": 120.0, "fas": 100.0, "est": 20.0, "isl": 5.0, "fao": 1.0}
    # Budget 216, max 6 epochs. Smallest first:
    #   fao: min(216 / 5 = 43.2, 6 * 1 = 6)    = 6    remaining 210
    #   isl: min(210 / 4 = 52.5, 6 * 5 = 30)   = 30   remaining 180
    #   est: min(180 / 3 = 60,   6 * 20 = 120) = 60   remaining 120
    #   fas: min(120 / 2 = 60,   600)          = 60   remaining 60
    #   swe: min(60 / 1 = 60,    720)          = 60   remaining 0
    alloc = unimax(available, budget=216.0, max_epochs=6.0)
    assert alloc == pytest.approx({"swe": 60.0, "fas": 60.0, "est": 60.0, "isl": 30.0, "fao": 6.0})
    assert list(alloc) == list(available)  # input order kept
    # Epochs: swe 60/120 = 0.5, fas 0.6, est 3, isl 6, fao 6.
    assert epochs(alloc, available) == pytest.approx({"swe": 0.5, "fas": 0.6, "est": 3.0, "isl": 6.0, "fao": 6.0})
    assert sum(alloc.values()) == pytest.approx(216.0)


def test_cap_cascades():
    # a: min(90 / 3 = 30, 2 * 10 = 20) = 20, remaining 70
    # b: min(70 / 2 = 35, 2 * 15 = 30) = 30, remaining 40  (b is capped only thanks to a's leftover)
    # c: min(40, 2 * 100 = 200) = 40
    alloc = unimax({"c": 100, "b": 15, "a": 10}, budget=90, max_epochs=2)
    assert alloc == pytest.approx({"c": 40.0, "b": 30.0, "a": 20.0})


def test_budget_larger_than_everything_caps_all():
    available = {"x": 3.0, "y": 7.0}
    alloc = unimax(available, budget=1e9, max_epochs=4)
    assert alloc == pytest.approx({"x": 12.0, "y": 28.0})
    assert epochs(alloc, available) == pytest.approx({"x": 4.0, "y": 4.0})


def test_equal_sizes_and_zero_budget():
    assert unimax({"b": 5, "a": 5}, budget=4, max_epochs=1) == pytest.approx({"b": 2.0, "a": 2.0})
    assert unimax({"a": 5, "b": 9}, budget=0, max_epochs=6) == {"a": 0.0, "b": 0.0}
    assert unimax({}, budget=10, max_epochs=6) == {}


def test_deterministic_regardless_of_input_order():
    available = {"p": 2.0, "q": 2.0, "r": 50.0, "s": 0.5}
    reordered = dict(reversed(list(available.items())))
    assert unimax(available, 40, 3) == unimax(reordered, 40, 3)


def test_errors():
    with pytest.raises(ValueError, match="'fao' has no usable data"):
        unimax({"isl": 5, "fao": 0}, budget=10, max_epochs=6)
    with pytest.raises(ValueError, match="budget"):
        unimax({"isl": 5}, budget=-1, max_epochs=6)
    with pytest.raises(ValueError, match="max_epochs"):
        unimax({"isl": 5}, budget=1, max_epochs=0)
