import numpy as np
import pytest
import torch

from bnlab.layers import BatchNorm
from bnlab.running_stats import ema_update, pytorch_momentum


def test_pytorch_convention_matches_torch_and_the_numpy_layer():
    x = np.array([[1.0, -2.0], [3.0, 6.0], [8.0, 1.0]])
    torch_bn = torch.nn.BatchNorm1d(2, momentum=0.3).double()
    torch_bn(torch.tensor(x))
    layer = BatchNorm(2, momentum=0.3)
    layer(x)
    expected_mean = ema_update(np.zeros(2), x.mean(axis=0), 0.3)
    expected_var = ema_update(np.ones(2), x.var(axis=0, ddof=1), 0.3)
    np.testing.assert_allclose(torch_bn.running_mean.numpy(), expected_mean, rtol=1e-12)
    np.testing.assert_allclose(torch_bn.running_var.numpy(), expected_var, rtol=1e-12)
    np.testing.assert_allclose(layer.running_var, expected_var, rtol=1e-12)


def test_keras_momentum_k_is_pytorch_momentum_one_minus_k():
    running, batch = np.array([0.5, -1.0]), np.array([2.0, 4.0])
    assert pytorch_momentum(0.99) == pytest.approx(0.01)
    np.testing.assert_allclose(ema_update(running, batch, 0.99, "keras"), ema_update(running, batch, 0.01),
                               rtol=1e-12)
    np.testing.assert_allclose(ema_update(0.0, 2.0, 0.99, "keras"), 0.02)


@pytest.mark.parametrize("kwargs,match", [({"convention": "tf"}, "convention"), ({"momentum": 1.5}, "momentum")])
def test_bad_arguments(kwargs, match):
    args = {"running": 0.0, "batch_stat": 1.0, "momentum": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        ema_update(**args)
