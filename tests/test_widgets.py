"""bnlab.widgets: dashboards built, driven and read back without a kernel; errors shown, never swallowed."""

from dataclasses import replace

import numpy as np
import pytest

from bnlab.experiments import BatchSizeConfig, DepthConfig, _cache
from bnlab.widgets import BatchSizeDashboard, DepthDashboard, LearningRateDashboard, WeightDecayDashboard

TINY_DEPTH = DepthConfig(steps=12, record_every=6, seeds=(0, 1))


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "cache"))
    _cache._memory.clear()
    yield tmp_path / "cache"
    _cache._memory.clear()


def test_the_default_depth_setting_draws_from_the_shipped_cache():
    dash = DepthDashboard(progress=False)
    assert dash.last_error is None and dash.error.value == ""
    assert dash.status.value == "from the cache"
    assert dash.last_params == {"depth": 10, "activation": "relu", "norm": "none", "init": "default",
                                "init_std": DepthConfig().init_std}
    assert bytes(dash.image.value).startswith(b"\x89PNG")
    assert "same with BN" in dash.last_result["compare"]
    assert len(dash.figure.axes) == 3


def test_moving_a_control_redraws_with_the_new_setting():
    dash = DepthDashboard(progress=False)
    before, image = dash.updates, dash.image.value
    dash.controls["depth"].value = 20
    dash.controls["norm"].value = "batch"
    assert dash.updates == before + 2
    assert dash.last_params["depth"] == 20 and dash.last_params["norm"] == "batch"
    assert dash.image.value != image
    runs = dash.last_result["runs"]
    assert runs.values("percentiles_init").shape[1] == 20
    assert "depth 20" in dash.figure._suptitle.get_text()


def test_a_setting_outside_the_grid_waits_for_train_live_then_trains(user_cache):
    dash = DepthDashboard(base=TINY_DEPTH, progress=False)  # tiny runs: nothing of this is shipped
    assert dash.updates == 0 and "not precomputed" in dash.status.value
    assert dash.last_result is None
    dash.run_button.click()
    assert dash.last_error is None, dash.error.value
    # drawn twice: the first seed alone (a quick first answer), then both seeds
    assert dash.updates == 2 and dash.status.value == "trained live (now cached)"
    assert dash.last_result["runs"].seeds == (0, 1)
    assert len(list(user_cache.glob("depth-*.npz"))) == 2
    assert dash.base == TINY_DEPTH, "the staged run must restore the dashboard's config"
    dash.set(depth=3)                                   # not trained yet: waits again
    assert dash.updates == 2 and "not precomputed" in dash.status.value
    dash.set(depth=10)                                  # trained above: answers from the cache
    assert dash.updates == 3 and dash.status.value == "from the cache"


def test_an_exception_in_the_computation_is_shown_not_swallowed(monkeypatch):
    dash = DepthDashboard(progress=False)

    def broken(*args, **kwargs):
        raise RuntimeError("the experiment broke")

    monkeypatch.setattr("bnlab.widgets.dashboards.depth_experiment", broken)
    drawn = dash.updates
    dash.controls["depth"].value = 15
    assert isinstance(dash.last_error, RuntimeError)
    assert "Error while computing: RuntimeError: the experiment broke" in dash.error.value
    assert "Traceback" in dash.error.value and "failed" in dash.status.value
    assert dash.updates == drawn
    monkeypatch.undo()
    dash.controls["depth"].value = 20                   # the next good update clears the error
    assert dash.last_error is None and dash.error.value == ""


def test_an_exception_while_drawing_is_shown_too(monkeypatch):
    dash = DepthDashboard(progress=False)
    monkeypatch.setattr("bnlab.widgets.dashboards.plot_depth_runs",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("cannot draw this")))
    dash.controls["activation"].value = "sigmoid"
    assert "Error while drawing: ValueError: cannot draw this" in dash.error.value


def test_the_run_button_reports_errors_the_same_way(monkeypatch):
    dash = DepthDashboard(progress=False)
    monkeypatch.setattr(dash, "compute", lambda params, live: 1 / 0)
    dash.run_button.click()
    assert isinstance(dash.last_error, ZeroDivisionError)
    assert "ZeroDivisionError" in dash.error.value


def test_set_rejects_unknown_controls():
    dash = DepthDashboard(progress=False, update=False)
    with pytest.raises(ValueError, match=r"unknown control\(s\) \['depht'\]; this dashboard has"):
        dash.set(depht=3)


def test_batch_size_dashboard_switches_test_statistics_and_explains_impossible_settings():
    dash = BatchSizeDashboard(progress=False)
    assert dash.status.value == "from the cache"
    assert sorted(dash.last_result["bn"]) == [2, 4, 8, 16, 32, 64, 128]
    population_title = dash.figure.axes[1].get_title()
    dash.controls["norm_batch_size"].value = 2
    dash.controls["test_statistics"].value = "batch"
    assert "batch statistics" in dash.figure.axes[1].get_title() != population_title
    dash.controls["norm_batch_size"].value = 256
    assert "cannot be larger than the SGD batch (128)" in dash.error.value
    dash.controls["batch_size"].value = 256
    assert dash.last_error is None and sorted(dash.last_result["bn"])[-1] == 256


def test_learning_rate_dashboard_snaps_the_log_slider_to_the_grid():
    dash = LearningRateDashboard(progress=False)
    dash.controls["lr"].value = 10 ** 0.5
    assert dash.last_result["lr"] == 3.162 and dash.status.value == "from the cache"
    stable = dash.last_result["max_stable"]
    assert stable["BN"] >= 5 * stable["no BN"]


def test_weight_decay_dashboard_reads_every_grid_value():
    dash = WeightDecayDashboard(progress=False)
    assert sorted(dash.last_result) == [0.0, 5e-4, 2e-3, 5e-3]
    dash.controls["weight_decay"].value = 5e-3
    assert dash.last_params == {"weight_decay": 5e-3} and dash.last_error is None
    assert np.all(np.isfinite(dash.last_result[5e-3].mean("weight_norm")))


def test_live_batch_size_setting_trains_every_line_it_needs(user_cache):
    base = replace(BatchSizeConfig(), steps=8, record_every=4, seeds=(0,))
    dash = BatchSizeDashboard(base=base, progress=False)
    assert "not precomputed" in dash.status.value
    assert dash.run()
    assert set(dash.last_result["others"]) == {"LayerNorm", "GroupNorm"}
    assert list(dash.last_result["bn"]) == [8]


def test_a_displayed_dashboard_carries_its_figure_for_viewers_without_a_kernel():
    """JupyterLab renders the widget; GitHub, nbconvert and an unrun notebook fall back to the PNG."""
    import base64

    dash = DepthDashboard(progress=False)
    bundle = dash._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert base64.b64decode(bundle["image/png"]) == bytes(dash.image.value)
    assert bundle["text/plain"].startswith(dash.title) and "VBox" not in bundle["text/plain"]


def test_an_instant_dashboard_has_no_train_button_and_computes_on_every_move():
    from ipywidgets import FloatSlider
    from matplotlib.figure import Figure

    from bnlab.widgets import Dashboard

    class Square(Dashboard):
        title = "square"
        trains = False

        def __init__(self):
            super().__init__({"a": FloatSlider(value=2.0, min=0.0, max=5.0)})

        def compute(self, params, live):
            assert live, "an instant dashboard always computes"
            return params["a"] ** 2

        def draw(self, params, result):
            figure = Figure()
            figure.add_subplot().set_title(f"{result:g}")
            return figure

    dash = Square()
    assert dash.last_result == 4.0 and dash.last_error is None
    assert all(dash.run_button not in getattr(row, "children", ()) for row in dash.widget.children)
    dash.set(a=3.0)
    assert dash.last_result == 9.0 and dash.last_error is None and dash.status.value == ""
