"""The bnlab command line: build the course's generated files; grade and export the exercises.

    bnlab build lectures|masters|exercises|cache|site|lock|all [...]
                                                      regenerate what the course generates from its sources
                                                      (bnlab build --help lists the targets and their options)
    bnlab grade PATH... --out DIR [--jobs N] [--timeout S] [--memory MB]
                                                      grade notebooks (or folders of them) into DIR
    bnlab gradescope-zip EXERCISE --out FILE          build the Gradescope autograder zip of one exercise
    bnlab gradescope-run [--root DIR]                 what the zip's run_autograder calls

Also available as ``python -m bnlab``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from bnlab.build.cli import add_build_command, positive_int, solutions_dir

__all__ = ["main"]

REPO = Path(__file__).resolve().parents[1]


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, got {text}")
    return value


def _expand(paths: list[str], parser: argparse.ArgumentParser) -> tuple[list[str], tuple[str, ...]]:
    """(the notebooks to grade, the folders given). Files as given; folders become the *.ipynb files anywhere
    inside them (sorted; Jupyter's checkpoints and a Mac zip's leftovers left out). Nonexistent paths are a
    usage error."""
    from bnlab.grading.notebooks import submitted_notebooks

    out: list[str] = []
    folders: list[str] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            folders.append(given)
            try:
                found = [str(p) for p in submitted_notebooks(path)]
            except RecursionError:
                parser.error(f"folder {given} nests too deep to search: give its notebooks' folders instead")
            if not found:
                parser.error(f"no .ipynb files in folder {given} or its subfolders")
            out += found
        elif path.exists():
            out.append(given)
        else:
            parser.error(f"no such file or folder: {given}")
    return out, tuple(folders)


def _cmd_grade(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    paths, folders = _expand(args.paths, parser)  # before the (slow) imports: bad input fails at once

    from bnlab.grading.export import write_results
    from bnlab.grading.grade import grade_many
    from bnlab.grading.notebooks import find_masters
    from bnlab.grading.sandbox import Limits

    try:
        masters = find_masters(solutions_dir(args.solutions))
    except (FileNotFoundError, ValueError) as exc:
        parser.error(str(exc))
    limits = Limits(timeout=args.timeout, memory_mb=args.memory,
                    cell_seconds=min(args.timeout, Limits.cell_seconds),
                    check_seconds=min(args.timeout, Limits.check_seconds))
    from bnlab.grading.grade import isolation_problem, safe_text

    if isolation_problem():
        print(isolation_problem(), file=sys.stderr)
    start = time.perf_counter()
    results = grade_many(paths, masters, limits, jobs=args.jobs, also_hidden=folders)  # hides what they hold
    write_results(results, Path(args.out))
    for result in results:
        print(f"{result.score:g}/{result.max_score:g}  {result.status:9s}  {result.exercise or '-':16s}  "
              f"{safe_text(result.submission)}" + ("  FLAGGED: " + "; ".join(result.flags) if result.flags else ""))
    seconds = time.perf_counter() - start
    flagged = sum(bool(result.flags) for result in results)
    print(f"graded {len(results)} submission(s) in {seconds:.1f} s with {args.jobs} job(s); "
          f"results in {args.out}/grades.csv"
          + (f"; {flagged} flagged (code that looks pasted from the course library: see the flags column)"
             if flagged else ""))
    return 0


def _cmd_gradescope_zip(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.grading.gradescope import build_zip

    solutions = solutions_dir(args.solutions)
    master = solutions / f"{args.exercise}.ipynb"
    if not master.is_file():
        known = (", ".join(sorted(p.stem for p in solutions.glob("*.ipynb")))
                 or f"none: no master notebooks in {solutions}")
        parser.error(f"unknown exercise {args.exercise!r}: expected one of {known}")
    members = build_zip(REPO, master, Path(args.out))
    print(f"wrote {args.out} ({len(members)} files): upload it as the autograder of the {args.exercise} assignment "
          f"on Gradescope")
    return 0


def _cmd_gradescope_run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.grading.gradescope import run

    root = Path(args.root or os.environ.get("BNLAB_AUTOGRADER_ROOT", "/autograder"))
    if not (root / "submission").is_dir():
        parser.error(f"no submission folder {root / 'submission'}")
    results = run(root)
    print(f"score {results['score']}: wrote {root / 'results' / 'results.json'}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``bnlab`` command."""
    parser = argparse.ArgumentParser(prog="bnlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    add_build_command(sub)

    grade = sub.add_parser("grade", help="grade submitted notebooks")
    grade.add_argument("paths", nargs="+", metavar="PATH", help="notebook files, or folders of them")
    grade.add_argument("--out", required=True, metavar="DIR", help="where grades.csv and feedback go")
    grade.add_argument("--jobs", type=positive_int, default=1, metavar="N", help="submissions graded at once")
    grade.add_argument("--timeout", type=_positive_float, default=60.0, metavar="S",
                       help="seconds allowed per submission (default 60)")
    grade.add_argument("--memory", type=positive_int, default=1024, metavar="MB",
                       help="memory a submission may allocate (default 1024)")
    grade.add_argument("--solutions", metavar="DIR", help="folder of master notebooks (default: solutions/)")
    grade.set_defaults(run=_cmd_grade)

    zip_cmd = sub.add_parser("gradescope-zip", help="build the Gradescope autograder zip of one exercise")
    zip_cmd.add_argument("exercise", metavar="EXERCISE",
                         help="the exercise the assignment grades, e.g. ex2_backward (one zip per assignment)")
    zip_cmd.add_argument("--out", required=True, metavar="FILE")
    zip_cmd.add_argument("--solutions", metavar="DIR")
    zip_cmd.set_defaults(run=_cmd_gradescope_zip)

    gs_run = sub.add_parser("gradescope-run", help="grade a Gradescope submission folder (run_autograder)")
    gs_run.add_argument("--root", metavar="DIR", help="default $BNLAB_AUTOGRADER_ROOT or /autograder")
    gs_run.set_defaults(run=_cmd_gradescope_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``bnlab`` and ``python -m bnlab``; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.run(args, parser)


if __name__ == "__main__":
    sys.exit(main())
