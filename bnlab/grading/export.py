"""Writing grades: ``grades.csv`` for the class, a feedback JSON and a Gradescope ``results.json`` each.

Layout of ``--out DIR``::

    grades.csv                              submission, exercise, score, max_score, status, flags (one row
                                            each; flags: code that looks pasted from the course library)
    feedback/NNN-<name>.json                every test's name, score, max_score, status and feedback, plus notes
    gradescope/NNN-<name>/results.json      Gradescope's format: score, tests[] (name, score, max_score,
                                            status, output, visibility), output

``NNN`` is the submission's position on the command line, so two submissions with the same file name in
different folders never overwrite each other.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

from bnlab.grading.grade import SubmissionResult, safe_text

__all__ = ["CSV_COLUMNS", "gradescope_results", "write_results", "feedback_text"]

CSV_COLUMNS = ("submission", "exercise", "score", "max_score", "status", "flags")


def _slug(path: str) -> str:
    stem = Path(path).stem or "submission"
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)[:60]


def _number(value: float) -> float | int:
    return int(value) if float(value).is_integer() else round(value, 4)


def feedback_text(result: SubmissionResult) -> str:
    """The feedback a learner reads, as plain text: score, notes, then each test."""
    lines = [f"{result.exercise or 'unknown exercise'}: {_number(result.score)} / {_number(result.max_score)} "
             f"({result.status})"]
    lines += [f"NOTE: {note}" for note in result.notes]
    for test in result.tests:
        lines.append(f"[{test.status.upper()}] {test.name} ({_number(test.score)}/{_number(test.max_score)})")
        lines += ["    " + line for line in test.feedback.splitlines()]
    return "\n".join(lines)


def gradescope_results(result: SubmissionResult, visibility: str = "visible") -> dict[str, Any]:
    """Gradescope's results.json for one submission. A hidden check's result (its inputs included) shows only
    once the instructor publishes the grades ("after_published"); every other test is ``visibility``."""
    return {
        "score": _number(result.score),
        "output": "\n".join([f"{result.exercise or 'unknown exercise'}: {result.status}"] + result.notes),
        "visibility": visibility,
        "stdout_visibility": "hidden",
        "tests": [{"name": test.name, "score": _number(test.score), "max_score": _number(test.max_score),
                   "status": "passed" if test.status == "passed" else "failed", "output": test.feedback,
                   "visibility": "after_published" if test.hidden else visibility} for test in result.tests],
    }


def _cell(text: str) -> str:
    """A CSV cell that a spreadsheet shows as text: one starting with = + - @ (a formula) gets a leading '."""
    text = safe_text(text)
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def write_results(results: list[SubmissionResult], out: Path) -> None:
    """Write grades.csv, the feedback JSONs and the Gradescope results under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "grades.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for result in results:
            writer.writerow([_cell(result.submission), _cell(result.exercise), _number(result.score),
                             _number(result.max_score), result.status, _cell("; ".join(result.flags))])
    for index, result in enumerate(results, start=1):
        name = f"{index:03d}-{_slug(result.submission)}"
        feedback = out / "feedback" / f"{name}.json"
        feedback.parent.mkdir(exist_ok=True)
        feedback.write_text(json.dumps(result.to_dict(), indent=1, ensure_ascii=False) + "\n", encoding="utf-8",
                            errors="backslashreplace")
        gradescope = out / "gradescope" / name / "results.json"
        gradescope.parent.mkdir(parents=True, exist_ok=True)
        gradescope.write_text(json.dumps(gradescope_results(result), indent=1, ensure_ascii=False) + "\n",
                              encoding="utf-8", errors="backslashreplace")
