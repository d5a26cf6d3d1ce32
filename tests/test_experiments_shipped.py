"""The shipped default-grid results: complete, small, real (a sample recomputed here agrees), and showing what
the course's reference measurements (bn-facts) say they show."""

from dataclasses import replace

import numpy as np
import pytest

from bnlab.experiments import (
    EXPERIMENTS,
    BatchSizeConfig,
    DepthConfig,
    LearningRateConfig,
    _cache,
    depth_sweep,
    learning_rate_sweep,
    max_stable_learning_rate,
    norm_batch_size_sweep,
    weight_decay_sweep,
)

REBUILD = "rerun: bnlab build cache"


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_every_default_grid_run_ships_for_this_library_version(experiment):
    shipped = {run["key"] for run in _cache.shipped_runs(experiment)}
    grid = EXPERIMENTS[experiment].grid()
    wanted = {_cache.cache_key(experiment, config.run_params(seed)) for config in grid for seed in config.seeds}
    missing = wanted - shipped
    assert not missing, f"{len(missing)} of {len(wanted)} default {experiment} runs are not shipped: {REBUILD}"


def test_shipped_data_stay_small():
    total = sum(_cache.shipped_path(name).stat().st_size for name in EXPERIMENTS)
    assert total < 3 * 2**20, f"shipped experiment data take {total / 2**20:.1f} MiB"


# ---------------------------------------------------------------------------------------------------------
# Recompute a sample of grid points: the shipped numbers are measurements of this code, not typed-in values.
# Tolerances: values at initialization (no training yet) must agree to float32 rounding (rtol 1e-4 and atol
# 1e-5 for medians near 0; the
# store keeps 6 digits); after 600 SGD steps another CPU's float rounding can move curves a little, so
# accuracies must agree within 0.03 and losses/percentiles within 10%.
# ---------------------------------------------------------------------------------------------------------

AT_INIT = {"percentiles_init", "grad_norms_init", "similarity_init", "steps"}
SAMPLE = [
    (DepthConfig(depth=2, activation="relu", norm="none"), 0),
    (DepthConfig(depth=5, activation="sigmoid", norm="batch"), 1),
    (DepthConfig(depth=4, activation="tanh", norm="layer", init="he"), 2),
    (BatchSizeConfig(norm_batch_size=4, batch_size=16), 2),
    (LearningRateConfig(lr=10.0, norm="none"), 0),
    (LearningRateConfig(lr=0.3162, norm="batch", steps=600), 1),
]


@pytest.mark.parametrize("config, seed", SAMPLE, ids=[f"{c.name}-{i}" for i, (c, _) in enumerate(SAMPLE)])
def test_a_recomputed_grid_point_agrees_with_the_shipped_one(config, seed):
    experiment = config.name
    shipped = {run["key"]: run["arrays"] for run in _cache.shipped_runs(experiment)}
    key = _cache.cache_key(experiment, config.run_params(seed))
    assert key in shipped, f"sample point not shipped: {REBUILD}"
    fresh = config.run_seed(seed)
    assert set(fresh) == set(shipped[key])
    for name, value in fresh.items():
        stored = np.asarray(shipped[key][name], dtype=float)
        assert stored.shape == value.shape, name
        assert np.array_equal(np.isnan(stored), np.isnan(value)), f"{name}: NaNs differ"
        if name in AT_INIT:
            np.testing.assert_allclose(value, stored, rtol=1e-4, atol=1e-5, err_msg=name)
        elif "accuracy" in name:
            np.testing.assert_allclose(value, stored, atol=0.03, err_msg=name)
        else:
            np.testing.assert_allclose(value, stored, rtol=0.1, atol=0.05, err_msg=name)


# ---------------------------------------------------------------------------------------------------------
# What the shipped runs show (bn-facts, "What small CPU experiments show")
# ---------------------------------------------------------------------------------------------------------


def test_depth_plain_nets_stall_bn_trains_depth_20_and_he_init_rescues_relu():
    sweep = depth_sweep(cached_only=True)

    def acc(activation, setting, depth):
        return sweep[activation][setting][depth].scalar("final_accuracy")

    assert acc("sigmoid", "no norm", 2) > 0.8 and acc("sigmoid", "no norm", 5) < 0.2
    assert acc("relu", "no norm", 5) > 0.8 and acc("relu", "no norm", 10) < 0.2
    for activation in ("sigmoid", "tanh", "relu"):
        assert acc(activation, "BN", 20) > 0.85, activation
    assert acc("relu", "no norm, He init", 10) > 0.85


def test_bn_collapses_at_normalization_batch_2_while_ln_and_gn_stay_flat():
    bn, others = norm_batch_size_sweep(batch_size=128, cached_only=True)
    assert bn[2].scalar("final_accuracy") < 0.7
    assert all(bn[g].scalar("final_accuracy") > 0.93 for g in bn if g >= 8)
    assert all(runs.scalar("final_accuracy") > 0.93 for runs in others.values())
    assert bn[2].scalar("batch_stats_accuracy") < bn[2].scalar("final_accuracy")


def test_bn_raises_the_largest_stable_learning_rate_about_tenfold():
    sweep = learning_rate_sweep(cached_only=True)
    plain, bn = (max_stable_learning_rate(sweep[label]) for label in ("no BN", "BN"))
    assert 0.1 <= plain <= 0.6
    assert bn >= 5 * plain


def test_weight_decay_shrinks_bn_weights_and_raises_the_effective_learning_rate():
    runs = weight_decay_sweep(cached_only=True)
    norms = {wd: r.mean("unit_weight_norm").mean(axis=1) for wd, r in runs.items()}
    assert norms[0.0][-1] > norms[0.0][0]
    assert norms[5e-3][-1] < norms[5e-3][0]
    effective = {wd: r.mean("effective_lr")[-1].mean() for wd, r in runs.items()}
    assert effective[5e-3] > 5 * effective[0.0]


def test_grid_configs_are_what_the_dashboards_default_to():
    assert replace(DepthConfig(), depth=10) in DepthConfig.grid()
    assert BatchSizeConfig() in BatchSizeConfig.grid()
    assert LearningRateConfig() in LearningRateConfig.grid()


@pytest.mark.parametrize("experiment", list(EXPERIMENTS))
def test_shipped_files_are_exactly_what_the_build_writes(experiment, tmp_path):
    """Byte-stable: writing the shipped runs again gives the same bytes (fixed rounding, key order, gzip
    mtime 0), so a rebuild that measures the same numbers changes nothing in git."""
    runs = _cache.shipped_runs(experiment)
    rewritten = _cache.write_shipped(
        experiment, [(run["params"], {name: np.asarray(value, dtype=float) for name, value in run["arrays"].items()})
                     for run in runs], path=tmp_path / "again.json.gz")
    assert rewritten.read_bytes() == _cache.shipped_path(experiment).read_bytes()
