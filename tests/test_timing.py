"""bnlab.timing: the arithmetic of the copy control and the structure of its results (never the speed)."""

import math

import numpy as np
import pytest
import torch

from bnlab.timing import (
    CopyControlled,
    bandwidth_from_copy,
    compare_ms,
    fastest_ms,
    median_ms,
    minor_page_faults,
    pass_equivalents,
    time_against_copy,
)


def test_bandwidth_counts_the_read_and_the_write():
    assert bandwidth_from_copy(16 * 2**20, 1.0) == pytest.approx(2 * 16 * 2**20 / 1e-3)
    assert bandwidth_from_copy(1000, 2.0) == pytest.approx(1e6)  # 2000 bytes moved in 2 ms
    for bad in (0, -5, 1.5):
        with pytest.raises(ValueError, match="array_bytes"):
            bandwidth_from_copy(bad, 1.0)
    with pytest.raises(ValueError, match="copy_ms"):
        bandwidth_from_copy(100, 0.0)


def test_pass_equivalents_are_time_over_half_a_copy():
    assert pass_equivalents(1.0, 1.0) == 2.0  # the copy itself: one read, one write
    assert pass_equivalents(12.0, 2.0) == 12.0
    # the same number as time * bandwidth / bytes
    nbytes, copy_ms, ms = 4 * 2**20, 0.3, 7.0
    assert pass_equivalents(ms, copy_ms) == pytest.approx(ms * 1e-3 * bandwidth_from_copy(nbytes, copy_ms) / nbytes)
    with pytest.raises(ValueError, match="copy_ms"):
        pass_equivalents(1.0, -1.0)
    with pytest.raises(ValueError, match="ms"):
        pass_equivalents(math.nan, 1.0)


def test_copy_controlled_reads_its_numbers_in_passes():
    result = CopyControlled({"a": 6.0, "b": 1.5}, copy_ms=1.0, array_bytes=1000, faults={"copy": 0.0})
    assert result.pass_equivalents("a") == 12.0 and result.pass_equivalents("b") == 3.0
    assert result.bandwidth == pytest.approx(2e6)


@pytest.mark.parametrize("array", [np.zeros((64, 32), np.float32), torch.zeros(64, 32)])
def test_time_against_copy_times_each_function_and_the_copy(array):
    calls = []
    result = time_against_copy({"touch": lambda: calls.append(1)}, array, repeats=2, rounds=2, fault_calls=1)
    assert list(result.ms) == ["touch"] and result.ms["touch"] >= 0 and result.copy_ms > 0
    assert result.array_bytes == 64 * 32 * 4
    assert set(result.faults) == {"copy", "touch"}
    assert len(calls) == 2 * (2 + 1) + 2  # rounds * (repeats + one warm-up), then the fault count's 1 + 1
    with pytest.raises(ValueError, match="reserves"):
        time_against_copy({"copy": lambda: None}, array)
    with pytest.raises(ValueError, match="at least one"):
        time_against_copy({}, array)


def test_page_faults_per_call_are_counted_after_a_warm_up():
    assert minor_page_faults(lambda: None, calls=3) >= 0
    with pytest.raises(ValueError, match="calls"):
        minor_page_faults(lambda: None, calls=0)


def test_medians_keep_their_names():
    assert median_ms(lambda: None, repeats=3, warmup=0) >= 0
    assert list(compare_ms({"x": lambda: None, "y": lambda: None}, repeats=2, rounds=1)) == ["x", "y"]


def test_fastest_ms_takes_the_least_disturbed_call():
    import time
    delays = iter([0.0, 0.02, 0.001, 0.02] * 3)  # untimed, then timed calls of 20 ms, 1 ms, 20 ms
    result = fastest_ms({"sleepy": lambda: time.sleep(next(delays))}, repeats=3, rounds=1)
    assert 1.0 <= result["sleepy"] < 15.0
    with pytest.raises(ValueError, match="rounds"):
        fastest_ms({"x": lambda: None}, rounds=0)
