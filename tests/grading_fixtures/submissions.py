"""Build submitted notebooks from the masters: the student version, filled in with chosen code."""

from __future__ import annotations

import copy
from pathlib import Path

import nbformat

from bnlab.grading.assign import strip_hidden_tests
from bnlab.grading.notebooks import BEGIN_SOLUTION, END_SOLUTION, cell_role, grade_id_of

ROOT = Path(__file__).resolve().parents[2]


def solved(exercise: str, replace: dict[str, str] | None = None, append: list[str] | None = None,
           edit_tests: dict[str, str | None] | None = None, metadata_exercise: str | None = "same",
           prepend: dict[str, str] | None = None):
    """The master of ``exercise`` as a learner would submit it, solved with the master's code.

    ``replace`` maps a solution cell's grade_id to the learner's source for it; ``prepend`` maps one to lines
    run before the master's solution in that cell; ``append`` adds code cells at the end; ``edit_tests`` maps a
    test cell's grade_id to new source (None deletes the cell);
    ``metadata_exercise`` overrides (or with None removes) ``metadata.bnlab.exercise``.
    """
    nb = copy.deepcopy(nbformat.read(ROOT / "solutions" / f"{exercise}.ipynb", as_version=4))
    replace, prepend, edit_tests = replace or {}, prepend or {}, edit_tests or {}
    cells = []
    for cell in nb.cells:
        gid, role = grade_id_of(cell), cell_role(cell)
        if role == "solution":
            cell.source = replace.get(gid, "\n".join(line for line in cell.source.splitlines()
                                                    if line.strip() not in (BEGIN_SOLUTION, END_SOLUTION)))
            if gid in prepend:
                cell.source = prepend[gid] + "\n" + cell.source
        elif role == "tests":
            if gid in edit_tests and edit_tests[gid] is None:
                continue
            cell.source = edit_tests.get(gid, strip_hidden_tests(cell.source))
        cells.append(cell)
    nb.cells = cells + [nbformat.v4.new_code_cell(source) for source in append or []]
    if metadata_exercise is None:
        nb.metadata.pop("bnlab")
    elif metadata_exercise != "same":
        nb.metadata["bnlab"]["exercise"] = metadata_exercise
    return nb


def write(nb, directory: Path, name: str) -> str:
    """Write a notebook and return its path as a string."""
    path = directory / name
    nbformat.write(nb, path)
    return str(path)
