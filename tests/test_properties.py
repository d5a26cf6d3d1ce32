"""Properties batch norm must have whatever the input: checked by hypothesis on generated batches."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from bnlab.functional import batchnorm_backward, batchnorm_backward_fused, batchnorm_forward, batchnorm_inference

SETTINGS = settings(max_examples=60, deadline=None)


@st.composite
def batches(draw, min_n: int = 2):
    """A float64 batch (N, C) or (N, C, L) with per-channel offsets and scales, plus gamma, beta, dout."""
    n = draw(st.integers(min_n, 9))
    c = draw(st.integers(1, 4))
    spatial = draw(st.sampled_from([(), (1,), (3,), (2, 2)]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    shape = (n, c) + spatial
    channel = (1, c) + (1,) * len(spatial)
    offset = draw(st.sampled_from([0.0, 3.0, -50.0]))
    # Standardize each channel's draws first, so its spread is exactly the drawn scale: a channel that happens
    # to be nearly constant is a conditioning problem (rounding against eps), not a property of batch norm.
    z = rng.standard_normal(shape)
    axes = (0,) + tuple(range(2, len(shape)))
    spread = z.std(axis=axes, keepdims=True)
    z = np.where(spread > 0, (z - z.mean(axis=axes, keepdims=True)) / np.where(spread > 0, spread, 1.0), z)
    x = z * rng.uniform(0.1, 10.0, channel) + offset * rng.uniform(0.5, 1.5, channel)
    gamma = rng.uniform(-2.0, 2.0, c)
    beta = rng.standard_normal(c)
    dout = rng.standard_normal(shape)
    return x, gamma, beta, dout


@SETTINGS
@given(batches())
def test_per_channel_sum_of_dx_vanishes(batch):
    x, gamma, beta, dout = batch
    _, cache = batchnorm_forward(x, gamma, beta)
    axes = (0,) + tuple(range(2, x.ndim))
    for backward in (batchnorm_backward, batchnorm_backward_fused):
        dx, _, _ = backward(dout, cache)
        # Rounding is relative to the terms that cancel, gamma * inv * dout, not to dx (which can be ~0).
        scale = np.abs(gamma) * cache.inv.reshape(-1) * np.abs(dout).sum(axis=axes)
        assert np.all(np.abs(dx.sum(axis=axes)) <= 1e-12 * scale + 1e-300)


@SETTINGS
@given(batches())
def test_per_channel_sum_of_dx_times_xhat_is_zero_up_to_the_eps_term(batch):
    """sum(dx * xhat) = gamma * inv * dgamma * eps / (var + eps): exactly zero only in the limit eps -> 0.

    eps breaks the scale invariance of xhat, so the second invariant of the closed form holds only where
    the variance dwarfs eps.
    """
    x, gamma, beta, dout = batch
    _, cache = batchnorm_forward(x, gamma, beta)
    axes = (0,) + tuple(range(2, x.ndim))
    for backward in (batchnorm_backward, batchnorm_backward_fused):
        dx, dgamma, _ = backward(dout, cache)
        var, inv = cache.batch_var, cache.inv.reshape(-1)
        expected = gamma * inv * dgamma * cache.eps / (var + cache.eps)
        scale = np.abs(gamma) * inv * np.abs(dout * cache.xhat).sum(axis=axes)
        assert np.all(np.abs((dx * cache.xhat).sum(axis=axes) - expected) <= 1e-12 * scale + 1e-300)


@SETTINGS
@given(batches(), st.floats(-100, 100), st.floats(0.01, 100))
def test_output_is_invariant_to_shifting_and_positively_scaling_x(batch, shift, scale):
    """BN(a*x + b) with eps * a**2 equals BN(x) with eps, exactly; eps itself is the only scale BN has."""
    x, gamma, beta, _ = batch
    eps = 1e-5
    out, cache = batchnorm_forward(x, gamma, beta, eps=eps)
    out_moved, _ = batchnorm_forward(x * scale + shift, gamma, beta, eps=eps * scale**2)
    # Rounding of the shifted, scaled input relative to the spread it must resolve.
    conditioning = (abs(shift) + scale * np.abs(x).max()) / (scale * cache.std.min())
    np.testing.assert_allclose(out_moved, out, rtol=1e-9,
                               atol=1e-14 * conditioning * (1 + np.abs(gamma).max()) + 1e-12)


@SETTINGS
@given(batches(), st.integers(0, 2**32 - 1))
def test_permuting_the_batch_permutes_output_and_dx(batch, seed):
    x, gamma, beta, dout = batch
    perm = np.random.default_rng(seed).permutation(x.shape[0])
    out, cache = batchnorm_forward(x, gamma, beta)
    dx, dgamma, dbeta = batchnorm_backward_fused(dout, cache)
    out_p, cache_p = batchnorm_forward(x[perm], gamma, beta)
    dx_p, dgamma_p, dbeta_p = batchnorm_backward_fused(dout[perm], cache_p)
    np.testing.assert_allclose(out_p, out[perm], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dx_p, dx[perm], rtol=1e-8, atol=1e-10 * (1 + np.abs(dx).max()))
    np.testing.assert_allclose(dgamma_p, dgamma, rtol=1e-8, atol=1e-9)
    np.testing.assert_allclose(dbeta_p, dbeta, rtol=1e-8, atol=1e-9)


@SETTINGS
@given(batches(min_n=1), st.integers(0, 2**32 - 1))
def test_eval_output_of_one_example_ignores_the_rest_of_the_batch(batch, seed):
    x, gamma, beta, _ = batch
    rng = np.random.default_rng(seed)
    c = x.shape[1]
    running_mean, running_var = rng.standard_normal(c), rng.uniform(0.01, 4.0, c)
    alone = batchnorm_inference(x[:1], gamma, beta, running_mean, running_var)
    others = rng.standard_normal((5,) + x.shape[1:]) * 100
    together = batchnorm_inference(np.concatenate([x[:1], others]), gamma, beta, running_mean, running_var)
    np.testing.assert_array_equal(alone[0], together[0])
