"""Lectures 3 and 4's computations (bnlab.lessons.backward) and their figures."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from bnlab.functional import batchnorm_backward, batchnorm_forward  # noqa: E402
from bnlab.gradcheck import rel_error  # noqa: E402
from bnlab.lessons.backward import (  # noqa: E402
    NODES,
    all_ones_trap,
    catalogue_gradient_checks,
    finite_difference_study,
    node_gradients,
    step_tradeoff,
    torch_gradients,
    unbiased_in_both,
)
from bnlab.mistakes import BACKWARD_DX_MISTAKES, backward_with  # noqa: E402

TINY = (np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 30.0]]), np.array([2.0, 0.5]), np.array([1.0, -1.0]),
        np.array([[0.5, -1.0], [1.0, 0.0], [-2.0, 3.0]]))


def _random_batch(shape, seed=0):
    rng = np.random.default_rng(seed)
    channels = shape[1]
    x = rng.standard_normal(shape) * rng.uniform(0.5, 3, (1, channels) + (1,) * (len(shape) - 2)) + 2
    return x, rng.uniform(-2, 2, channels), rng.standard_normal(channels), rng.standard_normal(shape)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------------------------------- references


@pytest.mark.parametrize("shape", [(3, 2), (5, 3, 2, 2)])
def test_torch_gradients_equal_the_staged_backward(shape):
    x, gamma, beta, dout = TINY if shape == (3, 2) else _random_batch(shape)
    ours = batchnorm_backward(dout, batchnorm_forward(x, gamma, beta)[1])
    theirs = torch_gradients(x, gamma, beta, dout)
    assert [t.shape for t in theirs] == [o.shape for o in ours]
    for a, b in zip(ours, theirs):
        assert rel_error(a, b) < 1e-12


@pytest.mark.parametrize("shape", [(3, 2), (4, 3, 2, 3)])
def test_node_gradients_are_the_staged_backwards_intermediates(shape):
    x, gamma, beta, dout = TINY if shape == (3, 2) else _random_batch(shape, seed=1)
    out, cache = batchnorm_forward(x, gamma, beta)
    grads = node_gradients(x, gamma, beta, dout)
    assert set(grads) == set(NODES)
    channel = (1, shape[1]) + (1,) * (len(shape) - 2)
    for name in ("mu", "var", "std", "inv"):
        assert grads[name].shape == channel, name  # summed over the batch, like the node itself
    for name in ("x", "xc", "xhat"):
        assert grads[name].shape == shape, name
    dx, dgamma, dbeta = batchnorm_backward(dout, cache)
    assert rel_error(grads["x"], dx) < 1e-12
    assert rel_error(grads["gamma"], dgamma) < 1e-12 and rel_error(grads["beta"], dbeta) < 1e-12
    axes = (0,) + tuple(range(2, len(shape)))
    assert rel_error(grads["xhat"], dout * cache.gamma) < 1e-12
    # dL/dmu = -sum of dL/dxc over both branches, and dL/dx = dL/dxc + dL/dmu / m
    assert rel_error(grads["mu"], -grads["xc"].sum(axis=axes, keepdims=True)) < 1e-12
    assert rel_error(grads["x"], grads["xc"] + grads["mu"] / cache.m) < 1e-12
    # dL/dvar from the table: -1/(2 s^3) * sum(dxhat * xc)
    dvar = -0.5 * (dout * cache.gamma * cache.xc).sum(axis=axes, keepdims=True) / cache.std**3
    assert rel_error(grads["var"], dvar) < 1e-12


def test_node_gradients_of_lecture_3s_checkpoint():
    grads = node_gradients(*TINY)
    np.testing.assert_allclose(grads["var"].ravel(), [8 / (14 / 3 + 1e-5) ** 1.5, -10 / (200 / 3 + 1e-5) ** 1.5])
    np.testing.assert_allclose(grads["mu"].ravel(), [1 / np.sqrt(14 / 3 + 1e-5), -1 / np.sqrt(200 / 3 + 1e-5)])


def test_reference_functions_reject_mismatched_inputs():
    x, gamma, beta, dout = TINY
    with pytest.raises(ValueError, match="dout"):
        torch_gradients(x, gamma, beta, dout[:2])
    with pytest.raises(ValueError, match="gamma"):
        node_gradients(x, gamma[:1], beta, dout)
    with pytest.raises(ValueError, match="eps"):
        torch_gradients(x, gamma, beta, dout, eps=0.0)


# ------------------------------------------------------------------------------------- finite differences


def test_step_tradeoff_minimizes_the_model():
    curvature, eps = 0.065, 1.2e-7
    h_star, floor = step_tradeoff(curvature, eps)
    model = lambda h: curvature * h**2 + eps / h  # noqa: E731
    assert floor == pytest.approx(model(h_star))
    assert model(h_star) < model(h_star * 1.1) and model(h_star) < model(h_star / 1.1)
    assert h_star == pytest.approx((eps / (2 * curvature)) ** (1 / 3))
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError):
            step_tradeoff(bad, eps)
        with pytest.raises(ValueError):
            step_tradeoff(curvature, bad)


def test_finite_difference_study_matches_its_model():
    study = finite_difference_study()
    assert study.steps.shape == (33,) and set(study.errors) == {"float64", "float32"}
    assert 0.01 < study.curvature < 1
    # float64 reaches ~1e-10, float32 only ~2e-5: far above the gradient check's tolerance
    assert study.smallest("float64")[1] < 1e-9
    assert 1e-6 < study.smallest("float32")[1] < 1e-4
    for name in ("float64", "float32"):
        best_h, best = study.smallest(name)
        h_star, floor = study.predicted[name]
        assert h_star / 3 < best_h < h_star * 3, name  # the model locates the best step ...
        assert floor / 5 < best < floor * 5, name      # ... and the error floor
    # truncation dominates at large steps: the two dtypes agree there
    np.testing.assert_allclose(study.errors["float32"][-1], study.errors["float64"][-1], rtol=0.05)


def test_leaving_eps_out_of_the_backward_shows_in_float64_only():
    """The slip changes dx by ~eps/var: above the float64 check's tolerance 1e-6, below float32's noise."""
    study = finite_difference_study()
    assert 1e-6 < study.eps_missing_at_best_step("float64") < 1e-5
    right32, slipped32 = study.smallest("float32")[1], study.eps_missing_at_best_step("float32")
    assert slipped32 < 1e-4 and abs(slipped32 - right32) < right32  # a float32 check cannot tell them apart
    x, gamma, beta, dout = TINY
    _, cache = batchnorm_forward(x, gamma, beta)
    slipped = backward_with("eps_missing_in_backward")(dout, cache)
    right = batchnorm_backward(dout, cache)
    np.testing.assert_allclose(slipped[2], right[2])  # dbeta does not involve std
    assert 0 < rel_error(slipped[0], right[0]) < 1e-3
    # with eps = 0 the slip is no slip
    _, exact_cache = batchnorm_forward(x, gamma, beta, eps=1e-300)
    np.testing.assert_allclose(backward_with("eps_missing_in_backward")(dout, exact_cache)[0],
                               batchnorm_backward(dout, exact_cache)[0], rtol=1e-12, atol=1e-15)


def test_float32_numerical_gradient_is_exactly_zero_where_the_step_is_lost_to_rounding():
    study = finite_difference_study()
    zero32, zero64 = study.zero_fraction["float32"], study.zero_fraction["float64"]
    assert zero32.shape == study.steps.shape and np.all(zero64 == 0)
    tiny = study.steps <= 1e-8
    assert np.all(zero32[tiny] == 1) and np.all(study.errors["float32"][tiny] == 1)  # rel_error(exact, 0) = 1
    i = int(np.argmin(np.abs(study.steps - 1e-7)))
    assert 0.2 < zero32[i] < 0.35  # only the entries with |x| >= 2, where float32 numbers are 2.4e-7 apart
    assert np.all(zero32[study.steps >= 2e-7] == 0)
    assert study.input_spacing["float32"] == pytest.approx(2.0**-22)  # largest |x| is 3.65, in [2, 4)
    assert study.input_spacing["float64"] == pytest.approx(2.0**-51)


def test_finite_difference_study_checks_its_arguments():
    with pytest.raises(ValueError, match="1e-3"):
        finite_difference_study(steps=[1e-6, 1e-5])
    with pytest.raises(ValueError, match="positive"):
        finite_difference_study(steps=[-1e-2, 1e-2])
    with pytest.raises(ValueError, match="shape"):
        finite_difference_study(shape=(5, 3, 2))


# ------------------------------------------------------------------------------------- fooling a check


def test_all_ones_upstream_gradient_lets_six_mistakes_through():
    trap = all_ones_trap(*TINY[:3])
    assert set(trap) == {"staged backward", *BACKWARD_DX_MISTAKES}
    assert trap["staged backward"] < 1e-12
    passing = {name for name in BACKWARD_DX_MISTAKES if trap[name] < 1e-12}
    assert passing == {"variance_branch_missing", "variance_branch_missing_1_over_m", "gamma_missing",
                       "eps_missing_in_backward", "sign_flipped", "zeros"}
    assert all(trap[name] > 0.1 for name in set(BACKWARD_DX_MISTAKES) - passing)


def test_a_proper_gradient_check_catches_every_catalogued_mistake():
    errors = catalogue_gradient_checks(shape=(6, 4))
    assert errors["staged backward"] < 1e-8
    assert min(errors[name] for name in BACKWARD_DX_MISTAKES if name != "eps_missing_in_backward") > 0.05
    assert 1e-6 < errors["eps_missing_in_backward"] < 1e-5  # caught, but only by a float64 check


def test_unbiased_variance_in_both_passes_the_gradient_check_and_only_references_catch_it():
    result = unbiased_in_both(shape=(6, 4))
    assert all(result[f"check {name}"] < 1e-8 for name in ("dx", "dgamma", "dbeta"))
    assert result["predicted output error"] == pytest.approx(1 - np.sqrt(5 / 6))
    assert result["output vs reference"] == pytest.approx(result["predicted output error"], rel=1e-4)
    assert result["dx vs reference"] > 0.01
    spatial = unbiased_in_both(shape=(2, 3, 2, 2))  # m = 8 values per channel
    assert spatial["check dx"] < 1e-8
    assert spatial["output vs reference"] == pytest.approx(1 - np.sqrt(7 / 8), rel=1e-4)
    with pytest.raises(ValueError, match="2 values per channel"):
        unbiased_in_both(shape=(1, 3))


# ------------------------------------------------------------------------------------------------ figures


def test_figures_of_lectures_3_and_4():
    from matplotlib.figure import Figure

    from bnlab.plots.gradients import plot_gradient_check_vs_step, plot_jacobian
    from bnlab.plots.graph import draw_batchnorm_graph

    study = finite_difference_study(steps=np.logspace(-8, -1, 8))
    fig = plot_gradient_check_vs_step(study)
    assert isinstance(fig, Figure) and fig.axes[0].get_xscale() == "log"
    assert fig.axes[0].get_legend() is not None
    jacobian = plot_jacobian([1.0, 2.0, 6.0], gamma=2.0)
    assert isinstance(jacobian, Figure) and "partial y_i" in jacobian.axes[-1].get_ylabel()  # the colorbar
    fig = draw_batchnorm_graph()
    assert fig.axes[0].get_legend() is not None
    texts = [text.get_text() for text in fig.axes[0].texts]
    # the graph speaks the code's language: steps 1-7 with their variable names, std and inv rather than s, r
    assert {"1: mu", "2: xc", "3: var", "4: std", "5: inv", "6: xhat", "7: out"} <= set(texts)
    assert any(r"\mathrm{inv}" in text for text in texts) and not any("r = 1/s" in text for text in texts)
    study = finite_difference_study(steps=np.logspace(-9, -1, 9))
    labels = plot_gradient_check_vs_step(study).axes[0].get_legend_handles_labels()[1]
    assert "float32: numerical dx exactly 0" in labels
