"""bnlab.layers.BatchNorm against torch.nn.BatchNorm1d/2d across sequences of train and eval steps."""

import numpy as np
import pytest
import torch

from bnlab.layers import BatchNorm
from reference import channel_batch, tolerances

TORCH_DTYPE = {np.float64: torch.float64, np.float32: torch.float32}
# (mode, batch size) sequences: varying N, eval in between, eval with a batch of one.
STEPS = [("train", 4), ("train", 2), ("eval", 5), ("train", 7), ("eval", 1), ("train", 3), ("train", 16), ("eval", 3)]


def torch_module(ndim: int, num_features: int, dtype, **kwargs) -> torch.nn.Module:
    cls = torch.nn.BatchNorm1d if ndim in (2, 3) else torch.nn.BatchNorm2d
    return cls(num_features, dtype=TORCH_DTYPE[dtype], **kwargs)


def randomize_affine(ours: BatchNorm, theirs: torch.nn.Module, rng) -> None:
    weight = rng.uniform(0.5, 2.0, ours.num_features) * rng.choice([-1, 1], ours.num_features)
    bias = rng.standard_normal(ours.num_features)
    ours.weight, ours.bias = weight.astype(ours.dtype), bias.astype(ours.dtype)
    with torch.no_grad():
        theirs.weight.copy_(torch.tensor(weight))
        theirs.bias.copy_(torch.tensor(bias))


def assert_same_state(ours: BatchNorm, theirs: torch.nn.Module, tol) -> None:
    theirs_state = theirs.state_dict()
    ours_state = ours.state_dict()
    assert list(ours_state) == list(theirs_state)
    for key, value in ours_state.items():
        np.testing.assert_allclose(value, theirs_state[key].numpy(), **tol, err_msg=key)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("inner_shape", [(3,), (3, 5), (2, 3, 4)])
@pytest.mark.parametrize("momentum", [0.1, None, 0.0, 1.0, 0.37])
def test_train_eval_sequence_matches_torch(rng, inner_shape, momentum, dtype):
    num_features = inner_shape[0]
    ndim = len(inner_shape) + 1
    ours = BatchNorm(num_features, momentum=momentum, dtype=dtype)
    theirs = torch_module(ndim, num_features, dtype, momentum=momentum)
    randomize_affine(ours, theirs, rng)
    tol = tolerances(dtype)
    for mode, n in STEPS:
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = channel_batch(rng, (n,) + inner_shape, dtype)
        dout = rng.standard_normal(x.shape).astype(dtype)
        xt = torch.tensor(x, requires_grad=True)
        out_ref = theirs(xt)
        dx_ref, dw_ref, db_ref = torch.autograd.grad(out_ref, (xt, theirs.weight, theirs.bias), torch.tensor(dout))

        out = ours.forward(x)
        dx = ours.backward(dout)
        np.testing.assert_allclose(out, out_ref.detach().numpy(), **tol)
        np.testing.assert_allclose(dx, dx_ref.numpy(), rtol=tol["rtol"], atol=tol["atol"] * 10)
        np.testing.assert_allclose(ours.grad["weight"], dw_ref.numpy(), rtol=tol["rtol"], atol=tol["atol"] * 100)
        np.testing.assert_allclose(ours.grad["bias"], db_ref.numpy(), rtol=tol["rtol"], atol=tol["atol"] * 100)
        assert_same_state(ours, theirs, tol)


@pytest.mark.parametrize("inner_shape", [(4,), (4, 3, 3)])
def test_without_affine_matches_torch(rng, inner_shape):
    ours = BatchNorm(4, affine=False)
    theirs = torch_module(len(inner_shape) + 1, 4, np.float64, affine=False)
    assert ours.weight is None and ours.bias is None
    for mode, n in STEPS:
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = channel_batch(rng, (n,) + inner_shape)
        dout = rng.standard_normal(x.shape)
        xt = torch.tensor(x, requires_grad=True)
        out_ref = theirs(xt)
        (dx_ref,) = torch.autograd.grad(out_ref, (xt,), torch.tensor(dout))
        np.testing.assert_allclose(ours(x), out_ref.detach().numpy(), rtol=1e-10, atol=1e-11)
        np.testing.assert_allclose(ours.backward(dout), dx_ref.numpy(), rtol=1e-10, atol=1e-10)
        assert ours.grad == {}
        assert_same_state(ours, theirs, tolerances(np.float64))


def test_without_running_stats_uses_batch_statistics_in_both_modes(rng):
    ours = BatchNorm(3, track_running_stats=False)
    theirs = torch_module(2, 3, np.float64, track_running_stats=False)
    assert ours.running_mean is None and ours.running_var is None and ours.num_batches_tracked is None
    assert list(ours.state_dict()) == list(theirs.state_dict()) == ["weight", "bias"]
    for mode, n in [("train", 4), ("eval", 5), ("train", 2), ("eval", 3)]:
        ours.train(mode == "train")
        theirs.train(mode == "train")
        x = channel_batch(rng, (n, 3))
        np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-10, atol=1e-11)
    ours.eval()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        ours(channel_batch(rng, (1, 3)))


def test_defaults_match_torch():
    ours, theirs = BatchNorm(5), torch.nn.BatchNorm1d(5)
    assert (ours.eps, ours.momentum, ours.affine, ours.track_running_stats, ours.training) == \
        (theirs.eps, theirs.momentum, theirs.affine, theirs.track_running_stats, theirs.training)
    assert_same_state(ours, theirs, tolerances(np.float64))
    assert ours.train() is ours and ours.eval() is ours and not ours.training


def test_eval_mode_accepts_a_batch_of_one_and_leaves_the_state_alone(rng):
    layer = BatchNorm(3)
    layer(channel_batch(rng, (8, 3)))
    layer.eval()
    before = layer.state_dict()
    x = channel_batch(rng, (1, 3))
    out = layer(x)
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + layer.eps)
    np.testing.assert_allclose(out, expected, rtol=1e-12)
    for key, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[key])


def test_cumulative_average_with_momentum_none_weights_every_batch_equally(rng):
    layer = BatchNorm(2, momentum=None)
    batches = [channel_batch(rng, (n, 2)) for n in (4, 6, 3)]
    for x in batches:
        layer(x)
    np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(axis=0) for x in batches], axis=0), rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, np.mean([x.var(axis=0, ddof=1) for x in batches], axis=0),
                               rtol=1e-12)
    assert layer.num_batches_tracked == 3


def test_one_pytorch_momentum_step_by_hand():
    layer = BatchNorm(1, momentum=0.1)
    layer(np.array([[1.0], [3.0]]))  # mean 2, unbiased variance 2
    np.testing.assert_allclose(layer.running_mean, [0.9 * 0 + 0.1 * 2])
    np.testing.assert_allclose(layer.running_var, [0.9 * 1 + 0.1 * 2])


@pytest.mark.parametrize("inner_shape", [(3,), (3, 2, 2)])
def test_state_dicts_round_trip_both_ways(rng, inner_shape):
    theirs = torch_module(len(inner_shape) + 1, 3, np.float32)
    theirs.train()
    for n in (4, 5):
        theirs(torch.tensor(channel_batch(rng, (n,) + inner_shape, np.float32)))
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 2.0)
        theirs.bias.normal_()

    ours = BatchNorm(3, dtype=np.float32)
    ours.load_state_dict(theirs.state_dict())  # torch tensors in
    assert ours.num_batches_tracked == 2
    assert_same_state(ours, theirs, {"rtol": 0, "atol": 0})
    ours.eval()
    theirs.eval()
    x = channel_batch(rng, (6,) + inner_shape, np.float32)
    np.testing.assert_allclose(ours(x), theirs(torch.tensor(x)).detach().numpy(), rtol=1e-6, atol=1e-6)

    back = torch_module(len(inner_shape) + 1, 3, np.float32)
    back.load_state_dict({key: torch.as_tensor(value) for key, value in ours.state_dict().items()})
    assert_same_state(ours, back, {"rtol": 0, "atol": 0})

    numpy_copy = BatchNorm(3)
    numpy_copy.load_state_dict(ours.state_dict())  # numpy arrays in
    assert_same_state(numpy_copy, theirs, {"rtol": 0, "atol": 0})


def test_state_dict_returns_copies(rng):
    layer = BatchNorm(2)
    state = layer.state_dict()
    state["running_mean"][:] = 99.0
    assert np.all(layer.running_mean == 0.0)


def test_load_state_dict_rejects_wrong_keys_and_shapes():
    layer = BatchNorm(3)
    good = layer.state_dict()
    with pytest.raises(KeyError, match=r"missing \['bias'\]"):
        layer.load_state_dict({k: v for k, v in good.items() if k != "bias"})
    with pytest.raises(KeyError, match=r"unexpected \['extra'\]"):
        layer.load_state_dict({**good, "extra": np.zeros(3)})
    with pytest.raises(ValueError, match=r"running_var.*shape \(3,\).*\(4,\)"):
        layer.load_state_dict({**good, "running_var": np.ones(4)})


def test_backward_in_eval_mode_is_the_affine_map(rng):
    layer = BatchNorm(3)
    layer(channel_batch(rng, (8, 3)))
    layer.eval()
    x = channel_batch(rng, (4, 3))
    dout = rng.standard_normal(x.shape)
    layer(x)
    dx = layer.backward(dout)
    scale = layer.weight / np.sqrt(layer.running_var + layer.eps)
    np.testing.assert_allclose(dx, dout * scale, rtol=1e-13)


def test_backward_before_forward_is_a_clear_error():
    with pytest.raises(RuntimeError, match="forward"):
        BatchNorm(2).backward(np.zeros((2, 2)))
