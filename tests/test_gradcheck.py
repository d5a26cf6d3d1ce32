"""The gradient check catches wrong backwards; the weak checks it replaces do not."""

import numpy as np
import pytest

from bnlab.functional import (
    batchnorm_backward,
    batchnorm_backward_fused,
    batchnorm_forward,
    groupnorm_backward,
    groupnorm_forward,
    layernorm_backward,
    layernorm_forward,
)
from bnlab.gradcheck import check_forward_backward, numerical_gradient, rel_error


def test_rel_error_is_scale_relative_and_symmetric():
    a = np.array([1.0, -2.0, 4.0])
    assert rel_error(a, a) == 0.0
    assert rel_error(np.zeros(3), np.zeros(3)) == 0.0
    assert rel_error(a, a + np.array([0.0, 0.0, 4e-7])) == pytest.approx(1e-7)
    assert rel_error(a, 2 * a) == rel_error(2 * a, a) == pytest.approx(0.5)
    assert rel_error(a, np.array([1.0, np.nan, 4.0])) == float("inf")
    assert rel_error(np.array([np.inf, 0.0, 0.0]), a) == float("inf")


def test_numerical_gradient_of_a_known_function_and_x_is_restored(rng):
    x = rng.standard_normal((3, 4))
    dout = rng.standard_normal((3, 4))
    before = x.copy()
    grad = numerical_gradient(lambda v: v**3, x, dout)
    np.testing.assert_allclose(grad, 3 * before**2 * dout, rtol=1e-8, atol=1e-9)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("backward", [batchnorm_backward, batchnorm_backward_fused])
@pytest.mark.parametrize("shape", [(6, 4), (3, 3, 4), (2, 3, 2, 2)])
def test_correct_batchnorm_backwards_pass(backward, shape):
    report = check_forward_backward(batchnorm_forward, backward, shape)
    assert report.passed, str(report)
    assert max(report.errors.values()) < 1e-7
    assert "PASSED" in str(report)


def test_correct_layer_and_group_norm_backwards_pass():
    assert check_forward_backward(layernorm_forward, layernorm_backward, (4, 6)).passed
    group = check_forward_backward(lambda x, g, b: groupnorm_forward(x, g, b, 2),
                                   groupnorm_backward, (3, 4, 3))
    assert group.passed, str(group)


def backward_mean_and_var_as_constants(dout, cache):
    """A classic mistake: differentiate only through xhat = (x - mu) * inv, holding mu and inv fixed."""
    _, dgamma, dbeta = batchnorm_backward_fused(dout, cache)
    return dout * cache.gamma * cache.inv, dgamma, dbeta


def backward_returning_zeros(dout, cache):
    _, dgamma, dbeta = batchnorm_backward_fused(dout, cache)
    return np.zeros_like(dout), dgamma, dbeta


def backward_dgamma_not_summed(dout, cache):
    dx, _, dbeta = batchnorm_backward_fused(dout, cache)
    return dx, dout * cache.xhat, dbeta


def backward_missing_gamma(dout, cache):
    dx, dgamma, dbeta = batchnorm_backward_fused(dout, cache)
    return dx / np.where(cache.gamma == 0, 1.0, cache.gamma), dgamma, dbeta


@pytest.mark.parametrize("wrong", [backward_mean_and_var_as_constants, backward_returning_zeros,
                                   backward_dgamma_not_summed, backward_missing_gamma])
def test_wrong_backwards_fail(wrong):
    report = check_forward_backward(batchnorm_forward, wrong)
    assert not report.passed
    assert "FAILED" in str(report)


def test_mean_and_var_as_constants_is_off_by_order_one():
    report = check_forward_backward(batchnorm_forward, backward_mean_and_var_as_constants)
    assert report.errors["dx"] > 0.1


def test_an_all_ones_upstream_gradient_proves_nothing(rng):
    """With dout = 1 the true dx is zero, so a backward that returns zeros agrees with finite differences."""
    x = rng.standard_normal((6, 3)) * 2 + 1
    gamma, beta = np.array([1.5, -0.5, 2.0]), np.array([0.1, 0.2, 0.3])
    ones = np.ones_like(x)
    numeric = numerical_gradient(lambda v: batchnorm_forward(v, gamma, beta)[0], x, ones)
    assert np.abs(numeric).max() < 1e-8
    _, cache = batchnorm_forward(x, gamma, beta)
    zeros_dx, _, _ = backward_returning_zeros(ones, cache)
    wrong_dx, _, _ = backward_mean_and_var_as_constants(ones, cache)
    assert np.abs(zeros_dx - numeric).max() < 1e-8  # the "check" passes a broken backward
    assert rel_error(wrong_dx, numeric) > 0.5  # only some mistakes show, and by luck


def test_float32_finite_differences_are_too_noisy_to_judge(rng):
    x = rng.standard_normal((6, 3)) + 3
    gamma, beta = np.array([1.5, -0.5, 2.0]), np.array([0.1, 0.2, 0.3])
    dout = rng.standard_normal(x.shape)
    _, cache = batchnorm_forward(x, gamma, beta)
    exact, _, _ = batchnorm_backward(dout, cache)
    numeric64 = numerical_gradient(lambda v: batchnorm_forward(v, gamma, beta)[0], x.copy(), dout)
    x32 = x.astype(np.float32)
    numeric32 = numerical_gradient(lambda v: batchnorm_forward(v, gamma.astype(np.float32),
                                                               beta.astype(np.float32))[0], x32, dout)
    assert rel_error(exact, numeric64) < 1e-8
    assert rel_error(exact, numeric32) > 1e-3


def test_wrong_gradient_shapes_are_reported():
    report = check_forward_backward(batchnorm_forward, backward_dgamma_not_summed)
    assert any("dgamma has shape" in problem for problem in report.problems)
