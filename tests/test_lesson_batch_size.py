"""Lecture 8's computations (bnlab.lessons.batch_size) and figures, checked against the shipped runs with the
brackets the notebook prints."""

import math
from dataclasses import replace

import numpy as np
import pytest
from matplotlib.figure import Figure

from bnlab.experiments import (
    BatchSizeConfig,
    nbs_by_sgd_batch,
    norm_batch_size_sweep,
    run,
    sgd_batch_size_sweep,
)
from bnlab.lessons.batch_size import (
    accuracy_after_examples,
    bn_jacobian,
    final_train_loss,
    first_update_norm,
    gap_to_other_sgd_batches,
    gradient_at_init,
    late_loss_peak,
    own_statistics_accuracy,
    pair_gain,
    pooled_range,
    relative_steps,
    retrain,
    with_final_train_loss,
)
from bnlab.plots.batch_size import (
    plot_batch_size_sweep,
    plot_equal_examples,
    plot_nbs_by_sgd_batch,
    plot_norm_batch_size,
    plot_pair_gradients,
)

EPS = 1e-5


@pytest.fixture(scope="module")
def sweep_128():
    return norm_batch_size_sweep(batch_size=128, cached_only=True)


@pytest.fixture(scope="module")
def by_batch():
    return nbs_by_sgd_batch(cached_only=True)


@pytest.fixture(scope="module")
def at_init():
    return {g: gradient_at_init(BatchSizeConfig(norm_batch_size=g)) for g in (2, 4, 128)}


@pytest.fixture(scope="module")
def retrained():
    """Seed 0 of the shipped settings g = 2 and g = 128 at SGD batch 128, trained again (about 7 s)."""
    return {g: retrain(BatchSizeConfig(norm_batch_size=g)) for g in (2, 128)}


def inside(values, low=None, high=None) -> bool:
    values = np.asarray(values, dtype=float)
    ok = np.isfinite(values)
    if low is not None:
        ok &= values > low if high is None else values >= low
    if high is not None:
        ok &= values < high if low is None else values <= high
    return bool(ok.all())


# ------------------------------------------------------------------------------------------------ helpers


def test_pooled_range_spans_every_seed_and_a_nan_spoils_it(sweep_128):
    bn, _ = sweep_128
    low, high = pooled_range(bn[g] for g in (8, 16))
    both = np.concatenate([bn[8].final_accuracies(), bn[16].final_accuracies()])
    assert (low, high) == (both.min(), both.max())
    broken = replace(bn[8], arrays=({**bn[8].arrays[0], "final_accuracy": np.float64(np.nan)}, *bn[8].arrays[1:]))
    assert all(math.isnan(v) for v in pooled_range([broken]))


def test_accuracy_after_examples_reads_the_record_of_that_update(sweep_128):
    bn, _ = sweep_128
    runs = bn[128]
    assert np.array_equal(accuracy_after_examples(runs, 128, 600 * 128), runs.final_accuracies())
    assert np.array_equal(accuracy_after_examples(runs, 128, 100 * 128), runs.values("test_accuracy")[:, 2])
    with pytest.raises(ValueError, match="not a recorded update"):
        accuracy_after_examples(runs, 128, 75 * 128)
    with pytest.raises(ValueError, match="not a recorded update"):
        accuracy_after_examples(runs, 128, 100 * 128 + 1)


def test_with_final_train_loss_is_final_train_loss_as_a_scalar(sweep_128):
    bn, _ = sweep_128
    runs = with_final_train_loss(bn[2])
    assert np.array_equal(runs.values("final_train_loss"), final_train_loss(bn[2]))
    assert np.array_equal(final_train_loss(bn[2]), bn[2].values("train_loss")[:, -1])
    assert runs.seeds == bn[2].seeds and np.array_equal(runs.final_accuracies(), bn[2].final_accuracies())


def test_late_loss_peak_reads_only_the_records_after_that_update(sweep_128):
    _, others = sweep_128
    runs = others["GroupNorm"]
    steps, losses = runs.values("steps")[0], runs.values("train_loss")
    assert np.array_equal(late_loss_peak(runs, 300), losses[:, steps > 300].max(axis=1))
    assert np.array_equal(late_loss_peak(runs, -1), losses.max(axis=1))


def test_gap_to_other_sgd_batches_compares_seed_means_at_each_g(by_batch):
    gaps = gap_to_other_sgd_batches(by_batch, 16)
    assert list(gaps) == [2, 4, 8, 16]
    others = [by_batch[b][4].final_accuracies().mean() for b in (64, 128, 256)]
    assert gaps[4] == pytest.approx(by_batch[16][4].final_accuracies().mean() - min(others))
    alone = gap_to_other_sgd_batches({128: by_batch[128], 256: by_batch[256]}, 256)
    assert list(alone) == [2, 4, 8, 16, 32, 64, 128]                     # g = 256: no other SGD batch has it


# ------------------------------------------------------------------------------------ section 1 (shipped)


def test_normalization_batch_two_collapses_and_the_rest_trains(sweep_128):
    bn, others = sweep_128
    population, own = bn[2].final_accuracies(), bn[2].values("batch_stats_accuracy")
    assert inside(population, 0.4, 0.7)
    assert inside(own, high=0.45)
    assert inside(population - own, low=0.1)          # population statistics beat the pair's own, every seed
    assert inside(bn[128].final_accuracies() - bn[128].values("batch_stats_accuracy"), -0.02, 0.02)
    assert inside(bn[4].final_accuracies(), 0.9, 0.95)
    low, _ = pooled_range(bn[g] for g in bn if g >= 8)
    assert low > 0.94
    assert inside(others["LayerNorm"].final_accuracies(), low=0.93)
    assert inside(others["GroupNorm"].final_accuracies(), low=0.93)


def test_normalization_batch_two_is_a_training_failure(sweep_128):
    bn, _ = sweep_128
    assert inside(final_train_loss(bn[2]), low=1.5) and final_train_loss(bn[2]).max() < math.log(10)
    assert inside(final_train_loss(bn[128]), high=0.02)


def test_the_training_loss_rises_with_the_noise_of_small_normalization_batches(sweep_128):
    bn, others = sweep_128
    loss_8 = final_train_loss(bn[8])
    assert inside(loss_8, 0.1, 0.25)
    assert 10 <= loss_8.mean() / final_train_loss(bn[128]).mean() <= 100
    assert inside(bn[8].values("batch_stats_accuracy"), 0.85, 0.9)   # the same noise, on the test digits
    assert inside(bn[8].final_accuracies(), low=0.94)
    assert inside(late_loss_peak(others["LayerNorm"], 300), high=0.05)
    assert inside(late_loss_peak(others["GroupNorm"], 300), high=0.3)
    assert late_loss_peak(others["GroupNorm"], 300).max() > 0.2                # the one GroupNorm spike
    assert inside(final_train_loss(others["GroupNorm"]), high=0.1)


# ------------------------------------------------------------------------------------ section 2 (exact)


@pytest.mark.parametrize("gap", [0.45, 0.002, 0.0, 3.0])
def test_a_pairs_jacobian_keeps_only_the_eps_sized_direction(gap):
    singular = np.linalg.svd(bn_jacobian(np.array([0.0, gap]), EPS), compute_uv=False)
    assert singular[0] == pytest.approx(pair_gain(gap, EPS), rel=1e-8)
    assert singular[1] < 1e-8
    assert pair_gain(0.0, EPS) == pytest.approx(1 / math.sqrt(EPS))


@pytest.mark.parametrize("m", [3, 4, 8, 16])
def test_m_minus_two_directions_pass_with_gain_one_over_s(m):
    x = np.random.default_rng(m).standard_normal(m)
    s = math.sqrt(x.var() + EPS)
    singular = np.sort(np.linalg.svd(bn_jacobian(x, EPS), compute_uv=False))[::-1] * s
    assert np.sum(np.abs(singular - 1) < 1e-9) == m - 2
    assert singular[m - 2] == pytest.approx(EPS / (x.var() + EPS), rel=1e-6)   # the xhat direction
    assert singular[m - 1] < 1e-10                                               # the constant direction


def test_pair_gain_is_vectorized():
    gains = pair_gain(np.array([0.0, 1.0]), EPS)
    assert gains.shape == (2,) and gains[1] == pytest.approx(8 * EPS / (1 + 4 * EPS) ** 1.5)


def test_first_update_norm_is_pythagoras():
    assert first_update_norm(3.0, 40.0, 0.1) == pytest.approx(5.0)


# ------------------------------------------------------------------------------------ section 2 (network)


def test_the_gradient_of_pairs_is_made_of_spikes(at_init):
    pair, four, whole = at_init[2], at_init[4], at_init[128]
    assert pair.weight_grad[0] / whole.weight_grad[0] > 30
    assert pair.top_share() > 0.9 and whole.top_share() < 0.3
    assert four.top_share(0.001) > 0.3 and whole.top_share(0.001) < 0.1
    assert np.median(np.abs(pair.pre_norm_grad)) < 0.05 * np.median(np.abs(whole.pre_norm_grad))
    assert 0.5 * math.sqrt(EPS) < pair.top_gap() < 5 * math.sqrt(EPS)
    assert pair.typical_gap() > 30 * pair.top_gap()
    assert abs(pair.weight_cosine[0]) < 1e-4 and abs(whole.weight_cosine[0]) < 1e-6   # printed "< 1e-04", "below 1e-06"
    assert np.all(np.abs(pair.weight_cosine[:-1]) < 1e-3)                               # every layer under BN
    assert pair.pre_norm_grad.shape == pair.pair_gap.shape == (128, 100)
    with pytest.raises(ValueError, match="only at normalization batch 2"):
        whole.top_gap()
    assert whole.pair_gap is None and np.array_equal(pair.weight_norm, whole.weight_norm)  # same init


@pytest.mark.slow
def test_retraining_is_the_shipped_run_and_its_weights_blow_up_at_two(sweep_128, at_init, retrained):
    bn, _ = sweep_128
    for g, (result, _) in retrained.items():
        assert abs(result.test_accuracy[-1] - bn[g].final_accuracies()[0]) < 1e-12
        assert np.allclose(result.grad_norms[0], at_init[g].weight_grad, rtol=1e-6)   # same first batch
    pair = at_init[2]
    predicted = first_update_norm(pair.weight_norm[0], pair.weight_grad[0], pair.lr)
    result = retrained[2][0]
    assert abs(result.weight_norms[1, 0] / predicted - 1) < 1e-3
    assert result.weight_norms[-1, 0] / result.weight_norms[0, 0] > 30
    control = retrained[128][0]
    assert control.weight_norms[-1, 0] / control.weight_norms[0, 0] < 1.2
    moves = {g: np.median(relative_steps(run, pair.lr, after=100)) for g, (run, _) in retrained.items()}
    assert moves[2] / moves[128] < 0.05


def test_relative_steps_is_the_step_over_the_norm():
    fake = type("R", (), {"steps": np.array([0, 100, 200]), "grad_norms": np.array([[4.0, 1], [2, 1], [1, 1]]),
                          "weight_norms": np.array([[2.0, 1], [4, 1], [5, 1]])})()
    assert np.allclose(relative_steps(fake, 0.5, after=50), [0.25, 0.1])
    assert np.allclose(relative_steps(fake, 1.0, layer=1), [1, 1])                 # update 0 is not an update


def test_retrain_reproduces_run_update_for_update(user_cache):
    config = BatchSizeConfig(norm_batch_size=2, batch_size=16, steps=12, record_every=6, seeds=(0,))
    shipped = run(config, progress=False)
    result, model = retrain(config, 0, record_steps=(0, 1, 6, 12))
    assert np.array_equal(result.test_accuracy[[0, 2, 3]], shipped.values("test_accuracy")[0])
    assert result.weight_norms.shape == (4, 4) and model.training


# ------------------------------------------------------------------------------------ section 3


@pytest.mark.slow
def test_forgetting_eval_is_worst_in_small_test_batches(retrained):
    result, model = retrained[128]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    forgot = own_statistics_accuracy(model, (2, 8, 1000))
    assert forgot[2] < 0.5 < forgot[8] and abs(forgot[1000] - result.test_accuracy[-1]) < 0.01
    assert all((before[k] == v).all() for k, v in model.state_dict().items())        # the model is untouched
    assert all(getattr(m, "ghost_batch_size", 128) == 128 for m in model.modules())


# ------------------------------------------------------------------------------------ sections 4 and 5


def test_normalization_batch_two_fails_at_every_sgd_batch(by_batch):
    assert sorted(by_batch) == [16, 64, 128, 256]
    for runs in by_batch.values():
        assert inside(runs[2].final_accuracies(), high=0.7)
        assert inside(final_train_loss(runs[2]), low=1.5)
    assert min(runs[4].final_accuracies().min() for runs in by_batch.values()) > 0.85
    assert inside(list(gap_to_other_sgd_batches(by_batch, 16).values()), high=0.0)   # 16 is behind at every g


def test_equal_updates_and_equal_examples(by_batch):
    plain = {b: runs[b] for b, runs in by_batch.items()}
    ghost = by_batch[256][16]
    small, large = plain[16].final_accuracies(), plain[256].final_accuracies()
    assert inside(small, 0.9) and inside(large, 0.9) and inside(ghost.final_accuracies(), 0.9)
    assert large.mean() - small.mean() > 0
    assert -0.01 <= ghost.final_accuracies().mean() - large.mean() <= 0.01
    for examples, (low, high) in ((12_800, (0.01, 0.03)), (38_400, (0.0, 0.015))):
        moderate = accuracy_after_examples(plain[64], 64, examples)
        big = accuracy_after_examples(plain[256], 256, examples)
        ghosted = accuracy_after_examples(ghost, 256, examples)
        assert inside(moderate, 0.9) and inside(big, 0.9) and inside(ghosted, 0.9)
        assert low <= moderate.mean() - big.mean() <= high
        assert ghosted.mean() - big.mean() < 0.005


def test_the_sgd_sweep_agrees_with_the_nbs_sweep(by_batch):
    sweep = sgd_batch_size_sweep(cached_only=True)
    for b in (16, 64, 128, 256):
        assert np.array_equal(sweep["BN, normalization batch = SGD batch"][b].final_accuracies(),
                              by_batch[b][b].final_accuracies())


# ------------------------------------------------------------------------------------------------ figures


def test_the_collapse_figure_draws_both_statistics_population_first(sweep_128):
    bn, others = sweep_128
    fig = plot_norm_batch_size(bn, others, 128, selected=2, test_statistics="both")
    acc = fig.axes[0]
    assert np.allclose(acc.lines[0].get_ydata(), [bn[g].scalar("final_accuracy") for g in sorted(bn)])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "population" in labels[0] and "own statistics" in labels[1]
    assert "LayerNorm (a flat line per seed)" in labels and "GroupNorm (a flat line per seed)" in labels
    assert "NBS 2 (solid), 128 (dashed)" in fig.axes[2].get_title()
    with pytest.raises(ValueError, match="test_statistics must be one of"):
        plot_norm_batch_size(bn, others, 128, test_statistics="running")


def test_the_toggle_draws_one_kind_of_statistics(sweep_128):
    bn, others = sweep_128
    fig = plot_norm_batch_size(bn, others, 128, selected=8, test_statistics="batch",
                               pinned=("SGD batch 64", norm_batch_size_sweep(64, cached_only=True)[0]))
    assert np.allclose(fig.axes[0].lines[0].get_ydata(),
                       [bn[g].scalar("batch_stats_accuracy") for g in sorted(bn)])
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert "own statistics" in labels[0]
    assert "pinned: SGD batch 64, each test batch's own statistics (no eval())" in labels   # it says which


def test_a_pinned_curve_gets_its_ticks_and_can_keep_its_own_statistics(sweep_128):
    bn, _ = sweep_128
    small, small_others = norm_batch_size_sweep(16, cached_only=True)
    fig = plot_norm_batch_size(small, small_others, 16, selected=2, pinned=("SGD batch 128", bn, "batch"))
    acc = fig.axes[0]
    assert [t.get_text() for t in acc.get_xticklabels()] == ["2", "4", "8", "16", "32", "64", "128"]
    pinned = next(line for line in acc.lines if line.get_label().startswith("pinned"))
    assert np.allclose(pinned.get_ydata(), [bn[g].scalar("batch_stats_accuracy") for g in sorted(bn)])
    assert pinned.get_label() == "pinned: SGD batch 128, each test batch's own statistics (no eval())"
    assert np.allclose(acc.lines[0].get_ydata(), [small[g].scalar("final_accuracy") for g in sorted(small)])
    flat = next(line for line in acc.lines if line.get_label().startswith("LayerNorm"))
    assert list(flat.get_xdata()) == [2, 128]                            # flat lines span the pinned range too
    with pytest.raises(ValueError, match="pinned statistics must be one of"):
        plot_norm_batch_size(small, small_others, 16, pinned=("SGD batch 128", bn, "running"))


def test_the_other_figures_draw(by_batch, at_init):
    assert isinstance(plot_nbs_by_sgd_batch(by_batch), Figure)
    assert isinstance(plot_batch_size_sweep(sgd_batch_size_sweep(cached_only=True)), Figure)
    fig = plot_equal_examples({b: runs[b] for b, runs in by_batch.items()}, {256: by_batch[256][16]})
    by_examples = fig.axes[1]
    first = by_examples.lines[0]                      # SGD batch 16, seed 0: examples in thousands
    assert first.get_xdata()[0] == pytest.approx(50 * 16 / 1000)
    fake = {g: type("R", (), {"steps": np.array([0, 1, 600]), "weight_norms": np.ones((3, 4))})()
            for g in (2, 128)}
    fig = plot_pair_gradients(at_init, fake)
    assert "gap to partner" in fig.axes[0].get_title() and len(fig.axes[1].lines) == len(at_init) + 2  # + diagonal, 1% mark
