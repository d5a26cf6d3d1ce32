"""bnlab.report: checked cells print errors as text that cannot flip with the last bits of a computation."""

import math

import numpy as np
import pytest
import torch

from bnlab.report import error_text, within


@pytest.mark.parametrize("value, text", [
    (0.0, "below 1e-14"), (2.2e-16, "below 1e-14"), (1.5e-15, "below 1e-14"), (-3e-15, "below 1e-14"),
    (5e-11, "< 1e-10"), (6e-11, "< 1e-10"), (3e-4, "< 1e-03"), (0.37, "0.37"), (2.0, "2"), (-1.0913, "1.09"),
    (10911.3, "1.09e+04"), (math.inf, "inf"), (float("nan"), "nan"),
])
def test_error_text(value, text):
    assert error_text(value) == text


def test_error_text_floor_and_array_types():
    assert error_text(9.5e-7, floor=1e-5) == "below 1e-05"
    assert error_text(np.float32(2e-8), floor=1e-6) == "below 1e-06"
    assert error_text(torch.tensor(4e-16, requires_grad=True) * 1) == "below 1e-14"
    with pytest.raises(ValueError, match="floor"):
        error_text(1e-3, floor=0.0)


def test_within_shows_the_bracket_and_a_failure_loudly():
    assert within(2.2e-16, 1e-12) == "below 1e-14 (< 1e-12)"
    assert within(3e-9, 1e-5) == "< 1e-08 (< 1e-05)"
    assert within(0.1058, 1e-5) == "0.106 (OUTSIDE the bracket < 1e-05)"
    assert within(float("nan"), 1e-12) == "nan (OUTSIDE the bracket < 1e-12)"
    with pytest.raises(ValueError, match="bound"):
        within(1e-3, 0.0)


def test_bracketed_prints_the_value_and_its_bracket_and_flags_a_miss():
    from bnlab.report import bracketed

    assert bracketed(0.93123, low=0.85) == "0.931 (> 0.85)"
    assert bracketed(0.1, high=0.2) == "0.1 (< 0.2)"
    assert bracketed(18.2, 10, 30, digits=2) == "18 (in [10, 30])"
    assert bracketed(0.5, low=0.85) == "0.5 (OUTSIDE the bracket > 0.85)"
    assert bracketed(float("nan"), low=0.85) == "nan (OUTSIDE the bracket > 0.85)"
    with pytest.raises(ValueError, match="needs low, high or both"):
        bracketed(1.0)


def test_each_within_checks_every_value_and_names_a_diverged_one():
    from bnlab.report import each_within

    assert each_within([0.861, 0.859, 0.857], high=0.88) == "0.86, 0.86, 0.86 (each < 0.88)"
    assert each_within(np.array([0.9, 0.91]), 0.85, 0.95) == "0.90, 0.91 (each in [0.85, 0.95])"
    assert each_within([0.9, float("nan")], low=0.5) == "0.90, diverged (OUTSIDE the bracket: each > 0.5)"
    assert each_within([1.93, 1.86], low=1.5, digits=3) == "1.930, 1.860 (each > 1.5)"
