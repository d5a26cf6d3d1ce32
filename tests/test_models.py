"""bnlab.models: layer order, dropped biases, init, parameter counts, seeding, option errors."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bnlab.models import HiddenLayer, Network, build_cnn, build_mlp



def _ghost_available() -> bool:
    try:
        from bnlab.nn import GhostBatchNorm1d, GhostBatchNorm2d  # noqa: F401
    except ImportError:
        return False
    return True


needs_ghost = pytest.mark.skipif(not _ghost_available(),
                                 reason="bnlab.nn does not export GhostBatchNorm1d/2d yet (written separately)")


def child_names(block: HiddenLayer) -> list[str]:
    return [name for name, _ in block.named_children()]


@pytest.mark.parametrize("norm", ["batch", "layer", "group"])
def test_placement_sets_the_layer_order(norm: str) -> None:
    before = build_mlp(20, 3, depth=2, width=8, norm=norm, placement="before", seed=0)
    after = build_mlp(20, 3, depth=2, width=8, norm=norm, placement="after", seed=0)
    for block in before.hidden_layers:
        assert child_names(block) == ["linear", "norm", "act"]
    for block in after.hidden_layers:
        assert child_names(block) == ["linear", "act", "norm"]
    assert [name for name, _ in before.named_children()] == ["hidden1", "hidden2", "output"]


def test_no_norm_means_linear_then_activation() -> None:
    model = build_mlp(10, 2, depth=3, width=5, activation="tanh", seed=0)
    assert all(child_names(block) == ["linear", "act"] for block in model.hidden_layers)
    assert all(block.norm_layer is None for block in model.hidden_layers)
    assert all(isinstance(block.activation, nn.Tanh) for block in model.hidden_layers)


def test_no_norm_after_the_output_layer() -> None:
    model = build_mlp(10, 4, depth=2, width=6, norm="batch", seed=0)
    last = list(model.children())[-1]
    assert isinstance(last, nn.Linear) and last is model.output_layer and last.out_features == 4
    assert last.bias is not None


@pytest.mark.parametrize("activation, expected", [
    ("sigmoid", nn.Sigmoid), ("tanh", nn.Tanh), ("relu", nn.ReLU), ("linear", nn.Identity)])
def test_activation_modules(activation: str, expected: type) -> None:
    model = build_mlp(10, 2, depth=2, width=4, activation=activation, seed=0)
    assert all(type(block.activation) is expected for block in model.hidden_layers)


def test_bias_dropped_only_where_batch_norm_follows_directly() -> None:
    bn_before = build_mlp(10, 2, depth=2, width=4, norm="batch", placement="before", seed=0)
    bn_after = build_mlp(10, 2, depth=2, width=4, norm="batch", placement="after", seed=0)
    bn_linear_act = build_mlp(10, 2, depth=2, width=4, norm="batch", placement="after", activation="linear",
                              seed=0)
    layer_before = build_mlp(10, 2, depth=2, width=4, norm="layer", placement="before", seed=0)
    plain = build_mlp(10, 2, depth=2, width=4, seed=0)
    assert all(block.weight_layer.bias is None for block in bn_before.hidden_layers)
    assert all(block.weight_layer.bias is None for block in bn_linear_act.hidden_layers)
    assert all(block.weight_layer.bias is not None for block in bn_after.hidden_layers)
    assert all(block.weight_layer.bias is not None for block in layer_before.hidden_layers)
    assert all(block.weight_layer.bias is not None for block in plain.hidden_layers)


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_of_the_papers_mlp() -> None:
    # 784-100-100-100-10: weights 78,400 + 2 x 10,000 + 1,000; output bias 10.
    weights = 784 * 100 + 100 * 100 * 2 + 100 * 10
    assert count(build_mlp(seed=0)) == weights + 3 * 100 + 10
    assert count(build_mlp(norm="batch", seed=0)) == weights + 10 + 3 * 2 * 100  # no hidden biases, gamma/beta
    assert count(build_mlp(norm="batch", placement="after", seed=0)) == weights + 3 * 100 + 10 + 3 * 2 * 100
    assert count(build_mlp(norm="layer", seed=0)) == weights + 3 * 100 + 10 + 3 * 2 * 100


def test_batch_norm_buffers_are_torchs() -> None:
    model = build_mlp(10, 2, depth=1, width=4, norm="batch", seed=0)
    norm = model.hidden_layers[0].norm_layer
    assert isinstance(norm, nn.BatchNorm1d) and norm.num_features == 4 and norm.momentum == 0.1


def test_group_norm_default_and_explicit_groups() -> None:
    assert build_mlp(10, 2, depth=1, width=100, norm="group", seed=0).hidden_layers[0].norm_layer.num_groups == 25
    assert build_mlp(10, 2, depth=1, width=64, norm="group", seed=0).hidden_layers[0].norm_layer.num_groups == 32
    model = build_mlp(10, 2, depth=1, width=12, norm="group", num_groups=3, seed=0)
    assert model.hidden_layers[0].norm_layer.num_groups == 3 and model.spec.num_groups == 3
    with pytest.raises(ValueError, match="num_groups must divide width 12, got 5"):
        build_mlp(10, 2, width=12, norm="group", num_groups=5)
    with pytest.raises(ValueError, match="one feature per group"):
        build_mlp(10, 2, width=12, norm="group", num_groups=12)


def test_gaussian_init_has_the_requested_std_and_zero_biases() -> None:
    model = build_mlp(784, 10, depth=3, width=100, init="gaussian", init_std=0.05, seed=0)
    for _, layer in model.named_weight_layers():
        assert float(layer.weight.detach().std()) == pytest.approx(0.05, rel=0.05)
        assert float(layer.weight.detach().mean()) == pytest.approx(0.0, abs=0.01)
        assert torch.count_nonzero(layer.bias) == 0


def test_he_init_std_is_sqrt_2_over_fan_in() -> None:
    model = build_mlp(400, 10, depth=2, width=200, activation="relu", init="he", seed=0)
    for _, layer in model.named_weight_layers():
        assert float(layer.weight.detach().std()) == pytest.approx(math.sqrt(2 / layer.in_features), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0


def test_default_init_matches_torch_bounds() -> None:
    model = build_mlp(300, 10, depth=1, width=200, seed=0)
    layer = model.hidden_layers[0].weight_layer
    bound = 1 / math.sqrt(300)
    assert float(layer.weight.detach().abs().max()) <= bound
    assert float(layer.weight.detach().std()) == pytest.approx(bound / math.sqrt(3), rel=0.05)  # uniform(-b, b)
    assert float(layer.bias.detach().abs().max()) <= bound and torch.count_nonzero(layer.bias) > 0


def test_same_seed_same_weights_different_seed_different() -> None:
    a, b, c = (build_mlp(20, 3, norm="batch", seed=s) for s in (7, 7, 8))
    for (pa, pb, pc) in zip(a.parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb)
    assert not torch.equal(a.hidden_layers[0].weight_layer.weight, c.hidden_layers[0].weight_layer.weight)


def test_generator_seeding_and_global_rng_untouched() -> None:
    torch.manual_seed(123)
    state = torch.random.get_rng_state()
    a = build_mlp(20, 3, generator=torch.Generator().manual_seed(5))
    b = build_mlp(20, 3, seed=5)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))
    with pytest.raises(ValueError, match="either seed or generator"):
        build_mlp(20, 3, seed=1, generator=torch.Generator())


def test_without_a_seed_the_global_rng_decides() -> None:
    torch.manual_seed(0)
    a = build_mlp(20, 3)
    torch.manual_seed(0)
    b = build_mlp(20, 3)
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


def test_forward_shapes_and_named_weight_layers() -> None:
    model = build_mlp(20, 3, depth=4, width=7, norm="batch", seed=0)
    assert isinstance(model, Network) and model(torch.randn(5, 20)).shape == (5, 3)
    assert [name for name, _ in model.named_weight_layers()] == ["hidden1", "hidden2", "hidden3", "hidden4",
                                                                   "output"]
    assert model.spec.depth == 4 and model.spec.norm == "batch"
    assert build_mlp(20, 3, depth=0, seed=0)(torch.randn(2, 20)).shape == (2, 3)


@pytest.mark.parametrize("norm, norm_type", [
    ("batch", nn.BatchNorm2d), ("layer", nn.GroupNorm), ("group", nn.GroupNorm), ("none", type(None))])
def test_cnn_blocks(norm: str, norm_type: type) -> None:
    model = build_cnn((1, 12, 12), 4, depth=3, width=8, norm=norm, seed=0)
    assert model(torch.randn(6, 1, 12, 12)).shape == (6, 4)
    blocks = model.hidden_layers
    assert len(blocks) == 3
    expected = ["conv", "norm", "act", "pool"] if norm != "none" else ["conv", "act", "pool"]
    assert child_names(blocks[0]) == expected
    assert isinstance(blocks[0].norm_layer, norm_type)
    assert (blocks[0].weight_layer.bias is None) == (norm == "batch")
    # 12 -> 6 -> 3 -> 1 after three pools: the output layer sees 8 channels of 1 x 1.
    assert model.output_layer.in_features == 8
    if norm == "layer":
        assert blocks[0].norm_layer.num_groups == 1


def test_cnn_stops_pooling_at_one_pixel() -> None:
    model = build_cnn((2, 4, 4), 3, depth=4, width=5, seed=0)
    assert ["pool" in child_names(b) for b in model.hidden_layers] == [True, True, False, False]
    assert model(torch.randn(2, 2, 4, 4)).shape == (2, 3)


def test_cnn_placement_after_and_seed() -> None:
    a = build_cnn((1, 8, 8), 2, depth=2, width=4, norm="batch", placement="after", seed=1)
    b = build_cnn((1, 8, 8), 2, depth=2, width=4, norm="batch", placement="after", seed=1)
    assert child_names(a.hidden_layers[0]) == ["conv", "act", "norm", "pool"]
    assert all(torch.equal(pa, pb) for pa, pb in zip(a.parameters(), b.parameters()))


@needs_ghost
def test_ghost_norm_mlp_and_cnn() -> None:
    from bnlab.nn import GhostBatchNorm1d, GhostBatchNorm2d

    mlp = build_mlp(10, 2, depth=2, width=4, norm="ghost", ghost_batch_size=4, seed=0)
    assert all(isinstance(b.norm_layer, GhostBatchNorm1d) for b in mlp.hidden_layers)
    assert all(b.weight_layer.bias is None for b in mlp.hidden_layers)
    assert mlp(torch.randn(8, 10)).shape == (8, 2)
    cnn = build_cnn((1, 8, 8), 2, depth=2, width=4, norm="ghost", ghost_batch_size=2, seed=0)
    assert all(isinstance(b.norm_layer, GhostBatchNorm2d) for b in cnn.hidden_layers)
    assert cnn(torch.randn(4, 1, 8, 8)).shape == (4, 2)


def test_ghost_norm_needs_a_ghost_batch_size() -> None:
    with pytest.raises(ValueError, match="norm='ghost' needs ghost_batch_size"):
        build_mlp(10, 2, norm="ghost")
    with pytest.raises(ValueError, match="ghost_batch_size must be an integer >= 1, got 0"):
        build_mlp(10, 2, norm="ghost", ghost_batch_size=0)


@pytest.mark.parametrize("kwargs, message", [
    ({"activation": "gelu"}, "activation must be one of 'sigmoid', 'tanh', 'relu', 'linear'; got 'gelu'"),
    ({"norm": "batchnorm"}, "norm must be one of 'none', 'batch', 'ghost', 'layer', 'group'; got 'batchnorm'"),
    ({"placement": "inside"}, "placement must be one of 'before', 'after'; got 'inside'"),
    ({"init": "xavier"}, "init must be one of 'default', 'he', 'gaussian'; got 'xavier'"),
    ({"depth": -1}, r"depth \(number of hidden layers\) must be an integer >= 0, got -1"),
    ({"width": 0}, "width must be an integer >= 1, got 0"),
    ({"width": 2.5}, "width must be an integer >= 1, got 2.5"),
    ({"init_std": 0.0}, "init_std must be a finite number in"),
    ({"num_classes": 1}, "num_classes must be an integer >= 2"),
    ({"seed": "zero"}, "seed must be an integer"),
])
def test_bad_options_name_the_allowed_values(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build_mlp(**kwargs)


def test_bad_cnn_options() -> None:
    with pytest.raises(ValueError, match=r"input_shape must be \(C, H, W\)"):
        build_cnn((28, 28))
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        build_cnn(kernel_size=4)

