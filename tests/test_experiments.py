"""bnlab.experiments: configs reject bad parameters, runs are seeded and cached where they should be."""

import dataclasses
import math

import numpy as np
import pytest

import bnlab
from bnlab.experiments import (
    BatchSizeConfig,
    DepthConfig,
    LearningRateConfig,
    NotCachedError,
    OneStepConfig,
    SeedRuns,
    WeightDecayConfig,
    batch_size_experiment,
    cache_key,
    clear_user_cache,
    depth_experiment,
    is_cached,
    learning_rate_experiment,
    max_stable_learning_rate,
    one_step_loss_ratio,
    trains,
    user_cache_dir,
    weight_decay_experiment,
)
from bnlab.experiments import _cache

TINY = {"steps": 12, "record_every": 6, "seeds": (0, 1)}


@pytest.fixture
def user_cache(tmp_path, monkeypatch):
    """An empty user cache in a temp dir, and no runs remembered in memory."""
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "cache"))
    _cache._memory.clear()
    yield tmp_path / "cache"
    _cache._memory.clear()


# ------------------------------------------------------------------------------------------------ configs


@pytest.mark.parametrize("make, message", [
    (lambda: DepthConfig(depth=0), "depth must be an integer >= 1, got 0"),
    (lambda: DepthConfig(depth=41), "depth must be at most 40"),
    (lambda: DepthConfig(activation="gelu"), "activation must be one of 'sigmoid', 'tanh', 'relu'; got 'gelu'"),
    (lambda: DepthConfig(norm="group"), "norm must be one of 'none', 'batch', 'layer'; got 'group'"),
    (lambda: DepthConfig(seeds=()), "seeds must be a non-empty sequence"),
    (lambda: DepthConfig(lr=-1.0), "lr must be a finite number in (0, inf), got -1.0"),
    (lambda: BatchSizeConfig(norm_batch_size=3, batch_size=128), "norm_batch_size must divide batch_size=128"),
    (lambda: BatchSizeConfig(norm_batch_size=1), "norm_batch_size must be an integer >= 2, got 1"),
    (lambda: LearningRateConfig(norm="layer"), "norm must be one of 'none', 'batch'; got 'layer'"),
    (lambda: WeightDecayConfig(weight_decay=-0.1), "weight_decay must be a finite number in [0, inf)"),
    (lambda: OneStepConfig(init="orthogonal"), "init must be one of 'default', 'he', 'gaussian'"),
])
def test_bad_parameters_say_what_was_expected_and_what_came(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_experiment_functions_reject_the_wrong_config_type():
    with pytest.raises(TypeError, match="depth_experiment takes a DepthConfig, got BatchSizeConfig"):
        depth_experiment(BatchSizeConfig())


# ------------------------------------------------------------------------------------------------ cache keys


def test_cache_key_depends_on_parameters_and_library_version(monkeypatch):
    base = DepthConfig().run_params(0)
    assert cache_key("depth", base) == cache_key("depth", dict(base))
    assert cache_key("depth", base) != cache_key("depth", {**base, "seed": 1})
    assert cache_key("depth", base) != cache_key("depth", {**base, "depth": 11})
    assert cache_key("depth", base) != cache_key("batch_size", base)
    before = cache_key("depth", base)
    monkeypatch.setattr(bnlab, "__version__", "99.0")
    assert cache_key("depth", base) != before


def test_parameters_that_do_not_matter_stay_out_of_the_key():
    assert DepthConfig(init="he", init_std=0.3).run_params(0) == DepthConfig(init="he", init_std=0.01).run_params(0)
    assert DepthConfig(init="gaussian", init_std=0.3).run_params(0) != \
        DepthConfig(init="gaussian", init_std=0.01).run_params(0)
    assert BatchSizeConfig(norm="layer", norm_batch_size=4).run_params(0) == \
        BatchSizeConfig(norm="layer", norm_batch_size=8).run_params(0)


def test_user_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv(_cache.CACHE_ENV, str(tmp_path / "here"))
    assert user_cache_dir() == tmp_path / "here"
    monkeypatch.delenv(_cache.CACHE_ENV)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert user_cache_dir() == tmp_path / "xdg" / "bnlab" / "experiments"


# ------------------------------------------------------------------------------------------------ runs


def test_a_run_is_computed_once_then_read_from_memory_and_disk(user_cache, monkeypatch):
    config = DepthConfig(depth=2, **TINY)
    with pytest.raises(NotCachedError, match="not cached"):
        depth_experiment(config, cached_only=True)
    first = depth_experiment(config, progress=False)
    assert sorted(p.name.split("-")[0] for p in user_cache.glob("*.npz")) == ["depth", "depth"]

    _cache._memory.clear()  # a new process: only the disk remembers
    calls = []
    monkeypatch.setattr("bnlab.experiments.depth.run_seed", lambda *a: calls.append(a))
    again = depth_experiment(config, cached_only=True)
    assert calls == []
    for name in first.names():
        np.testing.assert_array_equal(first.values(name), again.values(name))

    assert clear_user_cache() == 2
    assert not is_cached("depth", config.run_params(0))


def test_a_corrupt_cache_file_is_recomputed_not_trusted(user_cache):
    config = DepthConfig(depth=2, **{**TINY, "seeds": (0,)})
    depth_experiment(config, progress=False)
    (path,) = user_cache.glob("*.npz")
    path.write_bytes(b"not a zip file")
    _cache._memory.clear()
    assert not is_cached("depth", config.run_params(0))
    assert depth_experiment(config, progress=False).values("final_accuracy").shape == (1,)


def test_depth_runs_are_seeded_and_have_the_documented_shapes(user_cache):
    config = DepthConfig(depth=3, activation="tanh", norm="batch", **TINY)
    runs = depth_experiment(config, progress=False)
    records = len(range(0, TINY["steps"] + 1, TINY["record_every"]))
    assert runs.values("steps").shape == (2, records)
    assert runs.values("test_accuracy").shape == (2, records)
    assert runs.values("percentiles_init").shape == (2, 3, 3)
    assert runs.values("grad_norms_final").shape == (2, 4)
    assert not np.array_equal(*runs.values("test_accuracy")), "two seeds gave identical curves"
    _cache._memory.clear()
    clear_user_cache()
    repeat = depth_experiment(config, progress=False)
    np.testing.assert_array_equal(runs.values("percentiles_final"), repeat.values("percentiles_final"))


def test_batch_size_runs_test_with_both_kinds_of_statistics(user_cache):
    runs = batch_size_experiment(BatchSizeConfig(norm_batch_size=2, batch_size=16, **TINY), progress=False)
    for name in ("final_accuracy", "batch_stats_accuracy"):
        assert np.all((runs.values(name) >= 0) & (runs.values(name) <= 1))
    layer = batch_size_experiment(BatchSizeConfig(norm="layer", batch_size=16, **TINY), progress=False)
    # layer norm has no batch statistics: both ways of testing are the same model (up to the dropped remainder)
    np.testing.assert_allclose(layer.values("final_accuracy"), layer.values("batch_stats_accuracy"), atol=0.01)


def test_a_diverging_learning_rate_is_recorded_not_raised(user_cache):
    runs = learning_rate_experiment(LearningRateConfig(lr=10.0, **TINY), progress=False)
    assert np.all(runs.values("diverged") == 1)
    assert np.all(np.isnan(runs.values("final_accuracy")))
    assert not trains(runs)


def test_effective_learning_rate_is_lr_over_squared_weight_norm(user_cache):
    config = WeightDecayConfig(weight_decay=1e-3, lr=0.05, **TINY)
    runs = weight_decay_experiment(config, progress=False)
    np.testing.assert_allclose(runs.values("effective_lr"), 0.05 / runs.values("weight_norm") ** 2)
    assert runs.values("weight_norm").shape == (2, 3, config.depth)


def test_one_step_ratio_is_deterministic_and_bn_keeps_it_near_one():
    plain = one_step_loss_ratio(OneStepConfig(lr=1.0, norm="none", init="gaussian", init_std=0.15))
    assert plain == one_step_loss_ratio(OneStepConfig(lr=1.0, norm="none", init="gaussian", init_std=0.15))
    assert plain > 100
    assert 0.5 < one_step_loss_ratio(OneStepConfig(lr=1.0, norm="batch", init="gaussian", init_std=0.15)) < 1.5


# ------------------------------------------------------------------------------------------------ summaries


def fake_runs(values: dict[str, list]) -> SeedRuns:
    seeds = len(next(iter(values.values())))
    arrays = tuple({name: np.asarray(v[s], dtype=float) for name, v in values.items()} for s in range(seeds))
    return SeedRuns(seeds=tuple(range(seeds)), arrays=arrays)


def test_seed_summaries_skip_a_diverged_seeds_missing_records():
    runs = fake_runs({"curve": [[0.1, 0.5, 0.9], [0.2, np.nan, np.nan]], "final_accuracy": [0.9, np.nan]})
    np.testing.assert_allclose(runs.mean("curve"), [0.15, 0.5, 0.9])
    np.testing.assert_allclose(runs.low("curve"), [0.1, 0.5, 0.9])
    np.testing.assert_allclose(runs.high("curve"), [0.2, 0.5, 0.9])
    with pytest.raises(KeyError, match="no recorded quantity 'nope'; recorded: curve, final_accuracy"):
        runs.values("nope")
    with pytest.raises(ValueError, match="not a scalar"):
        runs.scalar("curve")


def test_max_stable_learning_rate_needs_every_seed_to_train():
    sweep = {
        0.1: fake_runs({"final_accuracy": [0.9, 0.92]}),
        0.3: fake_runs({"final_accuracy": [0.9, 0.4]}),      # one seed below the threshold
        1.0: fake_runs({"final_accuracy": [0.9, math.nan]}),  # one seed diverged
    }
    assert max_stable_learning_rate(sweep) == 0.1
    assert math.isnan(max_stable_learning_rate({1.0: sweep[1.0]}))
    assert dataclasses.is_dataclass(sweep[0.1])
