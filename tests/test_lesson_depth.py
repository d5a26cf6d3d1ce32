"""Lecture 7's numbers, computed from the shipped depth runs, inside the brackets the lecture prints."""

import math

import numpy as np
import pytest

from bnlab.experiments import DepthConfig, SeedRuns, depth_sweep, learning_rate_sweep, run
from bnlab.lessons.depth import backward_growth, depth_border, gradient_ratio, last_layer_similarity
from bnlab.lessons.learning_rate import learning_rate_border


@pytest.fixture(scope="module")
def sweep():
    return depth_sweep(cached_only=True)


def runs(**setting) -> SeedRuns:
    return run(DepthConfig(**setting), cached_only=True)


@pytest.mark.parametrize("activation, setting, border", [
    ("sigmoid", "no norm", (2, 3)),
    ("tanh", "no norm", (8, 15)),
    ("relu", "no norm", (6, 8)),
    ("relu", "no norm, He init", (10, None)),
    ("relu", "LayerNorm", (10, 15)),
    ("sigmoid", "BN", (20, None)),
    ("tanh", "BN", (20, None)),
    ("relu", "BN", (20, None)),
])
def test_the_borders_the_lecture_states(sweep, activation, setting, border):
    assert depth_border(sweep[activation][setting]) == border


def test_relu_border_runs_through_depth_7_seed_by_seed(sweep):
    depth7 = sweep["relu"]["no norm"][7].final_accuracies()
    assert np.all((depth7 > 0.3) & (depth7 < 0.65))
    assert np.all(sweep["relu"]["no norm"][6].final_accuracies() > 0.85)


def test_bn_trains_depth_20_with_every_activation(sweep):
    for activation in ("sigmoid", "tanh", "relu"):
        assert sweep[activation]["BN"][20].final_accuracies().min() > 0.85, activation


def test_he_init_loses_one_seed_in_three_at_depth_15_and_20(sweep):
    for depth in (15, 20):
        assert sweep["relu"]["no norm, He init"][depth].num_diverged() == 1
    assert sweep["relu"]["no norm, He init"][10].num_diverged() == 0


def test_gradients_vanish_without_bn_and_grow_backward_with_it():
    assert gradient_ratio(runs(depth=10)) < 0.05
    bn10 = runs(depth=10, norm="batch")
    assert 5 <= gradient_ratio(bn10) <= 50
    for depth in (10, 15, 20):
        assert 1.1 <= backward_growth(runs(depth=depth, norm="batch")) <= 1.35
    assert gradient_ratio(runs(depth=10, activation="sigmoid")) < 1e-6
    with pytest.raises(ValueError, match="at least 3 hidden layers"):
        backward_growth(runs(depth=2, norm="batch"))


def test_layernorm_collapses_the_examples_and_bn_keeps_them_apart():
    ln15, bn15 = runs(depth=15, norm="layer"), runs(depth=15, norm="batch")
    assert last_layer_similarity(ln15) > 0.85
    assert 0.25 <= last_layer_similarity(bn15) <= 0.4
    assert 0.5 <= ln15.mean("grad_norms_init")[0] <= 10      # not a vanishing gradient
    assert np.all(ln15.final_accuracies() < 0.25)
    assert last_layer_similarity(runs(depth=15, init="he")) > 0.85


def test_the_depth_runs_learning_rate_sits_below_the_plain_nets_border():
    last_good, first_bad = learning_rate_border(learning_rate_sweep(cached_only=True)["no BN"])
    assert (last_good, first_bad) == (0.1778, 0.3162)
    assert 0.3 <= 0.1 / last_good <= 1


def test_depth_border_reads_each_seed_and_a_diverged_seed_counts_as_stuck():
    def fake(accuracies):
        return SeedRuns(seeds=tuple(range(len(accuracies))),
                        arrays=tuple({"final_accuracy": np.float64(a)} for a in accuracies))

    sweep = {2: fake([0.9, 0.85]), 3: fake([0.9, 0.5]), 4: fake([0.1, math.nan]), 5: fake([0.1, 0.3])}
    assert depth_border(sweep) == (2, 4)
    assert depth_border({2: fake([0.5, 0.5])}) == (None, None)
