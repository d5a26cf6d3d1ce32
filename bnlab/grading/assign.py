"""Student versions of the exercise masters: ``solutions/*.ipynb`` -> ``exercises/*.ipynb``.

What nbgrader's ``generate_assignment`` does, reproducibly and without a course database: solution regions
become ``# YOUR CODE HERE`` / ``raise NotImplementedError()`` (at the region's indentation), hidden-test regions
are removed, outputs and execution counts are cleared, and widget state and any metadata other than the kernel,
the language and ``bnlab.exercise`` are dropped. Cell metadata (nbgrader's grade ids, locks) stays, so
submissions can be matched to the master cell by cell.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import nbformat

from bnlab.build.notebooks import write_notebook
from bnlab.grading.notebooks import (
    BEGIN_HIDDEN,
    BEGIN_SOLUTION,
    END_HIDDEN,
    END_SOLUTION,
    cell_role,
    validate_nbgrader_metadata,
)

__all__ = ["strip_solution", "strip_hidden_tests", "student_version", "assign"]

STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")
_KEPT_NOTEBOOK_METADATA = ("kernelspec", "language_info", "bnlab")


def _replace_regions(source: str, begin: str, end: str, replacement: tuple[str, ...]) -> str:
    out, inside = [], False
    for line in source.splitlines():
        stripped = line.strip()
        if stripped == begin:
            if inside:
                raise ValueError(f"nested {begin!r}")
            inside = True
            indent = line[: len(line) - len(line.lstrip())]
            out.extend(indent + text for text in replacement)
        elif stripped == end:
            if not inside:
                raise ValueError(f"{end!r} without {begin!r}")
            inside = False
        elif not inside:
            out.append(line)
    if inside:
        raise ValueError(f"{begin!r} without {end!r}")
    return "\n".join(out)


def strip_solution(source: str) -> str:
    """Replace every solution region by the ``# YOUR CODE HERE`` stub."""
    return _replace_regions(source, BEGIN_SOLUTION, END_SOLUTION, STUB)


def strip_hidden_tests(source: str) -> str:
    """Remove every hidden-tests region (markers included) and trailing blank lines."""
    return _replace_regions(source, BEGIN_HIDDEN, END_HIDDEN, ()).rstrip()


def student_version(master: Any) -> Any:
    """The student notebook of a master (a new notebook; the master is not changed)."""
    problems = validate_nbgrader_metadata(master)
    if problems:
        raise ValueError("; ".join(problems))
    nb = copy.deepcopy(master)
    nb.metadata = {k: nb.metadata[k] for k in _KEPT_NOTEBOOK_METADATA if k in nb.metadata}
    for cell in nb.cells:
        role = cell_role(cell)
        if role == "solution":
            cell.source = strip_solution(cell.source)
        elif role == "tests":
            cell.source = strip_hidden_tests(cell.source)
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata.pop("execution", None)
        cell.metadata.pop("widgets", None)
    nbformat.validate(nb)
    return nb


def assign(solutions: Path, exercises: Path, *, check: bool = False) -> list[Path]:
    """Write the student version of every ``solutions/*.ipynb`` into ``exercises/``.

    Returns the files written, or with ``check=True`` the files that would change (nothing is written).
    """
    if not check:
        exercises.mkdir(parents=True, exist_ok=True)
    return [exercises / master.name for master in sorted(solutions.glob("*.ipynb"))
            if write_notebook(student_version(nbformat.read(str(master), as_version=4)), exercises / master.name,
                              check=check)]
