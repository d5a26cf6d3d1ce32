"""Lecture 4's pass counts (bnlab.lessons.closed_form) checked against the code they count, and its timing."""

import inspect
import sys
import typing

import numpy as np
import pytest

from bnlab import functional
from bnlab.lessons.closed_form import FLOORS, TALLY, passes, time_closed_form
from bnlab.timing import CopyControlled

FUNCTIONS = {"numpy forward": functional._train_forward,
             "numpy staged backward": functional.batchnorm_backward,
             "numpy fused backward": functional.batchnorm_backward_fused}


class Counted(np.ndarray):
    """An array that records, per source line of the function being counted, the batch-sized arrays each
    numpy operation reads (distinct operands) and writes."""

    log: typing.ClassVar[list] = []
    size = 0
    code = None

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        plain = [np.asarray(a) if isinstance(a, Counted) else a for a in inputs]
        if "out" in kwargs:
            kwargs["out"] = tuple(np.asarray(a) if isinstance(a, Counted) else a for a in kwargs["out"])
        result = getattr(ufunc, method)(*plain, **kwargs)
        operands = {(a.ctypes.data, a.strides): a for a in plain  # one array read twice counts once
                    if isinstance(a, np.ndarray) and a.size == Counted.size}
        frame = sys._getframe(1)
        while frame is not None and frame.f_code is not Counted.code:
            frame = frame.f_back
        if frame is not None and (operands or getattr(result, "size", 0) == Counted.size):
            wrote = int(isinstance(result, np.ndarray) and result.size == Counted.size and method == "__call__")
            Counted.log.append((frame.f_lineno, len(operands), wrote))
        return result.view(Counted) if isinstance(result, np.ndarray) else result


def counted_per_line(name, shape=(6, 3, 2, 2)):
    """{source line: (reads, writes)} from running the function on Counted arrays."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape)
    gamma, beta, dout = rng.uniform(0.5, 2, shape[1]), rng.standard_normal(shape[1]), rng.standard_normal(shape)
    fn = FUNCTIONS[name]
    Counted.log, Counted.size, Counted.code = [], x.size, fn.__code__
    if name == "numpy forward":
        fn(x.view(Counted), gamma.reshape(-1), beta.reshape(-1), 1e-5)
    else:
        _, cache = functional.batchnorm_forward(x, gamma, beta)
        fields = {k: (v.view(Counted) if isinstance(v, np.ndarray) else v) for k, v in vars(cache).items()}
        original = functional.check_upstream_gradient
        functional.check_upstream_gradient = lambda dout, x: dout  # keep dout a Counted array
        try:
            fn(dout.view(Counted), type(cache)(**fields))
        finally:
            functional.check_upstream_gradient = original
    lines, first = inspect.getsourcelines(fn)
    per_line = {}
    for lineno, reads, writes in Counted.log:
        text = lines[lineno - first].strip()
        r, w = per_line.get(text, (0, 0))
        per_line[text] = (r + reads, w + writes)
    return per_line


@pytest.mark.parametrize("name", list(TALLY))
def test_every_tallied_line_is_in_the_current_source(name):
    source = [line.strip() for line in inspect.getsource(FUNCTIONS[name]).splitlines()]
    for line, _, _ in TALLY[name]:
        assert line in source, f"{name}: {line!r} is no longer in the source: update TALLY and lecture 4"


@pytest.mark.parametrize("name", list(TALLY))
def test_the_tally_equals_an_operation_by_operation_count(name):
    assert counted_per_line(name) == {line: (reads, writes) for line, reads, writes in TALLY[name]}


def test_totals_and_floors():
    assert [passes(name) for name in TALLY] == [12, 23, 16]
    assert FLOORS == {"forward": 3, "backward": 5}
    assert all(passes(name) > FLOORS["backward"] for name in TALLY if "backward" in name)
    with pytest.raises(ValueError, match="name"):
        passes("torch")


def test_time_closed_form_returns_a_copy_controlled_timing_per_shape():
    results = time_closed_form(shapes=((8, 3), (2, 3, 2, 2)), repeats=1, rounds=1)
    assert list(results) == [(8, 3), (2, 3, 2, 2)]
    for shape, result in results.items():
        assert isinstance(result, CopyControlled)
        assert list(result.ms) == ["numpy forward", "numpy staged backward", "numpy fused backward",
                                   "torch native backward"]
        assert result.array_bytes == 4 * int(np.prod(shape))
        assert all(ms > 0 for ms in result.ms.values()) and result.copy_ms > 0
        assert set(result.faults) == {"copy", *result.ms}
    with pytest.raises(ValueError, match="repeats"):
        time_closed_form(repeats=0)
    with pytest.raises(ValueError, match="shape"):
        time_closed_form(shapes=((8,),))
