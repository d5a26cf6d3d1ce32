"""The demonstration variants do what the lectures say they do."""

import numpy as np
import pytest

from bnlab.functional import batchnorm_backward, batchnorm_forward
from bnlab.gradcheck import check_forward_backward
from bnlab.variants import (
    backward_with_constant_statistics,
    normalize,
    one_pass_variance,
    output_std_far_from_zero,
    two_pass_variance,
)
from reference import channel_batch


def test_normalize_with_no_switch_is_the_forward_xhat(rng):
    x = channel_batch(rng, (7, 3, 2))
    _, cache = batchnorm_forward(x, np.ones(3), np.zeros(3))
    np.testing.assert_allclose(normalize(x), cache.xhat, rtol=1e-12, atol=1e-12)


def test_unbiased_switch_scales_the_output_by_sqrt_m_minus_one_over_m(rng):
    x = channel_batch(rng, (4, 3))
    ratio = normalize(x, eps=1e-12, unbiased=True) / normalize(x, eps=1e-12)
    np.testing.assert_allclose(ratio, np.sqrt(3 / 4), rtol=1e-9)


def test_eps_outside_the_root_amplifies_a_near_constant_feature():
    x = np.array([[1.0], [1.0 + 1e-4], [1.0 - 1e-4]])
    assert abs(normalize(x)[1, 0]) == pytest.approx(0.0316, abs=1e-3)
    assert abs(normalize(x, eps_inside_sqrt=False)[1, 0]) == pytest.approx(1.091, abs=1e-3)


def test_one_pass_variance_fails_in_float32_far_from_zero_and_two_pass_does_not():
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((10_000, 1)) + 1e4).astype(np.float32)
    exact = x.astype(np.float64).var()
    assert abs(two_pass_variance(x)[0] - exact) / exact < 1e-3
    assert abs(one_pass_variance(x)[0] - exact) / exact > 0.5
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(one_pass_variance(x64[:100] - 1e4), two_pass_variance(x64[:100] - 1e4), rtol=1e-9)


def test_torch_kernel_loses_precision_where_ours_does_not():
    stds = output_std_far_from_zero(rows=1_000_000, offset=1000.0)
    assert abs(stds["bnlab"] - 1.0) < 1e-2
    assert stds["torch CPU kernel"] < 0.5  # torch 2.13 CPU, pinned in pyproject


def test_constant_statistics_backward_is_wrong_by_order_one():
    report = check_forward_backward(batchnorm_forward, backward_with_constant_statistics)
    assert not report.passed and report.errors["dx"] > 0.1
    assert report.errors["dgamma"] < 1e-7 and report.errors["dbeta"] < 1e-7
    assert check_forward_backward(batchnorm_forward, batchnorm_backward).passed


def test_channel_jacobian_matches_its_closed_form_and_finite_differences():
    from bnlab.functional import batchnorm_forward as forward
    from bnlab.gradcheck import numerical_gradient
    from bnlab.jacobian import channel_jacobian

    values, gamma, eps = np.array([1.0, 2.0, 6.0, -3.0]), 1.7, 1e-5
    jac = channel_jacobian(values, gamma, eps)
    m = len(values)
    s = np.sqrt(values.var() + eps)
    xhat = (values - values.mean()) / s
    closed = gamma / (m * s) * (m * np.eye(m) - np.ones((m, m)) - np.outer(xhat, xhat))
    np.testing.assert_allclose(jac, closed, rtol=1e-10, atol=1e-12)
    for i in range(m):
        one_hot = np.zeros((m, 1))
        one_hot[i] = 1
        row = numerical_gradient(lambda v: forward(v, np.array([gamma]), np.zeros(1), eps)[0],
                                 values.reshape(-1, 1).copy(), one_hot)
        np.testing.assert_allclose(jac[i], row[:, 0], rtol=1e-6, atol=1e-8)
