"""bnlab.functional against PyTorch, float32 and float64, over many shapes."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnlab.functional import (
    batchnorm_backward,
    batchnorm_backward_fused,
    batchnorm_forward,
    batchnorm_inference,
    groupnorm_backward,
    groupnorm_forward,
    layernorm_backward,
    layernorm_forward,
)
from reference import affine_params, channel_batch, tolerances, torch_train_forward_backward

SHAPES = [(2, 1), (2, 3), (3, 5), (8, 4), (64, 3), (2, 3, 5), (4, 2, 7), (2, 3, 4, 5), (5, 4, 3, 2),
          (1, 3, 2, 2), (3, 2, 1, 1), (2, 2, 2, 3, 2)]
DTYPES = [np.float64, np.float32]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
def test_training_forward_and_both_backwards_match_torch(rng, shape, dtype):
    x = channel_batch(rng, shape, dtype)
    gamma, beta = affine_params(rng, shape[1], dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    out_ref, dx_ref, dgamma_ref, dbeta_ref = torch_train_forward_backward(x, gamma, beta, dout)
    tol = tolerances(dtype)

    out, cache = batchnorm_forward(x, gamma, beta)
    assert out.dtype == dtype and out.shape == shape
    np.testing.assert_allclose(out, out_ref, **tol)
    for backward in (batchnorm_backward, batchnorm_backward_fused):
        dx, dgamma, dbeta = backward(dout, cache)
        assert dx.dtype == dtype and dx.shape == shape and dgamma.shape == dbeta.shape == (shape[1],)
        scale = np.abs(dx_ref).max()
        np.testing.assert_allclose(dx, dx_ref, rtol=tol["rtol"], atol=tol["atol"] * max(1.0, scale))
        np.testing.assert_allclose(dgamma, dgamma_ref, rtol=tol["rtol"], atol=tol["atol"] * shape[0] * 10)
        np.testing.assert_allclose(dbeta, dbeta_ref, rtol=tol["rtol"], atol=tol["atol"] * shape[0] * 10)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5), (2, 3, 4, 4)])
def test_staged_and_fused_backward_agree_to_rounding(rng, shape):
    x = channel_batch(rng, shape)
    gamma, beta = affine_params(rng, shape[1])
    dout = rng.standard_normal(shape)
    _, cache = batchnorm_forward(x, gamma, beta)
    for staged, fused in zip(batchnorm_backward(dout, cache), batchnorm_backward_fused(dout, cache)):
        np.testing.assert_allclose(staged, fused, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eps", [1e-5, 1e-3, 0.5])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(1, 3), (5, 3), (1, 4, 3, 3), (7, 2, 5)])
def test_inference_matches_torch_eval(rng, shape, dtype, eps):
    x = channel_batch(rng, shape, dtype)
    gamma, beta = affine_params(rng, shape[1], dtype)
    running_mean = rng.standard_normal(shape[1]).astype(dtype)
    running_var = rng.uniform(0.1, 5.0, shape[1]).astype(dtype)
    out = batchnorm_inference(x, gamma, beta, running_mean, running_var, eps=eps)
    ref = F.batch_norm(torch.tensor(x), torch.tensor(running_mean), torch.tensor(running_var),
                       torch.tensor(gamma), torch.tensor(beta), training=False, eps=eps).numpy()
    assert out.dtype == dtype
    np.testing.assert_allclose(out, ref, **tolerances(dtype))


def test_forward_uses_the_biased_variance_and_keeps_the_statistics(rng):
    x = channel_batch(rng, (4, 3))
    _, cache = batchnorm_forward(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(cache.batch_mean, x.mean(axis=0), rtol=1e-13)
    np.testing.assert_allclose(cache.batch_var, x.var(axis=0, ddof=0), rtol=1e-12)
    assert cache.m == 4


def test_a_batch_of_two_normalizes_to_plus_minus_one():
    out, _ = batchnorm_forward(np.array([[1.0, -3.0], [5.0, 10.0]]), np.ones(2), np.zeros(2), eps=1e-12)
    np.testing.assert_allclose(np.abs(out), 1.0, rtol=1e-9)


def test_gamma_and_beta_can_undo_the_normalization(rng):
    x = channel_batch(rng, (16, 3, 2))
    _, cache = batchnorm_forward(x, np.ones(3), np.zeros(3))
    out, _ = batchnorm_forward(x, cache.std.reshape(-1), cache.batch_mean)
    np.testing.assert_allclose(out, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("rows", [200_000, 1_000_000])
def test_float32_statistics_stay_accurate_far_from_zero(rows):
    """float32 rows offset by 1000: the output must still have mean 0 and std 1 per channel.

    torch 2.13's CPU kernel returns std 0.11 (1 thread) or 0.26 (2 threads) at a million rows.
    """
    rng = np.random.default_rng(7)
    x = (rng.standard_normal((rows, 3)) + 1000.0).astype(np.float32)
    out, _ = batchnorm_forward(x, np.ones(3, np.float32), np.zeros(3, np.float32))
    std = out.astype(np.float64).std(axis=0)
    mean = out.astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(std, 1.0, atol=1e-2)
    np.testing.assert_allclose(mean, 0.0, atol=1e-2)


def test_float32_spatial_statistics_stay_accurate_far_from_zero():
    rng = np.random.default_rng(8)
    x = (rng.standard_normal((500, 2, 20, 20)) * 0.5 + 1e4).astype(np.float32)
    out, _ = batchnorm_forward(x, np.ones(2, np.float32), np.zeros(2, np.float32))
    np.testing.assert_allclose(out.astype(np.float64).std(axis=(0, 2, 3)), 1.0, atol=1e-2)


def test_nothing_modifies_its_inputs(rng):
    x = channel_batch(rng, (5, 3, 2))
    gamma, beta = affine_params(rng, 3)
    dout = rng.standard_normal(x.shape)
    copies = [a.copy() for a in (x, gamma, beta, dout)]
    out, cache = batchnorm_forward(x, gamma, beta)
    cache_xhat = cache.xhat.copy()
    batchnorm_backward(dout, cache)
    batchnorm_backward_fused(dout, cache)
    batchnorm_inference(x, gamma, beta, np.zeros(3), np.ones(3))
    for original, now in zip(copies, (x, gamma, beta, dout)):
        np.testing.assert_array_equal(original, now)
    np.testing.assert_array_equal(cache_xhat, cache.xhat)


def test_parameters_are_cast_to_the_input_dtype(rng):
    x = channel_batch(rng, (4, 3), np.float32)
    out, cache = batchnorm_forward(x, np.ones(3), np.zeros(3))  # float64 gamma, beta
    assert out.dtype == np.float32
    dx, dgamma, dbeta = batchnorm_backward_fused(np.ones_like(x), cache)
    assert dx.dtype == dgamma.dtype == dbeta.dtype == np.float32


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape,num_groups", [((4, 6), 3), ((3, 6, 5), 2), ((2, 4, 3, 3), 4), ((2, 4, 3, 3), 1)])
def test_groupnorm_matches_torch(rng, shape, num_groups, dtype):
    x = channel_batch(rng, shape, dtype)
    gamma, beta = affine_params(rng, shape[1], dtype)
    dout = rng.standard_normal(shape).astype(dtype)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ref = F.group_norm(xt, num_groups, gt, bt, eps=1e-5)
    grads_ref = torch.autograd.grad(ref, (xt, gt, bt), torch.tensor(dout))

    out, cache = groupnorm_forward(x, gamma, beta, num_groups)
    tol = tolerances(dtype)
    np.testing.assert_allclose(out, ref.detach().numpy(), **tol)
    for ours, theirs in zip(groupnorm_backward(dout, cache), grads_ref):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=tol["rtol"], atol=tol["atol"] * 20)


def test_layernorm_matches_torch_layer_norm_on_vectors(rng):
    x = channel_batch(rng, (5, 7))
    gamma, beta = affine_params(rng, 7)
    dout = rng.standard_normal(x.shape)
    xt, gt, bt = (torch.tensor(a, requires_grad=True) for a in (x, gamma, beta))
    ref = F.layer_norm(xt, (7,), gt, bt, eps=1e-5)
    grads_ref = torch.autograd.grad(ref, (xt, gt, bt), torch.tensor(dout))
    out, cache = layernorm_forward(x, gamma, beta)
    np.testing.assert_allclose(out, ref.detach().numpy(), rtol=1e-10, atol=1e-11)
    for ours, theirs in zip(layernorm_backward(dout, cache), grads_ref):
        np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-10)


def test_layernorm_of_one_example_ignores_the_rest_of_the_batch(rng):
    x = channel_batch(rng, (6, 5))
    gamma, beta = affine_params(rng, 5)
    alone, _ = layernorm_forward(x[:1], gamma, beta)
    together, _ = layernorm_forward(x, gamma, beta)
    np.testing.assert_allclose(alone[0], together[0], rtol=1e-13)
