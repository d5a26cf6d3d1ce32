"""The course's experiments (lectures 7-9): one small frozen config and one pure function per experiment.

Each function trains a config once per seed, or reads the runs from a cache, and returns the numbers
(:class:`SeedRuns`), never a figure. Runs of the default grids ship with the package, so every default slider
position answers instantly on a fresh machine; anything else trains live (``tqdm.auto`` progress bar, switch
it off with ``set_progress(False)`` or ``progress=False``) and is remembered in the user cache
(:func:`user_cache_dir`, safe to delete).

========================  ==========================  ==========================================
config                    function                    default grid
========================  ==========================  ==========================================
``DepthConfig``           ``depth_experiment``        ``depth_grid()``
``BatchSizeConfig``       ``batch_size_experiment``   ``batch_size_grid()``
``LearningRateConfig``    ``learning_rate_experiment``  ``learning_rate_grid()``
``WeightDecayConfig``     ``weight_decay_experiment``   ``weight_decay_grid()``
``OneStepConfig``         ``one_step_loss_ratio``     (cheap: never cached)
========================  ==========================  ==========================================
"""

from bnlab.experiments._cache import (
    NotCachedError,
    cache_key,
    clear_user_cache,
    is_cached,
    user_cache_dir,
)
from bnlab.experiments._runs import SeedRuns, set_progress
from bnlab.experiments.batch_size import (
    BatchSizeConfig,
    batch_size_experiment,
    batch_size_grid,
    norm_batch_size_sweep,
    sgd_batch_size_sweep,
)
from bnlab.experiments.depth import DepthConfig, depth_experiment, depth_grid, depth_sweep
from bnlab.experiments.learning_rate import (
    GRID_LEARNING_RATES,
    GRID_WEIGHT_DECAYS,
    LearningRateConfig,
    OneStepConfig,
    WeightDecayConfig,
    learning_rate_experiment,
    learning_rate_grid,
    learning_rate_sweep,
    max_stable_learning_rate,
    one_step_loss_ratio,
    one_step_sweep,
    trains,
    weight_decay_experiment,
    weight_decay_grid,
    weight_decay_sweep,
)

from bnlab.experiments import batch_size as _batch_size  # noqa: E402
from bnlab.experiments import depth as _depth  # noqa: E402
from bnlab.experiments import learning_rate as _learning_rate  # noqa: E402

# name -> (experiment function, default grid, one seed's uncached run(config, seed, progress) -> arrays)
EXPERIMENTS = {
    "depth": (depth_experiment, depth_grid, _depth.run_seed),
    "batch_size": (batch_size_experiment, batch_size_grid, _batch_size.run_seed),
    "learning_rate": (learning_rate_experiment, learning_rate_grid, _learning_rate.run_lr_seed),
    "weight_decay": (weight_decay_experiment, weight_decay_grid, _learning_rate.run_wd_seed),
}

__all__ = [
    "EXPERIMENTS",
    "GRID_LEARNING_RATES",
    "GRID_WEIGHT_DECAYS",
    "BatchSizeConfig",
    "DepthConfig",
    "LearningRateConfig",
    "NotCachedError",
    "OneStepConfig",
    "SeedRuns",
    "WeightDecayConfig",
    "batch_size_experiment",
    "batch_size_grid",
    "cache_key",
    "clear_user_cache",
    "depth_experiment",
    "depth_grid",
    "depth_sweep",
    "is_cached",
    "learning_rate_experiment",
    "learning_rate_grid",
    "learning_rate_sweep",
    "max_stable_learning_rate",
    "norm_batch_size_sweep",
    "one_step_loss_ratio",
    "one_step_sweep",
    "set_progress",
    "trains",
    "user_cache_dir",
    "weight_decay_experiment",
    "weight_decay_grid",
    "weight_decay_sweep",
    "sgd_batch_size_sweep",
]
