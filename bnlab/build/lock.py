"""Write constraints.txt, the lock every install of the course goes through (``make lock`` and
``bnlab build lock`` run this).

pip resolves the project with all its extras in a fresh virtual environment, without installing anything
(``pip install --dry-run --ignore-installed --report``), and this script turns pip's report into the lock: one
``name==version`` line per package, sorted by name, the project itself left out, under a header that records
the hash of pyproject.toml's dependency tables, so a test can tell when the lock is older than them.

The lock is for Linux x86-64 and Python 3.11 (the course machines, CI and Binder), with torch's CPU build: the
script refuses a resolution made anywhere else or one that pulled torch's CUDA build (reach the CPU wheel with
a local wheel folder or ``PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make lock``). Local version
labels are dropped: ``torch 2.13.0+cpu`` is written ``torch==2.13.0``, which pip matches with the CPU build
where an index offers it.

    python3.11 bnlab/build/lock.py [--pyproject pyproject.toml] [--output constraints.txt]

It needs only the standard library, so ``make lock`` runs it with the system's Python 3.11 before any
environment exists.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# what the lock is resolved for, as pip's report states its environment (PEP 508 marker values)
TARGET = {"sys_platform": "linux", "platform_machine": "x86_64", "python_version": "3.11"}
# the header line that records the hash; tests/test_packaging.py reads it
HASH_PREFIX = "# pyproject.toml dependencies sha256: "
# packages that only torch's CUDA build pulls in
CUDA_PACKAGES = re.compile(r"^(nvidia-.*|triton|cuda-.*)$")


class LockError(RuntimeError):
    """The resolution cannot become the lock: pip failed, or it resolved for the wrong platform or build."""


def canonical_name(name: str) -> str:
    """A distribution name as PEP 503 normalizes it: 'Jinja2' -> 'jinja2', 'typing_extensions' ->
    'typing-extensions'."""
    return re.sub(r"[-_.]+", "-", name).lower()


def dependency_tables(pyproject: Path) -> dict:
    """The parts of ``[project]`` that decide what the lock holds: requires-python, dependencies and
    optional-dependencies. Other edits to pyproject.toml (tool settings, the description) leave the lock
    current."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    return {key: project.get(key) for key in ("requires-python", "dependencies", "optional-dependencies")}


def dependency_hash(pyproject: Path) -> str:
    """sha256 of :func:`dependency_tables` as canonical JSON (sorted keys, no spaces)."""
    text = json.dumps(dependency_tables(pyproject), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def resolve(project_dir: Path, extras: list[str], python: str) -> dict:
    """pip's installation report for ``project_dir[extras]``, resolved from scratch in a new virtual environment
    of ``python`` (nothing is installed). Raises :class:`LockError` if pip fails."""
    with tempfile.TemporaryDirectory(prefix="bnlab-lock-") as tmp:
        env_dir, report = Path(tmp) / "venv", Path(tmp) / "report.json"
        subprocess.run([python, "-m", "venv", str(env_dir)], check=True)
        pip = [str(env_dir / "bin" / "python"), "-m", "pip"]
        steps = [pip + ["install", "--quiet", "--upgrade", "pip"],
                 pip + ["install", "--quiet", "--dry-run", "--ignore-installed", "--report", str(report),
                        f"{project_dir}[{','.join(extras)}]"]]
        for command in steps:
            if subprocess.run(command, check=False).returncode != 0:
                raise LockError(f"pip failed (its messages are above): {' '.join(command)}")
        return json.loads(report.read_text(encoding="utf-8"))


def pins_from_report(report: Mapping, project: str) -> dict[str, str]:
    """{canonical name: version without local label} for every package in pip's installation ``report``,
    except ``project`` itself. Raises :class:`LockError` if the report was resolved for another platform or
    Python than :data:`TARGET`, holds torch's CUDA build, or does not include ``project``."""
    environment = report.get("environment", {})
    found = {key: environment.get(key, "?") for key in TARGET}
    if found != TARGET:
        raise LockError(f"the lock is for {TARGET}, but pip resolved for {found}: run `make lock` on Linux "
                        f"x86-64 with Python 3.11")
    pins: dict[str, str] = {}
    for item in report.get("install", []):
        metadata = item["metadata"]
        pins[canonical_name(metadata["name"])] = metadata["version"].split("+", 1)[0]
    if pins.pop(canonical_name(project), None) is None:
        raise LockError(f"pip's report does not install {project!r}: it was made for another project")
    cuda = sorted(name for name in pins if CUDA_PACKAGES.match(name))
    if cuda:
        raise LockError(f"pip resolved torch's CUDA build (it pulled {', '.join(cuda[:3])}...): make the CPU wheel "
                        f"reachable, e.g. PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make lock")
    return pins


def render(pins: Mapping[str, str], digest: str) -> str:
    """The text of constraints.txt: a header saying how it was made, then sorted ``name==version`` lines."""
    header = [
        "# The exact versions every install of bnlab uses (pip install -c constraints.txt): make lab, make test,",
        "# make site and the Binder build (binder/requirements.txt). Generated by `make lock`",
        "# (bnlab/build/lock.py) from pyproject.toml with all extras, resolved by pip for Linux x86-64,",
        "# Python 3.11 and torch's CPU build. Do not edit: change pyproject.toml, then run `make lock`.",
        f"{HASH_PREFIX}{digest}",
    ]
    return "\n".join(header + [f"{name}=={pins[name]}" for name in sorted(pins)]) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of the lock command (``make lock``, ``bnlab build lock``)."""
    parser.add_argument("--pyproject", type=Path, default=ROOT / "pyproject.toml", metavar="FILE",
                        help="default: the repository's pyproject.toml")
    parser.add_argument("--output", type=Path, default=ROOT / "constraints.txt", metavar="FILE",
                        help="default: the repository's constraints.txt")
    parser.add_argument("--python", default=sys.executable, help="the interpreter to resolve for (Python 3.11)")


def write_lock(args: argparse.Namespace) -> int:
    """Resolve the project named by ``args.pyproject`` and write its lock to ``args.output``; returns the exit
    status (1, with the reason on stderr, if the resolution cannot become the lock)."""
    if not args.pyproject.is_file():
        print(f"error: no pyproject.toml at {args.pyproject}: expected the course's project file", file=sys.stderr)
        return 1
    project = tomllib.loads(args.pyproject.read_text(encoding="utf-8"))["project"]
    extras = sorted(project.get("optional-dependencies", {}))
    try:
        report = resolve(args.pyproject.resolve().parent, extras, args.python)
        pins = pins_from_report(report, project["name"])
    except LockError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    partial = args.output.with_name(args.output.name + ".partial")
    partial.write_text(render(pins, dependency_hash(args.pyproject)), encoding="utf-8")
    partial.replace(args.output)  # never leave a half-written lock behind
    print(f"wrote {args.output}: {len(pins)} packages for {project['name']}[{','.join(extras)}]")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python3.11 bnlab/build/lock.py [options]``; returns the exit status."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    add_arguments(parser)
    return write_lock(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
