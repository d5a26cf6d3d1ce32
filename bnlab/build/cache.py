"""The shipped experiment results: every run of the experiments' default grids, computed afresh.

``bnlab build cache [EXPERIMENT...] [--workers N]`` writes ``bnlab/experiments/data/<experiment>.json.gz``.
Each run is computed from scratch (no cache is read), with one torch thread per worker process, so the numbers
are real measurements of the current code; ``tests/test_experiments_shipped.py`` recomputes a sample and checks
that they agree. Rebuild after any change that alters what an experiment measures (and bump that config's
``version``), or after a bnlab or torch version change: the cache key includes both, so stale data is never
used, only recomputed live.
"""

from __future__ import annotations

import multiprocessing
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = ["build_cache"]

Job = tuple[str, int, int]  # (experiment, index in its default grid, seed)


def _compute(job: Job) -> tuple[str, int, int, dict, float]:
    """One run, in a worker process (module level, so a spawned worker can import it)."""
    import torch

    from bnlab.experiments import EXPERIMENTS

    torch.set_num_threads(1)
    name, index, seed = job
    config = EXPERIMENTS[name].grid()[index]
    started = time.perf_counter()
    arrays = config.run_seed(seed)
    return name, index, seed, arrays, time.perf_counter() - started


def _cost(job: Job) -> float:
    """A rough relative cost of a run, to start the longest first."""
    from bnlab.experiments import EXPERIMENTS

    config = EXPERIMENTS[job[0]].grid()[job[1]]
    return config.steps * (config.depth + 2) * config.batch_size ** 0.5


def build_cache(names: Sequence[str] = (), *, workers: int = 2,
                log: Callable[[str], None] = print) -> list[Path]:
    """Compute every seed of every default-grid point of the experiments ``names`` (default: all) in
    ``workers`` spawned processes and write their shipped files; returns the files written.

    Raises ValueError for an unknown experiment name or fewer than one worker.
    """
    from bnlab.experiments import EXPERIMENTS
    from bnlab.experiments._cache import write_shipped

    unknown = [name for name in names if name not in EXPERIMENTS]
    if unknown:
        raise ValueError(f"unknown experiment(s) {', '.join(unknown)}: expected some of {', '.join(EXPERIMENTS)}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    names = list(names) or list(EXPERIMENTS)

    jobs = [(name, index, seed) for name in names
            for index, config in enumerate(EXPERIMENTS[name].grid()) for seed in config.seeds]
    jobs.sort(key=lambda job: -_cost(job))  # longest first, so the pool does not end on one straggler
    log(f"{len(jobs)} runs over {', '.join(names)}, {workers} worker(s)")

    results: dict[Job, dict] = {}
    started = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        for done, (name, index, seed, arrays, _) in enumerate(pool.imap_unordered(_compute, jobs), 1):
            results[(name, index, seed)] = arrays
            if done % 10 == 0 or done == len(jobs):
                log(f"  {done}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s")

    written = []
    for name in names:
        runs = [(config.run_params(seed), results[(name, index, seed)])
                for index, config in enumerate(EXPERIMENTS[name].grid()) for seed in config.seeds]
        path = write_shipped(name, runs)
        log(f"{name}: {len(runs)} runs -> {path} ({path.stat().st_size / 1024:.0f} KiB)")
        written.append(path)
    return written
