"""How fast bnlab grade is: seconds per submission, and a class of 100 graded with two jobs.

    .venv/bin/python benchmarks/bench_grading.py            # 100 submissions, --jobs 2
    .venv/bin/python benchmarks/bench_grading.py --class-size 40

Builds a class of submissions from the masters (every exercise, correct and wrong variants, renamed files),
then (1) grades a sample one at a time in this process, after one warm-up, and reports the median wall time per
submission by exercise; (2) runs ``python -m bnlab grade FOLDER --out ... --jobs 2`` as an instructor would and
reports the wall time of the whole class, process start-up and fork-server start included.
Target (the course's quality bar): a class of 100 graded in 30 s or less with --jobs 2 on a 2-core machine,
sandbox on. Machines differ (the same run was 3x faster on one 2-core machine than another): compare the
figures of one run, not absolute times across machines.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "grading_fixtures"))

import wrong  # noqa: E402
from submissions import solved, write  # noqa: E402

VARIANTS = {
    "ex1_forward": [{}, {"replace": {"ex1_forward": wrong.WRONG_FORWARD["unbiased_variance"]}},
                    {"replace": {"ex1_inference": wrong.WRONG_INFERENCE["batch_statistics_in_eval"]}}],
    "ex2_backward": [{}, {"replace": {"ex2_backward": "def batchnorm_backward(dout, cache):\n"
                                                      "    xc, std, inv, xhat, g, axes, m = cache\n"
                                                      "    return dout * g * inv, (dout * xhat).sum(axis=axes), "
                                                      "dout.sum(axis=axes)\n"}}],
    "ex3_numpy_layer": [{}, {"replace": {"ex3_layer": wrong.WRONG_LAYER["momentum_swapped"]}}],
    "ex4_torch_layer": [{}, {"replace": {"ex4_module": wrong.WRONG_TORCH_MODULE["mode_from_grad"]}}],
    "ex5_practice": [{}, {"replace": {f"ex5_{name}": source for name, source in wrong.AS_FOUND.items()}}],
}


def build_class(folder: Path, size: int) -> list[tuple[str, str]]:
    """``size`` submissions cycling through exercises and variants; returns (path, exercise) pairs."""
    made, exercises = [], list(VARIANTS)
    for index in range(size):
        exercise = exercises[index % len(exercises)]
        variants = VARIANTS[exercise]
        spec = variants[(index // len(exercises)) % len(variants)]
        made.append((write(solved(exercise, **spec), folder, f"student{index:03d} {exercise[:3]}.ipynb"), exercise))
    return made


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--class-size", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sample", type=int, default=24, help="submissions timed one at a time")
    args = parser.parse_args()

    from bnlab.grading.grade import grade_submission
    from bnlab.grading.notebooks import find_masters

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "class"
        folder.mkdir()
        submissions = build_class(folder, args.class_size)
        masters = find_masters()
        grade_submission(submissions[0][0], masters)  # warm-up: starts the fork server (imports torch once)
        times: dict[str, list[float]] = {}
        for path, exercise in submissions[: args.sample]:
            start = time.perf_counter()
            result = grade_submission(path, masters)
            times.setdefault(exercise, []).append(time.perf_counter() - start)
            assert result.status == "graded", result
        every = [t for ts in times.values() for t in ts]
        print(f"one at a time ({len(every)} submissions, after warm-up):")
        for exercise, ts in times.items():
            print(f"  {exercise:16s} median {statistics.median(ts):.2f} s  max {max(ts):.2f} s")
        print(f"  all              median {statistics.median(every):.2f} s")

        start = time.perf_counter()
        done = subprocess.run([sys.executable, "-m", "bnlab", "grade", str(folder), "--out", str(Path(tmp) / "out"),
                               "--jobs", str(args.jobs)], capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            raise SystemExit(done.stderr)
        print(f"bnlab grade on {args.class_size} submissions with --jobs {args.jobs}: {seconds:.1f} s wall "
              f"({seconds / args.class_size:.2f} s per submission; target <= 30 s for 100)")


if __name__ == "__main__":
    main()
