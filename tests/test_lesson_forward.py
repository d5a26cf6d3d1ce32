"""Lecture 2's computations (bnlab.lessons.forward), its figures and its forward explorer dashboard."""

import math

import matplotlib
import numpy as np
import pytest
import torch

from bnlab.functional import batchnorm_forward
from bnlab.lessons.forward import (
    EXPLORER_POOL_SIZE,
    batch_dependence,
    correlation,
    eps_gain,
    explorer_pool,
    forward_explorer,
    identity_recovery,
    running_sum_drift,
    sequential_float32_mean,
    torch_output_std,
    variance_precision,
)

matplotlib.use("Agg")


# ---------------------------------------------------------------------------------------- the explorer

def test_the_pool_has_a_large_skewed_feature_and_a_nearly_constant_correlated_one():
    pool = explorer_pool()
    assert pool.shape == (EXPLORER_POOL_SIZE, 2)
    assert 13 < pool[:, 0].mean() < 15 and 2.4 < pool[:, 0].std() < 3.2
    assert 4.99 < pool[:, 1].mean() < 5.01 and 0.02 < pool[:, 1].std() < 0.04
    assert 0.7 < correlation(pool) < 0.9
    skew = ((pool[:, 0] - pool[:, 0].mean()) ** 3).mean() / pool[:, 0].std() ** 3
    assert skew > 1
    assert np.array_equal(explorer_pool(), pool), "the pool is fixed by its seed"


def test_correlation_matches_numpy_and_is_none_for_a_constant_feature():
    values = np.random.default_rng(3).standard_normal((50, 2)) @ np.array([[1.0, 0.5], [0.0, 1.0]])
    assert correlation(values) == pytest.approx(np.corrcoef(values.T)[0, 1], abs=1e-14)
    values[:, 1] = 2.0
    assert correlation(values) is None


def test_explorer_default_standardizes_both_features_and_keeps_their_correlation():
    result = forward_explorer()
    assert result.m == 64 and result.stages["x"].shape == (64, 2)
    np.testing.assert_allclose(result.mean["xhat"], 0, atol=1e-12)
    # feature 0's variance is far above eps; feature 1's (6.4e-4) is only 64x eps, so it shrinks a little
    assert result.std["xhat"][0] == pytest.approx(1, abs=1e-5)
    assert 0.99 < result.std["xhat"][1] < 0.995
    assert result.corr["xhat"] == pytest.approx(result.corr["x"], abs=1e-12)
    assert result.corr["y"] == pytest.approx(result.corr["x"], abs=1e-12)
    np.testing.assert_allclose(result.gain, 1 / np.sqrt(result.stages["x"].var(axis=0) + 1e-5), rtol=1e-12)


def test_explorer_batch_of_two_gives_plus_minus_one():
    result = forward_explorer(m=2, eps=1e-8)
    np.testing.assert_allclose(np.abs(result.stages["xhat"]), 1, atol=1e-4)
    assert abs(result.corr["x"]) == pytest.approx(1)


def test_explorer_eps_of_one_switches_normalization_off_for_the_small_feature():
    tiny, large = forward_explorer(eps=1e-8), forward_explorer(eps=1.0)
    assert tiny.std["xhat"][1] == pytest.approx(1, abs=1e-4)
    # sigma = 0.025 against sqrt(eps) = 1: the output keeps about the input's own spread
    assert large.std["xhat"][1] == pytest.approx(large.std["x"][1], rel=1e-3)
    assert large.std["xhat"][0] == pytest.approx(np.sqrt(large.std["x"][0] ** 2 / (large.std["x"][0] ** 2 + 1)))


def test_explorer_gamma_zero_makes_feature_zero_constant_beta():
    result = forward_explorer(gamma=0.0, beta=2.5)
    np.testing.assert_array_equal(result.stages["y"][:, 0], 2.5)
    assert result.std["y"][0] == 0 and result.corr["y"] is None
    assert result.corr["xhat"] == pytest.approx(result.corr["x"])


def test_explorer_negative_gamma_flips_feature_zero_and_the_sign_of_the_correlation():
    result = forward_explorer(gamma=-2.0, beta=1.0)
    np.testing.assert_allclose(result.stages["y"][:, 0], -2.0 * result.stages["xhat"][:, 0] + 1.0)
    assert result.std["y"][0] == pytest.approx(2 * result.std["xhat"][0])
    assert result.mean["y"][0] == pytest.approx(1.0)
    assert result.corr["y"] == pytest.approx(-result.corr["x"])


def test_explorer_larger_batches_extend_the_same_pool():
    small, big = forward_explorer(m=16), forward_explorer(m=EXPLORER_POOL_SIZE)
    np.testing.assert_array_equal(big.stages["x"][:16], small.stages["x"])


@pytest.mark.parametrize("kwargs, match", [
    ({"m": 1}, r"m must be an integer in \[2, 1024\]"),
    ({"m": 2000}, r"m must be an integer in \[2, 1024\], got 2000"),
    ({"m": 2.5}, r"m must be an integer"),
    ({"eps": 0.0}, "eps must be a positive finite number"),
    ({"gamma": math.nan}, "gamma must be a finite number"),
    ({"beta": "1"}, "beta must be a finite number"),
])
def test_explorer_rejects_bad_settings_with_a_clear_message(kwargs, match):
    with pytest.raises(ValueError, match=match):
        forward_explorer(**kwargs)


# --------------------------------------------------------------------------------------------- identity

def test_identity_holds_for_the_batch_its_statistics_came_from_only_and_always_in_eval_mode():
    errors = identity_recovery()
    assert errors["train A"] < 1e-14
    assert errors["train B"] > 0.01
    assert errors["eval A"] < 1e-14 and errors["eval B"] < 1e-14


# ------------------------------------------------------------------------------------------------- eps

def test_eps_gain_is_capped_by_one_over_sqrt_eps_inside_and_one_over_eps_outside():
    gains = eps_gain(np.array([1e-4]), 1e-5)
    sigma = 1e-4 * np.sqrt(2 / 3)
    assert gains["inside"][0] == pytest.approx(1 / np.sqrt(sigma**2 + 1e-5), rel=1e-10)
    assert gains["outside"][0] == pytest.approx(1 / (sigma + 1e-5), rel=1e-10)
    assert 316 < gains["inside"][0] < 316.3 and 10_900 < gains["outside"][0] < 10_920
    sweep = eps_gain(np.logspace(-9, 0, 50), 1e-5)
    # (1 +- s is rounded to float64, so a measured gain at s = 1e-9 carries a relative error of about 1e-7)
    assert sweep["inside"].max() <= 1 / np.sqrt(1e-5) * (1 + 1e-6)
    assert sweep["inside"].max() > 0.999 * 1 / np.sqrt(1e-5)
    assert 0.99e5 < sweep["outside"].max() <= 1e5
    # far above sqrt(eps) both are the plain 1/sigma
    assert sweep["inside"][-1] == pytest.approx(1 / sweep["std"][-1], rel=1e-4)


def test_eps_gain_rejects_non_positive_spreads():
    with pytest.raises(ValueError, match="spreads must be a non-empty array of positive"):
        eps_gain(np.array([1e-3, 0.0]))


# -------------------------------------------------------------------------------------- float32 numerics

def test_one_pass_variance_is_erratic_and_can_be_exactly_zero():
    data = variance_precision()  # the figure's 21 offsets
    offsets = data["offsets"]
    zero = offsets[data["one_pass"] == 0]
    np.testing.assert_allclose(zero, [10**3.75, 10**4.25])  # 5,623 and 17,783: variance 0, gain 1/sqrt(eps)
    np.testing.assert_allclose(offsets[data["one_pass"] < 0], [1e4, 10**4.5])
    at = {round(float(o)): i for i, o in enumerate(offsets)}
    assert data["one_pass_error"][at[1000]] > 0.15 and data["one_pass_error"][at[1778]] < 0.005  # not monotone
    assert data["two_pass_error"].max() < 1e-4


def test_one_pass_variance_fails_far_from_zero_and_two_pass_does_not():
    data = variance_precision(np.array([1.0, 1e3, 1e4, 1e5]))
    assert data["one_pass_error"][0] < 1e-6
    assert data["one_pass"][2] < 0, "at offset 1e4 the float32 one-pass variance comes out negative"
    assert data["one_pass_error"][3] > 100
    assert np.all(data["two_pass_error"] < 1e-4)
    assert data["exact"] == pytest.approx(np.full(4, data["exact"][0]), rel=1e-4)


def test_sequential_float32_mean_drifts_where_pairwise_and_float64_do_not():
    x = (np.random.default_rng(0).standard_normal(1_000_000) + 1000).astype(np.float32)
    assert sequential_float32_mean(x) > 1005
    assert abs(float(x.mean()) - 1000) < 0.01 and abs(x.mean(dtype=np.float64) - 1000) < 0.01
    small = np.arange(10, dtype=np.float32)
    assert sequential_float32_mean(small) == 4.5


def test_running_sum_drift_explains_the_float32_mean_range_by_range():
    x = (np.random.default_rng(0).standard_normal((1_000_000, 1)) + 1000).astype(np.float32)
    drift = running_sum_drift(x, edges=(2.0**28, 2.0**29))
    assert drift.mean == pytest.approx(sequential_float32_mean(x), abs=1e-9)
    assert drift.mean - drift.exact_mean == pytest.approx(drift.mean_shift.sum(), abs=1e-9)
    assert drift.fraction.sum() == pytest.approx(1)
    np.testing.assert_array_equal(drift.spacing[1:], [32, 64])
    np.testing.assert_array_equal(drift.typical_step, [1000, 992, 1024])
    assert abs(drift.mean_shift[0]) < 0.01 and -2.3 < drift.mean_shift[1] < -2.0 and 10.9 < drift.mean_shift[2] < 11.2
    assert 0.44 < drift.fraction[2] < 0.48


def test_running_sum_drift_is_exact_on_small_integers_and_checks_its_edges():
    drift = running_sum_drift(np.arange(10), edges=(20.0,))
    np.testing.assert_array_equal(drift.mean_shift, [0, 0])
    # the sums before adding 0, 1, ..., 9 are 0, 0, 1, 3, 6, 10, 15 (below 20) and 21, 28, 36
    assert drift.mean == 4.5 and drift.fraction.tolist() == [0.7, 0.3]
    assert drift.typical_step.tolist() == [3.0, 8.0]
    with pytest.raises(ValueError, match="edges must be increasing"):
        running_sum_drift(np.arange(10), edges=(2.0, 1.0))
    with pytest.raises(ValueError, match="at least 2 values"):
        running_sum_drift(np.ones(1))


def test_torch_output_std_sees_the_drift_for_long_batches_without_spatial_positions():
    torch.set_num_threads(1)
    from bnlab.numerics import torch_kernel_statistics

    same = torch_kernel_statistics(rows=1_000_000, offset=1000.0)["torch CPU kernel"]["output_std"]
    assert torch_output_std((1_000_000, 1)) == pytest.approx(same, rel=1e-6)
    assert torch_output_std((1_000_000, 1, 1, 1)) < 0.5  # 1x1 maps: the same long sum along N
    assert torch_output_std((256, 1, 64, 64)) == pytest.approx(1.0, abs=1e-3)
    assert torch_output_std((20, 3), offset=0.0) == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="shape"):
        torch_output_std((5,))


# -------------------------------------------------------------------------------------- batch dependence

def test_one_examples_output_spread_shrinks_like_one_over_sqrt_m():
    result = batch_dependence(batches=2000)
    assert sorted(result.outputs) == [4, 16, 64, 256]
    assert all(out.shape == (2000,) for out in result.outputs.values())
    assert -0.55 < result.slope < -0.4
    assert 1.8 < result.spreads[64] / result.spreads[256] < 2.2
    # large m: spread near the delta-method value sqrt((1 + x0^2 / 2) / m), centred on the population output
    assert result.spreads[256] == pytest.approx(np.sqrt(1.5 / 256), rel=0.1)
    assert np.mean(result.outputs[256]) == pytest.approx(result.population_output, abs=0.01)
    # a batch of m bounds |xhat| by sqrt(m - 1)
    assert np.abs(result.outputs[4]).max() <= np.sqrt(3) + 1e-9


def test_batch_dependence_uses_each_column_as_its_own_batch():
    result = batch_dependence(x0=0.5, batch_sizes=(2, 3), batches=5, seed=1)
    assert np.all(np.abs(result.outputs[2]) < 1)  # a batch of two: +-1/sqrt(1 + eps/var), just below 1
    rng = np.random.default_rng(1)
    rng.standard_normal((1, 5))  # the m = 2 draws
    mates = rng.standard_normal((2, 5))
    column = np.array([[0.5], [mates[0, 0]], [mates[1, 0]]])
    expected = batchnorm_forward(column, np.ones(1), np.zeros(1))[0][0, 0]
    assert result.outputs[3][0] == pytest.approx(expected, rel=1e-12)


def test_batch_dependence_needs_two_sizes():
    with pytest.raises(ValueError, match="at least two sizes"):
        batch_dependence(batch_sizes=(8,))


# ------------------------------------------------------------------------------------------------ figures

def test_every_lecture_2_figure_draws():
    from bnlab.plots.forward import (
        plot_batch_dependence,
        plot_eps_effect,
        plot_forward_explorer,
        plot_normalization_stages,
        plot_variance_precision,
    )

    x = explorer_pool(200)
    figures = [plot_normalization_stages(x, np.ones(2), np.zeros(2)), plot_eps_effect(),
               plot_variance_precision(n=1000),
               plot_batch_dependence(batch_dependence(batches=200)),
               plot_forward_explorer(forward_explorer(gamma=0.0, m=2))]
    for figure in figures:
        assert figure.axes and all(ax.get_title() or not ax.axison for ax in figure.axes)
        assert all(ax.get_xlabel() != "value" for ax in figure.axes), "every value axis names its units"
        matplotlib.pyplot.close(figure)


def test_explorer_figure_gives_each_input_feature_its_own_axis():
    from bnlab.plots.forward import plot_forward_explorer

    result = forward_explorer()
    fig = plot_forward_explorer(result)
    inputs = [ax for ax in fig.axes if ax.get_title().startswith("input x, feature")]
    assert len(inputs) == 2
    for feature, ax in enumerate(inputs):
        low, high = ax.get_xlim()
        values = result.stages["x"][:, feature]
        assert low <= values.min() and values.max() <= high
        assert high - low < 3 * np.ptp(values), "the axis spans this feature, not both"
        assert sum(patch.get_height() > 0 for patch in ax.patches) > 5, "the nearly constant feature is visible"
    labels = [ax.get_xlabel() for ax in fig.axes]
    assert any("output units" in label for label in labels) and any("epsilon" in label for label in labels)
    matplotlib.pyplot.close(fig)


def test_variance_precision_figure_marks_negative_and_zero_variances():
    from bnlab.plots.forward import plot_variance_precision

    fig = plot_variance_precision()
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert any("negative" in label for label in labels) and any("exactly 0" in label for label in labels)
    matplotlib.pyplot.close(fig)


# ---------------------------------------------------------------------------------------------- dashboard

def test_forward_dashboard_is_instant_and_draws_its_default():
    from bnlab.widgets.forward import ForwardDashboard

    dash = ForwardDashboard(progress=False)
    assert dash.trains is False and dash.last_error is None
    assert dash.last_params == {"gamma": 1.0, "beta": 0.0, "eps": 1e-5, "m": 64}
    assert bytes(dash.image.value).startswith(b"\x89PNG")
    assert sum("correlation" in ax.get_title() for ax in dash.figure.axes) == 2


@pytest.mark.parametrize("setting", [
    {"m": 2}, {"m": 3}, {"m": 1024}, {"eps": 1e-8}, {"eps": 1.0}, {"gamma": 0.0}, {"gamma": -3.0},
    {"gamma": -3.0, "beta": 3.0, "eps": 1.0, "m": 2}, {"gamma": 0.0, "m": 2, "eps": 1e-8},
])
def test_forward_dashboard_extreme_settings_draw_without_error(setting):
    from bnlab.widgets.forward import ForwardDashboard

    dash = ForwardDashboard(progress=False)
    dash.set(**setting)
    assert dash.last_error is None, dash.error.value
    result = dash.last_result
    assert result.m == dash.params()["m"]
    assert all(np.all(np.isfinite(values)) for values in result.stages.values())
    np.testing.assert_allclose(result.mean["xhat"], 0, atol=1e-9)
    assert np.all(result.std["xhat"] <= 1 + 1e-12)
    assert result.gain.max() <= 1 / np.sqrt(result.eps) * (1 + 1e-12)
    np.testing.assert_allclose(result.mean["y"], result.beta, atol=1e-9)
    np.testing.assert_allclose(result.std["y"], np.abs(result.gamma) * result.std["xhat"], rtol=1e-9, atol=1e-12)
    expected = None if result.gamma[0] == 0 else np.sign(result.gamma[0]) * result.corr["x"]
    assert result.corr["y"] == (None if expected is None else pytest.approx(expected, abs=1e-9))


def test_forward_dashboard_matches_torch_at_its_setting():
    from bnlab.widgets.forward import ForwardDashboard

    dash = ForwardDashboard(progress=False, gamma=-1.5, beta=0.5, eps=1e-3, m=8)
    result = dash.last_result
    expected = torch.nn.functional.batch_norm(torch.from_numpy(result.stages["x"]), None, None,
                                              torch.from_numpy(result.gamma), torch.from_numpy(result.beta),
                                              training=True, eps=1e-3).numpy()
    np.testing.assert_allclose(result.stages["y"], expected, rtol=1e-12, atol=1e-12)
