"""A Gradescope autograder for one bnlab exercise: the zip, and what runs inside it.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once to build the image, then for each
submission copies the student's files into ``/autograder/submission``, runs ``/autograder/run_autograder`` and
reads ``/autograder/results/results.json``. Our ``run_autograder`` runs ``bnlab gradescope-run``, which grades
the one notebook in the submission folder with the exercise's master in ``source/solutions``.

``setup.sh`` makes a Python 3.11 virtual environment in ``/autograder/venv`` and installs the course there at the
lock's versions (``constraints.txt`` travels in the zip), so Gradescope grades with the packages learners used.
The grader runs from that installed copy, never from ``source/``, which the submission's code cannot see.
``BNLAB_AUTOGRADER_ROOT`` (default ``/autograder``) and ``BNLAB_PYTHON`` (default: that environment's python)
let a test run the same scripts on a temporary folder laid out the Gradescope way.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from bnlab.grading.export import gradescope_results
from bnlab.grading.grade import SubmissionResult, grade_many, isolation_problem, safe_text, sandboxed
from bnlab.grading.notebooks import find_masters, submitted_notebooks
from bnlab.grading.sandbox import Limits

__all__ = ["SETUP_SH", "RUN_AUTOGRADER", "build_zip", "run"]

SETUP_SH = """#!/usr/bin/env bash
# Gradescope image setup: Python 3.11 (the course's), a virtual environment in $ROOT/venv, and in it the course
# at the versions of the lock every classroom install uses (constraints.txt), with torch's CPU build.
set -euo pipefail
ROOT="${BNLAB_AUTOGRADER_ROOT:-/autograder}"
if ! command -v python3.11 >/dev/null || ! command -v bwrap >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # bubblewrap: each submission's code runs in a sandbox where the container allows one
    apt-get install -y -qq bubblewrap >/dev/null || echo "setup.sh: no bubblewrap; submissions run unsandboxed"
    if ! command -v python3.11 >/dev/null; then  # Gradescope's Ubuntu images ship another Python
        apt-get install -y -qq python3.11 python3.11-venv >/dev/null 2>&1 || {
            apt-get install -y -qq software-properties-common >/dev/null
            add-apt-repository -y ppa:deadsnakes/ppa >/dev/null
            apt-get update -qq
            apt-get install -y -qq python3.11 python3.11-venv >/dev/null
        }
    fi
fi
python3.11 -m venv "$ROOT/venv"
"$ROOT/venv/bin/python" -m pip install --quiet --upgrade pip
# torch's CPU build comes from PyTorch's index (PyPI's torch 2.13.0 is the CUDA build); BNLAB_TORCH_INDEX=""
# leaves it out where the package index in use already has the CPU build
TORCH_INDEX="${BNLAB_TORCH_INDEX-https://download.pytorch.org/whl/cpu}"
"$ROOT/venv/bin/python" -m pip install --quiet -c "$ROOT/source/constraints.txt" \\
    ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} "$ROOT/source"
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grade the notebook(s) in $ROOT/submission and write $ROOT/results/results.json.
set -euo pipefail
ROOT="${BNLAB_AUTOGRADER_ROOT:-/autograder}"
PYTHON="${BNLAB_PYTHON:-$ROOT/venv/bin/python}"
mkdir -p "$ROOT/results"
exec "$PYTHON" -m bnlab gradescope-run --root "$ROOT"
"""


def build_zip(repo: Path, master: Path, target: Path) -> list[str]:
    """Write the autograder zip of one exercise: setup.sh, run_autograder, the bnlab package, pyproject.toml,
    the lock and that exercise's ``master`` notebook (its only master, so the assignment grades nothing else).

    Returns the archive's member names.
    """
    members: dict[str, bytes | Path] = {"setup.sh": SETUP_SH.encode(), "run_autograder": RUN_AUTOGRADER.encode()}
    for path in sorted((repo / "bnlab").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json", ".txt", ".mplstyle"):
            members[str(path.relative_to(repo))] = path
    for name in ("pyproject.toml", "README.md", "constraints.txt"):
        if (repo / name).exists():
            members[name] = repo / name
    members[f"solutions/{master.name}"] = master
    target.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))
            info.external_attr = (0o755 if name in ("setup.sh", "run_autograder") else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, content if isinstance(content, bytes) else content.read_bytes())
    return list(members)


def run(root: Path, limits: Limits = Limits()) -> dict:
    """Grade the one notebook in ``root/submission`` (any depth) with the master in ``root/source/solutions``;
    write ``root/results/results.json`` (always, even when the grader itself fails: Gradescope shows nothing
    without it).

    Exactly one notebook is graded: a submission with none or several scores 0 and says what to upload
    (several copies of the work, say with different answers, must not earn more than one). A Mac's zip
    leftovers (``__MACOSX/``, ``._name``) and notebook checkpoints are not notebooks. The submission's code
    sees neither ``root/source`` (the master, the course's reference code) nor ``root/results``.
    """
    try:
        results = _grade_the_submission(root, limits)
    except Exception as error:  # noqa: BLE001 -- the learner gets a results.json whatever failed
        results = {"score": 0, "tests": [],
                   "output": f"The autograder failed ({type(error).__name__}: {safe_text(str(error))[:300]}); "
                             f"nothing was graded. Tell your instructor."}
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    # ASCII: a file name with a lone surrogate (bytes that are not UTF-8) cannot break the write
    out.write_text(json.dumps(results, indent=1, ensure_ascii=True) + "\n", encoding="ascii")
    return results


def _grade_the_submission(root: Path, limits: Limits) -> dict:
    submission = root / "submission"
    masters = find_masters(root / "source" / "solutions")
    wanted = " or ".join(sorted(masters))
    try:
        notebooks = submitted_notebooks(submission)
    except RecursionError:
        return {"score": 0, "tests": [], "output": "Your submission's folders nest too deep to search: upload "
                                                    f"your {wanted} notebook on its own. Nothing was graded."}
    if len(notebooks) != 1:
        names = ", ".join(safe_text(p.relative_to(submission).as_posix()) for p in notebooks)
        found = "no .ipynb file" if not notebooks else f"{len(notebooks)} notebooks ({names})"
        return {"score": 0, "tests": [],
                "output": f"Your submission has {found}: upload exactly one notebook, your {wanted} exercise. "
                          f"Nothing was graded."}
    graded: SubmissionResult = grade_many([str(notebooks[0])], masters, limits,
                                          also_hidden=(str(root / "source"), str(root / "results")))[0]
    results = gradescope_results(graded)
    if not sandboxed():  # the instructor should know the isolation the grading had
        results["output"] += f"\nGraded without the bubblewrap sandbox: {isolation_problem()}"
    return results
