"""The project installs from its own files: pyproject.toml says what each kind of user gets, constraints.txt (the
lock, `make lock`) fixes the versions for every install, environment.yml and binder/ say the same for conda and
Binder, and the README's badge and site link agree with pyproject.toml's addresses."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from bnlab.build import lock as lock_module

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
LOCK = ROOT / "constraints.txt"
START_PAGE = "notebooks/00_start_here.ipynb"
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# the oldest Python the lock must install on: Debian 12's python3.11 (tests/test_grading_cli.py's Gradescope
# setup runs it)
OLDEST_PYTHON = "3.11.2"
# conda-forge names that differ from PyPI's
CONDA_TO_PYPI = {"pytorch": "torch"}
# what only instructors, the site build or the tests use; never in the learners' install
NOT_FOR_LEARNERS = {"nbgrader", "pytest", "hypothesis", "pyyaml", "playwright", "keras", "nbval", "sphinx",
                    "myst-nb", "sphinx-book-theme", "jupyter-server-mathjax"}


def parse_requirement(text: str) -> tuple[str, str]:
    """'torch==2.13.0' -> ('torch', '==2.13.0'); 'numpy>=1.26' -> ('numpy', '>=1.26'); conda's 'python=3.11'
    -> ('python', '==3.11'); names canonical."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*((?:[=<>!~]=?|==)\s*[^\s;]+)?\s*", text)
    assert match, f"cannot parse requirement {text!r}"
    name = canonicalize_name(match.group(1))
    spec = (match.group(2) or "").replace(" ", "")
    if spec.startswith("=") and not spec.startswith("=="):  # conda's single '='
        spec = "=" + spec
    return CONDA_TO_PYPI.get(name, name), str(SpecifierSet(spec))  # as pyproject_requirements writes it


def project_requirements(extras: list[str] | None = None) -> list[Requirement]:
    """The project's requirements: its dependencies plus those of ``extras`` (all extras by default), with the
    project's references to its own extras ('bnlab[instructor,site]') left out."""
    optional = PROJECT["optional-dependencies"]
    lines = PROJECT["dependencies"] + [line for extra in (optional if extras is None else extras)
                                       for line in optional[extra]]
    requirements = [Requirement(line) for line in lines]
    return [req for req in requirements if canonicalize_name(req.name) != canonicalize_name(PROJECT["name"])]


def pyproject_requirements() -> dict[str, str]:
    return {canonicalize_name(req.name): str(req.specifier) for req in project_requirements()}


def environment_requirements() -> dict[str, str]:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    assert env["channels"] == ["conda-forge"]
    requirements: dict[str, str] = {}
    for entry in env["dependencies"]:
        lines = entry["pip"] if isinstance(entry, dict) else [entry]
        requirements.update(parse_requirement(line) for line in lines if not line.startswith("-"))
    return requirements


def read_lock() -> tuple[str, dict[str, str]]:
    """(the pyproject hash its header records, {name: version})."""
    digest, pins = None, {}
    for number, line in enumerate(LOCK.read_text().splitlines(), start=1):
        if line.startswith(lock_module.HASH_PREFIX):
            digest = line.removeprefix(lock_module.HASH_PREFIX).strip()
        elif line and not line.startswith("#"):
            match = re.fullmatch(r"([a-z0-9\-]+)==([A-Za-z0-9.]+)", line)
            assert match, f"constraints.txt line {number} is not a canonical 'name==version' pin: {line!r}"
            pins[match.group(1)] = match.group(2)
    assert digest, f"constraints.txt has no {lock_module.HASH_PREFIX!r} header line: run `make lock`"
    return digest, pins


# -- pyproject.toml, environment.yml ----------------------------------------------------------------------------

def test_environment_yml_and_pyproject_list_the_same_packages_and_pins():
    env = environment_requirements()
    assert env.pop("python") == "==3.11"
    assert env.pop("pip") == ""
    assert env == pyproject_requirements()


def test_the_learners_install_carries_learners_tools_only():
    learners = {canonicalize_name(Requirement(line).name) for line in PROJECT["dependencies"]}
    assert not learners & NOT_FOR_LEARNERS, f"in the learners' install: {sorted(learners & NOT_FOR_LEARNERS)}"
    extras = PROJECT["optional-dependencies"]
    assert {canonicalize_name(Requirement(line).name) for line in extras["instructor"]} == {"nbgrader"}
    # the suite checks the nbgrader agreement and builds the site, so its extra includes both
    own = [Requirement(line) for line in extras["test"] if Requirement(line).name == PROJECT["name"]]
    assert [sorted(req.extras) for req in own] == [["instructor", "site"]]


def test_torch_is_pinned_to_the_cpu_wheel_that_lies_on_the_course_machines():
    assert pyproject_requirements()["torch"] == "==2.13.0"
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip_section = next(entry["pip"] for entry in env["dependencies"] if isinstance(entry, dict))
    assert "torch==2.13.0" in pip_section
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in pip_section


# -- the lock ----------------------------------------------------------------------------------------------------

def test_the_lock_is_current_with_pyproject():
    recorded, _ = read_lock()
    assert recorded == lock_module.dependency_hash(ROOT / "pyproject.toml"), (
        "pyproject.toml's dependencies changed since constraints.txt was generated: run `make lock`")


def test_every_requirement_is_pinned_in_the_lock_within_its_specifier():
    _, pins = read_lock()
    problems = []
    for req in project_requirements():
        name = canonicalize_name(req.name)
        if name not in pins:
            problems.append(f"{req} is not in the lock")
        elif not req.specifier.contains(Version(pins[name]), prereleases=True):
            problems.append(f"the lock has {name}=={pins[name]}, outside pyproject.toml's {req}")
    assert not problems, "; ".join(problems) + ": run `make lock`"


def test_the_installed_packages_are_the_locks_versions():
    """The suite's environment (`make test`: the project with every extra, through the lock) holds every pin at
    its version: the lock drove the install."""
    _, pins = read_lock()
    found = {}
    for name in pins:
        try:
            found[name] = importlib.metadata.version(name).split("+")[0]
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    differ = {name: (pins[name], found[name]) for name in pins if found[name] != pins[name]}
    assert not differ, f"(lock, installed) differ: {differ}; run make test, which installs through the lock"


def test_every_pinned_version_runs_on_the_oldest_python_the_course_supports():
    """Some packages' newest releases need Python 3.11.5 (soupsieve 3.0.2 on): a lock resolved with a newer
    3.11 than Debian 12's would not install there. Checked with the Requires-Python of the installed packages
    (the suite's environment holds every pin)."""
    assert Version(OLDEST_PYTHON) in SpecifierSet(PROJECT["requires-python"])
    _, pins = read_lock()
    too_new = {}
    for name, version in pins.items():
        installed = importlib.metadata.distribution(name)
        if installed.version.split("+")[0] != version:
            continue  # test_the_installed_packages_are_the_locks_versions reports it
        needs = installed.metadata.get("Requires-Python")
        if needs and Version(OLDEST_PYTHON) not in SpecifierSet(needs):
            too_new[f"{name}=={version}"] = needs
    assert not too_new, (f"these pins need a newer Python than {OLDEST_PYTHON}: {too_new}; resolve the lock with "
                         f"the oldest Python 3.11: make lock LOCK_PYTHON=/usr/bin/python3.11 (Debian 12's)")


def test_the_lock_is_sorted_without_the_project_and_pins_torch_without_a_local_label():
    _, pins = read_lock()
    assert list(pins) == sorted(pins)
    assert canonicalize_name(PROJECT["name"]) not in pins
    assert pins["torch"] == "2.13.0"  # '+cpu' would name a wheel that only the course machines have
    assert not [name for name in pins if lock_module.CUDA_PACKAGES.match(name)], "the lock holds torch's CUDA build"


def test_every_install_in_the_makefile_goes_through_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^LOCK\s*:=\s*constraints\.txt$", makefile, re.MULTILINE)
    assert re.search(r"^INSTALL\s*:=.*pip install .*-c \$\(LOCK\)$", makefile, re.MULTILINE)
    recipes = re.findall(r"^\t(.*)$", makefile, re.MULTILINE)
    # the one pip call outside $(INSTALL) is pip's own upgrade in a new venv
    assert [line for line in recipes if "pip install" in line and "--upgrade pip" not in line] == []
    installed = sorted(re.sub(r"[;\\\s]+$", "", line.split("$(INSTALL)", 1)[1].strip())
                       for line in recipes if "$(INSTALL)" in line and "--dry-run" not in line)
    assert installed == ["--extra-index-url $(TORCH_CPU_INDEX) torch", "-e '.[site]'", "-e '.[test]'", "-e .",
                         "torch"]
    assert f"TORCH_CPU_INDEX := {TORCH_CPU_INDEX}" in makefile.splitlines()
    assert re.search(r"^lock:", makefile, re.MULTILINE)


# -- Binder and JupyterLab settings ------------------------------------------------------------------------------

def binder_requirements() -> tuple[list[str], list[str]]:
    """(option lines, requirement lines) of binder/requirements.txt."""
    lines = [line.split("#", 1)[0].strip() for line in (ROOT / "binder" / "requirements.txt").read_text().splitlines()]
    lines = [line for line in lines if line]
    return [line for line in lines if line.startswith("-")], [line for line in lines if not line.startswith("-")]


def test_binder_installs_the_learners_packages_at_the_locks_versions():
    options, requirements = binder_requirements()
    assert {canonicalize_name(line) for line in requirements} == {
        canonicalize_name(Requirement(line).name) for line in PROJECT["dependencies"]}, (
        "binder/requirements.txt must name pyproject.toml's dependencies, without versions (the lock has them)")
    constraints = [line.split(None, 1)[1] for line in options if line.startswith("-c ")]
    # pip reads a -c path relative to the requirements file
    assert [(ROOT / "binder" / path).resolve() for path in constraints] == [LOCK]
    assert f"--extra-index-url {TORCH_CPU_INDEX}" in options


def test_binder_runs_the_locks_python_and_installs_the_course_with_the_settings():
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime) and Version(runtime.removeprefix("python-")) in SpecifierSet(
        PROJECT["requires-python"]), runtime
    post_build = ROOT / "binder" / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    text = post_build.read_text()
    assert "pip install --no-cache-dir --no-deps -e ." in text
    assert "jupyter/overrides.json" in text
    # with binder/ present repo2docker ignores top-level configuration files: none may pretend otherwise
    for name in ("postBuild", "requirements.txt", "runtime.txt", "apt.txt", "start"):
        assert not (ROOT / name).exists(), f"top-level {name} is ignored by Binder (binder/ exists)"


def test_make_lab_and_binder_switch_the_news_prompt_off_with_the_same_overrides():
    overrides = json.loads((ROOT / "jupyter" / "overrides.json").read_text())
    assert overrides["@jupyterlab/apputils-extension:notification"] == {"fetchNews": "false",
                                                                        "checkForUpdates": False}
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^OVERRIDES\s*:=\s*\$\(VENV\)/share/jupyter/lab/settings/overrides\.json$", makefile,
                     re.MULTILINE)
    assert re.search(r"^\$\(OVERRIDES\): jupyter/overrides\.json", makefile, re.MULTILINE)
    assert re.search(r"^lab:.*\$\(OVERRIDES\)", makefile, re.MULTILINE)


# -- README, Makefile, CI ----------------------------------------------------------------------------------------

def test_the_readme_gives_exactly_the_two_setup_commands():
    readme = (ROOT / "README.md").read_text()
    commands = re.findall(r"^\s*(make \w+)\s*$", readme, flags=re.MULTILINE)
    assert commands == ["make lab", "make test"]
    makefile = (ROOT / "Makefile").read_text()
    for target in ("lab", "test", "site", "lock", "bench", "clean-venv"):
        assert re.search(rf"^{target}:", makefile, re.MULTILINE), target


def test_the_readme_binder_badge_opens_the_lesson_map_of_the_projects_repository():
    readme = (ROOT / "README.md").read_text()
    badges = re.findall(r"\[!\[[^\]]*\]\((https://mybinder\.org/badge_logo\.svg)\)\]\(([^)\s]+)\)", readme)
    assert len(badges) == 1, f"expected one Binder badge in the README, found {badges}"
    link = urlsplit(badges[0][1])
    owner, repo = urlsplit(PROJECT["urls"]["Repository"]).path.strip("/").split("/")
    match = re.fullmatch(r"/v2/gh/([^/]+)/([^/]+)/([^/]+)", link.path)
    assert link.netloc == "mybinder.org" and match, f"not a mybinder.org GitHub launch link: {badges[0][1]}"
    assert (match.group(1), match.group(2)) == (owner, repo), (
        f"the badge launches {match.group(1)}/{match.group(2)}, pyproject.toml's Repository is {owner}/{repo}")
    assert [unquote(path) for path in parse_qs(link.query).get("urlpath", [])] == [f"lab/tree/{START_PAGE}"]
    assert (ROOT / START_PAGE).exists(), f"the badge opens {START_PAGE}, which is missing"


def test_the_readme_links_the_site_and_says_how_to_build_it():
    readme = (ROOT / "README.md").read_text()
    site = PROJECT["urls"]["Documentation"]
    assert re.search(rf"\]\({re.escape(site)}\)", readme), f"the README does not link the site {site}"
    assert "`make site`" in readme and "build/site/index.html" in readme


def test_ci_runs_make_test():
    assert (ROOT / ".ci" / "run").read_text().rstrip().endswith("make test")


def test_the_top_level_layout_exists():
    for name in ["bnlab", "notebooks", "exercises", "solutions", "tests", "benchmarks", "environment.yml",
                 "pyproject.toml", "constraints.txt", "Makefile", "README.md", "LICENSE", ".ci/run",
                 "binder/requirements.txt", "binder/runtime.txt", "binder/postBuild", "bnlab/build/lock.py",
                 "jupyter/overrides.json"]:
        assert (ROOT / name).exists(), name


@pytest.mark.parametrize("url_key", ["Repository", "Documentation"])
def test_pyproject_names_the_public_addresses(url_key):
    url = urlsplit(PROJECT["urls"][url_key])
    assert url.scheme == "https" and url.netloc and url.path.strip("/"), PROJECT["urls"][url_key]


# -- bnlab/build/lock.py on reports made up here (no pip run) -------------------------------------------------

def _report(*packages: tuple[str, str], **environment: str) -> dict:
    return {"environment": {**lock_module.TARGET, **environment},
            "install": [{"metadata": {"name": name, "version": version}} for name, version in packages]}


def test_the_lock_writer_pins_canonical_names_without_local_labels_or_the_project():
    pins = lock_module.pins_from_report(_report(("bnlab", "0.1.0"), ("torch", "2.13.0+cpu"), ("Jinja2", "3.1.6"),
                                                ("typing_extensions", "4.15.0")), "bnlab")
    assert pins == {"torch": "2.13.0", "jinja2": "3.1.6", "typing-extensions": "4.15.0"}
    text = lock_module.render(pins, "0" * 64)
    assert text.splitlines()[-3:] == ["jinja2==3.1.6", "torch==2.13.0", "typing-extensions==4.15.0"]
    assert f"{lock_module.HASH_PREFIX}{'0' * 64}" in text.splitlines()


@pytest.mark.parametrize(("report", "message"), [
    (_report(("bnlab", "0.1.0"), sys_platform="darwin"), "Linux x86-64 with Python 3.11"),
    (_report(("bnlab", "0.1.0"), python_version="3.12"), "Linux x86-64 with Python 3.11"),
    (_report(("bnlab", "0.1.0"), ("torch", "2.13.0"), ("nvidia-cublas-cu12", "12.8.4.1")), "CUDA build"),
    (_report(("numpy", "2.4.6")), "does not install 'bnlab'"),
])
def test_the_lock_writer_refuses_a_resolution_for_another_platform_build_or_project(report, message):
    with pytest.raises(lock_module.LockError, match=re.escape(message)):
        lock_module.pins_from_report(report, "bnlab")


def test_the_locks_hash_follows_the_dependency_tables_only(tmp_path):
    original = (ROOT / "pyproject.toml").read_text()
    digest = lock_module.dependency_hash(ROOT / "pyproject.toml")
    edited = tmp_path / "pyproject.toml"
    edited.write_text(original.replace('version = "0.1.0"', 'version = "0.2.0"', 1))
    assert lock_module.dependency_hash(edited) == digest  # not a dependency: the lock stays current
    edited.write_text(original.replace('"tqdm>=4.66"', '"tqdm>=4.67"', 1))
    assert lock_module.dependency_hash(edited) != digest  # a dependency: `make lock`


def test_make_lock_runs_the_lock_writer_with_the_standard_library_alone():
    """``make lock`` runs bnlab/build/lock.py with the system's Python, before any environment exists: it must
    start without site-packages (``-S``) or the project on the path (``-I``)."""
    assert "\t$(PYTHON) bnlab/build/lock.py --python $(LOCK_PYTHON)" in (ROOT / "Makefile").read_text().splitlines()
    started = subprocess.run([sys.executable, "-I", "-S", str(ROOT / "bnlab" / "build" / "lock.py"), "--help"],
                             capture_output=True, text=True, check=False)
    assert started.returncode == 0, started.stderr
    assert "--pyproject FILE" in started.stdout


def test_bnlab_build_lock_says_what_it_expected_and_writes_nothing(tmp_path, capsys):
    from bnlab.__main__ import main

    output = tmp_path / "constraints.txt"
    assert main(["build", "lock", "--pyproject", str(tmp_path / "missing.toml"), "--output", str(output)]) == 1
    assert f"no pyproject.toml at {tmp_path / 'missing.toml'}: expected the course's project file" in \
        capsys.readouterr().err
    assert not output.exists()


@pytest.mark.parametrize(("version", "picked"), [("2.13.0+cpu", True), ("2.13.0", False)])
def test_the_makefile_tells_torchs_cpu_build_from_pips_report(version, picked):
    """``make`` asks pip (a dry run) which torch it would install and adds PyTorch's CPU index only when pip
    would not pick a CPU build: PyPI's plain 2.13.0 is the CUDA build."""
    program = re.search(r"^CPU_BUILD_PICKED := \$\(BIN\)/python -c '(.*)'$", (ROOT / "Makefile").read_text(),
                        re.MULTILINE).group(1)
    report = json.dumps({"install": [{"metadata": {"name": "torch", "version": version}}]})
    done = subprocess.run([sys.executable, "-c", program], input=report, text=True, check=False)
    assert (done.returncode == 0) is picked
