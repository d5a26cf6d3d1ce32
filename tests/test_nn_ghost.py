"""Ghost batch norm: per-ghost-batch normalization, the running-statistics rule, eval mode and errors."""

import inspect

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnlab.nn import BatchNorm1d, GhostBatchNorm1d, GhostBatchNorm2d, ghost_batch_norm


def channel_batch(shape, seed=0):
    gen = torch.Generator().manual_seed(seed)
    c = shape[1]
    view = (1, c) + (1,) * (len(shape) - 2)
    scale = torch.linspace(0.5, 3.0, c, dtype=torch.float64).view(view)
    offset = torch.linspace(-2.0, 4.0, c, dtype=torch.float64).view(view)
    return torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset


def reference_per_chunk(x, g, weight, bias, grad_out):
    """Torch's own batch norm applied to each chunk of g examples, and its gradients."""
    xi, wi, bi = x.clone().requires_grad_(), weight.clone().requires_grad_(), bias.clone().requires_grad_()
    out = torch.cat([F.batch_norm(chunk, None, None, wi, bi, training=True) for chunk in xi.split(g)])
    return out.detach(), torch.autograd.grad(out, (xi, wi, bi), grad_out)


@pytest.mark.parametrize("cls,shape,g", [
    (GhostBatchNorm1d, (12, 5), 4), (GhostBatchNorm1d, (12, 5), 2), (GhostBatchNorm1d, (6, 3, 4), 3),
    (GhostBatchNorm1d, (8, 3, 2), 1), (GhostBatchNorm2d, (8, 3, 2, 3), 2), (GhostBatchNorm2d, (4, 2, 3, 3), 4),
])
def test_training_output_and_grads_equal_torch_per_ghost_batch(cls, shape, g):
    module = cls(shape[1], ghost_batch_size=g, dtype=torch.float64)
    with torch.no_grad():
        module.weight.copy_(torch.linspace(-1.0, 2.0, shape[1]))
        module.bias.copy_(torch.linspace(0.5, -0.5, shape[1]))
    x = channel_batch(shape)
    grad_out = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    xi = x.clone().requires_grad_()
    out = module(xi)
    grads = torch.autograd.grad(out, (xi, module.weight, module.bias), grad_out)
    expected_out, expected_grads = reference_per_chunk(x, g, module.weight.detach(), module.bias.detach(), grad_out)
    torch.testing.assert_close(out.detach(), expected_out, rtol=1e-10, atol=1e-10)
    for got, expected in zip(grads, expected_grads):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)


def test_ghost_functional_passes_gradcheck():
    x = channel_batch((6, 3, 2)).requires_grad_()
    weight = torch.randn(3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: ghost_batch_norm(x, 2, None, None, w, b), (x, weight, bias))


@pytest.mark.parametrize("momentum", [0.1, None])
def test_running_stats_one_update_per_forward_with_ghost_averages(momentum):
    module = GhostBatchNorm1d(3, ghost_batch_size=4, momentum=momentum, dtype=torch.float64)
    batches = [channel_batch((12, 3, 2), seed=s) for s in range(3)]
    expected_mean, expected_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    for step, x in enumerate(batches, start=1):
        module(x)
        chunks = [c.transpose(0, 1).reshape(3, -1) for c in x.split(4)]  # (C, m) with m = 4 * 2
        mean = torch.stack([c.mean(1) for c in chunks]).mean(0)
        var = torch.stack([c.var(1, correction=1) for c in chunks]).mean(0)
        factor = 1.0 / step if momentum is None else momentum
        expected_mean = (1 - factor) * expected_mean + factor * mean
        expected_var = (1 - factor) * expected_var + factor * var
        assert int(module.num_batches_tracked) == step
    torch.testing.assert_close(module.running_mean, expected_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(module.running_var, expected_var, rtol=1e-12, atol=1e-12)


def test_one_ghost_batch_is_ordinary_batch_norm():
    ghost = GhostBatchNorm1d(4, ghost_batch_size=6, dtype=torch.float64)
    plain = nn.BatchNorm1d(4, dtype=torch.float64)
    x = channel_batch((6, 4))
    torch.testing.assert_close(ghost(x), plain(x), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ghost.running_var, plain.running_var, rtol=1e-12, atol=1e-12)


def test_eval_is_ordinary_batch_norm_with_running_stats():
    ghost = GhostBatchNorm1d(4, ghost_batch_size=2, dtype=torch.float64)
    for seed in range(3):
        ghost(channel_batch((8, 4), seed))
    plain = nn.BatchNorm1d(4, dtype=torch.float64)
    plain.load_state_dict(ghost.state_dict())
    ghost.eval()
    plain.eval()
    x = channel_batch((5, 4), seed=9)  # 5 is not a multiple of 2: fine in eval mode
    torch.testing.assert_close(ghost(x), plain(x), rtol=1e-12, atol=1e-12)


def test_without_running_stats_eval_uses_ghost_batches_too():
    module = GhostBatchNorm1d(3, ghost_batch_size=2, track_running_stats=False, dtype=torch.float64).eval()
    x = channel_batch((4, 3))
    expected = torch.cat([F.batch_norm(c, None, None, module.weight, module.bias, training=True) for c in x.split(2)])
    torch.testing.assert_close(module(x), expected.detach(), rtol=1e-10, atol=1e-10)


def test_constructor_signature_used_by_the_models():
    module = GhostBatchNorm1d(100, ghost_batch_size=4)
    assert module.ghost_batch_size == 4 and module.num_features == 100
    names = list(inspect.signature(GhostBatchNorm1d).parameters)[:6]
    assert names == ["num_features", "ghost_batch_size", "eps", "momentum", "affine", "track_running_stats"]
    assert "ghost_batch_size=4" in repr(module)
    assert isinstance(module, BatchNorm1d)
    assert list(module.state_dict()) == list(nn.BatchNorm1d(100).state_dict())


def test_batch_not_divisible_raises_and_changes_nothing():
    module = GhostBatchNorm1d(3, ghost_batch_size=4)
    with pytest.raises(ValueError) as info:
        module(torch.randn(10, 3))
    assert str(info.value) == ("ghost batch norm needs a batch size divisible by ghost_batch_size=4, "
                               "got batch size 10 (input shape (10, 3))")
    assert int(module.num_batches_tracked) == 0 and torch.equal(module.running_mean, torch.zeros(3))


def test_one_value_per_channel_per_ghost_batch_raises():
    module = GhostBatchNorm1d(3, ghost_batch_size=1)
    with pytest.raises(ValueError) as info:
        module(torch.randn(4, 3))
    assert str(info.value) == ("ghost batch norm needs more than 1 value per channel in each ghost batch of 1 "
                               "examples, got 1 (input shape (4, 3)); use ghost_batch_size >= 2")
    assert int(module.num_batches_tracked) == 0
    assert GhostBatchNorm2d(3, ghost_batch_size=1)(torch.randn(4, 3, 2, 2)).shape == (4, 3, 2, 2)


@pytest.mark.parametrize("size", [0, -2, 2.5, True])
def test_bad_ghost_batch_size_raises(size):
    with pytest.raises(ValueError, match=f"ghost_batch_size must be a positive integer.*got {size!r}"):
        GhostBatchNorm1d(3, ghost_batch_size=size)


def test_wrong_dims_message_is_the_base_class_message():
    with pytest.raises(ValueError, match=r"expected 4D input \(got 2D input\)"):
        GhostBatchNorm2d(3, ghost_batch_size=2)(torch.randn(4, 3))
