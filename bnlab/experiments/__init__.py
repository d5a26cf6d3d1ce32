"""The course's experiments (lectures 7-10): one frozen config class per experiment and one runner.

Every config derives from :class:`Experiment` (the shared fields, checks, cache key and records);
:func:`run` trains it once per seed, or reads the runs from a cache, and returns the numbers
(:class:`SeedRuns`), never a figure. Runs of the default grids (``Config.grid()``) ship with the package, so
every default slider position answers instantly on a fresh machine; anything else trains live (``tqdm.auto``
progress bar, switch it off with ``set_progress(False)`` or ``progress=False``) and is remembered in the user
cache (:func:`user_cache_dir`, safe to delete). :func:`sweep` runs a mapping of configs and can skip what is
not cached (what the dashboards draw as context).

========================  =====================================  =========================
config                    sweeps                                 lecture
========================  =====================================  =========================
``DepthConfig``           ``depth_sweep``                        7
``BatchSizeConfig``       ``norm_batch_size_sweep``, ``sgd_...``  8
``LearningRateConfig``    ``learning_rate_sweep``                9
``WeightDecayConfig``     ``weight_decay_sweep``                 9
``OneStepConfig``         ``one_step_sweep`` (never cached)      9
``Figure1Config``         ``figure1_sweep``, ``figure1_runs``    10
========================  =====================================  =========================
"""

from bnlab.experiments._cache import (
    NotCachedError,
    cache_key,
    clear_user_cache,
    is_cached,
    user_cache_dir,
)
from bnlab.experiments._runs import CHANCE, SeedRuns, set_progress
from bnlab.experiments.base import Experiment, RunCancelled, run, sweep
from bnlab.experiments.batch_size import (
    BatchSizeConfig,
    nbs_by_sgd_batch,
    norm_batch_size_sweep,
    sgd_batch_size_sweep,
)
from bnlab.experiments.depth import DepthConfig, depth_sweep
from bnlab.experiments.figure1 import Figure1Config, figure1_runs, figure1_sweep
from bnlab.experiments.learning_rate import (
    GRID_LEARNING_RATES,
    LearningRateConfig,
    OneStepConfig,
    learning_rate_sweep,
    max_stable_learning_rate,
    one_step_loss_ratio,
    one_step_sweep,
    trains,
)
from bnlab.experiments.weight_decay import GRID_WEIGHT_DECAYS, WeightDecayConfig, weight_decay_sweep

# name -> config class; each class's grid() lists the configs whose runs ship with the package
EXPERIMENTS = {config.name: config
               for config in (DepthConfig, BatchSizeConfig, LearningRateConfig, WeightDecayConfig)}
EXPERIMENTS[Figure1Config.name] = Figure1Config  # lecture 10

__all__ = [
    "CHANCE",
    "EXPERIMENTS",
    "GRID_LEARNING_RATES",
    "GRID_WEIGHT_DECAYS",
    "BatchSizeConfig",
    "DepthConfig",
    "Experiment",
    "Figure1Config",
    "LearningRateConfig",
    "NotCachedError",
    "OneStepConfig",
    "RunCancelled",
    "SeedRuns",
    "WeightDecayConfig",
    "cache_key",
    "clear_user_cache",
    "depth_sweep",
    "figure1_runs",
    "figure1_sweep",
    "is_cached",
    "learning_rate_sweep",
    "max_stable_learning_rate",
    "nbs_by_sgd_batch",
    "norm_batch_size_sweep",
    "one_step_loss_ratio",
    "one_step_sweep",
    "run",
    "set_progress",
    "sgd_batch_size_sweep",
    "sweep",
    "trains",
    "user_cache_dir",
    "weight_decay_sweep",
]
