"""Folding an eval-mode batch norm into the preceding Linear / Conv layer."""

import pytest
import torch
from torch import nn

from bnlab.nn import BatchNorm1d, BatchNorm2d, GhostBatchNorm2d, fold_batchnorm, fold_batchnorm_sequential

TOL = {torch.float64: dict(rtol=1e-10, atol=1e-10), torch.float32: dict(rtol=1e-5, atol=1e-5)}


def trained_bn(bn, spatial, seed=0):
    """Give a BN layer non-trivial running statistics and affine parameters."""
    gen = torch.Generator().manual_seed(seed)
    c = bn.num_features
    view = (1, c) + (1,) * len(spatial)
    bn.train()
    with torch.no_grad():
        for _ in range(4):
            x = torch.randn((6, c) + spatial, generator=gen, dtype=torch.float64) * torch.linspace(0.5, 3, c).view(view)
            bn((x + torch.linspace(-2, 2, c).view(view)).to(bn.running_mean.dtype))
        if bn.weight is not None:
            bn.weight.copy_(torch.randn(c, generator=gen))
        if bn.bias is not None:
            bn.bias.copy_(torch.randn(c, generator=gen))
    return bn.eval()


def snapshot(*modules):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layer_bias", [True, False])
@pytest.mark.parametrize("bn_cls", [nn.BatchNorm1d, BatchNorm1d])
@pytest.mark.parametrize("affine", [True, False])
def test_fold_linear(dtype, layer_bias, bn_cls, affine):
    torch.manual_seed(0)
    layer = nn.Linear(5, 4, bias=layer_bias, dtype=dtype)
    bn = trained_bn(bn_cls(4, affine=affine, dtype=dtype), ())
    before = snapshot(layer, bn)
    folded = fold_batchnorm(layer, bn)
    x = torch.randn(7, 5, dtype=dtype)
    torch.testing.assert_close(folded(x), bn(layer(x)), **TOL[dtype])
    assert isinstance(folded, nn.Linear) and folded is not layer and folded.bias is not None
    assert folded.weight.dtype == dtype
    for old, new in zip(before, snapshot(layer, bn)):
        assert all(torch.equal(old[k], new[k]) for k in old)
    assert layer.bias is None or layer_bias


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("layer_bias", [True, False])
@pytest.mark.parametrize("bn_cls", [nn.BatchNorm2d, BatchNorm2d, GhostBatchNorm2d])
def test_fold_conv2d(dtype, layer_bias, bn_cls):
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, kernel_size=3, stride=2, padding=1, groups=2, bias=layer_bias, dtype=dtype)
    bn = bn_cls(6, 2, dtype=dtype) if bn_cls is GhostBatchNorm2d else bn_cls(6, dtype=dtype)
    trained_bn(bn, (3, 3))
    folded = fold_batchnorm(conv, bn)
    x = torch.randn(3, 4, 9, 9, dtype=dtype)
    torch.testing.assert_close(folded(x), bn(conv(x)), **TOL[dtype])
    assert (folded.stride, folded.padding, folded.groups) == ((2, 2), (1, 1), 2)
    assert (conv.bias is not None) == layer_bias


def test_fold_sequential_folds_every_pair_and_recurses():
    torch.manual_seed(2)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3, bias=False), nn.BatchNorm2d(4), nn.ReLU(),
        nn.Sequential(nn.Conv2d(4, 5, 3), BatchNorm2d(5), nn.ReLU()),
        nn.Flatten(), nn.Linear(5 * 4 * 4, 6), BatchNorm1d(6), nn.BatchNorm1d(6, affine=False), nn.Linear(6, 2),
    ).double()
    for module in model.modules():
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, BatchNorm1d, BatchNorm2d)):
            trained_bn(module, (2, 2) if "2d" in type(module).__name__ else ())
    model.eval()
    before = snapshot(model)
    folded = fold_batchnorm_sequential(model)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(folded(x), model(x), rtol=1e-10, atol=1e-10)
    # Linear + BN folded, the second BN (not after a Linear/Conv) kept.
    assert [type(m).__name__ for m in folded] == ["Conv2d", "ReLU", "Sequential", "Flatten", "Linear",
                                                    "BatchNorm1d", "Linear"]
    assert [type(m).__name__ for m in folded[2]] == ["Conv2d", "ReLU"]
    assert list(dict(folded.named_children())) == ["0", "2", "3", "4", "5", "7", "8"]
    assert all(torch.equal(before[0][k], v) for k, v in model.state_dict().items())
    assert not folded.training


def test_fold_errors_name_expected_and_got():
    with pytest.raises(ValueError, match=r"cannot fold BatchNorm1d\(3\) into a Linear with 4 output channels"):
        fold_batchnorm(nn.Linear(2, 4), BatchNorm1d(3))
    with pytest.raises(TypeError, match="folds into nn.Linear or nn.Conv1d/2d/3d, got ConvTranspose2d"):
        fold_batchnorm(nn.ConvTranspose2d(2, 4, 3), nn.BatchNorm2d(4))
    with pytest.raises(TypeError, match="expects a batch norm layer after the Linear, got ReLU"):
        fold_batchnorm(nn.Linear(2, 4), nn.ReLU())
    with pytest.raises(ValueError, match="track_running_stats=False"):
        fold_batchnorm(nn.Linear(2, 4), nn.BatchNorm1d(4, track_running_stats=False))
    with pytest.raises(TypeError, match="expects an nn.Sequential, got Linear"):
        fold_batchnorm_sequential(nn.Linear(2, 2))
