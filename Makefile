# Two commands for a fresh machine:
#   make demo   set up, fetch data, run the shipped model on the bundled photo
#   make test   set up, fetch data, run every test (unit tests, notebooks, spelling)
# Set FKP_DATA_MIRROR=/path/to/folder/with/train-test-data.zip where there is no internet.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-benchmark
NOTEBOOKS := 1_Load_and_Visualize.ipynb 2_Define_Train_CNN.ipynb 3_Haar_Detection.ipynb 4_Fun_Filters.ipynb

.PHONY: demo test unit notebooks spell data venv lab clean

venv: $(STAMP)
$(STAMP): requirements.txt constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt -c constraints.txt
	$(PY) -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

# dlib for `benchmark.py --dlib` (optional for users; the tests cover it)
$(BENCH_STAMP): $(STAMP) requirements-benchmark.txt
	$(PY) -m pip install --quiet -r requirements-benchmark.txt -c constraints.txt
	touch $(BENCH_STAMP)

data: $(STAMP)
	$(PY) fetch_data.py

demo: data
	$(PY) detect.py --annotate out/demo --json out/demo/demo.json
	@echo "annotated photo written to out/demo/"

unit: data $(BENCH_STAMP)
	$(PY) -m pytest -q tests

notebooks: data
	FKP_FAST=1 $(PY) -m pytest -q --nbval-lax -p no:cacheprovider $(wildcard $(NOTEBOOKS))

spell: $(STAMP)
	$(VENV)/bin/codespell *.py tests/*.py README.md $(wildcard $(NOTEBOOKS)) saved_models/*.md

test: data $(BENCH_STAMP)
	$(MAKE) spell
	$(PY) -m pytest -q tests
	FKP_FAST=1 $(PY) -m pytest -q --nbval-lax -p no:cacheprovider $(wildcard $(NOTEBOOKS))

lab: data
	$(VENV)/bin/jupyter lab

clean:
	rm -rf runs out .pytest_cache
