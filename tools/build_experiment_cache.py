"""Compute every run of the experiments' default grids and write them as shipped package data.

    .venv/bin/python tools/build_experiment_cache.py                       # all experiments, 2 workers
    .venv/bin/python tools/build_experiment_cache.py depth --workers 1     # one experiment

Writes ``bnlab/experiments/data/<experiment>.json.gz``. Each run is computed from scratch (no cache is read),
one torch thread per worker process, so the numbers are real measurements of the current code;
``tests/test_experiments_shipped.py`` recomputes a sample and checks they agree. Rerun this after any change
that alters what an experiment measures (and bump that config's ``version``), or after a bnlab or
torch version change (the cache key includes both, so stale data is never used, only recomputed live).
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _compute(job: tuple[str, int, int]) -> tuple[str, int, int, dict, float]:
    import torch

    from bnlab.experiments import EXPERIMENTS

    torch.set_num_threads(1)
    name, index, seed = job
    config = EXPERIMENTS[name].grid()[index]
    started = time.perf_counter()
    arrays = config.run_seed(seed)
    return name, index, seed, arrays, time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    from bnlab.experiments import EXPERIMENTS
    from bnlab.experiments._cache import write_shipped

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("experiments", nargs="*", help="default: all")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    args = parser.parse_args(argv)
    names = args.experiments or list(EXPERIMENTS)

    jobs = []
    for name in names:
        for index, config in enumerate(EXPERIMENTS[name].grid()):
            jobs += [(name, index, seed) for seed in config.seeds]
    # longest first (deep nets, long runs) so the pool does not end on one straggler
    jobs.sort(key=lambda job: -_cost(job))
    print(f"{len(jobs)} runs over {names}, {args.workers} workers", flush=True)

    results: dict[tuple[str, int, int], dict] = {}
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers) as pool:
        for done, (name, index, seed, arrays, seconds) in enumerate(pool.imap_unordered(_compute, jobs), 1):
            results[(name, index, seed)] = arrays
            if done % 10 == 0 or done == len(jobs):
                print(f"  {done}/{len(jobs)} runs, {time.perf_counter() - started:.0f} s", flush=True)

    for name in names:
        grid = EXPERIMENTS[name].grid()
        runs = [(config.run_params(seed), results[(name, index, seed)])
                for index, config in enumerate(grid) for seed in config.seeds]
        path = write_shipped(name, runs)
        print(f"{name}: {len(runs)} runs -> {path.relative_to(ROOT)} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


def _cost(job: tuple[str, int, int]) -> float:
    from bnlab.experiments import EXPERIMENTS

    config = EXPERIMENTS[job[0]].grid()[job[1]]
    return config.steps * (config.depth + 2) * config.batch_size ** 0.5


if __name__ == "__main__":
    sys.exit(main())
