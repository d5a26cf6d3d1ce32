# Two commands set everything up on a fresh machine:
#   make lab    create .venv, install the course for learners, open the lesson map in JupyterLab
#   make test   the same setup plus the instructors' and test tools, then the whole test suite
# and a few more:
#   make site   the static site in build/site/ (index.html)
#   make bench  speed figures as ratios measured in one run
#   make lock   re-resolve constraints.txt from pyproject.toml (after changing its dependencies)
#
# Every install goes through the lock (pip -c constraints.txt). Each package set has its own stamp and is
# reinstalled only when pyproject.toml or the lock changes; the sets only ever add packages, so `make lab`
# after `make test` keeps the test tools and `make test` after `make lab` adds them.
# Extra JupyterLab flags: make lab LAB_ARGS="--no-browser --port=8899"

PYTHON     ?= python3.11
VENV       := .venv
BIN        := $(VENV)/bin
LOCK       := constraints.txt
# PYTHONWARNINGS: setuptools warns on every editable install ("be careful with folders ... same name"), noise
# a learner cannot act on
INSTALL    := PYTHONWARNINGS=ignore::UserWarning $(BIN)/python -m pip install --quiet -c $(LOCK)
TORCH_CPU_INDEX := https://download.pytorch.org/whl/cpu
# reads pip's installation report on stdin; succeeds if it picked a CPU build of torch (version 2.13.0+cpu)
CPU_BUILD_PICKED := $(BIN)/python -c 'import json, sys; sys.exit(not any(item["metadata"]["version"].endswith("+cpu") for item in json.load(sys.stdin)["install"]))'
START_PAGE := notebooks/00_start_here.ipynb
# JupyterLab's settings overrides for this environment (no news prompt, no update check), not the user's home
OVERRIDES  := $(VENV)/share/jupyter/lab/settings/overrides.json
LAB_ARGS   ?=

.PHONY: lab test site bench lock clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# torch first, and its CPU build: PyPI's torch 2.13.0 is the CUDA build (gigabytes of nvidia packages). Where the
# indexes pip already uses offer the CPU build (the course machines, CI) pip takes it from them; elsewhere it
# also looks in PyTorch's CPU index. The dry run asks pip which build it would pick.
$(VENV)/.installed-torch: $(LOCK) | $(BIN)/python
	@if $(INSTALL) --dry-run --no-deps --ignore-installed --report - torch 2>/dev/null | $(CPU_BUILD_PICKED); then \
	    $(INSTALL) torch; \
	else \
	    echo "torch: the CPU build comes from $(TORCH_CPU_INDEX)"; \
	    $(INSTALL) --extra-index-url $(TORCH_CPU_INDEX) torch; \
	fi
	@touch $@

# learners: the course and what the lectures and exercises need
$(VENV)/.installed-lab: pyproject.toml $(LOCK) $(VENV)/.installed-torch
	$(INSTALL) -e .
	@touch $@

$(VENV)/.installed-site: pyproject.toml $(LOCK) $(VENV)/.installed-torch
	$(INSTALL) -e '.[site]'
	@touch $@

# the test extra includes the learners' set and the site's, so their stamps are fresh too
$(VENV)/.installed-test: pyproject.toml $(LOCK) $(VENV)/.installed-torch
	$(INSTALL) -e '.[test]'
	@touch $@ $(VENV)/.installed-lab $(VENV)/.installed-site

$(OVERRIDES): jupyter/overrides.json | $(BIN)/python
	@mkdir -p $(@D)
	cp $< $@

# root: the repository, so the file browser shows notebooks/ and exercises/; the lesson map opens first
lab: $(VENV)/.installed-lab $(OVERRIDES)
	$(BIN)/jupyter lab --ServerApp.root_dir=. $(START_PAGE) $(LAB_ARGS)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest

site: $(VENV)/.installed-site
	$(BIN)/bnlab build site

bench: $(VENV)/.installed-lab
	for script in benchmarks/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

# The lock must install on every Python 3.11 a course machine has, down to Debian 12's 3.11.2 (some packages'
# newest releases need 3.11.5): pip picks what the interpreter it resolves with can run, so resolve with the
# oldest, e.g. make lock LOCK_PYTHON=/usr/bin/python3.11 (tests/test_packaging.py checks every pin).
LOCK_PYTHON ?= $(PYTHON)
lock:
	$(PYTHON) bnlab/build/lock.py --python $(LOCK_PYTHON)

clean-venv:
	rm -rf $(VENV)
