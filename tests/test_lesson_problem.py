"""Lecture 1's computations (bnlab.lessons.problem) and figures (bnlab.plots.training)."""

import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from torch import nn  # noqa: E402

from bnlab.data import synthetic_data  # noqa: E402
from bnlab.lessons.problem import (  # noqa: E402
    UnitRecord,
    accuracy_at,
    batchnorm_moments,
    default_init_std,
    percentile_range,
    preactivation_spread,
    train_recording_units,
)
from bnlab.models import build_mlp  # noqa: E402
from bnlab.plots.training import (  # noqa: E402
    plot_accuracy_panels,
    plot_gradient_norms,
    plot_layer_percentiles,
    plot_preactivation_spread,
    plot_test_accuracy,
    plot_unit_percentiles,
)
from bnlab.train import train  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


@pytest.fixture(scope="module")
def data():
    return synthetic_data(num_train=240, num_test=120, num_classes=3, num_features=8, seed=1)


@pytest.fixture(scope="module")
def runs(data):
    """Two short runs (seeds 0 and 1) of a small sigmoid MLP, recorded at steps 0, 5, 10, 20."""
    out = []
    for seed in (0, 1):
        model = build_mlp(8, 3, depth=2, width=6, activation="sigmoid", seed=seed)
        out.append(train(model, data, steps=20, batch_size=30, lr=0.5, record_steps=(0, 5, 10, 20), seed=seed,
                         progress=False, tracked_unit=2))
    return out


# ------------------------------------------------------------------------------------------- default init


def test_default_init_std_is_one_over_sqrt_three_fan_in():
    assert default_init_std(100) == pytest.approx(1 / math.sqrt(300))
    assert default_init_std(784) == pytest.approx(1 / math.sqrt(3 * 784))


def test_default_init_std_matches_torch_linear_and_bnlab_default_init():
    torch.manual_seed(0)
    weight = nn.Linear(400, 500).weight.detach()  # torch's own reset_parameters
    assert weight.std().item() == pytest.approx(default_init_std(400), rel=0.02)
    model = build_mlp(100, 10, depth=2, width=400, seed=0)
    assert model.hidden2.linear.weight.detach().std().item() == pytest.approx(default_init_std(400), rel=0.02)
    assert model.hidden2.linear.weight.detach().std().item() < 0.8 / math.sqrt(400)  # not 1/sqrt(fan_in)


@pytest.mark.parametrize("bad", [0, -3, 2.5, "100", True])
def test_default_init_std_rejects_bad_fan_in(bad):
    with pytest.raises(ValueError, match="fan_in"):
        default_init_std(bad)


# ------------------------------------------------------------------------------------ preactivation spread


def _hand_preactivations(model, x):
    """The sigmoid inputs of each hidden layer of a plain (no-norm) MLP, computed layer by layer by hand."""
    zs, h = [], x
    for block in model.hidden_layers:
        z = h @ block.linear.weight.T + block.linear.bias
        zs.append(z)
        h = torch.sigmoid(z)
    return zs


def test_preactivation_spread_matches_a_hand_computation():
    model = build_mlp(7, 3, depth=3, width=5, activation="sigmoid", seed=3)
    x = torch.randn(50, 7, generator=torch.Generator().manual_seed(0))
    within, between = preactivation_spread(model, x)
    assert within.shape == between.shape == (3,)
    with torch.no_grad():
        zs = [z.double().numpy() for z in _hand_preactivations(model, x)]
    for layer, z in enumerate(zs):
        assert within[layer] == pytest.approx(np.sqrt(z.var(axis=0).mean()), rel=1e-6)
        assert between[layer] == pytest.approx(z.mean(axis=0).std(), rel=1e-6)
        # the two parts add up (in variance) to the spread of all values pooled
        assert within[layer] ** 2 + between[layer] ** 2 == pytest.approx(z.var(), rel=1e-9)


def test_preactivation_spread_of_the_deep_default_net_shrinks_about_sevenfold_per_layer():
    """Lecture 1's claim on a random input: sqrt(100) * 1/sqrt(300) * sigmoid'(z) ~ 1/7 per layer."""
    model = build_mlp(100, 10, depth=4, width=100, activation="sigmoid", seed=0)
    x = torch.randn(500, 100, generator=torch.Generator().manual_seed(1))
    within, between = preactivation_spread(model, x)
    ratios = within[:-1] / within[1:]
    assert np.all((ratios > 5) & (ratios < 10)), ratios
    # from layer 2 on, sigmoid outputs of mean ~0.5 give each unit an offset of std ~sqrt(100 * 0.25 / 300) = 0.29
    assert np.all((between[1:] > 0.15) & (between[1:] < 0.6)), between


def test_preactivation_spread_restores_the_mode_and_leaves_batchnorm_statistics_alone():
    model = build_mlp(6, 2, depth=2, width=4, norm="batch", seed=0)
    before = model.hidden1.norm.running_mean.clone()
    model.train()
    preactivation_spread(model, torch.randn(10, 6))
    assert model.training
    assert torch.equal(model.hidden1.norm.running_mean, before)  # eval mode: no running-stat update


@pytest.mark.parametrize("func", [preactivation_spread, batchnorm_moments])
def test_lesson_functions_reject_bad_models_and_inputs(func):
    model = build_mlp(6, 2, depth=1, width=4, norm="batch", seed=0)
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        func(model, torch.randn(5, 7))
    with pytest.raises(ValueError, match=r"shape \(N, 6\)"):
        func(model, np.zeros((5, 6)))
    with pytest.raises(ValueError, match="at least 2 examples"):
        func(model, torch.randn(1, 6))
    with pytest.raises(TypeError, match="build_mlp"):
        func(nn.Linear(6, 2), torch.randn(5, 6))


# ---------------------------------------------------------------------------------------- batchnorm moments


def test_batchnorm_moments_give_the_output_mean_beta_and_std_gamma():
    """The output: mean beta, std |gamma| sqrt(var/(var + eps)) (x_hat has mean 0, variance var/(var + eps))."""
    model = build_mlp(6, 3, depth=2, width=5, activation="sigmoid", norm="batch", seed=0)
    with torch.no_grad():  # trained-looking parameters, one gamma negative and one tiny
        model.hidden1.norm.weight.copy_(torch.tensor([1.5, -0.7, 2.0, 1e-3, 1.0]))
        model.hidden1.norm.bias.copy_(torch.tensor([0.3, -1.0, 0.0, 2.0, -0.2]))
        model.hidden2.norm.eps = 0.5  # a large eps makes the sqrt(var/(var + eps)) factor visible
    x = torch.randn(40, 6, generator=torch.Generator().manual_seed(2))
    moments = batchnorm_moments(model, x)
    assert len(moments) == 2
    for layer in moments:
        eps = 0.5 if layer is moments[1] else 1e-5
        shrink = layer.batch_var / (layer.batch_var + eps)
        np.testing.assert_allclose(layer.out_mean, layer.beta, atol=1e-5)
        np.testing.assert_allclose(layer.out_std, np.abs(layer.gamma) * np.sqrt(shrink), rtol=1e-4, atol=1e-7)
    assert np.all(moments[1].batch_var / (moments[1].batch_var + 0.5) < 0.99)  # eps = 0.5 is not negligible
    np.testing.assert_allclose(moments[0].gamma, [1.5, -0.7, 2.0, 1e-3, 1.0], rtol=1e-6)


def test_batchnorm_moments_use_a_copy_in_training_mode():
    model = build_mlp(6, 3, depth=2, width=5, norm="batch", seed=0).eval()
    running = [layer.norm.running_var.clone() for layer in model.hidden_layers]
    moments = batchnorm_moments(model, torch.randn(20, 6) * 3 + 1)
    assert not model.training
    for layer, before in zip(model.hidden_layers, running):
        assert torch.equal(layer.norm.running_var, before)
        assert layer.norm.num_batches_tracked.item() == 0
    # batch statistics, not the running ones (mean 0, variance 1): the output is standardized on the batch itself
    np.testing.assert_allclose(moments[0].out_std, 1.0, atol=1e-3)
    np.testing.assert_allclose(moments[0].out_mean, 0.0, atol=1e-5)


def test_batchnorm_moments_of_a_model_without_batchnorm_is_empty():
    assert batchnorm_moments(build_mlp(6, 2, depth=2, width=4, seed=0), torch.randn(8, 6)) == []


# --------------------------------------------------------------------------------- reading recorded runs


def test_accuracy_at_reads_each_seed_at_a_recorded_step(runs):
    np.testing.assert_array_equal(accuracy_at(runs, 10), [runs[0].test_accuracy[2], runs[1].test_accuracy[2]])
    assert accuracy_at(runs[:1], 0).shape == (1,)


def test_accuracy_at_rejects_unrecorded_steps_and_single_runs(runs):
    with pytest.raises(ValueError, match=r"step 7 was not recorded; recorded steps are \[0, 5, 10, 20\]"):
        accuracy_at(runs, 7)
    with pytest.raises(ValueError, match="sequence of TrainResult"):
        accuracy_at(runs[0], 10)
    with pytest.raises(ValueError, match="sequence of TrainResult"):
        accuracy_at([], 10)
    with pytest.raises(ValueError, match="step"):
        accuracy_at(runs, -5)


def test_percentile_range_of_the_pooled_band(runs):
    run = runs[0]
    low, _, high = run.percentiles[3, 1]
    assert percentile_range(run, 20, 1) == pytest.approx(high - low)
    assert percentile_range(run, 20, -1) == pytest.approx(high - low)


@pytest.mark.parametrize("layer", [2, -3, 1.0, True])
def test_percentile_range_rejects_layers_the_run_does_not_have(runs, layer):
    with pytest.raises(ValueError, match=r"layer must be an integer in \[-2, 1\]"):
        percentile_range(runs[0], 5, layer)


def test_percentile_range_rejects_unrecorded_steps(runs):
    with pytest.raises(ValueError, match="not recorded"):
        percentile_range(runs[0], 3, 0)


# ------------------------------------------------------------------------------------ recording every unit

RECORDED = dict(steps=20, batch_size=30, lr=0.5, record_steps=(0, 1, 5, 20), seed=3, progress=False)


@pytest.fixture(scope="module")
def recorded(data):
    """(model, result, record) of a small sigmoid MLP with and without batch norm, trained with the recorder."""
    out = {}
    for norm in ("none", "batch"):
        model = build_mlp(8, 3, depth=2, width=6, activation="sigmoid", norm=norm, seed=0)
        result, record = train_recording_units(model, data, tracked_unit=4, **RECORDED)
        out[norm] = (model, result, record)
    return out


def _sigmoid_inputs(model, x, training):
    """Each hidden layer's sigmoid inputs (N, C), from a hand-written forward with batch or running statistics."""
    zs, h = [], x
    for block in model.hidden_layers:
        u = block.linear(h)
        if hasattr(block, "norm") and isinstance(block.norm, nn.BatchNorm1d):
            norm = block.norm
            if training:
                mean, var = u.mean(dim=0), u.var(dim=0, unbiased=False)
            else:
                mean, var = norm.running_mean, norm.running_var
            u = (u - mean) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias
        zs.append(u.double())
        h = torch.sigmoid(u)
    return zs


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_recording_units_leaves_the_training_run_unchanged(data, recorded, norm):
    model, result, _ = recorded[norm]
    twin = build_mlp(8, 3, depth=2, width=6, activation="sigmoid", norm=norm, seed=0)
    alone = train(twin, data, tracked_unit=4, **RECORDED)
    for name in ("test_accuracy", "test_loss", "train_loss", "percentiles", "unit_percentiles", "grad_norms"):
        np.testing.assert_array_equal(getattr(result, name), getattr(alone, name), err_msg=name)
    for mine, theirs in zip(model.state_dict().values(), twin.state_dict().values()):
        assert torch.equal(mine, theirs)  # running statistics included: the probe never touched them


@pytest.mark.parametrize("norm", ["none", "batch"])
def test_recorded_shapes_and_running_mode_matches_the_tracked_unit(recorded, norm):
    _, result, record = recorded[norm]
    assert isinstance(record, UnitRecord)
    np.testing.assert_array_equal(record.steps, [0, 1, 5, 20])
    assert record.per_unit.shape == record.per_unit_running.shape == (4, 2, 6, 3)
    assert record.percentiles.shape == (4, 2, 3)
    # eval mode, unit 4: what train itself recorded for its tracked unit
    np.testing.assert_allclose(record.per_unit_running[:, :, 4], result.unit_percentiles, rtol=1e-5, atol=1e-6)


def test_without_batchnorm_the_two_modes_agree(recorded):
    _, result, record = recorded["none"]
    np.testing.assert_allclose(record.per_unit, record.per_unit_running, rtol=1e-12)
    np.testing.assert_allclose(record.percentiles, result.percentiles, rtol=1e-5, atol=1e-6)


def test_training_mode_uses_the_test_batch_statistics(data, recorded):
    """The last record, recomputed by hand from the trained model: batch statistics vs running statistics."""
    model, _, record = recorded["batch"]
    x = data.as_vectors().x_test
    with torch.no_grad():
        for training, values in ((True, record.per_unit), (False, record.per_unit_running)):
            for layer, z in enumerate(_sigmoid_inputs(model, x, training)):
                expected = np.percentile(z.numpy(), (15, 50, 85), axis=0).T
                np.testing.assert_allclose(values[-1, layer], expected, rtol=1e-5, atol=1e-6)
                if training:
                    pooled = np.percentile(z.numpy().ravel(), (15, 50, 85))
                    np.testing.assert_allclose(record.percentiles[-1, layer], pooled, rtol=1e-5, atol=1e-6)
    # at step 0 (gamma 1, beta 0) every unit is standardized over the batch; the running statistics (0, 1) are not
    assert np.all(record.ranges(0)[0] > 0.8)
    assert not np.allclose(record.per_unit[0], record.per_unit_running[0], atol=1e-3)


def test_recording_units_needs_one_evaluation_pass_per_record(data):
    model = build_mlp(8, 3, depth=1, width=4, seed=0)
    with pytest.raises(ValueError, match="eval_batch_size >= the 120 test examples"):
        train_recording_units(model, data, steps=2, eval_batch_size=50, progress=False)
    with pytest.raises(TypeError, match="build_mlp"):
        train_recording_units(nn.Linear(8, 3), data, steps=2, progress=False)


def _record(ranges_by_step):
    """A UnitRecord with one layer whose units have the given 15-85 ranges (K, C), medians 0."""
    ranges = np.asarray(ranges_by_step, dtype=float)
    per_unit = np.stack([-ranges / 2, np.zeros_like(ranges), ranges / 2], axis=-1)[:, None]  # (K, 1, C, 3)
    return UnitRecord(steps=np.arange(ranges.shape[0]) * 10, per_unit=per_unit, per_unit_running=per_unit / 2,
                      percentiles=np.zeros((ranges.shape[0], 1, 3)))


def test_unit_record_ranges_growth_and_typical_unit():
    record = _record([[1.0, 1.0, 2.0, 1.0, 0.5], [3.0, 10.0, 4.0, 1.5, 2.0]])  # growth 3, 10, 2, 1.5, 4
    np.testing.assert_allclose(record.ranges(), [[1, 1, 2, 1, 0.5], [3, 10, 4, 1.5, 2]])
    np.testing.assert_allclose(record.ranges(running=True), record.ranges() / 2)
    np.testing.assert_allclose(record.growth(0, 10), [3, 10, 2, 1.5, 4])
    assert record.typical_unit(0, 10) == 0  # the median growth, 3
    even = _record([[1.0, 1.0, 1.0, 1.0], [2.0, 5.0, 3.0, 4.0]])  # growth 2, 5, 3, 4: the lower middle one
    assert even.typical_unit(0, 10) == 2
    with pytest.raises(ValueError, match="step 5 was not recorded"):
        record.growth(0, 5)
    with pytest.raises(ValueError, match=r"layer must be an integer in \[-1, 0\]"):
        record.ranges(1)


def test_percentile_range_reads_a_unit_record_pooled(recorded):
    _, _, record = recorded["batch"]
    low, _, high = record.percentiles[2, 1]
    assert percentile_range(record, 5, -1) == pytest.approx(high - low)


def test_unit_steps_keep_every_unit_at_those_steps_only(data, recorded):
    """The kept records equal the full recorder's at the same steps; the training run itself is unchanged."""
    _, full_result, full = recorded["batch"]
    model = build_mlp(8, 3, depth=2, width=6, activation="sigmoid", norm="batch", seed=0)
    result, record = train_recording_units(model, data, tracked_unit=4, unit_steps=(20, 1), **RECORDED)
    np.testing.assert_array_equal(record.steps, [1, 20])
    for name in ("per_unit", "per_unit_running", "percentiles"):
        np.testing.assert_array_equal(getattr(record, name), getattr(full, name)[[1, 3]], err_msg=name)
    np.testing.assert_array_equal(result.test_accuracy, full_result.test_accuracy)
    np.testing.assert_allclose(record.growth(1, 20), full.growth(1, 20))


@pytest.mark.parametrize("unit_steps", [(), (2,), (0, 21), ("a",)])
def test_unit_steps_must_be_recorded_steps(data, unit_steps):
    model = build_mlp(8, 3, depth=1, width=4, seed=0)
    with pytest.raises(ValueError, match="unit_steps"):
        train_recording_units(model, data, unit_steps=unit_steps, **RECORDED)


# ------------------------------------------------------------------------------------------------- figures


def test_plot_layer_percentiles_says_it_pools_units(runs):
    fig = plot_layer_percentiles(runs[0], "title", ylim=(-3, 3))
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2
    assert "pooled" in fig.axes[0].get_ylabel()
    assert fig.axes[0].get_ylim() == (-3, 3)


def test_plot_unit_percentiles_one_panel_per_run_on_the_tracked_unit(runs):
    fig = plot_unit_percentiles({"a": runs[0], "b": runs[1]}, layer=-1)
    assert len(fig.axes) == 2
    assert "hidden layer 2, unit 2" in fig.axes[0].get_title()
    lines = [line for line in fig.axes[0].lines if line.get_label().endswith("percentile")]
    assert len(lines) == 3
    np.testing.assert_allclose(lines[1].get_ydata(), runs[0].unit_percentiles[:, 1, 1])
    first = plot_unit_percentiles({"a": runs[0]}, layer=0)
    assert "hidden layer 1" in first.axes[0].get_title()


def test_plot_unit_percentiles_draws_a_chosen_unit_of_a_unit_record(recorded):
    _, result, record = recorded["batch"]
    fig = plot_unit_percentiles({"record": record, "result": result}, units={"record": 3}, ylim=(-4, 4))
    assert "hidden layer 2, unit 3" in fig.axes[0].get_title()
    assert "hidden layer 2, unit 4" in fig.axes[1].get_title()  # a TrainResult shows its tracked unit
    lines = [line for line in fig.axes[0].lines if line.get_label().endswith("percentile")]
    np.testing.assert_allclose(lines[1].get_ydata(), record.per_unit[:, 1, 3, 1])
    for units in (None, {"record": 6}, {"record": -1}, {"record": True}):
        with pytest.raises(ValueError, match=r"units\['record'\] must name a unit in \[0, 5\]"):
            plot_unit_percentiles({"record": record}, units=units)


def test_plot_layer_percentiles_accepts_a_unit_record(recorded):
    _, _, record = recorded["batch"]
    fig = plot_layer_percentiles(record, "title")
    assert len(fig.axes) == 2
    np.testing.assert_allclose(fig.axes[1].lines[0].get_ydata(), record.percentiles[:, 1, 1])  # the median


@pytest.mark.parametrize("layer", [2, -3, "last"])
def test_plot_unit_percentiles_rejects_bad_layers(runs, layer):
    with pytest.raises(ValueError, match="layer must be an integer"):
        plot_unit_percentiles({"a": runs[0]}, layer=layer)


def test_plot_unit_percentiles_needs_a_run():
    with pytest.raises(ValueError, match="at least one"):
        plot_unit_percentiles({})


def test_plot_test_accuracy_draws_every_seed_with_one_legend_entry(runs):
    fig = plot_test_accuracy({"one": runs[0], "seeds": runs})
    ax = fig.axes[0]
    data_lines = [line for line in ax.lines if len(line.get_xdata()) == len(runs[0].steps)]
    assert len(data_lines) == 3
    labels = [text.get_text() for text in ax.get_legend().get_texts()]
    assert labels == ["one (seed 0)", "seeds (seeds 0, 1)"]
    assert data_lines[1].get_color() == data_lines[2].get_color()
    assert {line.get_marker() for line in data_lines} == {"o"}  # every line alike, one seed or several


def test_plot_accuracy_panels_keep_each_label_in_one_colour(runs):
    fig = plot_accuracy_panels({"first": {"no BN": runs[0], "BN": runs}, "second": {"no BN": runs[1]}},
                               title="title")
    assert [ax.get_title() for ax in fig.axes] == ["first", "second"]
    first = [line for line in fig.axes[0].lines if len(line.get_xdata()) == len(runs[0].steps)]
    second = [line for line in fig.axes[1].lines if len(line.get_xdata()) == len(runs[0].steps)]
    assert len(first) == 3 and len(second) == 1
    assert first[0].get_color() == second[0].get_color() != first[1].get_color()
    np.testing.assert_allclose(second[0].get_ydata(), runs[1].test_accuracy)
    with pytest.raises(ValueError, match="non-empty"):
        plot_accuracy_panels({"empty": {}})
    with pytest.raises(ValueError, match="no runs"):
        plot_accuracy_panels({"a": {"no BN": []}})


def test_plot_gradient_norms_draws_bars_and_a_legend_only_for_several_runs(runs):
    fig = plot_gradient_norms({"a": runs[0]})
    assert len(fig.axes[0].patches) == len(runs[0].layer_names)
    assert fig.axes[0].get_legend() is None
    both = plot_gradient_norms({"a": runs[0], "b": runs[1]})
    assert [text.get_text() for text in both.axes[0].get_legend().get_texts()] == ["a", "b"]


def test_plot_preactivation_spread(runs):
    fig = plot_preactivation_spread(np.array([1.0, 0.1, 0.01]), np.array([0.3, 0.3, 0.3]))
    assert fig.axes[0].get_yscale() == "log"
    assert len(fig.axes[0].lines) == 2
    with pytest.raises(ValueError, match="same length"):
        plot_preactivation_spread(np.ones(3), np.ones(2))
