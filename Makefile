# maint-agent: `make run` starts the agent in the foreground with ./agent.yaml,
# `make test` installs what the tests need and runs the whole suite.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test test-deps check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $@

run: $(STAMP)
	mkdir -p var
	$(BIN)/maint-agent run --config agent.yaml

test-deps: $(STAMP)
	@./tests/install-deps.sh

test: test-deps
	$(BIN)/python -m pytest -q

check: $(STAMP)
	$(BIN)/maint-agent config check agent.yaml

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) var .pytest_cache
