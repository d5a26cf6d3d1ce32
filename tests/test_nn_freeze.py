"""Frozen batch norm: running statistics only, no updates, no trained weight/bias, even after model.train()."""

import copy
import io

import pytest
import torch
from torch import nn

from bnlab.nn import BatchNorm1d, GhostBatchNorm1d, freeze_batchnorm, is_frozen, unfreeze_batchnorm


def make_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 6), BatchNorm1d(6),
                          nn.ReLU(), nn.Linear(6, 6), GhostBatchNorm1d(6, ghost_batch_size=2), nn.Linear(6, 2))
    with torch.no_grad():  # non-trivial statistics before freezing
        for _ in range(3):
            model(torch.randn(8, 4) * 2 + 1)
    return model


def bn_layers(model):
    return [model[1], model[4], model[7]]


def bn_state(model):
    return [{k: v.clone() for k, v in layer.state_dict().items()} for layer in bn_layers(model)]


def test_frozen_model_in_train_mode_behaves_like_eval_and_keeps_its_statistics():
    model = make_model()
    x = torch.randn(8, 4)
    reference = copy.deepcopy(model).eval()
    freeze_batchnorm(model)
    model.train()  # must not unfreeze
    before = bn_state(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, weight_decay=0.1)
    out = model(x)
    torch.testing.assert_close(out, reference(x))
    out.pow(2).sum().backward()
    optimizer.step()
    for layer in bn_layers(model):
        assert is_frozen(layer) and not layer.training
        assert not layer.weight.requires_grad and layer.weight.grad is None and layer.bias.grad is None
    assert model[0].weight.grad is not None  # the rest still trains
    for old, new in zip(before, bn_state(model)):
        assert all(torch.equal(old[k], new[k]) for k in old)  # stats, count, weight, bias unchanged
    model(torch.randn(1, 4))  # a batch of one is fine: no batch statistics


def test_unfreeze_restores_training_behaviour():
    model = make_model()
    freeze_batchnorm(model)
    unfreeze_batchnorm(model.train())
    layer = model[4]
    assert not is_frozen(layer) and layer.training and layer.weight.requires_grad
    count = int(layer.num_batches_tracked)
    model(torch.randn(8, 4))
    assert int(layer.num_batches_tracked) == count + 1


def test_freezing_survives_deepcopy_and_torch_save():
    model = freeze_batchnorm(make_model())
    for clone in (copy.deepcopy(model), _saved_and_loaded(model)):
        clone.train()
        before = bn_state(clone)
        clone(torch.randn(8, 4))
        assert all(not layer.training for layer in bn_layers(clone))
        for old, new in zip(before, bn_state(clone)):
            assert all(torch.equal(old[k], new[k]) for k in old)


def _saved_and_loaded(model):
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=False)


def test_state_dict_is_unchanged_by_freezing():
    model = make_model()
    keys = list(model.state_dict())
    assert list(freeze_batchnorm(model).state_dict()) == keys


def test_layers_without_running_stats_cannot_be_frozen():
    model = nn.Sequential(nn.BatchNorm1d(3), BatchNorm1d(3, track_running_stats=False))
    with pytest.raises(ValueError, match=r"track_running_stats=False: \['1'\]"):
        freeze_batchnorm(model)
    assert not is_frozen(model[0])  # nothing changed


def test_model_without_batch_norm_raises():
    with pytest.raises(ValueError, match="found no batch norm layer in Linear"):
        freeze_batchnorm(nn.Linear(2, 2))
