"""The project installs from its own files, the same way for pip and conda users."""

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pyyaml": "pyyaml", "pytorch": "torch"}


def parse_requirement(text: str) -> tuple[str, str]:
    """'torch==2.13.0' -> ('torch', '==2.13.0'); 'numpy>=1.26' -> ('numpy', '>=1.26'); names lower-cased."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*((?:[=<>!~]=?|==)\s*[^\s;]+)?\s*", text)
    assert match, f"cannot parse requirement {text!r}"
    name = match.group(1).lower().replace("_", "-")
    spec = (match.group(2) or "").replace(" ", "")
    if spec.startswith("=") and not spec.startswith("=="):  # conda's single '='
        spec = "=" + spec
    return CONDA_TO_PYPI.get(name, name), spec


def pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = project["dependencies"] + project["optional-dependencies"]["test"]
    return dict(parse_requirement(line) for line in lines)


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    requirements: dict[str, str] = {}
    for entry in env["dependencies"]:
        if isinstance(entry, dict):
            for line in entry["pip"]:
                requirements.update([parse_requirement(line)])
        else:
            requirements.update([parse_requirement(entry)])
    return requirements


def test_environment_yml_and_pyproject_list_the_same_packages_and_pins():
    env = environment_requirements()
    assert env.pop("python") == "==3.11"
    assert env.pop("pip") == ""
    assert env == pyproject_requirements()


def test_torch_is_pinned_to_the_cpu_wheel_that_lies_on_the_course_machines():
    assert pyproject_requirements()["torch"] == "==2.13.0"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    assert "torch==2.13.0" in pip_section


def test_the_readme_gives_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.MULTILINE)
    assert commands == ["make lab", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^lab:", makefile, re.MULTILINE) and re.search(r"^test:", makefile, re.MULTILINE)


def test_ci_runs_make_test():
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_the_top_level_layout_exists():
    for name in ["bnlab", "notebooks", "exercises", "solutions", "tests", "benchmarks", "environment.yml",
                 "pyproject.toml", "Makefile", "README.md", ".ci/run"]:
        assert (ROOT / name).exists(), name
