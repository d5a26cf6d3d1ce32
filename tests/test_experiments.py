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
    RunCancelled,
    SeedRuns,
    WeightDecayConfig,
    cache_key,
    clear_user_cache,
    is_cached,
    max_stable_learning_rate,
    one_step_loss_ratio,
    run,
    sweep,
    trains,
    user_cache_dir,
)
from bnlab.experiments import _cache
from bnlab.experiments.depth import describe_runs, mean_cosine_similarity, zero_gradient_layers

TINY = {"steps": 12, "record_every": 6, "seeds": (0, 1)}


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
    (lambda: LearningRateConfig(init="gaussian"), "init must be one of 'default', 'he'; got 'gaussian'"),
    (lambda: BatchSizeConfig(width=2), "width must be an integer >= 4, got 2"),
    (lambda: WeightDecayConfig(weight_decay=-0.1), "weight_decay must be a finite number in [0, inf)"),
    (lambda: OneStepConfig(init="orthogonal"), "init must be one of 'default', 'he', 'gaussian'"),
])
def test_bad_parameters_say_what_was_expected_and_what_came(make, message):
    with pytest.raises(ValueError) as error:
        make()
    assert message in str(error.value)


def test_run_rejects_anything_but_an_experiment_config():
    with pytest.raises(TypeError, match="run takes an experiment config .*got TrainConfig"):
        from bnlab.train import TrainConfig
        run(TrainConfig())


def test_every_experiment_shares_one_base_and_its_checks():
    for config in (DepthConfig(), BatchSizeConfig(), LearningRateConfig(), WeightDecayConfig()):
        for field in ("depth", "width", "activation", "lr", "batch_size", "steps", "weight_decay", "seeds"):
            assert hasattr(config, field)
        assert config.run_params(0)["version"] == type(config).version
        with pytest.raises(ValueError, match="depth must be at most 40"):
            dataclasses.replace(config, depth=41)


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
        run(config, cached_only=True)
    first = run(config, progress=False)
    assert sorted(p.name.split("-")[0] for p in user_cache.glob("*.npz")) == ["depth", "depth"]

    _cache._memory.clear()  # a new process: only the disk remembers
    calls = []
    monkeypatch.setattr(DepthConfig, "run_seed", lambda *a: calls.append(a))
    again = run(config, cached_only=True)
    assert calls == []
    for name in first.names():
        np.testing.assert_array_equal(first.values(name), again.values(name))

    assert clear_user_cache() == 2
    assert not is_cached("depth", config.run_params(0))


def test_a_corrupt_cache_file_is_recomputed_not_trusted(user_cache):
    config = DepthConfig(depth=2, **{**TINY, "seeds": (0,)})
    run(config, progress=False)
    (path,) = user_cache.glob("*.npz")
    path.write_bytes(b"not a zip file")
    _cache._memory.clear()
    assert not is_cached("depth", config.run_params(0))
    assert run(config, progress=False).values("final_accuracy").shape == (1,)


def test_depth_runs_are_seeded_and_have_the_documented_shapes(user_cache):
    config = DepthConfig(depth=3, activation="tanh", norm="batch", **TINY)
    runs = run(config, progress=False)
    records = len(range(0, TINY["steps"] + 1, TINY["record_every"]))
    assert runs.values("steps").shape == (2, records)
    assert runs.values("test_accuracy").shape == (2, records)
    assert runs.values("percentiles_init").shape == (2, 3, 3)
    assert runs.values("grad_norms_final").shape == (2, 4)
    assert runs.values("similarity_init").shape == (2, 3)
    assert np.all((runs.values("similarity_init") > -1) & (runs.values("similarity_init") <= 1))
    assert not np.array_equal(*runs.values("test_accuracy")), "two seeds gave identical curves"
    _cache._memory.clear()
    clear_user_cache()
    repeat = run(config, progress=False)
    np.testing.assert_array_equal(runs.values("percentiles_final"), repeat.values("percentiles_final"))


def test_batch_size_runs_test_with_both_kinds_of_statistics(user_cache):
    runs = run(BatchSizeConfig(norm_batch_size=2, batch_size=16, **TINY), progress=False)
    for name in ("final_accuracy", "batch_stats_accuracy"):
        assert np.all((runs.values(name) >= 0) & (runs.values(name) <= 1))
    layer = run(BatchSizeConfig(norm="layer", batch_size=16, **TINY), progress=False)
    # layer norm has no batch statistics: both ways of testing are the same model (up to the dropped remainder)
    np.testing.assert_allclose(layer.values("final_accuracy"), layer.values("batch_stats_accuracy"), atol=0.01)


def test_a_diverging_learning_rate_is_recorded_not_raised(user_cache):
    runs = run(LearningRateConfig(lr=10.0, **TINY), progress=False)
    assert np.all(runs.values("diverged") == 1)
    assert np.all(np.isnan(runs.values("final_accuracy")))
    assert np.all(runs.diverged_at() >= 1)
    assert not trains(runs)
    assert runs.outcome().startswith("2 of 2 seeds diverged (updates ")
    assert math.isnan(runs.scalar("final_accuracy")), "a diverged seed must not be averaged away"


def test_learning_rate_runs_record_each_units_weight_norm(user_cache):
    config = LearningRateConfig(lr=0.1, norm="batch", depth=3, **TINY)
    runs = run(config, progress=False)
    norms = runs.values("unit_weight_norms")
    assert norms.shape == (2, 3, 3, 3)                             # seeds, records, hidden layers, percentiles
    assert np.all(np.diff(norms, axis=-1) >= 0)                    # 15th <= median <= 85th
    np.testing.assert_allclose(norms[:, 0, 1:, 1], np.sqrt(2), rtol=0.1)  # He init: ||w|| ~ sqrt(2)
    assert runs.values("dead_units").shape == (2, 3)


def test_effective_learning_rate_is_lr_over_squared_weight_norm(user_cache):
    config = WeightDecayConfig(weight_decay=1e-3, lr=0.05, **TINY)
    runs = run(config, progress=False)
    np.testing.assert_allclose(runs.values("effective_lr"), 0.05 / runs.values("unit_weight_norm") ** 2)
    assert runs.values("unit_weight_norm").shape == (2, 3, config.depth)


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


def test_a_diverged_seed_is_counted_and_named_never_averaged_away():
    runs = fake_runs({"final_accuracy": [0.921, math.nan, 0.935], "diverged_at": [math.nan, 41, math.nan]})
    assert math.isnan(runs.scalar("final_accuracy"))
    assert runs.num_diverged() == 1
    assert runs.scored_accuracy() == pytest.approx((0.921 + 0.1 + 0.935) / 3)
    assert runs.outcome() == "0.921, 0.935; 1 of 3 seeds diverged (update 41)"
    assert "counting a diverged seed as chance" in runs.headline()
    all_gone = fake_runs({"final_accuracy": [math.nan] * 3, "diverged_at": [3, 3, 2]})
    assert all_gone.headline() == "3 of 3 seeds diverged (updates 3, 3, 2)"
    one = fake_runs({"final_accuracy": [0.5], "diverged_at": [math.nan]})
    assert one.headline() == "test accuracy 0.500 (1 seed)"


def test_depth_descriptions_name_underflow_and_chance():
    runs = fake_runs({"final_accuracy": [0.1, 0.1], "diverged_at": [math.nan, math.nan],
                      "grad_norms_init": [[0.0, 0.0, 1e-9], [0.0, 0.0, 2e-9]]})
    assert zero_gradient_layers(runs) == [1, 2]
    text = describe_runs(runs)
    assert "gradient exactly 0 at init in layers 1-2 (float32 underflow)" in text
    assert "stuck near chance" in text


def test_mean_cosine_similarity_matches_the_pairwise_definition():
    import torch
    h = torch.randn(40, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h[5] = 0  # a zero row has no direction and is left out
    rows = torch.cat([h[:5], h[6:]])
    unit = rows / rows.norm(dim=1, keepdim=True)
    gram = unit @ unit.T
    expected = (gram.sum() - gram.diagonal().sum()) / (len(rows) * (len(rows) - 1))
    assert mean_cosine_similarity(h) == pytest.approx(float(expected))
    assert mean_cosine_similarity(torch.ones(5, 3)) == pytest.approx(1.0)
    assert math.isnan(mean_cosine_similarity(torch.zeros(4, 3)))


def test_a_live_run_can_be_cancelled_and_keeps_finished_seeds(user_cache):
    import threading
    stop = threading.Event()
    updates = []

    def on_step(seed, update):
        updates.append((seed, update))
        if update == 5:
            stop.set()

    config = DepthConfig(depth=2, **{**TINY, "seeds": (0,)})
    with pytest.raises(RunCancelled, match="stopped at update 6 of seed 0"):
        run(config, progress=False, stop=stop, on_step=on_step)
    assert updates == [(0, u) for u in range(1, 6)]
    assert not is_cached("depth", config.run_params(0)), "a cancelled seed must not be cached"
    run(DepthConfig(depth=2, **{**TINY, "seeds": (0,)}), progress=False)  # a fresh run is unaffected


def test_sweeps_can_skip_what_is_not_cached(user_cache):
    config = DepthConfig(depth=2, **{**TINY, "seeds": (0,)})
    run(config, progress=False)
    other = dataclasses.replace(config, depth=3)
    assert list(sweep({"done": config, "missing": other}, skip_missing=True)) == ["done"]
    with pytest.raises(NotCachedError):
        sweep({"done": config, "missing": other}, cached_only=True)


def test_max_stable_learning_rate_needs_every_seed_to_train():
    sweep = {
        0.1: fake_runs({"final_accuracy": [0.9, 0.92]}),
        0.3: fake_runs({"final_accuracy": [0.9, 0.4]}),       # one seed below the threshold
        1.0: fake_runs({"final_accuracy": [0.9, math.nan]}),  # one seed diverged
    }
    assert max_stable_learning_rate(sweep) == 0.1
    assert math.isnan(max_stable_learning_rate({1.0: sweep[1.0]}))
    assert dataclasses.is_dataclass(sweep[0.1])
