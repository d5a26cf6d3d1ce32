"""The bnlab command line: grade's outputs, clear errors for bad input, and the Gradescope autograder."""

import csv
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent / "grading_fixtures"))
import wrong  # noqa: E402
from submissions import solved, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def bnlab(*args: str, env: dict | None = None, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bnlab", *args], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    directory = tmp_path_factory.mktemp("cli")
    good = write(solved("ex3_numpy_layer"), directory, "bob.ipynb")
    bad = write(solved("ex3_numpy_layer", replace={"ex3_layer": wrong.WRONG_LAYER["momentum_swapped"]}),
                directory, "carol layer.ipynb")
    (directory / "broken.ipynb").write_text("not a notebook")
    # the course's own layer pasted in (renamed, its docstrings gone); it cannot even run, as bnlab is blocked
    import inspect
    import re

    from bnlab import layers
    pasted_source = re.sub(r'"""[\s\S]*?"""', '""', inspect.getsource(layers.BatchNorm)).replace("self.", "layer.")
    pasted = write(solved("ex3_numpy_layer", replace={"ex3_layer": pasted_source.replace("(self", "(layer")}),
                   directory, "dave.ipynb")
    out = directory / "out"
    run = bnlab("grade", good, bad, str(directory / "broken.ipynb"), pasted, "--out", str(out), "--jobs", "2",
                "--timeout", "30")
    return run, out, [good, bad, str(directory / "broken.ipynb"), pasted]


def test_grade_writes_the_csv_with_one_row_per_submission_as_given(graded):
    run, out, paths = graded
    assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader(open(out / "grades.csv")))
    assert list(rows[0]) == ["submission", "exercise", "score", "max_score", "status", "flags"]
    assert [r["submission"] for r in rows] == paths
    assert [(r["score"], r["max_score"], r["status"]) for r in rows[:3]] == [("9", "9", "graded"),
                                                                             ("1", "9", "graded"), ("0", "0", "error")]
    assert [r["flags"] for r in rows[:3]] == ["", "", ""]


def test_code_pasted_from_the_course_is_flagged_in_the_csv_the_feedback_and_the_summary(graded):
    run, out, paths = graded
    row = list(csv.DictReader(open(out / "grades.csv")))[3]
    assert row["flags"].startswith("BatchNorm matches the course's bnlab.layers.BatchNorm (similarity 1.00)")
    feedback = json.loads((out / "feedback" / "004-dave.json").read_text())
    assert any(note.startswith("Flagged for your instructor: BatchNorm matches") for note in feedback["notes"])
    assert "1 flagged" in run.stdout and "FLAGGED" in run.stdout


def test_grade_writes_per_submission_feedback_and_gradescope_results(graded):
    _, out, paths = graded
    feedback = json.loads((out / "feedback" / "002-carol_layer.json").read_text())
    assert feedback["submission"] == paths[1] and feedback["score"] == 1.0
    test = next(t for t in feedback["tests"] if t["name"] == "ex3_train_tests")
    assert set(test) >= {"name", "score", "max_score", "status", "feedback"} and test["status"] == "failed"
    assert "momentum convention is swapped" in test["feedback"]
    results = json.loads((out / "gradescope" / "002-carol_layer" / "results.json").read_text())
    assert results["score"] == 1
    assert all(set(t) >= {"name", "score", "max_score", "status", "output", "visibility"} for t in results["tests"])
    broken = json.loads((out / "gradescope" / "003-broken" / "results.json").read_text())
    assert broken["score"] == 0 and "not a readable Jupyter notebook" in broken["output"]


@pytest.mark.parametrize("isolation", ["bubblewrap", "audit hook only"])
def test_grade_finds_a_class_laid_out_one_folder_per_student(tmp_path, isolation):
    """nbgrader's submitted/STUDENT/ASSIGNMENT/ or an LMS download: one folder given, every student found; Jupyter's
    checkpoints and a Mac zip's leftovers are not submissions; and the folder given is hidden from each of them
    (a roster at its top, in no student's folder, cannot be read). Bubblewrap hides all of /tmp anyway; without
    it (no bwrap on PATH) the audit hook refuses the roster only because the folder given is protected."""
    from bnlab.grading.grade import sandboxed

    if isolation == "bubblewrap" and not sandboxed():
        pytest.skip("bubblewrap is not usable here; to run this case: sudo apt-get install bubblewrap (CI's .ci/run "
                    "installs it)")
    env = {"PATH": str(Path(sys.executable).parent)} if isolation == "audit hook only" else None
    submitted = tmp_path / "submitted"
    for folder in ("alice/ps1/.ipynb_checkpoints", "bob/ps1", "carol", "__MACOSX/bob/ps1"):
        (submitted / folder).mkdir(parents=True)
    roster = submitted / "roster.txt"
    roster.write_text("alice bob carol")
    alice = write(solved("ex1_forward"), submitted / "alice" / "ps1", "ex1_forward.ipynb")
    bob = write(solved("ex1_forward", replace={"ex1_forward": wrong.WRONG_FORWARD["eps_outside_sqrt"]}),
                submitted / "bob" / "ps1", "ex1_forward.ipynb")
    carol = write(solved("ex1_forward", prepend={"ex1_forward": f"open({str(roster)!r}).read()"}),
                  submitted / "carol", "ex1_forward.ipynb")
    write(solved("ex1_forward"), submitted / "alice" / "ps1" / ".ipynb_checkpoints", "ex1_forward-checkpoint.ipynb")
    write(solved("ex1_forward"), submitted / "__MACOSX" / "bob" / "ps1", "._ex1_forward.ipynb")
    run = bnlab("grade", str(submitted), "--out", str(tmp_path / "out"), "--jobs", "2", "--timeout", "30", env=env)
    assert run.returncode == 0, run.stderr
    assert ("WARNING: bubblewrap" in run.stderr) == (isolation == "audit hook only")
    rows = list(csv.DictReader(open(tmp_path / "out" / "grades.csv")))
    assert [r["submission"] for r in rows] == [alice, bob, carol]
    scores = [float(r["score"]) for r in rows]
    assert scores[0] == float(rows[0]["max_score"]) and scores[1] < scores[0] and scores[2] < scores[0], rows


def test_only_the_outermost_of_nested_hidden_folders_is_listed(tmp_path):
    """Bubblewrap mounts an empty folder over each hidden one: a folder inside another would be mounted into the
    empty one, so only the outer is listed (hiding it hides the inner)."""
    from bnlab.grading.grade import hidden_paths
    from bnlab.grading.notebooks import find_masters

    inner = tmp_path / "class" / "alice"
    inner.mkdir(parents=True)
    (inner / "ex1_forward.ipynb").write_text("{}")
    masters = find_masters(ROOT / "solutions")
    hidden = hidden_paths([str(inner / "ex1_forward.ipynb")], masters, extra=(str(tmp_path / "class"),))
    assert str((tmp_path / "class").resolve()) in hidden and str(inner.resolve()) not in hidden
    assert not any(Path(a) in Path(b).parents for a in hidden for b in hidden)


@pytest.mark.parametrize("args, message", [
    (["grade", "nowhere.ipynb", "--out", "x"], "no such file or folder: nowhere.ipynb"),
    (["grade", "solutions", "--out", "x", "--jobs", "0"], "--jobs: must be at least 1"),
    (["grade", "solutions", "--out", "x", "--jobs", "many"], "--jobs: must be a positive whole number"),
    (["grade", "solutions", "--out", "x", "--timeout", "-3"], "--timeout: must be positive"),
    (["grade", "solutions"], "--out"),
    (["grade", "tests/grading_fixtures", "--out", "x"], "no .ipynb files in folder tests/grading_fixtures or its"),
])
def test_bad_command_lines_get_clear_errors(args, message, tmp_path):
    run = bnlab(*args)
    assert run.returncode == 2 and message in run.stderr
    assert not (ROOT / "x").exists()


def unpacked_autograder(tmp_path: Path, exercise: str) -> Path:
    """``bnlab gradescope-zip EXERCISE`` unpacked as Gradescope does (into ROOT/source); returns ROOT, with an
    empty ROOT/submission."""
    zip_path = tmp_path / "autograder.zip"
    run = bnlab("gradescope-zip", exercise, "--out", str(zip_path))
    assert run.returncode == 0, run.stderr
    root = tmp_path / "autograder"
    with zipfile.ZipFile(zip_path) as archive:
        names = archive.namelist()
        assert {"setup.sh", "run_autograder", "bnlab/grading/grade.py", "constraints.txt",
                "pyproject.toml"} <= set(names)
        assert [name for name in names if name.startswith("solutions/")] == [f"solutions/{exercise}.ipynb"]
        archive.extractall(root / "source")
    (root / "submission").mkdir()
    return root


def run_autograder(root: Path, tmp_path: Path, env: dict[str, str] | None = None) -> dict:
    """The zip's run_autograder on ROOT, with this Python unless ``env`` (the whole environment) is given;
    returns results.json."""
    env = env or {**os.environ, "BNLAB_PYTHON": sys.executable}
    done = subprocess.run(["bash", str(root / "source" / "run_autograder")], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={**env, "BNLAB_AUTOGRADER_ROOT": str(root)})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((root / "results" / "results.json").read_text())


def test_the_gradescope_zip_grades_a_submission_laid_out_as_gradescope_does(tmp_path):
    root = unpacked_autograder(tmp_path, "ex2_backward")
    constant_statistics = ("def batchnorm_backward_fused(dout, cache):\n"
                           "    xc, std, inv, xhat, g, axes, m = cache\n"
                           "    return dout * g * inv, (dout * xhat).sum(axis=axes), dout.sum(axis=axes)\n")
    partial = solved("ex2_backward", replace={"ex2_fused": constant_statistics})
    write(partial, root / "submission", "my work.ipynb")
    results = run_autograder(root, tmp_path)
    tests = {t["name"]: t for t in results["tests"]}
    assert results["score"] == 8  # the fused backward's two test cells (3 points) fail
    assert tests["ex2_fused_tests"]["status"] == "failed" and tests["ex2_backward_tests"]["status"] == "passed"
    assert "treated as constants" in tests["ex2_fused_tests"]["output"]
    # a hidden check's result, with its inputs, shows once the grades are published; the others at once
    visibility = {name: test["visibility"] for name, test in tests.items()}
    assert {name for name, seen in visibility.items() if seen == "after_published"} == {
        "ex2_backward_hidden", "ex2_fused_hidden", "ex2_q3_tests"}  # the multiple-choice answer is hidden too
    assert set(visibility.values()) == {"visible", "after_published"}


@pytest.mark.parametrize("uploads", [["a.ipynb", "b.ipynb"], ["a.ipynb", "copies/a.ipynb"]])
def test_the_gradescope_autograder_grades_exactly_one_notebook(tmp_path, uploads):
    """Two copies of full marks must not earn double, nor two versions with different answers the best of
    both: a submission with several notebooks scores 0 and says what to upload."""
    root = unpacked_autograder(tmp_path, "ex1_forward")
    for name in uploads:
        (root / "submission" / name).parent.mkdir(parents=True, exist_ok=True)
        write(solved("ex1_forward"), (root / "submission" / name).parent, Path(name).name)
    results = run_autograder(root, tmp_path)
    assert results["score"] == 0 and results["tests"] == []
    assert results["output"] == (f"Your submission has 2 notebooks ({', '.join(sorted(uploads))}): upload exactly "
                                 f"one notebook, your ex1_forward exercise. Nothing was graded.")


def test_the_gradescope_autograder_grades_only_its_own_exercise(tmp_path):
    """An exercise-1 notebook (10 points when right) uploaded to the exercise-2 assignment earns nothing."""
    root = unpacked_autograder(tmp_path, "ex2_backward")
    write(solved("ex1_forward"), root / "submission", "ex1.ipynb")
    results = run_autograder(root, tmp_path)
    assert results["score"] == 0
    assert "names exercise 'ex1_forward', which is not one of the known exercises (ex2_backward)" in \
        results["output"]


@pytest.mark.parametrize("link", ["notebook", "folder"])
def test_the_gradescope_autograder_grades_no_link(tmp_path, link):
    """A link uploaded in place of the notebook (an unpacked zip can hold one) to the master, which holds the
    solutions, earns nothing; a linked folder is not searched."""
    root = unpacked_autograder(tmp_path, "ex1_forward")
    master = root / "source" / "solutions" / "ex1_forward.ipynb"
    if link == "notebook":
        (root / "submission" / "mine.ipynb").symlink_to(master)
    else:
        (root / "submission" / "work").symlink_to(master.parent, target_is_directory=True)
    results = run_autograder(root, tmp_path)
    assert results["score"] == 0 and results["tests"] == []
    assert ("a symbolic link, not a notebook file" if link == "notebook" else "has no .ipynb file") in \
        results["output"]


def test_the_gradescope_autograder_skips_a_macs_zip_leftovers(tmp_path):
    """A zip made on a Mac carries __MACOSX/._name.ipynb beside the notebook: not a second notebook."""
    root = unpacked_autograder(tmp_path, "ex1_forward")
    write(solved("ex1_forward"), root / "submission", "ex1_forward.ipynb")
    (root / "submission" / "__MACOSX").mkdir()
    (root / "submission" / "__MACOSX" / "._ex1_forward.ipynb").write_bytes(b"\x00\x05\x16\x07 resource fork")
    (root / "submission" / "._ex1_forward.ipynb").write_bytes(b"\x00\x05\x16\x07")
    results = run_autograder(root, tmp_path)
    assert results["score"] == 10, results["output"]


def test_the_gradescope_autograder_always_leaves_a_results_file(tmp_path, monkeypatch):
    """A file name that is not UTF-8, folders nested past Python's recursion limit (about 990 deep: searching
    them raises RecursionError), a grader that fails: results.json is written, valid, and says what went
    wrong."""
    from bnlab.grading import gradescope

    root = unpacked_autograder(tmp_path, "ex1_forward")
    write(solved("ex1_forward"), root / "submission", "ex1_forward.ipynb")
    (root / "submission" / os.fsdecode(b"copy\xff.ipynb")).write_text("{}")
    results = run_autograder(root, tmp_path)
    assert results["score"] == 0 and "2 notebooks" in results["output"]
    (root / "submission" / os.fsdecode(b"copy\xff.ipynb")).unlink()

    def too_deep(self, pattern):  # what searching ~1000 nested folders does (a real tree that deep would also
        raise RecursionError("maximum recursion depth exceeded")  # break pytest's own clean-up of tmp_path)
        yield

    search = Path.rglob
    monkeypatch.setattr(Path, "rglob", too_deep)
    assert "nest too deep" in gradescope.run(root)["output"]
    monkeypatch.setattr(Path, "rglob", search)
    monkeypatch.setattr(gradescope, "grade_many", lambda *args, **kwargs: 1 / 0)
    results = gradescope.run(root)
    assert results["score"] == 0 and results["output"].startswith("The autograder failed (ZeroDivisionError")
    assert json.loads((root / "results" / "results.json").read_text()) == results


def test_the_gradescope_autograder_hides_the_zips_own_files_from_the_submission(tmp_path):
    """The course's reference code travels in the zip (source/bnlab): a cell that reads it, to exec it as its
    own, is refused, as it is for the master."""
    root = unpacked_autograder(tmp_path, "ex1_forward")
    reference = root / "source" / "bnlab" / "functional.py"
    assert reference.is_file()
    write(solved("ex1_forward", prepend={"ex1_forward": f"open({str(reference)!r}).read()"}),
          root / "submission", "ex1_forward.ipynb")
    results = run_autograder(root, tmp_path)
    tests = {t["name"]: t for t in results["tests"]}
    assert tests["ex1_forward_tests"]["status"] == "failed" and results["score"] < 10, results


def test_gradescope_zip_names_the_exercises_it_knows(tmp_path):
    run = bnlab("gradescope-zip", "ex9_nope", "--out", str(tmp_path / "a.zip"))
    assert run.returncode == 2
    assert "unknown exercise 'ex9_nope': expected one of ex1_forward, ex2_backward" in run.stderr
    assert not (tmp_path / "a.zip").exists()


@pytest.mark.skipif(not (shutil.which("python3.11", path=os.defpath) and shutil.which("bwrap")),
                    reason="the Gradescope setup would install Python 3.11 and bubblewrap with apt-get, which a test "
                           "never runs: install Debian's python3.11 and bubblewrap to run it")
def test_the_gradescope_setup_installs_the_course_at_the_locks_versions_and_grades_with_it(tmp_path):
    """setup.sh as Gradescope runs it (a fresh Python 3.11 environment in ROOT/venv, the course installed from
    the zip through its lock), then run_autograder with that environment's python: a full-marks submission gets
    every point."""
    root = unpacked_autograder(tmp_path, "ex1_forward")
    env = {key: value for key, value in os.environ.items()
           if key not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "BNLAB_PYTHON")}
    env.update(BNLAB_AUTOGRADER_ROOT=str(root), PATH=os.defpath,  # the system's python3.11, not this venv's
               BNLAB_TORCH_INDEX="")  # the package index the suite installed from already has the CPU build
    setup = subprocess.run(["bash", str(root / "source" / "setup.sh")], capture_output=True, text=True,
                           timeout=900, env=env, cwd=tmp_path)
    assert setup.returncode == 0, setup.stdout[-3000:] + setup.stderr[-3000:]

    python = root / "venv" / "bin" / "python"
    lock = dict(line.split("==") for line in (ROOT / "constraints.txt").read_text().splitlines()
                if line and not line.startswith("#"))
    report = subprocess.run([str(python), "-c", "import importlib.metadata as m, json, sys; "
                             "print(json.dumps({n: m.version(n) for n in sys.argv[1:]}))",
                             "numpy", "torch", "nbformat", "matplotlib"],
                            capture_output=True, text=True, check=True, env=env)
    installed = {name: version.split("+")[0] for name, version in json.loads(report.stdout).items()}
    assert installed == {name: lock[name] for name in installed}, "setup.sh did not install the lock's versions"

    write(solved("ex1_forward"), root / "submission", "ex1.ipynb")
    results = run_autograder(root, tmp_path, env)  # no BNLAB_PYTHON: the script's default, ROOT/venv
    assert results["tests"] and all(t["status"] == "passed" for t in results["tests"]), results
    assert results["score"] == sum(t["max_score"] for t in results["tests"])


def test_gradescope_run_without_a_notebook_says_what_to_upload(tmp_path):
    (tmp_path / "submission").mkdir()
    (tmp_path / "source").mkdir()
    (tmp_path / "source" / "solutions").symlink_to(ROOT / "solutions")
    run = bnlab("gradescope-run", "--root", str(tmp_path))
    assert run.returncode == 0, run.stderr
    results = json.loads((tmp_path / "results" / "results.json").read_text())
    assert results["score"] == 0 and "Your submission has no .ipynb file: upload exactly one notebook" in \
        results["output"]


def test_hostile_exercise_names_cannot_break_the_csv_or_the_terminal(tmp_path):
    """An exercise name (from the notebook's metadata) with a lone surrogate, terminal escapes or a spreadsheet
    formula: every row is written, the terminal gets no escape character, a formula is shown as text."""
    names = {"surrogate": "\udc80", "escapes": "\x1b[2K\r10/10  graded  =HYPERLINK(\"http://x\")"}
    paths = []
    for stem, exercise in names.items():
        notebook = json.loads(json.dumps(solved("ex1_forward")))
        notebook["metadata"]["bnlab"]["exercise"] = exercise
        path = tmp_path / f"{stem}.ipynb"
        path.write_text(json.dumps(notebook))  # ensure_ascii: the surrogate travels as \udc80
        paths.append(str(path))
    formula = tmp_path / "=1+1.ipynb"
    formula.write_text(json.dumps(json.loads(json.dumps(solved("ex1_forward")))))
    out = tmp_path / "out"
    run = bnlab("grade", *paths, formula.name, "--out", str(out), "--timeout", "30", cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert "\x1b" not in run.stdout + run.stderr
    rows = list(csv.DictReader(open(out / "grades.csv", encoding="utf-8")))
    assert [row["status"] for row in rows] == ["error", "error", "graded"]
    assert rows[2]["submission"] == "'=1+1.ipynb"  # a spreadsheet shows it as text, not a formula
    assert "\\udc80" in (out / "feedback" / "001-surrogate.json").read_text(encoding="utf-8")
