"""Lecture 6's computations (bnlab.lessons.pytorch) and its timing figure (bnlab.plots.pytorch)."""

import math

import matplotlib
import pytest
import torch
import torch.nn.functional as F

import bnlab.nn
from bnlab.lessons import pytorch as lesson
from bnlab.lessons.pytorch import (
    CHANNEL_AXIS,
    PAPER,
    batch_sized_traffic,
    convention_sheet,
    jacobian_error,
    saved_tensors,
    time_against_copy_study,
)
from bnlab.running_stats import CONVENTIONS, Convention
from bnlab.timing import CopyControlled

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

def test_the_sheet_has_one_row_per_convention_and_the_paper():
    sheet = convention_sheet()
    rows = [line for line in sheet.splitlines() if line.startswith("| ")][1:]  # under the header
    assert len(rows) == len(CONVENTIONS) + 1
    for i, (key, conv) in enumerate(CONVENTIONS.items()):
        cells = [cell.strip() for cell in rows[i].strip("|").split("|")]
        assert cells[0] == conv.name
        assert cells[1] == f"{conv.momentum:g}" and cells[3] == conv.variance and cells[4] == f"{conv.eps:g}"
        assert cells[6] == CHANNEL_AXIS[key]
    assert rows[-1].startswith(f"| {PAPER['name']} |")
    assert "0.01 = 1 - momentum" in rows[1] and "0.1 = momentum" in rows[0]  # Keras's 0.99 is PyTorch's 0.01
    assert "axis=-1" in rows[1] and "dim 1" in rows[0]
    assert "momentum=None" not in PAPER["newest"] and "after training" in PAPER["newest"]


def test_the_sheet_follows_the_conventions_it_is_rendered_from(monkeypatch):
    changed = dict(CONVENTIONS)
    changed["pytorch"] = Convention("PyTorch nn.BatchNorm1d/2d", 0.25, "new", "biased", 1e-3, 1.0, "a source")
    monkeypatch.setattr(lesson, "CONVENTIONS", changed)
    first = convention_sheet().splitlines()[2]
    assert "0.25" in first and "biased" in first and "0.001" in first and "unbiased" not in first


# ------------------------------------------------------------------------------------------------- timing

def test_time_against_copy_study_times_each_implementation_per_shape():
    seen = []

    def mine(x, weight, bias, upstream):  # an extra implementation: forward + backward of the notebook's kind
        seen.append((x.shape, x.requires_grad, weight.shape, upstream.shape))
        return torch.autograd.grad(native(x, weight, bias), (x, weight, bias), upstream)

    results = time_against_copy_study(shapes=((8, 3), (2, 3, 2, 2)), repeats=1, rounds=1, extra={"mine": mine})
    assert list(results) == [(8, 3), (2, 3, 2, 2)]
    assert list(results[(8, 3)].ms) == ["bnlab.nn", "mine", "torch native", "one tiny tensor op"]
    assert list(results[(2, 3, 2, 2)].ms) == ["bnlab.nn", "mine", "torch native", "torch native, channels_last",
                                              "one tiny tensor op"]
    assert seen[0] == (torch.Size([8, 3]), True, torch.Size([3]), torch.Size([8, 3]))
    for shape, result in results.items():
        assert isinstance(result, CopyControlled) and result.array_bytes == 4 * math.prod(shape)
        assert all(ms > 0 for ms in result.ms.values())
    assert list(time_against_copy_study(shapes=((4, 2),), repeats=1, rounds=1)[(4, 2)].ms) == [
        "bnlab.nn", "torch native", "one tiny tensor op"]
    with pytest.raises(ValueError, match="rounds"):
        time_against_copy_study(rounds=0)
    with pytest.raises(ValueError, match="taken by the study"):
        time_against_copy_study(extra={"torch native": mine})
    with pytest.raises(TypeError, match="run\\(x, weight, bias, upstream\\)"):
        time_against_copy_study(extra={"broken": 3})


def test_traffic_lists_each_operation_with_its_reads_and_writes():
    x, gamma, beta = batch((128, 100), torch.float32)
    traffic = batch_sized_traffic(library, x, gamma, beta)
    assert [name for name, _, _ in traffic.per_op] == list(traffic.names)
    assert sum(r for _, r, _ in traffic.per_op) == traffic.reads
    assert sum(w for _, _, w in traffic.per_op) == traffic.writes
    assert traffic.per_op[0] == ("mean.dim", 1, 0) and traffic.per_op[1] == ("sub.Tensor", 1, 1)


# ----------------------------------------------------------------------------------------------- figures

def test_pass_equivalent_figure_marks_counts_and_names_the_copy():
    from bnlab.plots.speed import plot_pass_equivalents

    result = CopyControlled({"plain": 6.0, "fused": 2.0}, copy_ms=1.0, array_bytes=2**20,
                            faults={"copy": 0.0, "plain": 3.0, "fused": 0.0})
    fig = plot_pass_equivalents({(256, 1024): result, (4, 4): result}, {"plain": (9, "counted"), "fused": (3, "floor")},
                                "title", ratios=[("plain", "fused")])
    assert len(fig.axes) == 2
    ax = fig.axes[0]
    assert [label.get_text() for label in ax.get_yticklabels()] == ["plain", "fused"]
    assert [patch.get_width() for patch in ax.patches] == [12.0, 4.0]  # 2 * ms / copy_ms
    title = ax.get_title(loc="left")
    assert "copy 2 GB/s" in title and "plain / fused = 3.0" in title
    texts = [t.get_text() for t in ax.texts]
    assert "counted 9" in texts and "floor 3" in texts and any("3 page faults" in t for t in texts)
    assert ax.get_xlabel().startswith("time in pass-equivalents")
    with pytest.raises(ValueError, match="at least one shape"):
        plot_pass_equivalents({}, {}, "title")
