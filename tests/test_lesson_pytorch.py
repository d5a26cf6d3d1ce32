"""Lecture 6's computations (bnlab.lessons.pytorch) and its timing figure (bnlab.plots.pytorch)."""

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

import bnlab.nn
from bnlab.lessons import pytorch as lesson
from bnlab.lessons.pytorch import (PAPER, batch_sized_traffic, convention_sheet, jacobian_error,
                                   saved_tensors)
from bnlab.plots.pytorch import plot_torch_batch_norm_timings
from bnlab.running_stats import CONVENTIONS, Convention

matplotlib.use("Agg")


def plain_ops(x, gamma, beta, eps=1e-5):
    """The training forward as plain tensor operations (autograd derives the backward)."""
    dims = [0] + list(range(2, x.dim()))
    shape = [1, -1] + [1] * (x.dim() - 2)
    xc = x - x.mean(dims, keepdim=True)
    xhat = xc * torch.rsqrt(xc.square().mean(dims, keepdim=True) + eps)
    return xhat * gamma.view(shape) + beta.view(shape)


def library(x, gamma, beta):
    return bnlab.nn.batch_norm(x, None, None, gamma, beta, training=True)


def native(x, gamma, beta):
    return F.batch_norm(x, None, None, gamma, beta, training=True)


class ConstantStatistics(torch.autograd.Function):
    """A classic wrong backward: mean and variance treated as constants (dx = gamma / s * dy)."""

    @staticmethod
    def forward(ctx, x, gamma, beta):
        out = plain_ops(x, gamma, beta)
        var = x.var(0, unbiased=False, keepdim=True)
        xhat = (x - x.mean(0, keepdim=True)) * torch.rsqrt(var + 1e-5)
        ctx.save_for_backward(xhat, torch.rsqrt(var + 1e-5), gamma)
        return out

    @staticmethod
    def backward(ctx, dy):
        xhat, inv, gamma = ctx.saved_tensors
        return dy * gamma * inv, (dy * xhat).sum(0), dy.sum(0)


def batch(shape=(6, 3), dtype=torch.float64, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=generator, dtype=dtype) * 2 + 3
    gamma = torch.rand(shape[1], generator=generator, dtype=dtype) + 0.5
    beta = torch.randn(shape[1], generator=generator, dtype=dtype)
    return x, gamma, beta


# ----------------------------------------------------------------------------------------- jacobian_error

@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 2, 2)])
def test_a_right_backward_leaves_only_the_h_squared_truncation(shape):
    inputs = batch(shape)
    coarse, fine = (jacobian_error(library, inputs, step) for step in (1e-2, 1e-3))
    assert fine < 1e-6
    assert 50 < coarse / fine < 200  # O(h^2): a tenfold smaller step, a hundredfold smaller error


def test_a_wrong_backward_is_caught_whatever_the_step():
    inputs = batch((6, 3))
    wrong = [jacobian_error(ConstantStatistics.apply, inputs, step) for step in (1e-3, 1e-4)]
    assert min(wrong) > 0.1
    assert math.isclose(wrong[0], wrong[1], rel_tol=1e-3)  # the mistake does not shrink with h


def test_jacobian_error_is_tiny_for_a_linear_map():
    matrix = torch.randn(4, 3, dtype=torch.float64)
    assert jacobian_error(lambda v: matrix @ v, [torch.randn(3, dtype=torch.float64)]) < 1e-12


def test_jacobian_error_refuses_float32_and_bad_steps():
    x, gamma, beta = batch(dtype=torch.float32)
    with pytest.raises(TypeError, match="float64"):
        jacobian_error(library, (x, gamma, beta))
    with pytest.raises(ValueError, match="step"):
        jacobian_error(library, batch(), step=0.0)


# ------------------------------------------------------------------------------------------ saved_tensors

def leaves(shape, dtype=torch.float32):
    return [t.requires_grad_() for t in batch(shape, dtype)]


@pytest.mark.parametrize("shape", [(256, 64), (8, 16, 6, 6)])
def test_the_trace_keeps_two_batch_sized_tensors_the_function_and_the_kernel_one(shape):
    x, gamma, beta = leaves(shape)
    channel = shape[1] * 4
    trace, ours, kernel = (saved_tensors(f, x, gamma, beta) for f in (plain_ops, library, native))
    assert (trace.batch_sized, ours.batch_sized, kernel.batch_sized) == (2, 1, 1)
    assert trace.total_bytes == 2 * x.numel() * 4 + 2 * channel  # x - mu, xhat; 1/s, gamma
    assert ours.total_bytes == x.numel() * 4 + 2 * channel  # xhat; 1/s, gamma
    assert kernel.total_bytes == x.numel() * 4 + 3 * channel  # x; weight, mean, 1/s
    assert trace.times_input == pytest.approx(2, abs=0.1) and ours.mib == pytest.approx(x.numel() * 4 / 2**20,
                                                                                         rel=0.1)


def test_one_storage_saved_twice_or_through_a_view_counts_once():
    x = torch.randn(10, 3, requires_grad=True)
    square = saved_tensors(lambda x: x * x, x)  # mul saves both operands: the same tensor
    assert square.shapes == ((10, 3),) and square.total_bytes == 120
    viewed = saved_tensors(lambda x: x * x.view(3, 10).t(), x)
    assert len(viewed.shapes) == 1 and viewed.total_bytes == 120
    nothing = saved_tensors(lambda x: x + 1, x)  # add's backward needs nothing
    assert nothing.shapes == () and nothing.total_bytes == 0
    assert saved_tensors(lambda x: x * 2, x.detach()).total_bytes == 0  # no grad wanted, nothing saved


# ------------------------------------------------------------------------------------ batch_sized_traffic

def test_traffic_counts_operations_reads_and_writes():
    x, gamma, beta = batch((8, 3))
    single = batch_sized_traffic(lambda x, g, b: x * 2, x, gamma, beta)
    assert (single.names, single.reads, single.writes) == (("mul.Tensor", "mul.Tensor"), 2, 2)  # forward, backward
    kernel = batch_sized_traffic(native, x, gamma, beta)
    assert kernel.ops == 2 and kernel.names == ("native_batch_norm", "native_batch_norm_backward")


def test_the_plain_library_makes_far_more_passes_than_the_floor_and_fewer_than_the_trace():
    x, gamma, beta = batch((128, 100), torch.float32)
    trace, ours = (batch_sized_traffic(f, x, gamma, beta) for f in (plain_ops, library))
    assert 8 < ours.accesses < trace.accesses
    assert ours.ops < trace.ops
    assert not any(name.startswith(("view", "empty", "expand", "detach")) for name in ours.names + trace.names)
    # the count depends only on the operations, not on the values or (for 2-D input) the batch size
    assert batch_sized_traffic(library, *batch((32, 5), torch.float32), seed=3).accesses == ours.accesses


# ----------------------------------------------------------------------------------------- convention sheet

def test_the_sheet_has_one_row_and_one_source_per_convention_and_the_paper():
    sheet = convention_sheet()
    rows = [line for line in sheet.splitlines() if line[:1] == "["][: len(CONVENTIONS) + 1]
    assert len(rows) == len(CONVENTIONS) + 1
    for i, conv in enumerate(CONVENTIONS.values(), 1):
        assert rows[i - 1].startswith(f"[{i}] {conv.name}")
        assert f"{conv.eps:g}" in rows[i - 1] and f"{conv.momentum:g}" in rows[i - 1]
        assert conv.variance in rows[i - 1]
        assert f"[{i}] {conv.source[:40]}" in sheet.replace("\n    ", " ")
    assert rows[-1].startswith(f"[{len(CONVENTIONS) + 1}] {PAPER['name']}")
    assert "0.01 = 1 - momentum" in rows[1] and "0.1 = momentum" in rows[0]  # Keras's 0.99 is PyTorch's 0.01
    assert all(len(line) <= 112 for line in sheet.splitlines()[len(rows) + 1:])
    assert all(len(line) <= 60 for line in convention_sheet(width=60).splitlines()[len(rows) + 1:])
    with pytest.raises(ValueError, match="width"):
        convention_sheet(width=10)


def test_the_sheet_follows_the_conventions_it_is_rendered_from(monkeypatch):
    changed = dict(CONVENTIONS)
    changed["pytorch"] = Convention("PyTorch nn.BatchNorm1d/2d", 0.25, "new", "biased", 1e-3, 1.0, "a source")
    monkeypatch.setattr(lesson, "CONVENTIONS", changed)
    first = convention_sheet().splitlines()[1]
    assert "0.25" in first and "biased" in first and "0.001" in first and "unbiased" not in first


# ----------------------------------------------------------------------------------------------- figure

def test_timing_figure_has_one_panel_per_shape_and_the_ratio_in_each_title():
    timings = {(128, 100): {"bnlab.nn (Python, closed form)": 0.3, "torch native (C++)": 0.1},
               (256, 1024): {"bnlab.nn (Python, closed form)": 2.0, "torch native (C++)": 0.5}}
    fig = plot_torch_batch_norm_timings(timings)
    assert len(fig.axes) == 2
    assert [ax.get_title() for ax in fig.axes] == ["(128, 100)\nbnlab.nn / torch native = 3.0",
                                                  "(256, 1024)\nbnlab.nn / torch native = 4.0"]
    assert fig.axes[0].get_ylabel().startswith("ms")
    with pytest.raises(ValueError, match="at least one shape"):
        plot_torch_batch_norm_timings({})
