# Two commands for a fresh machine:
#   make demo   set up the environment, run the shipped model on the bundled photo
#   make test   set up, fetch data, run every check (lint, spelling, unit tests, notebooks)
# Set FKP_DATA_MIRROR=/path/to/folder/with/train-test-data.zip where there is no internet.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-benchmark
NOTEBOOKS := 1_Load_and_Visualize.ipynb 2_Define_Train_CNN.ipynb 3_Haar_Detection.ipynb 4_Fun_Filters.ipynb
PYTEST := $(PY) -m pytest -q --durations=15

.PHONY: demo test test-fast unit notebooks lint spell data weights model venv lab clean

venv: $(STAMP)
$(STAMP): requirements.txt constraints.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .  # fkp-detect, fkp-train, ...
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# dlib for `benchmark.py --dlib` (optional for users; the tests cover it)
$(BENCH_STAMP): $(STAMP) requirements-benchmark.txt
	$(PY) -m pip install --quiet -r requirements-benchmark.txt -c constraints.txt
	touch $(BENCH_STAMP)

data: $(STAMP)
	$(PY) fetch_data.py

# the face detector's models alone: all that `make demo` needs beside the environment
weights: $(STAMP)
	$(PY) fetch_data.py --weights

demo: weights
	$(PY) detect.py --annotate out/demo --json out/demo/demo.json
	@echo "annotated photo written to out/demo/"

lint: $(STAMP)
	$(VENV)/bin/ruff check .

spell: $(STAMP)
	$(VENV)/bin/codespell *.py tests/*.py README.md $(wildcard $(NOTEBOOKS)) saved_models/*.md templates/*.md

unit: data $(BENCH_STAMP)
	$(PYTEST) tests

test-fast: data
	$(PYTEST) -m "not slow" tests

notebooks: data
	FKP_FAST=1 $(PYTEST) --nbval-lax -p no:cacheprovider $(wildcard $(NOTEBOOKS))

test: data $(BENCH_STAMP)
	$(MAKE) lint spell
	$(PYTEST) tests
	FKP_FAST=1 $(PYTEST) --nbval-lax -p no:cacheprovider $(wildcard $(NOTEBOOKS))

# The shipped model, trained from nothing (about 2 h 15 min on 2 CPU cores; resumable: run
# `make model` again after an interruption) and shipped with its card. CI never runs this.
MODEL_ARGS := --arch heatmap --width 32 --input-size 112 --markups course,300w \
	--extra-data 300w+afw --mix-300w 0.5 --loss wing --ema 0.999 --epochs 100 --patience 100 \
	--flip 0 --flip-300w 0.5 --degrees 20 --degrade 0.25 --jitter-scale 0.15 --jitter-shift 0.08 \
	--gamma 0.3 --lr 1e-3 --batch-size 32 --workers 1 --out runs/shipped
model: data
	$(PY) train.py $(MODEL_ARGS) $(if $(wildcard runs/shipped/last.pt),--resume,)
	$(PY) ship.py --model runs/shipped/best.pt --dest saved_models/keypoints.pt

lab: data
	$(VENV)/bin/jupyter lab

clean:
	rm -rf runs out .pytest_cache
