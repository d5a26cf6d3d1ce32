"""Lecture 9's numbers (bnlab.lessons.learning_rate), computed from the shipped learning-rate and weight-decay
runs, inside the brackets the lecture prints; the numbers its prose states; and its figures."""

import math

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bnlab.experiments import (
    GRID_LEARNING_RATES,
    LearningRateConfig,
    OneStepConfig,
    SeedRuns,
    learning_rate_sweep,
    one_step_sweep,
    weight_decay_sweep,
)
from bnlab.experiments._runs import train_mlp
from bnlab.lessons.learning_rate import (
    _init_batch,
    border_ratio,
    dead_below_last,
    divergence_updates,
    effective_lr,
    effective_lr_at_end,
    first_updates,
    fixed_norm_runs,
    gradient_scale_ratios,
    gradient_weight_cosines,
    largest_normalized,
    last_layer_dead,
    layer_effective_lr,
    layer_norms,
    learning_rate_border,
    median_unit_norm,
    norm_drift,
    norm_growth,
    one_step_crossing,
    one_step_separation,
    weight_decay_effective_lr,
)
from bnlab.plots.learning_rate import (
    _effective_rates,
    plot_dead_units,
    plot_effective_lr,
    plot_lr_sweep,
    plot_one_step_ratio,
    plot_weight_decay,
)


@pytest.fixture(scope="module")
def sweep():
    return learning_rate_sweep(cached_only=True)


@pytest.fixture(scope="module")
def bn(sweep):
    return sweep["BN"]


@pytest.fixture(scope="module")
def plain(sweep):
    return sweep["no BN"]


@pytest.fixture(scope="module")
def ratios():
    """The lecture's one-step sweep: both nets, He init, every grid rate, three seeds (about 3 s)."""
    return one_step_sweep({"no BN": OneStepConfig(norm="none", init="he"),
                           "BN": OneStepConfig(norm="batch", init="he")}, learning_rates=GRID_LEARNING_RATES)


@pytest.fixture(scope="module")
def replayed():
    return {lr: first_updates(lr, updates=20) for lr in (1.778, 10.0)}


@pytest.fixture(scope="module")
def decay():
    return weight_decay_sweep(cached_only=True)


def fake_runs(finals, diverged_at=None) -> SeedRuns:
    diverged_at = diverged_at or [math.nan] * len(finals)
    arrays = tuple({"final_accuracy": np.float64(a), "diverged_at": np.float64(d)}
                   for a, d in zip(finals, diverged_at))
    return SeedRuns(seeds=tuple(range(len(finals))), arrays=arrays)


# ------------------------------------------------------------------------------------------------ the border


def test_border_is_the_last_rate_where_every_seed_trains_and_the_next_one():
    by_lr = {0.1: fake_runs([0.9, 0.9]), 0.3: fake_runs([0.9, 0.4]), 1.0: fake_runs([math.nan, 0.9], [3, math.nan])}
    assert learning_rate_border(by_lr) == (0.1, 0.3)
    assert learning_rate_border({1.0: by_lr[1.0]})[1] == 1.0 and math.isnan(learning_rate_border({1.0: by_lr[1.0]})[0])
    assert math.isnan(learning_rate_border({0.1: by_lr[0.1]})[1])


def test_the_borders_and_their_ratio(plain, bn):
    assert learning_rate_border(plain) == (0.1778, 0.3162)
    assert learning_rate_border(bn) == (3.162, 5.623)
    ratio, lowest, highest = border_ratio(plain, bn)
    assert ratio == pytest.approx(17.78, abs=0.01)
    assert lowest == pytest.approx(10.0, abs=0.01) and highest == pytest.approx(31.62, abs=0.01)
    assert np.all(bn[5.623].final_accuracies() < 0.5)
    assert all(runs.num_diverged() == 0 for runs in bn.values())                 # "BN never diverges"
    assert plain[0.3162].num_diverged() == 3


def test_the_plain_net_diverges_at_update_2_to_4_at_every_rate_past_its_border(plain):
    at = divergence_updates(plain)
    assert at.size == 21 and at.min() == 2 and at.max() == 4  # the lecture prints "(latest: 4 (< 5))"
    assert all(plain[lr].num_diverged() == 3 for lr in plain if lr >= 0.3162)
    assert all(plain[lr].num_diverged() == 0 for lr in plain if lr < 0.3162)


def test_bn_is_slower_at_the_smallest_rate_and_catches_up_at_about_twice_it(plain, bn):
    assert np.all(bn[0.01].final_accuracies() < 0.88)
    assert np.all(plain[0.01].final_accuracies() > 0.88)
    assert np.all(bn[0.01778].final_accuracies() > 0.88)
    assert 0.008 <= effective_lr_at_end({0.01778: bn[0.01778]}, layers=slice(1, None))[0.01778] <= 0.0095
    for acc in (bn[0.01778].final_accuracies(), plain[0.01].final_accuracies()):   # "0.89-0.91" both
        assert np.all((acc >= 0.885) & (acc < 0.915))


# ------------------------------------------------------------------------------------------------ one step


def test_one_step_crossings_and_separation(ratios, plain, bn):
    assert one_step_crossing(ratios["no BN"]) == (0.1, 0.1778)
    assert one_step_crossing(ratios["BN"]) == (1.0, 1.778)
    for label, by_lr in (("no BN", plain), ("BN", bn)):
        below, above = one_step_crossing(ratios[label])
        assert max(ratios[label][below]) < 1 < min(ratios[label][above])
        trained, failed = one_step_separation(ratios[label], by_lr)
        assert failed / trained > 1
    assert one_step_separation(ratios["no BN"], plain) == pytest.approx((1.34, 2.85), abs=0.01)
    assert one_step_separation(ratios["BN"], bn) == pytest.approx((2.02, 2.76), abs=0.01)


def test_one_step_numbers_the_prose_states(ratios):
    assert 2.8 < min(ratios["no BN"][0.3162]) and max(ratios["no BN"][0.3162]) < 6.25       # "2.9 to 6.2"
    bn_small = [r for lr, seeds in ratios["BN"].items() if lr <= 1.0 for r in seeds]
    assert 0.765 < min(bn_small) and max(bn_small) < 0.985                                    # "0.77 and 0.98"
    assert 1.95 < max(ratios["BN"][3.162]) < 2.05                                             # "up to 2.0x"


def test_one_step_crossing_without_a_crossing():
    assert one_step_crossing({0.1: [0.5], 1.0: [0.9]})[0] == 1.0
    assert math.isnan(one_step_crossing({0.1: [0.5], 1.0: [0.9]})[1])
    assert math.isnan(one_step_crossing({0.1: [2.0]})[0]) and one_step_crossing({0.1: [2.0]})[1] == 0.1


def test_the_one_step_ratio_is_the_first_update_of_the_shipped_runs(plain, bn):
    """Same weights and same first minibatch: the loss before the step is the shipped runs' first loss."""
    for norm, by_lr in (("none", plain), ("batch", bn)):
        first, _ = train_mlp(seed=1, steps=1, batch_size=64, lr=0.1, record_every=1, progress=False, depth=10,
                             width=100, activation="relu", norm=norm, init="he")
        assert first.train_loss[0] == pytest.approx(by_lr[0.1].values("train_loss")[1, 0], rel=1e-5)


# ------------------------------------------------------------------------------------------------ scale invariance


def test_a_bn_units_gradient_is_orthogonal_to_its_weights_and_a_plain_units_is_not():
    bn_cos = [gradient_weight_cosines("batch", seed) for seed in (0, 1, 2)]
    plain_cos = [gradient_weight_cosines("none", seed) for seed in (0, 1, 2)]
    assert max(c.max() for c in bn_cos) < 1e-4
    assert all(c.size == 1000 for c in bn_cos)
    medians = [np.median(c) for c in plain_cos]
    assert all(m > 0.01 for m in medians) and 0.035 < min(medians) and max(medians) < 0.055  # "0.04-0.05"
    assert max(c.max() for c in bn_cos) < 1e-5                                              # "below 1e-5"


def test_doubling_a_layer_halves_a_bn_units_gradient():
    bn_ratios = [gradient_scale_ratios("batch", seed) for seed in (0, 1, 2)]
    plain_ratios = [gradient_scale_ratios("none", seed) for seed in (0, 1, 2)]
    assert all(r.size == 1000 for r in bn_ratios)
    assert all(0.49 <= np.median(r) <= 0.51 and abs(np.median(r) - 0.5) < 1e-5 for r in bn_ratios)  # "0.5000"
    within = [int(np.sum(np.abs(r - 0.5) < 1e-4)) for r in bn_ratios]
    assert all(n > 850 for n in within) and within[0] == within[2] == 1000
    # "in one layer of one seed most units are off, by up to 1%": seed 1, layer 6
    off = np.abs(bn_ratios[1] - 0.5).reshape(10, 100) >= 1e-4
    assert off.any(axis=1).tolist() == [i == 5 for i in range(10)] and off[5].mean() > 0.5
    assert 0.005 < np.abs(bn_ratios[1] - 0.5).max() / 0.5 < 0.025
    medians = [np.median(r) for r in plain_ratios]
    assert all(1.0 <= m <= 1.5 for m in medians)                                              # "1.09-1.37"
    assert min(medians) == pytest.approx(1.09, abs=0.005) and max(medians) == pytest.approx(1.37, abs=0.005)


def test_the_one_percent_in_seed_1_is_one_relu_input_crossing_its_kink():
    """Doubling layer 6 of seed 1 moves exactly one ReLU input, about 1e-7 from zero, to the other side."""
    model, x, _ = _init_batch("batch", 1, 64)
    model, x = model.double(), x.double()
    inputs: dict[int, torch.Tensor] = {}
    hooks = [block.activation.register_forward_hook(
        lambda module, args, out, index=index: inputs.__setitem__(index, args[0].detach().clone()))
        for index, block in enumerate(model.hidden_layers)]
    try:
        with torch.no_grad():
            model(x)
            before = dict(inputs)
            model.hidden_layers[5].weight_layer.weight.mul_(2)
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    flipped = torch.cat([((before[i] > 0) != (inputs[i] > 0)).flatten() for i in range(10)])
    values = torch.cat([before[i].flatten() for i in range(10)])
    assert int(flipped.sum()) == 1
    assert 5e-8 < float(values[flipped].abs()) < 5e-7


def test_weight_norms_at_the_smallest_rate_stay_at_he_init(bn):
    assert 1.38 <= median_unit_norm(bn[0.01], record=0) <= 1.45
    assert np.all((layer_norms(bn[0.01]) >= 1.395) & (layer_norms(bn[0.01]) <= 1.435))     # "1.40-1.43"
    assert 0.004 <= effective_lr_at_end({0.01: bn[0.01]})[0.01] <= 0.006


def test_weight_norms_at_bns_border_grow_at_once(bn):
    early, late = layer_norms(bn[3.162], record=1), layer_norms(bn[3.162])
    assert 4 <= early[0] <= 6 and np.all((early[1:] >= 1.5) & (early[1:] <= 2.5))
    assert 4 <= late[0] <= 6 and np.all((late[1:] >= 1.5) & (late[1:] <= 3))
    assert early[0] == pytest.approx(4.81, abs=0.005) and early[1] == pytest.approx(2.27, abs=0.005)
    assert early[-1] == pytest.approx(1.60, abs=0.005)
    assert 8 <= norm_growth(bn[3.162]) <= 16
    assert 12 <= layer_norms(bn[10.0], record=1)[0] <= 17
    assert layer_norms(bn[10.0])[0] == pytest.approx(layer_norms(bn[10.0], record=1)[0], rel=0.01)  # "then stays"


def test_layer_1_tunes_its_own_effective_rate(bn):
    ends = effective_lr_at_end({lr: runs for lr, runs in bn.items() if 0.5 < lr < 4})
    assert sorted(ends) == [0.5623, 1.0, 1.778, 3.162]
    assert max(ends.values()) / min(ends.values()) < 2
    assert 0.105 < min(ends.values()) and max(ends.values()) < 0.175                           # "0.11 and 0.17"
    assert ends[1.0] == pytest.approx(0.17, abs=0.005) and ends[3.162] == pytest.approx(0.11, abs=0.005)  # falls
    deeper = effective_lr_at_end({lr: bn[lr] for lr in (0.5623, 1.0, 1.778, 3.162)}, layers=slice(1, None))
    assert list(deeper.values()) == sorted(deeper.values())                         # layers 2-10 still rising


def test_the_deeper_layers_effective_rates_at_bns_border_stay_high(bn):
    after_50 = layer_effective_lr(bn[3.162], 3.162, record=1)[1:]
    assert np.all((after_50 >= 0.5) & (after_50 <= 1.3))                               # "0.6-1.2", all > 0.5
    assert after_50.min() == pytest.approx(0.61, abs=0.005) and after_50.max() == pytest.approx(1.24, abs=0.005)
    start = layer_effective_lr(bn[1.778], 1.778, record=0)
    assert np.all((start >= 0.85) & (start <= 0.95))                                           # "0.89"
    assert int(np.sum(after_50 > 0.89)) == 6                                                  # "six of the nine"
    assert layer_effective_lr(bn[1.0], 1.0, record=0).max() < 0.52                           # "eta = 1: 0.5"


def test_effective_rates_are_one_quantity_for_the_lessons_and_the_figures(bn):
    """The figures draw layer 1 and the mean over layers 2..L of each layer's median unit's lr/||w||^2: the
    values effective_lr_at_end returns."""
    for lr in (0.01, 1.0, 3.162):
        first, deeper = _effective_rates(bn[lr], lr)
        assert np.allclose(first[:, -1].mean(), effective_lr_at_end({lr: bn[lr]})[lr])
        assert np.allclose(deeper[:, -1].mean(), effective_lr_at_end({lr: bn[lr]}, layers=slice(1, None))[lr])
        assert np.allclose(effective_lr(bn[lr], lr)[:, 0], lr / bn[lr].values("unit_weight_norms")[:, 0, :, 1] ** 2)


def test_with_the_norms_held_fixed_bn_still_trains_at_its_border(bn):
    held = fixed_norm_runs(3.162)
    assert norm_drift(held) < 1e-5 and norm_drift(bn[3.162]) > 1                        # the control holds them
    accuracy, shipped = held.final_accuracies(), bn[3.162].final_accuracies()
    assert held.num_diverged() == 0 and np.all(accuracy > 0.5)
    assert np.all((last_layer_dead(held) >= 0.4) & (last_layer_dead(held) <= 0.85))
    drop = shipped - accuracy
    assert np.all((drop > 0.065) & (drop < 0.195))                                       # "by 0.07 to 0.19"
    assert np.all(last_layer_dead(held) > last_layer_dead(bn[3.162]))                     # "more ... dies"


# ------------------------------------------------------------------------------------------------ dead last layer


def test_first_updates_replay_the_shipped_runs(bn):
    result, _ = train_mlp(seed=0, steps=50, batch_size=64, lr=3.162, record_every=50, progress=False,
                          depth=10, width=100, activation="relu", **LearningRateConfig(norm="batch").model_options())
    shipped = bn[3.162].values("unit_weight_norms")[0, 1]
    assert np.allclose(result.unit_weight_norms[-1][:-1], shipped, rtol=1e-5)


def test_a_huge_step_kills_the_last_layer_through_beta(replayed):
    calm, huge = replayed[1.778], replayed[10.0]
    assert calm.dead.shape == (3, 20)
    assert np.all(calm.dead[:, -1] < 0.05) and np.all((calm.beta[:, -1] >= -0.5) & (calm.beta[:, -1] <= 0))
    assert np.all(calm.beta[:, -1] > -0.25)                                                  # "a quarter at most"
    assert np.all(calm.dead == 0)
    assert np.all(huge.dead[:, -1] > 0.7) and np.all(huge.beta[:, -1] < -1)
    assert np.all(huge.bound_dead[:, -1] > 0.1)
    assert np.all(huge.bound_dead[:, :-1] <= huge.dead[:, 1:])  # dead for certain after u: dead in update u + 1
    # prose: after two updates beta between -0.9 and -2.2; update 3 about half dead, from update 4 >= 3/4
    assert np.all((huge.beta[:, 1] < -0.9) & (huge.beta[:, 1] > -2.2))
    assert np.all((huge.dead[:, 2] > 0.4) & (huge.dead[:, 2] < 0.6)) and np.all(huge.dead[:, 3:] >= 0.75)


def test_normalized_values_reach_far_below_their_bound():
    typical, low, high = largest_normalized(m=64)
    assert 2.2 <= typical <= 2.5 and 1.7 < low < 1.95 and 2.95 < high < 3.2 < math.sqrt(63)
    x = np.random.default_rng(1).standard_normal((1000, 8))
    z = (x - x.mean(axis=1, keepdims=True)) / x.std(axis=1, keepdims=True)
    assert z.max() <= math.sqrt(7) + 1e-12
    edge = np.array([1.0] + [0.0] * 7)                          # all but one equal: the bound is reached
    assert (edge - edge.mean()).max() / edge.std() == pytest.approx(math.sqrt(7))


def test_after_600_updates_the_last_layer_is_dead_past_bns_border(bn):
    assert np.all(last_layer_dead(bn[1.778]) < 0.05)
    assert np.all(last_layer_dead(bn[1.778]) == 0)
    assert np.all((last_layer_dead(bn[3.162]) >= 0.3) & (last_layer_dead(bn[3.162]) <= 0.6))
    assert np.all(last_layer_dead(bn[5.623]) > 0.95) and np.all(last_layer_dead(bn[10.0]) > 0.95)
    assert np.all(last_layer_dead(bn[5.623]) >= 0.975)                                       # "98-100%"
    loss = {lr: bn[lr].values("train_loss")[:, -1] for lr in (5.623, 10.0)}
    assert np.all((loss[5.623] >= 1.5) & (loss[5.623] <= 2.5)) and np.all((loss[10.0] >= 2.2) & (loss[10.0] <= 2.5))
    assert np.all(loss[10.0] > math.log(10))                                        # "a little above ln 10"
    assert np.all(bn[10.0].final_accuracies() < 0.15)
    assert np.all((bn[3.162].final_accuracies() > 0.845) & (bn[3.162].final_accuracies() < 0.935))  # "0.85-0.93"
    below = dead_below_last(bn[10.0])
    assert np.all((below >= 0.2) & (below <= 0.6))
    assert below.min() == pytest.approx(0.25, abs=0.01) and below.max() == pytest.approx(0.57, abs=0.005)
    assert all(np.all(bn[lr].values("dead_units") == 0) for lr in bn if lr <= 1.778)


# ------------------------------------------------------------------------------------------------ weight decay


def test_weight_decay_shrinks_the_norms_and_raises_the_effective_rate(decay):
    assert 0.55 <= median_unit_norm(decay[0.0], record=0) <= 0.6
    brackets = {0.0: (0.55, 0.65), 5e-4: (0.45, 0.55), 2e-3: (0.28, 0.38), 5e-3: (0.14, 0.22)}
    for wd, (low, high) in brackets.items():
        assert low <= median_unit_norm(decay[wd]) <= high
    assert median_unit_norm(decay[0.0]) > median_unit_norm(decay[0.0], record=0)              # "0.58 to 0.59"
    norms = decay[5e-3].values("unit_weight_norm")[:, :, 1:].mean(axis=2)
    assert np.all(norms[:, -1] < norms[:, -5])                                               # still falling
    ratio = weight_decay_effective_lr(decay[5e-3]) / weight_decay_effective_lr(decay[0.0])
    assert 8 <= ratio <= 16
    for wd in (0.0, 5e-3):
        assert np.all((decay[wd].final_accuracies() >= 0.93) & (decay[wd].final_accuracies() <= 0.97))


# ------------------------------------------------------------------------------------------------ figures


def test_the_figures_draw_the_shipped_runs(sweep, bn, ratios, replayed, decay):
    borders = {label: learning_rate_border(by_lr) for label, by_lr in sweep.items()}
    figures = [
        plot_lr_sweep(sweep, selected=3.162, max_stable={k: b[0] for k, b in borders.items()}),
        plot_lr_sweep({"no BN": sweep["no BN"]}, selected=10.0),            # nothing but diverged seeds
        plot_lr_sweep(sweep, selected=None, pinned=("depth 3, he init", sweep)),
        plot_effective_lr(bn, shown=(0.01, 1.0, 10.0)),
        plot_effective_lr(bn),
        plot_dead_units(list(replayed.values()), {lr: bn[lr] for lr in replayed}),
        plot_one_step_ratio(ratios, borders=borders),
        plot_one_step_ratio({"no BN": {0.1: [0.5, math.inf], 1.0: [50.0, 1e9]}}),
        plot_weight_decay(decay, selected=5e-3, pinned=("weight decay 0", decay[0.0])),
    ]
    first_seed = {label: {**by_lr, 0.1334: SeedRuns(seeds=(0,), arrays=by_lr[0.1778].arrays[:1])}
                  for label, by_lr in sweep.items()}          # a live run's first stage: one seed among three
    figures.append(plot_lr_sweep(first_seed, selected=0.1334))
    assert all(isinstance(f, Figure) for f in figures)
    loss_panel = figures[1].axes[1]
    assert any("3 of 3 seeds diverged" in t.get_text() for t in loss_panel.texts)
    assert any("not shown" in t.get_text() for t in figures[1].axes[2].texts)
    legend = [t.get_text() for t in figures[-2].legends[0].get_texts()]
    assert "pinned: weight decay 0" in legend
    import matplotlib.pyplot as plt
    for fig in figures:
        plt.close(fig)


def test_the_sweep_figure_tells_pinned_nets_apart_and_keeps_one_rate_readable(sweep, bn):
    import matplotlib.pyplot as plt

    pinned = plot_lr_sweep(sweep, selected=0.1, pinned=("depth 3, he init", sweep))
    handles, labels = pinned.axes[0].get_legend_handles_labels()
    styles = {label: (h.get_linestyle(), h.get_marker(), h.get_color()) for h, label in zip(handles, labels)}
    no_bn, with_bn = styles["pinned: depth 3, he init, no BN"], styles["pinned: depth 3, he init, BN"]
    assert no_bn[2] == with_bn[2] == "black"
    assert no_bn[0] != with_bn[0] and no_bn[1] != with_bn[1]
    legend = [t.get_text() for t in pinned.legends[0].get_texts()]
    assert "pinned: depth 3, he init, no BN" in legend and "pinned: depth 3, he init, BN" in legend

    # one rate (a live setting): the axis still spans the slider's range, so a 5% jitter stays small
    single = plot_lr_sweep({"no BN": {0.2371: sweep["no BN"][0.1778]}}, selected=0.2371)
    low, high = single.axes[0].get_xlim()
    assert low <= 0.01 and high >= 10
    eff_ax = single.axes[2]  # no BN net shown: no axis pretending to be a log scale
    assert list(eff_ax.get_xticks()) == [] and list(eff_ax.get_yticks()) == []
    assert "(log)" not in eff_ax.get_ylabel()

    effective = plot_effective_lr(bn, shown=(0.01, 1.0))
    legend = [t.get_text() for t in effective.legends[0].get_texts()]
    assert "layers 2-10 (mean)" in legend and not any("2-L" in text for text in legend)
    for fig in (pinned, single, effective):
        plt.close(fig)
