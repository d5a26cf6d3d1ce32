"""A Gradescope autograder for the bnlab exercises: the zip, and what runs inside it.

Gradescope unpacks the zip into ``/autograder/source``, runs ``setup.sh`` once to build the image, then for each
submission copies the student's files into ``/autograder/submission``, runs ``/autograder/run_autograder`` and
reads ``/autograder/results/results.json``. Our ``run_autograder`` calls ``python3 -m bnlab gradescope-run``,
which grades every notebook it finds in the submission folder with the masters in ``source/solutions``.

``BNLAB_AUTOGRADER_ROOT`` (default ``/autograder``) and ``BNLAB_PYTHON`` (default ``python3``) let a test run
the same script on a temporary folder laid out the Gradescope way.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

from bnlab.grading.export import gradescope_results
from bnlab.grading.grade import SubmissionResult, grade_many
from bnlab.grading.notebooks import find_masters
from bnlab.grading.sandbox import Limits

__all__ = ["SETUP_SH", "RUN_AUTOGRADER", "build_zip", "run"]

SETUP_SH = """#!/usr/bin/env bash
# Gradescope image setup: install the course package (with the CPU build of torch) from this zip.
set -euo pipefail
apt-get update -qq && apt-get install -y -qq python3 python3-pip python3-venv >/dev/null
python3 -m pip install --quiet --extra-index-url https://download.pytorch.org/whl/cpu /autograder/source
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Grade the notebook(s) in $ROOT/submission and write $ROOT/results/results.json.
set -euo pipefail
ROOT="${BNLAB_AUTOGRADER_ROOT:-/autograder}"
PYTHON="${BNLAB_PYTHON:-python3}"
export PYTHONPATH="$ROOT/source${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$ROOT/results"
exec "$PYTHON" -m bnlab gradescope-run --root "$ROOT"
"""


def build_zip(repo: Path, solutions: Path, target: Path) -> list[str]:
    """Write the autograder zip: setup.sh, run_autograder, the bnlab package, pyproject.toml and the masters.

    Returns the archive's member names.
    """
    members: dict[str, bytes | Path] = {"setup.sh": SETUP_SH.encode(), "run_autograder": RUN_AUTOGRADER.encode()}
    for path in sorted((repo / "bnlab").rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix in (".py", ".json", ".txt", ".mplstyle"):
            members[str(path.relative_to(repo))] = path
    for name in ("pyproject.toml", "README.md"):
        if (repo / name).exists():
            members[name] = repo / name
    for master in sorted(solutions.glob("*.ipynb")):
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
    """Grade ``root/submission/**/*.ipynb`` with ``root/source/solutions``; write ``root/results/results.json``."""
    submission = root / "submission"
    notebooks = sorted(str(p) for p in submission.rglob("*.ipynb") if ".ipynb_checkpoints" not in p.parts)
    masters = find_masters(root / "source" / "solutions")
    if not notebooks:
        results = {"score": 0, "output": "No .ipynb file found in your submission: upload your exercise notebook.",
                   "tests": []}
    else:
        graded: list[SubmissionResult] = grade_many(notebooks, masters, limits)
        parts = [gradescope_results(r) for r in graded]
        if len(parts) == 1:
            results = parts[0]
        else:
            results = {"score": sum(p["score"] for p in parts),
                       "output": "\n".join(f"{Path(r.submission).name}: {p['output']}" for r, p in zip(graded, parts)),
                       "tests": [dict(t, name=f"{Path(r.submission).name}: {t['name']}")
                                 for r, p in zip(graded, parts) for t in p["tests"]]}
    out = root / "results" / "results.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=1, ensure_ascii=False) + "\n")
    return results
