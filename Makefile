# One entry point for learners, instructors and CI.
#   make demo       set up .venv and train the dog-vs-cat classifier (the main job)
#   make test       set up .venv and run every test (what .ci/run calls)
#   make lab        start JupyterLab on the course
#   make notebooks  re-execute the course notebooks (CPU profile, real data)
#   make web-deps   install ONNX Runtime Web (npm ci) for `python -m tlkit export MODEL.pt --web DIR`
#
# Which PyTorch build (see README, "Choosing the PyTorch build"):
#   make demo             torch from PyPI: on Linux the CUDA build (.venv about 6 GB)
#   make demo TORCH=cpu   torch and torchvision from PyTorch's CPU-only index first (no CUDA libraries)
# TORCH names a folder of https://download.pytorch.org/whl/ (cpu, or a CUDA build such as cu126).
# The choice is remembered in the venv, so later `make test` keeps it; `make clean` forgets it.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH ?= $(shell cat $(VENV)/.tlkit-torch 2>/dev/null)
TORCH_INDEX ?= https://download.pytorch.org/whl/$(TORCH)
STAMP := $(VENV)/.tlkit-installed$(if $(TORCH),-$(TORCH))

.PHONY: demo test lab notebooks bench clean web-deps

# Reruns only when pyproject.toml changes (or another TORCH is chosen).
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifneq ($(TORCH),)
ifeq ($(TORCH),cpu)
	@$(PY) -c 'import importlib.metadata as m, sys; \
	  cuda = sorted(d.name for d in m.distributions() if d.name.lower().startswith("nvidia-")); \
	  cuda and sys.exit(f"$(VENV) already holds the CUDA build of torch ({len(cuda)} nvidia-* packages). " \
	                    "Run make clean first, then make TORCH=cpu again.")'
endif
	$(PY) -m pip install -q --index-url $(TORCH_INDEX) torch torchvision
	echo $(TORCH) > $(VENV)/.tlkit-torch
endif
	$(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m tlkit demo

test: $(STAMP)
	bash tests/run_all.sh $(PY)

# ONNX Runtime Web, the version pinned in package-lock.json, into node_modules/ (the --web page copies it).
web-deps:
	npm ci --no-audit --no-fund --loglevel=error

# Trusted notebooks: JupyterLab and Notebook 7 then draw the widgets' saved state
# before anything runs (untrusted, they show "VBox(children=...)" text instead).
lab: $(STAMP)
	$(PY) -m jupyter trust notebooks/*.ipynb >/dev/null
	$(PY) -m jupyter lab notebooks/

notebooks: $(STAMP)
	$(PY) tools/make_notebooks.py

bench: $(STAMP)
	$(PY) bench/demo.py

clean:
	rm -rf $(VENV) .venv-ipyw7 runs .pytest_cache
