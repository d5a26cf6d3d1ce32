"""``bnlab build TARGET``: regenerate what the course generates from its sources.

    bnlab build lectures [PREFIX...]      notebooks/src/*.py -> notebooks/*.ipynb, executed (each one's time printed)
    bnlab build masters [--check]         solutions/src/*.py -> solutions/*.ipynb (exercise masters)
    bnlab build exercises [--check]       solutions/*.ipynb -> exercises/*.ipynb (student versions)
    bnlab build cache [EXPERIMENT...] [--workers N]
                                          bnlab/experiments/data/*.json.gz (the experiments' shipped runs)
    bnlab build site [--out DIR]          the static site, default build/site/ (needs the site extra)
    bnlab build lock                      constraints.txt, the lock every install uses, from pyproject.toml
    bnlab build all                       masters, exercises, then lectures: every generated file kept in git

``all`` leaves out ``cache`` (minutes of training, needed only when an experiment changes what it measures),
``site`` (an output folder outside git, with its own packages: ``make site``) and ``lock`` (a fresh resolution
from the package index, after a change of pyproject.toml's dependencies; ``make lock`` runs it without an
environment). ``--check`` writes nothing and
exits 1 if anything would change.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["add_build_command", "positive_int", "solutions_dir"]

Handler = Callable[[argparse.Namespace, argparse.ArgumentParser], int]


def solutions_dir(value: str | None) -> Path:
    """The folder of exercise masters: ``value`` if given, else solutions/ (or ``$BNLAB_SOLUTIONS``)."""
    from bnlab.grading.notebooks import default_solutions_dir

    return Path(value) if value else default_solutions_dir()


def _report(changed: list[Path], what: str, check: bool) -> int:
    verb = "would change" if check else "wrote"
    print(f"{verb} {len(changed)} {what}(s)" + "".join(f"\n  {p}" for p in changed))
    return 1 if check and changed else 0


def _lectures(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.build.notebooks import ROOT, LectureError, build_lecture, lecture_sources

    folder = ROOT / "notebooks" / "src"
    if not folder.is_dir():
        parser.error(f"no lecture sources in {folder}: bnlab build works in a clone of the course repository "
                     f"(installed with pip install -e .)")
    sources = lecture_sources(args.prefixes)
    if not sources:
        parser.error(f"no lecture source in {folder} starts with {' or '.join(args.prefixes)}: expected a number "
                     f"such as 02 or a file name's beginning")
    total = time.perf_counter()
    for source in sources:
        try:
            seconds = build_lecture(source)
        except (LectureError, ValueError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        print(f"{source.stem}: " + (f"executed in {seconds:.1f} s" if seconds else "markdown only, not executed"),
              flush=True)
    print(f"built {len(sources)} notebook(s) in {time.perf_counter() - total:.0f} s")
    return 0


def _masters(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.grading.authoring import build_masters

    solutions = solutions_dir(args.solutions)
    if not (solutions / "src").is_dir():
        parser.error(f"no master sources in {solutions / 'src'}: expected solutions/src/ex*.py")
    try:
        changed = build_masters(solutions / "src", solutions, check=args.check)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return _report(changed, "master notebook", args.check)


def _exercises(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.grading.assign import assign

    solutions = solutions_dir(args.solutions)
    if not any(solutions.glob("*.ipynb")):
        parser.error(f"no master notebooks in {solutions}: run bnlab build masters first")
    exercises = Path(args.exercises) if args.exercises else solutions.parent / "exercises"
    try:
        changed = assign(solutions, exercises, check=args.check)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return _report(changed, "exercise notebook", args.check)


def _cache(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.build.cache import build_cache

    try:
        build_cache(args.experiments, workers=args.workers, log=lambda line: print(line, flush=True))
    except ValueError as error:
        parser.error(str(error))
    return 0


def _site(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.build.site import SiteBuildError, build_site  # its own imports of Sphinx are lazy

    try:
        index = build_site(args.out, quiet=args.quiet)
    except SiteBuildError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"site built: {index}")
    return 0


def _lock(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from bnlab.build.lock import write_lock

    return write_lock(args)


def _all(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    steps = (("masters", _masters, {"solutions": None, "check": False}),
             ("exercises", _exercises, {"solutions": None, "exercises": None, "check": False}),
             ("lectures", _lectures, {"prefixes": []}))
    for name, step, options in steps:
        print(f"== bnlab build {name}", flush=True)
        code = step(argparse.Namespace(**options), parser)
        if code:
            return code
    return 0


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1, with a message that says what came instead."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _runs(handler: Handler, parser: argparse.ArgumentParser) -> None:
    """Make ``parser``'s command call ``handler``, which reports usage errors with ``parser``'s usage line."""
    parser.set_defaults(run=lambda args, _top_parser: handler(args, parser))


def add_build_command(sub: argparse._SubParsersAction) -> None:
    """Add ``build`` and its targets to the subcommands ``sub`` of the ``bnlab`` parser."""
    build = sub.add_parser("build", help="regenerate lectures, masters, exercises, the experiment cache or the site",
                           description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    targets = build.add_subparsers(dest="target", required=True, metavar="TARGET",
                                    title="targets (bnlab build TARGET --help for its options)")

    lectures = targets.add_parser("lectures", help="execute notebooks/src/*.py into notebooks/*.ipynb")
    lectures.add_argument("prefixes", nargs="*", metavar="PREFIX",
                          help="only lectures whose file names start with these (e.g. 02 03); default all")
    _runs(_lectures, lectures)

    masters = targets.add_parser("masters", help="solutions/src/*.py -> solutions/*.ipynb")
    masters.add_argument("--solutions", metavar="DIR", help="default: solutions/ (or $BNLAB_SOLUTIONS)")
    masters.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything would change")
    _runs(_masters, masters)

    exercises = targets.add_parser("exercises", help="solutions/*.ipynb -> exercises/*.ipynb (student versions)")
    exercises.add_argument("--solutions", metavar="DIR", help="default: solutions/ (or $BNLAB_SOLUTIONS)")
    exercises.add_argument("--exercises", metavar="DIR", help="default: exercises/ next to the solutions folder")
    exercises.add_argument("--check", action="store_true", help="write nothing; exit 1 if anything would change")
    _runs(_exercises, exercises)

    cache = targets.add_parser("cache", help="recompute the experiments' shipped default-grid runs (slow)")
    cache.add_argument("experiments", nargs="*", metavar="EXPERIMENT", help="default: every experiment")
    cache.add_argument("--workers", type=positive_int, default=2, metavar="N",
                       help="worker processes (default 2)")
    _runs(_cache, cache)

    site = targets.add_parser("site", help="the static HTML site from the stored notebooks (needs the site extra)")
    site.add_argument("--out", type=Path, default=None, metavar="DIR",
                      help="output folder (default: build/site); replaced if it holds a previous site")
    site.add_argument("--quiet", action="store_true", help="show only Sphinx's warnings, not its progress")
    _runs(_site, site)

    lock = targets.add_parser("lock", help="re-resolve constraints.txt from pyproject.toml (uses the package index)")
    from bnlab.build.lock import add_arguments

    add_arguments(lock)
    _runs(_lock, lock)

    everything = targets.add_parser("all", help="masters, exercises, then lectures (not cache, site or lock)")
    _runs(_all, everything)
