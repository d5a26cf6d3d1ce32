"""Lecture 10 (the paper's figure 1): the experiment and its probe, the shipped grid, the numbers the notebook
prints (with its brackets), the figures and the dashboard."""

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bnlab.experiments import EXPERIMENTS, SeedRuns, _cache, run
from bnlab.experiments._runs import train_mlp
from bnlab.experiments.figure1 import (
    GRID_INIT_STDS,
    GRID_LEARNING_RATES,
    LONG_RECORD_EVERY,
    LONG_STEPS,
    Figure1Config,
    SigmoidInputProbe,
    early_predictions,
    figure1_runs,
    figure1_sweep,
    hidden_inputs,
    init_gradient_norms,
    init_signal_spread,
    saturated_fractions,
    typical_unit,
    unit_movements,
)
from bnlab.lessons.figure1 import (
    IMAGENET_RECIPE_CHANGES,
    IMAGENET_TABLE,
    accuracy_at_update,
    accuracy_gap,
    first_update_reaching,
    gap_table,
    imagenet_table_markdown,
    layer_gradient_ratios,
    median_drift,
    median_movement,
    movement_table,
    predicted_saturation,
    predicted_shrink,
    speedup,
    typical_span,
    unit_range,
    updates_text,
    with_scalar,
)
from bnlab.models import build_mlp
from bnlab.plots.figure1 import (
    plot_at_init,
    plot_figure1,
    plot_gap_grid,
    plot_init_sweep,
)
from bnlab.widgets import Figure1Dashboard

TINY = Figure1Config(steps=12, record_every=6)


@pytest.fixture(scope="module")
def sweep():
    return figure1_sweep(cached_only=True)


@pytest.fixture(scope="module")
def default():
    return figure1_runs(Figure1Config(), cached_only=True)


@pytest.fixture(scope="module")
def long():
    return figure1_runs(Figure1Config(steps=LONG_STEPS, record_every=LONG_RECORD_EVERY), cached_only=True)


def inside(values, low=None, high=None) -> bool:
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    if low is not None:
        ok &= values > low if high is None else values >= low
    if high is not None:
        ok &= values < high if low is None else values <= high
    return bool(ok.all())


def nets_at(sweep, lr, std):
    return {label: sweep[label][(lr, std)] for label in sweep}


# ------------------------------------------------------------------------------------------- the experiment


@pytest.mark.parametrize("make, message", [
    (lambda: Figure1Config(norm="layer"), "norm must be one of 'none', 'batch'; got 'layer'"),
    (lambda: Figure1Config(init_std=0.0), "init_std must be a finite number in (0, inf), got 0.0"),
    (lambda: Figure1Config(init_std=float("nan")), "init_std must be a finite number"),
    (lambda: Figure1Config(lr=-0.5), "lr must be a finite number in (0, inf), got -0.5"),
    (lambda: Figure1Config(activation="gelu"), "activation must be one of"),
])
def test_bad_settings_say_what_was_expected_and_what_came(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_the_defaults_are_the_papers_network_and_the_reference_setting():
    config = Figure1Config()
    assert (config.depth, config.width, config.activation, config.batch_size) == (3, 100, "sigmoid", 60)
    assert (config.lr, config.init_std, config.steps, config.seeds) == (0.5, 0.01, 1000, (0, 1, 2))
    assert EXPERIMENTS["figure1"] is Figure1Config
    model = build_mlp(seed=0, **{"depth": 3, "width": 100, "activation": "sigmoid", **config.model_options()})
    assert model.spec.init == "gaussian" and model.spec.init_std == 0.01


def test_the_grid_crosses_learning_rate_init_std_and_bn_and_adds_the_long_runs():
    grid = Figure1Config.grid()
    assert len(grid) == len(GRID_LEARNING_RATES) * len(GRID_INIT_STDS) * 2 + 2
    assert Figure1Config() in grid and replace(Figure1Config(), norm="batch") in grid
    assert Figure1Config(steps=LONG_STEPS, record_every=LONG_RECORD_EVERY) in grid


def test_the_shipped_file_stays_small():
    assert _cache.shipped_path("figure1").stat().st_size < 200 * 1024


def test_unit_movements_and_the_typical_unit_on_a_small_example():
    # 5 units, 3 records: unit i moves by i (its 85th percentile), unit 4 has a NaN record after the first
    per_unit = np.zeros((3, 5, 3))
    for unit in range(5):
        per_unit[1:, unit, 2] = [unit / 2, unit]
    per_unit[2, 4] = np.nan
    movements = unit_movements(per_unit)
    assert np.array_equal(movements, [0.0, 1.0, 2.0, 3.0, 2.0])
    assert typical_unit(per_unit) == 2                       # sorted movements 0, 1, 2, 2, 3: the middle one
    assert typical_unit(per_unit[:, :4]) == 1                # an even count: the lower of the two middle units
    per_unit[:, 0] = np.nan
    assert math.isnan(unit_movements(per_unit)[0]) and typical_unit(per_unit) in (2, 4)
    with pytest.raises(ValueError, match=r"shape \(K, C, levels\)"):
        unit_movements(np.zeros((3, 5)))


def test_the_probe_runs_a_copy_in_training_mode_and_leaves_the_model_alone():
    model = build_mlp(norm="batch", init="gaussian", init_std=0.01, seed=0).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    z = hidden_inputs(model)
    assert [tuple(layer.shape) for layer in z] == [(1000, 100)] * 3
    assert not model.training
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    # training mode: every unit's input has the probe batch's mean 0 and std sqrt(var / (var + eps)) (gamma 1,
    # beta 0); at s = 0.01 the last layer's batch variance is only about 4e-4, so eps = 1e-5 takes 1-2% off
    assert torch.allclose(z[-1].mean(dim=0), torch.zeros(100), atol=1e-5)
    assert inside(z[-1].std(dim=0, unbiased=False), 0.97, 1.0)
    fractions = saturated_fractions(model)
    assert fractions.shape == (3,) and inside(fractions, 0.0, 0.01)


def test_a_probed_run_is_update_for_update_the_unprobed_one():
    probed = TINY.run_seed(1)
    result, _ = train_mlp(seed=1, steps=TINY.steps, batch_size=TINY.batch_size, lr=TINY.lr,
                          record_every=TINY.record_every, progress=False, depth=3, width=100,
                          activation="sigmoid", **TINY.model_options())
    assert np.array_equal(probed["test_accuracy"], result.test_accuracy)
    assert np.array_equal(probed["train_loss"], result.train_loss_avg)


def test_a_run_records_what_the_lecture_reads(user_cache):
    runs = run(replace(TINY, norm="batch", seeds=(0, 1)), progress=False)
    assert runs.values("unit_percentiles").shape == (2, 3, 3)       # seeds, records (0, 6, 12), levels
    assert runs.values("movement_percentiles").shape == (2, 3)
    assert runs.values("grad_norms_init").shape == (2, 4)
    assert runs.values("saturated_init").shape == runs.values("saturated_final").shape == (2, 3)
    units = runs.values("typical_unit")
    assert np.all(units == np.round(units)) and inside(units, 0, 99)
    percentiles = runs.values("unit_percentiles")
    assert np.all(percentiles[..., 0] <= percentiles[..., 1]) and np.all(percentiles[..., 1] <= percentiles[..., 2])


def test_the_probe_pads_a_diverged_run_with_nan():
    model = build_mlp(init="gaussian", init_std=0.01, seed=0)
    probe = SigmoidInputProbe((0, 5, 10))
    probe.attach(model)
    probe.after_update(3)                                            # not recorded
    probe.after_update(5)                                            # ... then the run stops (diverged)
    arrays = probe.arrays()
    assert arrays["unit_percentiles"].shape == (3, 3)
    assert np.all(np.isfinite(arrays["unit_percentiles"][:2])) and np.all(np.isnan(arrays["unit_percentiles"][2]))
    assert np.all(np.isfinite(arrays["movement_percentiles"]))


def test_a_recomputed_grid_point_agrees_with_the_shipped_one():
    """The shipped numbers are measurements of this code (tolerances as in test_experiments_shipped)."""
    config, seed = Figure1Config(norm="batch", lr=0.5, init_std=0.1), 2
    shipped = {r["key"]: r["arrays"] for r in _cache.shipped_runs("figure1")}
    key = _cache.cache_key("figure1", config.run_params(seed))
    assert key in shipped, "rerun: bnlab build cache figure1"
    fresh = config.run_seed(seed)
    assert set(fresh) == set(shipped[key])
    for name, value in fresh.items():
        stored = np.asarray(shipped[key][name], dtype=float)
        assert stored.shape == np.shape(value), name
        if name in ("steps", "grad_norms_init", "saturated_init", "typical_unit"):
            np.testing.assert_allclose(value, stored, rtol=1e-4, atol=1e-5, err_msg=name)
        elif "accuracy" in name:
            np.testing.assert_allclose(value, stored, atol=0.03, err_msg=name)
        else:
            np.testing.assert_allclose(value, stored, rtol=0.1, atol=0.05, err_msg=name)


# ------------------------------------------------------------------------------ reading the runs (lessons)


def test_reading_helpers(default):
    bn = default["BN"]
    assert np.array_equal(accuracy_at_update(bn), bn.final_accuracies())
    assert np.array_equal(accuracy_at_update(bn, 500), bn.values("test_accuracy")[:, 20])
    with pytest.raises(ValueError, match="update 510 is not a recorded update"):
        accuracy_at_update(bn, 510)
    first = first_update_reaching(bn, 0.5)
    assert inside(first, 25, 100)
    assert np.all(np.isnan(first_update_reaching(default["no BN"], 0.9)))
    assert math.isnan(speedup(default, 0.85))                        # the plain net never gets there
    runs = with_scalar(bn, "x", np.array([1.0, 2.0, 3.0]))
    assert np.array_equal(runs.values("x"), [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match=r"one number per seed, shape \(3,\)"):
        with_scalar(bn, "x", np.zeros(2))
    with pytest.raises(ValueError, match="keys 'no BN' and 'BN'"):
        accuracy_gap({"BN": bn})


def test_predictions():
    assert predicted_shrink(0.01) == pytest.approx(40.0)
    assert predicted_shrink(0.1) == pytest.approx(4.0)
    assert predicted_saturation(1.0) == pytest.approx(0.912, abs=0.002)
    assert predicted_saturation(0.1) == pytest.approx(0.277, abs=0.002)
    assert predicted_saturation(0.01) < 1e-10
    x = torch.zeros(4, 3)
    x[:, 0] = 3.0                                                    # ||x|| = 3: z ~ N(0, 9) at std 1
    assert predicted_saturation(1.0, x) == pytest.approx(math.erfc(1 / math.sqrt(2)))
    with pytest.raises(ValueError, match="init_std must be a finite number in"):
        predicted_shrink(-1.0)
    with pytest.raises(ValueError, match=r"shape \(N, D\)"):
        predicted_saturation(1.0, torch.zeros(3))


# -------------------------------------------------------------------- section 1: figure 1 at lr 0.5, s 0.01


def test_section_1_bn_learns_the_plain_net_stays_at_chance(default):
    plain, bn = default["no BN"], default["BN"]
    assert inside(accuracy_at_update(bn, 500), 0.85, 0.92)
    assert inside(accuracy_at_update(plain, 500), high=0.12)
    assert inside(accuracy_at_update(bn), low=0.85)
    assert inside(accuracy_at_update(plain), 0.2, 0.35)
    assert inside(first_update_reaching(plain, 0.11), 300, 600)


def test_section_1_bn_stays_in_the_steep_range_the_plain_unit_drifts(default):
    plain, bn = default["no BN"], default["BN"]
    low, high = typical_span(bn)
    assert -2.0 <= low <= -1.5 and 1.5 <= high <= 2.0
    assert inside(unit_range(plain), high=0.001)
    assert inside(unit_range(bn), 1.9, 2.2)                          # a standard normal's 15-85 range: 2.07
    assert inside(median_drift(plain), high=-2.5)
    assert inside(median_movement(plain), low=3.0)
    assert inside(median_movement(bn), 0.5, 1.0)
    assert inside(median_drift(bn), -0.5, 0.5)
    assert inside(unit_range(plain, None), 0.8, 2.0)
    assert inside(unit_range(bn, None), 3.0, 3.6)


def test_section_1_the_plain_net_predicts_one_class_and_bns_first_record_is_eval_mode(default):
    """The retrained first updates are the shipped runs' (same accuracy in eval mode), the plain net predicts one
    class for every digit up to update 375, and BN's first record understates it (running statistics)."""
    plain = early_predictions(Figure1Config(), range(25, 376, 25))
    np.testing.assert_allclose(plain["accuracy_eval"], default["no BN"].values("test_accuracy")[:, 1:16], atol=1e-6)
    assert np.abs(plain["accuracy_eval"] - 0.1).max() < 0.0005 and plain["classes"].max() < 1.5
    np.testing.assert_array_equal(plain["accuracy_eval"], plain["accuracy_batch"])   # no BN: no statistics
    bn = early_predictions(Figure1Config(norm="batch"), (25, 50))
    np.testing.assert_allclose(bn["accuracy_eval"], default["BN"].values("test_accuracy")[:, 1:3], atol=1e-6)
    assert inside(bn["accuracy_eval"][:, 0], 0.1, 0.3) and inside(bn["accuracy_batch"][:, 0], 0.4, 0.6)
    assert np.abs(bn["accuracy_eval"][:, 1] - bn["accuracy_batch"][:, 1]).max() < 0.06
    with pytest.raises(ValueError, match="at least one update"):
        early_predictions(Figure1Config(), ())


# ------------------------------------------------------------------------- section 2: at initialization


def test_section_2_the_plain_nets_gradient_shrinks_by_the_predicted_factor(sweep):
    assert inside(layer_gradient_ratios(sweep["no BN"][(0.5, 0.01)])[:, 1:], 30, 50)
    assert inside(layer_gradient_ratios(sweep["no BN"][(0.5, 0.01)])[:, 0], 4, 7)
    grads = sweep["no BN"][(0.5, 0.01)].values("grad_norms_init")
    assert 3e-5 <= (grads[:, 0] / grads[:, -1]).mean() <= 3e-4
    assert inside(layer_gradient_ratios(sweep["no BN"][(0.5, 0.1)])[:, 1:], 3, 5)
    assert inside(layer_gradient_ratios(sweep["BN"][(0.5, 0.01)])[:, :2], 0.8, 1.25)
    first_layer = np.array([sweep["BN"][(0.5, std)].values("grad_norms_init")[:, 0] for std in GRID_INIT_STDS])
    assert inside(first_layer, 0.3, 0.5)


def test_section_2_the_forward_signal_shrinks_by_the_predicted_factor():
    spread = np.array([init_signal_spread(Figure1Config(), seed) for seed in (0, 1, 2)])
    assert spread.shape == (3, 3)
    assert inside(spread[:, :-1] / spread[:, 1:], 39, 41.5)            # predicted 40 per layer


def test_section_2_control_bns_hidden_gradients_scale_as_one_over_s_with_the_output_layer_fixed(sweep):
    # without the control, the measurement is the shipped record (same weights, same first minibatch)
    for std in (0.01, 1.0):
        np.testing.assert_allclose(init_gradient_norms(Figure1Config(norm="batch", init_std=std), 1),
                                   sweep["BN"][(0.5, std)].values("grad_norms_init")[1], rtol=1e-5)
    fixed = {std: np.array([init_gradient_norms(Figure1Config(norm="batch", init_std=std), seed, output_std=0.1)[:-1]
                            for seed in (0, 1, 2)]) for std in (0.01, 1.0)}
    assert inside(fixed[0.01], 3.0, 5.0) and inside(fixed[1.0], 0.03, 0.05)
    assert inside(fixed[0.01] / fixed[1.0], 90, 110)
    with pytest.raises(ValueError, match="output_std"):
        init_gradient_norms(Figure1Config(), 0, output_std=0.0)


def test_section_2_saturation_as_predicted(sweep):
    assert inside(sweep["no BN"][(0.5, 0.1)].values("saturated_init")[:, 0], 0.2, 0.35)
    assert inside(sweep["no BN"][(0.5, 1.0)].values("saturated_init")[:, 0], 0.85, 0.95)
    bn = np.concatenate([sweep["BN"][(0.5, std)].values("saturated_init").ravel() for std in GRID_INIT_STDS])
    assert bn.max() < 0.005
    assert inside(sweep["no BN"][(0.5, 1.0)].values("saturated_final")[:, 0], low=0.85)
    assert inside(sweep["no BN"][(0.5, 1.0)].final_accuracies(), 0.7, 0.85)


def test_at_init_nothing_depends_on_the_learning_rate(sweep):
    """Same seed, same weights, same first minibatch: the at-init records of every lr agree."""
    for label in sweep:
        for std in GRID_INIT_STDS:
            reference = sweep[label][(0.5, std)]
            for lr in GRID_LEARNING_RATES:
                for name in ("grad_norms_init", "saturated_init"):
                    np.testing.assert_allclose(sweep[label][(lr, std)].values(name), reference.values(name),
                                               rtol=1e-5, err_msg=f"{label} lr {lr} std {std} {name}")


# ------------------------------------------------------------------------- section 3: the gap on the grid


def test_section_3_the_gap_at_lr_one_half(sweep):
    assert accuracy_gap(nets_at(sweep, 0.5, 0.01)) > 0.5
    assert accuracy_gap(nets_at(sweep, 0.5, 0.03)) > 0.5
    assert abs(accuracy_gap(nets_at(sweep, 0.5, 0.1))) < 0.03
    assert abs(accuracy_gap(nets_at(sweep, 0.5, 0.3))) < 0.03
    assert 0.05 <= accuracy_gap(nets_at(sweep, 0.5, 1.0)) <= 0.15
    assert 0.05 <= accuracy_gap(nets_at(sweep, 0.1, 0.1)) <= 0.12


def test_section_3_the_small_init_gap_shrinks_from_lr_one(sweep):
    lrs, stds, final = gap_table(sweep)
    small = final[:, [stds.index(0.01), stds.index(0.03)]]
    slow = [lrs.index(lr) for lr in lrs if lr <= 0.5]
    assert 0.55 <= small[slow].min() and small[slow].max() <= 0.85
    assert 0.4 <= small[lrs.index(1.0), 0] <= 0.6 and 0.15 <= small[lrs.index(1.0), 1] <= 0.35
    assert 0.3 <= small[lrs.index(2.0), 0] <= 0.5 and 0.0 <= small[lrs.index(2.0), 1] <= 0.1


def test_section_3_faster_everywhere_better_only_at_poor_inits(sweep):
    lrs, stds, final = gap_table(sweep)
    assert (lrs, stds) == (list(GRID_LEARNING_RATES), list(GRID_INIT_STDS))
    middle = final[np.ix_([lrs.index(lr) for lr in lrs if lr >= 0.2], [stds.index(0.1), stds.index(0.3)])]
    assert np.abs(middle).max() < 0.03
    _, _, early = gap_table(sweep, 100)
    assert early.min() > 0
    bn_final = np.concatenate([runs.final_accuracies() for runs in sweep["BN"].values()])
    assert bn_final.min() > 0.8
    assert min(sweep["BN"], key=lambda key: sweep["BN"][key].final_accuracies().mean()) == (0.1, 1.0)
    assert 3 <= speedup(nets_at(sweep, 0.5, 0.1), 0.85) <= 6
    assert 1.2 <= speedup(nets_at(sweep, 0.5, 0.3), 0.85) <= 2.5
    assert not np.isfinite(first_update_reaching(sweep["no BN"][(0.5, 0.01)], 0.85)).any()


def test_gap_table_marks_missing_settings(sweep):
    partial = {"no BN": dict(sweep["no BN"]), "BN": dict(sweep["BN"])}
    del partial["BN"][(0.5, 0.1)]
    _, _, gaps = gap_table(partial)
    assert np.isnan(gaps[GRID_LEARNING_RATES.index(0.5), GRID_INIT_STDS.index(0.1)])
    assert np.isfinite(gaps).sum() == gaps.size - 1


# -------------------------------------------------------------------- section 4: stability, and its limits


def test_section_4_bn_moves_less_except_where_the_plain_net_learns_nothing(sweep):
    table = movement_table(sweep)
    louder = sorted(key for key, (no_bn, with_bn) in table.items() if with_bn >= no_bn)
    assert louder == [(0.1, 0.01), (0.1, 0.03)]
    for key in louder:
        assert inside(accuracy_at_update(sweep["no BN"][key]), high=0.11)
    factors = [no_bn / with_bn for (lr, _), (no_bn, with_bn) in table.items() if lr >= 0.5]
    assert min(factors) > 2 and max(factors) < 7
    assert 3 <= table[(0.5, 0.01)][0] / table[(0.5, 0.01)][1] <= 7
    calmest = min(table, key=lambda key: min(table[key]))          # the calmest unit of the grid: a stuck net
    assert calmest in louder and table[calmest][0] < table[calmest][1]


# ----------------------------------------------------------------------------- section 5: 5,000 updates


def test_section_5_the_plain_net_learns_slowly(long, default):
    assert inside(accuracy_at_update(long["no BN"]), 0.55, 0.8)
    assert inside(accuracy_at_update(long["BN"]), low=0.9)
    assert inside(first_update_reaching(long["no BN"], 0.5) / 1000, 2, 4)
    assert not np.isfinite(first_update_reaching(long["no BN"], 0.85)).any()
    level = accuracy_at_update(long["no BN"]).mean()
    assert inside(first_update_reaching(long["BN"], level), high=101)
    plain_reach = first_update_reaching(long["no BN"], level)
    assert np.nanmin(plain_reach) > 4500 and updates_text(plain_reach) == "4,700, 4,900, never"
    low, high = typical_span(long["BN"])
    assert -2.5 <= low <= -1.5 and 1.5 <= high <= 2.5
    assert -7 <= typical_span(long["no BN"])[0] <= -5               # inside the figure's ylim (-7, 7)
    # the first 1,000 updates are those of the default runs (same seeds, same minibatches)
    np.testing.assert_allclose(accuracy_at_update(long["BN"], 1000), accuracy_at_update(default["BN"]), atol=1e-6)


# ------------------------------------------------------------------------------- the paper's ImageNet table


def test_the_imagenet_table_as_the_paper_gives_it():
    rows = {row.model: (row.steps_to_inception, row.max_accuracy) for row in IMAGENET_TABLE}
    assert rows == {"Inception": (31.0, 72.2), "BN-Baseline": (13.3, 72.7), "BN-x5": (2.1, 73.0),
                    "BN-x30": (2.7, 74.8), "BN-x5-Sigmoid": (None, 69.8)}
    assert len(IMAGENET_RECIPE_CHANGES) == 7
    text = imagenet_table_markdown()
    assert text.count("\n") == 6 and "| BN-x5-Sigmoid |" in text and "never" in text


# --------------------------------------------------------------------------------------------- figures


def test_the_figures_draw_the_shipped_runs(sweep, default, long):
    fig = plot_figure1(default, title="t")
    assert isinstance(fig, Figure) and len(fig.axes) == 3
    assert "units" in fig.axes[1].get_title() and fig.axes[1].get_ylim() == fig.axes[2].get_ylim()
    context = {label: {std: runs for (lr, std), runs in sweep[label].items() if lr == 0.5} for label in sweep}
    fig = plot_figure1(default, context=context, selected_std=0.01, pinned=("lr 1", nets_at(sweep, 1.0, 0.01)))
    assert len(fig.axes) == 4
    alone = plot_figure1(default, context={label: {0.01: runs} for label, runs in default.items()})
    low, high = alone.axes[3].get_xlim()                         # one setting's seeds do not fill the axis
    assert low <= 0.01 and high >= 1.0
    assert len(plot_figure1(long).axes) == 3
    assert len(plot_at_init(sweep, 0.5, (0.01, 0.1, 1.0)).axes) == 2
    assert len(plot_init_sweep(sweep, 0.5).axes) == 3
    fig = plot_gap_grid(sweep)
    assert len(fig.axes) == 2 and "after 1000 updates" in fig.axes[1].get_title()
    texts = [t.get_text() for t in fig.axes[1].texts]
    assert len(texts) == 25 and "-0.00" not in texts


def test_figures_say_what_they_expected(sweep, default):
    with pytest.raises(ValueError, match="must map 'no BN' and 'BN'"):
        plot_figure1({"BN": default["BN"]})
    with pytest.raises(ValueError, match="no runs at lr 0.3"):
        plot_init_sweep(sweep, 0.3)
    with pytest.raises(ValueError, match="no runs at lr 0.5 for init std"):
        plot_at_init(sweep, 0.5, (0.05,))


def _diverged_after(runs: SeedRuns, seed: int, record: int) -> SeedRuns:
    """The same runs with one seed diverged after ``record`` records (NaN from there on)."""
    arrays = [dict(a) for a in runs.arrays]
    for name in ("test_accuracy", "train_loss", "unit_percentiles"):
        arrays[seed][name] = arrays[seed][name].copy()
        arrays[seed][name][record:] = np.nan
    arrays[seed].update(final_accuracy=np.float64(np.nan), diverged=np.float64(1.0),
                        diverged_at=np.float64(record * 25 - 20))
    return SeedRuns(seeds=runs.seeds, arrays=tuple(arrays))


def test_a_diverged_seed_is_drawn_not_averaged_away(default):
    broken = {"no BN": _diverged_after(default["no BN"], 1, 3), "BN": default["BN"]}
    fig = plot_figure1(broken)
    assert len(fig.axes) == 3
    assert math.isnan(accuracy_gap(broken))
    assert "1 of 3 seeds diverged" in broken["no BN"].headline()


# ------------------------------------------------------------------------------------------- dashboard


def quiet(**kwargs):
    return Figure1Dashboard(progress=False, background=False, **kwargs)


def test_the_dashboard_starts_at_the_reference_setting_from_the_cache():
    dash = quiet()
    assert dash.last_error is None and dash.status.value.startswith("from the cache · lr 0.5, init std 0.01")
    assert "gap BN minus no BN +0.63" in dash.status.value
    assert dash.run_button.disabled and len(dash.figure.axes) == 4
    assert set(dash.last_result["context"]["BN"]) >= set(GRID_INIT_STDS)
    assert bytes(dash.image.value).startswith(b"\x89PNG")


def test_every_grid_setting_answers_from_the_cache():
    dash = quiet()
    for lr in GRID_LEARNING_RATES:
        for std in GRID_INIT_STDS:
            assert dash.set(lr=lr, init_std=std), (lr, std)
            assert dash.status.value.startswith("from the cache"), (lr, std)
            assert dash.last_error is None


def test_a_setting_between_the_grid_points_trains_both_nets_live(user_cache):
    dash = quiet(base=TINY)
    assert "not precomputed" in dash.status.value and not dash.run_button.disabled
    dash.set(lr=0.3, init_std=0.05)
    assert dash.run()
    assert dash.last_error is None, dash.error.value
    assert dash.status.value.startswith("trained live (now cached) · lr 0.3, init std 0.05")
    assert all(runs.seeds == (0, 1, 2) for runs in dash.last_result["nets"].values())
    assert len(list(user_cache.glob("figure1-*.npz"))) == 6
    dash.set(lr=0.5, init_std=0.01)
    assert "not precomputed" in dash.status.value                # the tiny base is not the shipped one
    dash.set(lr=0.3, init_std=0.05)
    assert dash.status.value.startswith("from the cache")


def test_the_extreme_corner_the_lecture_invites_is_drawn(user_cache):
    dash = quiet(base=replace(TINY, steps=60, record_every=20))
    dash.set(lr=3.0, init_std=2.0)
    assert dash.run()
    assert dash.last_error is None and dash.error.value == "", dash.error.value
    assert "lr 3, init std 2" in dash.status.value


def test_a_diverged_seed_is_said_in_words(user_cache, monkeypatch):
    real = Figure1Config.run_seed

    def one_diverges(self, seed, progress=False, on_step=None):
        arrays = real(self, seed, progress, on_step)
        if seed == 1 and self.norm == "none":
            arrays = {**arrays, "final_accuracy": np.float64(np.nan), "diverged": np.float64(1),
                      "diverged_at": np.float64(7)}
        return arrays

    monkeypatch.setattr(Figure1Config, "run_seed", one_diverges)
    dash = quiet(base=TINY, update=False)
    assert dash.run()
    assert dash.last_error is None, dash.error.value
    assert "1 of 3 seeds diverged (update 7)" in dash.status.value
    assert "gap BN minus no BN: n/a (a seed diverged)" in dash.status.value


def test_pin_and_reset():
    dash = quiet()
    dash.pin_button.value = True
    dash.set(init_std=0.1)
    assert dash.pinned is not None and "pinned: lr 0.5, std 0.01" in " ".join(
        t.get_text() for t in dash.figure.legends[0].get_texts())
    dash.reset()
    assert dash.params() == {"lr": 0.5, "init_std": 0.01}


def test_the_dashboard_rejects_a_base_off_its_sliders():
    with pytest.raises(ValueError, match="base.init_std must be one of the slider's positions"):
        Figure1Dashboard(base=Figure1Config(init_std=0.07), update=False)
    with pytest.raises(TypeError, match="base must be a Figure1Config"):
        Figure1Dashboard(base=object(), update=False)
