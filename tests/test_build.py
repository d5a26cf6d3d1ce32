"""``bnlab build``: its targets and their errors, the percent-format sources, lecture builds, and the lesson map
that README.md and the start page share."""

import importlib.util
import re
import shutil
from pathlib import Path

import nbformat
import pytest

from bnlab.__main__ import build_parser, main
from bnlab.build import cli
from bnlab.build.notebooks import (LectureError, build_lecture, lecture_sources, lesson_map, notebook_from_source,
                                   parse_source, write_notebook)
from bnlab.grading.authoring import build_masters, master_from_source

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
START_SOURCE = ROOT / "notebooks" / "src" / "00_start_here.py"
START_PAGE = ROOT / "notebooks" / "00_start_here.ipynb"
LECTURES = [p for p in sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb")) if p != START_PAGE]
EXERCISES = sorted((ROOT / "exercises").glob("ex*.ipynb"))


# -- the command line ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("argv, expected", [
    (["build", "lectures"], {"target": "lectures", "prefixes": []}),
    (["build", "lectures", "01", "02"], {"target": "lectures", "prefixes": ["01", "02"]}),
    (["build", "masters", "--check"], {"target": "masters", "check": True, "solutions": None}),
    (["build", "exercises", "--exercises", "out"], {"target": "exercises", "check": False, "exercises": "out"}),
    (["build", "cache", "depth", "figure1", "--workers", "3"],
     {"target": "cache", "experiments": ["depth", "figure1"], "workers": 3}),
    (["build", "site", "--out", "somewhere"], {"target": "site", "out": Path("somewhere"), "quiet": False}),
    (["build", "all"], {"target": "all"}),
])
def test_every_target_parses_with_its_options(argv, expected):
    args = build_parser().parse_args(argv)
    assert {key: getattr(args, key) for key in expected} == expected
    assert callable(args.run)


@pytest.mark.parametrize("argv, message", [
    (["build", "nope"], ("argument TARGET: invalid choice: 'nope' (choose from 'lectures', 'masters', 'exercises', "
                         "'cache', 'site', 'lock', 'all')")),
    (["build"], "the following arguments are required: TARGET"),
    (["build-masters"], "invalid choice: 'build-masters'"),
    (["assign"], "invalid choice: 'assign'"),
    (["build", "cache", "--workers", "0"], "--workers: must be at least 1, got 0"),
    (["build", "lectures", "99"], "no lecture source in"),
    (["build", "cache", "no_such_experiment"], "unknown experiment(s) no_such_experiment: expected some of depth"),
])
def test_bad_build_command_lines_are_usage_errors_that_say_what_was_expected(argv, message, capsys):
    with pytest.raises(SystemExit) as stop:
        main(argv)
    assert stop.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err


def test_a_usage_error_shows_the_targets_own_usage_line(capsys):
    with pytest.raises(SystemExit):
        main(["build", "lectures", "99"])
    assert capsys.readouterr().err.startswith("usage: bnlab build lectures")


@pytest.mark.parametrize("target, what", [("masters", "master notebook"), ("exercises", "exercise notebook")])
def test_the_masters_and_the_exercises_in_the_repository_are_in_sync(target, what, capsys):
    assert main(["build", target, "--check"]) == 0
    assert capsys.readouterr().out.strip() == f"would change 0 {what}(s)"


def test_check_reports_a_stale_master_and_writes_nothing(tmp_path, capsys):
    (tmp_path / "src").mkdir()
    source = tmp_path / "src" / "ex1_forward.py"
    shutil.copyfile(ROOT / "solutions" / "src" / "ex1_forward.py", source)
    assert main(["build", "masters", "--solutions", str(tmp_path)]) == 0
    assert "wrote 1 master notebook(s)" in capsys.readouterr().out
    built = (tmp_path / "ex1_forward.ipynb").read_bytes()
    assert built == (ROOT / "solutions" / "ex1_forward.ipynb").read_bytes()

    source.write_text(source.read_text() + "\n# %% [markdown]\n# One more line.\n")
    assert main(["build", "masters", "--solutions", str(tmp_path), "--check"]) == 1
    assert "would change 1 master notebook(s)" in capsys.readouterr().out
    assert (tmp_path / "ex1_forward.ipynb").read_bytes() == built


def test_check_reports_a_hand_edited_exercise(tmp_path, capsys):
    solutions, exercises = tmp_path / "solutions", tmp_path / "exercises"
    solutions.mkdir()
    shutil.copyfile(ROOT / "solutions" / "ex1_forward.ipynb", solutions / "ex1_forward.ipynb")
    assert main(["build", "exercises", "--solutions", str(solutions)]) == 0
    assert (exercises / "ex1_forward.ipynb").read_bytes() == (ROOT / "exercises" / "ex1_forward.ipynb").read_bytes()
    capsys.readouterr()

    (exercises / "ex1_forward.ipynb").write_text((exercises / "ex1_forward.ipynb").read_text().replace(
        "YOUR CODE HERE", "my code here", 1))
    assert main(["build", "exercises", "--solutions", str(solutions), "--check"]) == 1
    assert f"would change 1 exercise notebook(s)\n  {exercises / 'ex1_forward.ipynb'}" in capsys.readouterr().out


def test_all_builds_masters_then_exercises_then_lectures_and_stops_at_a_failure(monkeypatch):
    calls = []

    def step(name, code=0):
        def run(args, parser):
            calls.append(name)
            return code
        return run

    monkeypatch.setattr(cli, "_masters", step("masters"))
    monkeypatch.setattr(cli, "_exercises", step("exercises"))
    monkeypatch.setattr(cli, "_lectures", step("lectures"))
    assert main(["build", "all"]) == 0
    assert calls == ["masters", "exercises", "lectures"]

    calls.clear()
    monkeypatch.setattr(cli, "_exercises", step("exercises", code=1))
    assert main(["build", "all"]) == 1
    assert calls == ["masters", "exercises"]


def test_the_site_target_says_how_to_install_what_is_missing(monkeypatch, tmp_path, capsys):
    from bnlab.build import site

    real = importlib.util.find_spec
    monkeypatch.setattr(site.importlib.util, "find_spec",
                        lambda name, *args: None if name == "sphinx" else real(name, *args))
    assert main(["build", "site", "--out", str(tmp_path / "site")]) == 1
    err = capsys.readouterr().err
    assert "missing: sphinx" in err and "pip install" in err and "make site" in err, err
    assert not (tmp_path / "site").exists()


# -- percent-format sources ----------------------------------------------------------------------------------
def test_a_source_becomes_typed_cells_with_roles_and_attributes():
    cells = parse_source("# %% [markdown]\n# # Title\n#\n# text\n\n# %%\nx = 1\n\n"
                         "# %% tests id=ex_tests points=2\ncheck(x)\n")
    assert [(c["type"], c["role"], c["attrs"], c["source"]) for c in cells] == [
        ("markdown", None, {}, "# Title\n\ntext"),
        ("code", None, {}, "x = 1"),
        ("code", "tests", {"id": "ex_tests", "points": "2"}, "check(x)"),
    ]


@pytest.mark.parametrize("text, message", [
    ("# %% [markdwn]\n# text\n", "lecture.py line 1: malformed cell marker '# %% [markdwn]'"),
    ("# %% answer id=x\nx = 1\n", "lecture.py line 1: malformed cell marker '# %% answer id=x'"),
    ("import numpy\n# %%\nx = 1\n", "lecture.py line 1: text before the first '# %%' marker: 'import numpy'"),
    ("# %%\nx = 1\n# %% [markdown]\n# fine\nnot commented\n",
     "lecture.py line 5: a markdown line must start with '# ', got 'not commented'"),
])
def test_a_malformed_source_is_refused_with_its_file_and_line(text, message):
    with pytest.raises(ValueError) as error:
        parse_source(text, name="lecture.py")
    assert message in str(error.value)


def test_exercise_markers_are_refused_in_a_lecture(tmp_path):
    source = tmp_path / "notebooks" / "src" / "01_x.py"
    source.parent.mkdir(parents=True)
    source.write_text("# %% solution id=x\nx = 1\n")
    with pytest.raises(ValueError, match="exercise cell markers .'solution'. do not belong in a lecture"):
        notebook_from_source(source, root=tmp_path)


def test_a_graded_cell_without_an_id_names_its_file(tmp_path):
    source = tmp_path / "ex9_thing.py"
    source.write_text("# %% [markdown]\n# # Exercise 9\n\n# %% tests points=1\ncheck()\n")
    with pytest.raises(ValueError, match=r"ex9_thing.py, cell 2: a tests cell needs id=\.\.\."):
        master_from_source(source)
    with pytest.raises(ValueError, match="ex9_thing.py"):
        build_masters(tmp_path, tmp_path)


def test_write_notebook_writes_only_what_changes_and_check_writes_nothing(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("text")])
    target = tmp_path / "a.ipynb"
    assert write_notebook(nb, target, check=True) and not target.exists()
    assert write_notebook(nb, target) and target.read_text().endswith("}\n")
    assert not write_notebook(nb, target) and not write_notebook(nb, target, check=True)
    assert nbformat.read(target, as_version=4).cells[0].source == "text"


# -- building lectures ---------------------------------------------------------------------------------------
def _repository(tmp_path: Path, sources: dict[str, str]) -> Path:
    """A minimal repository: README.md and notebooks/src/<name>.py for each source given."""
    (tmp_path / "notebooks" / "src").mkdir(parents=True)
    shutil.copyfile(README, tmp_path / "README.md")
    for name, text in sources.items():
        (tmp_path / "notebooks" / "src" / name).write_text(text)
    return tmp_path


def test_lecture_sources_are_selected_by_prefix(tmp_path):
    root = _repository(tmp_path, {"01_a.py": "", "02_b.py": "", "12_c.py": ""})
    assert [p.name for p in lecture_sources(root=root)] == ["01_a.py", "02_b.py", "12_c.py"]
    assert [p.name for p in lecture_sources(["02", "12"], root=root)] == ["02_b.py", "12_c.py"]
    assert lecture_sources(["99"], root=root) == []


@pytest.mark.slow
def test_a_lecture_is_executed_and_stored_without_volatile_metadata(tmp_path):
    root = _repository(tmp_path, {"01_tiny.py": "# %% [markdown]\n# # Lecture\n\n# %%\nprint(6 * 7)\n"})
    seconds = build_lecture(root / "notebooks" / "src" / "01_tiny.py", root=root)
    assert seconds > 0
    nb = nbformat.read(root / "notebooks" / "01_tiny.ipynb", as_version=4)
    code = nb.cells[1]
    assert code.execution_count == 1 and code.outputs[0].text == "42\n"
    assert "execution" not in code.metadata and "widgets" not in nb.metadata
    assert [c.id for c in nb.cells] == ["01_tiny-000", "01_tiny-001"]


@pytest.mark.slow
def test_a_lecture_that_raises_is_not_written(tmp_path):
    root = _repository(tmp_path, {"01_broken.py": "# %%\nx = 1\n\n# %%\nraise ValueError('on purpose')\n"})
    with pytest.raises(LectureError, match="01_broken.py: a cell raised, nothing written"):
        build_lecture(root / "notebooks" / "src" / "01_broken.py", root=root)
    assert not (root / "notebooks" / "01_broken.ipynb").exists()


# -- the lesson map: README.md is its one source ---------------------------------------------------------------
def _links(text: str) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_the_lesson_map_is_written_once_in_the_readme():
    source = START_SOURCE.read_text()
    assert "<!-- lesson map from README.md" in source, "the start page source lost its lesson-map placeholder"
    assert "|---|" not in source, "a table in the start page source: the lesson map lives in README.md"
    assert "|---|" in lesson_map(README, ".")


def test_the_readme_lesson_map_links_every_lecture_and_exercise_in_order():
    links = _links(lesson_map(README, "."))
    assert links == [f"notebooks/{p.name}" for p in LECTURES] + [f"exercises/{p.name}" for p in EXERCISES], \
        "README.md's lesson map must list every lecture, then every exercise, each linked once, in order"
    for number, path in enumerate(LECTURES, 1):
        assert re.search(rf"^\| {number} \| \[[^]]+\]\(notebooks/{path.name}\) \|", lesson_map(README, "."),
                         re.MULTILINE), f"lecture {number} is not on its numbered row of the README's map"


def test_the_start_page_shows_the_readme_lesson_map_with_links_from_its_folder():
    stored = "\n".join(cell.source for cell in nbformat.read(START_PAGE, as_version=4).cells)
    shown = lesson_map(README, "notebooks")
    assert shown in stored, ("notebooks/00_start_here.ipynb does not show README.md's current lesson map: "
                             "run bnlab build lectures 00")
    assert _links(shown) == [p.name for p in LECTURES] + [f"../exercises/{p.name}" for p in EXERCISES]


def test_the_start_page_links_only_to_course_pages():
    """Lectures and exercises only: the static site has no page for anything else (a link there breaks it)."""
    pages = {p.name for p in LECTURES} | {f"../exercises/{p.name}" for p in EXERCISES}
    text = "\n".join(cell.source for cell in nbformat.read(START_PAGE, as_version=4).cells)
    assert set(_links(text)) == pages
    assert all(cell.cell_type == "markdown" for cell in nbformat.read(START_PAGE, as_version=4).cells)


def test_an_edit_of_the_readme_map_reaches_the_start_page_and_only_through_a_build(tmp_path):
    root = _repository(tmp_path, {"00_start_here.py": START_SOURCE.read_text()})
    readme = root / "README.md"
    readme.write_text(readme.read_text().replace("| 7 | [Experiment: depth]", "| 7 | [Experiment: how deep]"))
    rebuilt = notebook_from_source(root / "notebooks" / "src" / "00_start_here.py", root=root)
    assert "| 7 | [Experiment: how deep](07_depth.ipynb) |" in rebuilt.cells[-1].source
    assert "<!--" not in rebuilt.cells[-1].source
    stored = nbformat.read(START_PAGE, as_version=4)
    assert [c.source for c in stored.cells] != [c.source for c in rebuilt.cells]  # tests/test_notebooks.py fails


def test_links_are_rebased_and_anchors_and_addresses_kept(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("intro [a](docs/a.md)\n<!-- lesson map begin: note\nover two lines -->\n"
                      "[x](notebooks/01_x.ipynb#part-2) [y](exercises/ex1.ipynb) [z](https://example.org/p) "
                      "[w](#here)\n<!-- lesson map end -->\nafter\n")
    assert lesson_map(readme, "notebooks") == ("[x](01_x.ipynb#part-2) [y](../exercises/ex1.ipynb) "
                                               "[z](https://example.org/p) [w](#here)")


@pytest.mark.parametrize("text", ["no markers at all\n", "<!-- lesson map end -->\nx\n<!-- lesson map begin -->\n"])
def test_a_readme_without_its_lesson_map_markers_is_an_error(tmp_path, text):
    (tmp_path / "README.md").write_text(text)
    with pytest.raises(LectureError, match="no lesson map: expected a line '<!-- lesson map begin"):
        lesson_map(tmp_path / "README.md", "notebooks")
