"""Interoperability: real nbgrader (generate_assignment, autograde) on our masters agrees with bnlab grade.

nbgrader runs the test cells in the learner's kernel (checks in-process); bnlab grade runs the same checks with
the learner's code sandboxed. For honest submissions both must give the same score, cell by cell.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "grading_fixtures"))
import wrong  # noqa: E402
from submissions import solved, write  # noqa: E402

from bnlab.grading.grade import grade_many  # noqa: E402
from bnlab.grading.notebooks import find_masters  # noqa: E402

nbgrader = pytest.importorskip("nbgrader", reason="nbgrader is not installed: pip install nbgrader (it is in the "
                                                  "test extras) to run the interoperability test")
ROOT = Path(__file__).resolve().parents[1]
EXERCISES = ("ex1_forward", "ex2_backward", "ex3_numpy_layer", "ex4_torch_layer")
# per student, per exercise: solution cells replaced by learner code (the rest is the master's solution)
STUDENTS = {
    "alice": {},
    "bob": {"ex1_forward": {"ex1_inference": wrong.WRONG_INFERENCE["batch_statistics_in_eval"],
                            "ex1_q2": 'answer_q2 = "a"'},
            "ex3_numpy_layer": {"ex3_layer": wrong.WRONG_LAYER_CONV["running_var_batch_size_only"]}},
    "carol": {"ex1_forward": {"ex1_forward": wrong.WRONG_FORWARD["eps_outside_sqrt"]},
              # a forward with another cache: its staged backward is right but m = N; the fused one reads
              # the master's cache layout and fails
              "ex2_backward": {"ex2_forward": wrong.FORWARD, "ex2_backward": wrong.BACKWARD_M_IS_N},
              "ex4_torch_layer": {"ex4_function": wrong.WRONG_TORCH_FUNCTION["momentum_swapped"]}},
}


def run_nbgrader(course: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_nbgrader_and_bnlab_grade_agree_on_every_cell(tmp_path):
    """Every exercise, a right and two partly wrong submissions (mistakes that only hidden tests see among
    them): nbgrader's autograde and bnlab grade -- sandboxed where bubblewrap works -- give the same points to
    every test cell."""
    from nbgrader.api import Gradebook

    from bnlab.grading.grade import isolation_problem

    course = tmp_path / "course"
    (course / "source" / "ps1").mkdir(parents=True)
    for exercise in EXERCISES:
        shutil.copy(ROOT / "solutions" / f"{exercise}.ipynb", course / "source" / "ps1")
    (course / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "bnlab"\n'
                                               "c.ExecutePreprocessor.timeout = 300\n")
    run_nbgrader(course, "generate_assignment", "ps1", "--force")
    release = (course / "release" / "ps1" / "ex1_forward.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in release and "answer_q1 = \"b\"" not in release

    paths = {}
    for student, changes in STUDENTS.items():
        run_nbgrader(course, "db", "student", "add", student)
        folder = course / "submitted" / student / "ps1"
        folder.mkdir(parents=True)
        for exercise in EXERCISES:
            notebook = solved(exercise, replace=changes.get(exercise))
            paths[student, exercise] = write(notebook, folder, f"{exercise}.ipynb")
    run_nbgrader(course, "autograde", "ps1", "--force")

    ours = dict(zip(paths, grade_many(list(paths.values()), find_masters(), jobs=2)))
    if isolation_problem() is None:
        assert not any("without the sandbox" in note for result in ours.values() for note in result.notes)
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for (student, exercise), result in ours.items():
            notebook = gradebook.find_submission_notebook(exercise, "ps1", student)
            theirs = {grade.name: grade.score for grade in notebook.grades}
            assert theirs == {test.name: test.score for test in result.tests}, (student, exercise)
            assert notebook.score == result.score
    totals = {student: [ours[student, e].score for e in EXERCISES] for student in STUDENTS}
    full = [ours["alice", e].max_score for e in EXERCISES]
    assert totals["alice"] == full
    assert [f - t for f, t in zip(full, totals["bob"])] == [4.0, 0.0, 2.0, 0.0]
    assert [f - t for f, t in zip(full, totals["carol"])] == [5.0, 4.0, 0.0, 7.0]
