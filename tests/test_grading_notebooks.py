"""Exercise masters and student versions: in step with their sources, valid nbgrader v3, no leaked answers."""

import json
from pathlib import Path

import nbformat
import pytest

from bnlab.grading.assign import student_version
from bnlab.grading.authoring import build_masters, master_from_source
from bnlab.grading.notebooks import (BEGIN_HIDDEN, BEGIN_SOLUTION, END_HIDDEN, END_SOLUTION, cell_role,
                                     exercise_of, find_masters, parse_test_calls, validate_nbgrader_metadata)

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = ROOT / "solutions"
EXERCISES = ROOT / "exercises"
MASTERS = sorted(SOLUTIONS.glob("*.ipynb"))
EXPECTED = ["ex1_forward", "ex2_backward", "ex3_numpy_layer", "ex4_torch_layer", "ex5_practice"]


def test_the_exercises_the_lectures_link_to_exist():
    assert [p.stem for p in MASTERS] == EXPECTED
    assert sorted(p.stem for p in EXERCISES.glob("*.ipynb")) == EXPECTED
    for lecture in (ROOT / "notebooks" / "src").glob("*.py"):
        for name in EXPECTED:
            if f"exercises/{name}.ipynb" in lecture.read_text():
                assert (EXERCISES / f"{name}.ipynb").exists()


def test_masters_are_built_from_their_sources():
    assert build_masters(SOLUTIONS / "src", SOLUTIONS, check=True) == [], "run: bnlab build masters"


def test_regenerating_the_exercises_changes_nothing(tmp_path):
    from bnlab.grading.assign import assign

    assert assign(SOLUTIONS, EXERCISES, check=True) == [], "exercises/ is stale or hand-edited: run bnlab build exercises"
    assign(SOLUTIONS, tmp_path)
    for path in EXERCISES.glob("*.ipynb"):
        assert (tmp_path / path.name).read_bytes() == path.read_bytes()


def _solution_and_hidden_lines(nb) -> list[str]:
    lines, inside = [], False
    for cell in nb.cells:
        for line in cell.source.splitlines():
            stripped = line.strip()
            if stripped in (BEGIN_SOLUTION, BEGIN_HIDDEN):
                inside = True
            elif stripped in (END_SOLUTION, END_HIDDEN):
                inside = False
            elif inside and stripped:
                lines.append(stripped)
    return lines


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_no_solution_code_or_hidden_test_reaches_the_exercise(master):
    nb = nbformat.read(master, as_version=4)
    secret = _solution_and_hidden_lines(nb)
    assert secret
    text = (EXERCISES / master.name).read_text()
    student = nbformat.reads(text, as_version=4)
    sources = "\n".join(c.source for c in student.cells)
    leaked = [line for line in secret if line in sources or json.dumps(line)[1:-1] in text]
    assert leaked == []
    for marker in (BEGIN_SOLUTION, END_SOLUTION, BEGIN_HIDDEN, END_HIDDEN):
        assert marker not in text
    assert "raise NotImplementedError()" in sources


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_metadata_is_valid_nbgrader_schema_3(master):
    for path in (master, EXERCISES / master.name):
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert validate_nbgrader_metadata(nb, master=path == master) == []
        assert exercise_of(nb) == master.stem
        graded = [c.metadata["nbgrader"] for c in nb.cells if "nbgrader" in c.metadata]
        assert graded and all(m["schema_version"] == 3 and m["task"] is False for m in graded)
        assert all(isinstance(m["points"], (int, float)) and m["points"] > 0 for m in graded if m["grade"])


def test_the_validator_rejects_broken_metadata():
    nb = master_from_source(SOLUTIONS / "src" / "ex1_forward.py")
    cells = [c for c in nb.cells if "nbgrader" in c.metadata]
    cells[0].metadata["nbgrader"]["schema_version"] = 2
    cells[1].metadata["nbgrader"]["grade_id"] = cells[2].metadata["nbgrader"]["grade_id"]
    cells[3].metadata["nbgrader"]["points"] = "3"
    cells[4].metadata["nbgrader"]["bogus"] = True
    problems = " | ".join(validate_nbgrader_metadata(nb))
    for expected in ("schema_version must be 3", "duplicate grade_id", "nbgrader.points has type str",
                     "unknown nbgrader key 'bogus'"):
        assert expected in problems


@pytest.mark.parametrize("path", sorted(EXERCISES.glob("*.ipynb")), ids=lambda p: p.stem)
def test_student_versions_are_clean(path):
    raw = json.loads(path.read_text())
    assert "widgets" not in raw["metadata"] and raw["metadata"]["kernelspec"]["name"] == "python3"
    for cell in raw["cells"]:
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [] and cell["execution_count"] is None


@pytest.mark.parametrize("master", MASTERS, ids=lambda p: p.stem)
def test_every_exercise_reads_like_the_lectures(master):
    nb = nbformat.read(master, as_version=4)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert nb.cells[0].source.startswith("# Exercise")
    for part in ("**Goals.**", "Recap", "Hint", "$$"):
        assert part in text, part
    roles = [cell_role(c) for c in nb.cells]
    assert roles.count("tests") >= 3 and "solution" in roles


def test_every_test_cell_has_a_visible_part_and_hidden_tests_exist():
    masters = find_masters(SOLUTIONS)
    assert set(masters) == set(EXPECTED)
    hidden = 0
    for master in masters.values():
        for test in master.tests:
            hidden += sum(call.hidden for call in test.calls)
            assert parse_test_calls(test.source)
    assert hidden >= 10


def test_test_cells_may_only_call_checks():
    with pytest.raises(ValueError, match="may only import checks"):
        parse_test_calls("import os\nos.system('true')")
    with pytest.raises(ValueError, match="plain names"):
        parse_test_calls("from bnlab.grading import checks\nchecks.forward(f())")


def test_student_version_keeps_signature_and_stubs_the_body():
    nb = student_version(nbformat.read(SOLUTIONS / "ex1_forward.ipynb", as_version=4))
    code = next(c.source for c in nb.cells if c.source.startswith("def batchnorm_forward"))
    assert code.splitlines()[0] == "def batchnorm_forward(x, gamma, beta, eps=1e-5):"
    assert code.rstrip().endswith("    # YOUR CODE HERE\n    raise NotImplementedError()")
