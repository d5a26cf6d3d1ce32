"""Grade submitted notebooks against their exercise's visible and hidden tests.

:func:`grade_submission` grades one notebook: it reads the exercise from the notebook's own metadata (so a
renamed file grades the same), runs the submission's code in a sandboxed child (:mod:`bnlab.grading.sandbox`)
on a scratch copy, and judges every check here, in the grader, against reference values. A test cell earns its
points when all of its checks pass, as in nbgrader. :func:`grade_many` grades a class, ``jobs`` at a time.
Nothing a submission does -- looping, exhausting memory, exiting, printing megabytes, patching numpy -- stops
the others from being graded, and the submitted files are only ever read.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import stat
import sys
import tempfile
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import nbformat

from bnlab.grading import wire
from bnlab.grading.core import CheckFailed
from bnlab.grading.diagnoses import hint_for_error
from bnlab.grading.notebooks import Master, exercise_of, find_masters, grade_id_of
from bnlab.grading.sandbox import (
    Limits,
    RunResult,
    bubblewrap_problem,
    build_plan,
    run_plan,
    sandbox_for_this_thread,
)
from bnlab.grading.similarity import course_matches, course_units

__all__ = ["TestResult", "SubmissionResult", "grade_submission", "grade_many", "hidden_paths", "identify_exercise",
           "isolation_problem", "safe_text", "sandboxed"]


@dataclass
class TestResult:
    """One graded test cell: ``status`` is "passed", "failed" or "not run"."""

    name: str
    score: float
    max_score: float
    status: str
    feedback: str
    hidden: bool = False


@dataclass
class SubmissionResult:
    """One submission's grade. ``status``: "graded", "timed out", "crashed" or "error" (not gradable)."""

    submission: str
    exercise: str
    score: float
    max_score: float
    status: str
    tests: list[TestResult] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    #: for the instructor, not marks: e.g. code that looks pasted from the course library
    flags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain data for JSON."""
        return asdict(self)


def _error(submission: str, message: str, exercise: str = "") -> SubmissionResult:
    return SubmissionResult(submission, exercise, 0.0, 0.0, "error", notes=[message])


def identify_exercise(nb: Any, masters: dict[str, Master]) -> tuple[str | None, str | None]:
    """(exercise id, note) from ``metadata.bnlab.exercise``; without it, from the cells' nbgrader grade ids.

    A notebook that names an exercise no master has is not guessed at: (None, None).
    """
    exercise = exercise_of(nb)
    if exercise is not None:
        return (exercise, None) if exercise in masters else (None, None)
    ids = {grade_id_of(c) for c in nb.get("cells", [])} - {None}
    matches = [name for name, master in masters.items()
               if ids & ({t.grade_id for t in master.tests} | set(master.solution_ids))]
    if len(matches) == 1:
        return matches[0], (f"the notebook's metadata does not name its exercise; recognised {matches[0]} "
                            f"from its cells")
    return None, None


def _explain_missing(run: RunResult, limits: Limits) -> str:
    where = f" while running {run.last_where}" if run.last_where else ""
    if run.timed_out:
        return (f"not run: the notebook exceeded the {limits.timeout:g} s time limit{where} (an endless loop?), "
                f"so the grading process was stopped")
    code = run.exitcode
    how = f"was killed by signal {-code}" if code is not None and code < 0 else f"exited with code {code}"
    return (f"not run: the grading process {how}{where} -- the notebook ended it (os._exit, exit(), a crash) or "
            f"ran out of memory")


def _check_structure(inputs: dict[str, Any], data: Any) -> None:
    """The judges trust nothing the learner's process sends: one record (a dict) per case or per scripted
    step, exactly. (Without this, a probe patched to return [] would pass "on 0 batches".)"""
    for key in ("cases", "steps"):
        if key in inputs:
            expected = len(inputs[key])
            if not isinstance(data, list) or len(data) != expected or not all(isinstance(r, dict) for r in data):
                count = len(data) if isinstance(data, list) else type(data).__name__
                raise CheckFailed(f"the grading probe sent back {count} results for {expected} {key}: the run was "
                                  f"tampered with or broke, so this check cannot pass")


def _judge(master: Master, checks: dict[tuple[str, int], Any], run: RunResult, limits: Limits) -> list[TestResult]:
    probes = {(m.get("grade_id"), m.get("index")): m for m in run.messages if m.get("type") == "probe"}
    results = []
    for test in master.tests:
        passed, failures, missing = [], [], []
        for index, call in enumerate(test.calls):
            message = probes.get((test.grade_id, index))
            check = checks[(test.grade_id, index)]
            if message is None:
                missing.append(_explain_missing(run, limits))
                continue
            try:
                if "missing" in message:
                    names = ", ".join(str(n) for n in message["missing"])
                    raise CheckFailed(f"not defined when this test runs: {names}. Keep the names given in the "
                                      f"task, and define them in a cell above the test.")
                if "error" in message:
                    error = str(message["error"])
                    raise CheckFailed(f"the check could not finish: {error}{hint_for_error(error)}")
                inputs = check.frozen_inputs()
                data = wire.decode(message["data"])
                _check_structure(inputs, data)
                passed.append(check.judge(inputs, data))
            except CheckFailed as failure:
                failures.append(str(failure))
            except Exception as exc:  # noqa: BLE001 -- malformed results never crash the grader
                failures.append(f"the code returned something that could not be checked ({type(exc).__name__}: "
                                f"{exc})")
        hidden = any(call.hidden for call in test.calls)
        if failures or missing:
            status = "failed" if failures else "not run"
            feedback = "\n".join(failures[:1] + missing[:1])
            results.append(TestResult(test.grade_id, 0.0, test.points, status, feedback, hidden))
        else:
            results.append(TestResult(test.grade_id, test.points, test.points, "passed",
                                      "\n".join("\u2714 " + p for p in passed), hidden))
    return results


def _run_order_notes(nb: Any) -> list[str]:
    """A note when the submitted notebook was not run top to bottom: code cells never run, or run out of order
    (the grader runs it top to bottom, so what the learner last saw may differ from what was graded)."""
    counts = [cell.get("execution_count") for cell in nb.get("cells", [])
              if cell.get("cell_type") == "code" and str(cell.get("source", "")).strip()]
    if not counts or all(count is None for count in counts):
        return []  # never run at all: nothing the learner saw to differ from
    notes = []
    missing = sum(count is None for count in counts)
    if missing:
        notes.append(f"{missing} code cell{'s were' if missing > 1 else ' was'} never run in the submitted "
                     f"notebook; it was graded top to bottom, so results may differ from what you last saw.")
    ran = [count for count in counts if count is not None]
    if any(later <= earlier for earlier, later in zip(ran, ran[1:])):
        notes.append("The submitted notebook's cells were run out of order (their execution counts do not "
                     "increase top to bottom); it was graded top to bottom. Restart the kernel and run all "
                     "before you submit.")
    return notes


def _notes(run: RunResult, limits: Limits, cells: set[str] | None = None) -> list[str]:
    """The notes of a run. ``cells``: the labels of the plan's code cells; a cell error naming anything else
    did not come from the child's own reporting and is dropped."""
    notes = []
    blocked = sorted({str(n) for m in run.messages if m.get("type") == "blocked" for n in m.get("names", [])})
    if blocked:
        notes.append(f"Blocked while grading: {', '.join(blocked)}. Graded code may not use the course's reference "
                     f"implementation (bnlab), torch's own batch norm, or torch in a numpy exercise; code that "
                     f"depends on them fails its tests.")
    errors = [m for m in run.messages if m.get("type") == "cell_error" and (cells is None or m.get("where") in cells)]
    for message in errors[:3]:
        notes.append(f"{message.get('where')} raised {message.get('error')}")
    if len(errors) > 3:
        notes.append(f"... and {len(errors) - 3} more cells raised errors")
    done = next((m for m in run.messages if m.get("type") == "done"), {})
    printed = int(done.get("stdout_chars", 0) or 0) + int(done.get("stderr_chars", 0) or 0)
    if printed > limits.output_chars:
        notes.append(f"The notebook printed {printed:,} characters while graded; only the first "
                     f"{limits.output_chars:,} were kept.")
    if run.timed_out:
        notes.append(_explain_missing(run, limits).replace("not run: ", "Stopped: "))
    elif not run.finished:
        notes.append(_explain_missing(run, limits).replace("not run: ", "Stopped: "))
    return notes


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def safe_text(text: str) -> str:
    """Text from a submission made safe to write and show: lone surrogates (which no file can hold) and
    control characters (terminal escapes that could rewrite the instructor's screen) as visible escapes."""
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", text)


def _safe_result(result: SubmissionResult) -> SubmissionResult:
    """``result`` with every text a submission could have influenced passed through :func:`safe_text`."""
    result.exercise, result.notes, result.flags = (safe_text(result.exercise), [safe_text(n) for n in result.notes],
                                                   [safe_text(f) for f in result.flags])
    for test in result.tests:
        test.feedback = safe_text(test.feedback)
    return result


def grade_submission(path: str, masters: dict[str, Master] | None = None, limits: Limits = Limits(),
                     hidden: tuple[str, ...] | None = None) -> SubmissionResult:
    """Grade one notebook file; ``path`` is reported exactly as given.

    Never raises: whatever goes wrong with one submission -- an unreadable file, a plan that cannot be built,
    a child that cannot start, a result that cannot be judged -- becomes that submission's error row with the
    reason, so a class run always finishes.
    """
    masters = masters if masters is not None else find_masters()
    try:
        return _safe_result(_grade_submission(path, masters, limits, hidden))
    except Exception as exc:  # noqa: BLE001 -- one submission never stops the class
        return _safe_result(_error(path, f"could not be graded: {type(exc).__name__}: {str(exc)[:300]}"))


def _regular_file_problem(source: Path) -> str | None:
    """Why ``source`` is not a plain regular file a submission may be (a symlink could point at a master)."""
    try:
        mode = os.lstat(source).st_mode
    except OSError:
        return f"no such file: {source}"
    if stat.S_ISLNK(mode):
        return "a symbolic link, not a notebook file: submit the notebook itself"
    if not stat.S_ISREG(mode):
        return "not a regular file: submit the notebook itself"
    return None


def _grade_submission(path: str, masters: dict[str, Master], limits: Limits,
                      hidden: tuple[str, ...] | None) -> SubmissionResult:
    source = Path(path)
    problem = _regular_file_problem(source)
    if problem:
        return _error(path, problem)
    with tempfile.TemporaryDirectory(prefix="bnlab-grade-") as scratch:
        copy = Path(scratch) / "submission.ipynb"
        shutil.copyfile(source, copy)
        try:
            nb = nbformat.read(str(copy), as_version=4)
        except Exception as exc:  # noqa: BLE001 -- any unreadable file is an error row
            return _error(path, f"not a readable Jupyter notebook ({type(exc).__name__}: {str(exc)[:200]})")
        exercise, note = identify_exercise(nb, masters)
        if exercise is None:
            named = exercise_of(nb)
            what = f"names exercise {named!r}, which is not one of" if named else "is not a notebook of any of"
            return _error(path, f"this notebook {what} the known exercises ({', '.join(sorted(masters))})",
                          named or "")
        master = masters[exercise]
        plan, checks = build_plan(master, nb, limits)
        hidden = hidden if hidden is not None else hidden_paths([path], masters)
        plan["protected"] = hidden  # files the child may not open
        run, sandbox_note = None, None
        if sandboxed():
            try:
                sandbox = sandbox_for_this_thread(hidden, torch=master.needs_torch)
                run = sandbox.run(plan, f"work-{uuid.uuid4().hex}", limits)
            except (RuntimeError, OSError) as exc:  # the sandbox itself would not start: grade without it
                sandbox_note = f"graded without the sandbox, which did not start ({exc})"
        if run is None:
            workdir = Path(scratch) / "work"
            workdir.mkdir()
            run = run_plan(plan, str(workdir), limits)
    tests = _judge(master, checks, run, limits)
    status = "graded" if run.finished else ("timed out" if run.timed_out else "crashed")
    cells = {item["label"] for item in plan["items"] if item["kind"] == "code"}
    notes = ([note] if note else []) + ([sandbox_note] if sandbox_note else []) + _notes(run, limits, cells)
    notes += _run_order_notes(nb)
    flags = _pasted_course_code(nb)
    notes += [f"Flagged for your instructor: {flag}. This changes no marks; your instructor will look at it."
              for flag in flags]
    score = float(sum(t.score for t in tests))
    return SubmissionResult(path, exercise, score, master.max_score, status, tests, notes, round(run.seconds, 3),
                            flags)


def _pasted_course_code(nb: Any) -> list[str]:
    """The submission's functions and classes that look pasted from the course library (normalized-AST
    similarity, :mod:`bnlab.grading.similarity`), as flags: ``"batchnorm_forward matches the course's
    bnlab.functional._train_forward (similarity 0.97)"``. Every code cell counts, whatever its metadata says."""
    cells = [str(cell.get("source", "")) for cell in nb.get("cells", []) if cell.get("cell_type") == "code"]
    return [f"{match.name} matches the course's {match.source} (similarity {match.similarity:.2f})"
            for match in course_matches(cells)]


def grade_many(paths: list[str], masters: dict[str, Master] | None = None, limits: Limits = Limits(),
               jobs: int = 1, also_hidden: tuple[str, ...] = ()) -> list[SubmissionResult]:
    """Grade every path, ``jobs`` submissions at a time; results in the order of ``paths``. The folders
    ``also_hidden`` are kept from the submissions, as the masters' are (see :func:`hidden_paths`)."""
    masters = masters if masters is not None else find_masters()
    _import_judges()
    hidden = hidden_paths(paths, masters, also_hidden)
    if jobs <= 1 or len(paths) <= 1:
        return [grade_submission(p, masters, limits, hidden) for p in paths]  # grade_submission never raises
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(lambda p: grade_submission(p, masters, limits, hidden), paths))


def _import_judges() -> None:
    """Import everything the judges compare against before any submission runs: without the sandbox a
    submission could otherwise rewrite a module the grader has not imported yet, and be judged by it."""
    import torch  # noqa: F401

    import bnlab.functional  # noqa: F401
    import bnlab.grading.checks  # noqa: F401
    import bnlab.layers  # noqa: F401
    import bnlab.mistakes  # noqa: F401
    import bnlab.nn  # noqa: F401

    course_units()  # the course code that pasted submissions are compared with, read before any submission runs


@functools.lru_cache(maxsize=1)
def isolation_problem() -> str | None:
    """None when submissions run in a bubblewrap sandbox; otherwise the isolation that is lost and how to get
    it back (what ``bnlab grade`` prints before it starts)."""
    problem = bubblewrap_problem()
    if problem is None:
        return None
    return (f"WARNING: {problem}. Without it each submission still runs in its own process with time and memory "
            f"limits, but it can read the masters and the other submissions, see and signal other processes, "
            f"write wherever this user can, and reach the network.")


def sandboxed() -> bool:
    return isolation_problem() is None


def hidden_paths(paths: list[str], masters: dict[str, Master], extra: tuple[str, ...] = ()) -> tuple[str, ...]:
    """The folders a submission must not see: every master's, every graded submission's and the folders
    ``extra`` (also under /tmp: a course that lives there is bound back into the sandbox's own /tmp). A folder
    that holds the Python installation or bnlab itself cannot be hidden (the sandbox runs from it), nor /tmp
    itself. Only the outermost of nested folders is listed (hiding it hides what it holds)."""
    needed = [Path(sys.prefix).resolve(), Path(sys.base_prefix).resolve(), Path(__file__).resolve().parents[2]]
    folders = {Path(m.path).resolve().parent for m in masters.values()}
    folders |= {Path(folder).resolve() for folder in extra if Path(folder).is_dir()}
    folders |= {Path(p).resolve().parent for p in paths if Path(p).exists()}
    keep = [folder for folder in folders
            if folder != Path("/tmp") and not any(folder == need or folder in need.parents for need in needed)]
    return tuple(sorted(str(folder) for folder in keep if not any(outer in folder.parents for outer in keep)))
