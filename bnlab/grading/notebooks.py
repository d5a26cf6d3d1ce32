"""Exercise notebooks: nbgrader cell metadata, cell roles, the checks a test cell calls, and the masters.

Cell roles follow nbgrader (schema version 3):

=========  ===============================================  ==============================================
role       nbgrader metadata                                 what grading does with it
=========  ===============================================  ==============================================
solution   ``solution: true``                                the learner's code: run it (from the submission)
tests      ``grade: true, solution: false, locked: true``    never run from the submission: the master's
                                                             checks are run on the learner's objects
locked     ``locked: true`` only                             run the master's version (setup, given data)
=========  ===============================================  ==============================================

A test cell contains only ``from bnlab.grading import checks`` and calls ``checks.NAME(obj, ..., key=literal)``,
visible or between ``### BEGIN HIDDEN TESTS`` / ``### END HIDDEN TESTS``; :func:`parse_test_calls` reads them
with ``ast`` from the master (never from a submission).
"""

from __future__ import annotations

import ast
import os
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import nbformat

__all__ = ["strip_cell_source", "NBGRADER_KEYS", "TestCall", "TestCell", "Master", "cell_role", "exercise_of",
           "grade_id_of", "parse_test_calls", "validate_nbgrader_metadata", "load_master", "find_masters",
           "default_solutions_dir", "submitted_notebooks",
           "BEGIN_SOLUTION", "END_SOLUTION", "BEGIN_HIDDEN", "END_HIDDEN"]

BEGIN_SOLUTION, END_SOLUTION = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
NBGRADER_KEYS = {"grade": bool, "solution": bool, "locked": bool, "task": bool, "points": (int, float),
                 "grade_id": str, "schema_version": int, "cell_type": str, "checksum": str}
GRADE_ID = re.compile(r"^[A-Za-z0-9_\-]+$")


@dataclass(frozen=True)
class TestCall:
    """One ``checks.NAME(arg, ..., key=value)`` in a test cell: the check, the learner's names, options."""

    check: str
    names: tuple[str, ...]
    options: dict[str, Any] = field(default_factory=dict)
    hidden: bool = False


@dataclass(frozen=True)
class TestCell:
    """A graded test cell of a master: its id, points and the checks it runs (all must pass for the points)."""

    grade_id: str
    points: float
    calls: tuple[TestCall, ...]
    source: str


@dataclass
class Master:
    """An exercise master notebook from solutions/, parsed."""

    exercise: str
    path: Path
    notebook: Any
    tests: list[TestCell]
    locked: dict[str, str]  # grade_id -> source of the master's locked, non-test code cells
    solution_ids: list[str]
    needs_torch: bool
    #: some check blocks torch's own normalization while grading (see ``Check.blocks_torch_norm``)
    blocks_torch_norm: bool = False

    @property
    def max_score(self) -> float:
        return float(sum(test.points for test in self.tests))


def strip_cell_source(source: str) -> str:
    """A cell's source without the hidden-tests region and surrounding blank space, for comparisons."""
    out, inside = [], False
    for line in str(source).splitlines():
        if line.strip() == BEGIN_HIDDEN:
            inside = True
        elif line.strip() == END_HIDDEN:
            inside = False
        elif not inside:
            out.append(line.rstrip())
    return "\n".join(out).strip()


def grade_id_of(cell: Any) -> str | None:
    """The cell's nbgrader grade_id, or None."""
    meta = cell.get("metadata", {}).get("nbgrader")
    return meta.get("grade_id") if isinstance(meta, dict) else None


def cell_role(cell: Any) -> str:
    """"solution", "tests", "locked", "markdown" or "free" (an ordinary code cell)."""
    meta = cell.get("metadata", {}).get("nbgrader")
    if cell.get("cell_type") != "code":
        return "markdown"
    if not isinstance(meta, dict):
        return "free"
    if meta.get("solution"):
        return "solution"
    if meta.get("grade"):
        return "tests"
    if meta.get("locked"):
        return "locked"
    return "free"


def exercise_of(nb: Any) -> str | None:
    """The exercise a notebook belongs to, from ``metadata.bnlab.exercise`` (None if absent or malformed)."""
    meta = nb.get("metadata", {}).get("bnlab") if isinstance(nb, dict) else None
    value = meta.get("exercise") if isinstance(meta, dict) else None
    return value if isinstance(value, str) else None


def _literal(node: ast.AST, where: str) -> Any:
    try:
        return ast.literal_eval(node)
    except ValueError as exc:
        raise ValueError(f"{where}: options must be literals") from exc


def parse_test_calls(source: str, where: str = "test cell") -> tuple[TestCall, ...]:
    """The ``checks.NAME(...)`` calls of a master test cell, marking those inside the hidden-tests region."""
    hidden_lines: set[int] = set()
    inside = False
    for number, line in enumerate(source.splitlines(), start=1):
        if line.strip() == BEGIN_HIDDEN:
            inside = True
        elif line.strip() == END_HIDDEN:
            inside = False
        elif inside:
            hidden_lines.add(number)
    calls = []
    for statement in ast.parse(source).body:
        if isinstance(statement, ast.ImportFrom) and statement.module == "bnlab.grading":
            continue
        if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
            func = statement.value.func
            if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "checks":
                args = statement.value.args
                if not all(isinstance(arg, ast.Name) for arg in args):
                    raise ValueError(f"{where}: positional arguments of checks.{func.attr} must be plain names")
                options = {kw.arg: _literal(kw.value, where) for kw in statement.value.keywords}
                calls.append(TestCall(func.attr, tuple(arg.id for arg in args), options,
                                      statement.lineno in hidden_lines))
                continue
            if isinstance(func, ast.Name) and func.id == "print":
                continue
        raise ValueError(f"{where}: a test cell may only import checks, call checks.NAME(...) and print; "
                         f"found {ast.dump(statement)[:80]}")
    return tuple(calls)


def validate_nbgrader_metadata(nb: Any, master: bool = True) -> list[str]:
    """Problems with a notebook's nbgrader (schema 3) cell metadata; empty when valid.

    For a master (``master=True``) every code solution cell must also hold a solution region.
    """
    problems: list[str] = []
    seen: set[str] = set()
    for index, cell in enumerate(nb.cells):
        meta = cell.get("metadata", {}).get("nbgrader")
        if meta is None:
            continue
        where = f"cell {index}"
        if not isinstance(meta, dict):
            problems.append(f"{where}: nbgrader metadata is not a dict")
            continue
        for key, value in meta.items():
            expected = NBGRADER_KEYS.get(key)
            if expected is None:
                problems.append(f"{where}: unknown nbgrader key {key!r}")
            elif not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
                problems.append(f"{where}: nbgrader.{key} has type {type(value).__name__}")
        for key in ("grade", "solution", "locked", "grade_id", "schema_version"):
            if key not in meta:
                problems.append(f"{where}: nbgrader.{key} missing")
        if meta.get("schema_version") != 3:
            problems.append(f"{where}: schema_version must be 3")
        grade_id = meta.get("grade_id")
        if isinstance(grade_id, str):
            if not GRADE_ID.match(grade_id):
                problems.append(f"{where}: grade_id {grade_id!r} has characters nbgrader rejects")
            if grade_id in seen:
                problems.append(f"{where}: duplicate grade_id {grade_id!r}")
            seen.add(grade_id)
        if meta.get("grade") and not isinstance(meta.get("points"), (int, float)):
            problems.append(f"{where}: a graded cell needs points")
        if meta.get("grade") and not meta.get("solution") and not meta.get("locked"):
            problems.append(f"{where}: a test cell must be locked")
        if meta.get("solution") and meta.get("locked"):
            problems.append(f"{where}: a solution cell cannot be locked")
        if meta.get("task") and cell.cell_type != "markdown":
            problems.append(f"{where}: task cells must be markdown")
        role = cell_role(cell)
        if master and role == "solution" and cell.cell_type == "code":
            if (BEGIN_SOLUTION in cell.source) != (END_SOLUTION in cell.source) or BEGIN_SOLUTION not in cell.source:
                problems.append(f"{where}: solution cell without a {BEGIN_SOLUTION} ... {END_SOLUTION} region")
        if role == "tests" and cell.source.count(BEGIN_HIDDEN) != cell.source.count(END_HIDDEN):
            problems.append(f"{where}: unbalanced hidden-tests markers")
    return problems


def default_solutions_dir() -> Path:
    """``$BNLAB_SOLUTIONS`` if set, else the repository's ``solutions/`` next to the bnlab package."""
    env = os.environ.get("BNLAB_SOLUTIONS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "solutions"


def load_master(path: Path) -> Master:
    """Read and check a master notebook; raises ValueError on anything a grader could not rely on."""
    nb = nbformat.read(str(path), as_version=4)
    exercise = exercise_of(nb)
    if not exercise:
        raise ValueError(f"{path}: no metadata.bnlab.exercise")
    problems = validate_nbgrader_metadata(nb)
    if problems:
        raise ValueError(f"{path}: " + "; ".join(problems))
    from bnlab.grading import checks as _register_all  # noqa: F401 -- fills CHECKS
    from bnlab.grading.core import CHECKS

    tests, locked, solutions = [], {}, []
    for cell in nb.cells:
        role, grade_id = cell_role(cell), grade_id_of(cell)
        if role == "tests":
            calls = parse_test_calls(cell.source, f"{path.name}:{grade_id}")
            unknown = [c.check for c in calls if c.check not in CHECKS]
            if unknown or not calls:
                raise ValueError(f"{path.name}:{grade_id}: unknown checks {unknown}" if unknown else
                                 f"{path.name}:{grade_id}: a test cell without checks")
            tests.append(TestCell(grade_id, float(cell.metadata["nbgrader"]["points"]), calls, cell.source))
        elif role == "locked":
            locked[grade_id] = cell.source
        elif role == "solution":
            solutions.append(grade_id)
    needs_torch = any(CHECKS[c.check].needs_torch for t in tests for c in t.calls)
    blocks_torch_norm = any(CHECKS[c.check].blocks_torch_norm for t in tests for c in t.calls)
    return Master(exercise, path, nb, tests, locked, solutions, needs_torch, blocks_torch_norm)


@lru_cache(maxsize=8)
def _find_masters(directory: str, stamp: tuple[tuple[str, float], ...]) -> dict[str, Master]:
    masters = {}
    for name, _ in stamp:
        master = load_master(Path(directory) / name)
        if master.exercise in masters:
            raise ValueError(f"two masters for exercise {master.exercise!r}")
        masters[master.exercise] = master
    return masters


def find_masters(directory: Path | None = None) -> dict[str, Master]:
    """Every master ``*.ipynb`` in ``directory`` (default :func:`default_solutions_dir`), by exercise id."""
    directory = Path(directory) if directory is not None else default_solutions_dir()
    if not directory.is_dir():
        raise FileNotFoundError(f"no solutions directory {directory} (set BNLAB_SOLUTIONS or pass --solutions)")
    stamp = tuple((p.name, p.stat().st_mtime) for p in sorted(directory.glob("*.ipynb")))
    return _find_masters(str(directory.resolve()), stamp)


def _is_upload_debris(relative: Path) -> bool:
    """Jupyter's autosaved copies and a Mac zip's resource forks: files nobody submitted on purpose."""
    return bool({"__MACOSX", ".ipynb_checkpoints"} & set(relative.parts)) or relative.name.startswith("._")


def submitted_notebooks(folder: Path) -> list[Path]:
    """Every ``*.ipynb`` under ``folder`` at any depth (symlinked folders not followed), sorted, leaving out
    ``.ipynb_checkpoints`` and a Mac zip's ``__MACOSX`` and ``._*`` leftovers. A layout of one folder per
    student (nbgrader's ``submitted/STUDENT/ASSIGNMENT/``, an LMS download) is found whole.

    Raises RecursionError where folders nest deeper than Python can walk."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*.ipynb") if not _is_upload_debris(p.relative_to(folder)))
