"""Speed of bnlab.train on the paper's figure-1 MLP (784-100-100-100-10, sigmoid, batch 60), one thread.

Run:  .venv/bin/python benchmarks/bench_train_step.py

Printed, for no norm and batch norm (placement before the sigmoid, as in the paper):

* ms/step of ``bnlab.train.train`` with a single record at the end (median over 5 repeats of 500 steps),
* ms/step of a bare torch loop doing the same SGD steps (what the training loop adds on top is the difference),
* wall time of 5,000 steps recording every 100 steps (51 evaluations on the 1,000 test digits, percentiles and
  norms), the way the lectures call it.

Target: under 2 ms/step with BN, so 5,000 steps take under 10 s. Timings depend on the machine and on whatever
else runs on it: run it on an idle machine.
"""

from __future__ import annotations

from bnlab.timing import pin_threads

pin_threads(1)

import statistics  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from bnlab.data import Dataset, load_mnist_subset  # noqa: E402
from bnlab.models import build_mlp  # noqa: E402
from bnlab.train import TrainConfig, train  # noqa: E402

STEPS_PER_REPEAT = 500
REPEATS = 5
LONG_RUN_STEPS = 5000
BASE = TrainConfig(steps=STEPS_PER_REPEAT, batch_size=60, lr=0.1, threads=1, progress=False,
                   record_steps=(STEPS_PER_REPEAT,))


def paper_mlp(norm: str, seed: int = 0) -> torch.nn.Module:
    return build_mlp(784, 10, depth=3, width=100, activation="sigmoid", norm=norm, init="gaussian",
                     init_std=0.1, seed=seed)


def train_ms_per_step(data: Dataset, norm: str) -> float:
    times = []
    for repeat in range(REPEATS + 1):  # the first run warms up torch's lazy initializations
        result = train(paper_mlp(norm, seed=repeat), data, BASE, seed=repeat)
        if repeat:
            times.append(1e3 * result.seconds / STEPS_PER_REPEAT)
    return statistics.median(times)


def bare_loop_ms_per_step(data: Dataset, norm: str) -> float:
    """The same SGD steps without bnlab's loop: fixed batches, no recording, no divergence check."""
    model = paper_mlp(norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(data.x_train[i:i + 60], data.y_train[i:i + 60]) for i in range(0, 3960, 60)]

    def run(steps: int) -> float:
        start = time.perf_counter()
        for step in range(steps):
            x, y = batches[step % len(batches)]
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        return time.perf_counter() - start

    run(100)
    return statistics.median(1e3 * run(STEPS_PER_REPEAT) / STEPS_PER_REPEAT for _ in range(REPEATS))


def long_run_seconds(data: Dataset, norm: str) -> tuple[float, float]:
    result = train(paper_mlp(norm), data, BASE, steps=LONG_RUN_STEPS, record_every=100, record_steps=None)
    return result.seconds, result.final_test_accuracy


def main() -> None:
    torch.set_num_threads(1)
    data = load_mnist_subset()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread, MNIST subset (4,000 train / 1,000 test), "
          f"784-100-100-100-10 sigmoid MLP, batch 60, SGD")
    header = (f"{'norm':>6} | {'train() ms/step':>15} {'bare loop ms/step':>17} {'loop overhead':>13} | "
              f"{LONG_RUN_STEPS:,} steps, record every 100: {'seconds':>7} {'test acc':>8}")
    print(header)
    print("-" * len(header))
    for norm in ("none", "batch"):
        ours = train_ms_per_step(data, norm)
        bare = bare_loop_ms_per_step(data, norm)
        seconds, accuracy = long_run_seconds(data, norm)
        print(f"{norm:>6} | {ours:15.2f} {bare:17.2f} {ours - bare:+13.2f} | "
              f"{'':>33}{seconds:7.1f} {accuracy:8.3f}")


if __name__ == "__main__":
    main()
