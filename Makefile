# cvaia — the two commands a user needs (see README):
#   make workbook   the main job: build the synthetic data set, run the workbook, export figures
#   make test       the test suite (notebooks included, smoke profile)
#   make report     rebuild the HTML report of the executed workbook (runs/executed/<profile>/report)
# The virtual environment .venv is created on first use.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
PROFILE ?= quick

.PHONY: all venv data workbook report test lint kernel lab clean-venv

all: workbook

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cvaia)" >/dev/null
	@touch $(STAMP)

venv: $(STAMP)

data: $(STAMP)
	$(PY) -m cvaia synth

workbook: $(STAMP)
	$(PY) -m cvaia workbook --profile $(PROFILE)

report: $(STAMP)
	$(PY) -m cvaia workbook --report-only --profile $(PROFILE)

test: $(STAMP)
	$(PY) -m pytest -n 2 -q

lint: $(STAMP)
	$(PY) -m ruff check cvaia tests

lab: $(STAMP)
	$(PY) -m jupyter lab notebooks/

clean-venv:
	rm -rf $(VENV)
