# One entry point for learners, instructors and CI.
#   make demo       set up .venv and train the dog-vs-cat classifier (the main job)
#   make test       set up .venv and run every test (what .ci/run calls)
#   make lab        start JupyterLab on the course
#   make notebooks  re-execute the course notebooks (CPU profile, real data)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.tlkit-installed

.PHONY: demo test lab notebooks bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tlkit demo

test: $(STAMP)
	bash tests/run_all.sh $(PY)

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

notebooks: $(STAMP)
	$(PY) tools/make_notebooks.py

bench: $(STAMP)
	$(PY) bench/demo.py

clean:
	rm -rf $(VENV) .venv-ipyw7 runs .pytest_cache
