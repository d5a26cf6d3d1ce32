"""Lecture 5's computations (bnlab.lessons.inference), its figures, its dashboard, and the bias correction of
bnlab.running_stats."""


import numpy as np
import pytest
import torch
from matplotlib.figure import Figure

from bnlab.data import synthetic_data
from bnlab.lessons.inference import (
    MAX_TRACE_STEPS,
    after_activation_folding,
    bias_correct_running_stats,
    convention_rows,
    convention_table,
    fold_into_next_linear,
    folding_check,
    long_run_running_var,
    precise_bn_study,
    running_average_traces,
)
from bnlab.plots.inference import plot_precise_bn, plot_running_averages
from bnlab.running_stats import CONVENTIONS, bias_corrected, initial_value_share, moving_average
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


# ------------------------------------------------------------------------------------------------ conventions


def test_convention_rows_for_the_batch_1_3():
    rows = {row.code: row for row in convention_rows()}
    expected = {"PyTorch, momentum=0.1": (0.2, 1.1), "PyTorch, momentum=0.01": (0.02, 1.01),
                "PyTorch, momentum=None": (2.0, 2.0), "Keras 3 BatchNormalization, momentum=0.99": (0.02, 1.0),
                "CS231n assignment 2, momentum=0.9": (0.2, 0.1), "d2l.ai (PyTorch tab), momentum=0.1": (0.2, 1.0)}
    assert set(rows) == set(expected)
    for code, (mean, var) in expected.items():
        row = rows[code]
        assert (row.running_mean, row.running_var) == pytest.approx((mean, var), abs=1e-12), code
        # the by-hand formula gives the same number
        assert (1 - row.weight_of_new) * row.initial_var + row.weight_of_new * row.fed_var == pytest.approx(var)
    assert {rows[c].produced_by for c in rows if c.startswith("PyTorch")} == {"torch.nn.BatchNorm1d"}
    assert "checked against keras" in rows["Keras 3 BatchNormalization, momentum=0.99"].produced_by
    assert rows["CS231n assignment 2, momentum=0.9"].initial_var == 0.0
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
    assert len(body) == len(rows)
    assert "| 1.100 |" in body[0] and "| 0.100 |" in body[4]
    for number, source in enumerate(dict.fromkeys(row.source for row in rows), start=1):
        assert table.count(f"[{number}] {source}") == 1


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
    assert study.initial_share == pytest.approx(0.99 ** 40)
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
    # the momentum does not change training: a second momentum gives the same precise statistics
    other = precise_bn_study(small_data, 0.5, steps=40, batch_size=30, precise_batches=10)
    np.testing.assert_allclose(other.running_var["precise"], study.running_var["precise"], rtol=1e-6)


def test_precise_bn_study_rejects_bad_settings(small_data):
    with pytest.raises(ValueError, match="momentum must be a number"):
        precise_bn_study(small_data, None)
    with pytest.raises(ValueError, match="exceeds the 600 training examples"):
        precise_bn_study(small_data, 0.1, precise_batches=11)


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
    with pytest.raises(ValueError, match="at least one"):
        plot_precise_bn([])
    fig = plot_running_averages(running_average_traces(0.001, 300))
    assert "0.74" in fig.axes[0].get_title() and fig.axes[0].get_legend() is not None


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
