"""Build the lecture notebooks from their percent-format sources, execute them, and store the outputs.

The editable source of each lecture is ``notebooks/src/NN_name.py``: cells start at lines ``# %%`` (code) or
``# %% [markdown]`` (markdown, every line commented with ``# ``). The executed ``notebooks/NN_name.ipynb`` is what
learners open and what nbval checks; ``tests/test_notebooks.py`` fails if the two drift apart.

    .venv/bin/python tools/notebooks.py build            # every lecture
    .venv/bin/python tools/notebooks.py build 02 03      # lectures whose names start with these prefixes

Building executes each notebook top to bottom in a fresh kernel of this environment, prints its wall time,
strips widget state and execution timestamps, and refuses to write a notebook that raised.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from bnlab.percent_format import new_course_notebook, parse_source

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SOURCES = NOTEBOOKS / "src"


def notebook_from_source(path: Path) -> nbformat.NotebookNode:
    """An unexecuted notebook with the cells of a percent-format lecture source (no exercise roles)."""
    nb = new_course_notebook()
    for index, spec in enumerate(parse_source(path.read_text())):
        if spec["role"]:
            raise ValueError(f"{path.name}: exercise cell markers ('{spec['role']}') do not belong in a lecture")
        make = nbformat.v4.new_markdown_cell if spec["type"] == "markdown" else nbformat.v4.new_code_cell
        cell = make(spec["source"])
        cell["id"] = f"{path.stem}-{index:03d}"  # stable ids keep diffs small
        nb.cells.append(cell)
    return nb


def strip_volatile_metadata(nb: nbformat.NotebookNode) -> None:
    """Drop widget state and per-cell execution timestamps."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for output in cell.get("outputs", []):
            output.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)


def build(source: Path, timeout: int = 300) -> float:
    """Execute one lecture from its source and write the .ipynb next to ``src/``; returns seconds taken."""
    nb = notebook_from_source(source)
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3", record_timing=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    start = time.perf_counter()
    client.execute()
    seconds = time.perf_counter() - start
    errors = [out for cell in nb.cells for out in cell.get("outputs", []) if out.get("output_type") == "error"]
    if errors:
        raise RuntimeError(f"{source.name} raised: {errors[0].get('ename')}: {errors[0].get('evalue')}")
    strip_volatile_metadata(nb)
    nbformat.validate(nb)
    nbformat.write(nb, NOTEBOOKS / f"{source.stem}.ipynb")
    return seconds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    build_cmd = sub.add_parser("build", help="execute lecture sources into notebooks/*.ipynb")
    build_cmd.add_argument("prefixes", nargs="*", help="only lectures whose file names start with these")
    args = parser.parse_args(argv)

    sources = sorted(SOURCES.glob("*.py"))
    if args.prefixes:
        sources = [s for s in sources if any(s.name.startswith(p) for p in args.prefixes)]
    if not sources:
        print("no lecture sources matched", file=sys.stderr)
        return 1
    for source in sources:
        seconds = build(source)
        print(f"{source.stem}: executed in {seconds:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
