"""bnlab.widgets: dashboards built, driven and read back without a kernel; what the lectures invite never
breaks them (divergence, underflow, impossible combinations); errors are shown, never swallowed."""

import base64
import threading
from dataclasses import replace

import numpy as np
import pytest

from bnlab.experiments import BatchSizeConfig, DepthConfig, LearningRateConfig
from bnlab.widgets import BatchSizeDashboard, DepthDashboard, LearningRateDashboard, WeightDecayDashboard

TINY = {"steps": 12, "record_every": 6, "seeds": (0, 1, 2)}
TINY_DEPTH = DepthConfig(**TINY)


def quiet(dashboard_class, **kwargs):
    """A dashboard whose live runs train in the calling thread (tests), without a progress bar."""
    return dashboard_class(progress=False, background=False, **kwargs)


# ------------------------------------------------------------------------------------------------ depth


def test_the_default_depth_setting_draws_from_the_shipped_cache():
    dash = quiet(DepthDashboard)
    assert dash.last_error is None and dash.error.value == ""
    assert dash.status.value.startswith("from the cache · test accuracy")
    assert dash.run_button.disabled, "a cached setting has nothing to train"
    assert dash.controls["init_std"].disabled, "the Gaussian std does nothing under the default init"
    assert dash.last_params == {"depth": 10, "activation": "relu", "norm": "none", "init": "default",
                                "init_std": DepthConfig().init_std}
    assert bytes(dash.image.value).startswith(b"\x89PNG")
    assert "BN (same net)" in dash.last_result["compare"]
    assert len(dash.figure.axes) == 6
    assert dash.figure.dpi >= 100 or dash.image.value  # rendered for a projector (see the DPI test)


def test_moving_a_control_redraws_with_the_new_setting():
    dash = quiet(DepthDashboard)
    before, image = dash.updates, dash.image.value
    dash.controls["depth"].value = 20
    dash.controls["norm"].value = "batch"
    assert dash.updates == before + 2
    assert dash.last_params["depth"] == 20 and dash.last_params["norm"] == "batch"
    assert dash.image.value != image
    assert dash.last_result["runs"].values("percentiles_init").shape[1] == 20
    assert "depth 20" in dash.figure._suptitle.get_text()


def test_every_grid_depth_answers_from_the_cache():
    dash = quiet(DepthDashboard)
    for depth in (2, 3, 4, 5, 6, 7, 8, 10, 15, 20):
        assert dash.set(depth=depth), depth
        assert dash.status.value.startswith("from the cache")


def test_a_setting_outside_the_grid_greys_the_figure_then_trains_one_seed_first(user_cache):
    dash = quiet(DepthDashboard, base=TINY_DEPTH)
    assert dash.updates == 0 and "not precomputed" in dash.status.value and not dash.run_button.disabled
    assert "bnlab-stale" in dash.image._dom_classes
    titles = []
    original = dash._show

    def spy(params, result, source):
        titles.append(result["runs"].headline())
        return original(params, result, source)

    dash._show = spy
    assert dash.run()
    assert dash.last_error is None, dash.error.value
    assert len(titles) == 2 and titles[0].endswith("(1 seed)"), titles
    assert "seeds:" in titles[1]
    assert dash.status.value.startswith("trained live (now cached)")
    assert "bnlab-stale" not in dash.image._dom_classes
    assert dash.run_button.disabled and not dash.running
    assert dash.last_result["runs"].seeds == (0, 1, 2)
    assert len(list(user_cache.glob("depth-*.npz"))) == 3
    assert dash.base == TINY_DEPTH
    dash.set(depth=3)
    assert "not precomputed" in dash.status.value
    dash.set(depth=10)
    assert dash.status.value.startswith("from the cache")


@pytest.mark.parametrize("depth, std", [(10, 10 ** -0.5), (10, 1.0), (15, 10 ** -0.5)])
def test_a_gaussian_init_that_diverges_is_drawn_and_said_in_words(user_cache, depth, std):
    """What lecture 7 invites: std 0.3 or 1.0 blows up at the first updates."""
    dash = quiet(DepthDashboard, base=TINY_DEPTH)
    dash.set(depth=depth, init="gaussian", init_std=std)
    assert not dash.controls["init_std"].disabled
    assert dash.run()
    assert dash.last_error is None and dash.error.value == "", dash.error.value
    runs = dash.last_result["runs"]
    assert runs.num_diverged() == 3
    assert "3 of 3 seeds diverged (updates" in dash.status.value
    assert "3 of 3 seeds diverged" in dash.figure._suptitle.get_text()


def test_a_gaussian_init_whose_gradients_underflow_is_drawn_and_said_in_words(user_cache):
    dash = quiet(DepthDashboard, base=TINY_DEPTH)
    dash.set(depth=20, init="gaussian", init_std=0.001)
    assert dash.run()
    assert dash.last_error is None, dash.error.value
    assert "gradient exactly 0 at init in layer 1 (float32 underflow)" in dash.status.value
    assert "(float32 underflow)" in dash.status.value and "stuck near chance" in dash.status.value


def test_one_diverged_seed_is_named_not_averaged_away(user_cache, monkeypatch):
    dash = quiet(DepthDashboard, base=TINY_DEPTH, update=False)
    real = DepthConfig.run_seed

    def one_diverges(self, seed, progress=False, on_step=None):
        arrays = real(self, seed, progress, on_step)
        if seed == 1:
            arrays = {**arrays, "final_accuracy": np.float64(np.nan), "diverged": np.float64(1),
                      "diverged_at": np.float64(7)}
        return arrays

    monkeypatch.setattr(DepthConfig, "run_seed", one_diverges)
    assert dash.run()
    assert "1 of 3 seeds diverged (update 7)" in dash.status.value
    assert "counting a diverged seed as chance" in dash.status.value


def test_a_live_run_can_be_cancelled_and_the_dashboard_recovers(user_cache):
    dash = DepthDashboard(base=replace(TINY_DEPTH, steps=400, record_every=200), progress=True,
                          background=True)
    assert dash.run_button.disabled is False
    started = threading.Event()
    real = dash._count_update

    def count(seed, update):
        started.set()
        real(seed, update)

    dash._count_update = count
    dash.run_button.click()
    assert dash.running
    assert started.wait(30), "the live run did not start"
    assert all(control.disabled for control in dash.controls.values()), "controls lock while training"
    assert not dash.cancel_button.disabled and dash.run_button.disabled
    dash.cancel_button.click()
    dash.wait(60)
    assert not dash.running and dash.last_error is None
    assert dash.status.value.startswith("cancelled")
    assert not dash.run_button.disabled and dash.cancel_button.disabled
    assert not dash.controls["depth"].disabled and dash.controls["init_std"].disabled
    assert dash.progress_bar.layout.display == "none"


def test_pin_overlays_the_pinned_setting_and_reset_returns_to_the_default():
    dash = quiet(DepthDashboard)
    dash.pin_button.value = True
    assert dash.pinned[0]["depth"] == 10 and dash.pin_button.description == "Unpin"
    dash.set(depth=5)
    labels = dash.figure.legends[0].get_texts()
    assert any(text.get_text().startswith("pinned: depth 10, relu, no norm") for text in labels)
    dash.reset()
    assert dash.params() == dash.defaults and dash.pinned is not None
    dash.pin_button.value = False
    dash.set(depth=5)
    assert not any(text.get_text().startswith("pinned") for text in dash.figure.legends[0].get_texts())


def test_the_figure_can_be_saved_as_png_and_svg(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dash = quiet(DepthDashboard)
    dash.save_buttons["png"].click()
    dash.save_buttons["svg"].click()
    png, svg = dash.saved
    assert png.parent == tmp_path and png.read_bytes().startswith(b"\x89PNG")
    assert svg.suffix == ".svg" and b"<svg" in svg.read_bytes()[:500]
    assert "saved" in dash.status.value and dash.last_error is None
    with pytest.raises(ValueError, match="fmt must be 'png' or 'svg', got 'gif'"):
        dash.save_figure(fmt="gif")


def test_the_dashboard_renders_for_a_projector():
    from PIL import Image
    import io

    dash = quiet(DepthDashboard)
    width, height = Image.open(io.BytesIO(bytes(dash.image.value))).size
    assert width >= 1300, "at least 100 dpi for a 13-inch-wide figure"


# ------------------------------------------------------------------------------------------------ errors


def test_an_exception_in_the_computation_is_shown_not_swallowed(monkeypatch):
    dash = quiet(DepthDashboard)

    def broken(*args, **kwargs):
        raise RuntimeError("the experiment broke")

    monkeypatch.setattr(dash, "runs", broken)
    drawn = dash.updates
    dash.controls["depth"].value = 15
    assert isinstance(dash.last_error, RuntimeError)
    assert "Error while computing: RuntimeError: the experiment broke" in dash.error.value
    assert "Traceback" in dash.error.value and "failed" in dash.status.value
    assert dash.updates == drawn
    monkeypatch.undo()
    dash.controls["depth"].value = 20
    assert dash.last_error is None and dash.error.value == ""


def test_an_exception_while_drawing_is_shown_too(monkeypatch):
    dash = quiet(DepthDashboard)
    monkeypatch.setattr("bnlab.widgets.depth.plot_depth_runs",
                        lambda *a, **k: (_ for _ in ()).throw(ValueError("cannot draw this")))
    dash.controls["activation"].value = "sigmoid"
    assert "Error while drawing: ValueError: cannot draw this" in dash.error.value


def test_the_run_button_reports_errors_the_same_way(monkeypatch, user_cache):
    dash = quiet(DepthDashboard, base=TINY_DEPTH)
    monkeypatch.setattr(dash, "compute", lambda params, live, seeds=None: 1 / 0)
    dash.run_button.click()
    assert isinstance(dash.last_error, ZeroDivisionError)
    assert "ZeroDivisionError" in dash.error.value and not dash.running


def test_set_rejects_unknown_controls():
    dash = quiet(DepthDashboard, update=False)
    with pytest.raises(ValueError, match=r"unknown control\(s\) \['depht'\]; this dashboard has"):
        dash.set(depht=3)


# ------------------------------------------------------------------------------------------------ batch size


def test_the_test_statistics_toggle_switches_the_curves():
    dash = quiet(BatchSizeDashboard)
    assert dash.status.value.startswith("from the cache")
    assert sorted(dash.last_result["bn"]) == [2, 4, 8, 16, 32, 64, 128]
    dash.set(norm_batch_size=2)
    population = dash.figure.axes[0].lines[0].get_ydata().copy()
    dash.set(test_statistics="batch")
    own_batches = dash.figure.axes[0].lines[0].get_ydata()
    assert not np.allclose(population, own_batches)
    assert "own statistics" in dash.figure.legends[0].get_texts()[0].get_text()


def test_an_impossible_combination_is_a_plain_hint_not_an_error():
    dash = quiet(BatchSizeDashboard)
    drawn = dash.updates
    dash.set(norm_batch_size=256)
    assert dash.last_error is None and dash.error.value == ""
    assert "cannot be larger than the SGD batch of 128" in dash.status.value
    assert dash.run_button.disabled and "bnlab-stale" in dash.image._dom_classes and dash.updates == drawn
    dash.set(batch_size=256)
    assert dash.last_error is None and sorted(dash.last_result["bn"])[-1] == 256
    assert "bnlab-stale" not in dash.image._dom_classes


def test_live_batch_size_setting_trains_every_line_it_needs(user_cache):
    base = replace(BatchSizeConfig(), steps=8, record_every=4, seeds=(0,))
    dash = quiet(BatchSizeDashboard, base=base)
    assert "not precomputed" in dash.status.value
    assert dash.run()
    assert set(dash.last_result["others"]) == {"LayerNorm", "GroupNorm"}
    assert list(dash.last_result["bn"]) == [8]


# ------------------------------------------------------------------------------------------------ learning rate


def test_learning_rate_grid_positions_are_cached_and_those_between_train_live():
    dash = quiet(LearningRateDashboard)
    dash.set(lr=10 ** 0.5)
    assert dash.last_result["lr"] == 3.162 and dash.status.value.startswith("from the cache")
    stable = dash.last_result["max_stable"]
    assert stable["BN"] >= 5 * stable["no BN"]
    dash.set(lr=10 ** 0.375)                           # between two grid points
    assert "not precomputed" in dash.status.value and not dash.run_button.disabled


def test_learning_rate_dashboard_has_norm_depth_and_init_controls(user_cache):
    dash = quiet(LearningRateDashboard, base=LearningRateConfig(**{**TINY, "seeds": (0,)}))
    dash.set(nets="BN", depth=4, init="default", lr=10.0)
    assert dash.run()
    assert list(dash.last_result["sweeps"]) == ["BN"] and dash.last_error is None
    dash.set(nets="no BN")
    assert dash.run()
    assert "1 of 1 seeds diverged" in dash.status.value or "test accuracy" in dash.status.value


def test_a_diverging_learning_rate_is_drawn_not_raised(user_cache):
    dash = quiet(LearningRateDashboard, base=LearningRateConfig(**TINY))
    dash.set(lr=10.0)
    assert dash.run() and dash.last_error is None
    assert "no BN at lr 10: 3 of 3 seeds diverged" in dash.status.value


def test_weight_decay_dashboard_reads_every_grid_value_and_pins():
    dash = quiet(WeightDecayDashboard)
    assert sorted(dash.last_result) == [0.0, 5e-4, 2e-3, 5e-3]
    dash.pin_button.value = True
    dash.set(weight_decay=5e-3)
    assert dash.last_params == {"weight_decay": 5e-3} and dash.last_error is None
    assert np.all(np.isfinite(dash.last_result[5e-3].mean("unit_weight_norm")))
    assert any(t.get_text() == "pinned: weight decay 0" for t in dash.figure.legends[0].get_texts())


# ------------------------------------------------------------------------------------------------ base


def test_a_displayed_dashboard_carries_its_figure_for_viewers_without_a_kernel():
    """JupyterLab renders the widget; GitHub, nbconvert and an unrun notebook fall back to the PNG."""
    dash = quiet(DepthDashboard)
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
        pins = False

        def __init__(self):
            super().__init__({"a": FloatSlider(value=2.0, min=0.0, max=5.0)})

        def compute(self, params, live, seeds=None):
            assert live, "an instant dashboard always computes"
            return params["a"] ** 2

        def draw(self, params, result, pinned=None):
            figure = Figure()
            figure.add_subplot().set_title(f"{result:g}")
            return figure

    dash = Square()
    assert dash.last_result == 4.0 and dash.last_error is None
    shown = [child for row in dash.widget.children for child in getattr(row, "children", ())]
    assert dash.run_button not in shown and dash.pin_button not in shown and dash.reset_button in shown
    dash.set(a=3.0)
    assert dash.last_result == 9.0 and dash.last_error is None and dash.status.value == ""
    dash.reset()
    assert dash.last_result == 4.0


def test_a_live_first_stage_with_one_seed_draws_beside_cached_points_with_three(user_cache):
    """The first stage of a live run has one seed; the cached grid points around it have three."""
    from bnlab.experiments import run

    base = LearningRateConfig(**TINY)
    for lr in (0.1, 0.1778):
        run(LearningRateConfig(**{**TINY, "lr": lr}), progress=False)            # cached, 3 seeds
        run(LearningRateConfig(**{**TINY, "lr": lr, "norm": "batch"}), progress=False)
    dash = quiet(LearningRateDashboard, base=base)
    dash.set(lr=10 ** -0.875)                                                     # 0.1334: between grid points
    assert "not precomputed" in dash.status.value
    stages = []
    original = dash._show
    dash._show = lambda params, result, source: (stages.append(
        {lr: len(runs.seeds) for lr, runs in result["sweeps"]["BN"].items()}), original(params, result, source))[1]
    assert dash.run() and dash.last_error is None, dash.error.value
    assert stages[0] == {0.1: 3, 0.1334: 1, 0.1778: 3} and stages[1][0.1334] == 3


def test_both_test_statistics_are_said_and_drawn():
    dash = quiet(BatchSizeDashboard)
    dash.set(norm_batch_size=2, test_statistics="both")
    assert dash.last_error is None
    assert "population statistics 0.546, 0.628, 0.513; batch statistics 0.305, 0.350, 0.307" in dash.status.value


def test_the_learning_rate_status_names_dead_units_and_brackets_only_with_enough_rates(user_cache):
    dash = quiet(LearningRateDashboard)
    dash.set(lr=10.0, nets="BN")
    assert "last hidden layer dead: 0.99, 1.00, 1.00" in dash.status.value
    assert "largest stable among the 13 rates shown: 3.16" in dash.status.value
    tiny = quiet(LearningRateDashboard, base=LearningRateConfig(**{**TINY, "seeds": (0,)}))
    tiny.set(lr=0.1, depth=3)
    assert tiny.run()
    assert "largest stable" not in tiny.status.value, "one rate brackets nothing"
    tiny.set(lr=10 ** -0.875)                            # an off-grid rate, trained live ...
    assert tiny.run()
    tiny.set(lr=0.1)                                     # ... stays in the sweep once the slider moves on
    assert 0.1334 in tiny.last_result["sweeps"]["BN"]


def test_a_pinned_batch_size_curve_keeps_its_statistics():
    dash = quiet(BatchSizeDashboard)
    dash.set(test_statistics="batch")
    dash.pin_button.value = True
    dash.set(test_statistics="population", batch_size=256)
    labels = [t.get_text() for t in dash.figure.legends[0].get_texts()]
    assert any(label.startswith("pinned: SGD batch 128") and "own statistics" in label for label in labels), labels
