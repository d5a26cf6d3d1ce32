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
STUDENTS = {
    "alice": {},
    "bob": {"replace": {"ex1_inference": wrong.WRONG_INFERENCE["batch_statistics_in_eval"],
                        "ex1_q2": 'answer_q2 = "a"'}},
    "carol": {"replace": {"ex1_forward": wrong.WRONG_FORWARD["eps_outside_sqrt"]}},
}


def run_nbgrader(course: Path, *args: str) -> None:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.mark.slow
def test_nbgrader_and_bnlab_grade_agree_on_every_cell(tmp_path):
    from nbgrader.api import Gradebook

    course = tmp_path / "course"
    (course / "source" / "ps1").mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / "ex1_forward.ipynb", course / "source" / "ps1")
    (course / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "bnlab"\n'
                                               "c.ExecutePreprocessor.timeout = 300\n")
    run_nbgrader(course, "generate_assignment", "ps1", "--force")
    release = (course / "release" / "ps1" / "ex1_forward.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in release and "answer_q1 = \"b\"" not in release

    paths = {}
    for student, spec in STUDENTS.items():
        run_nbgrader(course, "db", "student", "add", student)
        folder = course / "submitted" / student / "ps1"
        folder.mkdir(parents=True)
        paths[student] = write(solved("ex1_forward", **spec), folder, "ex1_forward.ipynb")
    run_nbgrader(course, "autograde", "ps1", "--force")

    ours = dict(zip(STUDENTS, grade_many(list(paths.values()), find_masters())))
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student in STUDENTS:
            notebook = gradebook.find_submission_notebook("ex1_forward", "ps1", student)
            theirs = {grade.name: grade.score for grade in notebook.grades}
            mine = {test.name: test.score for test in ours[student].tests}
            assert theirs == mine, student
            assert notebook.score == ours[student].score
    assert [ours[s].score for s in STUDENTS] == [10.0, 6.0, 5.0]
