"""One running-statistics update for every layer, and the other frameworks' conventions as their code runs."""

import os
import sys

import numpy as np
import pytest
import torch

from bnlab.layers import BatchNorm
from bnlab.running_stats import (CONVENTIONS, convention, moving_average, newest_batch_weight, unbiased_variance,
                                 updated_running_stats)

BATCH = np.array([[1.0], [3.0]])  # mean 2, biased variance 1, unbiased variance 2


def test_the_update_matches_torch_and_the_numpy_layer():
    x = np.array([[1.0, -2.0], [3.0, 6.0], [8.0, 1.0]])
    torch_bn = torch.nn.BatchNorm1d(2, momentum=0.3).double()
    torch_bn(torch.tensor(x))
    layer = BatchNorm(2, momentum=0.3)
    layer(x)
    mean, var = updated_running_stats(np.zeros(2), np.ones(2), x.mean(axis=0), x.var(axis=0), 3, 0.3)
    for ours in (mean, layer.running_mean):
        np.testing.assert_allclose(torch_bn.running_mean.numpy(), ours, rtol=1e-15)
    for ours in (var, layer.running_var):
        np.testing.assert_allclose(torch_bn.running_var.numpy(), ours, rtol=1e-15)


def test_the_update_works_on_tensors_too():
    mean, var = updated_running_stats(torch.zeros(1), torch.ones(1), torch.tensor([2.0]), torch.tensor([1.0]), 2,
                                      0.1)
    assert torch.allclose(mean, torch.tensor([0.2])) and torch.allclose(var, torch.tensor([1.1]))


def test_momentum_none_weighs_batch_k_by_one_over_k():
    assert [newest_batch_weight(None, k) for k in (1, 2, 4)] == [1.0, 0.5, 0.25]
    assert newest_batch_weight(0.1, 7) == 0.1
    running = 0.0
    for k, value in enumerate([3.0, 5.0, 10.0], start=1):
        running = moving_average(running, value, newest_batch_weight(None, k))
    assert running == pytest.approx(6.0)


def test_unbiased_variance():
    assert unbiased_variance(1.0, 2) == 2.0 and unbiased_variance(np.array([3.0]), 4) == pytest.approx(4.0)


def test_pytorch_convention_is_what_torch_does():
    torch_bn = torch.nn.BatchNorm1d(1).double()
    torch_bn(torch.tensor(BATCH))
    mean, var = convention("pytorch").update(0.0, 1.0, BATCH)
    assert (mean, var) == pytest.approx((torch_bn.running_mean.item(), torch_bn.running_var.item()))
    assert (mean, var) == pytest.approx((0.2, 1.1))
    assert (torch_bn.momentum, torch_bn.eps) == (CONVENTIONS["pytorch"].momentum, CONVENTIONS["pytorch"].eps)


@pytest.mark.parametrize("name,expected", [("keras", (0.02, 1.0)), ("cs231n", (0.2, 0.1)), ("d2l", (0.2, 1.0))])
def test_one_update_of_the_batch_1_3_in_each_convention(name, expected):
    conv = convention(name)
    mean, var = conv.update(0.0, conv.initial_var, BATCH)
    assert (float(mean[0]), float(var[0])) == pytest.approx(expected)


def test_keras_k_is_pytorch_one_minus_k_apart_from_the_variance_estimator():
    keras, pytorch = convention("keras"), convention("pytorch")
    assert keras.weight_of_new(0.99) == pytest.approx(pytorch.weight_of_new(0.01))
    x = np.random.default_rng(0).standard_normal((64, 3))
    keras_mean, keras_var = keras.update(np.zeros(3), np.ones(3), x, momentum=0.99)
    torch_mean, torch_var = pytorch.update(np.zeros(3), np.ones(3), x, momentum=0.01)
    np.testing.assert_allclose(keras_mean, torch_mean, rtol=1e-12)
    assert np.all(keras_var < torch_var)  # biased (m) vs unbiased (m - 1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # keras' torch backend on numpy 2 (its own code)
def test_keras_model_matches_keras_itself():
    """The Keras row of lecture 5 is bnlab's model of Keras 3's rule; here Keras runs it (torch backend)."""
    if "keras" not in sys.modules:  # the backend is chosen at import; torch is the one the course installs
        os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras", reason="keras is in the test extras: `make test` installs it")
    if keras.backend.backend() != "torch":
        pytest.skip(f"keras already imported with the {keras.backend.backend()} backend")
    conv = convention("keras")
    layer = keras.layers.BatchNormalization()
    assert (layer.momentum, layer.epsilon) == (conv.momentum, conv.eps)
    rng = np.random.default_rng(1)
    mean, var = np.zeros(4), np.full(4, conv.initial_var)
    for n in (2, 5, 16):
        batch = rng.standard_normal((n, 4)) * 3 + 1
        layer(batch.astype("float32"), training=True)
        mean, var = conv.update(mean, var, batch)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_mean), mean, rtol=1e-5)
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.moving_variance), var, rtol=1e-5)
    fresh = keras.layers.BatchNormalization()
    fresh(BATCH.astype("float32"), training=True)
    # biased: the batch {1, 3} has variance 1, so from 1 the moving variance stays 1
    assert float(keras.ops.convert_to_numpy(fresh.moving_variance)[0]) == pytest.approx(1.0)


def test_bad_convention_and_momentum():
    with pytest.raises(ValueError, match="convention must be one of"):
        convention("tf")
    with pytest.raises(ValueError, match="momentum must be a finite number in"):
        convention("keras").update(0.0, 1.0, BATCH, momentum=1.5)


def test_every_convention_names_its_source():
    for conv in CONVENTIONS.values():
        assert conv.momentum_is in ("new", "old") and conv.variance in ("biased", "unbiased")
        assert ".py" in conv.source or ".md" in conv.source
