"""bnlab.nn.batch_norm / BatchNormFunction against torch.nn.functional.batch_norm, gradcheck and errors."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab.functional import batchnorm_backward_fused, batchnorm_forward
from bnlab.nn import BatchNormFunction, batch_norm

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}
SHAPES = [(2, 3), (7, 4), (5, 3, 6), (2, 3, 1), (3, 4, 5, 6), (1, 3, 2, 2), (2, 3, 2, 2, 2)]


def channel_input(shape, dtype=torch.float64, seed=0):
    """Each channel with its own mean and scale, so a wrong reduction axis shows."""
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    scale = torch.linspace(0.5, 4.0, c, dtype=torch.float64).view(view)
    offset = torch.linspace(-3.0, 5.0, c, dtype=torch.float64).view(view)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset).to(dtype)


def channel_vectors(c, dtype, seed=1):
    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(c, generator=gen, dtype=torch.float64) + 1).to(dtype)
    weight[0] = 0.0  # a zero gamma must not break the gradient of the others
    bias = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype)
    mean = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype)
    var = (torch.rand(c, generator=gen, dtype=torch.float64) + 0.5).to(dtype)
    return weight, bias, mean, var


def run_both(shape, dtype, training, affine, with_stats, momentum=0.1):
    x = channel_input(shape, dtype)
    weight, bias, mean, var = channel_vectors(shape[1], dtype)
    results = []
    for fn in (batch_norm, F.batch_norm):
        xi = x.clone().requires_grad_()
        wi = weight.clone().requires_grad_() if affine else None
        bi = bias.clone().requires_grad_() if affine else None
        rm, rv = (mean.clone(), var.clone()) if with_stats else (None, None)
        out = fn(xi, rm, rv, wi, bi, training, momentum, 1e-5)
        grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64).to(dtype)
        inputs = [xi] + ([wi, bi] if affine else [])
        grads = torch.autograd.grad(out, inputs, grad_out)
        results.append((out.detach(), grads, rm, rv))
    return results


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_matches_torch_outputs_grads_and_running_stats(shape, dtype, training, affine):
    ours, theirs = run_both(shape, dtype, training, affine, with_stats=True)
    torch.testing.assert_close(ours[0], theirs[0], **TOL[dtype])
    assert len(ours[1]) == len(theirs[1]) == (3 if affine else 1)
    for g_ours, g_torch in zip(ours[1], theirs[1]):
        torch.testing.assert_close(g_ours, g_torch, **TOL[dtype])
    torch.testing.assert_close(ours[2], theirs[2], **TOL[dtype])
    torch.testing.assert_close(ours[3], theirs[3], **TOL[dtype])


@pytest.mark.parametrize("shape", [(4, 3), (3, 2, 5, 5)])
def test_training_without_running_stats_matches_torch(shape):
    ours, theirs = run_both(shape, torch.float64, training=True, affine=True, with_stats=False)
    torch.testing.assert_close(ours[0], theirs[0], **TOL[torch.float64])
    for g_ours, g_torch in zip(ours[1], theirs[1]):
        torch.testing.assert_close(g_ours, g_torch, **TOL[torch.float64])


def test_running_stats_use_unbiased_variance_and_momentum():
    x = channel_input((4, 3, 2), torch.float64)
    running_mean, running_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    batch_norm(x, running_mean, running_var, training=True, momentum=0.25)
    flat = x.transpose(0, 1).reshape(3, -1)  # (C, m) with m = 8
    torch.testing.assert_close(running_mean, 0.25 * flat.mean(1), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(running_var, 0.75 + 0.25 * flat.var(1, correction=1), rtol=1e-12, atol=1e-12)


def test_training_normalizes_with_biased_variance():
    """A batch of two gives exactly +-1, which only the biased variance does."""
    x = torch.tensor([[1.0, -4.0], [3.0, 10.0]], dtype=torch.float64)
    out = batch_norm(x, None, None, training=True, eps=1e-12)
    torch.testing.assert_close(out, torch.tensor([[-1.0, -1.0], [1.0, 1.0]], dtype=torch.float64))


def test_eval_mode_changes_nothing_and_ignores_the_rest_of_the_batch():
    weight, bias, mean, var = channel_vectors(3, torch.float64)
    x = channel_input((6, 3), torch.float64)
    rm, rv = mean.clone(), var.clone()
    full = batch_norm(x, rm, rv, weight, bias, training=False)
    single = batch_norm(x[:1], rm, rv, weight, bias, training=False)
    torch.testing.assert_close(single, full[:1])
    expected = (x - mean) / torch.sqrt(var + 1e-5) * weight + bias
    torch.testing.assert_close(full, expected, rtol=1e-12, atol=1e-12)
    assert torch.equal(rm, mean) and torch.equal(rv, var)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 3, 2)])
def test_gradcheck(training, affine, shape):
    x = channel_input(shape).requires_grad_()
    weight, bias, mean, var = channel_vectors(shape[1], torch.float64)
    params = (weight.requires_grad_(), bias.requires_grad_()) if affine else ()

    def fn(x, *wb):
        rm, rv = (None, None) if training else (mean, var)
        return batch_norm(x, rm, rv, *(wb or (None, None)), training=training)

    assert torch.autograd.gradcheck(fn, (x,) + params)


def test_backward_is_the_closed_form_of_the_numpy_course_code():
    x = channel_input((6, 3, 4), torch.float64)
    weight, bias, _, _ = channel_vectors(3, torch.float64)
    grad_out = torch.randn(x.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    xi, wi, bi = x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()
    out = batch_norm(xi, None, None, wi, bi, training=True)
    dx, dw, db = torch.autograd.grad(out, (xi, wi, bi), grad_out)
    np_out, cache = batchnorm_forward(x.numpy(), weight.numpy(), bias.numpy(), 1e-5)
    np_dx, np_dw, np_db = batchnorm_backward_fused(grad_out.numpy(), cache)
    np.testing.assert_allclose(out.detach().numpy(), np_out, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dx.numpy(), np_dx, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(dw.numpy(), np_dw, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db.numpy(), np_db, rtol=1e-10, atol=1e-12)


def test_grad_is_not_autograds_trace():
    x = channel_input((4, 3)).requires_grad_()
    out = batch_norm(x, None, None, training=True)
    assert type(out.grad_fn).__name__ == "BatchNormFunctionBackward"
    assert out.grad_fn is not None and BatchNormFunction.backward is not None


def test_dx_invariants_sum_zero_and_orthogonal_to_xhat():
    # Exact with eps -> 0 (sum(xhat**2) = m * var / (var + eps)), so eps is tiny here.
    x = channel_input((8, 3, 5)).requires_grad_()
    out = batch_norm(x, None, None, training=True, eps=1e-14)
    (dx,) = torch.autograd.grad(out, x, torch.randn(out.shape, dtype=torch.float64))
    xhat = out.detach()
    torch.testing.assert_close(dx.sum((0, 2)), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close((dx * xhat).sum((0, 2)), torch.zeros(3, dtype=torch.float64), rtol=0, atol=1e-12)


def test_float32_statistics_are_two_pass_accurate_with_a_large_offset():
    gen = torch.Generator().manual_seed(0)
    x64 = torch.randn(1_000_000, 1, generator=gen, dtype=torch.float64) + 1000.0
    out = batch_norm(x64.float(), None, None, training=True)
    reference = (x64 - x64.mean()) / torch.sqrt(x64.var(correction=0) + 1e-5)
    assert abs(out.double().std().item() - 1.0) < 1e-3
    assert (out.double() - reference).abs().max().item() < 1e-3


def test_input_is_not_modified():
    x = channel_input((5, 3, 2))
    copy = x.clone()
    batch_norm(x, None, None, training=True)
    assert torch.equal(x, copy)


def test_second_derivative_is_refused_clearly():
    x = channel_input((4, 3)).requires_grad_()
    out = batch_norm(x, None, None, training=True)
    grad_out = torch.randn(out.shape, dtype=torch.float64, requires_grad=True)
    (dx,) = torch.autograd.grad(out, x, grad_out, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable"):
        dx.sum().backward()


# ------------------------------------------------------------------ bad input


def test_one_value_per_channel_in_training_raises_torchs_message():
    with pytest.raises(ValueError) as info:
        batch_norm(torch.randn(1, 3), None, None, training=True)
    assert str(info.value) == "Expected more than 1 value per channel when training, got input size torch.Size([1, 3])"
    with pytest.raises(ValueError, match=r"torch.Size\(\[1, 3, 1, 1\]\)"):
        batch_norm(torch.randn(1, 3, 1, 1), None, None, training=True)
    assert batch_norm(torch.randn(1, 3, 2, 2), None, None, training=True).shape == (1, 3, 2, 2)


def test_one_value_per_channel_is_fine_in_eval_mode():
    out = batch_norm(torch.randn(1, 3), torch.zeros(3), torch.ones(3), training=False)
    assert out.shape == (1, 3)


def test_running_stats_untouched_when_validation_fails():
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError):
        batch_norm(torch.randn(1, 3), rm, rv, training=True)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


@pytest.mark.parametrize("name", ["running_mean", "running_var", "weight", "bias"])
def test_wrong_channel_count_names_expected_and_got(name):
    args = dict(running_mean=torch.zeros(3), running_var=torch.ones(3), weight=torch.ones(3), bias=torch.zeros(3))
    args[name] = torch.zeros(4)
    with pytest.raises(ValueError) as info:
        batch_norm(torch.randn(5, 3), training=True, **args)
    message = str(info.value)
    assert name in message and "(3,)" in message and "(4,)" in message


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("nan")])
def test_non_positive_eps_in_training_raises(eps):
    with pytest.raises(ValueError, match="eps must be a positive finite number.*training"):
        batch_norm(torch.randn(4, 3), None, None, training=True, eps=eps)


def test_zero_eps_allowed_in_eval_mode_like_torch():
    out = batch_norm(torch.ones(2, 3), torch.zeros(3), torch.full((3,), 4.0), training=False, eps=0.0)
    torch.testing.assert_close(out, torch.full((2, 3), 0.5))


def test_eval_without_running_stats_raises():
    with pytest.raises(ValueError, match="needed in evaluation mode"):
        batch_norm(torch.randn(4, 3), None, None, training=False)


def test_only_one_running_stat_raises():
    with pytest.raises(ValueError, match="both be tensors or both be None"):
        batch_norm(torch.randn(4, 3), torch.zeros(3), None, training=True)


def test_integer_input_raises_type_error():
    with pytest.raises(TypeError, match="floating-point input.*got dtype torch.int64"):
        batch_norm(torch.ones(4, 3, dtype=torch.long), None, None, training=True)


def test_one_dimensional_input_raises():
    with pytest.raises(ValueError, match=r"at least 2 dimensions, got shape \(3,\) \(1-D\)"):
        batch_norm(torch.randn(3), None, None, training=True)


def test_mixed_dtypes_raise_naming_both():
    with pytest.raises(TypeError, match="weight must have the input's dtype torch.float64, got torch.float32"):
        batch_norm(torch.randn(4, 3, dtype=torch.float64), None, None, weight=torch.ones(3), training=True)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, None])
def test_bad_momentum_raises(momentum):
    with pytest.raises(ValueError, match="momentum must be a number in \\[0, 1\\]"):
        batch_norm(torch.randn(4, 3), torch.zeros(3), torch.ones(3), training=True, momentum=momentum)


@pytest.mark.parametrize("layout", ["channels_last", "transposed_2d"])
def test_non_contiguous_inputs_match_torch(layout):
    if layout == "channels_last":
        base = channel_input((3, 4, 5, 2)).contiguous(memory_format=torch.channels_last)
    else:
        base = channel_input((4, 6)).t().contiguous().t()  # (6, 4) data, column-major
    weight, bias, mean, var = channel_vectors(base.shape[1], torch.float64)
    grad_out = torch.randn(base.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    results = []
    for fn in (batch_norm, F.batch_norm):
        xi, wi, bi = base.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()
        rm, rv = mean.clone(), var.clone()
        out = fn(xi, rm, rv, wi, bi, True, 0.1, 1e-5)
        results.append((out.detach(), *torch.autograd.grad(out, (xi, wi, bi), grad_out), rm, rv))
    for ours, theirs in zip(*results):
        torch.testing.assert_close(ours, theirs, rtol=1e-10, atol=1e-10)
