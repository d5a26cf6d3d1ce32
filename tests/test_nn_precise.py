"""Precise BN: running statistics recomputed as equal-weight averages over batches."""

import copy

import pytest
import torch
from torch import nn

from bnlab.nn import BatchNorm1d, GhostBatchNorm1d, freeze_batchnorm, recompute_batchnorm_statistics


def make_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.BatchNorm1d(4, momentum=0.01), nn.ReLU(),
                          nn.Linear(4, 3), BatchNorm1d(3, momentum=0.3)).double()
    return model


def make_batches(sizes=(6, 3, 9, 4)):
    gen = torch.Generator().manual_seed(1)
    return [torch.randn(n, 5, generator=gen, dtype=torch.float64) * 2 + 1 for n in sizes]


def expected_stats(model, batches):
    """Each BN layer's input per batch (train-mode copy of the model), averaged with equal weights."""
    reference = copy.deepcopy(model).train()
    captured = {0: [], 1: []}
    layers = [m for m in reference if isinstance(m, (nn.BatchNorm1d, BatchNorm1d))]
    for index, layer in enumerate(layers):
        layer.register_forward_hook(lambda module, args, out, index=index: captured[index].append(args[0].detach()))
    with torch.no_grad():
        for x in batches:
            reference(x)
    return [(torch.stack([z.mean(0) for z in inputs]).mean(0), torch.stack([z.var(0) for z in inputs]).mean(0))
            for inputs in captured.values()]


def bn_layers(model):
    return [model[1], model[4]]


def test_statistics_are_equal_weight_averages_of_batch_means_and_unbiased_variances():
    model = make_model()
    batches = make_batches()
    expected = expected_stats(model, batches)
    assert recompute_batchnorm_statistics(model, batches) == len(batches)
    for layer, (mean, var) in zip(bn_layers(model), expected):
        torch.testing.assert_close(layer.running_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(layer.running_var, var, rtol=1e-10, atol=1e-12)


def test_modes_momentum_and_counts_are_restored():
    model = make_model()
    model.eval()
    model[1].train()  # mixed modes must come back exactly
    for layer in bn_layers(model):
        layer.num_batches_tracked.fill_(7)
    params = {k: v.clone() for k, v in model.named_parameters()}
    recompute_batchnorm_statistics(model, make_batches())
    assert [m.training for m in model] == [False, True, False, False, False] and not model.training
    assert (model[1].momentum, model[4].momentum) == (0.01, 0.3)
    assert all(int(layer.num_batches_tracked) == 7 for layer in bn_layers(model))
    for name, value in model.named_parameters():
        assert torch.equal(value, params[name])


def test_num_batches_takes_a_prefix_and_tuple_batches_use_their_first_item():
    model = make_model()
    batches = make_batches()
    expected = expected_stats(model, batches[:2])
    pairs = iter([(x, torch.zeros(len(x))) for x in batches])
    assert recompute_batchnorm_statistics(model, pairs, num_batches=2) == 2
    torch.testing.assert_close(model[1].running_mean, expected[0][0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(model[4].running_var, expected[1][1], rtol=1e-10, atol=1e-12)


def test_too_few_batches_raises_and_restores_the_old_statistics():
    model = make_model()
    before = [(layer.running_mean.clone(), layer.running_var.clone()) for layer in bn_layers(model)]
    with pytest.raises(ValueError, match="expected 5 batches, got only 4"):
        recompute_batchnorm_statistics(model, make_batches(), num_batches=5)
    with pytest.raises(ValueError, match="at least one batch, got none"):
        recompute_batchnorm_statistics(model, [])
    for layer, (mean, var) in zip(bn_layers(model), before):
        assert torch.equal(layer.running_mean, mean) and torch.equal(layer.running_var, var)
    assert model.training and model[1].momentum == 0.01


def test_bad_batch_restores_state_and_propagates_the_error():
    model = make_model()
    before = model[1].running_mean.clone()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        recompute_batchnorm_statistics(model, [torch.randn(4, 5, dtype=torch.float64),
                                               torch.randn(1, 5, dtype=torch.float64)])
    assert torch.equal(model[1].running_mean, before)


def test_frozen_layers_are_left_alone():
    model = make_model()
    freeze_batchnorm(nn.Sequential(model[1]))
    before = model[1].running_mean.clone()
    recompute_batchnorm_statistics(model, make_batches())
    assert torch.equal(model[1].running_mean, before)
    assert not torch.equal(model[4].running_mean, torch.zeros(3))


def test_ghost_layers_average_their_ghost_batches():
    layer = GhostBatchNorm1d(2, ghost_batch_size=2, dtype=torch.float64)
    batches = [torch.randn(4, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    recompute_batchnorm_statistics(layer, batches)
    chunks = [c for x in batches for c in x.split(2)]
    torch.testing.assert_close(layer.running_mean, torch.stack([c.mean(0) for c in chunks]).mean(0))
    torch.testing.assert_close(layer.running_var, torch.stack([c.var(0) for c in chunks]).mean(0))


@pytest.mark.parametrize("num_batches", [0, -1, 1.5])
def test_bad_num_batches_raises(num_batches):
    with pytest.raises(ValueError, match="num_batches must be a positive integer or None"):
        recompute_batchnorm_statistics(make_model(), make_batches(), num_batches=num_batches)


def test_model_without_batch_norm_raises():
    with pytest.raises(ValueError, match="found no batch norm layer"):
        recompute_batchnorm_statistics(nn.Linear(3, 3), [torch.randn(2, 3)])
