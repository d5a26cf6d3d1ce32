"""Percent-format notebook sources, shared by the lectures (tools/notebooks.py) and the exercise masters.

A source file is Python split into cells by marker lines:

``# %% [markdown]``                            a markdown cell (every line commented with ``# ``)
``# %%``                                       an ordinary code cell
``# %% solution id=ex1_forward``               exercise masters only: the learner's code
``# %% tests id=ex1_forward_tests points=2``   exercise masters only: a locked, graded test cell
``# %% locked id=ex1_setup``                   exercise masters only: a read-only code cell
"""

from __future__ import annotations

import re
from typing import Any

import nbformat

__all__ = ["KERNELSPEC", "new_course_notebook", "parse_source"]

MARKER = re.compile(r"^# %%(?: \[(?P<markdown>markdown)\]"
                    r"| (?P<role>solution|tests|locked)(?P<attrs>(?: \w+=\S+)*))?\s*$")
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def parse_source(text: str) -> list[dict[str, Any]]:
    """Cells of a percent-format source: ``{"type", "role", "attrs", "source"}`` dicts, in order.

    ``type`` is "markdown" or "code"; ``role`` is None for ordinary cells; ``attrs`` holds ``key=value`` pairs.
    Raises ValueError for a malformed marker, text before the first marker, or an uncommented markdown line.
    """
    cells: list[dict[str, Any]] = []
    for line in text.splitlines():
        marker = MARKER.match(line)
        if marker:
            attrs = dict(pair.split("=", 1) for pair in (marker.group("attrs") or "").split())
            cells.append({"type": "markdown" if marker.group("markdown") else "code",
                          "role": marker.group("role"), "attrs": attrs, "lines": []})
        elif line.startswith("# %%"):
            raise ValueError(f"malformed cell marker: {line!r}")
        elif cells:
            cells[-1]["lines"].append(line)
        elif line.strip():
            raise ValueError(f"text before the first '# %%' marker: {line!r}")
    for cell in cells:
        lines = cell.pop("lines")
        if cell["type"] == "markdown":
            bad = [ln for ln in lines if ln and not ln.startswith("#")]
            if bad:
                raise ValueError(f"markdown line without '# ': {bad[0]!r}")
            lines = [ln[2:] if ln.startswith("# ") else ln[1:] for ln in lines]
        cell["source"] = "\n".join(lines).strip("\n")
    return cells


def new_course_notebook() -> nbformat.NotebookNode:
    """An empty notebook with the course's kernelspec (python3) and language info."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python"}
    return nb
