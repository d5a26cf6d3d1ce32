"""Every bad input gets an error that names what was expected and what came."""

import numpy as np
import pytest

from bnlab.functional import batchnorm_backward, batchnorm_forward, batchnorm_inference, groupnorm_forward
from bnlab.gradcheck import rel_error
from bnlab.layers import BatchNorm

C3 = np.ones(3), np.zeros(3)


@pytest.mark.parametrize("shape", [(), (5,)])
def test_input_with_fewer_than_two_dims(shape):
    with pytest.raises(ValueError, match=rf"\(N, C\).*got shape {re_shape(shape)} \({len(shape)}-D\)"):
        batchnorm_forward(np.zeros(shape), *C3)


def re_shape(shape):
    return str(tuple(shape)).replace("(", r"\(").replace(")", r"\)")


@pytest.mark.parametrize("name,bad", [("gamma", np.ones(4)), ("gamma", np.ones((1, 3))), ("beta", np.zeros(2))])
def test_gamma_or_beta_of_the_wrong_shape(name, bad):
    gamma, beta = C3
    kwargs = {"gamma": gamma, "beta": beta, name: bad}
    with pytest.raises(ValueError, match=rf"{name} must have shape \(3,\).*got shape {re_shape(bad.shape)}"):
        batchnorm_forward(np.zeros((4, 3)), **kwargs)


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 1), (1, 3, 1, 1)])
def test_one_value_per_channel_in_training_uses_pytorchs_message(shape):
    message = rf"Expected more than 1 value per channel when training, got input size {re_shape(shape)}"
    with pytest.raises(ValueError, match=message):
        batchnorm_forward(np.ones(shape), *C3)
    with pytest.raises(ValueError, match=message):
        BatchNorm(3)(np.ones(shape))


def test_a_single_example_with_spatial_positions_is_fine_in_training():
    out, _ = batchnorm_forward(np.arange(12.0).reshape(1, 3, 2, 2), *C3)
    assert out.shape == (1, 3, 2, 2)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_, np.complex128, object])
def test_non_float_input_is_a_type_error(dtype):
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        batchnorm_forward(np.ones((4, 3), dtype=dtype), *C3)
    with pytest.raises(TypeError, match="x must be a floating-point array"):
        BatchNorm(3)(np.ones((4, 3), dtype=dtype))


def test_float16_is_a_type_error_naming_the_supported_dtypes():
    with pytest.raises(TypeError, match="float32 or float64, got dtype float16"):
        batchnorm_forward(np.ones((4, 3), np.float16), *C3)


def test_integer_gamma_is_a_type_error():
    with pytest.raises(TypeError, match="gamma must be a floating-point array"):
        batchnorm_forward(np.zeros((4, 3)), np.ones(3, dtype=int), np.zeros(3))


@pytest.mark.parametrize("eps", [0, 0.0, -1e-5, float("nan"), float("inf"), "1e-5", None, True])
def test_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match=r"eps must be a positive finite number.*got"):
        batchnorm_forward(np.random.default_rng(0).standard_normal((4, 3)), *C3, eps=eps)
    with pytest.raises(ValueError, match="eps must be a positive"):
        batchnorm_inference(np.zeros((4, 3)), *C3, np.zeros(3), np.ones(3), eps=eps)
    with pytest.raises(ValueError, match="eps must be a positive"):
        BatchNorm(3, eps=eps)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, float("nan"), "0.1", True])
def test_momentum_outside_zero_one(momentum):
    with pytest.raises(ValueError, match=r"momentum must be a number in \[0, 1\].*or None.*got"):
        BatchNorm(3, momentum=momentum)


@pytest.mark.parametrize("momentum", [None, 0.0, 1.0, 0.5])
def test_momentum_none_and_the_closed_interval_are_allowed(momentum):
    assert BatchNorm(3, momentum=momentum).momentum == momentum


@pytest.mark.parametrize("num_features", [0, -2, 2.5, "3", None, True])
def test_num_features_must_be_a_positive_integer(num_features):
    with pytest.raises(ValueError, match=r"num_features must be a positive integer.*got"):
        BatchNorm(num_features)


@pytest.mark.parametrize("training", [True, False])
def test_channel_count_that_does_not_match_the_layer(training):
    layer = BatchNorm(3).train(training)
    with pytest.raises(ValueError, match=r"expected input with 3 channels in dimension 1, got 4 \(input shape \(8, 4\)\)"):
        layer(np.zeros((8, 4)))


def test_inference_checks_the_running_statistics():
    x = np.zeros((2, 3))
    with pytest.raises(ValueError, match=r"running_mean must have shape \(3,\)"):
        batchnorm_inference(x, *C3, np.zeros(2), np.ones(3))
    with pytest.raises(ValueError, match="running_var must be non-negative"):
        batchnorm_inference(x, *C3, np.zeros(3), -np.ones(3))


def test_backward_checks_the_upstream_gradient():
    _, cache = batchnorm_forward(np.random.default_rng(0).standard_normal((4, 3)), *C3)
    with pytest.raises(ValueError, match=r"dout must have the shape of the forward's input \(4, 3\), got \(3, 4\)"):
        batchnorm_backward(np.zeros((3, 4)), cache)


def test_groupnorm_needs_a_divisor_of_the_channel_count():
    with pytest.raises(ValueError, match="num_groups must be a positive divisor of the channel count 6, got 4"):
        groupnorm_forward(np.zeros((2, 6)), np.ones(6), np.zeros(6), num_groups=4)


def test_layer_dtype_must_be_float32_or_float64():
    with pytest.raises(TypeError, match="dtype must be float32 or float64"):
        BatchNorm(3, dtype=np.int32)


def test_rel_error_refuses_different_shapes():
    with pytest.raises(ValueError, match=r"same shape, got \(3,\) and \(1, 3\)"):
        rel_error(np.zeros(3), np.zeros((1, 3)))


def test_check_index_counts_from_the_end_and_names_the_range():
    from bnlab._validation import check_index

    assert check_index(-1, "layer", 3) == 2 and check_index(0, "layer", 3) == 0
    for bad in (3, -4, 1.0, True, "0"):
        with pytest.raises(ValueError, match=r"layer must be an integer in \[-3, 2\] \(3 layers\), got"):
            check_index(bad, "layer", 3, " (3 layers)")
