"""bnlab.nn.BatchNorm1d/2d as drop-ins for torch.nn.BatchNorm1d/2d: state, sequences, state dicts, errors."""

import io

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from bnlab.nn import BatchNorm1d, BatchNorm2d

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}
PAIRS = {1: (BatchNorm1d, nn.BatchNorm1d), 2: (BatchNorm2d, nn.BatchNorm2d)}


def channel_batch(n, c, spatial, dtype, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (n, c) + spatial
    view = (1, c) + (1,) * len(spatial)
    scale = torch.linspace(0.3, 3.0, c, dtype=torch.float64).view(view)
    offset = torch.linspace(-2.0, 6.0, c, dtype=torch.float64).view(view)
    return (torch.randn(shape, generator=gen, dtype=torch.float64) * scale + offset).to(dtype)


def make_pair(kind, c, dtype, **kwargs):
    ours_cls, torch_cls = PAIRS[kind]
    ours, theirs = ours_cls(c, dtype=dtype, **kwargs), torch_cls(c, dtype=dtype, **kwargs)
    if ours.affine:  # non-trivial, identical parameters
        gen = torch.Generator().manual_seed(11)
        weight = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype)
        bias = torch.randn(c, generator=gen, dtype=torch.float64).to(dtype)
        with torch.no_grad():
            for module in (ours, theirs):
                module.weight.copy_(weight)
                if module.bias is not None:
                    module.bias.copy_(bias)
    return ours, theirs


def step_both(ours, theirs, x, dtype, seed):
    grad_out = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)
    outputs, grads = [], []
    for module in (ours, theirs):
        xi = x.clone().requires_grad_()
        out = module(xi)
        params = [xi] + [p for p in (module.weight, module.bias) if p is not None]
        grads.append(torch.autograd.grad(out, params, grad_out))
        outputs.append(out.detach())
    torch.testing.assert_close(outputs[0], outputs[1], **TOL[dtype])
    for g_ours, g_torch in zip(*grads):
        torch.testing.assert_close(g_ours, g_torch, **TOL[dtype])
    assert_same_state(ours, theirs, dtype)


def assert_same_state(ours, theirs, dtype):
    ours_state, torch_state = ours.state_dict(), theirs.state_dict()
    assert list(ours_state) == list(torch_state)
    for key in torch_state:
        assert ours_state[key].dtype == torch_state[key].dtype, key
        torch.testing.assert_close(ours_state[key], torch_state[key], **TOL[dtype])


SEQUENCE = [("train", 2), ("train", 5), ("eval", 3), ("train", 8), ("eval", 1), ("train", 3), ("eval", 4)]


@pytest.mark.parametrize("kind,spatial", [(1, ()), (1, (6,)), (2, (3, 4))])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("options", [
    dict(),
    dict(momentum=None),
    dict(momentum=0.3, affine=False),
    dict(track_running_stats=False),
    dict(momentum=None, affine=False, track_running_stats=False),
    dict(bias=False),
])
def test_train_eval_sequence_matches_torch(kind, spatial, dtype, options):
    ours, theirs = make_pair(kind, 4, dtype, **options)
    for step, (mode, n) in enumerate(SEQUENCE):
        if mode == "eval" and n == 1 and not ours.track_running_stats and spatial == ():
            continue  # batch statistics of one value per channel: an error for both (tested below)
        ours.train(mode == "train")
        theirs.train(mode == "train")
        step_both(ours, theirs, channel_batch(n, 4, spatial, dtype, seed=step), dtype, seed=100 + step)


@settings(max_examples=20, deadline=None)
@given(kind=st.sampled_from([1, 2]), c=st.integers(1, 5), sizes=st.lists(st.integers(2, 6), min_size=1, max_size=3),
       momentum=st.sampled_from([0.1, None, 0.5]))
def test_random_sequences_match_torch(kind, c, sizes, momentum):
    spatial = (2, 3) if kind == 2 else ()
    ours, theirs = make_pair(kind, c, torch.float64, momentum=momentum)
    for step, n in enumerate(sizes):
        step_both(ours, theirs, channel_batch(n, c, spatial, torch.float64, seed=step), torch.float64, seed=step)
    ours.eval()
    theirs.eval()
    step_both(ours, theirs, channel_batch(3, c, spatial, torch.float64, seed=99), torch.float64, seed=99)


@pytest.mark.parametrize("kind", [1, 2])
def test_same_parameters_buffers_and_defaults_as_torch(kind):
    ours, theirs = PAIRS[kind][0](5), PAIRS[kind][1](5)
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert [n for n, _ in ours.named_buffers()] == [n for n, _ in theirs.named_buffers()]
    assert_same_state(ours, theirs, torch.float32)
    assert (ours.eps, ours.momentum, ours.affine, ours.track_running_stats) == \
        (theirs.eps, theirs.momentum, theirs.affine, theirs.track_running_stats)
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
    no_bias_ours, no_bias_torch = PAIRS[kind][0](5, bias=False), PAIRS[kind][1](5, bias=False)
    assert list(no_bias_ours.state_dict()) == list(no_bias_torch.state_dict())
    assert no_bias_ours.bias is None and repr(no_bias_ours).split("(", 1)[1] == repr(no_bias_torch).split("(", 1)[1]
    untracked_ours, untracked_torch = PAIRS[kind][0](5, affine=False, track_running_stats=False), \
        PAIRS[kind][1](5, affine=False, track_running_stats=False)
    assert list(untracked_ours.state_dict()) == list(untracked_torch.state_dict()) == []
    assert untracked_ours.weight is None and untracked_ours.running_mean is None


def test_device_and_dtype_arguments():
    module = BatchNorm2d(3, device="cpu", dtype=torch.float64)
    assert module.weight.dtype == module.running_var.dtype == torch.float64
    assert module.num_batches_tracked.dtype == torch.long
    module.float()
    assert module.running_mean.dtype == torch.float32 and module.num_batches_tracked.dtype == torch.long


def trained(module, kind, seed=0):
    spatial = (2, 2) if kind == 2 else ()
    module.train()
    for step in range(3):
        module(channel_batch(4, module.num_features, spatial, torch.float32, seed + step))
    if module.affine:
        with torch.no_grad():
            module.weight.mul_(1.5)
            if module.bias is not None:
                module.bias.add_(0.25)
    return module


@pytest.mark.parametrize("kind", [1, 2])
def test_state_dicts_load_both_ways(kind):
    ours_cls, torch_cls = PAIRS[kind]
    spatial = (2, 2) if kind == 2 else ()
    x = channel_batch(3, 4, spatial, torch.float32, seed=7)

    source = trained(torch_cls(4), kind)
    target = ours_cls(4)
    target.load_state_dict(source.state_dict())
    assert_same_state(target, source, torch.float32)
    torch.testing.assert_close(target.eval()(x), source.eval()(x), **TOL[torch.float32])

    source = trained(ours_cls(4, momentum=None), kind, seed=3)
    target = torch_cls(4, momentum=None)
    target.load_state_dict(source.state_dict())
    assert_same_state(source, target, torch.float32)
    assert int(target.num_batches_tracked) == 3
    torch.testing.assert_close(target.eval()(x), source.eval()(x), **TOL[torch.float32])


def test_state_dict_survives_torch_save_round_trip():
    source = trained(BatchNorm1d(4), 1)
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    target = BatchNorm1d(4)
    target.load_state_dict(torch.load(buffer))
    assert_same_state(source, target, torch.float32)


def test_mismatched_state_dict_is_rejected():
    with pytest.raises(RuntimeError, match="size mismatch"):
        BatchNorm1d(4).load_state_dict(nn.BatchNorm1d(5).state_dict())
    with pytest.raises(RuntimeError, match="Unexpected key"):
        BatchNorm1d(4, track_running_stats=False).load_state_dict(nn.BatchNorm1d(4).state_dict())


def test_momentum_none_is_a_cumulative_average():
    module = BatchNorm1d(2, momentum=None).double()
    batches = [channel_batch(n, 2, (), torch.float64, seed=n) for n in (3, 5, 4)]
    for x in batches:
        module(x)
    torch.testing.assert_close(module.running_mean, torch.stack([x.mean(0) for x in batches]).mean(0))
    torch.testing.assert_close(module.running_var, torch.stack([x.var(0) for x in batches]).mean(0))
    assert int(module.num_batches_tracked) == 3


def test_eval_does_not_update_and_ignores_the_rest_of_the_batch():
    module = trained(BatchNorm1d(4), 1).eval()
    state = {k: v.clone() for k, v in module.state_dict().items()}
    x = channel_batch(5, 4, (), torch.float32, seed=1)
    full = module(x)
    other = torch.cat([x[:1], channel_batch(4, 4, (), torch.float32, seed=2) * 10])
    torch.testing.assert_close(module(other)[:1], full[:1])
    for key, value in module.state_dict().items():
        assert torch.equal(value, state[key])


def test_reset_parameters_and_running_stats():
    module = trained(BatchNorm1d(4), 1)
    module.reset_parameters()
    assert_same_state(module, nn.BatchNorm1d(4), torch.float32)


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize("module,shape,message", [
    (BatchNorm1d(3), (2, 3, 4, 4), "expected 2D or 3D input (got 4D input)"),
    (BatchNorm1d(3), (3,), "expected 2D or 3D input (got 1D input)"),
    (BatchNorm2d(3), (2, 3, 4), "expected 4D input (got 3D input)"),
    (BatchNorm2d(3), (2, 3), "expected 4D input (got 2D input)"),
])
def test_wrong_number_of_dims_gives_torchs_message(module, shape, message):
    with pytest.raises(ValueError) as info:
        module(torch.randn(shape))
    assert str(info.value) == message


@pytest.mark.parametrize("training", [True, False])
def test_wrong_channel_count_names_expected_and_got(training):
    module = BatchNorm2d(4).train(training)
    with pytest.raises(ValueError) as info:
        module(torch.randn(5, 3, 2, 2))
    assert str(info.value) == ("BatchNorm2d(4) expected input with 4 channels in dimension 1, got 3 "
                               "(input shape (5, 3, 2, 2))")


@pytest.mark.parametrize("module,shape", [(BatchNorm1d(3), (1, 3)), (BatchNorm2d(3), (1, 3, 1, 1))])
def test_one_value_per_channel_in_training_raises_before_counting(module, shape):
    with pytest.raises(ValueError) as info:
        module(torch.randn(shape))
    assert str(info.value) == f"Expected more than 1 value per channel when training, got input size {torch.Size(shape)}"
    assert int(module.num_batches_tracked) == 0  # torch would have counted this batch
    assert torch.equal(module.running_mean, torch.zeros(3)) and torch.equal(module.running_var, torch.ones(3))
    assert module.eval()(torch.randn(shape)).shape == shape  # fine with running statistics


def test_zero_eps_raises_in_training_only():
    module = BatchNorm1d(3, eps=0.0)
    with pytest.raises(ValueError, match="eps must be a positive finite number.*got eps=0.0"):
        module(torch.randn(4, 3))
    assert int(module.num_batches_tracked) == 0
    assert torch.isfinite(module.eval()(torch.randn(4, 3))).all()


def test_dtype_mismatch_raises_before_counting():
    module = BatchNorm1d(3)
    with pytest.raises(TypeError, match="must have the input's dtype torch.float64, got torch.float32"):
        module(torch.randn(4, 3, dtype=torch.float64))
    assert int(module.num_batches_tracked) == 0


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_features=0), "num_features must be a positive integer"),
    (dict(num_features=3, eps=-1.0), "eps must be a finite number >= 0"),
    (dict(num_features=3, momentum=1.5), "momentum must be a number in \\[0, 1\\]"),
])
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        BatchNorm1d(**kwargs)


def test_non_tensor_input_raises_type_error():
    with pytest.raises(TypeError, match="expects a torch.Tensor input, got list"):
        BatchNorm1d(2)([[1.0, 2.0], [3.0, 4.0]])
