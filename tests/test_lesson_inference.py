"""Lecture 5's computations (bnlab.lessons.inference), its figures, its dashboard, and the bias correction of
bnlab.running_stats."""


import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bnlab.data import synthetic_data
from bnlab.lessons.inference import (
    MAX_TRACE_STEPS,
    PAPER_SOURCE,
    after_activation_folding,
    bias_correct_running_stats,
    convention_rows,
    convention_table,
    fold_into_next_linear,
    folding_check,
    long_run_running_var,
    measure_lag,
    precise_bn_study,
    running_average_traces,
    statistics_batches,
    synthetic_truth,
)
from bnlab.nn import recompute_batchnorm_statistics
from bnlab.plots.inference import plot_measured_lag, plot_precise_bn, plot_running_averages
from bnlab.running_stats import (CONVENTIONS, batch_weights, bias_corrected, initial_value_share, moving_average,
                                 moving_average_trace)
from bnlab.widgets.running import RunningAveragesDashboard


@pytest.fixture(scope="module")
def small_data():
    return synthetic_data(num_train=600, num_test=200, num_features=20, num_classes=4, seed=0)


# ---------------------------------------------------------------------------- bnlab.running_stats additions


def test_initial_value_share():
    assert initial_value_share(0.001, 300) == pytest.approx(0.7407, abs=1e-4)
    assert initial_value_share(0.1, 0) == 1.0 and initial_value_share(1.0, 1) == 0.0
    assert initial_value_share(None, 1) == 0.0 and initial_value_share(None, 0) == 1.0


@pytest.mark.parametrize("momentum", [1e-4, 0.001, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("initial", [0.0, 1.0, -3.0])
def test_bias_corrected_recovers_the_weighted_average_of_the_batches_alone(momentum, initial):
    values = np.random.default_rng(0).normal(2.0, 1.0, 50)
    running = initial
    for t, value in enumerate(values, start=1):
        running = moving_average(running, value, momentum)
        weights = momentum * (1 - momentum) ** (t - np.arange(1, t + 1))
        expected = (weights * values[:t]).sum() / weights.sum()
        assert bias_corrected(running, initial, momentum, t) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_bias_corrected_of_a_constant_stream_is_the_constant_and_works_on_tensors():
    running = torch.ones(3)
    for _ in range(7):
        running = moving_average(running, torch.full((3,), 4.0), 0.01)
    corrected = bias_corrected(running, 1.0, 0.01, 7)
    assert isinstance(corrected, torch.Tensor) and torch.allclose(corrected, torch.full((3,), 4.0))
    assert bias_corrected(np.array([2.5]), 1.0, None, 3) == np.array([2.5])  # equal weights: nothing to remove


@pytest.mark.parametrize("momentum,steps,match", [(0.0, 5, "left a trace"), (1e-20, 5, "left a trace"),
                                                  (0.1, 0, "num_batches must be"), (1.5, 3, "momentum must be"),
                                                  (0.1, 2.5, "num_batches must be")])
def test_bias_corrected_rejects_what_it_cannot_correct(momentum, steps, match):
    with pytest.raises(ValueError, match=match):
        bias_corrected(1.0, 1.0, momentum, steps)


@pytest.mark.parametrize("momentum", [1e-3, 0.1, 0.7, 1.0, None])
def test_batch_weights_rebuild_the_running_average(momentum):
    values = np.random.default_rng(1).normal(3.0, 1.0, 40)
    for t in (1, 7, 40):
        weights = batch_weights(momentum, t)
        assert weights.shape == (t,)
        assert weights.sum() + initial_value_share(momentum, t) == pytest.approx(1.0, abs=1e-12)
        running = 1.0
        for k, value in enumerate(values[:t], start=1):
            running = moving_average(running, value, 1.0 / k if momentum is None else momentum)
        assert initial_value_share(momentum, t) * 1.0 + weights @ values[:t] == pytest.approx(running, rel=1e-12)
        if momentum is not None and momentum < 1.0:
            assert weights @ values[:t] / weights.sum() == pytest.approx(bias_corrected(running, 1.0, momentum, t))
    with pytest.raises(ValueError, match="num_batches must be"):
        batch_weights(0.1, 0)


def test_moving_average_trace_is_the_update_after_every_batch():
    stats = np.random.default_rng(2).normal(size=(25, 3))
    trace = moving_average_trace(stats, 0.05, np.array([0.0, 1.0, 2.0]))
    running = np.array([0.0, 1.0, 2.0])
    for k, value in enumerate(stats):
        running = moving_average(running, value, 0.05)
        np.testing.assert_array_equal(trace[k], running)
    np.testing.assert_allclose(moving_average_trace(stats, None, 5.0),
                               np.cumsum(stats, axis=0) / np.arange(1, 26)[:, None], rtol=1e-12)
    assert moving_average_trace([4.0], 0.5, 0.0).tolist() == [2.0]
    with pytest.raises(ValueError, match="at least one batch statistic"):
        moving_average_trace(np.zeros(0), 0.1, 0.0)
    with pytest.raises(ValueError, match="momentum must be"):
        moving_average_trace([1.0], 2.0, 0.0)


# ------------------------------------------------------------------------------------------------ conventions


def test_convention_rows_for_the_batch_1_3():
    rows = {row.code: row for row in convention_rows()}
    expected = {"PyTorch, momentum=0.1": (0.2, 1.1), "PyTorch, momentum=0.01": (0.02, 1.01),
                "PyTorch, momentum=None": (2.0, 2.0), "Keras 3 BatchNormalization, momentum=0.99": (0.02, 1.0),
                "CS231n assignment 2 skeleton, momentum=0.9": (0.2, 0.1),
                "d2l.ai, current edition (PyTorch tab), momentum=0.1": (0.2, 1.0)}
    assert set(rows) == set(expected)
    for code, (mean, var) in expected.items():
        row = rows[code]
        assert (row.running_mean, row.running_var) == pytest.approx((mean, var), abs=1e-12), code
        # the by-hand formula gives the same number
        assert (1 - row.weight_of_new) * row.initial_var + row.weight_of_new * row.fed_var == pytest.approx(var)
    assert {rows[c].produced_by for c in rows if c.startswith("PyTorch")} == {"torch.nn.BatchNorm1d"}
    assert "tested against Keras 3" in rows["Keras 3 BatchNormalization, momentum=0.99"].produced_by
    assert rows["CS231n assignment 2 skeleton, momentum=0.9"].initial_var == 0.0
    assert {row.source for row in rows.values()} == {conv.source for conv in CONVENTIONS.values()}


def test_convention_rows_torch_rows_are_torch_on_another_batch():
    batch = (0.5, -1.0, 4.0, 2.0)
    row = convention_rows(batch)[0]
    layer = torch.nn.BatchNorm1d(1).double()
    layer(torch.tensor(batch, dtype=torch.float64).reshape(-1, 1))
    assert (row.running_mean, row.running_var) == (layer.running_mean.item(), layer.running_var.item())


def test_convention_rows_reject_a_batch_of_one():
    with pytest.raises(ValueError, match="at least 2 finite values"):
        convention_rows((1.0,))


def test_convention_table_cites_each_source_once():
    rows = convention_rows()
    table = convention_table(rows)
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert len(body) == len(rows) + 1 and body[-1].startswith("| paper, Algorithm 2")
    assert "not given" in body[-1] and "weights frozen" in body[-1]
    assert "| 1.100 |" in body[0] and "| 0.100 |" in body[4]
    assert "| 0.001 |" in body[3] and "| 1e-05 |" in body[0]  # eps: Keras 1e-3, PyTorch 1e-5
    sources = list(dict.fromkeys(row.source for row in rows)) + [PAPER_SOURCE]
    for number, source in enumerate(sources, start=1):
        assert table.count(f"[{number}] {source}") == 1
    assert "<details>" in table and table.rstrip().endswith("</details>")
    no_paper = convention_table(rows, paper=False)
    assert "Algorithm 2" not in no_paper and len(no_paper.splitlines()) < len(table.splitlines())


def test_convention_rows_eps_and_meaning():
    rows = {row.code: row for row in convention_rows()}
    assert rows["PyTorch, momentum=0.1"].eps == 1e-5
    assert rows["Keras 3 BatchNormalization, momentum=0.99"].eps == 1e-3
    assert "old average" in rows["Keras 3 BatchNormalization, momentum=0.99"].momentum
    assert "new batch" in rows["d2l.ai, current edition (PyTorch tab), momentum=0.1"].momentum
    assert rows["PyTorch, momentum=None"].momentum.startswith("None")


@pytest.mark.parametrize("m", [2, 16])
def test_long_run_running_var_settles_at_the_estimators_expectation(m):
    unbiased = long_run_running_var("pytorch", m, num_batches=2000, weight_of_new=0.004)
    biased = [long_run_running_var(name, m, num_batches=2000, weight_of_new=0.004)
              for name in ("keras", "d2l", "cs231n")]
    assert unbiased == pytest.approx(4.0, rel=0.12)
    assert biased == pytest.approx([4.0 * (m - 1) / m] * 3, rel=0.12)
    f = initial_value_share(0.004, 2000)  # same batches, same weights: only the estimator differs
    assert biased[0] == pytest.approx(f * 1.0 + (m - 1) / m * (unbiased - f * 1.0), rel=1e-9)


# ------------------------------------------------------------------------------------------------- precise BN


def test_bias_correct_running_stats_recovers_constant_batch_statistics():
    layer = torch.nn.BatchNorm1d(2, momentum=0.01).double()
    batch = torch.tensor([[1.0, 10.0], [3.0, 14.0]], dtype=torch.float64)  # mean (2, 12), unbiased var (2, 8)
    for _ in range(5):
        layer(batch)
    assert bias_correct_running_stats(torch.nn.Sequential(layer, torch.nn.BatchNorm1d(2, momentum=None))) == 1
    assert torch.allclose(layer.running_mean, torch.tensor([2.0, 12.0], dtype=torch.float64))
    assert torch.allclose(layer.running_var, torch.tensor([2.0, 8.0], dtype=torch.float64))


def test_bias_correct_running_stats_refuses_a_layer_that_saw_nothing():
    with pytest.raises(ValueError, match="has seen no batch"):
        bias_correct_running_stats(torch.nn.Sequential(torch.nn.BatchNorm1d(3)))


def test_precise_bn_study(small_data):
    study = precise_bn_study(small_data, 0.01, steps=40, batch_size=30, precise_batches=10)
    assert study.initial_share == pytest.approx(0.99 ** 40) and study.seed == 0
    assert set(study.running_var) == {"init", "ema", "corrected", "precise"}
    for stats in (study.running_mean, study.running_var):
        assert all(array.shape == (3, 100) for array in stats.values())
    f = study.initial_share
    np.testing.assert_allclose(study.running_var["ema"], f * 1.0 + (1 - f) * study.running_var["corrected"],
                               rtol=1e-5)
    np.testing.assert_allclose(study.running_mean["ema"], (1 - f) * study.running_mean["corrected"], rtol=1e-4,
                               atol=1e-6)
    held = [block.norm.running_var.double().numpy() for block in study.model.hidden_layers]
    np.testing.assert_allclose(np.stack(held), study.running_var["precise"])
    assert all(0.0 <= acc <= 1.0 for acc in study.accuracy.values())
    # the recorded batch statistics are what the layers averaged: replaying the update gives the stored EMA
    assert study.batch_mean.shape == study.batch_var.shape == (40, 3, 100)
    np.testing.assert_allclose(moving_average_trace(study.batch_var, 0.01, 1.0)[-1], study.running_var["ema"],
                               rtol=1e-5)
    np.testing.assert_allclose(moving_average_trace(study.batch_mean, 0.01, 0.0)[-1], study.running_mean["ema"],
                               rtol=1e-4, atol=1e-6)
    # the precise statistics are recompute_batchnorm_statistics over the study's batches
    assert len(study.batches) == 10 and study.batches[0].shape == (30, 20)
    for got, expected in zip(study.batches, statistics_batches(small_data, count=10, batch_size=30)):
        assert torch.equal(got, expected)
    again = recompute_batchnorm_statistics(study.model, study.batches)
    assert again == 10
    np.testing.assert_array_equal(np.stack([b.norm.running_var.double().numpy()
                                            for b in study.model.hidden_layers]), study.running_var["precise"])
    # the momentum does not change training: another momentum records the same statistics, ends in the same net
    other = precise_bn_study(small_data, 0.5, steps=40, batch_size=30, precise_batches=10)
    np.testing.assert_allclose(other.running_var["precise"], study.running_var["precise"], rtol=1e-6)
    np.testing.assert_allclose(other.batch_var, study.batch_var, rtol=1e-6)


def test_precise_bn_study_with_momentum_none_stores_the_trajectory_average(small_data):
    study = precise_bn_study(small_data, None, steps=30, batch_size=30, precise_batches=5)
    assert study.initial_share == 0.0
    np.testing.assert_allclose(study.running_var["ema"], study.batch_var.mean(axis=0), rtol=1e-5)
    np.testing.assert_array_equal(study.running_var["corrected"], study.running_var["ema"])


def test_precise_bn_study_rejects_bad_settings(small_data):
    with pytest.raises(ValueError, match="momentum must be a number"):
        precise_bn_study(small_data, 1.5)
    with pytest.raises(ValueError, match="exceeds the 600 training examples"):
        precise_bn_study(small_data, 0.1, precise_batches=11)
    with pytest.raises(ValueError, match="count must be"):
        statistics_batches(small_data, count=0)


def test_measure_lag_splits_the_gap(small_data):
    study = precise_bn_study(small_data, 0.01, steps=40, batch_size=30, precise_batches=10)
    lag = measure_lag(study)
    assert (lag.momentum, lag.steps, lag.layer) == (0.01, 40, 0) and lag.step.tolist() == list(range(1, 41))
    assert lag.gap == pytest.approx(lag.initial_bias + lag.lag)
    assert lag.replay_error < 1e-4 and lag.weighted_error < 1e-4
    assert lag.stored == pytest.approx(study.running_var["ema"][0].mean())
    assert lag.precise == pytest.approx(study.running_var["precise"][0].mean())
    assert lag.untrained == pytest.approx(study.running_var["init"][0].mean())
    # the traces are the running averages of the unit-mean batch variance
    assert lag.ema[-1] == pytest.approx(lag.stored, rel=1e-4) and lag.corrected[-1] == pytest.approx(
        lag.stored_corrected, rel=1e-4)
    np.testing.assert_allclose(lag.equal, np.cumsum(lag.batch) / lag.step, rtol=1e-12)
    assert lag.recent == pytest.approx(lag.batch[-30:].mean())
    for label, weights in lag.weights.items():
        assert weights.shape == (40,) and weights.sum() == pytest.approx(1.0), label
    assert lag.mean_age("equal weights (momentum=None)") == pytest.approx(19.5)
    assert lag.mean_age("EMA at 0.1") < lag.mean_age("EMA at 0.01, bias-corrected") < 19.5
    assert measure_lag(study, layer=2).layer == 2
    with pytest.raises(ValueError, match="layer must be in"):
        measure_lag(study, layer=3)
    with pytest.raises(ValueError, match="momentum=None"):
        measure_lag(precise_bn_study(small_data, None, steps=5, batch_size=30, precise_batches=2))


# ---------------------------------------------------------------------------------------------------- folding


def test_folding_is_exact_in_eval_mode_only(small_data):
    study = precise_bn_study(small_data, 0.1, steps=20, batch_size=30, precise_batches=5)
    before = [block.norm.running_var.clone() for block in study.model.hidden_layers]
    check = folding_check(study.model, small_data.x_test)
    assert (check.norms_before, check.norms_after) == (3, 0)
    assert check.eval_difference < 1e-4 < 1e-2 < check.train_difference
    assert all(torch.equal(b, block.norm.running_var) for b, block in zip(before, study.model.hidden_layers))


def test_fold_into_next_linear_equals_bn_then_linear():
    torch.manual_seed(0)
    bn, linear = torch.nn.BatchNorm1d(5).double(), torch.nn.Linear(5, 3).double()
    bn(torch.randn(20, 5, dtype=torch.float64) * 3 + 1)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    bn.eval()
    a = torch.randn(7, 5, dtype=torch.float64)
    folded = fold_into_next_linear(bn, linear)
    torch.testing.assert_close(folded(a), linear(bn(a)), rtol=1e-12, atol=1e-12)
    no_bias = torch.nn.Linear(5, 3, bias=False).double()
    torch.testing.assert_close(fold_into_next_linear(bn, no_bias)(a), no_bias(bn(a)), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="expected a batch norm with running statistics and 4 features"):
        fold_into_next_linear(bn, torch.nn.Linear(4, 3))
    with pytest.raises(TypeError, match="folds into an nn.Linear"):
        fold_into_next_linear(bn, torch.nn.Conv1d(5, 3, 1))


def test_after_activation_folding(small_data):
    result = after_activation_folding(small_data, batches=5)
    assert (result.norms_before, result.norms_after) == (3, 3)
    assert result.forward_difference < 1e-4 < 0.05 * result.output_scale < result.backward_difference


# ------------------------------------------------------------------------------------- the dashboard's data


def test_running_average_traces_are_the_running_stats_rules():
    traces = running_average_traces(0.01, 200, "variance", 0.0)
    assert traces.step.tolist() == list(range(1, 201)) and traces.initial == 1.0
    running = 1.0
    for value in traces.batch[:5]:
        running = moving_average(running, value, 0.01)
    assert traces.ema[4] == pytest.approx(running)
    np.testing.assert_allclose(traces.equal, np.cumsum(traces.batch) / traces.step, rtol=1e-12)
    assert traces.corrected[0] == pytest.approx(traces.batch[0]) and traces.equal[0] == traces.batch[0]
    np.testing.assert_allclose(traces.ema, traces.initial_share * 1.0 + (1 - traces.initial_share) * traces.corrected)
    np.testing.assert_allclose(traces.truth, 2.7)
    assert traces.batch.mean() == pytest.approx(2.7, rel=0.05)


def test_running_average_traces_extremes_and_drift():
    one = running_average_traces(1.0, 5, "mean", 0.0)
    np.testing.assert_allclose(one.ema, one.batch)
    np.testing.assert_allclose(one.corrected, one.batch)
    tiny = running_average_traces(1e-4, 1, "mean", 1.0)
    assert tiny.truth[0] == 0.0 and tiny.ema[0] == pytest.approx(1e-4 * tiny.batch[0])
    assert tiny.corrected[0] == pytest.approx(tiny.batch[0], rel=1e-9)
    drifting = running_average_traces(0.001, 300, "variance", 0.5)
    assert drifting.truth[0] == pytest.approx(1.35) and drifting.truth[-1] == pytest.approx(2.7, rel=0.01)
    assert drifting.ema[-1] < drifting.corrected[-1] < drifting.truth[-1]
    np.testing.assert_array_equal(drifting.truth, synthetic_truth(300, "variance", 0.5))


def test_synthetic_truth():
    truth = synthetic_truth(301, "variance", 0.5)
    assert truth[0] == pytest.approx(1.35) and truth[60] == pytest.approx(2.7 * (1 - 0.5 / np.e))
    assert np.all(np.diff(truth) > 0) and truth[-1] < 2.7
    settled = int(np.ceil(60 * np.log(100 * 0.5)))  # within 1% of the final value from here on
    assert synthetic_truth(settled + 1, "variance", 0.5)[-1] >= 0.99 * 2.7 > synthetic_truth(settled, "variance",
                                                                                             0.5)[-1]
    np.testing.assert_array_equal(synthetic_truth(5, "mean", 0.0), np.ones(5))
    assert synthetic_truth(1, "mean", 1.0).tolist() == [0.0]
    with pytest.raises(ValueError, match="statistic must be one of"):
        synthetic_truth(5, "std")
    with pytest.raises(ValueError, match="drift must be"):
        synthetic_truth(5, "mean", 1.5)


@pytest.mark.parametrize("kwargs,match", [({"momentum": 0.0}, "momentum must be"),
                                          ({"momentum": 1.5}, "momentum must be"),
                                          ({"steps": 0}, "steps must be"),
                                          ({"steps": MAX_TRACE_STEPS + 1}, "steps must be an integer in"),
                                          ({"statistic": "std"}, "statistic must be one of"),
                                          ({"drift": -0.1}, "drift must be")])
def test_running_average_traces_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        running_average_traces(**kwargs)


# ------------------------------------------------------------------------------------- figures and dashboard


def test_figures(small_data):
    studies = [precise_bn_study(small_data, m, steps=20, batch_size=30, precise_batches=5) for m in (0.01, 0.1)]
    fig = plot_precise_bn(studies)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert "f = (1 - 0.01)^20 = 0.82" in fig.axes[0].get_title()
    assert "stored or bias-corrected" in fig.axes[0].get_ylabel()
    with pytest.raises(ValueError, match="at least one"):
        plot_precise_bn([])
    fig = plot_running_averages(running_average_traces(0.001, 300))
    assert "0.74" in fig.axes[0].get_title() and "settling time 60" in fig.axes[0].get_title()
    labels = [text.get_text() for text in fig.axes[0].get_legend().get_texts()]
    assert any("1.35 at t = 1" in label for label in labels)
    fig = plot_measured_lag(measure_lag(studies[0]))
    assert len(fig.axes) == 2 and fig.axes[0].get_legend() is not None
    labels = [text.get_text() for text in fig.axes[1].get_legend().get_texts()]
    assert any("mean age 9.5" in label for label in labels)  # equal weights over 20 steps


def test_dashboard_default_and_every_extreme():
    dash = RunningAveragesDashboard(progress=False)
    assert dash.last_error is None and not dash.trains
    assert dash.last_params == {"momentum": 0.001, "steps": 300, "statistic": "variance", "drift": 0.5}
    assert dash.last_result.ema[-1] < 1.5 < 2.2 < dash.last_result.corrected[-1]
    assert bytes(dash.image.value).startswith(b"\x89PNG")
    for settings in ({"momentum": 1e-4, "steps": 1}, {"momentum": 1.0, "steps": MAX_TRACE_STEPS},
                     {"momentum": 1e-4, "steps": MAX_TRACE_STEPS, "statistic": "mean", "drift": 1.0},
                     {"momentum": 1.0, "steps": 1, "drift": 0.0}):
        drawn = dash.updates
        dash.set(**settings)
        assert dash.last_error is None, (settings, dash.error.value)
        assert dash.updates == drawn + 1 and dash.figure is not None
        assert dash.last_result.step.size == dash.last_params["steps"]
    assert dash.last_result.momentum == 1.0 and np.allclose(dash.last_result.ema, dash.last_result.batch)
    assert dash.controls["momentum"].options[0] == 1e-4 and dash.controls["momentum"].options[-1] == 1.0
    assert dash.controls["steps"].max == MAX_TRACE_STEPS
    assert "(1 - d)" in dash.controls["drift"].description


def test_bias_corrected_trace_is_bias_corrected_at_every_step():
    from bnlab.running_stats import bias_corrected_trace

    stats = np.array([2.0, 3.0, 5.0, 4.0])
    trace = moving_average_trace(stats, 0.2, 1.0)
    expected = [bias_corrected(r, 1.0, 0.2, t) for t, r in enumerate(trace, start=1)]
    np.testing.assert_allclose(bias_corrected_trace(trace, 1.0, 0.2), expected, rtol=0, atol=0)
    np.testing.assert_allclose(bias_corrected_trace(trace, 1.0, 0.2)[0], 2.0)  # one batch: exactly that batch
