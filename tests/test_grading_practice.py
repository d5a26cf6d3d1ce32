"""Exercise 5 (batch norm in practice): every check passes right code, names every slip of wrong code (one
message per kind), and grades end to end in the sandbox, where torch's own batch norm is allowed in this
exercise and still blocked in exercise 4.
"""

import ast
import shutil
import statistics
import sys
import time
from pathlib import Path

import nbformat
import pytest

from bnlab.grading import checks
from bnlab.grading.core import CheckFailed
from bnlab.grading.grade import grade_many, grade_submission, hidden_paths
from bnlab.grading.notebooks import find_masters, grade_id_of
from bnlab.grading.practice_checks import EXPLANATIONS
from bnlab.grading.sandbox import Limits, build_plan

sys.path.insert(0, str(Path(__file__).parent / "grading_fixtures"))
import wrong  # noqa: E402
from submissions import solved, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LIMITS = Limits(timeout=30.0, cell_seconds=10.0, check_seconds=10.0, memory_mb=1024)
#: the checks of each learner object, visible first
CHECKS = {
    "make_model": ("practice_model", "practice_model_sizes"),
    "make_batches": ("practice_batches", "practice_batches_sizes"),
    "evaluate": ("practice_evaluate", "practice_evaluate_modes"),
    "predict_one": ("practice_predict", "practice_predict_modes"),
    "fine_tune": ("practice_fine_tune", "practice_fine_tune_nested"),
    "combine_statistics": ("sync_combine", "sync_combine_more"),
    "sync_batchnorm_forward": ("sync_forward", "sync_forward_more"),
}
SUBJECT = {check: name for name, names in CHECKS.items() for check in names}
#: solution cell of each learner object in the master
CELL = {"make_model": "ex5_make_model", "make_batches": "ex5_make_batches", "evaluate": "ex5_evaluate",
        "predict_one": "ex5_predict_one", "fine_tune": "ex5_fine_tune"}


def failure(check, *objects) -> str:
    with pytest.raises(AssertionError) as info:
        check(*objects)
    assert isinstance(info.value, CheckFailed)
    return str(info.value)


def test_correct_learner_code_passes_every_check(capsys):
    for name, names in CHECKS.items():
        learner = wrong.load_practice(wrong.PRACTICE[name], name)
        for check in names:
            getattr(checks, check)(learner)
    printed = capsys.readouterr()
    assert printed.out.count("\u2714") == 14 and printed.err == ""
    assert printed.out.count("(hidden check passed)") == 7


@pytest.mark.parametrize("name", sorted(wrong.PRACTICE_ALSO_RIGHT))
def test_other_right_answers_pass(name):
    """The remainder merged into the last batch (a generator), an evaluation on a copy returning a 0-d float32
    tensor, gamma and beta frozen along with the statistics."""
    learner = wrong.load_practice(wrong.PRACTICE_ALSO_RIGHT[name], name)
    for check in CHECKS[name]:
        getattr(checks, check)(learner)


@pytest.mark.parametrize("label", sorted(wrong.WRONG_PRACTICE))
def test_every_slip_is_named(label):
    source, kinds, check = wrong.WRONG_PRACTICE[label]
    message = failure(getattr(checks, check), wrong.load_practice(source, SUBJECT[check]))
    for kind in kinds:
        assert EXPLANATIONS.get(kind, kind) in message, (kind, message)
    if len(kinds) > 1:
        assert f"has {len(kinds)} problems" in message or message.count("\n") >= len(kinds)


HIDDEN_ONLY = ["model_hard_coded_sizes", "batches_merges_small_remainders_only", "evaluate_train_at_end",
               "evaluate_restores_top_flag_only", "predict_train_at_end", "fine_tune_children_only",
               "combine_divides_by_empty_count", "sync_ignores_eps"]


@pytest.mark.parametrize("label", HIDDEN_ONLY)
def test_slips_only_the_hidden_tests_see(label):
    """model.train() at the end is right for a model that came in training mode, model.train(was_training)
    unfreezes frozen batch norm layers, model.children() misses nested ones, ...: the visible test passes, the
    hidden one names the slip."""
    source, kinds, check = wrong.WRONG_PRACTICE[label]
    learner = wrong.load_practice(source, SUBJECT[check])
    getattr(checks, CHECKS[SUBJECT[check]][0])(learner)
    assert EXPLANATIONS.get(kinds[0], kinds[0]) in failure(getattr(checks, check), learner)


@pytest.mark.parametrize("label", [None, "model_as_found", "model_bias_only", "model_bn_on_output",
                                   "model_dropout_before_bn"])
def test_make_model_findings_agree_with_lecture_12s_lint(label):
    """The judge reads the same three structural slips from the probe's record of module calls that
    bnlab.lessons.practice.lint_batchnorm finds on the model itself (which graded code may not import)."""
    import torch

    from bnlab.lessons.practice import LINT_KINDS, lint_batchnorm

    source = wrong.PRACTICE["make_model"] if label is None else wrong.WRONG_PRACTICE[label][0]
    make_model = wrong.load_practice(source, "make_model")
    found = {finding.kind for finding in lint_batchnorm(make_model(64, 32, 10), torch.randn(8, 64))}
    ours = dict(zip(LINT_KINDS, ("bias_before_batchnorm", "batchnorm_on_output", "dropout_before_batchnorm")))
    if not found:
        checks.practice_model(make_model)
        return
    message = failure(checks.practice_model, make_model)
    assert {kind for kind in LINT_KINDS if EXPLANATIONS[ours[kind]] in message} == found


def test_every_check_has_a_wrong_version_it_catches():
    assert {check for _, _, check in wrong.WRONG_PRACTICE.values()} == set(SUBJECT)


def _as_found_cell() -> str:
    nb = nbformat.read(ROOT / "solutions" / "ex5_practice.ipynb", as_version=4)
    return next(cell.source for cell in nb.cells if grade_id_of(cell) == "ex5_as_found")


def _functions(source: str) -> dict[str, str]:
    return {node.name: ast.dump(node) for node in ast.parse(source).body if isinstance(node, ast.FunctionDef)}


def test_the_fixtures_are_the_script_the_notebook_hands_out():
    """AS_FOUND is the master's locked cell ex5_as_found without the buggy_ prefix (comments aside), so the
    tests below run the very bugs the learners are given."""
    cell = _functions(_as_found_cell().replace("buggy_", ""))
    for name, source in wrong.AS_FOUND.items():
        assert cell[name] == _functions(source)[name], name


def test_every_planted_bug_is_named():
    """The script as found, function by function, through its visible and hidden checks: every planted slip
    is named."""
    cell = _as_found_cell().replace("buggy_", "")
    planted = {"make_model": ("bias_before_batchnorm", "batchnorm_on_output"),
               "make_batches": ("batch_of_one", "short_batch"),
               "evaluate": ("eval_forgotten", "statistics_changed", "mode_not_restored"),
               "predict_one": ("eval_forgotten",),
               "fine_tune": ("statistics_updated",)}
    for name, kinds in planted.items():
        learner = wrong.load_practice(cell, name)
        messages = [failure(getattr(checks, CHECKS[name][0]), learner)]
        try:  # the hidden check: the buggy predict_one is right on a model that comes in eval mode
            getattr(checks, CHECKS[name][1])(learner)
        except CheckFailed as failed:
            messages.append(str(failed))
        text = "\n".join(messages)
        for kind in kinds:
            assert EXPLANATIONS[kind] in text, (name, kind, text)
    fine_tune = failure(checks.practice_fine_tune, wrong.load_practice(cell, "fine_tune"))
    assert "gamma and beta stayed fixed, so only requires_grad_(False) froze anything" in fine_tune


def test_evaluate_forgetting_eval_shows_at_class_sorted_pairs_and_a_batch_of_one():
    message = failure(checks.practice_evaluate, wrong.load_practice(wrong.AS_FOUND["evaluate"], "evaluate"))
    assert "sorted by class, in batches of 2" in message and "Expected more than 1 value per channel" in message
    assert "num_batches_tracked +" in message


def test_only_exercise_4_blocks_torchs_own_batch_norm():
    masters = find_masters()
    assert masters["ex4_torch_layer"].blocks_torch_norm and masters["ex4_torch_layer"].needs_torch
    assert masters["ex5_practice"].needs_torch and not masters["ex5_practice"].blocks_torch_norm
    assert not masters["ex1_forward"].blocks_torch_norm
    for exercise, allow, block in (("ex4_torch_layer", True, True), ("ex5_practice", True, False),
                                   ("ex1_forward", False, False)):
        plan, _ = build_plan(masters[exercise], solved(exercise), LIMITS)
        assert (plan["allow_torch"], plan["block_torch_norm"]) == (allow, block), exercise


def test_the_checks_inputs_change_every_grading_run():
    master = find_masters()["ex5_practice"]
    plans = [build_plan(master, solved("ex5_practice"), LIMITS)[0] for _ in range(2)]
    tests = [{item["grade_id"]: item["calls"] for item in plan["items"] if item["kind"] == "test"} for plan in plans]
    for grade_id in ("ex5_evaluate_tests", "ex5_fine_tune_hidden", "ex5_sync_forward_tests"):
        assert tests[0][grade_id] != tests[1][grade_id]


# ------------------------------------------------------------------------------------------------ end to end

_F_BATCH_NORM = ("import torch.nn.functional as F2\nx = torch.randn(4, 3)\n"
                 "y = F2.batch_norm(x, None, None, training=True)\n"
                 "z = torch.ops.aten.batch_norm(x, None, None, None, None, True, 0.1, 1e-5, False)\n"
                 "torch.manual_seed(1)\n")
EX5 = {
    "correct": dict(),
    "as_found": dict(replace={CELL[name]: source for name, source in wrong.AS_FOUND.items()}),
    # two slips only the hidden tests see, and right work written otherwise
    "partial": dict(replace={CELL["evaluate"]: wrong.WRONG_PRACTICE["evaluate_train_at_end"][0],
                             CELL["fine_tune"]: wrong.WRONG_PRACTICE["fine_tune_children_only"][0],
                             CELL["make_batches"]: wrong.PRACTICE_ALSO_RIGHT["make_batches"],
                             "ex5_combine": wrong.WRONG_PRACTICE["combine_no_between_term"][0]}),
    # torch's own batch norm, called directly, is fine in this exercise; so is torch.optim
    "torch_batch_norm_and_optim": dict(
        replace={CELL["fine_tune"]: wrong.PRACTICE["fine_tune"].replace(
            "        model.zero_grad()\n        loss.backward()\n        with torch.no_grad():\n"
            "            for p in model.parameters():\n                if p.requires_grad:\n"
            "                    p -= lr * p.grad\n",
            "        optimizer.zero_grad()\n        loss.backward()\n        optimizer.step()\n").replace(
            "    for step in range(steps):\n",
            "    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)\n"
            "    for step in range(steps):\n")},
        append=[_F_BATCH_NORM]),
}


@pytest.fixture(scope="module")
def ex5(tmp_path_factory):
    directory = tmp_path_factory.mktemp("ex5")
    paths = {name: write(solved("ex5_practice", **spec), directory, f"{name}.ipynb") for name, spec in EX5.items()}
    shutil.copy(ROOT / "exercises" / "ex5_practice.ipynb", directory / "blank.ipynb")
    paths["blank"] = str(directory / "blank.ipynb")
    results = grade_many(list(paths.values()), find_masters(), LIMITS, jobs=2)
    return dict(zip(paths, results))


def _tests(result):
    return {t.name: t for t in result.tests}


def test_the_master_gets_full_marks_and_no_notes(ex5):
    result = ex5["correct"]
    assert (result.score, result.max_score, result.status) == (23.0, 23.0, "graded"), \
        [t.feedback for t in result.tests if t.status != "passed"]
    assert result.notes == [] and result.flags == []  # torch.manual_seed in the setup cell reports nothing


def test_the_blank_exercise_gets_nothing(ex5):
    result = ex5["blank"]
    assert result.exercise == "ex5_practice" and result.score == 0.0 and result.status == "graded"
    assert "still the exercise's placeholder" in _tests(result)["ex5_evaluate_tests"].feedback


def test_the_script_as_found_fails_part_a_and_every_slip_is_named(ex5):
    result = ex5["as_found"]
    tests = _tests(result)
    part_a = [name for name in tests if not name.startswith(("ex5_combine", "ex5_sync", "ex5_q"))]
    assert len(part_a) == 10 and all(tests[name].score == 0 for name in part_a)
    assert result.score == 8.0  # part B and the two questions
    named = {
        "ex5_make_model_tests": ("bias_before_batchnorm", "batchnorm_on_output"),
        "ex5_make_batches_tests": ("batch_of_one", "short_batch"),
        "ex5_evaluate_tests": ("eval_forgotten", "statistics_changed"),
        "ex5_evaluate_hidden": ("eval_forgotten", "statistics_changed", "mode_not_restored"),
        "ex5_predict_one_tests": ("eval_forgotten",),
        "ex5_fine_tune_tests": ("statistics_updated",),
        "ex5_fine_tune_hidden": ("statistics_updated",),
    }
    for test, kinds in named.items():
        for kind in kinds:
            assert EXPLANATIONS[kind] in tests[test].feedback, (test, kind, tests[test].feedback)


def test_slips_only_hidden_tests_see_cost_only_the_hidden_points(ex5):
    result = ex5["partial"]
    tests = _tests(result)
    lost = {name: test.max_score - test.score for name, test in tests.items() if test.score < test.max_score}
    assert lost == {"ex5_evaluate_hidden": 1.0, "ex5_fine_tune_hidden": 1.0, "ex5_combine_tests": 2.0,
                    "ex5_combine_hidden": 1.0, "ex5_sync_forward_tests": 2.0, "ex5_sync_forward_hidden": 1.0}, lost
    assert EXPLANATIONS["mode_not_restored"] in tests["ex5_evaluate_hidden"].feedback
    assert EXPLANATIONS["no_between_term"] in tests["ex5_sync_forward_tests"].feedback


def test_torch_batch_norm_and_optimizers_work_in_this_exercise(ex5):
    result = ex5["torch_batch_norm_and_optim"]
    assert result.score == result.max_score and result.notes == [], result.notes


def test_grading_one_submission_takes_under_three_seconds(ex5, tmp_path):
    """After the class run above has started the sandbox: the grader's side (the checks' networks trained,
    the judges) and the sandboxed run together."""
    path = write(solved("ex5_practice"), tmp_path, "timed.ipynb")
    masters = find_masters()
    hidden = hidden_paths([path], masters)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        result = grade_submission(path, masters, LIMITS, hidden)
        times.append(time.perf_counter() - start)
        assert result.score == result.max_score
    assert statistics.median(times) < 3.0, times


# ------------------------------------------------------------------------------------------------ nbgrader


@pytest.mark.slow
def test_nbgrader_and_bnlab_grade_agree_on_every_cell(tmp_path):
    """The checks run in the learner's kernel under nbgrader's autograde (exercise 5's network, torch's batch
    norm and all) and give the points bnlab grade gives, cell by cell: the master, the script as found, and
    slips only the hidden tests see."""
    import os
    import subprocess

    pytest.importorskip("nbgrader", reason="nbgrader is not installed (it is in the test extras)")
    from nbgrader.api import Gradebook

    def run_nbgrader(*args: str) -> None:
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
        done = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                              text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]

    course = tmp_path / "course"
    (course / "source" / "ps5").mkdir(parents=True)
    shutil.copy(ROOT / "solutions" / "ex5_practice.ipynb", course / "source" / "ps5")
    (course / "nbgrader_config.py").write_text('c = get_config()\nc.CourseDirectory.course_id = "bnlab"\n'
                                               "c.ExecutePreprocessor.timeout = 300\n")
    run_nbgrader("generate_assignment", "ps5", "--force")
    release = (course / "release" / "ps5" / "ex5_practice.ipynb").read_text()
    assert "BEGIN HIDDEN TESTS" not in release and "practice_evaluate_modes" not in release
    students = {"alice": EX5["correct"], "bob": EX5["as_found"], "carol": EX5["partial"]}
    paths = {}
    for student, spec in students.items():
        run_nbgrader("db", "student", "add", student)
        folder = course / "submitted" / student / "ps5"
        folder.mkdir(parents=True)
        paths[student] = write(solved("ex5_practice", **spec), folder, "ex5_practice.ipynb")
    run_nbgrader("autograde", "ps5", "--force")
    ours = dict(zip(paths, grade_many(list(paths.values()), find_masters(), LIMITS, jobs=2)))
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        for student, result in ours.items():
            notebook = gradebook.find_submission_notebook("ex5_practice", "ps5", student)
            theirs = {grade.name: grade.score for grade in notebook.grades}
            assert theirs == {test.name: test.score for test in result.tests}, student
    assert [ours[s].score for s in students] == [23.0, 8.0, 15.0]
